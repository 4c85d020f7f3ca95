"""Fit specifications (pkpd.fit.spec / expr / data): validation before any sampling, card
defaults, the OAK data rules, and the safe expression evaluator."""

from __future__ import annotations

import copy
import math
import os
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pkpd.errors import DataError, SpecError
from pkpd.fit import load_spec, read_fit_data
from pkpd.fit.expr import parse_expr, parse_prior

REPO = Path(__file__).resolve().parents[1]
FITS = REPO / "fits"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PHENO_CSV = SHARED / "pk_phenobarbital" / "pheno_pharmpy.csv"
OAK_CSV = SHARED / "laleh2022_atezolizumab_sld" / "laleh2022_s1_long.csv"

needs_pheno = pytest.mark.skipif(not PHENO_CSV.exists(), reason="shared pheno data missing")
needs_oak = pytest.mark.skipif(not OAK_CSV.exists(), reason="shared Laleh S1 data missing")
# pheno_pharmpy.csv has DV = 0 on dose records (ignored, as NONMEM does); pkpd says so
pytestmark = pytest.mark.filterwarnings("ignore::pkpd.dosing.events.PkpdDataWarning")


def pheno_raw() -> dict:
    """The phenobarbital spec as a dict, with an absolute data path (dict specs have no
    folder to resolve a relative path against)."""
    raw = tomllib.loads((FITS / "phenobarbital.toml").read_text())
    raw["data"]["path"] = str(PHENO_CSV)
    return copy.deepcopy(raw)


def sf_raw(csv: Path, **data) -> dict:
    """A minimal long-format Stein-Fojo spec."""
    return {
        "model": {"tgi": "stein_fojo", "time_unit": "day"},
        "data": {"path": str(csv), "format": "long", "subject": "ID", "time": "TIME",
                 "dv": "DV", **data},
        "theta": {"mu_b": "Normal(log(60), 1)", "mu_s": "Normal(log(0.01), 1)",
                  "mu_g": "Normal(log(0.003), 1)"},
        "individual": {"y0": "exp(mu_b + eta_b)", "d": "exp(mu_s + eta_s)",
                       "g": "exp(mu_g)"},
        "residual": {"model": "proportional", "prop": "HalfNormal(1)"},
    }


def spec_error(raw) -> str:
    with pytest.raises(SpecError) as exc:
        load_spec(raw)
    return str(exc.value)


# ---------------------------------------------------------------------------------------------
# validation: every bad spec is refused by load_spec with a message naming the offending item
# ---------------------------------------------------------------------------------------------
@needs_pheno
def test_reference_pheno_dict_is_valid():
    spec = load_spec(pheno_raw())
    assert spec.population_names == ["theta1", "theta2", "theta3", "omega11", "omega22",
                                      "sigma"]
    assert spec.parameters == ("CL", "V")
    assert spec.residual.variance == {"prop": True}


@needs_pheno
@pytest.mark.parametrize("section, name", [("individual", "CLX"), ("fixed", "KA")])
def test_unknown_parameter_name(section, name):
    raw = pheno_raw()
    raw.setdefault(section, {})[name] = "theta1" if section == "individual" else 1.0
    msg = spec_error(raw)
    assert f"[{section}]" in msg and repr(name) in msg
    assert "is not a parameter of the model" in msg and "CL, V" in msg   # the fix lists them


@needs_pheno
def test_prior_on_fixed_parameter():
    raw = pheno_raw()
    raw["fixed"] = {"V": 2.0}
    raw["theta"]["V"] = "LogNormal(0, 1)"
    msg = spec_error(raw)
    assert "prior on the fixed parameter 'V'" in msg


