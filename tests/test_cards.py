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


# ---- parameter domains (issue 13, defect 4) -------------------------------------------------

ANLO_TEXT = load_card("anlotinib").path.read_text()


def _card(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, inside, outside",
    [
        ("positive", [1e-300, 1.0, 1e300], [0.0, -1.0]),
        ("nonnegative", [0.0, 2.0], [-1e-300]),
        ("non-negative", [0.0], [-1.0]),
        ("real", [-1e300, 0.0, 1e300], []),
        ("[0, 1]", [0.0, 0.5, 1.0], [-0.1, 1.1]),
        ("(0, 1]", [1e-9, 1.0], [0.0, 1.5]),
        ("(-inf, 0)", [-5.0], [0.0, 1.0]),
        ("[1e-3, 2.5e2)", [1e-3, 249.0], [1e-4, 250.0]),
    ],
)
def test_domain_texts(text, inside, outside):
    from pkpd.params import parse_domain

    dom = parse_domain(text)
    assert dom.contains(inside).all()
    assert not dom.contains(outside + [float("nan"), float("inf"), -float("inf")]).any()


@pytest.mark.parametrize("text", ["pos", "[1, 0]", "(a, b)", "0..1", "[0 1]", 3])
def test_unknown_domain_text_is_a_card_error(tmp_path, text):
    value = f'"{text}"' if isinstance(text, str) else text
    p = _card(tmp_path, ANLO_TEXT.replace('unit = "L/h"\n', f'unit = "L/h"\ndomain = {value}\n',
                                          1))
    with pytest.raises(pkpd.ModelError) as err:
        load_card(p)
    msg = str(err.value)
    assert "parameter CL" in msg and "domain" in msg and "Fix" in msg


@pytest.mark.parametrize(
    "old, new, needles",
    [
        ("value = 9.26", "value = -9.26",
         ["CL = -9.26 must be > 0 (domain 'positive'", "domain = "]),
        ("value = 9.26", "value = 0.0", ["CL = 0 ", "positive"]),
        ("value = 0.64", "value = nan", ["KA = nan", "positive"]),
        ("value = 2010.0", "value = inf", ["V = inf", "positive"]),
        ("value = 9.26", 'value = "fast"', ["CL", "'fast'", "number"]),
        ("[parameters.KA]", '[parameters."CL/F"]\nvalue = 1.0\nunit = "L/h"\nsource = "x"\n\n'
         "[parameters.KA]", ["'CL/F'", "not a name"]),
        ("[iiv.CL]\nomega2 = 0.08182\ntype = \"exp\"", "[iiv.CL]\nomega2 = 0.08182\ntype = \"add\"",
         ["IIV on CL is additive", "positive", 'type = "exp"']),
        ("omega2 = 0.08182", "omega2 = -0.08", ["omega2", "-0.08", ">= 0"]),
        ("omega2 = 0.08182", 'omega2 = "big"', ["omega2", "'big'"]),
        ("omega2 = 0.08182\n", "", ["[iiv.CL] needs omega2"]),
    ],
)
def test_card_values_and_iiv_outside_their_domain_are_refused(tmp_path, old, new, needles):
    p = _card(tmp_path, ANLO_TEXT.replace(old, new, 1))
    with pytest.raises(pkpd.ModelError) as err:
        load_card(p)
    msg = str(err.value)
    assert str(p) in msg and "Fix" in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_card_can_widen_a_default_domain(tmp_path):
    f1 = '\n[parameters.F1]\nvalue = 1.3\nunit = "1"\nsource = "relative F"\n'
    refused = _card(tmp_path, ANLO_TEXT.replace("\n[iiv.CL]", f1 + "\n[iiv.CL]"), "a.toml")
    with pytest.raises(pkpd.ModelError, match=r"F1 = 1.3 .*in \(0, 1\].*domain = "):
        load_card(refused)
    ok = _card(tmp_path, ANLO_TEXT.replace(
        "\n[iiv.CL]", f1.replace('unit = "1"', 'unit = "1"\ndomain = "positive"') + "\n[iiv.CL]"),
        "b.toml")
    card = load_card(ok)
    assert card.typical_params()["F1"] == 1.3 and card.domain("F1").text == "positive"
    # exp IIV on a parameter bounded above is refused: it could leave (0, 1]
    iiv = '\n[iiv.F1]\nomega2 = 0.01\ntype = "exp"\nsource = "x"\n'
    bad = _card(tmp_path, ANLO_TEXT.replace("\n[iiv.CL]", f1.replace("1.3", "0.8") + iiv
                                            + "\n[iiv.CL]"), "c.toml")
    with pytest.raises(pkpd.ModelError, match="IIV on F1 is exponential"):
        load_card(bad)


