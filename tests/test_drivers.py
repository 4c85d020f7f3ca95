"""Grid drivers (pkpd.tumour.drivers): interval means against the exact engine, closed forms,
gradients,
bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pkpd
from pkpd.dosing.regimen import parse_regimen
from pkpd.errors import ModelError, RegimenError
from pkpd.pk.engine import SolverConfig
from pkpd.pk.exposure import _profile, dose_records
from pkpd.tumour.drivers import dose_inputs, grid_concentrations, grid_means, matfuncs, phi1, phi2
from pkpd.units import time_factor

DURVA = "1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"


def _engine_means(card, reg, n, cov=None, step=1.0, config=None):
    """Interval means from the engine's exact/ODE path (AUC state differences)."""
    p = card.typical_params(cov)
    f = time_factor("day", card.time_unit)
    dd = dose_records(card, reg.doses(cov, n * step))
    conc, auc = _profile(card, p, dd, np.arange(n + 1) * step * f, config)
    return np.diff(auc) / (step * f), conc[1:]


@pytest.mark.parametrize("name,text,cov", [
    ("anlotinib", "12 mg PO QD D1-14 Q21D", None),
    ("anlotinib", "12 mg PO BID D1-14 Q21D; hold D30-35; reduce to 10 mg from D43", None),
    ("etoposide", "100 mg/m2 IV 60 min D1-3 Q21D x4", {"BSA": 1.8}),
    ("carboplatin", "AUC 5 IV 60 min D1 Q21D x4", {"GFR": 100}),
    ("etoposide", "500 mg IV 30 h D1 Q7D x3", {"BSA": 1.8}),   # infusion across days
])
def test_linear_cards_match_engine(name, text, cov):
    card = pkpd.load_card(name)
    reg = parse_regimen(text)
    n = 90
    g = grid_concentrations(card, reg, n, covariates=cov)
    ref, end = _engine_means(card, reg, n, cov)
    # both paths are exact for linear PK: agreement to rounding (AUC differences lose ~1e-12
    # of the cumulative AUC, so compare relative to the largest mean)
    np.testing.assert_allclose(g.mean[0], ref, rtol=1e-9, atol=1e-9 * ref.max())
    np.testing.assert_allclose(g.end[0], end, rtol=1e-9, atol=1e-9 * end.max())


def test_bateman_closed_form_daily_mean():
    """One oral dose: the first-day mean equals the integral of the Bateman function."""
    card = pkpd.load_card("anlotinib")
    p = card.typical_params()
    g = grid_concentrations(card, parse_regimen("12 mg PO QD x1"), 3)
    ka, k, v = p["KA"], p["CL"] / p["V"], p["V"]
    T = 24.0  # h

    def auc(t):  # integral of D ka/(V (ka-k)) (e^-kt - e^-ka t), in mg*h/L
        return 12 * ka / (v * (ka - k)) * ((1 - np.exp(-k * t)) / k - (1 - np.exp(-ka * t)) / ka)

    expected = np.array([auc(T), auc(2 * T) - auc(T), auc(3 * T) - auc(2 * T)]) / T * 1000
    np.testing.assert_allclose(g.mean[0], expected, rtol=1e-12)


def test_time_varying_clearance_against_ode():
    """Durvalumab CL(t): midpoint-frozen CL per interval converges as step^2 to the ODE."""
    card = pkpd.load_card("durvalumab")
    reg = parse_regimen(DURVA)
    cfg = SolverConfig(rtol=1e-11, atol=1e-12)
    errs = []
    for step in (1.0, 0.5):
        n = int(84 / step)
        g = grid_concentrations(card, reg, n, step_day=step)
        ref, _ = _engine_means(card, reg, n, step=step, config=cfg)
        errs.append(np.max(np.abs(g.mean[0] / ref - 1)))
    assert errs[0] < 1e-4          # the documented bound on a 1-day grid (5.3e-5 measured)
    assert errs[1] < errs[0] / 3   # second order: halving the step divides the error by ~4