@needs_pheno
def test_fixed_value_may_not_override_an_individual_expression():
    """[fixed] V = 2 next to [individual] V = "..." used to drop the expression silently."""
    raw = pheno_raw()
    raw["fixed"] = {"V": 2.0}
    msg = spec_error(raw)
    assert "[fixed]" in msg and "'V' is fixed at 2.0" in msg
    assert "theta2*WGT" in msg and "silently" in msg and "Fix: remove V from [fixed]" in msg
    for section, key in (("individual", "V"), ("theta", "theta2"), ("theta", "theta3"),
                         ("omega", "eta_V")):
        del raw[section][key]
    spec = load_spec(raw)             # fixed without an expression is fine
    assert spec.fixed == {"V": 2.0} and "V" not in spec.individual


@needs_pheno
@pytest.mark.parametrize("name, needle", [
    (".", "is '.' or '..'"), ("..", "is '.' or '..'"), ("../other", "path separator"),
    ("a/b", "path separator"), ("a\\b", "path separator"), ("", "is empty"), ("  ", "is empty"),
    (".hidden", "starts with a dot"), ("bad\nname", "control character"),
])
def test_fit_name_must_be_a_plain_folder_name(name, needle):
    """[fit] name is the results folder's name: a path would let pkpd write or replace folders
    elsewhere (name = "." once replaced the spec's own folder)."""
    raw = pheno_raw()
    raw["fit"]["name"] = name
    msg = spec_error(raw)
    assert "[fit]" in msg and repr(name) in msg and needle in msg
    assert "Fix: e.g. name = 'phenobarbital'" in msg and "--out" in msg


@needs_pheno
def test_fit_name_default_from_a_dotted_spec_file(tmp_path):
    """Without [fit] name the folder is named after the spec file; '.hidden.toml' would give a
    hidden folder next to pkpd's working folders."""
    text = (FITS / "phenobarbital.toml").read_text()
    text = text.replace('name = "phenobarbital"\n', "", 1)
    text = text.replace('path = "../../shared/data/pk_phenobarbital/pheno_pharmpy.csv"',
                        f'path = "{PHENO_CSV.as_posix()}"', 1)
    assert "phenobarbital\"" not in text and str(PHENO_CSV.as_posix()) in text
    p = tmp_path / ".hidden.toml"
    p.write_text(text)
    msg = spec_error(p)
    assert "'.hidden'" in msg and "add [fit] name" in msg
    ok = tmp_path / "plain.toml"
    ok.write_text(text)
    assert load_spec(ok).name == "plain"


@needs_pheno
@pytest.mark.parametrize("residual, needle", [
    ({"model": "exponentialx", "prop": "HalfNormal(1)"}, "'exponentialx' is unknown"),
    ({"model": "combined2", "prop": "HalfNormal(1)"}, "needs a prior for 'add'"),
    ({"model": "proportional", "prop": "Normal(0, 1)"}, "'Normal(0, 1)' of prop allows negative"),
    ({"model": "additive", "add": "HalfNormal(1)", "prop": "HalfNormal(1)"},
     "prop do not belong to the additive model"),
])
def test_bad_error_model(residual, needle):
    raw = pheno_raw()
    raw["residual"] = residual
    msg = spec_error(raw)
    assert "[residual]" in msg and needle in msg


@needs_pheno
def test_unknown_error_model_lists_the_known_ones():
    raw = pheno_raw()
    raw["residual"] = {"model": "exponentialx"}
    msg = spec_error(raw)
    for m in ("additive", "proportional", "combined1", "combined2"):
        assert m in msg


@needs_pheno
def test_unknown_sampler_and_bad_settings():
    raw = pheno_raw()
    raw["sampler"]["name"] = "gibbs"
    assert "sampler 'gibbs' is unknown" in spec_error(raw)
    raw = pheno_raw()
    raw["sampler"]["thin"] = 2
    assert "unknown setting(s) thin" in spec_error(raw)
    raw = pheno_raw()
    raw["sampler"]["target_accept"] = 1.2
    assert "target_accept" in spec_error(raw)
    # overrides (the CLI's --sampler) go through the same check
    with pytest.raises(SpecError, match="'hmc' is unknown"):
        load_spec(pheno_raw(), overrides={"name": "hmc"})