def test_default_domains_by_name():
    from pkpd.params import default_domain

    for name in ("CL", "V", "V1", "V2", "V3", "Q", "Q2", "Q3", "KA", "K10", "VMAX", "KM",
                 "TC50", "HILL", "R1", "D2"):
        assert default_domain(name).text == "positive", name
    assert default_domain("F1").text == "(0, 1]"
    assert default_domain("ALAG2").text == "nonnegative"
    for name in ("TMAX", "PSI", "WHATEVER"):
        assert default_domain(name).text == "real"


def test_tumour_card_domains_agree_with_the_model_checks():
    """The tumour card states every domain; each agrees with combination.check_params."""
    from pkpd.tumour import combination as cm

    card = load_card("sclc_triplet_tgi")
    typ = card.typical_params()
    for name in cm.PARAMETERS:
        assert "domain" in card.raw["parameters"][name], name
        for probe in (-1.0, 0.0, 0.5, 1.0, 2.0):
            ok = bool(card.domain(name).contains(probe))
            try:
                cm.check_params({**typ, name: probe})
                model_ok = True
            except pkpd.ModelError:
                model_ok = False
            assert ok == model_ok, (name, probe)


def test_covariates_that_give_an_impossible_typical_value_are_refused():
    card = load_card("carboplatin")                  # CL = 0.06 * (GFR + 25) L/h
    assert card.typical_params({"GFR": 10.0})["CL"] == pytest.approx(2.1)
    with pytest.raises(pkpd.ModelError) as err:
        card.typical_params({"GFR": -50.0})
    msg = str(err.value)
    assert "covariates {'GFR': -50.0}" in msg and "CL = -1.5" in msg and "Fix" in msg


def test_check_params_names_and_dose_parameters():
    card = load_card("anlotinib")                    # oral 1-cmt: compartments 1 (depot), 2
    card.check_params({"CL": 5.0, "F1": 0.5, "ALAG1": 0.5, "D2": 1.0, "R2": 3.0})
    with pytest.raises(pkpd.ModelError, match=r"^unknown parameter 'cl' of card anlotinib; did "
                       r"you mean CL\? Parameters: CL, V, KA; dose parameters"):
        card.check_params({"cl": 5.0})
    with pytest.raises(pkpd.ModelError, match="^unknown parameter 'f1' .*did you mean F1"):
        card.check_params({"f1": 0.5})
    with pytest.raises(pkpd.ModelError, match="^unknown parameter 'F3' .*compartments 1-2"):
        card.check_params({"F3": 0.5})
    with pytest.raises(pkpd.ModelError, match="'CL/F' is not a parameter name"):
        card.check_params({"CL/F": 5.0})
    with pytest.raises(pkpd.ModelError,
                       match=r"CL = -1 \(index 1 of 3\) must be > 0 "
                             r"\(domain 'positive'; CL in L/h\)"):
        card.check_params({"CL": np.array([1.0, -1.0, 2.0])})


def test_iiv_draws_are_checked(monkeypatch):
    card = load_card("anlotinib")
    s = card.sample_params(2000, np.random.default_rng(1))
    assert all((v > 0).all() for v in s.values())
    # a card whose additive IIV could go negative never loads; the draw check is the net
    # behind it (here: an exp IIV on a negative typical value)
    raw = dict(card.raw, parameters={**card.raw["parameters"],
                                     "KA": {**card.raw["parameters"]["KA"], "value": -0.5}})
    bad = pkpd.Card(name="x", path=None, raw=raw)
    with pytest.raises(pkpd.ModelError, match="IIV draw"):
        bad.sample_params(3, np.random.default_rng(0))


def test_per_patient_covariates_equal_the_patient_by_patient_values():
    """An array covariate (one value per virtual patient) gives, patient by patient, the same
    typical values as the scalar path (the oracle)."""
    import numpy as np

    tested = []
    for name in list_cards():
        card = load_card(name)
        covs = {c["covariate"] for c in card.raw.get("covariates", [])}
        if not covs:
            continue
        ref = card.reference_covariates
        rng = np.random.default_rng(7)
        arrays = {k: np.asarray(ref[k], float) * rng.uniform(0.8, 1.25, 5) for k in covs
                  if k in ref and k not in ("SEX",)}
        if not arrays:
            continue
        vec = card.typical_params(arrays)
        for i in range(5):
            one = card.typical_params({k: float(v[i]) for k, v in arrays.items()})
            for k, v in one.items():
                assert np.broadcast_to(vec[k], (5,))[i] == pytest.approx(v, rel=1e-14), (name, k)
        tested.append(name)
    assert {"durvalumab", "carboplatin"} <= set(tested), tested