def test_matfuncs_against_expm():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        for _ in range(5):
            a = rng.uniform(0.05, 2.0, (n, n))
            K = -np.diag(a.sum(0)) + a - np.diag(np.diag(a))  # compartmental: columns sum <= 0
            K = K - np.diag(rng.uniform(0.01, 0.5, n))
            L = rng.uniform(0.1, 3.0)
            E, P1, P2 = matfuncs(jnp.asarray(K), L)
            big = np.zeros((3 * n, 3 * n))
            big[:n, :n], big[:n, n:2 * n], big[n:2 * n, 2 * n:] = K * L, np.eye(n) * L, \
                np.eye(n) * L
            ex = np.asarray(jax.scipy.linalg.expm(jnp.asarray(big)))
            np.testing.assert_allclose(E, ex[:n, :n], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(P1, ex[:n, n:2 * n], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(P2, ex[:n, 2 * n:], rtol=1e-10, atol=1e-13)


def test_repeated_eigenvalue_is_finite_and_accurate():
    """KA = CL/V (a repeated eigenvalue): the Bateman limit D k t e^{-kt}/V, gradients finite."""
    k = 0.2
    K = jnp.array([[-k, 0.0], [k, -k]])
    E, P1, _ = matfuncs(K, 3.0)
    assert np.isclose(float(E[1, 0]), k * 3.0 * np.exp(-k * 3.0), rtol=1e-8)
    g = jax.grad(lambda kk: matfuncs(jnp.array([[-kk, 0.0], [kk, -kk]]), 3.0)[1][1, 0])(k)
    assert np.isfinite(float(g))


def test_phi_functions_series_and_direct_agree():
    z = np.array([-30.0, -1.0, -0.10001, -0.09999, -1e-8, 0.0, 1e-8, 0.09999, 0.10001, 2.0])
    p1 = np.where(z == 0, 1.0, np.expm1(z) / np.where(z == 0, 1.0, z))
    np.testing.assert_allclose(phi1(jnp.asarray(z)), p1, rtol=1e-13)
    zz = np.where(np.abs(z) < 1e-3, 1.0, z)
    p2 = np.where(np.abs(z) < 1e-3, 0.5 + z / 6, (np.expm1(zz) - zz) / zz**2)
    np.testing.assert_allclose(phi2(jnp.asarray(z)), p2, rtol=1e-9)
    d = jax.vmap(jax.grad(phi1))(jnp.asarray(z))
    assert np.all(np.isfinite(np.asarray(d)))


def test_gradients_through_grid_means_match_finite_differences():
    card = pkpd.load_card("anlotinib")
    model = card.model()
    inputs = dose_inputs(card, parse_regimen("12 mg PO QD D1-14 Q21D").doses(None, 42), 42)
    p0 = card.typical_params()

    def f(logp):
        p = {k: jnp.exp(v) for k, v in logp.items()}
        return grid_means(model, p, inputs)[0][jnp.array([5, 13, 20, 41])]

    lp = {k: jnp.log(v) for k, v in p0.items()}
    jac = jax.jacfwd(f)(lp)
    for name in p0:
        h = 1e-6
        up = dict(lp, **{name: lp[name] + h})
        dn = dict(lp, **{name: lp[name] - h})
        fd = (f(up) - f(dn)) / (2 * h)
        np.testing.assert_allclose(jac[name], fd, rtol=1e-5, atol=1e-9)


def test_population_rows_match_single_patients():
    card = pkpd.load_card("durvalumab")
    reg = parse_regimen(DURVA)
    params = card.sample_params(4, np.random.default_rng(5))
    g = grid_concentrations(card, reg, 60, params=params)
    for i in range(4):
        one = grid_concentrations(card, reg, 60, params={k: v[i:i + 1] for k, v in params.items()})
        np.testing.assert_allclose(g.mean[i], one.mean[0], rtol=1e-13)


def test_michaelis_menten_card_is_refused():
    card = pkpd.load_card("durvalumab_baverel2018")
    with pytest.raises(ModelError, match="Michaelis-Menten"):
        grid_concentrations(card, parse_regimen(DURVA), 30)


def test_bad_inputs():
    card = pkpd.load_card("anlotinib")
    doses = parse_regimen("12 mg PO QD x3").doses(None, 10)
    with pytest.raises(ModelError, match="step"):
        dose_inputs(card, doses, 10, step_day=0.0)

    class Neg:
        time_day = np.array([0.0])
        amount_mg = np.array([-5.0])
        duration_day = np.array([0.0])
        route = np.array(["PO"])

    with pytest.raises(RegimenError, match="dose 1 .*-5"):
        dose_inputs(card, Neg(), 10)
    bad_route = Neg()
    bad_route.amount_mg = np.array([5.0])
    bad_route.route = np.array(["SC"])
    with pytest.raises(RegimenError, match="route SC"):
        dose_inputs(card, bad_route, 10)
