"""Approximate fast mode: the etas integrated out by a per-patient Laplace approximation.

Every result of this module is labelled ``laplace (approximate)``: it is **not** the posterior
that NUTS samples, but a fast approximation of it, for operating-characteristics runs
(``pkpd design``) where one full NUTS fit per replicate is unaffordable.

For the diagonal, log-normal (or additive) etas of a spec, ``eta_i ~ N(0, Omega)`` with
``Omega = diag(omega^2)``, the marginal likelihood of patient ``i`` given the population
parameters ``theta`` is approximated by (Margossian et al. 2020; Stan's ``laplace_marginal``)::

    log p(y_i | theta) ~ h_i(eta_i*) + (d/2) log(2 pi) - 0.5 log det H_i,
    h_i(eta) = log p(y_i | eta, theta) + log N(eta; 0, Omega),   H_i = -d2 h_i / d eta2,

with ``eta_i*`` the mode of ``h_i``: damped Newton steps, all patients at once (the Hessian is
block diagonal, one ``d x d`` block per patient: ``d`` forward-over-reverse passes of the fit's
JAX likelihood give every block). The gradient in ``theta`` is exact for the approximation: the
implicit function theorem through the mode, and autodiff of ``log det H_i``.

The approximate posterior of ``theta`` (thetas, omegas, residual SDs) is the spec's prior times
that marginal. :func:`laplace_fit` finds its mode on the unconstrained scale (log for positive
parameters; ``log(1 + PSI)`` under ``synergy = "kio_m"``, the spec's parametrisation) with
L-BFGS, takes the Hessian there by central differences of the gradient, and draws from the
Gaussian on the unconstrained scale, transformed back. With ``importance=True`` the draws are
reweighted to the Laplace-marginal posterior (Pareto-smoothed importance sampling; ``k_hat``
reported) and resampled. With ``eta_draws = k`` each patient's marginal is importance sampled
from the Laplace proposal instead (:func:`importance_rows`). Neither variant is within 0.25
posterior SD of NUTS on OAK or the triplet recovery fit (docs/fitting.md): use NUTS for
inference.

    from pkpd.fit.laplace import laplace_fit
    res = laplace_fit("fits/triplet_recovery.toml")
    res.summary                    # parameter, mean, sd, q5, q95, mode (approximate)
    res.p_greater("PSI", 0.0)      # P(PSI > 0 | data), approximate
"""

from __future__ import annotations

import math
import time
import types
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy import stats as jst
from jax.scipy.special import gammaln, log_ndtr

from ..errors import PkpdError, SpecError
from .expr import PriorSpec
from .spec import RESIDUAL_MODELS, Spec, load_spec

__all__ = ["LABEL", "LaplaceModel", "LaplaceResult", "importance_rows", "laplace_fit",
           "laplace_rows", "newton_modes", "proposal_draws"]

jax.config.update("jax_enable_x64", True)

#: how every result of this module is labelled
LABEL = "laplace (approximate)"
_LOG2PI = math.log(2 * math.pi)
_ALPHAS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.003, 0.0)   # damped Newton: per-row best step
_MAX_STEP = 2.0                                  # largest Newton step (Euclidean, eta units)
_JNP_OPS = types.SimpleNamespace(exp=jnp.exp, log=jnp.log, sqrt=jnp.sqrt, abs=jnp.abs,
                                 minimum=jnp.minimum, maximum=jnp.maximum, where=jnp.where,
                                 eq=jnp.equal, neq=jnp.not_equal)


# --------------------------------------------------------------------------------------------
# the Laplace marginal of a separable joint density h(E, u) -> (n,)
# --------------------------------------------------------------------------------------------
def _grad_hess(h, E, u):
    """Per-row gradient ``(n, d)`` and negative Hessian ``(n, d, d)`` of ``h(E, u)`` in ``E``
    (row ``i`` of ``h`` depends on row ``i`` of ``E`` only)."""
    def total(e):
        return jnp.sum(h(e, u))

    g, lin = jax.linearize(jax.grad(total), E)
    d = E.shape[1]
    basis = jnp.broadcast_to(jnp.eye(d)[:, None, :], (d, *E.shape))
    cols = jax.vmap(lin)(basis)                     # (d, n, d): column k of each block
    H = -jnp.moveaxis(cols, 0, -1)
    return g, 0.5 * (H + jnp.swapaxes(H, -1, -2))


