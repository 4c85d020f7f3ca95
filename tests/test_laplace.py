"""The Laplace (approximate) mode: exact where the integrand is Gaussian, exact gradients."""

from __future__ import annotations

import functools
import tomllib
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pkpd.errors import PkpdError, SpecError
from pkpd.fit.laplace import (
    LABEL,
    importance_rows,
    laplace_fit,
    laplace_rows,
    newton_modes,
    proposal_draws,
)

REPO = Path(__file__).resolve().parents[1]

# a linear-Gaussian hierarchical model: y_ij = mu + eta_i1 + x_ij eta_i2 + eps_ij, with
# eta_i ~ N(0, diag(omega^2)), eps ~ N(0, s^2); patient i has n_i of 6 padded observations
_RNG = np.random.default_rng(3)
_N, _M = 5, 6
_X = _RNG.uniform(-1.0, 2.0, (_N, _M))
_MASK = np.arange(_M)[None, :] < np.array([6, 3, 1, 4, 5])[:, None]
_Y = 2.0 + _RNG.normal(0, 1.0, (_N, 1)) + _X * _RNG.normal(0, 0.5, (_N, 1)) \
    + _RNG.normal(0, 0.3, (_N, _M))
_U = np.array([1.7, np.log(0.8), np.log(0.4), np.log(0.35)])   # mu, log omegas, log s


def _h_linear(E, u):
    mu, om, s = u[0], jnp.exp(u[1:3]), jnp.exp(u[3])
    f = mu + E[:, :1] + jnp.asarray(_X) * E[:, 1:2]
    ll = jax.scipy.stats.norm.logpdf(jnp.asarray(_Y), f, s)
    return (jnp.sum(jnp.where(jnp.asarray(_MASK), ll, 0.0), axis=1)
            + jnp.sum(jax.scipy.stats.norm.logpdf(E, 0.0, om), axis=1))


def _exact_linear(u):
    mu, om, s = u[0], np.exp(u[1:3]), np.exp(u[3])
    out = []
    for i in range(_N):
        m = _MASK[i]
        Z = np.column_stack([np.ones(m.sum()), _X[i, m]])
        cov = s ** 2 * np.eye(m.sum()) + Z @ np.diag(om ** 2) @ Z.T
        out.append(multivariate_normal(np.full(m.sum(), mu), cov).logpdf(_Y[i, m]))
    return np.array(out)


@functools.partial(jax.jit, static_argnums=0)
def _laplace_total(h, u):
    """Laplace value (summed over patients) with its own converged modes, and the modes."""
    E = newton_modes(h, u, jnp.zeros((_N, 2)), 100, 0.1, 1e-12)
    return jnp.sum(laplace_rows(h, E, u)), E


def test_laplace_marginal_is_exact_for_the_linear_gaussian_model():
    """Gaussian integrand: the Laplace value equals the exact marginal likelihood of each
    patient (scipy multivariate normal of y_i, covariance s^2 I + Z Omega Z^T) to 1e-8."""
    for u in (_U, _U + np.array([0.5, 0.3, -0.6, 0.2])):
        E = newton_modes(_h_linear, jnp.asarray(u), jnp.zeros((_N, 2)), 5, 0.1)
        rows = np.asarray(laplace_rows(_h_linear, E, jnp.asarray(u)))
        np.testing.assert_allclose(rows, _exact_linear(u), rtol=0, atol=1e-8)


