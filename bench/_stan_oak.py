"""Stan (pystan 3) baseline: hierarchical Stein-Fojo fit to the OAK tumour-size data.

Data: Laleh et al. 2022 S1 Data (``laleh2022_s1_long.csv``), study 4 (OAK), both arms pooled,
patient key ``(study_arm, patient_id)``. Cleaning rules (those of RCONIS/tgi-os-training
``session-tgi/_load_data.qmd``): ``TOO_SMALL_TO_MEASURE`` -> 2 mm, ``NOT_EVALUABLE`` -> missing,
value 0 -> 2 mm, rows with a missing value or day dropped; ``t = treatment_day / 365.25`` (years).
That leaves 4,099 observations from 701 patients.

Model (the jmpost ``LongitudinalSteinFojo`` fit of RCONIS/tgi-os-training
``session-tgi/2_tgi_sf_jmpost.qmd``, with its priors)::

    SLD_ij = b_i (exp(-s_i t) + exp(g_i t) - 1)   t >= 0
           = b_i exp(g_i t)                       t <  0
    y_ij ~ Normal(SLD_ij, sigma * SLD_ij)
    log b_i = mu_b + omega_b z_b_i,  z ~ N(0, 1)   (same for s, g; non-centred)
    mu_b ~ N(log 65, 1), mu_s ~ N(log 0.52, 1), mu_g ~ N(log 1.04, 1)
    omega_b, omega_s, omega_g, sigma ~ HalfNormal(3)

pystan drives httpstan through asyncio: fine from a script; inside Jupyter call
``nest_asyncio.apply()`` first.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DATA_CSV = (Path(__file__).resolve().parents[2] / "shared" / "data"
            / "laleh2022_atezolizumab_sld" / "laleh2022_s1_long.csv")
N_OBS, N_PATIENTS = 4099, 701
POP_PARAMS = ("mu_b", "mu_s", "mu_g", "omega_b", "omega_s", "omega_g", "sigma")

STAN_CODE = """
data {
  int<lower=1> N;                       // observations
  int<lower=1> P;                       // patients
  array[N] int<lower=1, upper=P> pid;   // patient of each observation (1-based)
  vector[N] t;                          // years since treatment start
  vector<lower=0>[N] y;                 // SLD, mm
}
transformed data {
  // max(t, 0): for t < 0 the shrinkage term exp(-s * 0) - 1 vanishes (no NaN from 0 * inf)
  vector[N] t_pos = fmax(t, 0);
}
parameters {
  real mu_b;
  real mu_s;
  real mu_g;
  real<lower=0> omega_b;
  real<lower=0> omega_s;
  real<lower=0> omega_g;
  real<lower=0> sigma;
  vector[P] z_b;
  vector[P] z_s;
  vector[P] z_g;
}
model {
  vector[P] b = exp(mu_b + omega_b * z_b);
  vector[P] s = exp(mu_s + omega_s * z_s);
  vector[P] g = exp(mu_g + omega_g * z_g);
  // t <  0: b exp(g t);  t >= 0: b (exp(-s t) + exp(g t) - 1)
  vector[N] sld = b[pid] .* (exp(g[pid] .* t) + exp(-s[pid] .* t_pos) - 1);

  mu_b ~ normal(log(65), 1);
  mu_s ~ normal(log(0.52), 1);
  mu_g ~ normal(log(1.04), 1);
  omega_b ~ normal(0, 3);
  omega_s ~ normal(0, 3);
  omega_g ~ normal(0, 3);
  sigma ~ normal(0, 3);
  z_b ~ std_normal();
  z_s ~ std_normal();
  z_g ~ std_normal();
  y ~ normal(sld, sigma * sld);
}
"""


def oak_data(csv: str | Path = DATA_CSV) -> dict:
    """OAK SLD data as numpy arrays.

    Returns ``{"subject": int array 0..700, "t": years, "y": mm, "n_patients": 701,
    "patient_keys": list of (study_arm, patient_id) in subject-index order}``; observations
    are sorted by subject then time.
    """
    import pandas as pd

    d = pd.read_csv(csv, dtype={"patient_id": str})
    d = d[d["study"] == 4].copy()
    v = d["value_mm"].astype(float)
    v = v.mask(d["flag"] == "TOO_SMALL_TO_MEASURE", 2.0)
    v = v.mask(d["flag"] == "NOT_EVALUABLE", np.nan)
    v = v.mask(v == 0, 2.0)
    d["y"] = v
    d = d.dropna(subset=["y", "treatment_day"])
    d["t"] = d["treatment_day"].astype(float) / 365.25
    d = d.sort_values(["study_arm", "patient_id", "t"], kind="stable")
    keys = list(dict.fromkeys(zip(d["study_arm"], d["patient_id"])))
    index = {k: i for i, k in enumerate(keys)}
    subject = np.array([index[k] for k in zip(d["study_arm"], d["patient_id"])], dtype=np.int64)
    t = d["t"].to_numpy(dtype=float)
    y = d["y"].to_numpy(dtype=float)
    assert len(y) == N_OBS, f"expected {N_OBS} OAK observations, got {len(y)}"
    assert len(keys) == N_PATIENTS, f"expected {N_PATIENTS} OAK patients, got {len(keys)}"
    assert np.all(y > 0) and np.all(np.isfinite(t))
    return {"subject": subject, "t": t, "y": y, "n_patients": len(keys), "patient_keys": keys}


def fit_stan(num_chains: int = 4, num_warmup: int = 1000, num_samples: int = 1000,
             seed: int = 878, verbose: bool = True) -> dict:
    """Fit the model with pystan (default Stan settings: adapt_delta 0.8, max depth 10,
    diagonal metric, Stan's default random inits in (-2, 2) on the unconstrained scale).

    Timing: ``compile_s`` is ``stan.build`` (near 0 when httpstan's model cache is warm);
    ``sampling_s`` is the wall time of ``posterior.sample`` = warm-up + draws of all chains
    (httpstan runs the chains in parallel processes, one per core), i.e. everything except
    compilation. ``ess_per_s = min_ess_bulk / sampling_s`` over ``POP_PARAMS``.
    """
    import arviz as az
    import stan

    data = oak_data()
    stan_data = {"N": len(data["y"]), "P": data["n_patients"], "pid": data["subject"] + 1,
                 "t": data["t"], "y": data["y"]}
    t0 = time.perf_counter()
    posterior = stan.build(STAN_CODE, data=stan_data, random_seed=seed)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = posterior.sample(num_chains=num_chains, num_warmup=num_warmup,
                           num_samples=num_samples)
    sampling_s = time.perf_counter() - t0

    # pystan 3: fit[name] has shape (draws * chains,) for a scalar, flat index = draw * chains
    # + chain (stan/fit.py reshapes its (param, draw, chain) array in C order) -> (chain, draw)
    post = {p: np.asarray(fit[p]).reshape(num_samples, num_chains).T for p in POP_PARAMS}
    idata = az.from_dict(posterior=post)
    summ = az.summary(idata, var_names=list(POP_PARAMS), kind="all", round_to="none")
    div = np.asarray(fit["divergent__"]).reshape(-1)
    depth = np.asarray(fit["treedepth__"]).reshape(-1)
    leap = np.asarray(fit["n_leapfrog__"]).reshape(-1)
    params = {p: {"mean": float(summ.loc[p, "mean"]), "sd": float(summ.loc[p, "sd"]),
                  "ess_bulk": float(summ.loc[p, "ess_bulk"]),
                  "ess_tail": float(summ.loc[p, "ess_tail"]),
                  "r_hat": float(summ.loc[p, "r_hat"])} for p in POP_PARAMS}
    min_ess = min(v["ess_bulk"] for v in params.values())
    out = {
        "n_obs": len(data["y"]), "n_patients": data["n_patients"],
        "chains": num_chains, "warmup": num_warmup, "draws": num_samples,
        "compile_s": compile_s, "sampling_s": sampling_s,
        "min_ess_bulk": min_ess, "ess_per_s": min_ess / sampling_s,
        "max_r_hat": max(v["r_hat"] for v in params.values()),
        "divergences": int(div.sum()), "max_treedepth_hits": int((depth >= 10).sum()),
        "mean_leapfrog": float(leap.mean()), "params": params,
    }
    if verbose:
        print(format_result(out))
    return out


def format_result(r: dict) -> str:
    lines = [f"Stan OAK: {r['n_patients']} patients, {r['n_obs']} obs, {r['chains']} chains x "
             f"({r['warmup']} warm-up + {r['draws']} draws)",
             f"  compile {r['compile_s']:.1f} s, sampling (warm-up+draws) {r['sampling_s']:.1f} s,"
             f" min bulk ESS {r['min_ess_bulk']:.1f}, ESS/s {r['ess_per_s']:.4f}",
             f"  divergences {r['divergences']}, max-treedepth hits {r['max_treedepth_hits']}, "
             f"mean leapfrog/draw {r['mean_leapfrog']:.1f}",
             f"  {'param':8s} {'mean':>9s} {'sd':>9s} {'ess_bulk':>9s} {'r_hat':>6s}"]
    for p, v in r["params"].items():
        lines.append(f"  {p:8s} {v['mean']:9.4f} {v['sd']:9.4f} {v['ess_bulk']:9.1f} "
                     f"{v['r_hat']:6.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=878)
    ap.add_argument("--json", help="write the result dict here")
    a = ap.parse_args()
    res = fit_stan(a.chains, a.warmup, a.draws, a.seed)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
