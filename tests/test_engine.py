"""Engine internals not covered by the conformance suite: steady state on the ODE path
(nonlinear models reach SS by a run-in), failure accounting, and shape bucketing."""

import jax
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.pk.engine import SolverConfig, compile_records, solve, stack


def records(rows):
    df = pd.DataFrame(rows, columns=["ATIME", "EVID", "AMT", "CMT", "RATE", "DUR", "II", "SS"])
    df["ADDL_SRC"] = 0
    df["ROW"] = np.arange(1, len(df) + 1)
    return df


OBS = [[t, 0, 0, 2, 0, 0, 0, 0] for t in (0.5, 3.0, 11.9, 20.0)]
P = dict(CL=2.0, V=20.0, KA=1.0, ALAG1=0.7)


def one(df, model):
    return jax.tree.map(lambda a: a[0], stack([compile_records(df, model)]))


@pytest.mark.parametrize("rate", [0.0, 50.0], ids=["oral-bolus", "infusion-2h"])
def test_nonlinear_ss_runin_matches_exact_ss(rate):
    m = pkpd.OneCompartment("oral")
    df = records([[0, 1, 100, 1, rate, 0, 12, 1]] + OBS)
    exact, _ = solve(m, P, one(df, m))
    cfg = SolverConfig(rtol=1e-10, atol=1e-12)
    ode, nfail = solve(pkpd.as_ode(m), P, one(df, pkpd.as_ode(m)), config=cfg)
    # run-in of 60 intervals: residual exp(-k*60*12) = exp(-72); solver rtol 1e-10
    np.testing.assert_allclose(ode, exact, rtol=1e-7)
    assert int(nfail) == 0


def test_nonlinear_ss_not_converged_is_nan_and_counted():
    m = pkpd.as_ode(pkpd.OneCompartment("oral"))
    df = records([[0, 1, 100, 1, 0, 0, 12, 1]] + OBS)
    # k = 0.001/h: 3 intervals of 12 h are far from steady state
    conc, nfail = solve(m, dict(P, CL=0.02), one(df, m), config=SolverConfig(ss_intervals=3))
    assert np.all(np.isnan(np.asarray(conc)))
    assert int(nfail) >= 1          # the SS record, then every segment the NaN reaches


def test_ss2_on_nonlinear_model_is_an_error():
    m = pkpd.NonlinearCompartment(1, "iv", michaelis_menten=True)
    df = records([[0, 1, 100, 1, 0, 0, 12, 2], [1, 0, 0, 1, 0, 0, 0, 0]])
    with pytest.raises(pkpd.ModelError, match="SS=2"):
        compile_records(df, m)


def test_failed_ode_segment_gives_nan_not_exception():
    m = pkpd.NonlinearCompartment(1, "iv", michaelis_menten=True)
    df = records([[0, 1, 100, 1, 0, 0, 0, 0], [24, 0, 0, 1, 0, 0, 0, 0]])
    conc, nfail = solve(m, dict(CL=1.0, V=10.0, VMAX=5.0, KM=0.5), one(df, m),
                        config=SolverConfig(max_steps=2))
    assert np.isnan(np.asarray(conc)[0])
    assert int(nfail) >= 1


def test_population_padding_is_inert():
    """Subjects padded to a common (bucketed) shape give the same result as alone."""
    m = pkpd.TwoCompartment("iv")
    p = dict(CL=1.0, V1=10.0, Q=2.0, V2=20.0)
    a = records([[0, 1, 100, 1, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0, 0, 0], [5, 0, 0, 1, 0, 0, 0, 0]])
    b = records([[0, 1, 50, 1, 25, 0, 0, 0]] + [[t, 0, 0, 1, 0, 0, 0, 0] for t in range(1, 30)])
    both = stack([compile_records(a, m), compile_records(b, m)])
    assert both.o_time.shape[1] >= 29
    alone_a, _ = solve(m, p, one(a, m))
    pop, _ = jax.vmap(lambda c: solve(m, p, c))(both)
    np.testing.assert_allclose(np.asarray(pop)[0, :2], np.asarray(alone_a)[:2], rtol=1e-12)


def test_forward_mode_on_ode_path_matches_reverse():
    """jacfwd needs SolverConfig(adjoint="forward"); jacrev the default reverse adjoint."""
    m = pkpd.NonlinearCompartment(2, "iv", time_varying=True)
    df = records([[0, 1, 1500, 1, 1500 * 24, 0, 0, 0], [21, 1, 1500, 1, 1500 * 24, 0, 0, 0]]
                 + [[t, 0, 0, 1, 0, 0, 0, 0] for t in (1.0, 20.9, 30.0)])
    c = one(df, m)
    p = dict(CL=0.298, V1=3.42, Q=0.452, V2=1.99, TMAX=-0.498, TC50=61.3)
    fwd = jax.jacfwd(lambda q: solve(m, q, c, config=SolverConfig(adjoint="forward"))[0])(p)
    rev = jax.jacrev(lambda q: solve(m, q, c)[0])(p)
    for k in p:
        np.testing.assert_allclose(np.asarray(fwd[k]), np.asarray(rev[k]), rtol=1e-6,
                                   atol=1e-9)
    with pytest.raises(pkpd.ModelError, match="adjoint"):
        SolverConfig(adjoint="sideways").make_adjoint()
