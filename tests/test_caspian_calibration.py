"""Acceptance of issue 15: the shipped calibrated card reproduces CASPIAN (LITERATURE.md §6)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pkpd.cards.card import load_card
from pkpd.trial.run import run_trial

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "sclc_triplet_tgi_caspian.toml"

# CASPIAN (Paz-Ares 2019; Goldman 2021): published value and the acceptance half-width
TARGETS = {
    ("durvalumab_ep", "orr_confirmed"): (0.68, 0.06),
    ("durvalumab_ep", "median_pfs_months"): (5.1, 0.8),
    ("durvalumab_ep", "pfs_12m"): (0.18, 0.06),
    ("ep", "orr_confirmed"): (0.58, 0.06),
    ("ep", "median_pfs_months"): (5.4, 0.8),
}


@pytest.fixture(scope="module")
def arms():
    card = load_card(CARD)
    return {sc: run_trial(sc, n=2000, replicates=1, seed=2026, card=card).endpoints.iloc[0]
            for sc in ("durvalumab_ep", "ep")}


@pytest.mark.parametrize("arm,endpoint", list(TARGETS))
def test_the_calibrated_card_reproduces_caspian_with_2000_patients(arms, arm, endpoint):
    value, tol = TARGETS[(arm, endpoint)]
    assert arms[arm][endpoint] == pytest.approx(value, abs=tol)


def test_the_card_records_how_it_was_calibrated():
    raw = tomllib.loads(CARD.read_text())
    cal = raw["calibration"]
    assert cal["written_by"] == "pkpd calibrate"
    assert cal["method"].startswith("ABC-SMC") and cal["seed"] == 20261206
    assert set(cal["targets"]) == {f"{a}.{e}" for a, e in TARGETS} | {"ep.pfs_12m"}
    for label, t in cal["targets"].items():
        assert abs(t["achieved"] - t["value"]) <= t["scale"], label
    # not targets: the external references of the forecast
    assert not any("anlotinib" in k for k in cal["targets"])


def test_the_recorded_check_is_reproducible():
    """The card's achieved values are re-made exactly by the same seed (the record is honest)."""
    raw = tomllib.loads(CARD.read_text())
    cal = raw["calibration"]
    card = load_card(CARD)
    for sc in ("durvalumab_ep", "ep"):
        e = run_trial(sc, n=cal["check_n"], replicates=cal["check_replicates"],
                      seed=cal["check_seed"], card=card).endpoints
        for label, t in cal["targets"].items():
            if t["scenario"] == sc:
                assert e[t["endpoint"]].mean() == pytest.approx(t["achieved"], rel=1e-12), label