@needs_pheno
def test_non_numeric_sampler_setting_is_a_spec_error():
    raw = pheno_raw()
    raw["sampler"]["chains"] = "four"
    with pytest.raises(SpecError, match="chains"):
        load_spec(raw)


@needs_pheno
@pytest.mark.parametrize("prior, needle", [
    ("Weibull(1, 2)", "unknown prior distribution 'Weibull'"),
    ("Normal", "is not a distribution call"),
    ("HalfNormal(-1)", "HalfNormal needs sigma > 0"),
    ("Normal(0)", "Normal needs 2 argument(s)"),
    ("Uniform(2, 1)", "Uniform needs upper > lower"),
    ("Normal(0, scale=1)", "Normal has no argument 'scale'"),
    ("Normal(x, 1)", "prior argument 'x'"),
])
def test_bad_prior(prior, needle):
    raw = pheno_raw()
    raw["theta"]["theta3"] = prior
    msg = spec_error(raw)
    assert "[theta.theta3]" in msg and needle in msg


def test_prior_parsing_values():
    p = parse_prior("Normal(log(65), 1)", "t")
    assert p.dist == "Normal" and p.args == (math.log(65), 1.0)
    assert parse_prior("Normal(mu=0, sigma=2)", "t").args == (0.0, 2.0)
    assert parse_prior("InvGamma(0.5, 0.025)", "t").support == "positive"
    c = parse_prior({"dist": "lognormal", "median": 80.0, "sd_log": 0.5}, "t")
    assert (c.dist, c.args) == ("LogNormal", (math.log(80.0), 0.5))
    with pytest.raises(SpecError, match="incomplete card prior"):
        parse_prior({"dist": "lognormal", "median": 80.0}, "t")


def test_unsampleable_card_prior_message():
    with pytest.raises(SpecError, match="cannot be sampled"):
        parse_prior({"dist": "gamma", "shape": 2.0, "rate": 1.0}, "t")


@needs_pheno
@pytest.mark.parametrize("expr, needle", [
    ("exp(", "cannot parse 'exp('"),
    ("__import__('os')", "\"__import__('os')\" is not allowed"),
    ("theta1.real*WGT", "'theta1.real' is not allowed"),
    ("(lambda: theta1)()", "is not allowed"),
    ("theta1*WGT*'a'", "only numbers are allowed"),
    ("system(theta1)", "'system(theta1)' is not allowed"),
])
def test_malformed_expression(expr, needle):
    raw = pheno_raw()
    raw["individual"]["CL"] = expr
    msg = spec_error(raw)
    assert "[individual.CL]" in msg and needle in msg


def test_function_arity_is_checked_when_parsing():
    with pytest.raises(SpecError):
        parse_expr("exp(theta1, eta_CL)", "t")


@needs_pheno
def test_eta_in_omega_not_used():
    raw = pheno_raw()
    raw["omega"]["eta_KA"] = {"prior": "HalfNormal(1)"}
    msg = spec_error(raw)
    assert "[omega]" in msg and "'eta_KA' is not used" in msg
    assert "eta_CL" in msg and "eta_V" in msg          # the etas that are used


@needs_pheno
def test_theta_never_used():
    raw = pheno_raw()
    raw["theta"]["theta9"] = "Normal(0, 1)"
    msg = spec_error(raw)
    assert "[theta]" in msg and "'theta9' is not used" in msg


@needs_pheno
@pytest.mark.parametrize("expr, name", [("theta1*WT*exp(eta_CL)", "WT"),
                                        ("theta1*WGT*exp(eta_CL + ETA3)", "ETA3")])
def test_expression_uses_undeclared_name(expr, name):
    raw = pheno_raw()
    raw["individual"]["CL"] = expr
    msg = spec_error(raw)
    assert f"uses {name!r}" in msg and "CL = " in msg