def _newton_step(h, E, u, floor):
    """One damped Newton step per row: eigenvalues of H below ``floor/1e4`` (negative curvature,
    or nearly none) replaced by ``max(|w|, floor)`` (an ascent direction everywhere), the step
    shortened to :data:`_MAX_STEP`, then the best of :data:`_ALPHAS` times it (0 included: never
    worse). Returns the new rows and the largest gradient component before the step."""
    g, H = _grad_hess(h, E, u)
    w, V = jnp.linalg.eigh(H)
    w = jnp.where(w > 1e-4 * floor, w, jnp.maximum(jnp.abs(w), floor))
    step = jnp.einsum("nij,nj->ni", V, jnp.einsum("nji,nj->ni", V, g) / w)
    norm = jnp.sqrt(jnp.sum(step ** 2, axis=1, keepdims=True))
    step = step * jnp.minimum(1.0, _MAX_STEP / jnp.maximum(norm, 1e-300))   # trust region
    alphas = jnp.asarray(_ALPHAS)
    vals = jax.vmap(lambda a: h(E + a * step, u))(alphas)            # (n_alpha, n)
    vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
    best = jnp.argmax(vals, axis=0)
    return E + alphas[best][:, None] * step, jnp.max(jnp.abs(jnp.where(jnp.isfinite(g), g,
                                                                       jnp.inf)))


def newton_modes(h, u, E0, n_steps: int, floor: float = 1e-6, tol: float = 1e-9):
    """The per-row modes of ``h(., u)``: damped Newton steps from ``E0`` until every gradient
    component is below ``tol`` (then one more step), at most ``n_steps``."""
    def cond(state):
        k, _, gmax = state
        return (k < n_steps) & (gmax > tol)

    def body(state):
        k, E, _ = state
        E, gmax = _newton_step(h, E, u, floor)
        return k + 1, E, gmax

    return jax.lax.while_loop(cond, body, (0, E0, jnp.inf))[1]


def laplace_rows(h, E_star, u, curvature=None):
    """Laplace approximation ``(n,)`` of ``log integral exp h_i(eta, u) d eta`` per row, at the
    modes ``E_star``; differentiable in ``u`` (implicit function theorem through the mode:
    ``E_hat = E* + H^-1 g(E*, u)`` has the value ``E*`` and the derivative ``dE*/du``).

    ``curvature(E, u) -> (n, d, d)``: the matrix whose log determinant is used (default: the
    exact negative Hessian of ``h``; :class:`LaplaceModel` passes the expected (Fisher)
    information, which stays positive definite where the exact one nearly vanishes)."""
    E_hat, L = _tilt(h, E_star, u, curvature)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    d = E_hat.shape[1]
    return h(E_hat, u) + 0.5 * d * _LOG2PI - 0.5 * logdet


def _tilt(h, E_star, u, curvature):
    """The mode made differentiable in ``u`` (implicit function theorem) and the Cholesky factor
    of the curvature there: ``(E_hat, L)`` with ``L L^T = H``."""
    Es = jax.lax.stop_gradient(E_star)
    _, H0 = _grad_hess(h, Es, jax.lax.stop_gradient(u))
    g = jax.grad(lambda e: jnp.sum(h(e, u)))(Es)
    E_hat = Es + jnp.linalg.solve(jax.lax.stop_gradient(H0), g[..., None])[..., 0]
    H = _grad_hess(h, E_hat, u)[1] if curvature is None else curvature(E_hat, u)
    return E_hat, jnp.linalg.cholesky(H)


def proposal_draws(seed: int, k: int, n: int, d: int, df: float | None = 5.0) -> jnp.ndarray:
    """Fixed standardised proposal draws ``(2k, n, d)`` for :func:`importance_rows`: ``k``
    Student-t (``df``; standard normal for ``None``) draws per row and their mirror images
    (antithetic pairs), from ``numpy.random.default_rng(seed)``. Fixed draws make the estimate
    a smooth, deterministic function of the population parameters, so that L-BFGS and central
    differences can use it."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((k, n, d))
    if df is not None:
        z = z / np.sqrt(rng.chisquare(df, (k, n, 1)) / df)
    return jnp.asarray(np.concatenate([z, -z], axis=0))


def _std_logpdf(X, df: float | None):
    """Log density of the standardised proposal at ``X (..., d)``."""
    d = X.shape[-1]
    r2 = jnp.sum(X ** 2, axis=-1)
    if df is None:
        return -0.5 * r2 - 0.5 * d * _LOG2PI
    return (gammaln(0.5 * (df + d)) - gammaln(0.5 * df) - 0.5 * d * jnp.log(df * math.pi)
            - 0.5 * (df + d) * jnp.log1p(r2 / df))


def importance_rows(h, E_star, u, X, curvature=None, df: float | None = 5.0,
                    return_ess: bool = False):
    """Importance-sampled ``log integral exp h_i(eta, u) d eta`` per row ``(n,)``, with the
    Laplace approximation as proposal: ``eta = E_hat + L^-T x`` for the fixed standardised
    draws ``X (K, n, d)`` (:func:`proposal_draws`; Student-t by default, heavier-tailed than
    the Gaussian it replaces). This is the importance-sampling marginal of NONMEM's IMP method
    with the Laplace proposal; it converges to the exact marginal as ``K`` grows, where
    :func:`laplace_rows` keeps the error of a Gaussian patient posterior. With ``return_ess``
    also the Kish effective sample size of each row's weights (``(n,)``)."""
    E_hat, L = _tilt(h, E_star, u, curvature)
    LT = jnp.swapaxes(L, -1, -2)
    eta = E_hat + jax.vmap(
        lambda x: jax.scipy.linalg.solve_triangular(LT, x[..., None], lower=False)[..., 0])(X)
    logdet_half = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    log_q = _std_logpdf(X, df) + logdet_half                     # (K, n)
    hv = jax.vmap(lambda e: h(e, u))
    # draws where h is not finite (a prediction overflows far out in the tails) get weight 0;
    # they are evaluated at the mode instead, so that no inf reaches the gradient
    ok = jnp.isfinite(jax.lax.stop_gradient(hv(eta)))
    vals = hv(jnp.where(ok[..., None], eta, E_hat))
    lw = jnp.where(ok, vals - log_q, -jnp.inf)
    K = X.shape[0]
    out = jax.scipy.special.logsumexp(lw, axis=0) - math.log(K)
    if not return_ess:
        return out
    w = jnp.exp(lw - jnp.max(lw, axis=0))
    return out, jnp.sum(w, axis=0) ** 2 / jnp.sum(w ** 2, axis=0)


