"""Gradients of predicted concentrations w.r.t. every PK parameter: AD vs finite differences.

``jax.jacfwd`` through :func:`pkpd.pk.engine.solve` is compared with central differences
``(C(theta + h) - C(theta - h)) / (2h)``, ``h = 1e-6 |theta|``, in float64:

* truncation error ``h^2/6 |C'''|`` ~ 1e-12 relative, rounding error ``eps |C| / h`` ~ 2e-10
  relative (``eps`` = 2.2e-16), so on the exact (matrix-exponential) path ``rtol = 1e-5`` leaves
  a margin of four orders of magnitude;
* on the ODE path the solution itself carries an error ``delta ~ rtol_solver |C|``; with
  ``rtol_solver = 1e-11`` the difference quotient is off by up to ``delta / h`` ~ 1e-5 relative
  (adaptive step-size choices change with theta, so that error does not cancel), hence
  ``rtol = 1e-4`` there.

An absolute floor ``1e-8 max|C| / |theta|`` (way above the rounding error ``eps |C| / h``) covers
derivatives that are exactly zero (before a lagged dose arrives, w.r.t. KA for an IV dose).
Observation times stay away from the kinks (dose arrival, end of infusion), where C is not
differentiable w.r.t. ALAG/D1/R1. Every case first checks that the gradient is not identically
zero, so a broken derivative cannot pass by being 0 on both sides.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.pk.engine import SolverConfig, compile_records, solve, stack

EXACT_RTOL = 1e-5
ODE_RTOL = 1e-4
ODE_CONFIG = SolverConfig(rtol=1e-11, atol=1e-13, max_steps=16384)
REL_STEP = 1e-6


def records(rows):
    """Processed records (ADDL already written out), ``rows`` = (time, evid, amt, cmt, rate,
    ii, ss); doses and observations in processing order."""
    cols = ["ATIME", "EVID", "AMT", "CMT", "RATE", "II", "SS"]
    df = pd.DataFrame([dict(zip(cols, r)) for r in rows])
    df["DUR"] = 0.0
    df["ADDL_SRC"] = 0
    df["ROW"] = np.arange(1, len(df) + 1)
    return df


def DOSE(t, amt, cmt=1, rate=0.0, ii=0.0, ss=0):
    return (float(t), 1, float(amt), cmt, float(rate), float(ii), ss)


def OBS(t, cmt=1):
    return (float(t), 0, 0.0, cmt, 0.0, 0.0, 0)


def compiled_one(model, rows):
    c = stack([compile_records(records(rows), model, time_col="ATIME")])
    return jax.tree.map(lambda a: a[0], c)


def check_gradients(model, params, rows, wrt, *, config=None, rtol=EXACT_RTOL):
    """AD (forward mode on the exact path; reverse mode on the ODE path, where diffrax's
    default checkpointed adjoint is a custom_vjp) vs central differences."""
    cd = compiled_one(model, rows)
    jacobian = jax.jacrev if config is not None else jax.jacfwd

    def conc(p):
        return solve(model, p, cd, config=config)

    # one compiled program: values, Jacobian at theta, values at every theta +- h
    @jax.jit
    def run(p, batch):
        c, nfail = conc(p)
        jac = jacobian(lambda q: conc(q)[0])(p)
        cb, nfail_b = jax.vmap(conc)(batch)
        return c, jac, cb, nfail + jnp.sum(nfail_b)

    p0 = {k: float(v) for k, v in params.items()}
    steps = {name: REL_STEP * abs(p0[name]) for name in wrt}
    perturbed = [{**p0, name: p0[name] + sign * steps[name]} for name in wrt for sign in (1, -1)]
    batch = {k: jnp.asarray([q[k] for q in perturbed]) for k in p0}
    c0, jac, cb, nfail = run({k: jnp.asarray(v) for k, v in p0.items()}, batch)
    assert int(nfail) == 0
    c0 = np.asarray(c0)
    cb = np.asarray(cb)
    assert np.all(np.isfinite(c0)) and np.max(c0) > 0
    for i, name in enumerate(wrt):
        theta, h = p0[name], steps[name]
        fd = (cb[2 * i] - cb[2 * i + 1]) / (2 * h)
        ad = np.asarray(jac[name])
        assert np.max(np.abs(fd)) > 1e-6 * np.max(c0) / abs(theta), f"{name}: no sensitivity"
        np.testing.assert_allclose(ad, fd, rtol=rtol, atol=1e-8 * np.max(c0) / abs(theta),
                                   err_msg=f"d C / d {name}")


ORAL1 = pkpd.OneCompartment("oral")
IV2 = pkpd.TwoCompartment("iv")
ORAL2 = pkpd.TwoCompartment("oral")
ORAL3 = pkpd.ThreeCompartment("oral")


def test_one_cmt_oral_multiple_doses_lag_F():
    rows = [DOSE(0, 100), OBS(1), OBS(5), DOSE(12, 100), OBS(13), OBS(20)]
    params = dict(KA=1.1, CL=2.5, V=20.0, F1=0.7, ALAG1=0.6)
    check_gradients(ORAL1, params, rows, ["KA", "CL", "V", "F1", "ALAG1"])


def test_ss1_with_lag_gradient_through_steady_state():
    # 2-cmt oral. SS=1 oral record at 0 with ALAG1 1.5 < II: observations before this dose
    # arrives see the trough of the lagged train (pure SS term), later ones the train plus the
    # new dose. Then an SS=1 infusion into the central compartment at 48 with ALAG2 + duration
    # (5 + 0.9*100/10 = 14) > II 12: pending past infusions at the record depend on ALAG2, F2.
    rows = [DOSE(0, 100, 1, ii=12, ss=1), OBS(0.5, 2), OBS(3, 2), OBS(8, 2), OBS(14, 2),
            DOSE(48, 100, 2, rate=10, ii=12, ss=1), OBS(49, 2), OBS(54, 2), OBS(58, 2), OBS(70, 2)]
    params = dict(KA=0.9, CL=3.0, V1=15.0, Q=5.0, V2=40.0, F1=0.8, ALAG1=1.5, F2=0.9,
                  ALAG2=5.0)
    check_gradients(ORAL2, params, rows,
                    ["KA", "CL", "V1", "Q", "V2", "F1", "ALAG1", "F2", "ALAG2"])


def test_infusion_duration_from_D1_and_rate_from_R1():
    # RATE=-2: duration D1, rate F*AMT/D1 -- the end of the infusion moves with D1;
    # RATE=-1: rate R1, duration F*AMT/R1
    rows = [DOSE(0, 120, 1, rate=-2), OBS(1), OBS(3), OBS(7), OBS(24),
            DOSE(24.5, 60, 1, rate=-2), OBS(26),
            DOSE(48, 120, 1, rate=-1), OBS(49), OBS(50.5), OBS(54), OBS(72)]
    params = dict(CL=3.0, V1=15.0, Q=5.0, V2=40.0, D1=4.0, R1=30.0, F1=0.75)
    check_gradients(IV2, params, rows, ["CL", "V1", "Q", "V2", "D1", "R1", "F1"])


def test_three_cmt_oral():
    rows = [DOSE(0, 100, 1), OBS(0.5, 2), OBS(3, 2), OBS(12, 2),
            DOSE(24, 100, 1), OBS(30, 2), OBS(72, 2),
            DOSE(80, 100, 2, rate=50), OBS(81, 2), OBS(90, 2)]
    params = dict(KA=0.8, CL=6.0, V1=10.0, Q2=5.0, V2=20.0, Q3=2.0, V3=15.0, F1=0.7,
                  ALAG1=0.25, F2=0.9)
    check_gradients(ORAL3, params, rows,
                    ["KA", "CL", "V1", "Q2", "V2", "Q3", "V3", "F1", "ALAG1", "F2"])


# ---- ODE path --------------------------------------------------------------------------------


def test_ode_time_varying_clearance():
    model = pkpd.NonlinearCompartment(2, "iv", time_varying=True)
    rows = [DOSE(0, 200, 1, rate=100), OBS(1), OBS(5), OBS(24), DOSE(24, 100), OBS(30), OBS(48)]
    params = dict(CL=3.0, V1=15.0, Q=5.0, V2=40.0, TMAX=-0.4, TC50=20.0, F1=0.9)
    check_gradients(model, params, rows, ["CL", "V1", "Q", "V2", "TMAX", "TC50", "F1"],
                    config=ODE_CONFIG, rtol=ODE_RTOL)


def test_ode_michaelis_menten_oral():
    model = pkpd.NonlinearCompartment(1, "oral", michaelis_menten=True)
    rows = [DOSE(0, 300, 1), OBS(1, 2), OBS(4, 2), OBS(12, 2),
            DOSE(12, 300, 1), OBS(14, 2), OBS(30, 2)]
    params = dict(KA=1.1, CL=1.0, V=20.0, VMAX=20.0, KM=2.0, ALAG1=0.4, F1=0.8)
    check_gradients(model, params, rows, ["KA", "CL", "V", "VMAX", "KM", "ALAG1", "F1"],
                    config=ODE_CONFIG, rtol=ODE_RTOL)


def test_ode_view_of_linear_model_gradients():
    model = pkpd.as_ode(ORAL2)
    rows = [DOSE(0, 100, 1), OBS(0.5, 2), OBS(4, 2), DOSE(6, 50, 2, rate=25), OBS(7, 2), OBS(30, 2)]
    params = dict(KA=0.9, CL=3.0, V1=15.0, Q=5.0, V2=40.0, F1=0.6, ALAG1=0.3)
    check_gradients(model, params, rows, ["KA", "CL", "V1", "Q", "V2", "F1", "ALAG1"],
                    config=ODE_CONFIG, rtol=ODE_RTOL)


# ---- vmap over subjects ----------------------------------------------------------------------


@pytest.mark.parametrize("ode", [False, True], ids=["exact", "ode"])
def test_vmap_over_subjects_matches_separate_calls(ode):
    base = ORAL2
    model = pkpd.as_ode(base) if ode else base
    config = ODE_CONFIG if ode else None
    regimens = [
        [DOSE(0, 100, 1), OBS(1, 2), OBS(6, 2), DOSE(12, 100, 1), OBS(14, 2)],
        [DOSE(0, 80, 2, rate=40), OBS(1, 2), OBS(3, 2)],
        [DOSE(0, 50, 1), OBS(1.5, 2), DOSE(2, 50, 2), OBS(3, 2), OBS(8, 2), OBS(12, 2), OBS(20, 2)],
    ]
    if not ode:
        regimens[1] = [DOSE(0, 80, 2, rate=40, ii=12, ss=1), OBS(1, 2), OBS(3, 2)]
    params = [
        dict(KA=0.9, CL=3.0, V1=15.0, Q=5.0, V2=40.0, F1=0.6, ALAG1=0.3),
        dict(KA=1.4, CL=5.0, V1=25.0, Q=2.0, V2=30.0, F1=0.9, ALAG1=0.0),
        dict(KA=0.5, CL=1.5, V1=10.0, Q=8.0, V2=60.0, F1=1.0, ALAG1=1.0),
    ]
    model_recs = [compile_records(records(r), model, time_col="ATIME") for r in regimens]
    pop = stack(model_recs)
    singles = [jax.tree.map(lambda a: a[0], stack([r])) for r in model_recs]
    pp = {k: jnp.asarray([p[k] for p in params]) for k in params[0]}

    @jax.jit
    def run(pp, pop, ps, singles):
        batched = jax.vmap(lambda p, c: solve(model, p, c, config=config))(pp, pop)
        return batched, [solve(model, p, c, config=config) for p, c in zip(ps, singles)]

    (batched, nfail), separate = run(pp, pop, params, singles)
    assert int(jnp.sum(nfail)) == 0
    for i, (recs, (single, nf)) in enumerate(zip(model_recs, separate)):
        n = recs.n_obs
        assert int(nf) == 0
        assert np.all(np.asarray(single) > 0)
        np.testing.assert_allclose(np.asarray(batched[i, :n]), np.asarray(single),
                                   rtol=1e-12 if not ode else 1e-9)
    # and the subjects really differ (the comparison is not against copies of one subject)
    assert not np.allclose(np.asarray(batched[0, :2]), np.asarray(batched[2, :2]))
