"""pkpd calibrate: the spec, the card it writes, the folder rules and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pkpd.cards.card import load_card
from pkpd.errors import PkpdError
from pkpd.trial.calibrate import (
    calibrate,
    distance,
    load_calibration,
)

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "fits" / "calibrate_caspian.toml"

TINY = """
[calibration]
name = "tiny"
card = "sclc_triplet_tgi"
seed = 4
particles = 6
max_simulations = 14
max_generations = 1
check_n = 30
check_replicates = 2
card_out = "tiny_card.toml"

[parameters]
KIO = "card"
omega2_LAMBDA = { dist = "lognormal", median = 0.25, sd_log = 0.5 }

[[target]]
scenario = "durvalumab_ep"
endpoint = "orr_confirmed"
value = 0.68
scale = 0.06
n = 30

[[target]]
scenario = "ep"
endpoint = "median_pfs_months"
value = 5.4
scale = 0.8
n = 30
"""


def test_the_caspian_spec_loads_with_the_published_targets():
    spec = load_calibration(SPEC)
    got = {t.label: (t.value, t.n) for t in spec.targets}
    # LITERATURE.md section 6 (CASPIAN, Paz-Ares 2019; Goldman 2021); N = 268 vs 269
    assert got == {"durvalumab_ep.orr_confirmed": (0.68, 268),
                   "durvalumab_ep.median_pfs_months": (5.1, 268),
                   "durvalumab_ep.pfs_12m": (0.18, 268), "ep.orr_confirmed": (0.58, 269),
                   "ep.median_pfs_months": (5.4, 269), "ep.pfs_12m": (0.05, 269)}
    # "card" priors are the card's: KIO log-normal, median 0.01, sd_log 1
    j = spec.names.index("KIO")
    assert spec.log_scale[j]
    assert (np.exp(spec.prior.mean[j]), spec.prior.sd[j]) == pytest.approx((0.01, 1.0))
    assert spec.card_out == ROOT / "models" / "sclc_triplet_tgi_caspian.toml"


def test_distance_is_the_rms_of_scaled_errors():
    spec = load_calibration(SPEC)
    vals = [t.value for t in spec.targets]
    assert distance(spec, vals) == 0.0
    off = list(vals)
    off[0] += 0.06                       # one target off by one scale, six targets
    assert distance(spec, off) == pytest.approx(np.sqrt(1 / 6))
    off[1] = np.nan                      # a median not reached
    assert distance(spec, off) == np.inf


@pytest.mark.parametrize("edit,match", [
    (('KIO = "card"', 'KIOO = "card"'), r"'KIOO' is not a parameter.*did you mean 'KIO'"),
    (('endpoint = "orr_confirmed"', 'endpoint = "orr_conf"'), r"unknown endpoint 'orr_conf'"),
    (('scenario = "ep"', 'scenario = "epp"'), r"unknown scenario 'epp'"),
    (("scale = 0.06", "scale = 0"), r"scale = 0 must be a number > 0"),
    (("particles = 6", "particlez = 6"), r"unknown key \[calibration\] 'particlez'"),
    (('omega2_LAMBDA = { dist = "lognormal", median = 0.25, sd_log = 0.5 }',
      'omega2_LAMBDA = "card"'), r"omega2_LAMBDA has no prior on the card"),
    (('card = "sclc_triplet_tgi"', 'card = "nope"'), r"no model card 'nope'"),
])
def test_bad_specs_name_the_key_and_the_fix(tmp_path, edit, match):
    p = tmp_path / "cal.toml"
    p.write_text(TINY.replace(*edit))
    with pytest.raises(PkpdError, match=match):
        load_calibration(p)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    spec = d / "tiny.toml"
    spec.write_text(TINY)
    rec = calibrate(spec, progress=False)
    return d, rec


def test_a_run_writes_its_record_particles_and_a_loadable_card(tiny_run):
    d, rec = tiny_run
    out = d / "tiny"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["calibration.json", "particles.csv", "generations.csv", "check.csv", "report.md",
         "card.toml", "candidates.csv"])
    assert not (d / ".tiny.partial").exists()         # the checkpoint is gone once finished
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["written_by"] == "pkpd calibrate" and saved["seed"] == 4
    assert saved["spec_sha256"] and saved["versions"]["jax"]
    card = load_card(d / "tiny_card.toml")
    assert card.name == "tiny_card"
    assert card.typical_params()["KIO"] == rec["values"]["KIO"]
    lam = card.iiv_names.index("LAMBDA")
    assert card.omega()[lam, lam] == rec["values"]["omega2_LAMBDA"]
    raw = tomllib.loads((d / "tiny_card.toml").read_text())
    t = raw["calibration"]["targets"]["durvalumab_ep.orr_confirmed"]
    assert t["value"] == 0.68 and 0 <= t["achieved"] <= 1 and t["n_in_abc"] == 30
    # everything else is the base card's
    base = load_card("sclc_triplet_tgi")
    for k, v in base.typical_params().items():
        if k != "KIO":
            assert card.typical_params()[k] == v


def test_a_second_run_replaces_only_its_own_results(tiny_run):
    d, _ = tiny_run
    foreign = d / "tiny_card.toml"
    text = foreign.read_text()
    try:
        foreign.write_text("# a user's own card\n" + text.split("[calibration]")[0])
        with pytest.raises(PkpdError, match="was not written by pkpd calibrate"):
            calibrate(d / "tiny.toml", progress=False)
    finally:
        foreign.write_text(text)
    other = d / "users_folder"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PkpdError, match=r"holds files pkpd did not write \(notes.txt\)"):
        calibrate(d / "tiny.toml", out=other, progress=False, write_card=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_cli_bad_spec_is_one_line_and_exit_2(tmp_path):
    p = tmp_path / "cal.toml"
    p.write_text(TINY.replace('KIO = "card"', 'KIOO = "card"'))
    r = subprocess.run([sys.executable, "-m", "pkpd.cli", "calibrate", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "KIOO" in r.stderr


def test_the_calibration_is_a_population_source_with_its_own_card(tiny_run):
    from pkpd.trial.sources import calibration_draws, population_draws

    d, rec = tiny_run
    parts = __import__("pandas").read_csv(d / "tiny" / "particles.csv")
    draws = population_draws(d / "tiny")
    assert len(draws) == 1000 and list(draws.columns) == ["KIO", "omega2_LAMBDA"]
    assert draws.attrs["card"] == str(d / "tiny" / "card.toml")
    # systematic resampling: particle i appears n * w_i times, rounded either way
    counts = draws.groupby("KIO").size()
    expect = parts.groupby("KIO")["weight"].sum() / parts["weight"].sum() * 1000
    assert (counts.reindex(expect.index, fill_value=0) - expect).abs().max() <= 1.0
    assert calibration_draws(d / "tiny").equals(draws)             # no random numbers
    with pytest.raises(PkpdError, match="is not a pkpd fit.*no calibration.json"):
        calibration_draws(d)


def test_prior_draws_follow_the_card_prior():
    from pkpd.trial.sources import prior_draws, with_prior

    card = load_card("sclc_triplet_tgi")
    d = prior_draws(card, ["PSI"], n=20_000, seed=1)
    # card prior on PSI: normal(0, 1); SE of the mean 0.007, of the sd about 0.005
    assert d["PSI"].mean() == pytest.approx(0.0, abs=0.03)
    assert d["PSI"].std() == pytest.approx(1.0, abs=0.02)
    assert (d["KIO"] == card.typical_params()["KIO"]).all()
    kio = with_prior(d.head(5000), card, ["KIO"], seed=1)["KIO"]
    # log-normal prior, median 0.01, sd_log 1: the median of 5000 draws within 4%
    assert np.median(kio) == pytest.approx(0.01, rel=0.06)
    assert np.log(kio).std() == pytest.approx(1.0, abs=0.03)
    with pytest.raises(PkpdError, match="no normal or log-normal prior on 'EC50D'"):
        prior_draws(card, ["EC50D"])


def test_cli_trial_with_a_calibration_posterior_and_the_psi_prior(tiny_run):
    d, _ = tiny_run
    r = subprocess.run([sys.executable, "-m", "pkpd.cli", "trial", "--scenario", "ep", "--n",
                        "30", "--replicates", "2", "--seed", "3", "--posterior",
                        str(d / "tiny"), "--prior", "PSI", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "calibration" in out["population_source"] and "PSI from the prior" in \
        out["population_source"]
    assert 0 <= out["orr_confirmed"] <= 1


def test_cli_set_and_prior_build_the_run_keywords():
    from pkpd.cli import _trial_sources, build_parser

    a = build_parser().parse_args(["compare", "triplet", "ep", "--set", "PSI=0", "--prior",
                                   "KIO", "--seed", "5"])
    kw = _trial_sources(a)
    assert kw["params"] == {"PSI": 0.0}
    assert len(kw["draws"]) == 1000 and kw["draws"]["KIO"].std() > 0
    assert kw["draws"].attrs["source"].endswith("KIO from the prior")
    with pytest.raises(PkpdError, match=r"--set 'PSI' is not NAME=VALUE"):
        _trial_sources(build_parser().parse_args(["trial", "--scenario", "ep", "--set", "PSI"]))


def test_compare_applies_fixed_values_in_every_arm():
    from pkpd.trial.comparison import compare

    c = compare(["ep", "durvalumab_ep"], n=20, replicates=1, seed=2, params={"KG": 0.05})
    for res in c.results.values():
        assert res.meta["params"] == {"KG": 0.05}
        # growth 0.05/day outruns every kill: progression at the first scan for nearly all
        assert res.endpoints["median_pfs_months"].iloc[0] < 2.0


def test_the_card_takes_the_candidate_closest_at_large_n(tiny_run):
    import pandas as pd

    d, rec = tiny_run
    c = pd.read_csv(d / "tiny" / "candidates.csv")
    assert c["candidate"].iloc[0] == "posterior mean"
    assert len(c) == 1 + 6            # the posterior mean and all six particles (30 > 6)
    best = c.loc[c["large_n_distance"].idxmin()]
    assert rec["values"]["KIO"] == pytest.approx(best["KIO"], rel=1e-12)
    assert rec["point"].startswith(best["candidate"])