# --------------------------------------------------------------------------------------------
# priors and the unconstrained scale
# --------------------------------------------------------------------------------------------
def _logpdf(prior: PriorSpec, x):
    """Log density of ``prior`` at ``x`` (JAX)."""
    k = prior.kwargs()
    d = prior.dist
    if d == "Normal":
        return jst.norm.logpdf(x, k["mu"], k["sigma"])
    if d == "LogNormal":
        return jst.norm.logpdf(jnp.log(x), k["mu"], k["sigma"]) - jnp.log(x)
    if d == "HalfNormal":
        return math.log(2.0) + jst.norm.logpdf(x, 0.0, k["sigma"])
    if d == "HalfCauchy":
        return math.log(2.0) + jst.cauchy.logpdf(x, 0.0, k["beta"])
    if d == "Exponential":
        return math.log(k["lam"]) - k["lam"] * x
    if d == "Gamma":
        return jst.gamma.logpdf(x, k["alpha"], scale=1.0 / k["beta"])
    if d == "InvGamma":
        a, b = k["alpha"], k["beta"]
        return a * math.log(b) - gammaln(a) - (a + 1) * jnp.log(x) - b / x
    if d == "StudentT":
        return jst.t.logpdf(x, k["nu"], k["mu"], k["sigma"])
    raise AssertionError(d)


_SUPPORTED = ("Normal", "LogNormal", "HalfNormal", "HalfCauchy", "Exponential", "Gamma",
              "InvGamma", "StudentT")


@dataclass(frozen=True)
class _Coord:
    """One population parameter: its prior and its unconstrained coordinate ``u``."""

    name: str
    prior: PriorSpec
    transform: str                  # "log" (x = exp u), "identity", "log1p" (x = expm1 u)
    log_z: float = 0.0              # log prior mass kept by a truncation (log1p: PSI > -1)

    def natural(self, u):
        return {"log": jnp.exp, "identity": lambda v: v, "log1p": jnp.expm1}[self.transform](u)

    def log_density(self, u):
        """Prior density of the natural value times the Jacobian, on the ``u`` scale."""
        jac = 0.0 if self.transform == "identity" else u
        return _logpdf(self.prior, self.natural(u)) + jac - self.log_z


def _coord(name: str, prior: PriorSpec, where: str, synergy_psi: bool = False) -> _Coord:
    if prior.dist not in _SUPPORTED:
        raise SpecError(f"{where}: {name} has the prior {prior.text!r}, which the Laplace "
                        f"(approximate) mode does not support. Fix: use one of "
                        f"{', '.join(_SUPPORTED)}, or fit with NUTS")
    if synergy_psi:
        from .model import scipy_prior
        return _Coord(name, prior, "log1p", float(scipy_prior(prior).logsf(-1.0)))
    return _Coord(name, prior, "log" if prior.support == "positive" else "identity")


def _coordinates(spec: Spec) -> list[_Coord]:
    """The population parameters in :attr:`Spec.population_names` order."""
    out = [_coord(t.name, t.prior, "[theta]", spec.synergy == "kio_m" and t.name == "PSI")
           for t in spec.thetas.values()]
    for b in spec.omegas:
        if b.kind != "diag":
            raise SpecError(f"[omega]: the block {', '.join(b.etas)} is {b.kind!r}; the Laplace "
                            "(approximate) mode supports diagonal omegas only. Fix: use one "
                            "diagonal omega per eta, or fit with NUTS")
        out.append(_coord(b.names[0], b.sd_priors[0], "[omega]"))
    for role in RESIDUAL_MODELS[spec.residual.model][0]:
        out.append(_coord(spec.residual.names[role], spec.residual.priors[role], "[residual]"))
    return out


