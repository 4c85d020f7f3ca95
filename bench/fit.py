"""Fitting benchmark: pkpd's hierarchical fitting paths against two baselines.

Baselines (this file's helpers; each runs in its own child process so that pystan's asyncio
server and process pool, PyMC's forkserver and JAX never share a process):

* ``bench/_pm_ode.py``: PyMC NUTS on a small hierarchical tumour ODE solved by
  ``pm.ode.DifferentialEquation`` (8 simulated patients x 6 observations). ``_pm_ode.problem()``
  returns the identical data/priors for pkpd to fit.
* ``bench/_stan_oak.py``: Stan (pystan 3) on the hierarchical Stein-Fojo model of the OAK trial
  (701 patients, 4,099 observations), priors of the published jmpost fit. ``_stan_oak.oak_data()``
  returns the data arrays.

ESS/s, everywhere: minimum bulk ESS (arviz, rank-normalised) over the population parameters
divided by the sampling wall seconds = warm-up/tuning + draws of all chains (chains run in
parallel where the sampler does so). Compilation/JIT (Stan's C++ build, PyTensor compilation,
JAX tracing) and process start-up are excluded from that time and printed separately.

Ratios: ``ratio_vs_pm_ode = ess_per_s / ess_per_s_pm_ode`` (same small ODE problem) and
``ratio_vs_stan = ess_per_s_oak / ess_per_s_oak_stan`` (OAK).

Run (from the repository root; ``python3 tasks.py bench fit [ARGS]`` first installs the ``bench``
extra, pystan, which the plain set-up leaves out)::

    python3 tasks.py bench fit
    .venv/bin/python bench/fit.py            # full: Stan 4 x (1000 + 1000), ~15-45 min on 2 cores
    .venv/bin/python bench/fit.py --quick    # smoke run: short chains everywhere
    .venv/bin/python bench/fit.py --skip-stan --skip-triplet
    .venv/bin/python bench/fit.py --triplet-only     # the triplet fit alone (~15 min)

The last line printed is one JSON object with the keys ess_per_s, ess_per_s_pm_ode,
ratio_vs_pm_ode, ess_per_s_oak, ess_per_s_oak_stan, ratio_vs_stan, triplet_fit_minutes (null where
a part was skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (chains, warm-up, draws)
STAN_FULL, STAN_QUICK = (4, 1000, 1000), (2, 100, 100)
# pm.ode: (chains, tune, draws); quick also caps the tree depth to bound a smoke run's cost
PM_ODE_FULL, PM_ODE_QUICK = (2, 200, 200), (2, 10, 10)
PM_ODE_MAX_TREEDEPTH = {False: 10, True: 5}     # keyed by quick
# the triplet recovery fit, the spec's own schedule: 4 x (800 + 2000) gave 10 divergences in one
# chain, 4 x (1000 + 2000) R-hat 1.014 once; so 4 x (1000 + 2500) (docs/fitting.md, "Reference
# results")
TRIPLET_FULL, TRIPLET_QUICK = (4, 1000, 2500), (2, 100, 100)

JSON_KEYS = ("ess_per_s", "ess_per_s_pm_ode", "ratio_vs_pm_ode", "ess_per_s_oak",
             "ess_per_s_oak_stan", "ratio_vs_stan", "triplet_fit_minutes")


# ---------------------------------------------------------------------------------------------
# pkpd's own fitting paths
# ---------------------------------------------------------------------------------------------
def _pkpd_measure(res, suffix: str = "") -> dict:
    summ = res.summary
    t = res.record["timing"]
    pilot = float((res.record.get("centring") or {}).get("pilot_s", 0.0))
    sampling = float(t["sampling_s"]) + pilot
    compile_s = sum(float(b.get("compile_s", 0.0)) for b in t["batches"])
    ess = float(summ["ess_bulk"].min())
    s = res.record["sampler"]
    return {f"ess_per_s{suffix}": ess / sampling, f"compile_s{suffix}": compile_s,
            f"sampling_s{suffix}": sampling, f"min_ess_bulk{suffix}": ess,
            f"max_r_hat{suffix}": float(summ["r_hat"].max()),
            f"divergences{suffix}": res.record["diagnostics"]["sampler"]["n_divergent"],
            f"schedule{suffix}": f"{s['chains']}x({s['tune']}+{s['draws']})"}


def pkpd_paths(quick: bool, skip_triplet: bool = False) -> dict:
    """pkpd's fits, measured like the baselines (see the module docstring for ESS/s).

    - the pm.ode problem (``bench._pm_ode.problem()``: same data, priors, non-centred random
      effects and schedule), solved by pkpd's closed form of that ODE (``tgi = "claret"`` with
      constant exposure 1: dy/dt = KL*y - KD*exp(-lam*t)*y);
    - OAK Stein-Fojo (``fits/oak_stein_fojo.toml``, the Stan baseline's data and priors) with
      the spec's own schedule, 4 x (1000 + 2500); the pilot run of ``centered = "auto"`` counts
      as sampling time;
    - the 120-patient triplet recovery fit (``fits/triplet_recovery.toml``) at
      ``TRIPLET_FULL`` = 4 x (1000 + 3000), the spec's own schedule (2000 draws left one
      population parameter at R-hat 1.014 in the 2026-12-07 run), total
      wall minutes including data simulation, the centring pilot, compilation and
      post-processing, with its minimum bulk ESS, maximum R-hat and divergences.
    """
    import tempfile

    import pandas as pd

    sys.path.insert(0, str(ROOT / "bench"))
    import _pm_ode

    from pkpd.fit import fit, load_spec

    out: dict = {}
    prob = _pm_ode.problem()
    chains, tune, draws = PM_ODE_QUICK if quick else PM_ODE_FULL
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "pm_ode.csv"
        pd.DataFrame({"ID": prob["subject"], "T": prob["t"], "Y": prob["y"]}).to_csv(
            csv, index=False)
        pri = {k: f"{d}({', '.join(repr(v) for v in p.values())})"
               for k, (d, p) in prob["priors"].items()}
        raw = {
            "fit": {"name": "pm_ode_problem"},
            "model": {"tgi": "claret", "time_unit": "year", "exposure": 1.0},
            "data": {"path": str(csv), "format": "long", "subject": "ID", "time": "T",
                     "time_unit": "year", "dv": "Y"},
            "theta": {k: pri[k] for k in ("mu_b", "mu_kg", "mu_kd")},
            "individual": {"y0": "exp(mu_b + eta_b)", "KL": "exp(mu_kg + eta_kg)",
                           "KD": "exp(mu_kd + eta_kd)"},
            "fixed": {"lam": prob["lam"]},
            "omega": {f"eta_{p}": {"prior": pri[f"omega_{p}"], "name": f"omega_{p}"}
                      for p in ("b", "kg", "kd")},
            "residual": {"model": "proportional", "prop": {"prior": pri["sigma"],
                                                           "name": "sigma"}},
            "sampler": {"name": "nutpie", "chains": chains, "tune": tune, "draws": draws,
                        "seed": 1, "chains_per_batch": chains},
        }
        res = fit(load_spec(raw), out=Path(tmp) / "fit", progress=False, write=False)
        out.update(_pkpd_measure(res))
    oak = {"chains": 2, "tune": 100, "draws": 100} if quick else {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(ROOT / "fits" / "oak_stein_fojo.toml", overrides=oak or None)
        res = fit(spec, out=Path(tmp) / "oak", progress=False, write=False)
        out.update(_pkpd_measure(res, "_oak"))
        out["elpd_loo_oak"] = (res.record["diagnostics"].get("loo_by_observation") or {}).get(
            "elpd_loo")
    out.update({"triplet_fit_minutes": None} if skip_triplet else triplet_fit(quick))
    return out


def triplet_fit(quick: bool) -> dict:
    """The triplet recovery fit's wall minutes end to end, minimum bulk ESS, maximum R-hat and
    divergences (see :func:`pkpd_paths`)."""
    from pkpd.fit import fit, load_spec

    out: dict = {}
    # the issue's speed point: 4 chains, every population parameter at bulk ESS >= 400,
    # in <= 15 minutes end to end, with no divergences; TRIPLET_FULL is the spec's schedule
    c, w, d = TRIPLET_QUICK if quick else TRIPLET_FULL
    trip = {"chains": c, "tune": w, "draws": d}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        spec = load_spec(ROOT / "fits" / "triplet_recovery.toml", overrides=trip)
        res = fit(spec, out=Path(tmp) / "trip", progress=False, write=False)
        out["triplet_fit_minutes"] = (time.perf_counter() - t0) / 60.0
        m = _pkpd_measure(res, "_triplet")
        out["triplet_min_ess_bulk"] = m["min_ess_bulk_triplet"]
        out["triplet_max_r_hat"] = m["max_r_hat_triplet"]
        out["triplet_divergences"] = m["divergences_triplet"]
        out["triplet_schedule"] = m["schedule_triplet"]
    return out


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------
def _run_child(module: str, args: list[str]) -> dict:
    """Run ``python -m module args --json tmp`` from the repo root; return the JSON it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", module, *args, "--json", str(out)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        return json.loads(out.read_text())


