"""Issue 16, model choice: k-fold / leave-one-patient-out cross-validation (pkpd.fit.kfold).

Oracles: the partition and stratification properties of the folds (exact); the closed-form
marginal predictive density of a Gaussian random-intercept model, y_ij = mu + eta_i + eps_ij,
for which integrating the held-out patient's eta gives a multivariate normal (scipy); and, end to
end, simulated data from a growing-tumour model, which the true model must win against a model
without growth.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from pkpd.errors import PkpdError
from pkpd.fit import kfold as kf
from pkpd.fit import load_spec, read_fit_data
from pkpd.fit.problem import build_problem


# ---- folds ------------------------------------------------------------------------------------
def test_folds_partition_the_subjects_stratified_and_deterministic():
    subjects = [f"P{i:03d}" for i in range(53)]
    arms = ["A"] * 30 + ["B"] * 17 + ["C"] * 6
    f = kf.assign_folds(subjects, arms, k=5, seed=3)
    assert f.shape == (53,) and set(f) == set(range(5))           # every subject in one fold
    sizes = np.bincount(f, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for arm in "ABC":                                              # stratified by arm
        c = np.bincount(f[np.array(arms) == arm], minlength=5)
        assert c.max() - c.min() <= 1, (arm, c)
    assert np.array_equal(f, kf.assign_folds(subjects, arms, k=5, seed=3))
    assert not np.array_equal(f, kf.assign_folds(subjects, arms, k=5, seed=4))
    lopo = kf.assign_folds(subjects, arms, k=53, seed=0)           # leave one patient out
    assert sorted(lopo) == list(range(53))
    with pytest.raises(PkpdError, match="k must be an integer from 2 to 53"):
        kf.assign_folds(subjects, arms, k=54)


def test_subset_of_pk_data_predicts_as_the_full_data():
    """A fold's data (events of its patients only) give the same per-observation
    log-likelihood as the full phenobarbital data restricted to those patients."""
    from pathlib import Path
    spec = load_spec(Path(__file__).resolve().parents[1] / "fits" / "phenobarbital.toml")
    data = read_fit_data(spec)
    keep = kf.assign_folds(data.subjects, None, k=4, seed=1) == 2
    sub = kf.subset_data(data, keep)
    assert sub.subjects == [s for s, k in zip(data.subjects, keep, strict=True) if k]
    assert sub.sha256 != data.sha256 and sub.n_obs == int(keep[data.obs_subject].sum())
    rng = np.random.default_rng(0)
    wgt, apgr = data.covariates["WGT"], data.covariates["APGR"]
    P = np.stack([0.0047 * wgt * np.exp(0.2 * rng.standard_normal(wgt.size)),
                  0.99 * wgt * (1 + 0.15 * (apgr < 5))], axis=1)
    r = {"prop": 0.12}
    full = np.asarray(build_problem(spec, data).pointwise(P, r))
    part = np.asarray(build_problem(spec, sub).pointwise(P[keep], r))
    np.testing.assert_allclose(part, full[keep[data.obs_subject]], rtol=1e-12)


# ---- the held-out elpd against a closed form --------------------------------------------------
def _write_long(path, ids, t, y):
    pd.DataFrame({"ID": ids, "TIME": t, "SLD": y}).to_csv(path, index=False)


_INTERCEPT_SPEC = """
[fit]
name = "{name}"
[model]
tgi = "exponential"
[data]
path = "{csv}"
subject = "ID"
time = "TIME"
dv = "SLD"
[theta]
mu = "Normal(50, 20)"
[individual]
y0 = "mu + eta_y0"
[fixed]
g = 0.0
[omega]
eta_y0 = "HalfNormal(10)"
[residual]
model = "additive"
add = "HalfNormal(10)"
"""


def test_holdout_elpd_matches_the_multivariate_normal_marginal(tmp_path):
    """y_ij = mu + eta_i + eps_ij: integrating eta gives y_i ~ MVN(mu 1, omega^2 J +
    sigma^2 I) per posterior draw; elpd_i = log mean over draws of that density."""
    rng = np.random.default_rng(11)
    n_subj, per = 3, [4, 2, 5]
    ids = np.repeat(np.arange(1, n_subj + 1), per)
    y = 50 + 6 * rng.standard_normal(n_subj)[ids - 1] + 3 * rng.standard_normal(ids.size)
    csv = tmp_path / "d.csv"
    _write_long(csv, ids, np.zeros(ids.size), y)
    (tmp_path / "s.toml").write_text(_INTERCEPT_SPEC.format(name="ri", csv=csv.name))
    spec = load_spec(tmp_path / "s.toml")
    data = read_fit_data(spec)
    problem = build_problem(spec, data)
    n_draw = 40                                                    # a posterior, made up
    mu = 50 + rng.normal(0, 1.5, n_draw)
    om = rng.uniform(4, 8, n_draw)
    sg = rng.uniform(2, 4, n_draw)
    post = xr.Dataset({
        "mu": (("chain", "draw"), mu.reshape(2, -1)),
        "omega_sd": (("chain", "draw", "eta_name"), om.reshape(2, -1, 1)),
        spec.residual.names["add"]: (("chain", "draw"), sg.reshape(2, -1)),
    }, coords={"eta_name": ["eta_y0"]})
    got = kf.holdout_elpd(problem, az.InferenceData(posterior=post), n_mc=4000, seed=5)
    for i, s in enumerate(data.subjects):
        yi = data.y[data.obs_subject == i]
        m = yi.size
        dens = [multivariate_normal(np.full(m, mu[d]),
                                    om[d] ** 2 * np.ones((m, m)) + sg[d] ** 2 * np.eye(m)
                                    ).logpdf(yi) for d in range(n_draw)]
        want = logsumexp(dens) - np.log(n_draw)
        row = got.set_index("subject").loc[s]
        assert 0 < row["mc_se"] < 0.05                             # the MC error is small ...
        assert abs(row["elpd"] - want) < 4 * row["mc_se"], (s, row["elpd"], want)  # ... and holds


# ---- end to end: the true model wins; mismatched data are refused -----------------------------
_GROWTH = """
[fit]
name = "{name}"
[model]
tgi = "exponential"
[data]
path = "{csv}"
subject = "ID"
time = "TIME"
dv = "SLD"
[theta]
b = "Normal(4, 1)"
{theta_g}
[individual]
y0 = "exp(b + eta_b)"
{g}
[omega]
eta_b = "HalfNormal(0.5)"
[residual]
model = "proportional"
prop = "HalfNormal(0.3)"
[sampler]
name = "nutpie"
chains = 2
tune = 200
draws = 200
seed = 1
"""


def _growth_specs(tmp_path, seed=2, n=12):
    rng = np.random.default_rng(seed)
    t = np.array([0.0, 30.0, 60.0, 90.0, 120.0])
    ids = np.repeat(np.arange(1, n + 1), t.size)
    y0 = 50 * np.exp(0.2 * rng.standard_normal(n))
    f = y0[ids - 1] * np.exp(0.008 * np.tile(t, n))
    y = f * (1 + 0.1 * rng.standard_normal(f.size))
    csv = tmp_path / f"sld{seed}.csv"
    _write_long(csv, ids, np.tile(t, n), y)
    true = tmp_path / f"growth{seed}.toml"
    true.write_text(_GROWTH.format(name="growth", csv=csv.name, theta_g='lg = "Normal(-5, 1)"',
                                   g='g = "exp(lg)"'))
    flat = tmp_path / f"flat{seed}.toml"
    flat.write_text(_GROWTH.format(name="flat", csv=csv.name, theta_g="",
                                   g="[fixed]\ng = 0.0"))
    return true, flat


@pytest.mark.slow       # 6 short refits: about 50 s on 2 cores
def test_compare_models_picks_the_true_model_and_resumes(tmp_path, capsys):
    true, flat = _growth_specs(tmp_path)
    out = tmp_path / "cmp"
    table = kf.compare_models([true, flat], k=3, seed=0, out=out, n_mc=50, max_draws=100)
    assert list(table.columns) == kf.COMPARE_COLUMNS
    assert list(table["model"]) == ["growth2", "flat2"]             # the true model wins ...
    worse = table.iloc[1]
    assert worse["elpd_diff"] < -4 * worse["dse"]                   # ... clearly
    assert table.iloc[0]["elpd_diff"] == 0 and table.iloc[0]["dse"] == 0
    pw = pd.read_csv(out / "pointwise.csv")
    assert len(pw) == 12 and set(pw["fold"]) == {0, 1, 2}
    assert np.isclose(pw["growth2"].sum(), table.iloc[0]["elpd_kfold"])
    e = pw["growth2"].to_numpy()
    assert np.isclose(table.iloc[0]["se"], np.sqrt(12) * e.std(ddof=1))
    saved = json.loads((out / "compare.json").read_text())
    assert saved["table"][0]["model"] == "growth2"
    assert not list(out.glob("**/.*partial"))                       # refit checkpoints removed
    capsys.readouterr()
    again = kf.compare_models([true, flat], k=3, seed=0, out=out, n_mc=50, max_draws=100)
    assert "done before" in capsys.readouterr().err                 # finished folds reused
    pd.testing.assert_frame_equal(again, table)


def test_compare_models_refuses_fits_of_different_data(tmp_path, capsys):
    """Two fit folders whose fit.json name different data: refused before any refit, with both
    hashes and the fix; through the command line, one line on stderr and exit 2."""
    from pkpd.fit import fit
    true, _ = _growth_specs(tmp_path, seed=2)
    _, other = _growth_specs(tmp_path, seed=3)
    short = {"chains": 1, "tune": 100, "draws": 100}
    a = fit(true, out=tmp_path / "A", overrides=short, progress=False).path
    b = fit(other, out=tmp_path / "B", overrides=short, progress=False).path
    sha_a = json.loads((a / "fit.json").read_text())["data_sha256"]
    sha_b = json.loads((b / "fit.json").read_text())["data_sha256"]
    assert sha_a != sha_b
    with pytest.raises(PkpdError, match=rf"data sha256 {sha_b[:12]} vs {sha_a[:12]}.*Fix"):
        kf.compare_models([a, b], k=3)
    from pkpd.cli import build_parser
    args = build_parser().parse_args(["compare-models", str(a), str(b), "--k", "3", "--quiet"])
    capsys.readouterr()
    assert args.func(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("pkpd compare-models: error: ") and "Fix:" in err
    # a spec file against the other fit's folder: the data read now are compared
    with pytest.raises(PkpdError, match=rf"data sha256 {sha_a[:12]} vs {sha_b[:12]}"):
        kf.compare_models([b, true], k=3)