# --------------------------------------------------------------------------------------------
# the combination model's prediction, tabulated without a fallback branch
# --------------------------------------------------------------------------------------------
def _table_predict(problem):
    """``(predict, in_range)`` for a combination-model fit with fixed signal parameters: log SLD
    from the tabulated kill integrals (:mod:`pkpd.fit.kill_tables`), plain JAX, so that the
    third derivatives the Laplace gradient needs compile quickly (``Problem.predict`` carries a
    ``lax.cond`` onto the closed form, whose third derivative takes minutes to compile).
    ``in_range(P)`` is per subject: a patient whose LAMBDA leaves the table gets ``-inf``.
    None where the spec is not such a fit or the table misses its tolerance."""
    from .kill_tables import build_kill_table
    from .problem import (
        _TABLE_JAC_ORDER,
        KILL_TABLE_TOLERANCE,
        SIGNAL_PARAMETERS,
        _buckets,
        _fixed_signals,
        padded,
    )
    spec, data, extra = problem.spec, problem.data, problem.extra or {}
    if (spec.model_kind != "tumour_card" or "kill_table" not in extra
            or not all(k in spec.fixed for k in SIGNAL_PARAMETERS)):
        return None
    drivers, step = extra["drivers"], float(extra["step_day"])
    fixed = {k: float(spec.fixed[k]) for k in SIGNAL_PARAMETERS}
    t_pad = padded(data, data.obs_time)
    n_steps = drivers["chemo"].shape[1]
    need = np.minimum(np.ceil((np.max(t_pad, axis=1) + step) / step).astype(int), n_steps)
    parts = []
    for idx, length in _buckets(need, n_steps):
        dj = {k: jnp.asarray(v[idx, :length]) for k, v in drivers.items()}
        parts.append((jnp.asarray(idx), _fixed_signals(fixed, dj, step), jnp.asarray(t_pad[idx])))
    table = build_kill_table(parts, fixed["KE0C"], fixed["KV"], step, len(t_pad), t_pad.shape[1])
    if not table.max_error_logy <= KILL_TABLE_TOLERANCE:
        return None
    ix = {n: list(problem.parameters).index(n) for n in _TABLE_JAC_ORDER}
    tp = jnp.asarray(t_pad)

    def predict(P):
        j = table.integrals(P[:, ix["LAMBDA"]])
        kio = P[:, ix["KIO"]]
        k = jnp.stack([P[:, ix["KCHEMO"]], P[:, ix["KAA"]], kio, kio * P[:, ix["PSI"]]], -1)
        return jnp.exp(jnp.log(P[:, ix["BASE"]])[:, None] + P[:, ix["KG"]][:, None] * tp
                       - jnp.einsum("ijk,ik->ij", j, k))

    def in_range(P):
        x = jnp.log(P[:, ix["LAMBDA"]])
        return (x >= table.x_lo) & (x <= table.x_hi)

    return predict, in_range


