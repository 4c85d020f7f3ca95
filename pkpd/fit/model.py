"""The PyMC model of a population fit: priors and hierarchy in PyMC, the likelihood in JAX.

Population parameters (``[theta]``), the between-subject variability (non-centred:
``eta = omega * z`` or ``eta = L z`` for correlated blocks) and the residual-error parameters are
PyMC random variables. The individual structural parameters are a pytensor expression of them
and the covariates (the spec's ``[individual]`` block). They enter one JAX function, the vmapped
structural solve plus the residual likelihood, wrapped for pytensor with
:func:`pytensor.wrap_jax`; the gradient is JAX's reverse mode. Every sampler (nutpie's JAX
backend, numpyro, blackjax, PyMC's NUTS) therefore differentiates the same compiled likelihood.

Synergy (``[model] synergy = "kio_m"``, the default for a tumour card with KIO and PSI): the
sampler moves on ``log KIO`` and ``log_M``, M = KIO*(1 + PSI) the typical immune kill at full
VEGF suppression, instead of PSI (:func:`synergy_psi`); the mu-referenced eta of KIO is centred,
for the subjects on anlotinib and durvalumab, at ``mu + log(1 + PSI)``. Both are exact
reparametrisations of the same posterior (PSI truncated to PSI > -1); only the sampler's geometry
changes.

Failed solves: a non-finite prediction makes the log-likelihood ``-inf`` (a rejected proposal);
each such evaluation is counted in :data:`FAILURES` through a host callback.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .problem import Problem
from .spec import RESIDUAL_MODELS, Spec

__all__ = ["build_model", "FAILURES", "ModelInfo", "synergy_psi", "scipy_prior"]


class _Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.evaluations = 0          # log-density evaluations with a failed solve
        self.predictions = 0          # non-finite predictions in those evaluations

    def __call__(self, n_bad):
        n = np.asarray(n_bad)
        with self.lock:
            self.evaluations += int(np.sum(n > 0))
            self.predictions += int(np.sum(n))

    def reset(self):
        with self.lock:
            self.evaluations = 0
            self.predictions = 0

    def as_dict(self):
        return {"failed_evaluations": self.evaluations,
                "failed_predictions": self.predictions}


FAILURES = _Counter()


def _count_failed(n_bad):
    """Record a failed evaluation in :data:`FAILURES` from inside JAX; returns 0.0."""
    def host(n):
        FAILURES(n)
        return np.zeros(np.shape(n), np.float64)
    return jax.pure_callback(host, jax.ShapeDtypeStruct(jnp.shape(n_bad), jnp.float64), n_bad,
                             vmap_method="broadcast_all")


@dataclass
class ModelInfo:
    population: list[str]       # reported population names (posterior variables)
    etas: list[str]
    parameters: list[str]
    deterministic_pop: list[str]
    initvals: dict                # initial values given in the spec (natural scale)
    synergy: str = "kio_psi"      # the spec's [model] synergy


def _pt_ops():
    import pytensor.tensor as pt

    class Ops:
        exp = staticmethod(pt.exp)
        log = staticmethod(pt.log)
        sqrt = staticmethod(pt.sqrt)
        abs = staticmethod(pt.abs)
        minimum = staticmethod(pt.minimum)
        maximum = staticmethod(pt.maximum)
        where = staticmethod(pt.switch)
        eq = staticmethod(pt.eq)
        neq = staticmethod(pt.neq)
    return Ops


def loglik_function(problem: Problem, count_failures: bool = True):
    """The JAX function ``(P, r_vector) -> total log-likelihood`` used inside PyMC."""
    roles = problem.residual_roles
    variance = problem.spec.residual.variance

    def f(P, r):
        rd = {role: (jnp.sqrt(r[k]) if variance[role] else r[k]) for k, role in enumerate(roles)}
        total, n_bad = problem.loglik(P, rd)
        if count_failures:
            # a pure callback whose (zero) result is used, so that it is not pruned: a
            # side-effecting one (jax.debug.callback, io_callback) in the program costs about
            # 0.1 ms per evaluation on CPU even when its branch is not taken (docs/fitting.md)
            zero = jax.lax.cond(n_bad > 0, _count_failed, lambda n: jnp.zeros((), total.dtype),
                                n_bad)
            total = total + zero
        return total

    return f


def build_model(spec: Spec, problem: Problem, centered: dict | None = None):
    """Build the PyMC model; returns ``(model, ModelInfo)``.

    ``centered`` maps a mu-referenced eta to a boolean mask over subjects (True: sample
    ``phi = mu + eta`` centred; False: ``eta = omega*z`` non-centred); by default every subject
    is centred (or those with ``centered_min_obs`` observations).
    """
    centered = centered or {}
    import pymc as pm
    import pytensor.tensor as pt
    from pytensor import wrap_jax

    data = problem.data
    n = data.n_subjects
    etas = spec.etas
    coords = {"subject": data.subjects, "eta_name": etas, "param": list(problem.parameters)}
    ops = _pt_ops()
    det_pop: list[str] = []
    inits: dict[str, float] = {}
    with pm.Model(coords=coords) as model:
        env = {}
        kio_m = spec.synergy == "kio_m"
        for th in spec.thetas.values():
            if th.init is not None:
                inits[th.name] = float(th.init)
            if not (kio_m and th.name == "PSI"):
                env[th.name] = th.prior.pymc(th.name)
        shift = None
        if kio_m:
            env["PSI"] = synergy_psi(spec, env["KIO"], inits)
            shift = _vegf_shift(spec, problem, env["PSI"])
        for c, v in data.covariates.items():
            env[c] = pt.as_tensor_variable(np.asarray(v, float))
        env.update({k: pt.as_tensor_variable(float(v)) for k, v in spec.fixed.items()})
        eta_cols, sd_cols = {}, {}
        for bi, b in enumerate(spec.omegas):
            if b.kind == "diag":
                e = b.etas[0]
                if b.init is not None:
                    inits[b.names[0]] = float(b.init)
                v = b.sd_priors[0].pymc(b.names[0])
                sd = pt.sqrt(v) if b.report == "variance" else v
                if b.mu is not None:
                    # centred (mu-referenced): phi = mu + eta ~ N(mu, sd), eta = phi - mu; with
                    # centered_min_obs only for subjects with that many observations, the
                    # others non-centred (eta = sd*z): informative subjects mix best centred,
                    # sparse ones non-centred
                    mu = pt.broadcast_to(pt.as_tensor_variable(b.mu.evaluate(env, ops)), (n,))
                    if shift is not None and e in shift[0]:
                        mu = mu + shift[1]          # phi = log(KIO_i*(1 + PSI)) on a VEGF arm
                    n_obs = np.bincount(data.obs_subject, minlength=n)
                    mask = np.asarray(centered.get(e, n_obs >= b.centered_min_obs), bool)
                    cen, non = np.flatnonzero(mask), np.flatnonzero(~mask)
                    eta = pt.zeros((n,))
                    if cen.size:
                        phi = pm.Normal(f"phi_{e}", mu[cen], sd, shape=cen.size)
                        eta = pt.set_subtensor(eta[cen], phi - mu[cen])
                    if non.size:
                        z = pm.Normal(f"z_{e}", 0.0, 1.0, shape=non.size)
                        eta = pt.set_subtensor(eta[non], sd * z)
                    eta_cols[e], sd_cols[e] = eta, sd
                else:
                    z = pm.Normal(f"z_{e}", 0.0, 1.0, dims="subject")
                    eta_cols[e], sd_cols[e] = sd * z, sd
            else:
                p = len(b.etas)
                dim = f"block{bi + 1}"
                model.add_coord(dim, list(b.etas))
                if b.kind == "lkj":
                    L, sds = _lkj_block(pm, pt, b, bi, det_pop)
                else:
                    L, sds = _iw_block(pm, pt, b, bi, det_pop)
                    # start at the prior's omega_p (a Flat's default start is Omega = I)
                    om = np.asarray(b.iw_omega, float)
                    inits[f"logdiag_block{bi + 1}"] = 0.5 * np.log(np.diag(om))
                    if p > 1:
                        inits[f"offdiag_block{bi + 1}"] = np.zeros(p * (p - 1) // 2)
                Z = pm.Normal(f"z_{dim}", 0.0, 1.0, dims=("subject", dim))
                E = pt.dot(Z, L.T)
                for k, e in enumerate(b.etas):
                    eta_cols[e], sd_cols[e] = E[:, k], sds[k]
                del p
        if etas:
            pm.Deterministic("eta", pt.stack([eta_cols[e] for e in etas], axis=1),
                             dims=("subject", "eta_name"))
            pm.Deterministic("omega_sd", pt.stack([sd_cols[e] for e in etas]),
                             dims="eta_name")
        env.update(eta_cols)
        cols = []
        for pname in problem.parameters:
            if pname in spec.individual:
                val = spec.individual[pname].evaluate(env, ops)
            else:
                val = env[pname]
            cols.append(pt.broadcast_to(pt.as_tensor_variable(val), (n,)))
        P = pm.Deterministic("indiv", pt.stack(cols, axis=1), dims=("subject", "param"))
        rvec = []
        for role in RESIDUAL_MODELS[spec.residual.model][0]:
            if role in spec.residual.init:
                inits[spec.residual.names[role]] = spec.residual.init[role]
            rvec.append(spec.residual.priors[role].pymc(spec.residual.names[role]))
        r = pt.stack(rvec)
        ll = wrap_jax(loglik_function(problem))(P, r)
        pm.Potential("loglik", ll)
    info = ModelInfo(spec.population_names, etas, list(problem.parameters), det_pop, inits,
                     spec.synergy)
    return model, info


def scipy_prior(prior):
    """The frozen :mod:`scipy.stats` distribution of a :class:`~pkpd.fit.expr.PriorSpec` (the
    priors of :data:`~pkpd.fit.spec.SYNERGY_PSI_PRIORS`)."""
    from scipy import stats
    k = prior.kwargs()
    make = {
        "Normal": lambda: stats.norm(k["mu"], k["sigma"]),
        "StudentT": lambda: stats.t(k["nu"], k["mu"], k["sigma"]),
        "Uniform": lambda: stats.uniform(k["lower"], k["upper"] - k["lower"]),
        "LogNormal": lambda: stats.lognorm(k["sigma"], scale=np.exp(k["mu"])),
        "HalfNormal": lambda: stats.halfnorm(scale=k["sigma"]),
        "HalfCauchy": lambda: stats.halfcauchy(scale=k["beta"]),
        "Exponential": lambda: stats.expon(scale=1.0 / k["lam"]),
        "Gamma": lambda: stats.gamma(k["alpha"], scale=1.0 / k["beta"]),
        "InvGamma": lambda: stats.invgamma(k["alpha"], scale=k["beta"]),
    }
    if prior.dist not in make:
        from ..errors import SpecError
        raise SpecError(f"prior {prior.text!r} has no scipy equivalent here. Fix: use one of "
                        f"{', '.join(make)}")
    return make[prior.dist]()


def synergy_psi(spec: Spec, kio, inits: dict):
    """PSI as ``expm1(log_M - log KIO)`` with ``log_M`` a PyMC random variable (call inside the
    model, after KIO).

    The density of ``log_M`` given KIO is the user's prior of PSI, truncated to PSI > -1 and
    normalised, times the Jacobian ``dPSI/dlog_M = 1 + PSI``: the implied prior of (KIO, PSI)
    is exactly the declared one restricted to PSI > -1, and PSI > -1 for every finite
    ``log_M``. Prior draws (``random``) are exact inverse-CDF draws of the truncated prior.
    ``inits``: a PSI initial value becomes one for ``log_M`` (with KIO's, or its prior median).
    """
    import pymc as pm
    import pytensor.tensor as pt

    from ..errors import SpecError
    prior = spec.thetas["PSI"].prior
    frozen = scipy_prior(prior)
    s_low = float(frozen.sf(-1.0))                    # prior mass above PSI = -1
    log_z = float(frozen.logsf(-1.0))

    def logp(value, k):
        x = value - pt.log(k)                         # log(1 + PSI)
        base = getattr(pm, prior.pymc_name).dist(**prior.kwargs())
        return pm.logp(base, pt.expm1(x)) - log_z + x

    def random(k, rng=None, size=None):
        psi = frozen.isf(rng.uniform(0.0, s_low, size=size))
        return np.log(k) + np.log1p(psi)

    log_m = pm.CustomDist("log_M", kio, logp=logp, random=random)
    if "PSI" in inits:
        psi0 = inits.pop("PSI")
        if not psi0 > -1:
            raise SpecError(f"[theta] PSI init = {psi0!r}: with synergy = 'kio_m' PSI > -1. "
                            "Fix: give an init above -1")
        kio0 = inits.get("KIO", float(scipy_prior(spec.thetas["KIO"].prior).median()))
        inits["log_M"] = float(np.log(kio0) + np.log1p(psi0))
    return pm.Deterministic("PSI", pt.expm1(log_m - pt.log(kio)))


def _vegf_shift(spec: Spec, problem: Problem, psi):
    """``(etas, shift)``: the mu-referenced etas of KIO's expression and, per subject,
    ``log(1 + PSI)`` for subjects whose regimen has both the VEGF inhibitor (anlotinib) and the
    PD-L1 antibody (durvalumab), else 0; or None. Centring those subjects' phi at
    ``mu + log(1 + PSI)`` makes phi the log of their own immune kill under VEGF suppression,
    which the data inform, instead of KIO_i alone."""
    import pytensor.tensor as pt
    drivers = (problem.extra or {}).get("drivers", {})
    ind = spec.individual.get("KIO")
    if "anlotinib" not in drivers or "durvalumab" not in drivers or ind is None:
        return None
    on = np.asarray(np.any(np.asarray(drivers["anlotinib"]) > 0, axis=1)
                    & np.any(np.asarray(drivers["durvalumab"]) > 0, axis=1), float)
    etas = {e for e in ind.names if e.startswith("eta_")}
    if not on.any() or not etas:
        return None
    return etas, pt.log1p(psi) * pt.as_tensor_variable(on)


def _lkj_block(pm, pt, b, bi, det_pop):
    p = len(b.etas)
    pri = b.sd_priors
    if len({x.dist for x in pri}) != 1:
        from ..errors import SpecError
        raise SpecError(f"omega block {bi + 1}: LKJ needs one SD prior family for all etas")
    args = {k: np.array([x.kwargs()[k] for x in pri]) for k in pri[0].kwargs()}
    sd_dist = getattr(pm, pri[0].dist).dist(**args, shape=p)
    chol, corr, sds = pm.LKJCholeskyCov(f"chol_block{bi + 1}", n=p, eta=b.lkj_eta,
                                        sd_dist=sd_dist, compute_corr=True)
    for k, name in enumerate(b.names):
        pm.Deterministic(name, sds[k])
        det_pop.append(name)
    for r in range(p):
        for c in range(r):
            nm = f"corr_{b.etas[r].removeprefix('eta_')}_{b.etas[c].removeprefix('eta_')}"
            pm.Deterministic(nm, corr[r, c])
    return chol, [sds[k] for k in range(p)]


def _iw_block(pm, pt, b, bi, det_pop):
    """Omega ~ inverse-Wishart(df * omega_p, df) (NONMEM NWPRI), sampled through the Cholesky
    factor L (log-diagonal and off-diagonal unconstrained) with the exact Jacobian."""
    p = len(b.etas)
    omega_p = np.asarray(b.iw_omega, float)
    df = float(b.iw_df)
    psi = df * omega_p
    tag = f"block{bi + 1}"
    log_diag = pm.Flat(f"logdiag_{tag}", shape=p)
    n_off = p * (p - 1) // 2
    off = pm.Flat(f"offdiag_{tag}", shape=n_off) if n_off else None
    L = pt.zeros((p, p))
    L = pt.set_subtensor(L[np.arange(p), np.arange(p)], pt.exp(log_diag))
    if n_off:
        rr, cc = np.tril_indices(p, -1)
        L = pt.set_subtensor(L[rr, cc], off)
    omega = pt.dot(L, L.T)
    # log IW density of Omega: -(df+p+1)/2 log|Omega| - tr(psi Omega^-1)/2 (+ const)
    from pytensor.tensor.slinalg import solve_triangular
    psi_chol = np.linalg.cholesky(psi)
    M = solve_triangular(L, psi_chol, lower=True)           # L^-1 psi^(1/2)
    logdet = 2.0 * pt.sum(log_diag)
    log_iw = -0.5 * (df + p + 1) * logdet - 0.5 * pt.sum(M ** 2)
    # Jacobian of (log_diag, off) -> L -> Omega = L L^T: 2^p prod L_ii^(p - i + 1) * prod L_ii
    i1 = np.arange(1, p + 1)
    log_jac = p * np.log(2.0) + pt.sum((p - i1 + 2) * log_diag)
    pm.Potential(f"invwishart_{tag}", log_iw + log_jac)
    rr, cc = np.tril_indices(p)
    for k, name in enumerate(b.names):
        pm.Deterministic(name, omega[rr[k], cc[k]])
        det_pop.append(name)
    return L, [pt.sqrt(omega[k, k]) for k in range(p)]
