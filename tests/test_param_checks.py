"""Issue 13: parameter overrides, parameter domains, regimens for another drug, numbers in
scientific notation and work bounds, through the CLI (in-process: exit status 2 and one line
naming the value and the fix) and through the Python API (pkpd's error types).

Defects 4 (misspelt or impossible parameters), 5 (unbounded work: --days, --n, --times), 6 (a
``/`` in a parameter name) and 7 (``1.2e1 mg``; a regimen for another drug).
"""

import json

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.cli import main
from pkpd.errors import DataError, ModelError, PkpdError, RegimenError

ANLO = "12 mg PO QD D1-14 Q21D"
EXPO = ("exposure", "anlotinib", "--regimen", ANLO, "--days", "42")
SIM = ("simulate", "--model", "sclc_triplet_tgi", "--regimen", "anlotinib: " + ANLO,
       "--days", "60", "--quiet")


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, cmd, needles):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pkpd {cmd}: error: "), err
    assert "Fix" in err, err
    for n in needles:
        assert n in err, (n, err)


# ---- parameter names and values on `pkpd exposure` ------------------------------------------

LISTING = "Parameters: CL, V, KA; dose parameters F<n>, ALAG<n>, R<n>, D<n> for compartments 1-2"
PARAM_CASES = {
    "lower-case cl": ("cl=5", ["unknown parameter 'cl' of card anlotinib; did you mean CL?",
                               LISTING]),
    "lower-case ka": ("ka=1", ["did you mean KA?"]),
    "unknown FOO": ("FOO=1", ["unknown parameter 'FOO' of card anlotinib.", LISTING]),
    "slash in the name": ("CL/F=5", ["'CL/F' is not a parameter name", "CL, V, KA"]),
    "odd characters": ("a/b=1", ["'a/b' is not a parameter name"]),
    "dot in the name": ("CL.F=1", ["'CL.F' is not a parameter name"]),
    "dose parameter of no compartment": ("F3=0.5", ["unknown parameter 'F3'", "1-2"]),
    "KA=-1": ("KA=-1", ["KA = -1 must be > 0 (domain 'positive'; KA in 1/h)",
                        "Fix: give KA a value > 0"]),
    "CL=0": ("CL=0", ["CL = 0 must be > 0", "L/h"]),
    "CL=-5": ("CL=-5", ["CL = -5 must be > 0"]),
    "CL=nan": ("CL=nan", ["CL = nan must be > 0"]),
    "CL=inf": ("CL=inf", ["CL = inf must be > 0"]),
    "V=-inf": ("V=-inf", ["V = -inf must be > 0", "V in L"]),
    "F1=2": ("F1=2", ["F1 = 2 must be in (0, 1] (domain '(0, 1]')"]),
    "F1=0": ("F1=0", ["F1 = 0 must be in (0, 1]"]),
    "ALAG1=-1": ("ALAG1=-1", ["ALAG1 = -1 must be >= 0 (domain 'nonnegative'"]),
    "empty name": ("=5", ["'=5' has no name"]),
    "no equals sign": ("CL", ["'CL' is not NAME=VALUE"]),
    "not a number": ("CL=fast", ["'fast' is not a number"]),
    "value with a unit": ("CL=9 L/h", ["'9 L/h' is not a number"]),
}


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_exposure_param_is_checked(capsys, case):
    pair, needles = PARAM_CASES[case]
    rc, out, err = run(capsys, *EXPO, "--param", pair)
    assert_one_line_error(rc, err, "exposure", needles)
    assert out == ""


def test_exposure_param_given_twice(capsys):
    rc, _, err = run(capsys, *EXPO, "--param", "CL=5", "--param", "CL=6")
    assert_one_line_error(rc, err, "exposure", ["--param CL is given twice (5 and 6)"])


