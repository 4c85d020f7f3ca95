"""Parameter recovery: fits of data simulated with known truth.

The fast test (default run) simulates a 60-patient Stein-Fojo trial in numpy, fits it through
the whole `pkpd.fit` path (spec -> data -> JAX likelihood -> PyMC model -> nutpie -> folder), and
checks the population truths against the posterior. The full recoveries (`fits/*.toml`: the
120-patient combination-model trials with PSI = 0.5 and PSI = 0, and the reference fits) are
marked `slow` and run on demand: `python3 tasks.py test -m slow -k recovery`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pkpd.fit import fit, load_fit, load_spec

ROOT = Path(__file__).resolve().parents[1]
FITS = ROOT / "fits"

TRUTH = {"mu_b": np.log(60.0), "mu_s": np.log(0.8), "mu_g": np.log(0.6),
         "omega_b": 0.4, "omega_s": 0.5, "omega_g": 0.5, "sigma": 0.1}


def _simulate(path: Path, n: int = 60, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    days = np.array([-10.0, 42, 84, 126, 168, 252, 336])
    rows = []
    for i in range(n):
        b = np.exp(TRUTH["mu_b"] + TRUTH["omega_b"] * rng.standard_normal())
        s = np.exp(TRUTH["mu_s"] + TRUTH["omega_s"] * rng.standard_normal())
        g = np.exp(TRUTH["mu_g"] + TRUTH["omega_g"] * rng.standard_normal())
        t = days / 365.25
        f = np.where(t >= 0, b * (np.exp(-s * t) + np.exp(g * t) - 1), b * np.exp(g * t))
        y = f * (1 + TRUTH["sigma"] * rng.standard_normal(len(t)))
        rows += [{"ID": f"S{i}", "DAY": d, "SLD": v} for d, v in zip(days, y, strict=True)]
    pd.DataFrame(rows).to_csv(path, index=False)


def _spec(data: Path) -> dict:
    return {
        "fit": {"name": "sf_recovery"},
        "model": {"tgi": "stein_fojo", "time_unit": "year"},
        "data": {"path": str(data), "format": "long", "subject": "ID", "time": "DAY",
                 "time_unit": "day", "dv": "SLD"},
        "theta": {"mu_b": "Normal(log(65), 1)", "mu_s": "Normal(log(0.52), 1)",
                  "mu_g": "Normal(log(1.04), 1)"},
        "individual": {"y0": "exp(mu_b + eta_b)", "d": "exp(mu_s + eta_s)",
                       "g": "exp(mu_g + eta_g)"},
        "omega": {"eta_b": {"prior": "HalfNormal(1)", "name": "omega_b", "mu": "mu_b"},
                  "eta_s": {"prior": "HalfNormal(1)", "name": "omega_s"},
                  "eta_g": {"prior": "HalfNormal(1)", "name": "omega_g"}},
        "residual": {"model": "proportional",
                     "prop": {"prior": "HalfNormal(1)", "name": "sigma", "init": 0.2}},
        "sampler": {"name": "nutpie", "chains": 2, "tune": 400, "draws": 300, "seed": 3,
                    "chains_per_batch": 2},
    }


def test_fast_stein_fojo_recovery(tmp_path):
    data = tmp_path / "sf.csv"
    _simulate(data)
    spec = load_spec(_spec(data))
    res = fit(spec, out=tmp_path / "fit", progress=False)
    summ = res.summary.set_index("parameter")
    assert list(summ.index) == list(TRUTH)
    # every truth within 3 posterior SDs of the posterior mean, and at least 5 of the 7 inside
    # the 90% interval (7 independent 90% intervals all covering has probability 0.48)
    z = {k: abs(summ.loc[k, "mean"] - v) / summ.loc[k, "sd"] for k, v in TRUTH.items()}
    assert max(z.values()) < 3.0, z
    inside = sum(summ.loc[k, "q5"] <= v <= summ.loc[k, "q95"] for k, v in TRUTH.items())
    assert inside >= 5, summ
    assert summ["r_hat"].max() < 1.05
    assert res.record["diagnostics"]["sampler"]["n_divergent"] == 0
    # the folder round-trips
    back = load_fit(tmp_path / "fit")
    pd.testing.assert_frame_equal(back.summary, res.summary, check_exact=False, rtol=1e-5)
    rec = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert rec["seeds"]["master"] == 3 and rec["n_subjects"] == 60 and rec["n_obs"] == 420


def test_resume_reuses_completed_batches(tmp_path, capsys):
    """An interrupted fit resumes from its completed chain batches (same spec and data)."""
    data = tmp_path / "sf.csv"
    _simulate(data, n=20)
    raw = _spec(data)
    raw["sampler"].update({"tune": 100, "draws": 100, "chains": 2, "chains_per_batch": 1})
    spec = load_spec(raw)
    out = tmp_path / "fit"
    partial = out.parent / f".{out.name}.partial"
    first = fit(spec, out=out, progress=False, write=False)      # leaves the checkpoints
    assert (partial / "batch0.nc").exists() and (partial / "batch1.nc").exists()
    again = fit(spec, out=out, progress=True)
    assert "resumed from batch0.nc" in capsys.readouterr().err
    np.testing.assert_allclose(again.idata.posterior["mu_b"].values,
                               first.idata.posterior["mu_b"].values)
    assert not partial.exists() and (out / "fit.json").exists()
    # a changed spec does not reuse them
    raw["theta"]["mu_b"] = "Normal(log(60), 1)"
    fit(load_spec(raw), out=out, progress=False, write=False)
    assert (partial / "fingerprint.txt").exists()


# ---- full recoveries and reference fits (on demand) --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,psi_gt0", [("triplet_recovery", True),
                                          ("triplet_recovery_psi0", False)])
def test_triplet_recovery(name, psi_gt0, tmp_path):
    """The issue's criteria: >= 90% of the generating population values inside the 90%
    intervals, P(PSI > 0) > 0.9 for PSI = 0.5 and < 0.5 for PSI = 0, convergence. The same
    coverage against the values realised in the simulated sample is checked too."""
    res = fit(FITS / f"{name}.toml", out=tmp_path / name, progress=True)
    rec = res.record["recovery"]
    assert rec["coverage"] >= 0.9, rec["population"]
    assert rec["coverage_realised"] >= 0.9, rec["population"]
    if psi_gt0:
        assert rec["p_psi_gt_0"] > 0.9
    else:
        assert rec["p_psi_gt_0"] < 0.5
    assert res.summary["r_hat"].max() <= 1.01
    assert res.summary["ess_bulk"].min() >= 400


@pytest.mark.slow
def test_phenobarbital_matches_nonmem_focei(tmp_path):
    """Posterior means within 2 NONMEM standard errors of the FOCEI estimates (pheno_real)."""
    ref = pd.read_csv(ROOT.parent / "shared" / "data" / "pk_phenobarbital"
                      / "reference_estimates_nonmem_pharmpy.csv")
    ref = ref[ref["model"].str.startswith("pheno_real")].set_index("parameter")
    res = fit(FITS / "phenobarbital.toml", out=tmp_path / "pheno", progress=False)
    summ = res.summary.set_index("parameter")
    pairs = {"theta1": "THETA1", "theta2": "THETA2", "theta3": "THETA3",
             "omega11": "OMEGA(1,1)", "omega22": "OMEGA(2,2)", "sigma": "SIGMA(1,1)"}
    for ours, theirs in pairs.items():
        est, se = float(ref.loc[theirs, "estimate"]), float(ref.loc[theirs, "se"])
        assert abs(summ.loc[ours, "mean"] - est) <= 2 * se, (ours, summ.loc[ours, "mean"], est)
    assert summ["r_hat"].max() <= 1.01 and summ["ess_bulk"].min() >= 400


#: Posterior means of the same OAK model and priors from Stan (pystan 3.14 / Stan 2.37,
#: 4 chains x (1000 + 1000), bench/_stan_oak.py; run on 2026-11-24 on the development machine).
#: Their Monte Carlo SEs are about sd/sqrt(ESS) with ESS 147-850.
STAN_OAK = {"mu_b": (3.6132, 0.0231), "mu_s": (-1.2779, 0.1654), "mu_g": (-1.3475, 0.0871),
            "omega_b": (0.5788, 0.0162), "omega_s": (1.6344, 0.1185),
            "omega_g": (1.0002, 0.0522), "sigma": (0.16126, 0.00234)}


@pytest.mark.slow
def test_oak_stein_fojo_reproduces_stan(tmp_path):
    """Same data (4,099 obs, 701 patients), model and priors as the Stan fit: posterior means
    agree within 0.5 posterior SD (far above both runs' Monte Carlo error of <= 0.1 SD), and the
    convergence criteria hold."""
    res = fit(FITS / "oak_stein_fojo.toml", out=tmp_path / "oak", progress=False)
    summ = res.summary.set_index("parameter")
    for name, (mean, sd) in STAN_OAK.items():
        assert abs(summ.loc[name, "mean"] - mean) < 0.5 * sd, (name, summ.loc[name, "mean"])
    assert res.record["n_obs"] == 4099 and res.record["n_subjects"] == 701
    assert summ["r_hat"].max() <= 1.01 and summ["ess_bulk"].min() >= 400
    assert res.record["diagnostics"]["loo_by_observation"]["elpd_loo"] is not None


@pytest.mark.slow
def test_bauer2019_nuts_converges(tmp_path):
    res = fit(FITS / "bauer2019_nuts.toml", out=tmp_path / "bauer", progress=False)
    summ = res.summary.set_index("parameter")
    assert list(summ.index) == [f"theta{i}" for i in range(1, 9)] + [
        "omega11", "omega21", "omega22", "sigma"]
    assert summ["r_hat"].max() <= 1.01 and summ["ess_bulk"].min() >= 400
    assert res.record["diagnostics"]["sampler"]["n_divergent"] == 0
    # log CL rises with weight (allometry) and the proportional error is a few percent
    assert summ.loc["theta3", "q5"] > 0 and 0.0 < summ.loc["sigma", "mean"] < 0.2


def test_coverage_count_against_binomial_sum():
    """Oracle: the binomial CDF written out with math.comb."""
    from math import comb

    from pkpd.fit.recovery import coverage_count

    def cdf(k, n, p):
        return sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    c = coverage_count([True] * 12 + [False] * 2, 0.9)
    assert c["n"] == 14 and c["n_covered"] == 12
    assert c["p_binomial"] == pytest.approx(cdf(12, 14, 0.9), rel=1e-12)
    # 5% bound: P(X <= 10) < 0.05 <= P(X <= 11)
    assert cdf(10, 14, 0.9) < 0.05 <= cdf(11, 14, 0.9)
    assert c["lower_5pct"] == 11
    assert coverage_count([True] * 14, 0.9)["p_binomial"] == pytest.approx(1.0)


def test_simulated_zeros_are_left_censored_and_recover_the_additive_sd():
    """A simulated SLD draw at or below 0 is reported as 0 and flagged censored (M3), so the
    additive SD is recovered; read as exact zeros it is not. With every patient's true
    prediction known (``ipred_mm``) and the proportional SD at its truth, the maximum-likelihood
    additive SD under the fit's own pointwise likelihood lies within 3 standard errors (from the
    observed information) of the truth, and the estimate that treats the zeros as exact lies
    more than 3 SEs below it. A large additive SD (20 mm) and a deep, lasting response (KIO 4x
    the card value, resistance 10x slower) give many zeros."""
    from scipy import optimize

    from pkpd.design import fit_raw, load_design
    from pkpd.fit.problem import pointwise_loglik
    from pkpd.fit.recovery import simulate_data

    raw = fit_raw(load_design(FITS / "designs" / "smoke.toml"), 0, 0)
    raw["simulate"].update(arms={"triplet": 40}, days=168, truth={"KIO": 0.04, "LAMBDA": 0.002},
                           residual={"add_sd": 20.0, "prop_sd": 0.1})
    data = simulate_data(load_spec(raw))
    frame = data.meta["frame"]
    cens = data.censored
    assert cens.dtype == bool and np.array_equal(cens, data.y == 0.0)
    assert np.array_equal(frame["censored"].to_numpy(), cens.astype(int))
    assert cens.sum() >= 20, f"only {cens.sum()} zeros; the check needs many"
    f = frame["ipred_mm"].to_numpy()

    def nll(log_add, as_censored):
        sd = np.sqrt(np.exp(log_add) ** 2 + (0.1 * f) ** 2)
        flags = cens if as_censored else np.zeros_like(cens)
        return -float(np.sum(pointwise_loglik(f, sd, data.y, flags)))

    def mle(as_censored):
        x = optimize.minimize_scalar(nll, bounds=(np.log(1.0), np.log(100.0)),
                                     args=(as_censored,), method="bounded",
                                     options={"xatol": 1e-8}).x
        h = 1e-4
        info = (nll(x + h, as_censored) - 2 * nll(x, as_censored)
                + nll(x - h, as_censored)) / h ** 2
        return np.exp(x), np.exp(x) / np.sqrt(info)      # delta method: SE of add_sd
    est, se = mle(True)
    assert abs(est - 20.0) < 3 * se, (est, se)
    naive, _ = mle(False)
    assert naive < 20.0 - 3 * se, (naive, se)