@needs_pheno
def test_parameter_without_value():
    raw = pheno_raw()
    del raw["individual"]["V"]
    raw["theta"].pop("theta2")
    raw["theta"].pop("theta3")
    raw["omega"].pop("eta_V")
    msg = spec_error(raw)
    assert "'V' has no expression, prior or fixed value" in msg


@needs_pheno
def test_mu_reference_with_unknown_name():
    raw = pheno_raw()
    raw["omega"]["eta_CL"]["mu"] = "log(TVCL)"
    msg = spec_error(raw)
    assert "TVCL" in msg and "mu of eta_CL" in msg


@needs_pheno
def test_auto_centring_needs_mu():
    raw = pheno_raw()
    raw["omega"]["eta_CL"]["centered"] = "auto"
    msg = spec_error(raw)
    assert "centered = 'auto' for eta_CL needs mu" in msg
    raw["omega"]["eta_CL"]["mu"] = "log(theta1)"
    assert load_spec(raw).omegas[0].centered == "auto"


@needs_pheno
def test_unknown_centring_mode():
    raw = pheno_raw()
    raw["omega"]["eta_CL"].update(mu="log(theta1)", centered="half")
    msg = spec_error(raw)
    assert "centered = 'half'" in msg and "'auto'" in msg


def test_spec_file_problems(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"\[thetas\]: unknown section"):
        load_spec({"thetas": {}})
    with pytest.raises(SpecError, match=r"\[model\]: missing"):
        load_spec({"data": {}})


def test_relative_data_path_resolves_against_the_spec_file(tmp_path):
    d = tmp_path / "sub"
    d.mkdir()
    pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 10.0], "DV": [50.0, 40.0]}).to_csv(
        d / "x.csv", index=False)
    raw = sf_raw(Path("sub/x.csv"))
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(_toml(raw))
    spec = load_spec(spec_path)
    assert spec.data.path == (d / "x.csv").resolve()
    missing = tmp_path / "t.toml"
    missing.write_text(_toml(sf_raw(Path("nowhere.csv"))))
    with pytest.raises(SpecError, match=r"\[data\]: data file .*nowhere.csv does not exist"):
        load_spec(missing)


def _toml(raw: dict) -> str:
    """Just enough TOML writing for the flat specs of these tests."""
    out = []
    for sec, body in raw.items():
        out.append(f"[{sec}]")
        for k, v in body.items():
            out.append(f"{k} = {_tv(v)}")
    return "\n".join(out) + "\n"