@pytest.mark.parametrize("pair", ["WT=nan", "WT=inf", "WT=-inf"])
def test_exposure_covariate_must_be_finite(capsys, pair):
    rc, _, err = run(capsys, *EXPO, "--cov", pair)
    assert_one_line_error(rc, err, "exposure", [pair.split("=")[1], "not a finite number"])


def test_exposure_param_is_used_not_ignored(capsys):
    rc, out, _ = run(capsys, *EXPO, "--json")
    base = json.loads(out)
    rc2, out2, _ = run(capsys, *EXPO, "--json", "--param", "CL=5")
    slow = json.loads(out2)
    assert rc == rc2 == 0
    # CL 9.26 -> 5 L/h: less is cleared, so the trough rises (closed form in test_exposure)
    assert slow["ctrough"][0] > 1.5 * base["ctrough"][0]
    rc3, out3, _ = run(capsys, *EXPO, "--json", "--param", "F1=0.5")
    half = json.loads(out3)
    np.testing.assert_allclose(half["auc"], np.array(base["auc"]) / 2, rtol=1e-9)


# ---- horizon and size on `pkpd exposure` ----------------------------------------------------

@pytest.mark.parametrize("days", ["0", "-5", "nan", "inf", "-inf"])
def test_exposure_days_must_be_positive_and_finite(capsys, days):
    rc, _, err = run(capsys, "exposure", "anlotinib", "--regimen", ANLO, f"--days={days}")
    assert_one_line_error(rc, err, "exposure",
                          ["the horizon must be > 0 and finite", "--days 84"])


@pytest.mark.parametrize(
    "regimen, days, needles",
    [
        ("12 mg PO QD", "1e7", ["expands to 10000001 doses", "at most 100000", "shorter"]),
        (ANLO, "1e7", ["expands to 6666688 doses", "at most 100000"]),
        ("12 mg PO Q1H", "5000", ["expands to 120024 doses"]),
        # 12 mg QD over 6000 days was 6001 one-day "cycles"; continuous dosing is now summarised
        # in 21-day windows and runs, so the evaluation budget is exercised with weekly cycles
        ("12 mg PO QW", "35000", ["5001 cycles", "concentration evaluations; at most 2000000",
                                  "--days"]),
    ],
)
def test_exposure_huge_horizon_is_refused(capsys, regimen, days, needles):
    rc, _, err = run(capsys, "exposure", "anlotinib", "--regimen", regimen, "--days", days)
    assert_one_line_error(rc, err, "exposure", needles)


# ---- regimen text on `pkpd exposure` --------------------------------------------------------

@pytest.mark.parametrize("amount", ["1.2e1", "1.2E1", "120e-1", "1.2e+1"])
def test_exposure_accepts_scientific_notation(capsys, amount):
    rc, out, _ = run(capsys, *EXPO, "--json")
    rc2, out2, err2 = run(capsys, "exposure", "anlotinib", "--regimen",
                          ANLO.replace("12", amount, 1), "--days", "42", "--json")
    assert rc == rc2 == 0, err2
    a, b = json.loads(out), json.loads(out2)
    assert a["cmax"] == b["cmax"] and a["auc"] == b["auc"]


@pytest.mark.parametrize("other", ["durvalumab", "etoposide", "nivolumab"])
def test_exposure_refuses_a_regimen_for_another_drug(capsys, other):
    rc, out, err = run(capsys, "exposure", "anlotinib", "--regimen",
                       f"{other}: 12 mg PO QD D1-14 Q21D", "--days", "42")
    assert_one_line_error(rc, err, "exposure", [
        f"this regimen is for {other} but the card is anlotinib",
        f"drop the '{other}:' prefix"])
    assert out == ""


@pytest.mark.parametrize("prefix", ["anlotinib", "Anlotinib", "ANLOTINIB"])
def test_exposure_accepts_its_own_drug_prefix(capsys, prefix):
    rc, out, err = run(capsys, "exposure", "anlotinib", "--regimen", f"{prefix}: {ANLO}",
                       "--days", "42")
    assert rc == 0, err
    assert "anlotinib:" in out


