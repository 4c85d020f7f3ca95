"""Benchmark: population PK through the exact engine vs a scipy per-patient loop.

Anlotinib card (1-cpt oral), 12 mg QD d1-14 q21d over 168 days (112 doses), 24 samples per
patient, IIV from the card. Measured in the same run:
  * pkpd exact path (jit + vmap), patients/s for N = 1,000 and 10,000 (compile excluded, reported);
  * baseline: scipy solve_ivp (LSODA, rtol 1e-10, atol 1e-12) patient by patient, segment-wise
    between doses, on 50 patients; ratio = pkpd patients/s / scipy patients/s;
  * max relative difference between the two on those 50 patients;
  * jacobian of the 24 concentrations w.r.t. (CL, V, KA), forward mode, per patient (batch 120).
The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from scipy.integrate import solve_ivp

import pkpd
from pkpd.dosing.regimen import parse_regimen
from pkpd.pk.engine import compile_records, solve, solve_population, stack
from pkpd.pk.exposure import _records, dose_records

DAYS = 168.0
SAMPLE_DAYS = np.linspace(1.0, DAYS - 1.0, 24)


def setup(n, seed=0):
    card = pkpd.load_card("anlotinib")
    model = card.model()
    doses = parse_regimen("12 mg PO QD D1-14 Q21D").doses(None, DAYS)
    rec = compile_records(_records(dose_records(card, doses), SAMPLE_DAYS * 24.0), model)
    params = card.sample_params(n, np.random.default_rng(seed))
    return card, model, rec, params, doses


def run_pkpd(model, rec, params):
    n = len(params["CL"])
    comp = stack([rec] * n)
    t0 = time.perf_counter()
    out, _ = solve_population(model, params, comp)
    out = np.asarray(jax.block_until_ready(out))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out, _ = solve_population(model, params, comp)
    out = np.asarray(jax.block_until_ready(out))
    return out[:, : len(SAMPLE_DAYS)], time.perf_counter() - t0, first


def run_scipy(params, doses, n):
    td = np.asarray(doses.time_day) * 24.0
    amt = np.asarray(doses.amount_mg)
    ts = SAMPLE_DAYS * 24.0
    out = np.zeros((n, len(ts)))
    for i in range(n):
        cl, v, ka = params["CL"][i], params["V"][i], params["KA"][i]

        def f(t, a, cl=cl, v=v, ka=ka):
            return [-ka * a[0], ka * a[0] - cl / v * a[1]]

        a = np.zeros(2)
        bounds = np.concatenate([td, [ts[-1] + 1.0]])
        for k in range(len(td)):
            a[0] += amt[k]
            t_lo, t_hi = bounds[k], bounds[k + 1]
            inside = ts[(ts >= t_lo) & (ts < t_hi)]
            sol = solve_ivp(f, (t_lo, t_hi), a, method="LSODA", rtol=1e-10, atol=1e-12,
                            t_eval=np.append(inside, t_hi))
            if len(inside):
                idx = np.searchsorted(ts, inside)
                out[i, idx] = sol.y[1, :-1] / v * 1000.0
            a = sol.y[:, -1].copy()           # state at the segment end (next dose time)
    return out


def main():
    results = {}
    for n in (1000, 10000):
        card, model, rec, params, doses = setup(n)
        conc, secs, first = run_pkpd(model, rec, params)
        results[n] = dict(seconds=secs, patients_per_s=n / secs, compile_s=first - secs)
        print(f"pkpd exact, N={n:>6}: {secs:7.3f} s  ({n / secs:,.0f} patients/s; "
              f"first call incl. compile {first:.1f} s)")
    n_base = 50
    card, model, rec, params, doses = setup(n_base, seed=1)
    t0 = time.perf_counter()
    ref = run_scipy(params, doses, n_base)
    t_scipy = time.perf_counter() - t0
    ours, _, _ = run_pkpd(model, rec, params)
    max_rel = float(np.max(np.abs(ours - ref) / np.abs(ref)))
    scipy_rate = n_base / t_scipy
    speedup = results[10000]["patients_per_s"] / scipy_rate
    print(f"scipy LSODA loop, N={n_base}: {t_scipy:.2f} s ({scipy_rate:.1f} patients/s)")
    print(f"ratio pkpd(10k)/scipy = {speedup:,.0f}x; max relative difference = {max_rel:.2e}")

    card, model, rec, params, doses = setup(120, seed=2)
    comp = stack([rec] * 120)
    keys = ("CL", "V", "KA")

    @jax.jit
    def jac(p, c):
        def one(pi, ci):
            f = lambda q: solve(model, {**pi, **q}, ci)[0]  # noqa: E731
            return jax.jacfwd(f)({k: pi[k] for k in keys})
        return jax.vmap(one)(p, c)

    pj = {k: np.asarray(v, float) for k, v in params.items()}
    jax.block_until_ready(jac(pj, comp))
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        jax.block_until_ready(jac(pj, comp))
    jac_us = (time.perf_counter() - t0) / reps / 120 * 1e6
    print(f"value + jacobian (3 params, 24 samples), batch of 120: {jac_us:.0f} us/patient")
    print(json.dumps({
        "seconds_10k": round(results[10000]["seconds"], 3),
        "patients_per_s_10k": round(results[10000]["patients_per_s"]),
        "speedup_vs_scipy": round(speedup, 1),
        "max_rel_diff": max_rel,
        "jacobian_us_per_patient": round(jac_us, 1),
    }))


if __name__ == "__main__":
    main()
