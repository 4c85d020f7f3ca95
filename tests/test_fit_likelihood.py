"""Likelihoods and log densities of population fits against independent oracles.

Oracles: scipy.stats (normal, log-normal, half-normal, inverse-Wishart densities), closed-form
numpy predictions (Stein-Fojo, bolus superposition), pkpd's exact event engine (for the
superposition fast path), jax.jacobian (the change of variables of the inverse-Wishart block).
All computations are float64 sums of a few hundred to a few thousand terms, so agreement is to
round-off: rtol 1e-10 leaves several orders of magnitude of margin.
"""

from __future__ import annotations

import copy
import math
import tomllib
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import multigammaln

import pkpd.fit.problem as fp
from pkpd.fit import build_problem, load_spec, prepare, read_fit_data
from pkpd.fit.data import progression_cut
from pkpd.fit.problem import pointwise_loglik, residual_sd

REPO = Path(__file__).resolve().parents[1]
FITS = REPO / "fits"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PHENO_CSV = SHARED / "pk_phenobarbital" / "pheno_pharmpy.csv"
BAUER_CSV = SHARED / "pk_bauer2019_nonmem_tutorial_1cmt_iv" / "bauer2019_501.csv"
OAK_CSV = SHARED / "laleh2022_atezolizumab_sld" / "laleh2022_s1_long.csv"
needs_pheno = pytest.mark.skipif(not PHENO_CSV.exists(), reason="shared pheno data missing")
needs_bauer = pytest.mark.skipif(not BAUER_CSV.exists(), reason="shared Bauer data missing")
needs_oak = pytest.mark.skipif(not OAK_CSV.exists(), reason="shared Laleh S1 data missing")
pytestmark = [pytest.mark.filterwarnings("ignore::pkpd.dosing.events.PkpdDataWarning"),
              pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")]

RTOL = 1e-10


# ---------------------------------------------------------------------------------------------
# pointwise likelihood and residual SDs
# ---------------------------------------------------------------------------------------------
def test_pointwise_loglik_matches_scipy():
    rng = np.random.default_rng(11)
    n = 400
    f = rng.uniform(0.5, 80, n)
    sd = rng.uniform(0.05, 10, n)
    y = f + sd * rng.uniform(-8, 8, n)              # z from -8 to 8: both tails of log Phi
    cens = rng.random(n) < 0.4
    got = np.asarray(pointwise_loglik(jnp.asarray(f), jnp.asarray(sd), jnp.asarray(y),
                                      jnp.asarray(cens)))
    np.testing.assert_allclose(got[~cens], stats.norm.logpdf(y, f, sd)[~cens], rtol=1e-12)
    # log Phi(z) for z in (5, 8) is ~ -1e-7 .. -1e-15: jax's log_ndtr computes log(ndtr(z))
    # there, exact to an absolute 1e-16 (not relative); atol 1e-15 allows exactly that
    np.testing.assert_allclose(got[cens], stats.norm.logcdf(y, f, sd)[cens], rtol=1e-12,
                               atol=1e-15)


def test_residual_sd_formulas():
    """CONVENTIONS.md 6.2: additive a; proportional b*f; combined1 a + b*f;
    combined2 sqrt(a^2 + b^2 f^2)."""
    f = np.array([0.0, 0.3, 2.0, 17.0, 250.0])
    a, b = 1.7, 0.12
    r = {"add": a, "prop": b}
    want = {"additive": np.full_like(f, a), "proportional": b * f, "combined1": a + b * f,
            "combined2": np.sqrt(a ** 2 + b ** 2 * f ** 2)}
    for model, w in want.items():
        got = np.asarray(residual_sd(model, jnp.asarray(f), r))
        assert got.shape == f.shape
        np.testing.assert_allclose(got, w, rtol=1e-15, atol=0, err_msg=model)
    with pytest.raises(Exception, match="unknown residual model"):
        residual_sd("exponential", f, r)


# ---------------------------------------------------------------------------------------------
# OAK: Stein-Fojo + proportional normal
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oak():
    spec = load_spec(FITS / "oak_stein_fojo.toml")
    data = read_fit_data(spec)
    return spec, data, build_problem(spec, data)


def stein_fojo_numpy(y0, d, g, t):
    return np.where(t >= 0, y0 * (np.exp(-d * t) + np.exp(g * t) - 1), y0 * np.exp(g * t))


@needs_oak
def test_oak_loglik_matches_numpy(oak):
    spec, data, problem = oak
    assert problem.parameters == ("y0", "d", "g")
    assert (data.obs_time < 0).any() and (data.obs_time > 0).any()     # both branches used
    rng = np.random.default_rng(2022)
    n = data.n_subjects
    P = np.column_stack([rng.uniform(20, 120, n), rng.uniform(0.1, 3, n),
                         rng.uniform(0.05, 2, n)])
    sigma = 0.23
    s = data.obs_subject
    f = stein_fojo_numpy(P[s, 0], P[s, 1], P[s, 2], data.obs_time)
    lp = stats.norm.logpdf(data.y, f, sigma * f)
    total, n_bad = problem.loglik(jnp.asarray(P), {"prop": sigma})
    assert int(n_bad) == 0
    np.testing.assert_allclose(float(total), lp.sum(), rtol=RTOL)
    np.testing.assert_allclose(np.asarray(problem.pointwise(jnp.asarray(P), {"prop": sigma})),
                               lp, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(problem.flat(problem.predict(jnp.asarray(P)))), f,
                               rtol=1e-12)


@needs_oak
def test_oak_nonfinite_prediction_is_minus_inf(oak):
    from pkpd.fit.model import FAILURES, loglik_function
    spec, data, problem = oak
    n = data.n_subjects
    P = np.tile([60.0, 0.5, 1.0], (n, 1))
    k = 5
    P[k, 0] = np.nan                      # baseline: every prediction of subject k is NaN
    total, n_bad = problem.loglik(jnp.asarray(P), {"prop": 0.2})
    assert float(total) == -np.inf
    n_k = int(np.sum(data.obs_subject == k))
    assert int(n_bad) == n_k > 0          # only the real observations of subject k count
    P[k, 0], P[k, 1] = 60.0, np.nan       # shrinkage rate: only the t >= 0 predictions
    total, n_bad = problem.loglik(jnp.asarray(P), {"prop": 0.2})
    after = int(np.sum((data.obs_subject == k) & (data.obs_time >= 0)))
    assert float(total) == -np.inf and int(n_bad) == after > 0
    P[k, 0], P[k, 1] = np.nan, 0.5
    # the PyMC-facing wrapper counts the failed evaluation instead of raising
    FAILURES.reset()
    v = loglik_function(problem)(jnp.asarray(P), jnp.asarray([0.2]))
    jax.effects_barrier()
    assert float(v) == -np.inf
    assert FAILURES.as_dict() == {"failed_evaluations": 1, "failed_predictions": n_k}
    FAILURES.reset()
    # the same under jit with its gradient (the sampler's path), and vmapped over 3 points of
    # which 2 fail: the (pure) callback is neither pruned nor run for the good point
    f = loglik_function(problem)
    vg = jax.jit(jax.value_and_grad(lambda P: f(P, jnp.asarray([0.2]))))
    v, g = vg(jnp.asarray(P))
    assert float(v) == -np.inf
    assert FAILURES.as_dict() == {"failed_evaluations": 1, "failed_predictions": n_k}
    FAILURES.reset()
    good = np.tile([60.0, 0.5, 1.0], (n, 1))
    batch = jnp.asarray(np.stack([P, good, P]))
    vs = jax.jit(jax.vmap(lambda P: f(P, jnp.asarray([0.2]))))(batch)
    assert np.isinf(np.asarray(vs)[[0, 2]]).all() and np.isfinite(np.asarray(vs)[1])
    assert FAILURES.as_dict() == {"failed_evaluations": 2, "failed_predictions": 2 * n_k}
    FAILURES.reset()
    # an overflowing proposal (huge growth rate) is also rejected, not raised
    P = np.tile([60.0, 0.5, 1.0], (n, 1))
    P[k, 2] = 1e4
    total, n_bad = problem.loglik(jnp.asarray(P), {"prop": 0.2})
    assert float(total) == -np.inf and int(n_bad) > 0


def test_censored_m3_and_combined_error_in_total_loglik(tmp_path):
    """Problem.loglik's separate M3 path (log Phi at the censored positions only)."""
    t = np.array([-5.0, 0.0, 40.0, 90.0, 150.0, -3.0, 30.0, 80.0, 200.0, 0.0, 60.0])
    ids = [1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    dv = [50.0, 49.0, np.nan, 12.0, 30.0, 80.0, 60.0, np.nan, 0.0, 20.0, np.nan]
    fl = ["", "", "BLQ", "", "", "", "", "BLQ", "", "", "BLQ"]
    csv = tmp_path / "m3.csv"
    pd.DataFrame({"ID": ids, "TIME": t, "DV": dv, "FL": fl}).to_csv(csv, index=False)
    raw = {
        "model": {"tgi": "stein_fojo", "time_unit": "day"},
        "data": {"path": str(csv), "subject": "ID", "time": "TIME", "dv": "DV", "flag": "FL",
                 "flag_values": {"BLQ": "censor"}, "zero": "censor", "lloq": 5.0},
        "theta": {"b": "Normal(4, 1)", "s": "Normal(-4, 1)", "g": "Normal(-5, 1)"},
        "individual": {"y0": "exp(b + eta_b)", "d": "exp(s)", "g": "exp(g)"},
        "residual": {"model": "combined2", "add": "HalfNormal(3)", "prop": "HalfNormal(1)"},
    }
    spec = load_spec(raw)
    data = read_fit_data(spec)
    assert data.censored.sum() == 4 and np.all(data.y[data.censored] == 5.0)
    problem = build_problem(spec, data)
    P = np.array([[55.0, 0.02, 0.004], [85.0, 0.01, 0.006], [18.0, 0.03, 0.001]])
    a, b = 2.5, 0.15
    s = data.obs_subject
    f = stein_fojo_numpy(P[s, 0], P[s, 1], P[s, 2], data.obs_time)
    sd = np.sqrt(a ** 2 + (b * f) ** 2)
    want = np.where(data.censored, stats.norm.logcdf(data.y, f, sd),
                    stats.norm.logpdf(data.y, f, sd))
    total, _ = problem.loglik(jnp.asarray(P), {"add": a, "prop": b})
    np.testing.assert_allclose(float(total), want.sum(), rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(problem.pointwise(jnp.asarray(P), {"add": a, "prop": b})), want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# PK: superposition fast path vs the event engine vs hand-written superposition
# ---------------------------------------------------------------------------------------------
def _problem_pair(path, monkeypatch):
    spec = load_spec(path)
    data = read_fit_data(spec)
    fast = build_problem(spec, data)
    with monkeypatch.context() as m:
        m.setattr(fp, "_superposition_ok", lambda *a, **k: False)
        engine = build_problem(spec, data)
    return spec, data, fast, engine


@pytest.mark.parametrize("name", [
    pytest.param("phenobarbital", marks=needs_pheno),
    pytest.param("bauer2019_nuts", marks=needs_bauer)])
def test_superposition_matches_engine(name, monkeypatch):
    spec, data, fast, engine = _problem_pair(FITS / f"{name}.toml", monkeypatch)
    assert fast.predict is not engine.predict
    rng = np.random.default_rng(7)
    n = data.n_subjects
    if name == "phenobarbital":           # L/h and L for neonates
        P = np.column_stack([rng.uniform(0.003, 0.02, n), rng.uniform(1, 4, n)])
    else:                                 # around the tutorial's CL 4 L/h, V 30 L
        P = np.column_stack([rng.uniform(2, 8, n), rng.uniform(15, 60, n)])
    f_fast = np.asarray(fast.flat(fast.predict(jnp.asarray(P))))
    f_eng = np.asarray(engine.flat(engine.predict(jnp.asarray(P))))
    assert f_fast.shape == (data.n_obs,) and np.all(f_fast > 0)
    # the engine integrates amounts, so its error is round-off relative to the peak: a Bauer
    # trough 1e-6 x the peak agrees to 6e-10 relative (the fast path matches a 50-digit
    # Decimal evaluation there to 2e-16); atol = 1e-13 x peak covers it
    np.testing.assert_allclose(f_fast, f_eng, rtol=RTOL, atol=1e-13 * f_eng.max())
    r = {"prop": 0.1}
    np.testing.assert_allclose(float(fast.loglik(jnp.asarray(P), r)[0]),
                               float(engine.loglik(jnp.asarray(P), r)[0]), rtol=RTOL)


def pheno_hand_predictions(cl, v):
    """C(t) = sum over earlier doses AMT/V exp(-CL/V (t - td)), straight from the CSV
    (no pkpd reader); returns predictions in file order of the observation rows, their DV
    and the 0-based subject index."""
    df = pd.read_csv(PHENO_CSV)
    ids = list(pd.unique(df["ID"]))
    out, dv, subj = [], [], []
    for i, sid in enumerate(ids):
        g = df[df["ID"] == sid]
        doses = g[g["AMT"] > 0]
        for _, row in g[g["AMT"] == 0].iterrows():
            prior = doses[doses["TIME"] < row["TIME"]]
            out.append(np.sum(prior["AMT"] / v[i] * np.exp(-cl[i] / v[i]
                                                             * (row["TIME"] - prior["TIME"]))))
            dv.append(row["DV"])
            subj.append(i)
    return np.array(out), np.array(dv), np.array(subj)


@needs_pheno
def test_pheno_prediction_equals_hand_superposition():
    spec = load_spec(FITS / "phenobarbital.toml")
    data = read_fit_data(spec)
    problem = build_problem(spec, data)
    rng = np.random.default_rng(5)
    n = data.n_subjects
    cl, v = rng.uniform(0.003, 0.02, n), rng.uniform(1, 4, n)
    want, dv, subj = pheno_hand_predictions(cl, v)
    got = np.asarray(problem.flat(problem.predict(jnp.asarray(np.column_stack([cl, v])))))
    assert data.n_obs == len(want) == 155
    np.testing.assert_array_equal(data.obs_subject, subj)
    np.testing.assert_array_equal(data.y, dv)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    # one infant spelled out: ID 1 has a 25 mg load at t=0, then 3.5 mg every ~12 h
    i1 = subj == 0
    t1 = data.obs_time[i1]
    assert t1[0] == 2.0
    np.testing.assert_allclose(got[i1][0], 25.0 / v[0] * math.exp(-cl[0] / v[0] * 2.0),
                               rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# the PyMC log density
# ---------------------------------------------------------------------------------------------
def _quiet_prepare(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(spec)


@pytest.fixture(scope="module")
def pheno_model():
    spec, data, problem, model, info = _quiet_prepare(FITS / "phenobarbital.toml")
    return spec, data, problem, model, model.compile_logp(jacobian=False)


PHENO_POINT = {"theta1": 0.0047, "theta2": 0.98, "theta3": 0.21, "omega11": 0.035,
               "omega22": 0.041, "sigma": 0.016}


def pheno_oracle_logp(nat, z_cl, z_v):
    """Independent log density (no Jacobians) of the pheno spec at natural-scale values."""
    lp = (stats.lognorm(s=1, scale=0.005).logpdf(nat["theta1"])
          + stats.lognorm(s=1, scale=1.0).logpdf(nat["theta2"])
          + stats.norm(0, 0.5).logpdf(nat["theta3"])
          + stats.halfnorm(scale=0.3).logpdf(nat["omega11"])
          + stats.halfnorm(scale=0.3).logpdf(nat["omega22"])
          + stats.halfnorm(scale=0.1).logpdf(nat["sigma"])
          + stats.norm.logpdf(z_cl).sum() + stats.norm.logpdf(z_v).sum())
    df = pd.read_csv(PHENO_CSV).groupby("ID", sort=False).first()
    wgt, apgr = df["WGT"].to_numpy(), df["APGR"].to_numpy()
    cl = nat["theta1"] * wgt * np.exp(math.sqrt(nat["omega11"]) * z_cl)     # variance scale
    v = nat["theta2"] * wgt * (1 + nat["theta3"] * (apgr < 5)) * np.exp(
        math.sqrt(nat["omega22"]) * z_v)
    f, dv, _ = pheno_hand_predictions(cl, v)
    return lp + stats.norm.logpdf(dv, f, math.sqrt(nat["sigma"]) * f).sum()


def _value_point(nat, **z):
    pt = {f"{k}_log__": np.log(v) for k, v in nat.items() if k != "theta3"}
    pt["theta3"] = np.array(nat["theta3"])
    pt.update(z)
    return pt


@needs_pheno
def test_pheno_model_logp_matches_scipy(pheno_model):
    spec, data, problem, model, logp = pheno_model
    assert sorted(v.name for v in model.value_vars) == sorted(
        ["theta1_log__", "theta2_log__", "theta3", "omega11_log__", "omega22_log__",
         "sigma_log__", "z_eta_CL", "z_eta_V"])
    rng = np.random.default_rng(1)
    for scale in (0.5, 1.5):
        z_cl, z_v = scale * rng.standard_normal((2, data.n_subjects))
        pt = _value_point(PHENO_POINT, z_eta_CL=z_cl, z_eta_V=z_v)
        np.testing.assert_allclose(logp(pt), pheno_oracle_logp(PHENO_POINT, z_cl, z_v),
                                   rtol=RTOL)
    # with the Jacobians of the log transforms (what the sampler sees): + sum of log values
    logp_j = model.compile_logp()
    jac = sum(v for k, v in pt.items() if k.endswith("_log__"))
    np.testing.assert_allclose(logp_j(pt), logp(pt) + jac, rtol=RTOL)


@needs_pheno
def test_mu_referenced_equals_noncentred_up_to_jacobian(pheno_model):
    """phi = mu + eta ~ N(mu, omega) (centred) vs eta = omega*z (non-centred): at
    corresponding points log p_c(phi) + n_c*log(omega) = log p_nc(z), per eta."""
    spec, data, problem, model_nc, logp_nc = pheno_model
    raw = tomllib.loads((FITS / "phenobarbital.toml").read_text())
    raw["data"]["path"] = str(PHENO_CSV)
    raw = copy.deepcopy(raw)
    raw["omega"]["eta_CL"]["mu"] = "log(theta1)"
    raw["omega"]["eta_V"]["mu"] = "log(theta2)"
    raw["omega"]["eta_V"]["centered_min_obs"] = 3        # mixed: sparse infants non-centred
    spec_c, _, _, model_c, _ = _quiet_prepare(load_spec(raw))
    logp_c = model_c.compile_logp(jacobian=False)
    n_obs = np.bincount(data.obs_subject, minlength=data.n_subjects)
    cen, non = np.flatnonzero(n_obs >= 3), np.flatnonzero(n_obs < 3)
    assert cen.size and non.size
    assert {v.name for v in model_c.value_vars} >= {"phi_eta_CL", "phi_eta_V", "z_eta_V"}
    rng = np.random.default_rng(9)
    diffs = []
    for _ in range(2):
        nat = {k: v * rng.uniform(0.8, 1.25) for k, v in PHENO_POINT.items()}
        sd_cl, sd_v = math.sqrt(nat["omega11"]), math.sqrt(nat["omega22"])
        z_cl, z_v = rng.standard_normal((2, data.n_subjects))
        p_nc = _value_point(nat, z_eta_CL=z_cl, z_eta_V=z_v)
        p_c = _value_point(nat, phi_eta_CL=math.log(nat["theta1"]) + sd_cl * z_cl,
                           phi_eta_V=math.log(nat["theta2"]) + sd_v * z_v[cen],
                           z_eta_V=z_v[non])
        jac = data.n_subjects * math.log(sd_cl) + cen.size * math.log(sd_v)
        np.testing.assert_allclose(logp_c(p_c) + jac, logp_nc(p_nc), rtol=RTOL)
        diffs.append(logp_c(p_c) - logp_nc(p_nc))
    assert abs(diffs[0] - diffs[1]) > 1e-3      # the difference is the Jacobian, not a constant


@needs_bauer
def test_bauer_model_builds():
    _quiet_prepare(FITS / "bauer2019_nuts.toml")


@needs_bauer
def test_bauer_invwishart_block_density_and_jacobian(monkeypatch):
    import pymc as pm
    # get past the InvGamma bug (test_bauer_model_builds) to reach the Omega block
    monkeypatch.setattr(pm, "InvGamma", pm.InverseGamma, raising=False)
    spec, data, problem, model, info = _quiet_prepare(FITS / "bauer2019_nuts.toml")
    b = spec.omegas[0]
    assert b.kind == "invwishart" and b.etas == ("eta_CL", "eta_V")
    p, df = 2, b.iw_df
    psi = df * np.asarray(b.iw_omega)                   # NONMEM NWPRI: scale = df * omega_p
    import pytensor
    outs = model.replace_rvs_by_values([model["invwishart_block1"], model["omega11"],
                                        model["omega21"], model["omega22"]])
    fn = pytensor.function([model.rvs_to_values[model["logdiag_block1"]],
                            model.rvs_to_values[model["offdiag_block1"]]], outs)

    def vech_omega(x):
        L = jnp.array([[jnp.exp(x[0]), 0.0], [x[2], jnp.exp(x[1])]])
        om = L @ L.T
        return jnp.array([om[0, 0], om[1, 0], om[1, 1]])

    jac = jax.jacobian(vech_omega)
    # log IW(Omega) - potential = log of the IW normalising constant, the same at every point
    const = (-0.5 * df * np.linalg.slogdet(psi)[1] + 0.5 * df * p * math.log(2)
             + multigammaln(df / 2, p))
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = np.array([rng.normal(-1.5, 0.7), rng.normal(-1.5, 0.7), rng.normal(0, 0.2)])
        pot, o11, o21, o22 = (float(v) for v in fn(x[:2], x[2:]))
        om = np.array([[o11, o21], [o21, o22]])
        L = np.array([[np.exp(x[0]), 0], [x[2], np.exp(x[1])]])
        np.testing.assert_allclose(om, L @ L.T, rtol=1e-14)
        log_det_j = np.linalg.slogdet(np.asarray(jac(jnp.asarray(x))))[1]
        want = stats.invwishart(df=df, scale=psi).logpdf(om) + log_det_j
        np.testing.assert_allclose(pot - want, const, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# RECIST stop-at-progression
# ---------------------------------------------------------------------------------------------
def test_progression_cut_hand_example():
    cases = [   # (SLD series of one subject, expected keep mask)
        # +20% over the nadir 10 but only +3 mm: not PD; 16 is +60% and +6 mm: PD, kept
        ([10.0, 13.0, 12.5, 16.0, 20.0], [1, 1, 1, 1, 0]),
        # +10 mm but only +10% / +18%: not PD; 125 (+25%, +25 mm) is PD
        ([100.0, 110.0, 118.0, 125.0, 90.0], [1, 1, 1, 1, 0]),
        # the running nadir (40, then 30) is the reference, not the baseline 60
        ([60.0, 40.0, 45.0, 30.0, 37.0, 50.0, 20.0], [1, 1, 1, 1, 1, 0, 0]),
        ([60.0, 40.0, 49.0, 70.0], [1, 1, 1, 0]),      # 49 < baseline yet PD vs nadir 40
        ([50.0, 45.0, 47.0, 52.0], [1, 1, 1, 1]),      # never progresses
        ([33.0], [1]),
        ([0.0, 4.0, 6.0, 1.0], [1, 1, 1, 0]),          # nadir 0: 4 mm is not PD, 6 mm is
    ]
    subj = np.concatenate([[f"s{i}"] * len(y) for i, (y, _) in enumerate(cases)])
    y = np.concatenate([y for y, _ in cases])
    t = np.concatenate([np.arange(len(y_)) * 42.0 for y_, _ in cases])
    want = np.concatenate([k for _, k in cases]).astype(bool)
    np.testing.assert_array_equal(progression_cut(subj, t, y), want)