# ---- `pkpd predict` -------------------------------------------------------------------------

def events(path, cl=None, extra=None):
    rows = [dict(ID=i, TIME=t, EVID=e, AMT=a, CMT=c, DV=d)
            for i in (1, 2) for t, e, a, c, d in ((0, 1, 12, 1, "."), (2, 0, 0, 2, 1.0),
                                                  (24, 0, 0, 2, 1.0))]
    df = pd.DataFrame(rows)
    if cl is not None:
        df["CL"] = np.where(df["ID"] == 1, 9.0, cl)
    for k, v in (extra or {}).items():
        df[k] = v
    df.to_csv(path, index=False)
    return path


PREDICT_PARAM = {k: PARAM_CASES[k] for k in ("lower-case cl", "unknown FOO", "slash in the name",
                                              "CL=-5", "CL=0", "CL=nan", "F1=2")}


@pytest.mark.parametrize("case", sorted(PREDICT_PARAM))
def test_predict_param_is_checked(capsys, tmp_path, case):
    pair, needles = PREDICT_PARAM[case]
    out = tmp_path / "pred.csv"
    rc, _, err = run(capsys, "predict", "--model", "anlotinib", "--data",
                     events(tmp_path / "ev.csv"), "--out", out, "--param", pair)
    assert_one_line_error(rc, err, "predict", needles)
    assert not out.exists()


def test_predict_param_is_used(capsys, tmp_path):
    f = events(tmp_path / "ev.csv")
    rc = main(["predict", "--model", "anlotinib", "--data", str(f), "--out",
               str(tmp_path / "a.csv")])
    rc2 = main(["predict", "--model", "anlotinib", "--data", str(f), "--out",
                str(tmp_path / "b.csv"), "--param", "F1=0.5"])
    assert rc == rc2 == 0
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    np.testing.assert_allclose(b.PRED, a.PRED / 2, rtol=1e-12)     # linear in the dose


def test_predict_ipred_parameter_column_inf_is_refused_at_its_row(capsys, tmp_path):
    out = tmp_path / "pred.csv"
    rc, _, err = run(capsys, "predict", "--model", "anlotinib", "--data",
                     events(tmp_path / "ev.csv", cl=float("inf")), "--out", out)
    assert_one_line_error(rc, err, "predict", [
        "row 4 (ID 2) column CL", "must be finite", "got inf", "Fix: write a finite number"])
    assert not out.exists()


@pytest.mark.parametrize("value, shown", [(-62.0, "-62.0"), (0.0, "0.0")])
def test_predict_ipred_parameter_column_is_checked(capsys, tmp_path, value, shown):
    out = tmp_path / "pred.csv"
    rc, _, err = run(capsys, "predict", "--model", "anlotinib", "--data",
                     events(tmp_path / "ev.csv", cl=value), "--out", out)
    assert_one_line_error(rc, err, "predict", [
        "ID 2 column CL", "used for IPRED", "positive (> 0)", f"got {shown}",
        "Fix: correct CL for this subject"])
    assert not out.exists()


def test_predict_ipred_dose_parameter_column_is_checked(capsys, tmp_path):
    rc, _, err = run(capsys, "predict", "--model", "anlotinib", "--data",
                     events(tmp_path / "ev.csv", extra={"F1": 1.5}), "--out",
                     tmp_path / "p.csv")
    assert_one_line_error(rc, err, "predict", ["ID 1 column F1", "in (0, 1]", "got 1.5"])


# ---- `pkpd simulate` ------------------------------------------------------------------------