def stan_baseline(quick: bool) -> dict:
    chains, warmup, draws = STAN_QUICK if quick else STAN_FULL
    return _run_child("bench._stan_oak", ["--chains", str(chains), "--warmup", str(warmup),
                                          "--draws", str(draws)])


def pm_ode_baseline(quick: bool) -> dict:
    chains, tune, draws = PM_ODE_QUICK if quick else PM_ODE_FULL
    return _run_child("bench._pm_ode", ["--chains", str(chains), "--tune", str(tune),
                                        "--draws", str(draws),
                                        "--max-treedepth", str(PM_ODE_MAX_TREEDEPTH[quick])])


# ---------------------------------------------------------------------------------------------
def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def _row(name: str, problem: str, r: dict | None, suffix: str = "") -> str:
    r = r or {}

    def g(k):
        return r.get(k + suffix)
    sched = r.get("schedule" + suffix, "")
    div = g("divergences")
    return (f"{name:22s} {problem:9s} {sched:18s} {_fmt(g('compile_s'), '9.1f')} "
            f"{_fmt(g('sampling_s'), '10.1f')} {_fmt(g('min_ess_bulk'), '8.1f')} "
            f"{_fmt(g('ess_per_s'), '9.4f')} {_fmt(g('max_r_hat'), '6.3f')} "
            f"{'-' if div is None else div:>5}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="pkpd fitting benchmark (see module docstring)")
    ap.add_argument("--quick", action="store_true", help="short chains everywhere (smoke run)")
    ap.add_argument("--skip-stan", action="store_true", help="do not run the Stan OAK baseline")
    ap.add_argument("--skip-triplet", action="store_true", help="do not time the triplet fit")
    ap.add_argument("--stan-json", type=Path,
                    help="reuse a saved `python -m bench._stan_oak --json FILE` result "
                         "instead of running Stan")
    ap.add_argument("--triplet-only", action="store_true",
                    help="only time the triplet recovery fit (no baselines, no ratios)")
    args = ap.parse_args(argv)
    if args.triplet_only:
        trip = triplet_fit(args.quick)
        for k, v in trip.items():
            print(f"  pkpd {k} = {v}")
        out = {k: trip.get(k) for k in JSON_KEYS} | {
            k: trip[k] for k in ("triplet_min_ess_bulk", "triplet_max_r_hat",
                                 "triplet_divergences")}
        print(json.dumps(out))
        return out

    stan = None
    if args.stan_json is not None:
        stan = json.loads(args.stan_json.read_text())
    elif not args.skip_stan:
        print("== Stan OAK baseline", flush=True)
        stan = stan_baseline(args.quick)
    if stan is not None:
        stan["schedule"] = f"{stan['chains']}x({stan['warmup']}+{stan['draws']})"

    print("== pm.ode baseline", flush=True)
    pmo = pm_ode_baseline(args.quick)
    pmo["schedule"] = f"{pmo['chains']}x({pmo['tune']}+{pmo['draws']})"

    print("== pkpd paths", flush=True)
    pk = pkpd_paths(args.quick, skip_triplet=args.skip_triplet)

    res = {
        "ess_per_s": pk.get("ess_per_s"),
        "ess_per_s_pm_ode": pmo["ess_per_s"],
        "ess_per_s_oak": pk.get("ess_per_s_oak"),
        "ess_per_s_oak_stan": None if stan is None else stan["ess_per_s"],
        "triplet_fit_minutes": pk.get("triplet_fit_minutes"),
    }
    res["ratio_vs_pm_ode"] = _ratio(res["ess_per_s"], res["ess_per_s_pm_ode"])
    res["ratio_vs_stan"] = _ratio(res["ess_per_s_oak"], res["ess_per_s_oak_stan"])

    print()
    print("ESS/s = min bulk ESS over population parameters / sampling s (warm-up + draws; "
          "compile excluded)")
    print(f"{'path':22s} {'problem':9s} {'chains x (w+d)':18s} {'compile s':>9s} "
          f"{'sampling s':>10s} {'min ESS':>8s} {'ESS/s':>9s} {'R-hat':>6s} {'div':>5s}")
    print(_row("PyMC pm.ode NUTS", "pm.ode", pmo))
    print(_row("pkpd", "pm.ode", pk))
    print(_row("Stan (pystan) NUTS", "OAK", stan))
    print(_row("pkpd", "OAK", pk, "_oak"))
    known = {"ess_per_s", "ess_per_s_oak", "triplet_fit_minutes"} | {
        k + s for k in ("compile_s", "sampling_s", "min_ess_bulk", "max_r_hat", "divergences",
                        "schedule") for s in ("", "_oak")}
    for k, v in pk.items():
        if k not in known:
            print(f"  pkpd {k} = {v}")
    print(f"ratio_vs_pm_ode = {_fmt(res['ratio_vs_pm_ode'], '.2f')}, "
          f"ratio_vs_stan = {_fmt(res['ratio_vs_stan'], '.2f')}, "
          f"triplet_fit_minutes = {_fmt(res['triplet_fit_minutes'], '.2f')}")
    out = {k: res[k] for k in JSON_KEYS}
    print(json.dumps(out))
    return out


if __name__ == "__main__":     # required: PyMC samples through a forkserver
    main()