def _tv(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_tv(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_tv(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# data problems: DataError naming the column, raised before anything is sampled
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("drop", ["DV", "ID"])
def test_long_data_missing_column(tmp_path, drop):
    df = pd.DataFrame({"ID": [1, 1, 2, 2], "TIME": [0.0, 42.0, 0.0, 42.0],
                       "DV": [50.0, 40.0, 70.0, 72.0]}).drop(columns=[drop])
    csv = tmp_path / "sld.csv"
    df.to_csv(csv, index=False)
    spec = load_spec(sf_raw(csv))               # the spec itself is fine
    with pytest.raises(DataError) as exc:
        read_fit_data(spec)
    msg = str(exc.value)
    assert f"column(s) {drop} not found" in msg
    assert "Fix:" in msg


@needs_pheno
def test_nonmem_data_missing_covariate_column():
    raw = pheno_raw()
    raw["data"]["covariates"] = ["WGT", "APGR", "HT"]
    with pytest.raises(DataError, match=r"column\(s\) HT not found"):
        read_fit_data(load_spec(raw))


@needs_pheno
def test_nonmem_data_missing_id_column(tmp_path):
    df = pd.read_csv(PHENO_CSV).drop(columns=["ID"])
    df.to_csv(tmp_path / "noid.csv", index=False)
    raw = pheno_raw()
    raw["data"]["path"] = str(tmp_path / "noid.csv")
    with pytest.raises(DataError, match="ID"):
        read_fit_data(load_spec(raw))


@needs_pheno
def test_nonmem_data_missing_dv_column(tmp_path):
    df = pd.read_csv(PHENO_CSV).drop(columns=["DV"])
    df.to_csv(tmp_path / "nodv.csv", index=False)
    raw = pheno_raw()
    raw["data"]["path"] = str(tmp_path / "nodv.csv")
    with pytest.raises((DataError, SpecError), match="DV"):
        read_fit_data(load_spec(raw))


def test_errors_stop_fit_before_sampling(tmp_path, monkeypatch):
    """pkpd.fit.fit validates spec and data before the sampler is touched or a folder is made."""
    import pkpd.fit.run as run

    def boom(*a, **k):
        raise AssertionError("the sampler must not be reached")

    monkeypatch.setattr(run, "_sample_batch", boom)
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 42.0], "Y": [50.0, 40.0]})
    csv = tmp_path / "sld.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="DV"):
        run.fit(sf_raw(csv), out=out, progress=False)
    bad = sf_raw(csv, dv="Y")
    bad["residual"]["model"] = "exponentialx"
    with pytest.raises(SpecError, match="exponentialx"):
        run.fit(bad, out=out, progress=False)
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_long_table_rules(tmp_path):
    """filter, flag values, zero replacement and missing values, with the row account."""
    df = pd.DataFrame({
        "ID": [1, 1, 1, 1, 2, 2, 3],
        "TIME": [0.0, 30.0, 60.0, 90.0, 0.0, np.nan, 0.0],
        "DV": [50.0, 0.0, np.nan, np.nan, 40.0, 30.0, 10.0],
        "FL": ["", "", "TSTM", "NE", "", "", ""],
        "ST": [4, 4, 4, 4, 4, 4, 3],
    })
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    spec = load_spec(sf_raw(csv, filter={"ST": 4}, flag="FL", zero=2.0,
                            flag_values={"TSTM": 2.0, "NE": "missing"}))
    d = read_fit_data(spec)
    assert d.subjects == ["1", "2"]
    np.testing.assert_array_equal(d.y, [50.0, 2.0, 2.0, 40.0])
    np.testing.assert_array_equal(d.obs_row, [1, 2, 3, 5])
    reasons = d.rows.set_index("row")["reason"]
    assert reasons[4].startswith("missing value") and reasons[6].startswith("missing time")
    assert reasons[7].startswith("filter ST")
    assert (d.rows["reason"] != "").all()                 # every row accounted for


# ---------------------------------------------------------------------------------------------
# the OAK reference spec and data rules
# ---------------------------------------------------------------------------------------------
@needs_oak
def test_oak_spec_and_counts():
    spec = load_spec(FITS / "oak_stein_fojo.toml")
    assert spec.population_names == ["mu_b", "mu_s", "mu_g", "omega_b", "omega_s", "omega_g",
                                     "sigma"]
    assert spec.time_unit == "year" and spec.residual.model == "proportional"
    assert [b.mu.text for b in spec.omegas] == ["mu_b", "mu_s", "mu_g"]
    d = read_fit_data(spec)
    assert d.n_obs == 4099 and d.n_subjects == 701        # the published counts
    assert not d.censored.any()
    # independent pandas rendering of the spec's rules
    raw = pd.read_csv(OAK_CSV, low_memory=False)
    s = raw[raw["study"] == 4].copy()
    y = s["value_mm"].copy()
    y[s["flag"] == "TOO_SMALL_TO_MEASURE"] = 2.0
    y[y == 0] = 2.0
    keep = y.notna() & (s["flag"] != "NOT_EVALUABLE")
    assert keep.sum() == 4099
    assert s.loc[keep, ["study_arm", "patient_id"]].drop_duplicates().shape[0] == 701
    # time in years = day / 365.25, values and rows traceable to the file
    src = raw.iloc[d.obs_row - 1]
    np.testing.assert_allclose(d.obs_time, src["treatment_day"].to_numpy() / 365.25,
                               rtol=1e-15, atol=0)
    np.testing.assert_array_equal(d.y, y.loc[src.index].to_numpy())
    assert (src["study"] == 4).all()
    assert d.meta["time_factor"] == pytest.approx(1 / 365.25, rel=1e-15)
    # observations sorted by time within subject, subjects contiguous
    key = pd.DataFrame({"s": d.obs_subject, "t": d.obs_time})
    assert (key.groupby("s")["t"].diff().dropna() >= 0).all()
    assert (np.diff(d.obs_subject) >= 0).all()