SIM_CASES = {
    "lower-case psi": (("--param", "psi=0"), ["unknown tumour parameter 'psi' of card "
                                              "sclc_triplet_tgi; did you mean PSI?", "BASE, KG"]),
    "unknown FOO": (("--param", "FOO=1"), ["unknown tumour parameter 'FOO'"]),
    "slash": (("--param", "a/b=1"), ["'a/b' is not a parameter name"]),
    "KE0C=-1": (("--param", "KE0C=-1"), ["KE0C = -1 must be > 0 (domain 'positive'"]),
    "IMAXA=2": (("--param", "IMAXA=2"), ["IMAXA = 2 must be in [0, 1]"]),
    "KG=nan": (("--param", "KG=nan"), ["KG = nan must be a finite number (domain 'real'"]),
    "days 1e7": (("--days", "1e7"), ["10000000 grid steps", "at most 36525", "--days"]),
    "days -1": (("--days", "-1"), ["days = -1.0 must be > 0 and finite"]),
    "days inf": (("--days", "inf"), ["days = inf"]),
    "n 0": (("--n", "0"), ["n = 0", "positive integer"]),
    "n too many": (("--n", "2000000"), ["n = 2000000", "at most 1000000"]),
    "too many rows": (("--n", "200000", "--days", "100",
                       "--times", ",".join(map(str, range(0, 101)))),
                      ["200000 patient(s) x 101 output times = 20200000", "at most 20000000"]),
    "times nan": (("--times", "0,nan"), ["times", "[0, nan]", "finite"]),
    "times negative": (("--times=-5,0",), ["[-5, 0]", ">= 0"]),
    "times decreasing": (("--times", "10,5"), ["increasing"]),
    "times past the horizon": (("--times", "0,1000"), ["within 0..60 days"]),
    "seed negative": (("--seed", "-1"), ["seed = -1"]),
}


@pytest.mark.parametrize("case", sorted(SIM_CASES))
def test_simulate_inputs_are_checked(capsys, tmp_path, case):
    extra, needles = SIM_CASES[case]
    out = tmp_path / "s.csv"
    rc, _, err = run(capsys, *SIM, "--out", out, *extra)
    assert_one_line_error(rc, err, "simulate", needles)
    assert not out.exists()


# ---- Python API -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def card():
    return pkpd.load_card("anlotinib")


@pytest.mark.parametrize("params, match", [
    ({"cl": 5.0}, "did you mean CL"), ({"FOO": 1.0}, "unknown parameter 'FOO'"),
    ({"CL/F": 1.0}, "not a parameter name"), ({"KA": -1.0}, "KA = -1 must be > 0"),
    ({"CL": float("nan")}, "CL = nan must be > 0"), ({"V": 0.0}, "V = 0 must be > 0"),
])
def test_cycle_exposure_params(card, params, match):
    from pkpd.dosing.regimen import parse_regimen
    from pkpd.pk.exposure import cycle_exposure

    with pytest.raises(ModelError, match=match):
        cycle_exposure(card, parse_regimen(ANLO), 42, params=params)


def test_concentration_profile_params(card):
    from pkpd.dosing.regimen import parse_regimen
    from pkpd.pk.exposure import concentration_profile

    reg = parse_regimen(ANLO)
    good = {"CL": [9.0, 10.0], "V": [2000.0, 2100.0], "KA": [0.6, 0.7]}
    assert concentration_profile(card, reg, [1.0, 2.0], params=good).shape == (2, 2)
    with pytest.raises(ModelError, match=r"CL = -1 \(index 1 of 2\) must be > 0"):
        concentration_profile(card, reg, [1.0], params={**good, "CL": [9.0, -1.0]})
    with pytest.raises(ModelError, match="did you mean KA"):
        concentration_profile(card, reg, [1.0], params={**good, "ka": [1.0, 1.0]})
    with pytest.raises(RegimenError, match="different lengths"):
        concentration_profile(card, reg, [1.0], params={**good, "CL": [9.0]})


def _table(tmp_path, **kw):
    from pkpd.dosing.events import read_nonmem

    return read_nonmem(events(tmp_path / "ev.csv", **kw), n_cmt=2)