# --------------------------------------------------------------------------------------------
# the model: spec + Problem -> joint density per patient, log posterior of u
# --------------------------------------------------------------------------------------------
class LaplaceModel:
    """The Laplace-marginal posterior of a spec's population parameters (set-up, no fitting).

    Parameters
    ----------
    spec, problem
        A validated :class:`~pkpd.fit.spec.Spec` and its :class:`~pkpd.fit.problem.Problem`.
    newton_steps : int
        Largest number of damped Newton steps per evaluation, from the previous modes.
    curvature : {"fisher", "hessian"}
        The matrix whose log determinant enters the approximation: the expected (Fisher)
        information of the etas (default: positive definite, no third derivatives; as the
        FOCE-I family) or the exact negative Hessian (Stan's ``laplace_marginal``; it nearly
        vanishes for a patient whose posterior is bimodal, which breaks the approximation).
    eta_draws : int
        0 (default): the Laplace marginal. ``k > 0``: each patient's marginal is importance
        sampled with ``2k`` fixed draws (``k`` Student-t draws with ``eta_df`` degrees of
        freedom and their mirror images) from the Laplace proposal (:func:`importance_rows`).
    eta_df : float or None
        Degrees of freedom of that proposal (``None``: Gaussian).
    seed : int
        Seed of the fixed proposal draws.
    """

    def __init__(self, spec: Spec, problem, newton_steps: int = 50, curvature: str = "fisher",
                 eta_draws: int = 0, eta_df: float | None = 5.0, seed: int = 0):
        self.spec, self.problem = spec, problem
        self.coords = _coordinates(spec)
        self.names = [c.name for c in self.coords]
        self.etas = list(spec.etas)
        self.n = problem.data.n_subjects
        self.newton_steps = int(newton_steps)
        if curvature not in ("fisher", "hessian"):
            raise PkpdError(f"curvature = {curvature!r} is unknown. Fix: use 'fisher' (expected "
                            "information, robust) or 'hessian' (the exact Hessian)")
        self.curvature = curvature
        if eta_draws < 0:
            raise PkpdError(f"eta_draws = {eta_draws} is negative. Fix: 0 (Laplace) or the "
                            "number of importance draws per patient, e.g. 128")
        self.eta_draws, self.eta_df = int(eta_draws), eta_df
        self._X = (proposal_draws(seed, self.eta_draws, self.n,
                                  len(self.etas), eta_df) if self.eta_draws else None)
        self._omega = {b.etas[0]: (b.names[0], b.report == "variance") for b in spec.omegas}
        roles = RESIDUAL_MODELS[spec.residual.model][0]
        self._resid = [(r, spec.residual.names[r], spec.residual.variance[r]) for r in roles]
        self._cov = {c: jnp.asarray(np.asarray(v, float))
                     for c, v in problem.data.covariates.items()}
        self._unc = problem.mask & ~problem.cens_pad
        self._cens = problem.mask & problem.cens_pad
        self._any_cens = bool(np.any(np.asarray(self._cens)))
        fast = _table_predict(problem)
        self._predict, self._in_range = fast if fast else (problem.predict, None)
        self._modes = jax.jit(self.modes)
        self._vg = jax.jit(jax.value_and_grad(self.log_posterior))
        self._value = jax.jit(self.log_posterior)

    def values(self, u) -> dict:
        """Natural-scale population parameters by name."""
        return {c.name: c.natural(u[k]) for k, c in enumerate(self.coords)}

    def log_prior(self, u):
        return sum(c.log_density(u[k]) for k, c in enumerate(self.coords))

    def _omega_sd(self, vals):
        out = []
        for e in self.etas:
            name, variance = self._omega[e]
            out.append(jnp.sqrt(vals[name]) if variance else vals[name])
        return jnp.stack(out)

    def individual(self, vals: dict, E):
        """The ``(n_subjects, n_parameters)`` matrix of individual parameters."""
        env = dict(vals)
        env.update({k: float(v) for k, v in self.spec.fixed.items()})
        env.update(self._cov)
        env.update({e: E[:, k] for k, e in enumerate(self.etas)})
        cols = []
        for p in self.problem.parameters:
            ind = self.spec.individual.get(p)
            v = ind.evaluate(env, _JNP_OPS) if ind is not None else env[p]
            cols.append(jnp.broadcast_to(jnp.asarray(v, float), (self.n,)))
        return jnp.stack(cols, axis=1)

    def loglik_rows(self, P, vals):
        """Per-patient log-likelihood ``(n,)`` (residual model and M3 censoring as
        :meth:`Problem.loglik`); ``-inf`` for a patient with a non-finite prediction."""
        pb = self.problem
        r = {role: (jnp.sqrt(vals[name]) if var else vals[name])
             for role, name, var in self._resid}
        f = self._predict(P)
        bad = jnp.any(pb.mask & ~jnp.isfinite(f), axis=1)
        if self._in_range is not None:
            bad = bad | ~self._in_range(P)
        f = jnp.where(pb.mask & jnp.isfinite(f), f, 1.0)
        sd = pb.resid_sd(f, r)
        z = (pb.y_pad - f) / sd
        lp = jnp.where(self._unc, -0.5 * z ** 2 - jnp.log(sd) - 0.5 * _LOG2PI, 0.0)
        if self._any_cens:
            lp = lp + jnp.where(self._cens, log_ndtr(jnp.where(self._cens, z, 0.0)), 0.0)
        return jnp.where(bad, -jnp.inf, jnp.sum(lp, axis=1))

    def joint_rows(self, E, u):
        """``h_i(eta_i, u) = log p(y_i | eta_i, theta) + log N(eta_i; 0, Omega)``, ``(n,)``."""
        vals = self.values(u)
        sd = self._omega_sd(vals)
        prior = jnp.sum(jst.norm.logpdf(E, 0.0, sd), axis=1)
        return self.loglik_rows(self.individual(vals, E), vals) + prior

    def modes(self, u, E0, n_steps: int):
        """The etas' modes (at most ``n_steps`` damped Newton steps from ``E0``); curvature below
        the smallest prior precision ``1/omega^2`` is raised to it (the prior alone has it)."""
        floor = jnp.min(1.0 / self._omega_sd(self.values(u)) ** 2)
        return newton_modes(self.joint_rows, u, E0, n_steps, floor)

    def fisher(self, E, u):
        """Expected information of each patient's etas, ``(n, d, d)``: ``J^T W J + Omega^-1``
        with ``J = df/deta`` (d forward passes) and, per observation, ``W = 1/sd^2 +
        2 (dsd/df)^2 / sd^2`` (normal with an SD that depends on f; censored ones counted as
        observed)."""
        vals = self.values(u)
        r = {role: (jnp.sqrt(vals[name]) if var else vals[name])
             for role, name, var in self._resid}

        def pred(e):
            return self._predict(self.individual(vals, e))

        f, lin = jax.linearize(pred, E)
        d = E.shape[1]
        J = jax.vmap(lin)(jnp.broadcast_to(jnp.eye(d)[:, None, :], (d, *E.shape)))
        f = jnp.where(self.problem.mask, f, 1.0)
        sd, dsd = jax.jvp(lambda x: self.problem.resid_sd(x, r), (f,), (jnp.ones_like(f),))
        w = jnp.where(self.problem.mask, (1.0 + 2.0 * dsd ** 2) / sd ** 2, 0.0)
        info = jnp.einsum("kno,no,lno->nkl", J, w, J)
        return info + jnp.diag(1.0 / self._omega_sd(vals) ** 2)

    def log_posterior(self, u, E_star):
        """Log prior + Laplace marginal (on the ``u`` scale), given the modes ``E_star``."""
        return self.log_prior(u) + jnp.sum(self.marginal_rows(u, E_star))

    def marginal_rows(self, u, E_star, return_ess: bool = False):
        """Each patient's approximate ``log p(y_i | theta)``: Laplace, or importance sampled
        (``eta_draws > 0``; with ``return_ess`` also the weights' effective sample sizes)."""
        curv = self.fisher if self.curvature == "fisher" else None
        if self._X is None:
            out = laplace_rows(self.joint_rows, E_star, u, curv)
            return (out, jnp.full(out.shape, jnp.nan)) if return_ess else out
        return importance_rows(self.joint_rows, E_star, u, self._X, curv, self.eta_df,
                               return_ess)

    def bounds(self) -> list[tuple[float, float]]:
        """Box on ``u`` for the optimiser: each prior's 1e-8 and 1 - 1e-8 quantiles (keeps the
        line search out of regions where every prediction fails)."""
        from .model import scipy_prior
        out = []
        for c in self.coords:
            lo, hi = scipy_prior(c.prior).ppf([1e-8, 1 - 1e-8])
            f = {"log": np.log, "identity": float, "log1p": np.log1p}[c.transform]
            lo = max(lo, -1 + 1e-8) if c.transform == "log1p" else lo
            out.append((float(f(max(lo, 1e-300)) if c.transform == "log" else f(lo)),
                        float(f(hi))))
        return out

    def start(self) -> np.ndarray:
        """Initial ``u``: the spec's init values, else the prior medians."""
        from .model import scipy_prior
        inits = {t.name: t.init for t in self.spec.thetas.values() if t.init is not None}
        inits.update({b.names[0]: b.init for b in self.spec.omegas if b.init is not None})
        inits.update({self.spec.residual.names[r]: v
                      for r, v in self.spec.residual.init.items()})
        u = []
        for c in self.coords:
            x = inits.get(c.name)
            if x is None:
                x = float(scipy_prior(c.prior).median())
                if c.transform == "log1p":
                    x = max(x, -0.5)
            u.append({"log": math.log, "identity": float, "log1p": math.log1p}[c.transform](x))
        return np.asarray(u, float)


