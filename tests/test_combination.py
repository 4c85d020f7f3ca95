"""The anlotinib + durvalumab + EP tumour model (pkpd.tumour.combination) and pkpd.tumour.simulate.

* Closed form vs ODE: :func:`pkpd.tumour.combination.sld` against scipy's DOP853 (``rtol = atol =
  1e-12``, log-size state) integrated interval by interval, restarted at every grid boundary
  (the drivers jump there) and at every off-grid observation time. Agreement ``rtol = 1e-6``, the
  acceptance criterion for closed form vs ODE (../shared/docs/STYLE.md §2.7); the measured
  difference is ~1e-14.
* Properties (hypothesis): untreated growth is strictly increasing, ``PSI`` is inert without
  anlotinib or without durvalumab, switching a drug off removes exactly its term, sizes are never
  negative nor non-finite. These are identities of the equations, so they are asserted to
  ``1e-12`` relative (round-off only).
* Gradients: forward and reverse mode against central finite differences for all 13 tumour
  parameters and for a PK parameter through the drivers.
* Sanity of the typical patient on durvalumab + EP (a window, not a calibration).
* Derived quantities against independent computations (fine grids, closed forms).
* :func:`pkpd.tumour.simulate.simulate`: agreement with the model, reproducibility, outputs, errors.

The real drivers (typical PK, BSA 1.8 m2, GFR 100 mL/min) are computed once per module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.integrate import solve_ivp

import pkpd
from pkpd.dosing.regimen import parse_regimen
from pkpd.errors import ModelError, RegimenError
from pkpd.tumour import combination as cm
from pkpd.tumour.drivers import dose_inputs, grid_means
from pkpd.tumour.simulate import patient_drivers, simulate

CARD = "sclc_triplet_tgi"
COV = {"BSA": 1.8, "GFR": 100.0}
ANLOTINIB = "anlotinib: 12 mg PO QD D1-14 Q21D"
DURVALUMAB = "durvalumab: 1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"
ETOPOSIDE = "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4"
CARBOPLATIN = "carboplatin: AUC 5 IV 60 min D1 Q21D x4"
TRIPLET = [ANLOTINIB, DURVALUMAB, ETOPOSIDE, CARBOPLATIN]
DUO = [DURVALUMAB, ETOPOSIDE, CARBOPLATIN]
DAYS = 400
H = 1.0  # the card's grid step (day)

RTOL_ODE = 1e-6  # acceptance criterion: closed form vs ODE
ODE = {"method": "DOP853", "rtol": 1e-12, "atol": 1e-12}
RTOL_EXACT = 1e-12  # identities of the equations: round-off only

TYP = pkpd.load_card(CARD).typical_params()
OBS = np.array([0.0, 42.0, 84.0, 126.0, 168.0, 252.0, 336.0, 390.0])

# jitted once, reused by every test and every hypothesis example (params and drivers are traced)
SLD = jax.jit(cm.sld)
DERIVED = jax.jit(cm.derived)
JAC = jax.jit(jax.jacfwd(cm.sld))
GRAD_SUM = jax.jit(jax.grad(lambda p, d, t: cm.sld(p, d, t).sum()))


@jax.jit
def LOG_RATE(p, d, t):
    """Net growth rate d log y / dt at times ``t`` (forward mode; sld is elementwise in t)."""
    return jax.jvp(lambda s: jnp.log(cm.sld(p, d, s)), (t,), (jnp.ones_like(t),))[1]


def P(**over) -> dict:
    """Typical tumour parameters with overrides, as strongly typed float64 scalars."""
    p = dict(TYP)
    p.update(over)
    return {k: np.float64(v) for k, v in p.items()}


def zero_drug(drivers, *names):
    return {k: (jnp.zeros_like(v) if k in names else v) for k, v in drivers.items()}


@pytest.fixture(scope="module")
def triplet():
    d = patient_drivers(CARD, TRIPLET, DAYS, covariates=COV)
    assert all(v.shape == (1, DAYS) for v in d.values())
    return {k: jnp.asarray(v[0]) for k, v in d.items()}


@pytest.fixture(scope="module")
def duo(triplet):
    # each drug's exposure is computed on its own and added to its signal, so durvalumab + EP is
    # the triplet with the anlotinib driver zeroed (test_simulate_typical_matches_model checks
    # this against simulate() with the DUO protocol)
    return zero_drug(triplet, "anlotinib")


# --------------------------------------------------------------------------------------------
# 1. closed form vs ODE
# --------------------------------------------------------------------------------------------
def rhs_from_docstring(t, state, p, drv):
    """The equations of the module docstring, written out independently of ``cm.rhs``."""
    V, B, _ = state
    ca, cd, ec = drv
    i_a = p["IMAXA"] * ca ** p["HILLA"] / (p["IC50A"] ** p["HILLA"] + ca ** p["HILLA"])
    o = cd / (p["EC50D"] + cd)
    u = 1.0 - V
    kill = p["KCHEMO"] * B + p["KAA"] * u + p["KIO"] * o * (1.0 + p["PSI"] * u)
    return np.array([p["KV"] * (1.0 - i_a) - p["KV"] * V, p["KE0C"] * (ec - B),
                     p["KG"] - math.exp(-p["LAMBDA"] * t) * kill])


def test_rhs_matches_docstring_equations():
    rng = np.random.default_rng(3)
    p = {k: float(v) for k, v in TYP.items()}
    for _ in range(50):
        t = rng.uniform(0, 400)
        state = np.array([rng.uniform(0, 1), rng.uniform(0, 3), rng.uniform(0, 6)])
        drv = (rng.uniform(0, 50) * rng.integers(0, 2), rng.uniform(0, 500) * rng.integers(0, 2),
               rng.uniform(0, 2) * rng.integers(0, 2))
        np.testing.assert_allclose(cm.rhs(t, state, p, lambda t, d=drv: d),
                                   rhs_from_docstring(t, state, p, drv), rtol=1e-14, atol=1e-300)


def ode_log_sld(params, drivers, times):
    """log SLD at ``times`` by DOP853 on ``cm.rhs``, restarted at every grid node and time."""
    p = {k: float(v) for k, v in params.items()}
    drv = np.stack([np.asarray(drivers[k], float) for k in cm.DRIVERS], axis=1)
    times = np.asarray(times, float)
    state = np.array([1.0, 0.0, math.log(p["BASE"])])
    out = {0.0: state[2]}
    for k in range(drv.shape[0]):
        t0, t1 = k * H, (k + 1) * H
        stops = [*times[(times > t0) & (times < t1)], t1]
        def at(t, v=tuple(drv[k])):  # drivers in force on [t0, t1)
            return v

        for s in stops:
            sol = solve_ivp(cm.rhs, (t0, s), state, args=(p, at), **ODE)
            assert sol.success, sol.message
            state, t0 = sol.y[:, -1], s
            out[float(s)] = state[2]
    return np.array([out[float(t)] for t in times])


ODE_CASES = {
    "typical": ("triplet", {}),
    "antagonism_PSI<0": ("triplet", dict(PSI=-0.8)),
    "no_resistance_LAMBDA=0": ("triplet", dict(LAMBDA=0.0)),
    "no_chemo_kill_KCHEMO=0": ("triplet", dict(KCHEMO=0.0)),
    "fast_steep": ("triplet", dict(KV=0.5, KE0C=2.0, HILLA=3.0, IC50A=20.0, IMAXA=0.7, KIO=0.05,
                                   PSI=2.0, KG=0.01, EC50D=50.0)),
    "durvalumab_EP": ("duo", dict(KCHEMO=0.15)),
}


@pytest.mark.parametrize("case", list(ODE_CASES))
def test_closed_form_matches_ode(case, request):
    which, over = ODE_CASES[case]
    drivers = request.getfixturevalue(which)
    params = P(**over)
    nodes = np.arange(DAYS + 1) * H
    off = np.array([0.37, 2.5, 13.71, 21.0001, 42.999, 57.25, 100.5, 211.123, 399.9])
    times = np.sort(np.concatenate([nodes, off]))
    y = np.asarray(SLD(params, drivers, times))
    y_ode = np.exp(ode_log_sld(params, drivers, times))
    np.testing.assert_allclose(y, y_ode, rtol=RTOL_ODE, atol=0)
    assert np.ptp(np.log(y)) > 0.1  # the drugs act: not a trivial comparison


# --------------------------------------------------------------------------------------------
# 2. properties (hypothesis)
# --------------------------------------------------------------------------------------------
N_STEPS = 40
N_TIMES = 30


def loguniform(lo, hi):
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def maybe_zero(lo, hi):
    return st.one_of(st.just(0.0), loguniform(lo, hi))


PARAM_RANGES = dict(
    BASE=loguniform(5.0, 300.0), KG=loguniform(1e-4, 0.05), KCHEMO=maybe_zero(1e-3, 1.0),
    KE0C=loguniform(0.01, 5.0), KAA=maybe_zero(1e-4, 0.1), KIO=maybe_zero(1e-4, 0.2),
    PSI=st.floats(-1.0, 3.0), LAMBDA=maybe_zero(1e-4, 0.1), KV=loguniform(0.005, 2.0),
    IC50A=loguniform(0.1, 100.0), HILLA=loguniform(0.3, 5.0), IMAXA=st.floats(0.0, 1.0),
    EC50D=loguniform(0.01, 10.0))
HUGE_RANGES = dict(PARAM_RANGES, KCHEMO=maybe_zero(1e-3, 1e4), KAA=maybe_zero(1e-3, 1e4),
                   KIO=maybe_zero(1e-3, 1e4), PSI=st.floats(-1.0, 100.0),
                   KE0C=loguniform(1e-3, 1e3), KV=loguniform(1e-3, 1e3))


def params_st(ranges=PARAM_RANGES):
    return st.fixed_dictionaries(ranges).map(lambda d: {k: np.float64(v) for k, v in d.items()})


@st.composite
def driver_st(draw, hi=100.0):
    """A nonnegative piecewise-constant driver with a random on/off pattern."""
    level = draw(hnp.arrays(np.float64, N_STEPS, elements=st.floats(0.0, hi)))
    on = draw(hnp.arrays(np.bool_, N_STEPS))
    return jnp.asarray(np.where(on, level, 0.0))


@st.composite
def drivers_st(draw, hi=100.0):
    return {k: draw(driver_st(hi)) for k in cm.DRIVERS}


@st.composite
def times_st(draw):
    """Sorted observation times in [0, horizon], at least 1e-3 day apart, some on the grid."""
    t = draw(hnp.arrays(np.float64, N_TIMES, elements=st.floats(0.0, N_STEPS * H)))
    t[: N_TIMES // 3] = np.round(t[: N_TIMES // 3])
    t = np.unique(np.round(t, 3))
    return np.pad(t, (0, N_TIMES - t.size), constant_values=t[-1])  # fixed shape for jit


SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(params_st(), times_st())
def test_untreated_growth_strictly_increasing(params, times):
    y = np.asarray(SLD(params, cm.zero_drivers(N_STEPS), times))
    t = np.unique(times)
    y = y[np.searchsorted(times, t)]
    assert np.all(np.diff(y) > 0)
    np.testing.assert_allclose(y, params["BASE"] * np.exp(params["KG"] * t), rtol=1e-12)


@SETTINGS
@given(params_st(), drivers_st(), times_st(), st.floats(-1.0, 3.0), st.sampled_from(
    ["anlotinib", "durvalumab"]))
def test_psi_inert_without_anlotinib_or_durvalumab(params, drivers, times, psi2, absent):
    drivers = zero_drug(drivers, absent)
    y1 = SLD(params, drivers, times)
    y2 = SLD({**params, "PSI": np.float64(psi2)}, drivers, times)
    np.testing.assert_allclose(y1, y2, rtol=RTOL_EXACT, atol=0)


# zeroing a drug's driver == removing its term from the equation; anlotinib has two terms
# (KAA U and the synergy KIO O PSI U), so it needs KAA = PSI = 0, or IMAXA = 0 (no suppression)
SWITCH_OFF = {
    "chemo": [dict(KCHEMO=0.0)],
    "durvalumab": [dict(KIO=0.0)],
    "anlotinib": [dict(KAA=0.0, PSI=0.0), dict(IMAXA=0.0)],
}


@SETTINGS
@given(params_st(), drivers_st(), times_st(), st.sampled_from(
    [(d, i) for d, alts in SWITCH_OFF.items() for i in range(len(alts))]))
def test_switching_off_a_drug_removes_exactly_its_term(params, drivers, times, which):
    drug, i = which
    y_off = SLD(params, zero_drug(drivers, drug), times)
    over = {k: np.float64(v) for k, v in SWITCH_OFF[drug][i].items()}
    y_par = SLD({**params, **over}, drivers, times)
    np.testing.assert_allclose(y_off, y_par, rtol=RTOL_EXACT, atol=0)


def test_kaa_zero_alone_keeps_the_synergy(triplet):
    # the converse of the anlotinib identity: with KAA = 0 but PSI != 0, anlotinib still acts
    # through the synergy term, so the result differs from zeroing its driver
    y_off = SLD(P(), zero_drug(triplet, "anlotinib"), OBS)
    y_kaa0 = SLD(P(KAA=0.0), triplet, OBS)
    assert np.max(np.abs(np.log(np.asarray(y_kaa0) / np.asarray(y_off)))) > 1e-2


@SETTINGS
@given(params_st(HUGE_RANGES), drivers_st(hi=1e3), times_st())
def test_sizes_nonnegative_and_finite(params, drivers, times):
    y = np.asarray(SLD(params, drivers, times))
    assert np.all(np.isfinite(y))
    assert np.all(y >= 0)


# --------------------------------------------------------------------------------------------
# 3. gradients
# --------------------------------------------------------------------------------------------
REL_STEP = 1e-6
RTOL_GRAD = 1e-5


def assert_matches_fd(ad, fd, y, p):
    """``|AD - FD| <= RTOL_GRAD |FD| + floor``; the floor is 50x the round-off of the central
    difference itself, eps |y| / (REL_STEP |p|), so it only matters for a derivative that is
    near 0 at some time (e.g. every parameter but BASE at t = 0)."""
    floor = 50 * np.finfo(float).eps * np.abs(y) / (REL_STEP * abs(p))
    np.testing.assert_array_less(np.abs(ad - fd), RTOL_GRAD * np.abs(fd) + floor + 1e-300)


@pytest.mark.parametrize("which", ["triplet", "duo"])
def test_gradients_all_parameters_vs_finite_differences(which, request):
    drivers = request.getfixturevalue(which)
    params = P()
    jac = JAC(params, drivers, OBS)
    grad = GRAD_SUM(params, drivers, OBS)
    y = np.asarray(SLD(params, drivers, OBS))
    for name in cm.PARAMETERS:
        v = float(params[name])
        h = REL_STEP * abs(v)
        fd = (np.asarray(SLD({**params, name: np.float64(v + h)}, drivers, OBS))
              - np.asarray(SLD({**params, name: np.float64(v - h)}, drivers, OBS))) / (2 * h)
        assert_matches_fd(np.asarray(jac[name]), fd, y, v)
        assert_matches_fd(np.asarray(grad[name]), fd.sum(), y.sum(), v)
    # the gradient is informative: every parameter moves the SLD (but PSI, KAA, IC50A, HILLA,
    # IMAXA, KV without anlotinib, where they are inert and the derivative is exactly 0)
    inert = {"PSI", "KAA", "IC50A", "HILLA", "IMAXA", "KV"} if which == "duo" else set()
    for name in cm.PARAMETERS:
        if name in inert:
            assert np.all(np.asarray(jac[name]) == 0), name
        else:
            assert np.any(np.asarray(jac[name]) != 0), name


def test_gradient_through_pk_driver(triplet):
    card = pkpd.load_card("anlotinib")
    model = card.model()
    pk = {k: np.float64(v) for k, v in card.typical_params(COV).items()}
    doses = parse_regimen(ANLOTINIB).doses(COV, DAYS * H)
    inputs = dose_inputs(card, doses, DAYS, H)
    params = P()

    def f(cl):
        conc = grid_means(model, {**pk, "CL": cl}, inputs)[0]
        return cm.sld(params, {**triplet, "anlotinib": conc}, OBS)

    f = jax.jit(f)
    cl = pk["CL"]
    # same drivers as patient_drivers (the fixture) at the typical CL
    np.testing.assert_allclose(f(cl), SLD(params, triplet, OBS), rtol=1e-12)
    d = np.asarray(jax.jit(jax.jacfwd(f))(cl))
    g = float(jax.jit(jax.grad(lambda c: f(c).sum()))(cl))
    h = REL_STEP * cl
    fd = (np.asarray(f(cl + h)) - np.asarray(f(cl - h))) / (2 * h)
    y = np.asarray(f(cl))
    assert_matches_fd(d, fd, y, cl)
    assert_matches_fd(np.array([g]), np.array([fd.sum()]), np.array([y.sum()]), cl)
    assert np.all(d[1:] > 0)  # faster clearance -> less anlotinib -> larger tumour


# --------------------------------------------------------------------------------------------
# 4. sanity of the typical patient on durvalumab + EP
# --------------------------------------------------------------------------------------------
def test_typical_durvalumab_ep_sanity(duo):
    # A sanity window, not a calibration: the typical patient responds (>= 30% shrinkage in
    # weeks 6-12, RECIST partial response), then regrows; resistance sets in within about 2-5
    # months and model-based progression falls in 120-200 days, compatible with the CASPIAN
    # median PFS of 5.1 months (about 155 days) for durvalumab + EP.
    params = P()
    weeks_6_12 = np.arange(42.0, 84.0 + 1e-9, 0.5)
    y = np.asarray(SLD(params, duo, weeks_6_12))
    base = params["BASE"]
    assert y.min() <= 0.7 * base
    der = {k: float(v) for k, v in DERIVED(params, duo).items()}
    assert float(SLD(params, duo, np.array([365.0]))[0]) > der["nadir_mm"]
    assert der["nadir_mm"] <= 0.7 * base
    onset = der["resistance_onset_day"]
    assert np.isfinite(onset)
    assert onset >= der["time_to_nadir_day"] - 1e-9
    assert 60.0 <= onset <= 150.0
    assert 120.0 <= der["progression_day"] <= 200.0


# --------------------------------------------------------------------------------------------
# 5. derived quantities vs independent computations
# --------------------------------------------------------------------------------------------
FINE = np.arange(0.0, DAYS * H + 1e-9, 0.01)


def fine_nadir(params, drivers):
    """Minimum of the SLD on a 0.01-day grid, refined on a 0.001-day grid around it."""
    y = np.asarray(SLD(params, drivers, FINE))
    t0 = FINE[np.argmin(y)]
    tf = np.clip(t0 + np.linspace(-0.05, 0.05, 101), 0.0, DAYS * H)
    yf = np.asarray(SLD(params, drivers, tf))
    return tf[np.argmin(yf)], yf.min()


def node_progression(params, drivers, n_steps):
    """First grid node where the SLD is >= 20% and >= 5 mm above its running (node) minimum."""
    y = np.asarray(SLD(params, drivers, np.arange(n_steps + 1) * H))
    run_min = np.minimum.accumulate(y)
    hit = np.flatnonzero((y >= 1.2 * run_min) & (y - run_min >= 5.0))
    return float(hit[0] * H) if hit.size else math.nan


@pytest.mark.parametrize(("which", "over"), [("triplet", {}), ("duo", {}),
                                             ("triplet", dict(PSI=-0.5, LAMBDA=0.03))])
def test_derived_nadir_and_progression_vs_fine_grid(which, over, request):
    drivers = request.getfixturevalue(which)
    params = P(**over)
    der = {k: float(v) for k, v in DERIVED(params, drivers).items()}
    t_n, y_n = fine_nadir(params, drivers)
    assert 0 < t_n < DAYS * H  # an interior nadir
    np.testing.assert_allclose(der["nadir_mm"], y_n, rtol=1e-6)
    assert der["nadir_mm"] <= y_n * (1 + 1e-12)  # derived is the exact minimum
    assert abs(der["time_to_nadir_day"] - t_n) <= 0.01
    np.testing.assert_allclose(float(SLD(params, drivers, np.array([der["time_to_nadir_day"]]))[0]),
                               der["nadir_mm"], rtol=1e-12)
    np.testing.assert_allclose(der["depth_pct"], 100 * (y_n / params["BASE"] - 1), atol=1e-4)
    assert der["baseline_mm"] == params["BASE"]
    assert der["progression_day"] == node_progression(params, drivers, DAYS)
    # resistance onset: the net growth rate (d log y / dt, by forward-mode AD of the closed
    # form) is positive everywhere after it and not just before it
    onset = der["resistance_onset_day"]
    rate = np.asarray(LOG_RATE(params, drivers, FINE))
    assert np.all(rate[FINE > onset + 1e-6] > 0)
    assert float(LOG_RATE(params, drivers, np.array([onset - 1e-3]))[0]) <= 0


def constant_drivers(n_steps, anlotinib=0.0, durvalumab=0.0, chemo=0.0):
    return {"anlotinib": jnp.full(n_steps, anlotinib), "durvalumab": jnp.full(n_steps, durvalumab),
            "chemo": jnp.full(n_steps, chemo)}


def test_derived_constant_durvalumab_closed_form():
    # constant engagement O: d log y/dt = KG - KIO O exp(-LAMBDA t) increases monotonically, so
    # nadir = resistance onset = log(KIO O / KG) / LAMBDA, with a closed-form nadir value
    params = P()
    cd = 100.0
    der = {k: float(v) for k, v in DERIVED(params, constant_drivers(DAYS, durvalumab=cd)).items()}
    o = cd / (params["EC50D"] + cd)
    kg, kio, lam = params["KG"], params["KIO"], params["LAMBDA"]
    t_star = math.log(kio * o / kg) / lam
    log_nadir = (math.log(params["BASE"]) + kg * t_star
                 - kio * o * (1 - math.exp(-lam * t_star)) / lam)
    assert abs(der["time_to_nadir_day"] - t_star) < 1e-8
    assert abs(der["resistance_onset_day"] - t_star) < 1e-8
    np.testing.assert_allclose(der["nadir_mm"], math.exp(log_nadir), rtol=1e-12)


def test_derived_constant_anlotinib_durvalumab_onset_equals_nadir():
    # constant drivers, rising U: the rate starts at KG - KIO O (1 + 0) and the kill grows then
    # decays; the last sign change of the rate is the nadir
    params = P()
    drivers = constant_drivers(DAYS, anlotinib=30.0, durvalumab=100.0)
    der = {k: float(v) for k, v in DERIVED(params, drivers).items()}
    assert abs(der["resistance_onset_day"] - der["time_to_nadir_day"]) < 1e-9
    t_n, y_n = fine_nadir(params, drivers)
    assert abs(der["time_to_nadir_day"] - t_n) <= 0.01
    np.testing.assert_allclose(der["nadir_mm"], y_n, rtol=1e-6)


def test_derived_still_shrinking_at_horizon():
    # no resistance and kill > growth: no regrowth, no progression within the horizon
    params = P(LAMBDA=0.0)
    drivers = constant_drivers(DAYS, durvalumab=100.0)
    der = {k: float(v) for k, v in DERIVED(params, drivers).items()}
    assert math.isnan(der["resistance_onset_day"])
    assert math.isnan(der["progression_day"])
    assert der["time_to_nadir_day"] == DAYS * H
    np.testing.assert_allclose(der["nadir_mm"], SLD(params, drivers, np.array([DAYS * H]))[0],
                               rtol=RTOL_EXACT)


def test_derived_nadir_inside_an_interval_away_from_the_lowest_node():
    # (found by hypothesis: the nadir search once looked only next to the lowest grid node)
    # one day of anlotinib: y rises slightly over day 0 (U builds up), dips below BASE inside
    # day 1 (U decays; the rate turns positive at 1 + log(KAA U(1) / KG) = 1.44 day) and both
    # y(1) and y(2) are above y(0) = BASE, so node 0 is the lowest node
    params = P(KG=0.01, KCHEMO=0.0, KAA=0.0358, KIO=0.0, PSI=0.0, LAMBDA=0.0, KV=1.0, IC50A=1.0,
               HILLA=1.0, IMAXA=0.8)
    anl = np.zeros(DAYS)
    anl[0] = 6.0
    drivers = {**cm.zero_drivers(DAYS), "anlotinib": jnp.asarray(anl)}
    der = {k: float(v) for k, v in DERIVED(params, drivers).items()}
    t_n, y_n = fine_nadir(params, drivers)
    assert 1.4 < t_n < 1.5 and y_n < params["BASE"] * (1 - 1e-4)
    assert der["nadir_mm"] <= y_n * (1 + 1e-12)
    assert abs(der["time_to_nadir_day"] - t_n) <= 0.01


@pytest.mark.parametrize(("base", "kg"), [(80.0, 0.004), (30.0, 0.011), (10.0, 0.013)])
def test_derived_untreated(base, kg):
    params = P(BASE=base, KG=kg)
    der = {k: float(v) for k, v in DERIVED(params, cm.zero_drivers(DAYS)).items()}
    np.testing.assert_allclose(der["nadir_mm"], base, rtol=RTOL_EXACT)  # exp(log(BASE))
    assert der["time_to_nadir_day"] == 0.0
    assert abs(der["depth_pct"]) < 1e-10
    assert der["resistance_onset_day"] == 0.0
    # y = BASE exp(KG t) >= 1.2 BASE and >= BASE + 5 mm, at the first grid node
    t_pd = max(math.log(1.2), math.log(1 + 5.0 / base)) / kg
    if 0.2 * base >= 5:
        assert t_pd == math.log(1.2) / kg
    assert der["progression_day"] == math.ceil(t_pd / H) * H


# --------------------------------------------------------------------------------------------
# 6. simulate()
# --------------------------------------------------------------------------------------------
SIM_TIMES = np.linspace(0.0, DAYS * H, 81)


@pytest.mark.parametrize(("protocol", "which"), [(TRIPLET, "triplet"), (DUO, "duo")])
def test_simulate_typical_matches_model(protocol, which, request):
    drivers = request.getfixturevalue(which)
    sim = simulate(CARD, protocol, DAYS, times=SIM_TIMES, covariates=COV, progress=False)
    tr = sim.trajectories
    assert list(tr.columns) == ["ID", "TIME", "IPRED"]
    np.testing.assert_array_equal(tr["TIME"], SIM_TIMES)
    # same functions, jitted and vmapped: equal up to round-off
    np.testing.assert_allclose(tr["IPRED"], SLD(P(), drivers, SIM_TIMES), rtol=RTOL_EXACT)
    der = DERIVED(P(), drivers)
    for k, v in der.items():
        np.testing.assert_allclose(sim.patients[k].iloc[0], float(v), rtol=RTOL_EXACT)
    # patient_drivers with the protocol equals the fixture (DUO: triplet with anlotinib zeroed)
    if which == "duo":
        pd_duo = patient_drivers(CARD, DUO, DAYS, covariates=COV)
        for k in cm.DRIVERS:
            np.testing.assert_allclose(pd_duo[k][0], drivers[k], rtol=RTOL_EXACT, atol=0)


SMALL = dict(days=120.0, covariates=COV, progress=False)


@pytest.fixture(scope="module")
def population():
    return simulate(CARD, TRIPLET, n=50, seed=7, **SMALL)


def test_simulate_population_reproducible(population):
    again = simulate(CARD, TRIPLET, n=50, seed=7, **SMALL)
    other = simulate(CARD, TRIPLET, n=50, seed=8, **SMALL)
    assert population.trajectories.equals(again.trajectories)
    assert population.patients.equals(again.patients)
    assert not population.trajectories.equals(other.trajectories)
    assert not np.allclose(population.patients["KG"], other.patients["KG"])
    assert population.patients.shape[0] == 50
    assert population.trajectories["ID"].nunique() == 50
    y = population.trajectories["IPRED"].to_numpy()
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    # individual parameters differ between patients (IIV) and BASE is the first observation
    assert population.patients["KIO"].nunique() == 50
    first = population.trajectories.groupby("ID")["IPRED"].first().to_numpy()
    np.testing.assert_allclose(first, population.patients["BASE"], rtol=1e-12)


def test_simulate_residual_nonnegative():
    sim = simulate(CARD, TRIPLET, n=50, seed=3, residual=True, **SMALL)
    dv = sim.trajectories["DV"].to_numpy()
    assert np.all(np.isfinite(dv)) and np.all(dv >= 0)
    assert not np.allclose(dv, sim.trajectories["IPRED"])


def test_simulate_outputs(population, tmp_path):
    ds = population.to_xarray()
    assert ds["IPRED"].dims == ("id", "time")
    assert ds.sizes["id"] == 50
    assert ds.sizes["time"] == population.trajectories["TIME"].nunique()
    assert ds["nadir_mm"].dims == ("id",)
    written = population.write(tmp_path / "sim.csv")
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert (tmp_path / "sim.csv") in written and (tmp_path / "sim_patients.csv") in written
    nc = population.write(tmp_path / "sim.nc")
    assert nc == [tmp_path / "sim.nc"] and nc[0].stat().st_size > 0
    with pytest.raises(ModelError, match=r"\.csv or \.nc"):
        population.write(tmp_path / "sim.xlsx")


@pytest.mark.parametrize(("card", "protocol", "kwargs", "error", "match"), [
    (CARD, ["nivolumab: 240 mg IV 30 min Q2W"], {}, ModelError,
     r"nivolumab.*no driver.*Fix"),
    ("anlotinib", TRIPLET, {}, ModelError, r"anlotinib is a pk card.*Fix.*tumour card"),
    (CARD, TRIPLET, dict(params={"BASE": -1.0}), ModelError, r"BASE.*must be > 0.*Fix"),
    (CARD, TRIPLET, dict(params={"KGROWTH": 0.1}), ModelError, r"unknown tumour param.*KGROWTH"),
    (CARD, TRIPLET, dict(n=0), ModelError, r"n = 0.*positive integer"),
    (CARD, TRIPLET, dict(days=0), ModelError, r"days = 0.*> 0.*Fix"),
    (CARD, ["12 mg PO QD D1-14 Q21D"], {}, RegimenError, r"names no drug.*Fix"),
])
def test_simulate_bad_inputs(card, protocol, kwargs, error, match):
    kw = dict(days=60.0, covariates=COV, progress=False)
    kw.update(kwargs)
    days = kw.pop("days")
    with pytest.raises(error, match=match):
        simulate(card, protocol, days, **kw)