@pytest.mark.parametrize("params, match", [
    ({"cl": 5.0}, "did you mean CL"), ({"CL": -5.0}, "CL = -5 must be > 0"),
    ({"FOO": 1.0}, "unknown parameter 'FOO'"),
])
def test_predict_api_params(tmp_path, card, params, match):
    from pkpd.pk.predict import predict

    with pytest.raises(ModelError, match=match):
        predict(_table(tmp_path), card, params=params)


def test_predict_api_without_card_checks_the_model(tmp_path, card):
    from pkpd.pk.predict import predict

    table = _table(tmp_path)
    model = card.model()
    ok = predict(table, model=model, params={"CL": 9.26, "V": 2010.0, "KA": 0.64})
    ref = predict(table, card)
    np.testing.assert_allclose(ok.PRED, ref.PRED, rtol=1e-12)
    with pytest.raises(ModelError, match="did you mean KA"):
        predict(table, model=model, params={"CL": 9.26, "V": 2010.0, "ka": 0.64})
    with pytest.raises(ModelError, match="V = -1 must be > 0"):
        predict(table, model=model, params={"CL": 9.26, "V": -1.0, "KA": 0.64})


def test_predict_api_ipred_column(tmp_path, card):
    from pkpd.pk.predict import predict

    with pytest.raises(DataError) as err:
        predict(_table(tmp_path, cl=-3.0), card)
    assert err.value.subject == 2 and err.value.column == "CL" and err.value.value == -3.0


@pytest.mark.parametrize("kw, match", [
    (dict(params={"psi": 0.0}), "did you mean PSI"),
    (dict(params={"LAMBDA": -0.1}), "LAMBDA = -0.1 must be >= 0 \\(domain 'nonnegative'"),
    (dict(days=1e7), "at most 36525"),
    (dict(n=10**7), "at most 1000000"),
    (dict(n=2.5), "positive integer"),
    (dict(times=[0.0, float("nan")]), "finite"),
    (dict(seed=-3), "seed = -3"),
])
def test_simulate_api(kw, match):
    from pkpd.tumour.simulate import simulate

    with pytest.raises(ModelError, match=match):
        simulate("sclc_triplet_tgi", "anlotinib: " + ANLO, **{"days": 60, **kw})


def test_simulate_long_horizon_uses_smaller_batches(monkeypatch):
    """Batches shrink to MAX_CHUNK_CELLS patient-steps; the numbers do not change."""
    import pkpd.tumour.simulate as sm

    kw = dict(days=84, n=12, seed=5, progress=False)
    ref = sm.simulate("sclc_triplet_tgi", "anlotinib: " + ANLO, **kw)
    monkeypatch.setattr(sm, "MAX_CHUNK_CELLS", 84 * 5)            # 5 patients a batch
    small = sm.simulate("sclc_triplet_tgi", "anlotinib: " + ANLO, **kw)
    pd.testing.assert_frame_equal(ref.trajectories, small.trajectories, check_exact=True)
    pd.testing.assert_frame_equal(ref.patients, small.patients, check_exact=True)


def test_errors_are_pkpd_errors():
    for cls in (ModelError, RegimenError, DataError):
        assert issubclass(cls, PkpdError)


@pytest.mark.parametrize("target", ["data", "card"])
def test_predict_never_overwrites_its_inputs(capsys, tmp_path, target):
    f = events(tmp_path / "ev.csv")
    card = tmp_path / "c.toml"
    card.write_bytes(pkpd.load_card("anlotinib").path.read_bytes())
    before = {p: p.read_bytes() for p in (f, card)}
    out = f if target == "data" else card
    rc, _, err = run(capsys, "predict", "--model", card, "--data", f, "--out", out)
    flag = "--data" if target == "data" else "--model"
    assert_one_line_error(rc, err, "predict", [f"is the {flag} input file", "--out"])
    assert {p: p.read_bytes() for p in (f, card)} == before