# --------------------------------------------------------------------------------------------
# the fit: mode, Hessian, draws
# --------------------------------------------------------------------------------------------
@dataclass
class LaplaceResult:
    """An approximate posterior (``method = "laplace (approximate)"``).

    Attributes
    ----------
    summary : DataFrame
        parameter, mean, sd, q5, q95 (of the draws) and mode, per population parameter.
    draws : DataFrame
        One column per population parameter (natural scale), one row per draw.
    record : dict
        method, timings (s), optimiser and Newton convergence, importance-sampling k_hat.
    eta : ndarray
        ``(n_subjects, n_etas)`` modes of the etas at the posterior mode.
    """

    summary: pd.DataFrame
    draws: pd.DataFrame
    record: dict
    eta: np.ndarray
    method: str = LABEL
    mode: dict = field(default_factory=dict)

    def p_greater(self, name: str, threshold: float) -> float:
        """Approximate posterior probability that ``name`` exceeds ``threshold``."""
        if name not in self.draws.columns:
            raise PkpdError(f"{name!r} is not a population parameter of this fit. Fix: use one "
                            f"of {', '.join(self.draws.columns)}")
        return float(np.mean(self.draws[name].to_numpy() > threshold))

    def __repr__(self) -> str:
        return (f"LaplaceResult({self.record.get('name')!r}, {LABEL}, "
                f"{len(self.draws)} draws, fit {self.record['timing_s']['fit']:.1f} s)")