def test_gradient_matches_central_differences_linear_and_nonlinear():
    """The gradient in the population parameters (implicit function theorem through the
    modes + autodiff of log det H) matches central differences of the Laplace value, each
    evaluated with its own converged modes; for the linear model it also matches the
    exact marginal's difference quotient."""
    t = jnp.asarray(np.linspace(0.2, 3.0, _M))

    def h_exp(E, u):       # y = exp(a + eta1) * exp(-exp(b + eta2) t) + eps: non-linear
        f = jnp.exp(u[0] + E[:, :1]) * jnp.exp(-jnp.exp(u[1] + E[:, 1:2]) * t)
        ll = jax.scipy.stats.norm.logpdf(jnp.asarray(_Y) / 2, f, jnp.exp(u[3]))
        om = jnp.exp(jnp.stack([u[2], u[2] - 0.3]))
        return (jnp.sum(jnp.where(jnp.asarray(_MASK), ll, 0.0), axis=1)
                + jnp.sum(jax.scipy.stats.norm.logpdf(E, 0.0, om), axis=1))

    for h, u in ((_h_linear, _U), (h_exp, np.array([0.1, -0.5, np.log(0.5), np.log(0.3)]))):
        E = _laplace_total(h, jnp.asarray(u))[1]
        grad = np.asarray(jax.jit(jax.grad(lambda v, E=E, h=h: jnp.sum(laplace_rows(h, E, v))))(
            jnp.asarray(u)))
        step = 1e-5
        for k in range(len(u)):
            e = np.zeros(len(u))
            e[k] = step
            fd = (float(_laplace_total(h, jnp.asarray(u + e))[0])
                  - float(_laplace_total(h, jnp.asarray(u - e))[0])) / (2 * step)
            assert grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-6), (h.__name__, k)
            if h is _h_linear:
                exact = (_exact_linear(u + e).sum() - _exact_linear(u - e).sum()) / (2 * step)
                assert grad[k] == pytest.approx(exact, rel=1e-6, abs=1e-6)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _importance(h, u, X, df):
    """Importance estimate per row and its weights' ESS, with the row modes (jitted whole:
    eagerly, each small operation compiles on its own)."""
    E = newton_modes(h, u, jnp.zeros(X.shape[1:]), 100, 0.1, 1e-12)
    rows, ess = importance_rows(h, E, u, X, df=df, return_ess=True)
    return rows, ess, E


def test_importance_marginal_is_exact_for_the_gaussian_model():
    """Gaussian integrand and Gaussian proposal at the exact mode and curvature: every
    importance weight equals the marginal, so the estimate is exact (1e-8) with any number of
    draws; with the Student-t proposal (df 5) it is unbiased, within 3 Monte Carlo SEs."""
    u = jnp.asarray(_U)
    rows = np.asarray(_importance(_h_linear, u, proposal_draws(0, 4, _N, 2, df=None), None)[0])
    np.testing.assert_allclose(rows, _exact_linear(_U), rtol=0, atol=1e-8)
    rows, ess, _ = _importance(_h_linear, u, proposal_draws(1, 2000, _N, 2, df=5.0), 5.0)
    se = 1.0 / np.sqrt(np.asarray(ess))          # delta method: SE of log mean weight
    assert np.all(np.abs(np.asarray(rows) - _exact_linear(_U)) < 3 * se)


def _h_skew(E, u):
    """One patient, one eta, a strongly non-Gaussian integrand: a log-normal rate seen through
    exp(-k t) at three noisy times (the Laplace error here is about 0.08 in log)."""
    t = jnp.array([0.5, 2.0, 6.0])
    y = jnp.array([0.55, 0.15, 0.02])
    f = jnp.exp(-jnp.exp(u[0] + E[:, :1]) * t)
    ll = jax.scipy.stats.norm.logpdf(y, f, jnp.exp(u[2]))
    return jnp.sum(ll, axis=1) + jax.scipy.stats.norm.logpdf(E[:, 0], 0.0, jnp.exp(u[1]))


def _quad_skew(u):
    """The exact log marginal of :func:`_h_skew` by adaptive quadrature (scipy, numpy
    integrand)."""
    from scipy.integrate import quad
    from scipy.stats import norm
    t, y = np.array([0.5, 2.0, 6.0]), np.array([0.55, 0.15, 0.02])

    def h(e):
        f = np.exp(-np.exp(u[0] + e) * t)
        return norm.logpdf(y, f, np.exp(u[2])).sum() + norm.logpdf(e, 0.0, np.exp(u[1]))

    v = h(0.0)
    val = quad(lambda e: np.exp(h(e) - v), -15, 15, points=[0.0], limit=400, epsabs=0,
               epsrel=1e-11)[0]
    return v + np.log(val)


