"""Benchmark: population simulation of the full combination model vs a scipy per-patient loop.

Model: the ``sclc_triplet_tgi`` tumour card (PK of anlotinib, durvalumab, etoposide and carboplatin
-> VEGF-signalling, PD-L1 engagement and chemotherapy biophase -> SLD) over 730 days under

    anlotinib 12 mg PO QD D1-14 Q21D; durvalumab 1500 mg Q3W x4 then Q4W;
    etoposide 100 mg/m2 D1-3 Q21D x4; carboplatin AUC 5 D1 Q21D x4   (BSA 1.8 m2, GFR 100)

Measured in the same run:
  * ``pkpd.tumour.simulate.simulate`` (exact interval-mean PK + closed-form tumour, jit + vmap,
    chunks
    of 10k), patients/s for N = 1k, 10k and 100k; the first calls (one per batch shape) are
    warm-ups, their extra time is the compile time, reported separately;
  * baseline: an independent scipy ``solve_ivp`` loop of the same model (``_scipy_triplet.py``:
    PK ODEs with infusions as zero-order inputs and an AUC state, DOP853 rtol 1e-10, segment by
    segment between doses, infusion ends and day boundaries; then the tumour ODE day by day)
    for a handful of patients from the same ``simulate`` call (same individual parameters);
    ratio = pkpd patients/s (100k) / scipy patients/s;
  * the largest relative SLD difference between the two (weekly times, 0-728 days), also for
    the typical patient (identity check) and for the daily PK drivers;
  * ``grad_us_per_patient`` (the headline): the SLD at 8 observation times and the gradient of
    their Gaussian log-likelihood (combined error, 3 mm + 10%) w.r.t. all 13 tumour
    parameters, one reverse pass, what each NUTS leapfrog step needs; batch of 120 patients
    (vmap + jit, fixed precomputed drivers from individual PK, cut after the last observation);
    checked against the chain rule through the forward-mode Jacobian;
  * for reference, the full 8 x 13 Jacobian of the SLD:
    ``jax.jacfwd`` on 730-day drivers, on drivers cut after the last observation (later drivers
    cannot affect earlier SLD), forward mode in groups of at most 5 tangents, and ``jax.jacrev``;
    the variants are timed in interleaved rounds and the best repeat is reported (the machine
    may be shared), the median is printed too.

``--quick``: N = 1k and 10k only (100k extrapolated linearly from 10k, flagged
``"extrapolated": true``), 2 scipy patients, fewer gradient repeats. The last line is one JSON
object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pkpd
from pkpd.dosing.regimen import parse_regimen
from pkpd.tumour import combination as cm
from pkpd.tumour.simulate import patient_drivers, simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _scipy_triplet as ref  # noqa: E402

CARD = "sclc_triplet_tgi"
PROTOCOL = ["anlotinib: 12 mg PO QD D1-14 Q21D",
            "durvalumab: 1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W",
            "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4",
            "carboplatin: AUC 5 IV 60 min D1 Q21D x4"]
COV = {"BSA": 1.8, "GFR": 100}
DAYS = 730
OBS_DAYS = np.array([0.0, 42.0, 84.0, 126.0, 168.0, 252.0, 336.0, 420.0])
N_GRAD = 120


def run_pkpd(n, seed=0):
    t0 = time.perf_counter()
    sim = simulate(CARD, PROTOCOL, DAYS, n=n, seed=seed, covariates=COV, progress=False)
    return sim, time.perf_counter() - t0


def sld_matrix(sim):
    tr = sim.trajectories
    times = np.unique(tr["TIME"].to_numpy())
    return times, tr["IPRED"].to_numpy().reshape(-1, len(times))


# ---------------------------------------------------------------------------------------------
# scipy reference on the same individuals
# ---------------------------------------------------------------------------------------------
def reference_setup():
    card = pkpd.load_card(CARD)
    doses = {}
    for text in PROTOCOL:
        reg = parse_regimen(text)
        doses[reg.drug] = reg.doses(COV, DAYS)
    chemo = {d: float(v["reference_mean"]) for d, v in card.drivers.items()
             if v["signal"] == "chemo"}
    typical = {d: pkpd.load_card(v["card"]).typical_params(COV) for d, v in card.drivers.items()
               if d in doses}
    return card, doses, chemo, typical


def individual_pk(patients, typical):
    """``{drug: {name: array}}``: IIV columns of ``sim.patients`` ("drug.NAME"), else typical."""
    n = len(patients)
    return {drug: {k: (patients[f"{drug}.{k}"].to_numpy() if f"{drug}.{k}" in patients
                       else np.full(n, v)) for k, v in typ.items()}
            for drug, typ in typical.items()}


def run_scipy(card, doses, chemo, pk, tp):
    """SLD at day boundaries (n, DAYS + 1) and the daily drivers of each patient."""
    n = len(next(iter(tp.values())))
    out = np.empty((n, DAYS + 1))
    drivers = {s: np.empty((n, DAYS)) for s in ("anlotinib", "durvalumab", "chemo")}
    for i in range(n):
        pk_i = {d: {k: float(v[i]) for k, v in p.items()} for d, p in pk.items()}
        tp_i = {k: float(v[i]) for k, v in tp.items()}
        out[i], drv = ref.patient(pk_i, doses, chemo, tp_i, DAYS)
        for s in drivers:
            drivers[s][i] = drv[s]
    return out, drivers


def rel_diff(a, b, floor=0.0):
    """max |a - b| / |b| over entries with |b| > floor * max|b|."""
    b = np.asarray(b)
    m = np.abs(b) > floor * np.max(np.abs(b))
    return float(np.max(np.abs(np.asarray(a) - b)[m] / np.abs(b)[m]))


# ---------------------------------------------------------------------------------------------
# gradient benchmark
# ---------------------------------------------------------------------------------------------
def _jacfwd_fn():
    def one(p, d):
        f = lambda q: cm.sld(q, d, OBS_DAYS)  # noqa: E731
        return f(p), jax.jacfwd(f)(p)
    return jax.jit(jax.vmap(one))


def _grouped_jvp_fn(size=7):
    names = cm.PARAMETERS
    groups = [names[i:i + size] for i in range(0, len(names), size)]

    def one(p, d):
        jac = {}
        for sub in groups:
            rest = {k: v for k, v in p.items() if k not in sub}

            def f(q, rest=rest):
                return cm.sld({**rest, **q}, d, OBS_DAYS)
            jac.update(jax.jacfwd(f)({k: p[k] for k in sub}))
        return cm.sld(p, d, OBS_DAYS), jac
    return jax.jit(jax.vmap(one))


def _loglik(f, y):
    """Gaussian log-likelihood of observations ``y`` under the card's combined error model
    (Var = 3^2 + (0.1 f)^2): the scalar a NUTS step differentiates."""
    sd = jnp.sqrt(9.0 + (0.1 * f) ** 2)
    return jnp.sum(-0.5 * ((y - f) / sd) ** 2 - jnp.log(sd))


def _loglik_grad_fn():
    def one(p, d, y):
        return jax.value_and_grad(lambda q: _loglik(cm.sld(q, d, OBS_DAYS), y))(p)
    return jax.jit(jax.vmap(one))


def _jacrev_fn():
    def one(p, d):
        f = lambda q: cm.sld(q, d, OBS_DAYS)  # noqa: E731
        return f(p), jax.jacrev(f)(p)
    return jax.jit(jax.vmap(one))


def grad_bench(typical, rounds, reps):
    sim, _ = run_pkpd(N_GRAD, seed=3)
    pat = sim.patients
    tp = {k: jnp.asarray(pat[k].to_numpy()) for k in cm.PARAMETERS}
    drv = patient_drivers(CARD, PROTOCOL, DAYS, pk_params=individual_pk(pat, typical),
                          covariates=COV)
    drv_full = {k: jnp.asarray(v) for k, v in drv.items()}
    cut = int(OBS_DAYS[-1]) + 1
    drv_cut = {k: v[:, :cut] for k, v in drv_full.items()}
    variants = [("jacfwd, 730-day drivers", _jacfwd_fn(), drv_full),
                (f"jacfwd, drivers cut at day {cut}", _jacfwd_fn(), drv_cut),
                (f"forward, tangent groups <= 5, cut {cut}", _grouped_jvp_fn(5), drv_cut),
                (f"jacrev, cut {cut}", _jacrev_fn(), drv_cut)]
    rows, base = [], None
    # the headline: value + reverse-mode gradient of the 8-observation log-likelihood
    y_obs = jnp.asarray(np.asarray(jax.vmap(lambda p, d: cm.sld(p, d, OBS_DAYS))(tp, drv_cut))
                        * np.random.default_rng(7).lognormal(0.0, 0.1, (N_GRAD, len(OBS_DAYS))))
    ll_fn = _loglik_grad_fn()
    t0 = time.perf_counter()
    _, g = jax.block_until_ready(ll_fn(tp, drv_cut, y_obs))
    ll_first = time.perf_counter() - t0
    for name, fn, d in variants:                 # compile (first call) and check agreement
        t0 = time.perf_counter()
        y, jac = jax.block_until_ready(fn(tp, d))
        first = time.perf_counter() - t0
        jmat = np.stack([np.asarray(jac[k]) for k in cm.PARAMETERS], axis=-1)
        if base is None:
            base = (np.asarray(y), jmat)
        dev = max(rel_diff(y, base[0]), float(np.max(np.abs(jmat - base[1]))
                                              / np.max(np.abs(base[1]))))
        rows.append(dict(name=name, fn=fn, d=d, first=first, dev=dev, ts=[]))
    # the log-likelihood gradient must equal the chain rule through the jacfwd Jacobian
    f0 = base[0]
    dldf = np.asarray(jax.vmap(jax.grad(_loglik))(jnp.asarray(f0), y_obs))
    chain = np.einsum("pi,pik->pk", dldf, base[1])
    gmat = np.stack([np.asarray(g[k]) for k in cm.PARAMETERS], axis=-1)
    ll_dev = float(np.max(np.abs(gmat - chain)) / np.max(np.abs(chain)))
    rows.insert(0, dict(name=f"loglik value + grad (reverse), cut {cut}",
                        fn=lambda p, d: ll_fn(p, d, y_obs), d=drv_cut, first=ll_first,
                        dev=ll_dev, ts=[]))
    for _ in range(rounds):                      # interleaved, so load changes hit all alike
        for r in rows:
            for _ in range(reps):
                t0 = time.perf_counter()
                jax.block_until_ready(r["fn"](tp, r["d"]))
                r["ts"].append(time.perf_counter() - t0)
    for r in rows:
        r["us"] = float(np.min(r["ts"])) / N_GRAD * 1e6
        r["us_median"] = float(np.median(r["ts"])) / N_GRAD * 1e6
        r["compile_s"] = r["first"] - float(np.min(r["ts"]))
    return rows


# ---------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="N = 1k and 10k only (100k extrapolated), 2 scipy patients")
    ap.add_argument("--scipy-patients", type=int, default=None,
                    help="patients in the scipy loop (default 5, --quick 2)")
    args = ap.parse_args(argv)
    quick = args.quick
    sizes = (1000, 10000) if quick else (1000, 10000, 100000)
    n_ref = args.scipy_patients or (2 if quick else 5)
    rounds, reps = (3, 3) if quick else (5, 10)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{len(jax.devices())} device(s); model {CARD}, {DAYS} days")

    # ---- pkpd: warm-ups (one per batch shape: 1k, and 10k = the chunk size), then timed runs
    warm = {}
    for n in (1000, 10000):
        warm[n] = run_pkpd(n, seed=100)[1]
    res = {}
    for n in sizes:
        _, secs = run_pkpd(n, seed=0)
        res[n] = secs
    compile_s = {n: warm[n] - res[n] for n in warm}
    print(f"\nwarm-up (incl. compile): N=1k {warm[1000]:.1f} s, N=10k {warm[10000]:.1f} s "
          f"-> compile about {compile_s[1000]:.1f} s / {compile_s[10000]:.1f} s")
    print(f"{'pkpd simulate':<22}{'N':>8}{'seconds':>10}{'patients/s':>13}")
    for n in sizes:
        print(f"{'':<22}{n:>8,}{res[n]:>10.2f}{n / res[n]:>13,.0f}")
    extrapolated = 100000 not in res
    sec_100k = res[100000] if not extrapolated else 10.0 * res[10000]
    if extrapolated:
        print(f"{'':<22}{100000:>8,}{sec_100k:>10.2f}{100000 / sec_100k:>13,.0f}  "
              "(extrapolated from 10k)")
    rate_100k = 100000 / sec_100k

    # ---- scipy reference: typical patient (identity check), then n_ref population patients
    card, doses, chemo, typical = reference_setup()
    tp_names = list(card.typical_params())
    sim_t, _ = run_pkpd(None)
    times, y_t = sld_matrix(sim_t)
    idx = np.round(times).astype(int)
    ref_t, _ = run_scipy(card, doses, chemo,
                         {d: {k: np.array([v]) for k, v in p.items()} for d, p in typical.items()},
                         {k: np.array([v]) for k, v in card.typical_params().items()})
    diff_typ = rel_diff(y_t, ref_t[:, idx])

    sim_r, _ = run_pkpd(n_ref, seed=7)
    _, y_r = sld_matrix(sim_r)
    pat = sim_r.patients
    pk = individual_pk(pat, typical)
    tp = {k: pat[k].to_numpy() for k in tp_names}
    t0 = time.perf_counter()
    ref_r, ref_drv = run_scipy(card, doses, chemo, pk, tp)
    t_scipy = time.perf_counter() - t0
    scipy_rate = n_ref / t_scipy
    max_rel = rel_diff(y_r, ref_r[:, idx])
    ours_drv = patient_drivers(CARD, PROTOCOL, DAYS, pk_params=pk, covariates=COV)
    drv_diff = {s: rel_diff(ours_drv[s], ref_drv[s], 1e-6) for s in ref_drv}
    speedup = rate_100k / scipy_rate
    print(f"\nscipy solve_ivp loop (DOP853, rtol 1e-10), {n_ref} patients: {t_scipy:.1f} s "
          f"({t_scipy / n_ref:.1f} s/patient, {scipy_rate:.3f} patients/s)")
    print(f"ratio pkpd(100k{', extrapolated' if extrapolated else ''})/scipy = {speedup:,.0f}x")
    print(f"max relative SLD difference (weekly, 0-{int(times[-1])} d): population "
          f"{max_rel:.2e}, typical patient {diff_typ:.2e}")
    print("max relative difference of the daily drivers (where > 1e-6 of max): "
          + ", ".join(f"{s} {v:.1e}" for s, v in drv_diff.items())
          + "  (durvalumab: CL(t) frozen at each day's midpoint in pkpd)")

    # ---- gradients
    rows = grad_bench(typical, rounds, reps)
    print(f"\nSLD at {len(OBS_DAYS)} times + derivatives w.r.t. {len(cm.PARAMETERS)} tumour "
          f"parameters, batch of {N_GRAD} (best / median of {rounds * reps}); the first row is "
          "what a NUTS step needs (value + gradient of the log-likelihood), the others the full "
          "8 x 13 Jacobian:")
    print(f"{'variant':<42}{'us/patient':>11}{'median':>9}{'compile s':>11}{'max dev':>10}")
    for r in rows:
        print(f"{r['name']:<42}{r['us']:>11.1f}{r['us_median']:>9.1f}{r['compile_s']:>11.1f}"
              f"{r['dev']:>10.1e}")
    best = rows[0]
    jac_best = min(rows[1:], key=lambda r: r["us"])
    print(f"headline: {best['name']} ({best['us']:.1f} us/patient; target <= 50); fastest full "
          f"Jacobian: {jac_best['name']} ({jac_best['us']:.1f} us/patient)")

    print(json.dumps({
        "seconds_100k": round(sec_100k, 3),
        "patients_per_s_100k": round(rate_100k),
        "speedup_vs_scipy": round(speedup, 1),
        "max_rel_diff": max_rel,
        "grad_us_per_patient": round(best["us"], 1),
        "extrapolated": extrapolated,
        "quick": quick,
        "compile_s": round(compile_s[1000], 2),
        "compile_s_10k_chunk": round(compile_s[10000], 2),
        **{f"patients_per_s_{n // 1000}k": round(n / res[n]) for n in sizes if n < 100000},
        "scipy_patients": n_ref,
        "scipy_patients_per_s": round(scipy_rate, 4),
        "max_rel_diff_typical": diff_typ,
        "driver_max_rel_diff": drv_diff,
        "grad_method": best["name"],
        "grad_us_full_jacobian": round(jac_best["us"], 1),
        "grad_us_jacfwd_730": round(rows[1]["us"], 1),
        "grad_us_by_variant": {r["name"]: round(r["us"], 1) for r in rows},
        "backend": jax.default_backend(),
    }))


if __name__ == "__main__":
    main()