class _Objective:
    """-log posterior and its gradient for scipy, the modes warm-started between calls."""

    def __init__(self, model: LaplaceModel):
        self.model = model
        self.E = jnp.zeros((model.n, len(model.etas)))
        self.calls = 0
        self.failed = 0                 # evaluations with a non-finite value or gradient

    def modes(self, u, long: bool = False):
        """The etas' modes at ``u`` from the last accepted modes (not stored)."""
        n = 200 if long else self.model.newton_steps
        return self.model._modes(jnp.asarray(u), self.E, n)

    def __call__(self, u):
        self.calls += 1
        E = self.modes(u)
        v, g = self.model._vg(jnp.asarray(u), E)
        v, g = float(v), np.asarray(g, float)
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            self.failed += 1
            return 1e30, np.zeros_like(g)
        self.E = E                       # warm start for the next call
        return -v, -g


def _hessian(obj: _Objective, u: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Negative Hessian of the log posterior at ``u``: central differences of the gradient."""
    E0 = obj.E
    k = len(u)
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = step
        obj.E = E0
        gp = obj(u + e)[1]
        obj.E = E0
        gm = obj(u - e)[1]
        H[:, j] = (gp - gm) / (2 * step)
    obj.E = E0
    return 0.5 * (H + H.T)


def _psis(logw: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed normalised importance weights and k_hat (arviz)."""
    import arviz as az
    lw, k = az.psislw(np.asarray(logw, float).copy())
    return np.exp(lw - np.max(lw)) / np.sum(np.exp(lw - np.max(lw))), float(k)


def laplace_fit(spec, data=None, *, draws: int = 2000, seed: int = 0,
                importance: bool = False, importance_draws: int = 500,
                newton_steps: int = 50, curvature: str = "fisher", eta_draws: int = 0,
                eta_df: float | None = 5.0, problem=None,
                progress: bool = False) -> LaplaceResult:
    """Fit a spec by the Laplace (approximate) mode; see the module docstring.

    Parameters
    ----------
    spec : Spec or path
        The fit spec (diagonal omegas; priors among ``Normal, LogNormal, HalfNormal, ...``).
    data : FitData, optional
        The data (default: the spec's data, simulated for ``format = "simulate"``).
    draws : int
        Draws of the population parameters returned (from the Gaussian on the unconstrained
        scale, or resampled from the importance-weighted ones).
    importance : bool
        Reweight ``importance_draws`` Gaussian draws to the Laplace-marginal posterior (PSIS)
        and resample ``draws`` from them; ``record["k_hat"]`` > 0.7 means the Gaussian is poor.
    newton_steps : int
        Largest number of Newton steps per evaluation (warm-started from the previous modes).
    curvature : {"fisher", "hessian"}
        See :class:`LaplaceModel`.
    eta_draws, eta_df : int, float or None
        0: the Laplace marginal per patient. ``k > 0``: importance-sampled per-patient marginals
        (``2k`` fixed Student-t draws, ``eta_df`` degrees of freedom, from the Laplace
        proposal); ``record["marginal"]`` gives the smallest and median effective sample
        size of those weights at the mode. See :class:`LaplaceModel`.
    problem : Problem, optional
        A built likelihood (skips building it; ``data`` must then be its data).

    Returns
    -------
    LaplaceResult
    """
    t0 = time.perf_counter()
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    if problem is None:
        from .problem import build_problem
        if data is None:
            from .data import read_fit_data
            from .recovery import simulate_data
            data = simulate_data(spec) if spec.data.format == "simulate" else read_fit_data(spec)
        problem = build_problem(spec, data)
    model = LaplaceModel(spec, problem, newton_steps, curvature, eta_draws, eta_df, seed)
    obj = _Objective(model)
    u0 = model.start()
    obj.E = obj.modes(u0, long=True)
    if obj(u0)[0] >= 1e30:                                             # (compiles)
        start = {n: round(float(c.natural(x)), 6) for n, c, x in zip(model.names, model.coords,
                                                                     u0, strict=True)}
        raise PkpdError(f"{LABEL}: the log posterior is not finite at the start {start}. Fix: "
                        "give [theta] init values closer to the data")
    t1 = time.perf_counter()
    opt = _maximise(obj, u0, model.bounds())
    u = np.asarray(opt.x)
    E = obj.E = obj.modes(u, long=True)
    g_eta, _ = _grad_hess(model.joint_rows, E, jnp.asarray(u))
    H = _hessian(obj, u)
    t2 = time.perf_counter()
    rec = {"name": spec.name, "method": LABEL, "curvature": curvature, "n_subjects": model.n,
           "marginal": _marginal_record(model, u, E),
           "optimizer": {"success": bool(opt.success), "message": str(opt.message),
                         "iterations": int(opt.nit), "evaluations": obj.calls,
                         "failed_evaluations": obj.failed, "restarts": opt.restarts,
                         "grad_norm": float(np.max(np.abs(opt.jac)))},
           "eta_grad_max": float(jnp.max(jnp.abs(g_eta))),
           "log_posterior_mode": float(-opt.fun)}
    dr, k_hat = _draws(model, obj, u, H, draws, seed, importance, importance_draws)
    t3 = time.perf_counter()
    rec["timing_s"] = {"setup": t1 - t0, "optimise": t2 - t1, "draws": t3 - t2,
                       "fit": t3 - t1, "total": t3 - t0}
    if k_hat is not None:
        rec["k_hat"] = k_hat
    mode = {c.name: float(c.natural(u[k])) for k, c in enumerate(model.coords)}
    if progress:
        print(f"{LABEL}: {spec.name} in {rec['timing_s']['fit']:.1f} s "
              f"(+ {rec['timing_s']['setup']:.1f} s set-up)")
    return LaplaceResult(_summary(dr, mode), dr, rec, np.asarray(E), LABEL, mode)


def _marginal_record(model: LaplaceModel, u, E) -> dict:
    """How the per-patient marginals were approximated, with the importance weights' effective
    sample sizes at the mode (smallest, median; of ``2k`` draws)."""
    if not model.eta_draws:
        return {"kind": "laplace"}
    # one compiled call (op by op, the vmapped proposal draws take tens of seconds)
    _, ess = jax.jit(lambda v, e: model.marginal_rows(v, e, return_ess=True))(jnp.asarray(u), E)
    ess = np.asarray(ess)
    return {"kind": "importance", "draws_per_patient": 2 * model.eta_draws,
            "df": model.eta_df, "ess_min": float(np.min(ess)),
            "ess_median": float(np.median(ess)),
            "worst_subject": str(model.problem.data.subjects[int(np.argmin(ess))])}


def _maximise(obj: _Objective, u0: np.ndarray, bounds, tol: float = 1e-3, restarts: int = 4):
    """L-BFGS-B on -log posterior, in coordinates scaled by the curvature at the start
    (``1/sqrt|H_kk|`` from central differences: the first step is then about right), restarted
    from where it stopped while the largest gradient component exceeds ``tol``."""
    from scipy.optimize import minimize
    h = np.abs(np.diag(_hessian(obj, u0)))
    s = 1.0 / np.sqrt(np.where(np.isfinite(h) & (h > 1e-8), h, 1.0))

    def scaled(z):
        f, g = obj(u0 + s * z)
        return f, g * s

    box = [((lo - a) / k, (hi - a) / k) for (lo, hi), a, k in zip(bounds, u0, s, strict=True)]
    z = np.zeros_like(u0)
    for k in range(restarts + 1):  # noqa: B007 - k is reported
        opt = minimize(scaled, z, jac=True, method="L-BFGS-B", bounds=box,
                       options={"maxiter": 1000, "gtol": tol / 10, "ftol": 1e-14})
        z = opt.x
        if np.max(np.abs(opt.jac / s)) < tol:
            break
    opt.x, opt.jac, opt.restarts = u0 + s * z, opt.jac / s, k
    return opt


def _draws(model, obj, u, H, n, seed, importance, n_is):
    """Draws (natural scale) from the Gaussian at the mode, optionally PSIS-reweighted."""
    rng = np.random.default_rng(seed)
    w, V = np.linalg.eigh(H)
    if np.min(w) <= 0:
        raise PkpdError(f"{LABEL}: the Hessian of the log posterior at the mode is not "
                        f"positive definite (smallest eigenvalue {np.min(w):.3g}); the mode "
                        "was not found or a parameter is not identified. Fix: fit with NUTS")
    L = V / np.sqrt(w)                                  # cov = L L^T = H^-1
    k_hat = None
    if importance:
        z = rng.standard_normal((n_is, len(u)))
        U = u + z @ L.T
        log_q = -0.5 * np.sum(z ** 2, axis=1)
        log_p = np.empty(n_is)
        for s in range(n_is):
            E = obj.modes(U[s], long=True)
            log_p[s] = float(model._value(jnp.asarray(U[s]), E))
        log_p = np.where(np.isfinite(log_p), log_p, -np.inf)
        wts, k_hat = _psis(log_p - log_q)
        U = U[rng.choice(n_is, size=n, p=wts)]
    else:
        U = u + rng.standard_normal((n, len(u))) @ L.T
    cols = {c.name: np.asarray(c.natural(jnp.asarray(U[:, k])))
            for k, c in enumerate(model.coords)}
    return pd.DataFrame(cols), k_hat


def _summary(dr: pd.DataFrame, mode: dict) -> pd.DataFrame:
    rows = []
    for name in dr.columns:
        x = dr[name].to_numpy()
        rows.append({"parameter": name, "mean": float(np.mean(x)), "sd": float(np.std(x)),
                     "q5": float(np.quantile(x, 0.05)), "q95": float(np.quantile(x, 0.95)),
                     "mode": mode[name]})
    out = pd.DataFrame(rows)
    out.attrs["method"] = LABEL
    return out