# ---------------------------------------------------------------------------------------------
# defaults from a tumour card
# ---------------------------------------------------------------------------------------------
def test_tumour_card_defaults():
    from pkpd.cards import load_card
    card = load_card("sclc_triplet_tgi")
    spec = load_spec({"model": {"card": "sclc_triplet_tgi"}, "data": {"format": "simulate"},
                      "simulate": {}})
    assert spec.model_kind == "tumour_card" and spec.time_unit == "day"
    params = card.raw["parameters"]
    # card parameters with a non-fixed prior are estimated with that prior ...
    est = {k for k, v in params.items() if v.get("prior", {}).get("dist") != "fixed"}
    assert set(spec.thetas) == est
    for k in est:
        pr = params[k]["prior"]
        th = spec.thetas[k].prior
        if pr["dist"] == "lognormal":
            assert (th.dist, th.args) == ("LogNormal", (math.log(pr["median"]), pr["sd_log"]))
        else:
            assert (th.dist, th.args) == ("Normal", (pr["mean"], pr["sd"]))
    # ... "fixed" ones stay at the card value
    assert spec.fixed == {"IMAXA": 1.0, "EC50D": 0.533}
    # IIV: exp -> P*exp(eta_P), add -> P + eta_P; no IIV -> the theta itself
    iiv = card.raw["iiv"]
    for k in est:
        text = spec.individual[k].text
        if k not in iiv:
            assert text == k
        elif iiv[k]["type"] == "add":
            assert text == f"{k} + eta_{k}"
        else:
            assert text == f"{k}*exp(eta_{k})"
    # default omega prior: HalfNormal(2 * card omega), reported as an SD named omega_P
    for b in spec.omegas:
        par = b.etas[0].removeprefix("eta_")
        assert b.kind == "diag" and b.names == (f"omega_{par}",) and b.report == "sd"
        assert b.sd_priors[0].dist == "HalfNormal"
        assert b.sd_priors[0].args[0] == pytest.approx(2 * math.sqrt(iiv[par]["omega2"]),
                                                       rel=1e-14)
    assert sorted(spec.etas) == sorted(f"eta_{k}" for k in iiv)
    # the card's residual model (combined2) with HalfNormal(2 * card SD) priors
    r = spec.residual
    assert r.model == "combined2" and r.names == {"add": "sigma_add", "prop": "sigma_prop"}
    assert r.priors["add"].args == (6.0,) and r.priors["prop"].args == (0.2,)
    # overriding: [fixed] wins over the card prior
    spec2 = load_spec({"model": {"card": "sclc_triplet_tgi"}, "data": {"format": "simulate"},
                       "simulate": {}, "fixed": {"KV": 0.05}})
    assert spec2.fixed["KV"] == 0.05 and "KV" not in spec2.thetas


def test_triplet_recovery_spec():
    spec = load_spec(FITS / "triplet_recovery.toml")
    assert spec.fixed == {"KE0C": 0.1, "KV": 0.0433, "IC50A": 2.0, "HILLA": 1.54,
                          "IMAXA": 1.0, "EC50D": 0.533}
    assert spec.individual["KAA"].text == "KAA" and spec.individual["PSI"].text == "PSI"
    assert spec.etas == ["eta_BASE", "eta_KG", "eta_KCHEMO", "eta_KIO", "eta_LAMBDA"]
    assert spec.omegas[0].mu.text == "log(BASE)"
    assert spec.thetas["KAA"].prior.args == (math.log(0.006), 1.0)


