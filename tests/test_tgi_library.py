"""TGI model library (pkpd.tumour.tgi): closed forms vs ODE, gradients, references, jit/vmap,
errors.

Closed forms are checked against an independent ODE solve: the right-hand sides below are written
out here from the equations (not taken from ``pkpd.tumour.tgi``) and integrated with scipy's
DOP853 at ``rtol=1e-11, atol=1e-12``; K-PD models integrate the biophase amount as a state,
segment by segment between bolus times, adding each bolus to the state. Agreement:
``rtol = 1e-6`` over 0..730 days (plus ``atol = 1e-9`` mm, which only matters for an SLD that
decays to ~1e-6 mm).
The library's own ``rhs`` is checked against the time derivative of ``size`` (forward-mode JVP)
along the trajectory.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import pkpd  # noqa: F401  (float64)
from pkpd.errors import ModelError
from pkpd.tumour import tgi

RTOL = 1e-6
ATOL = 1e-9  # mm; only matters where the SLD decays to ~1e-6 mm and the ODE's atol dominates
ODE = {"method": "DOP853", "rtol": 1e-11, "atol": 1e-12}
T_EVAL = np.unique(np.concatenate([np.linspace(0.0, 730.0, 61), [0.25, 3.3, 10.5, 20.9]]))


def q21(amount, n=8, start=0.0):
    return tgi.Doses(start + 21.0 * np.arange(n), np.full(n, float(amount)))


EMPTY = tgi.Doses(np.zeros(0), np.zeros(0))
BRUNO_DOSES = tgi.bruno_2012_doses(1.8, n_cycles=4)


# ---------------------------------------------------------------------------------------------
# independent ODE reference
# ---------------------------------------------------------------------------------------------
def ode_solve(f, x0, t_eval, jumps=()):
    """Integrate ``dx/dt = f(t, x)``; ``jumps`` = [(time, state index, amount)] added at time."""
    t_end = float(t_eval[-1])
    x = np.array(x0, dtype=float)
    knots = sorted({0.0, t_end} | {float(tj) for tj, _, _ in jumps if 0.0 < tj < t_end})
    out = np.full((len(t_eval), len(x)), np.nan)
    for a, b in zip(knots[:-1], knots[1:], strict=True):
        for tj, i, amt in jumps:
            if tj == a:
                x[i] += amt
        mask = (t_eval >= a) & (t_eval <= b)
        te = np.unique(np.concatenate([t_eval[mask], [b]]))
        sol = solve_ivp(f, (a, b), x, t_eval=te, **ODE)
        assert sol.success, sol.message
        out[mask] = sol.y.T[np.isin(te, t_eval[mask])]
        x = sol.y[:, -1].copy()
    return out


def _jumps(doses, index):
    return [(float(t), index, float(a)) for t, a in zip(*doses, strict=True)]


def reference(name, p, inputs):
    """SLD from the ODE written out from the model equations."""
    E = inputs.get("exposure")
    if name == "exponential":
        f, x0, j = (lambda t, y: p["g"] * y), [p["y0"]], []
    elif name == "logistic":
        f, x0, j = (lambda t, y: p["g"] * y * (1 - y / p["K"])), [p["y0"]], []
    elif name == "gompertz":
        f, x0, j = (lambda t, y: p["g"] * y * np.log(p["K"] / y)), [p["y0"]], []
    elif name == "von_bertalanffy":
        f, x0, j = (lambda t, y: p["a"] * y ** p["m"] - p["b"] * y), [p["y0"]], []
    elif name == "stein_fojo":
        def f(t, y):
            return [p["y0"] * (p["g"] * np.exp(p["g"] * t) - p["d"] * np.exp(-p["d"] * t))]
        x0, j = [p["y0"]], []
    elif name == "claret":
        def f(t, y):
            return (p["KL"] - p["KD"] * E * np.exp(-p["lam"] * t)) * y
        x0, j = [p["y0"]], []
    elif name == "claret_kpd":
        def f(t, x):
            y, A = x
            kill = p["KD"] * p["KP"] * A * np.exp(-p["lam"] * t)
            return [(p["KL"] - kill) * y, -p["KP"] * A]
        x0, j = [p["y0"], 0.0], _jumps(inputs["doses"], 1)
    elif name == "bruno_2012":
        def f(t, x):
            y, A1, A2 = x
            k1 = p["KD1"] * p["KP1"] * A1 * np.exp(-p["LAM1"] * t)
            k2 = p["KD2"] * p["KP2"] * A2 * np.exp(-p["LAM2"] * t)
            return [(p["KL"] - k1 - k2) * y, -p["KP1"] * A1, -p["KP2"] * A2]
        d1, d2 = inputs["doses"]
        x0, j = [p["y0"], 0.0, 0.0], _jumps(d1, 1) + _jumps(d2, 2)
    elif name == "two_population":
        def f(t, x):
            return [(p["gS"] - p["kS"] * E) * x[0], p["gR"] * x[1]]
        x0, j = [(1 - p["f"]) * p["y0"], p["f"] * p["y0"]], []
    else:  # pragma: no cover
        raise AssertionError(name)
    out = ode_solve(f, x0, T_EVAL, j)
    return out.sum(axis=1) if name == "two_population" else out[:, 0]


BRUNO = tgi.bruno_2012_params(80.0)

CASES = [
    ("exponential", {"y0": 50.0, "g": 0.005}, {}),
    ("exponential", {"y0": 50.0, "g": -0.01}, {}),
    ("exponential", {"y0": 50.0, "g": 0.0}, {}),
    ("logistic", {"y0": 30.0, "g": 0.02, "K": 120.0}, {}),
    ("logistic", {"y0": 150.0, "g": 0.01, "K": 80.0}, {}),  # y0 > K: decreasing
    ("logistic", {"y0": 40.0, "g": 0.0, "K": 100.0}, {}),
    ("gompertz", {"y0": 30.0, "g": 0.01, "K": 150.0}, {}),
    ("gompertz", {"y0": 200.0, "g": 0.005, "K": 100.0}, {}),
    ("von_bertalanffy", {"y0": 30.0, "a": 0.5, "b": 0.02, "m": 2 / 3}, {}),
    ("von_bertalanffy", {"y0": 30.0, "a": 0.05, "b": 0.0, "m": 0.5}, {}),  # b = 0: series
    ("von_bertalanffy", {"y0": 100.0, "a": 0.2, "b": 0.05, "m": 0.3}, {}),  # decreasing
    ("von_bertalanffy", {"y0": 20.0, "a": 0.02, "b": 1e-7, "m": 0.9}, {}),
    ("stein_fojo", {"y0": 60.0, "d": 0.02, "g": 0.003}, {}),
    ("stein_fojo", {"y0": 60.0, "d": 0.0, "g": 0.002}, {}),
    ("stein_fojo", {"y0": 60.0, "d": 0.05, "g": 0.0}, {}),
    ("claret", {"y0": 60.0, "KL": 0.005, "KD": 0.02, "lam": 0.01}, {"exposure": 1.0}),
    ("claret", {"y0": 60.0, "KL": 0.005, "KD": 0.01, "lam": 0.0}, {"exposure": 0.8}),
    ("claret", {"y0": 60.0, "KL": 0.005, "KD": 0.02, "lam": 1e-8}, {"exposure": 0.5}),
    ("claret", {"y0": 60.0, "KL": 0.005, "KD": 0.02, "lam": 0.01}, {"exposure": 0.0}),
    ("claret_kpd", {"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": 0.01, "KP": 0.05},
     {"doses": q21(100.0)}),
    ("claret_kpd", {"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": 0.0, "KP": 0.05},
     {"doses": q21(100.0)}),
    ("claret_kpd", {"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": 0.02, "KP": 0.02},
     {"doses": q21(100.0)}),  # KP == lam
    ("claret_kpd", {"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": -0.002, "KP": 0.002},
     {"doses": q21(100.0)}),  # KP + lam == 0 exactly
    ("claret_kpd", {"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": -0.002 + 1e-9, "KP": 0.002},
     {"doses": q21(100.0)}),  # KP + lam -> 0
    ("claret_kpd", {"y0": 60.0, "KL": 0.004, "KD": 0.002, "lam": 1e-9, "KP": 0.4},
     {"doses": q21(50.0, n=6, start=3.0)}),
    ("bruno_2012", BRUNO, {"doses": BRUNO_DOSES}),
    ("bruno_2012", {**BRUNO, "LAM1": 0.0, "KP2": 0.05, "LAM2": 0.05}, {"doses": BRUNO_DOSES}),
    ("two_population", {"y0": 70.0, "f": 0.1, "gS": 0.01, "kS": 0.04, "gR": 0.008},
     {"exposure": 1.0}),
    ("two_population", {"y0": 70.0, "f": 0.0, "gS": 0.01, "kS": 0.04, "gR": 0.008},
     {"exposure": 1.0}),
    ("two_population", {"y0": 70.0, "f": 1.0, "gS": 0.01, "kS": 0.04, "gR": 0.008},
     {"exposure": 1.0}),
    ("two_population", {"y0": 70.0, "f": 0.3, "gS": 0.01, "kS": 0.04, "gR": 0.008},
     {"exposure": 0.0}),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]
T_GRAD = np.array([0.0, 1.0, 7.0, 30.5, 100.0, 365.0, 730.0])
T_RHS = np.array([0.7, 12.2, 100.3, 400.1, 729.9])  # away from dose times
T_NEG = np.array([-30.0, -1.0])
FD_REL, FD_MIN = 1e-6, 1e-9  # finite-difference step: max(FD_REL*|p|, FD_MIN)


def _f64(d):
    return {k: np.float64(v) for k, v in d.items()}


def _hand_states(name, p, inputs, t):
    """ODE state at times t by hand: biophase amounts (K-PD), or [S, R]; row 0 = SLD (filled
    in with the closed form inside the jitted bundle)."""
    def amount(doses, KP):
        tau, amt = (np.asarray(x) for x in doses)
        dt = t[:, None] - tau
        return np.sum(np.where(dt >= 0, amt * np.exp(-KP * np.maximum(dt, 0)), 0.0), axis=1)

    zero = np.zeros_like(t)
    if name == "claret_kpd":
        return np.stack([zero, amount(inputs["doses"], p["KP"])])
    if name == "bruno_2012":
        d1, d2 = inputs["doses"]
        return np.stack([zero, amount(d1, p["KP1"]), amount(d2, p["KP2"])])
    if name == "two_population":
        E = inputs["exposure"]
        S = (1 - p["f"]) * p["y0"] * np.exp((p["gS"] - p["kS"] * E) * t)
        return np.stack([S, p["f"] * p["y0"] * np.exp(p["gR"] * t)])
    return zero[None]


T_ALL = np.concatenate([T_EVAL, T_NEG, T_GRAD, T_RHS])
_EVAL, _NEG, _GRAD, _RHS = (slice(a, b) for a, b in itertools.pairwise(np.cumsum(
    [0, len(T_EVAL), len(T_NEG), len(T_GRAD), len(T_RHS)])))


@functools.cache
def _bundle(name):
    """One jitted function per model (one compile): ``jit(vmap(jvp(size)))`` over rows of
    (parameters, parameter tangent, time tangent) gives values, finite-difference values,
    forward-mode derivatives w.r.t. each parameter and d/dt in one graph; plus the model rhs."""
    model = tgi.get_model(name)
    multi = len(model.states) > 1

    def run(p, inputs, pbatch, dp, dt, aux):
        t = jnp.asarray(T_ALL)

        def row(q, dq, dti):
            return jax.jvp(lambda s, r: model.size(s, r, **inputs), (t, q),
                           (dti * jnp.ones_like(t), dq))

        y, ydot = jax.vmap(row)(pbatch, dp, dt)
        state = aux if name == "two_population" else aux.at[0].set(y[0, _RHS])
        kw = {"exposure": inputs["exposure"]} if "exposure" in inputs else {}
        rhs = jax.vmap(lambda ti, x: model.rhs(ti, x if multi else x[0], p, **kw),
                       in_axes=(0, 1))(t[_RHS], state)
        rhs = rhs.sum(axis=1) if name == "two_population" else rhs.reshape(len(T_RHS), -1)[:, 0]
        return {"y": y, "ydot": ydot, "rhs": rhs, "x0": model.initial_state(p),
                "obs0": model.observe(model.initial_state(p))}

    return jax.jit(run)


@functools.cache
def _results(i):
    name, params, inputs = CASES[i]
    names = tgi.get_model(name).parameters
    n = len(names)
    p = _f64(params)
    # rows: 0: p with time tangent 1 (d/dt); 1..3n: p-h, p+h, p+2h per parameter (finite
    # differences, p+2h for a one-sided formula at p = 0); 3n+1..4n: p with tangent e_k
    rows, steps = [p], []
    for k in names:
        h = max(FD_REL * abs(p[k]), FD_MIN)
        steps.append(h)
        rows += [{**p, k: p[k] - h}, {**p, k: p[k] + h}, {**p, k: p[k] + 2 * h}]
    rows += [p] * n
    pbatch = {k: np.array([r[k] for r in rows]) for k in names}
    dp = {k: np.zeros(len(rows)) for k in names}
    for j, k in enumerate(names):
        dp[k][1 + 3 * n + j] = 1.0
    dt = np.zeros(len(rows))
    dt[0] = 1.0
    aux = _hand_states(name, params, inputs, T_RHS)
    r = jax.tree.map(np.asarray, _bundle(name)(p, inputs, pbatch, dp, dt, aux))
    y, ydot = r.pop("y"), r.pop("ydot")
    out = {**r, "y": y[0, _EVAL], "yneg": y[0, _NEG], "yg": y[0, _GRAD], "dydt": ydot[0, _RHS],
           "jac": {k: ydot[1 + 3 * n + j, _GRAD] for j, k in enumerate(names)}, "fd": {}}
    yg = y[0, _GRAD]
    f = y[1:1 + 3 * n, _GRAD].reshape(n, 3, len(T_GRAD))
    for j, (k, h) in enumerate(zip(names, steps, strict=True)):
        if p[k] == 0.0:  # may sit on a boundary (g = 0, d = 0): one-sided, second order
            out["fd"][k] = (-3 * yg + 4 * f[j, 1] - f[j, 2]) / (2 * h)
        else:
            out["fd"][k] = (f[j, 1] - f[j, 0]) / (2 * h)
    return out


def test_registry_lists_every_model():
    names = {"exponential", "logistic", "gompertz", "von_bertalanffy", "stein_fojo", "claret",
             "claret_kpd", "bruno_2012", "two_population"}
    assert set(tgi.TGI_MODELS) == names
    assert {n for n, _, _ in CASES} == names
    for row in tgi.list_models():
        m = tgi.get_model(row["name"])
        assert row["equation"] and row["closed_form"] and row["source"]
        assert tuple(row["parameters"]) == m.parameters
        assert all(u for u in row["parameters"].values())
    assert tgi.get_model("bruno_2012").parameters == (
        "y0", "KL", "KD1", "KP1", "LAM1", "KD2", "KP2", "LAM2")


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_closed_form_matches_ode(i):
    name, params, inputs = CASES[i]
    y = _results(i)["y"]
    ref = reference(name, params, inputs)
    assert np.all(y >= 0) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_rhs_is_derivative_of_closed_form(i):
    name, params, _ = CASES[i]
    r = _results(i)
    np.testing.assert_allclose(r["rhs"], r["dydt"], rtol=1e-9, atol=1e-12)
    assert r["x0"].shape == (len(tgi.get_model(name).states),)
    assert float(r["obs0"]) == pytest.approx(params["y0"], rel=1e-15)


def test_before_treatment_start():
    """Before t = 0 no drug acts: exponential growth at the untreated rate."""
    rates = {"exponential": "g", "stein_fojo": "g", "claret": "KL", "claret_kpd": "KL",
             "bruno_2012": "KL"}
    for i, (name, p, _) in enumerate(CASES):
        if name in rates:
            y = _results(i)["yneg"]
            np.testing.assert_allclose(y, p["y0"] * np.exp(p[rates[name]] * T_NEG), rtol=1e-13)


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_gradients_match_finite_differences(i):
    """jacfwd w.r.t. every parameter vs finite differences, incl. lam = 0, KP + lam = 0."""
    name, _, _ = CASES[i]
    r = _results(i)
    for k in tgi.get_model(name).parameters:
        ad, fd = r["jac"][k], r["fd"][k]
        assert np.all(np.isfinite(ad)), k
        atol = max(1e-7 * np.max(np.abs(fd)), 1e-12)
        np.testing.assert_allclose(ad, fd, rtol=1e-5, atol=atol, err_msg=k)


def _phi1_ref(x):
    """phi1 and its derivative by the Taylor series, summed far enough (|x| <= 5)."""
    v = sum(x**k / math.factorial(k + 1) for k in range(60))
    dv = sum(k * x ** (k - 1) / math.factorial(k + 1) for k in range(1, 60))
    return v, dv


_PHI1 = jax.jit(lambda x: (tgi.phi1(x), jax.grad(tgi.phi1)(x),
                           jax.grad(jax.grad(tgi.phi1))(x)))


@pytest.mark.parametrize("x", [0.0, 1e-300, -1e-12, 3e-7, -1e-2 - 1e-12, -1e-2 + 1e-12,
                               1e-2 - 1e-12, 1e-2 + 1e-12, 0.3, -2.0, 5.0])
def test_phi1_value_and_gradient(x):
    v, dv = _phi1_ref(x)
    got, dgot, d2 = (float(a) for a in _PHI1(np.float64(x)))
    assert got == pytest.approx(v, rel=1e-14)
    assert dgot == pytest.approx(dv, rel=2e-12)
    assert np.isfinite(d2)


def test_no_nan_gradients_at_limits():
    m = tgi.get_model("claret_kpd")
    doses = q21(100.0, n=3)
    t = np.array([0.0, 10.0, 21.0, 50.0])

    def size(q):
        return m.size(t, q, doses=doses)

    both = jax.jit(lambda q: (jax.jacfwd(size)(q), jax.jacrev(size)(q)))
    for lam, KP in [(0.0, 0.05), (-0.05, 0.05), (0.0, 0.0), (1e-300, 1e-300), (0.01, 0.05)]:
        p = _f64({"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": lam, "KP": KP})
        fwd, rev = both(p)
        for k in m.parameters:
            a, b = np.asarray(fwd[k]), np.asarray(rev[k])
            assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), (k, lam, KP)
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.max(np.abs(a)))
    c = tgi.get_model("claret")
    g = jax.grad(lambda lam: c.size(100.0, {"y0": 60.0, "KL": 0.0, "KD": 0.01, "lam": lam},
                                    exposure=1.0))(0.0)
    # d/dlam of -KD*E*int_0^t exp(-lam s) ds at lam = 0 is +KD*E*t^2/2
    y = 60.0 * math.exp(-0.01 * 100.0)
    assert float(g) == pytest.approx(y * 0.01 * 100.0**2 / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------
def test_bruno_2012_published_values_in_days():
    b = tgi.BRUNO_2012
    assert b["KL"] == pytest.approx(0.00437 / 7) and round(b["KL"], 5) == 0.00062  # LITERATURE §5
    assert round(b["LAM1"], 4) == 0.0064 and round(b["LAM2"], 3) == 0.034
    assert b["KD1"] == 0.00128 and b["KD2"] == pytest.approx(4.70e-6)
    assert b["KP1"] == pytest.approx(0.1 / 7) and b["KP2"] == pytest.approx(3 / 7)
    assert "CPT" in tgi.BRUNO_2012_SOURCE and "e19" in tgi.BRUNO_2012_SOURCE


def _pad(doses, n):
    tau, amt = (np.asarray(x, dtype=float) for x in doses)
    return tgi.Doses(np.pad(tau, (0, n - len(tau))), np.pad(amt, (0, n - len(amt))))


def test_bruno_2012_reference_trajectories():
    m = tgi.get_model("bruno_2012")
    p = _f64(tgi.bruno_2012_params(80.0))
    t = np.linspace(0.0, 730.0, 731)
    doc6, cap6 = tgi.bruno_2012_doses(1.8, n_cycles=6)
    n1, n2 = len(doc6.times), len(cap6.times)
    size = jax.jit(lambda tt, q, d1, d2: m.size(tt, q, doses=(d1, d2)))  # padded: one compile
    # no doses: pure exponential growth at KL
    y = np.asarray(size(t, p, _pad(EMPTY, n1), _pad(EMPTY, n2)))
    np.testing.assert_allclose(y, 80.0 * np.exp(p["KL"] * t), rtol=1e-14)
    # one docetaxel dose D at day 0, by hand:
    # log(y/y0) = KL t - KD1 D KP1/(KP1+LAM1) (1 - exp(-(KP1+LAM1) t))
    D = 75.0 * 1.8
    y = np.asarray(size(t, p, _pad(([0.0], [D]), n1), _pad(EMPTY, n2)))
    k = p["KP1"] + p["LAM1"]
    hand = 80.0 * np.exp(p["KL"] * t - p["KD1"] * D * p["KP1"] / k * -np.expm1(-k * t))
    np.testing.assert_allclose(y, hand, rtol=1e-13)
    # as t -> inf the total docetaxel kill is KD1*D*KP1/(KP1+LAM1) = 0.1728*0.1/0.145 log units
    assert p["KD1"] * D * p["KP1"] / k == pytest.approx(0.1728 * 0.1 / 0.145, rel=1e-12)
    # six cycles of docetaxel 75 mg/m2 + capecitabine 1250 mg/m2 BID d1-14 q3w (BSA 1.8 m2):
    # shrinks, reaches a nadir during/after treatment, then regrows slowly (KL ~ 0.0006/day)
    y = np.asarray(size(t, p, doc6, cap6))
    i = int(np.argmin(y))
    assert 0.2 < y[i] / 80.0 < 0.8
    assert 90 < t[i] < 400
    assert y[-1] > y[i] and np.all(np.diff(y[i:]) > 0)


def test_two_population_nadir():
    m = tgi.get_model("two_population")
    p = {"y0": 70.0, "f": 0.1, "gS": 0.01, "kS": 0.04, "gR": 0.008}
    tn = float(m.nadir_time(p, exposure=1.0))
    a = 0.01 - 0.04
    assert tn == pytest.approx(math.log(0.9 * -a / (0.1 * 0.008)) / (0.008 - a), rel=1e-14)
    t = np.linspace(0, 730, 73001)
    y = np.asarray(m.size(t, p, exposure=1.0))
    assert t[np.argmin(y)] == pytest.approx(tn, abs=0.02)
    yn = float(m.nadir_size(p, exposure=1.0))
    assert yn <= y.min() and yn == pytest.approx(y.min(), rel=1e-7)
    for q, E in [({**p, "f": 0.0}, 1.0), ({**p, "f": 1.0}, 1.0), (p, 0.0),
                 ({**p, "f": 0.9}, 1.0)]:  # no interior minimum
        assert np.isnan(float(m.nadir_time(q, exposure=E)))
    g = jax.jit(jax.grad(lambda f: m.nadir_time({**p, "f": f}, exposure=1.0)))
    assert np.isfinite(float(g(0.1))) and float(g(0.0)) == 0.0


# ---------------------------------------------------------------------------------------------
# jit + vmap
# ---------------------------------------------------------------------------------------------
def test_jit_vmap_grad_over_parameter_sets():
    m = tgi.get_model("bruno_2012")
    idx = [i for i, (n, _, _) in enumerate(CASES) if n == "bruno_2012"]
    batch = {k: np.array([CASES[i][1][k] for i in idx]) for k in m.parameters}

    def loss(q):
        return jnp.sum(jnp.log(m.size(T_GRAD, q, doses=BRUNO_DOSES)))

    g = jax.jit(jax.vmap(jax.grad(loss)))(batch)
    for j, i in enumerate(idx):
        r = _results(i)
        y = r["yg"]
        for k in m.parameters:  # d/dq sum(log y) = sum(jac/y)
            assert float(g[k][j]) == pytest.approx(np.sum(r["jac"][k] / y), rel=1e-10), k


def test_vmap_over_doses_and_exposure():
    m = tgi.get_model("claret_kpd")
    p = _f64({"y0": 60.0, "KL": 0.004, "KD": 0.001, "lam": 0.01, "KP": 0.05})
    amounts = np.array([[0.0] * 8, [50.0] * 8, [100.0] * 8])
    doses = tgi.Doses(np.broadcast_to(q21(1.0).times, (3, 8)), amounts)
    y = np.asarray(jax.jit(jax.vmap(lambda d: m.size(T_EVAL, p, doses=d)))(doses))
    np.testing.assert_allclose(y[2], _results(19)["y"], rtol=1e-13)  # CASES[19]: same setting
    np.testing.assert_allclose(y[0], 60.0 * np.exp(0.004 * T_EVAL), rtol=1e-13)
    assert np.all(np.diff(y[:, -1]) < 0)  # more drug, smaller tumour
    c = tgi.get_model("claret")
    pc = _f64({"y0": 60.0, "KL": 0.005, "KD": 0.02, "lam": 0.01})
    y = jax.jit(jax.vmap(lambda E: c.size(T_EVAL, pc, exposure=E)))(np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(y[0], 60.0 * np.exp(0.005 * T_EVAL), rtol=1e-13)
    np.testing.assert_allclose(y[1], _results(15)["y"], rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "bad", "inputs", "words"), [
    ("exponential", {"y0": -5.0, "g": 0.01}, {}, ["y0", "-5.0"]),
    ("logistic", {"y0": 50.0, "g": 0.01, "K": 0.0}, {}, ["K", "0.0"]),
    ("gompertz", {"y0": 50.0, "g": 0.01, "K": -3.0}, {}, ["K", "-3.0"]),
    ("von_bertalanffy", {"y0": 50.0, "a": 0.1, "b": 0.01, "m": 1.0}, {}, ["m", "1.0", "(0, 1)"]),
    ("von_bertalanffy", {"y0": 50.0, "a": 0.1, "b": 0.01, "m": np.float64(-0.2)}, {},
     ["m", "-0.2"]),
    ("two_population", {"y0": 50.0, "f": 1.5, "gS": 0.01, "kS": 0.02, "gR": 0.01},
     {"exposure": 1.0}, ["f", "1.5", "[0, 1]"]),
    ("two_population", {"y0": 50.0, "f": np.array([0.1, -0.1]), "gS": 0.01, "kS": 0.02,
                        "gR": 0.01}, {"exposure": 1.0}, ["f", "-0.1"]),
    ("claret", {"y0": 50.0, "KL": 0.01, "KD": 0.01, "lam": 0.0}, {"exposure": -1.0},
     ["exposure", "-1.0"]),
])
def test_invalid_parameters_raise_clear_errors(name, bad, inputs, words):
    model = tgi.get_model(name)
    with pytest.raises(ModelError) as e:
        model.size(T_EVAL, bad, **inputs)
    msg = str(e.value)
    assert name in msg and "Fix:" in msg
    for w in words:
        assert w in msg


def test_traced_values_are_not_checked():
    """Under jit the checks are skipped (values are tracers), so jit works with any values."""
    m = tgi.get_model("logistic")
    y = jax.jit(lambda q: m.size(T_EVAL, q))(_f64({"y0": 50.0, "g": 0.01, "K": -1.0}))
    assert np.asarray(y).shape == T_EVAL.shape


def test_input_errors():
    with pytest.raises(ModelError, match="missing parameter.*KD"):
        tgi.get_model("claret").size(1.0, {"y0": 1.0, "KL": 0.1, "lam": 0.0}, exposure=1.0)
    with pytest.raises(ModelError, match="exposure is required"):
        tgi.get_model("two_population").size(1.0, {"y0": 1.0, "f": 0.0, "gS": 0.0, "kS": 0.0,
                                                   "gR": 0.0})
    with pytest.raises(ModelError, match="doses are required"):
        tgi.get_model("claret_kpd").size(1.0, {"y0": 1.0, "KL": 0.1, "KD": 0.0, "lam": 0.0,
                                               "KP": 0.1})
    with pytest.raises(ModelError, match="times must be >= 0"):
        tgi.get_model("claret_kpd").size(1.0, {"y0": 1.0, "KL": 0.1, "KD": 0.0, "lam": 0.0,
                                               "KP": 0.1}, doses=([-1.0], [10.0]))
    with pytest.raises(ModelError, match="sequence of 2 Doses"):
        tgi.get_model("bruno_2012").size(1.0, BRUNO, doses=q21(1.0))
    with pytest.raises(ModelError, match="unknown TGI model.*gompertz"):
        tgi.get_model("gomperz")


# ---------------------------------------------------------------------------------------------
# property: closed forms are finite, non-negative, and solve their own rhs
# ---------------------------------------------------------------------------------------------
PROP_MODELS = ("logistic", "gompertz", "von_bertalanffy", "stein_fojo")


@functools.cache
def _size_dt_rhs(name):
    m = tgi.get_model(name)

    def f(t, q):
        y, dy = jax.jvp(lambda s: m.size(s, q), (t,), (jnp.ones_like(t),))
        return y, dy, m.rhs(t, y, q)

    return jax.jit(f)


@settings(max_examples=25, deadline=None)
@given(y0=st.floats(1.0, 300.0), K=st.floats(1.0, 300.0), g=st.floats(0.0, 0.05),
       a=st.floats(0.0, 2.0), b=st.floats(0.0, 0.05), m=st.floats(0.05, 0.95),
       t=st.floats(0.0, 730.0))
def test_property_nonnegative_and_solves_rhs(y0, K, g, a, b, m, t):
    params = {"logistic": {"y0": y0, "g": g, "K": K}, "gompertz": {"y0": y0, "g": g, "K": K},
              "von_bertalanffy": {"y0": y0, "a": a, "b": b, "m": m},
              "stein_fojo": {"y0": y0, "d": b, "g": g}}
    for name in PROP_MODELS:
        y, dy, f = (float(v) for v in _size_dt_rhs(name)(np.float64(t), _f64(params[name])))
        assert np.isfinite(y) and y >= 0
        assert f == pytest.approx(dy, rel=1e-8, abs=1e-10 * (1 + abs(y)))
