"""Model cards: every bundled card loads, carries units and sources, and its covariate and IIV
models compute what the card's formulas say."""

import numpy as np
import pytest

import pkpd
from pkpd.cards import list_cards, load_card


def test_bundled_cards_load_with_units_and_sources():
    names = list_cards()
    for required in ("anlotinib", "durvalumab", "durvalumab_baverel2018", "etoposide",
                     "carboplatin"):
        assert required in names
    for n in names:
        c = load_card(n)
        assert c.source
        for p in c.parameter_table():
            assert p["unit"] and p["source"]
        assert c.residual.get("type")
        om = c.omega()
        if om.size:
            assert np.all(np.linalg.eigvalsh(om) > 0)


def test_durvalumab_covariates():
    c = load_card("durvalumab")
    ref = c.typical_params()
    assert ref["CL"] == pytest.approx(0.298)
    woman = c.typical_params({"SEX": 1, "WT": 55.0})
    assert woman["CL"] == pytest.approx(0.298 * (55 / 69.4) ** 0.338 * (1 - 0.161))
    assert woman["V1"] == pytest.approx(3.42 * (55 / 69.4) ** 0.515 * (1 - 0.14))
    ecog2 = c.typical_params({"ECOG": 2})
    assert ecog2["CL"] == pytest.approx(0.298 * 0.95)


def test_carboplatin_clearance_is_calvert():
    c = load_card("carboplatin")
    for gfr in (50.0, 100.0, 125.0):
        assert c.typical_params({"GFR": gfr})["CL"] == pytest.approx(0.06 * (gfr + 25))


def test_iiv_sampling_reproduces_omega():
    c = load_card("durvalumab")
    s = c.sample_params(40000, np.random.default_rng(3))
    eta_cl = np.log(s["CL"] / 0.298)
    eta_v1 = np.log(s["V1"] / 3.42)
    # sampling error of a variance with n = 40000 is ~ omega2 * sqrt(2/n) = 0.7%: allow 4 SE
    assert np.var(eta_cl) == pytest.approx(0.0795, rel=0.03)
    assert np.cov(eta_cl, eta_v1)[0, 1] == pytest.approx(0.039, rel=0.06)
    # additive IIV on TMAX
    assert np.var(s["TMAX"] - (-0.498)) == pytest.approx(0.0623, rel=0.03)


def test_unknown_card_error_lists_cards():
    with pytest.raises(pkpd.ModelError, match="anlotinib"):
        load_card("nosuchdrug")


def test_missing_covariate_error(tmp_path):
    with pytest.raises(pkpd.ModelError, match="Fix"):
        text = (load_card("carboplatin").path.read_text()
                .replace("[reference_covariates]\nGFR = 100.0\n", ""))
        p = tmp_path / "c.toml"
        p.write_text(text)
        load_card(p).typical_params()