# ---------------------------------------------------------------------------------------------
# the expression evaluator
# ---------------------------------------------------------------------------------------------
def test_expression_evaluator_matches_numpy():
    rng = np.random.default_rng(3)
    n = 50
    env = {"theta1": 0.0047, "theta2": 0.96, "theta3": 0.17, "WGT": rng.uniform(0.5, 3.5, n),
           "APGR": rng.integers(1, 11, n).astype(float), "eta_V": rng.normal(0, 0.3, n),
           "x": rng.normal(0, 2, n), "y": rng.uniform(0.1, 3, n)}
    cases = {
        "theta2*WGT*(1 + theta3*(APGR < 5))*exp(eta_V)":
            env["theta2"] * env["WGT"] * (1 + env["theta3"] * (env["APGR"] < 5))
            * np.exp(env["eta_V"]),
        "APGR <= 5": (env["APGR"] <= 5).astype(float),
        "(APGR == 7) + 2*(APGR != 7) + 4*(x > 0) + 8*(x >= 1)":
            (env["APGR"] == 7) + 2.0 * (env["APGR"] != 7) + 4.0 * (env["x"] > 0)
            + 8.0 * (env["x"] >= 1),
        "-x**2 + y**-0.5 - 3/y": -env["x"] ** 2 + env["y"] ** -0.5 - 3 / env["y"],
        "where(x > 0, sqrt(abs(x)), log(y))":
            np.where(env["x"] > 0, np.sqrt(np.abs(env["x"])), np.log(env["y"])),
        "maximum(x, y) - minimum(x, -y) + +x": np.maximum(env["x"], env["y"])
            - np.minimum(env["x"], -env["y"]) + env["x"],
        "exp(theta1 + 0.75*log(WGT/70))": np.exp(env["theta1"] + 0.75 * np.log(env["WGT"] / 70)),
    }
    for text, want in cases.items():
        e = parse_expr(text, "t")
        got = e.evaluate(env, np)
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0, err_msg=text)
    assert parse_expr(next(iter(cases)), "t").names == {"theta2", "WGT", "theta3", "APGR",
                                                        "eta_V"}
    # the same tree evaluated with jax.numpy (the likelihood backend)
    import jax.numpy as jnp
    e = parse_expr("theta2*WGT*(1 + theta3*(APGR < 5))*exp(eta_V)", "t")
    np.testing.assert_allclose(np.asarray(e.evaluate(env, jnp)), cases[e.text], rtol=1e-15)
    with pytest.raises(SpecError, match="unknown name 'zz'"):
        parse_expr("zz + 1", "t").evaluate(env, np)


@needs_pheno
def test_sampler_threads_setting():
    raw = pheno_raw()
    assert load_spec(raw).sampler.threads == "auto"
    raw["sampler"]["threads"] = 1
    assert load_spec(raw).sampler.threads == 1
    for bad in (0, "two", 1.5, True):
        raw["sampler"]["threads"] = bad
        assert "threads must be" in spec_error(raw)


def test_nutpie_threads_rule():
    """``threads = "auto"``: one thread below AUTO_ONE_THREAD_MS per log density, else one per
    chain (at most the CPUs); an integer is used as given, capped at the chains."""
    from types import SimpleNamespace

    from pkpd.fit import run as fr

    def spec(threads):
        return SimpleNamespace(sampler=SimpleNamespace(threads=threads))

    cheap = {"logp_ms": fr.AUTO_ONE_THREAD_MS / 2}
    dear = {"logp_ms": fr.AUTO_ONE_THREAD_MS * 2}
    assert fr.nutpie_threads(spec("auto"), None, 4, dict(cheap)) == 1
    assert fr.nutpie_threads(spec("auto"), None, 2, dict(dear)) == min(2, os.cpu_count() or 1)
    assert fr.nutpie_threads(spec(3), None, 2, {}) == 2
    assert fr.nutpie_threads(spec(1), None, 4, {}) == 1