def test_importance_marginal_converges_where_laplace_is_off_and_its_gradient_is_exact():
    """Non-Gaussian integrand: Laplace is off the quadrature oracle by more than 0.02, the
    importance estimate with 2 x 4000 draws is within 4 Monte Carlo SEs of it, and the
    gradient of the (fixed-draw) estimate matches its central differences to 1e-6."""
    u = np.array([np.log(0.8), np.log(2.0), np.log(0.3)])
    exact = _quad_skew(u)
    E = _importance(_h_skew, jnp.asarray(u), proposal_draws(0, 1, 1, 1), 5.0)[2]
    lap = float(jax.jit(functools.partial(laplace_rows, _h_skew))(E, jnp.asarray(u))[0])
    assert abs(lap - exact) > 0.02
    est, ess, _ = _importance(_h_skew, jnp.asarray(u), proposal_draws(2, 4000, 1, 1), 5.0)
    assert abs(float(est[0]) - exact) < 4.0 / np.sqrt(float(ess[0]))
    X = proposal_draws(3, 64, 1, 1)

    @jax.jit
    def total(v):
        E = jax.lax.stop_gradient(newton_modes(_h_skew, v, jnp.zeros((1, 1)), 100, 0.1, 1e-12))
        return jnp.sum(importance_rows(_h_skew, E, v, X))

    grad = np.asarray(jax.grad(total)(jnp.asarray(u)))
    step = 1e-5
    for k in range(3):
        e = np.zeros(3)
        e[k] = step
        fd = (float(total(jnp.asarray(u + e))) - float(total(jnp.asarray(u - e)))) / (2 * step)
        assert grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-6), k


def _raw():
    raw = tomllib.loads((REPO / "fits" / "triplet_recovery.toml").read_text())
    raw["simulate"]["arms"] = {"triplet": 8, "durvalumab_ep": 8, "anlotinib_ep": 8}
    raw["simulate"]["days"] = 364
    return raw


@pytest.fixture(scope="module")
def small_fit():
    from pkpd.fit.spec import load_spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return laplace_fit(load_spec(_raw()), draws=500, seed=1)


@pytest.mark.slow
def test_small_triplet_fit_runs_and_is_labelled(small_fit):
    """End to end on a small simulated triplet trial (8/8/8 patients, one year): finite
    summaries of all 14 population parameters, a converged optimiser and eta modes, and the
    label ``laplace (approximate)`` on the result (slow: about 60-90 s, mostly compilation)."""
    res = small_fit
    assert res.method == LABEL == "laplace (approximate)"
    assert res.summary.attrs["method"] == LABEL
    assert list(res.summary["parameter"]) == ["KAA", "PSI", "BASE", "KG", "KCHEMO", "KIO",
                                              "LAMBDA", "omega_BASE", "omega_KG",
                                              "omega_KCHEMO", "omega_KIO", "omega_LAMBDA",
                                              "sigma_add", "sigma_prop"]
    num = res.summary[["mean", "sd", "q5", "q95", "mode"]].to_numpy()
    assert np.all(np.isfinite(num)) and np.all(res.summary["sd"] > 0)
    assert np.all(res.summary["q5"] < res.summary["q95"])
    assert res.record["optimizer"]["grad_norm"] < 1e-2
    assert res.record["eta_grad_max"] < 1e-4
    assert res.draws.shape == (500, 14) and np.all(res.draws.drop(columns="PSI") > 0)
    assert res.eta.shape == (24, 5)
    p = res.p_greater("PSI", 0.0)
    assert p == pytest.approx(np.mean(res.draws["PSI"] > 0)) and 0 <= p <= 1
    with pytest.raises(PkpdError, match="not a population parameter"):
        res.p_greater("PSY", 0.0)


def test_unsupported_priors_and_blocks_are_refused():
    """A prior the mode cannot evaluate (Uniform) is a SpecError naming the parameter."""
    from pkpd.fit.laplace import _coordinates
    from pkpd.fit.spec import load_spec
    raw = _raw()
    raw["theta"]["KAA"] = "Uniform(0, 1)"
    with pytest.raises(SpecError, match="KAA.*Uniform"):
        _coordinates(load_spec(raw))
