"""The cheap exact likelihood of the combination model: tabulated kill integrals.

When the drug-signal parameters are fixed (``KV, KE0C, IC50A, HILLA, IMAXA, EC50D``: the
sequential PK/PD fits), the VEGF suppression ``U``, PD-L1 engagement ``O`` and chemotherapy
biophase ``B`` of every patient are fixed functions of time, and log SLD is **linear in the kill
rates**::

    log y(t) = log BASE + KG t - KCHEMO J_C(t) - KAA J_A(t) - KIO J_IO(t) - KIO PSI J_S(t)

with ``J_k(t; LAMBDA) = int_0^t exp(-LAMBDA s) D_k(s) ds`` and the drug inputs ``D_C = B``,
``D_A = U``, ``D_IO = O``, ``D_S = O U`` (:mod:`pkpd.tumour.combination`). Only ``LAMBDA``
enters non-linearly. So each observation's four integrals are tabulated once, before sampling,
as functions of ``x = log LAMBDA``: piecewise Chebyshev series (``n_panels`` panels of equal
width on ``[log lambda_lo, log lambda_hi]``, ``degree + 1`` coefficients each), fitted at
Chebyshev nodes to the exact closed form of :func:`pkpd.tumour.combination.solve_grid`
(the same interval formulas, with one kill rate set to 1). A log-density evaluation then costs,
per observation, one panel look-up and four short Clenshaw sums instead of a pass over every
grid day, and the gradient in ``LAMBDA`` is the derivative of the series.

Exactness. The series is analytic in ``x``; with the default table (``LAMBDA`` in
``[1e-5, 5]`` per day, 24 panels of degree 10) the largest error in ``log y`` over the fit's
observations is measured when the table is built (``KillTable.max_error``, at random points of
every panel against the closed form) and must be below ``tolerance`` (1e-9), else the
likelihood keeps the closed form. A patient whose ``LAMBDA`` leaves the tabulated range (the
sampler's early warm-up can go anywhere) makes that evaluation use the closed form for everyone
(``jax.lax.cond``): the likelihood is exact at every point, the table only makes it cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KillTable", "build_kill_table", "component_integrals", "COMPONENTS"]

#: the kill-rate multipliers of J_C, J_A, J_IO and J_S, in this order
COMPONENTS = ("KCHEMO", "KAA", "KIO", "KIO*PSI")


@dataclass
class KillTable:
    """Chebyshev coefficients of every observation's kill integrals in ``x = log LAMBDA``.

    ``coefs`` has one row per (subject, padded observation, panel), in that order, holding
    ``(8, degree + 1)`` coefficients flattened: rows 0-3 are ``J`` of the four
    :data:`COMPONENTS`, 4-7 their derivatives ``dJ/dx``. Each evaluation gathers one contiguous
    row per observation (the subject's panel).
    """

    coefs: jnp.ndarray          # (n_subjects * n_obs * n_panels, 8 * (degree + 1))
    n_subjects: int
    n_obs: int
    x_lo: float
    x_hi: float
    n_panels: int
    degree: int
    max_error: float            # largest |error| in J found at the check points (J units: day)
    max_error_logy: float       # bound on the error in log y (see build_kill_table)
    lam_range: tuple = (np.nan, np.nan)    # the tabulated LAMBDA range (1/day), as asked

    @property
    def width(self) -> float:
        return (self.x_hi - self.x_lo) / self.n_panels

    def in_range(self, lam):
        x = jnp.log(lam)
        return jnp.all((x >= self.x_lo) & (x <= self.x_hi))

    def integrals(self, lam):
        """``J`` at every padded observation, ``(n_subjects, n_obs, 4)``, for per-subject
        ``lam`` ``(n_subjects,)`` inside the table's range."""
        return self.both(lam)[0]

    def both(self, lam):
        """``(J, dJ/dx)``, each ``(n_subjects, n_obs, 4)``."""
        x = jnp.log(lam)
        w = self.width
        p = jnp.clip(jnp.floor((x - self.x_lo) / w), 0, self.n_panels - 1).astype(int)
        u = 2.0 * (x - self.x_lo - p * w) / w - 1.0
        obs = jnp.arange(self.n_subjects * self.n_obs).reshape(self.n_subjects, self.n_obs)
        rows = obs * self.n_panels + p[:, None]
        c = jnp.take(self.coefs, rows.ravel(), axis=0).reshape(
            self.n_subjects, self.n_obs, 8, self.degree + 1)
        both = _clenshaw(c, u[:, None, None])
        return both[..., :4], both[..., 4:]


def _clenshaw(c, u):
    """Sum of ``c[..., k] T_k(u)`` (Chebyshev polynomials of the first kind)."""
    n = c.shape[-1]
    b1 = jnp.zeros(c.shape[:-1])
    b2 = jnp.zeros(c.shape[:-1])
    for k in range(n - 1, 0, -1):
        b1, b2 = 2.0 * u * b1 - b2 + c[..., k], b1
    return u * b1 - b2 + c[..., 0]


def _component_coefs(sig):
    """``(c0, c1, c2)`` per component (rows of :data:`COMPONENTS`), each ``(4, n_steps)``:
    :func:`pkpd.tumour.combination._coefs` with one kill rate set to 1."""
    S, O, E, U, B = sig["S"], sig["O"], sig["E"], sig["U"], sig["B"]
    z = jnp.zeros_like(S)
    c0 = jnp.stack([E, S, O, O * S])
    c1 = jnp.stack([B - E, z, z, z])
    c2 = jnp.stack([z, U - S, z, O * (U - S)])
    return c0, c1, c2


def component_integrals(sig, times, lam, ke0c: float, kv: float, step: float):
    """The closed form: ``J`` ``(len(times), 4)`` for one patient (signals ``sig`` on the grid,
    as :func:`pkpd.fit.problem._fixed_signals` gives them) at ``times`` (days) and ``lam``.

    The same interval formulas as :func:`pkpd.tumour.combination.solve_grid`: ``J`` is minus the
    log-size change with ``BASE = 1``, ``KG = 0`` and that component's kill rate 1. Times before
    the first dose give 0.
    """
    from ..tumour.drivers import phi1
    c0, c1, c2 = _component_coefs(sig)
    n = c0.shape[-1]
    tk = jnp.arange(n) * step

    def kill(t0, a0, a1, a2, tau):
        return jnp.exp(-lam * t0) * (a0 * tau * phi1(-lam * tau)
                                     + a1 * tau * phi1(-(lam + ke0c) * tau)
                                     + a2 * tau * phi1(-(lam + kv) * tau))

    inc = kill(tk, c0, c1, c2, step)                                 # (4, n)
    cum = jnp.concatenate([jnp.zeros((4, 1)), jnp.cumsum(inc, axis=1)[:, :-1]], axis=1)
    times = jnp.asarray(times, float)
    k = jnp.clip(jnp.floor(times / step).astype(int), 0, n - 1)
    tau = jnp.clip(times - k * step, 0.0, None)
    j = cum[:, k] + kill(tk[k], c0[:, k], c1[:, k], c2[:, k], tau)   # (4, n_times)
    return jnp.where(times[None, :] < 0, 0.0, j).T


def _nodes(x_lo: float, x_hi: float, n_panels: int, degree: int) -> np.ndarray:
    """Chebyshev nodes of every panel, ``(n_panels, degree + 1)``, in ``x``."""
    m = degree + 1
    u = np.cos(np.pi * (np.arange(m) + 0.5) / m)
    w = (x_hi - x_lo) / n_panels
    lo = x_lo + w * np.arange(n_panels)
    return lo[:, None] + (u[None, :] + 1.0) * w / 2.0


def _fit_coefs(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients from values at the nodes (last axis), by the discrete cosine sum."""
    m = values.shape[-1]
    j = np.arange(m)
    cos = np.cos(np.pi * np.outer(np.arange(m), j + 0.5) / m)     # (k, j)
    c = (2.0 / m) * np.einsum("...j,kj->...k", values, cos)
    c[..., 0] *= 0.5
    return c


def _derivative(c: np.ndarray) -> np.ndarray:
    """Coefficients of the derivative of a Chebyshev series (last axis), same length."""
    n = c.shape[-1]
    d = np.zeros_like(c)
    for k in range(n - 1, 0, -1):
        d[..., k - 1] = 2 * k * c[..., k] + (d[..., k + 1] if k + 1 < n else 0.0)
    d[..., 0] *= 0.5
    return d


def _integrals_at(parts, ke0c, kv, step, lam_matrix, n_subjects, n_obs):
    """Closed-form ``J`` for every subject at each column of ``lam_matrix`` ``(n_subjects, L)``:
    ``(n_subjects, n_obs, 4, L)``."""
    out = np.zeros((n_subjects, n_obs, 4, lam_matrix.shape[1]))

    def one(sig, t, lams):
        return jax.vmap(lambda lam: component_integrals(sig, t, lam, ke0c, kv, step),
                        out_axes=-1)(lams)

    f = jax.jit(jax.vmap(one))
    for idx, sig, t in parts:
        idx = np.asarray(idx)
        out[idx] = np.asarray(f(sig, t, jnp.asarray(lam_matrix[idx])))
    return out


def build_kill_table(parts, ke0c: float, kv: float, step: float, n_subjects: int, n_obs: int,
                     lam_range=(1e-5, 5.0), n_panels: int = 24, degree: int = 10,
                     k_max: float = 1.0, seed: int = 0) -> KillTable:
    """Tabulate every observation's kill integrals (see the module docstring).

    ``parts`` are the likelihood's subject buckets ``(subject indices, signals, padded times)``.
    ``k_max`` (1/day) scales the reported ``max_error_logy``: the bound ``4 k_max max|dJ|`` on
    the error in ``log y`` for kill rates (and ``KIO PSI``) up to ``k_max`` in absolute value.
    The error is measured at ``2 n_panels`` random points (one shared ``LAMBDA`` per check, every
    subject and observation).
    """
    x_lo, x_hi = float(np.log(lam_range[0])), float(np.log(lam_range[1]))
    nodes = _nodes(x_lo, x_hi, n_panels, degree)                     # (P, m)
    lam = np.broadcast_to(np.exp(nodes.ravel()), (n_subjects, nodes.size))
    vals = _integrals_at(parts, ke0c, kv, step, lam, n_subjects, n_obs)
    vals = vals.reshape(n_subjects, n_obs, 4, n_panels, degree + 1)
    coefs = _fit_coefs(vals)                                         # (s, o, 4, P, m)
    deriv = _derivative(coefs) * (2.0 / ((x_hi - x_lo) / n_panels))      # d/du -> d/dx
    rows = np.moveaxis(np.concatenate([coefs, deriv], axis=2), 3, 2)      # (s, o, P, 8, m)
    table = KillTable(jnp.asarray(rows.reshape(-1, 8 * (degree + 1))), n_subjects, n_obs,
                      x_lo, x_hi, n_panels, degree, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(x_lo, x_hi, size=2 * n_panels)
    check = _integrals_at(parts, ke0c, kv, step,
                          np.broadcast_to(np.exp(xs), (n_subjects, xs.size)), n_subjects, n_obs)
    err = 0.0
    for i, x in enumerate(xs):
        approx = np.asarray(table.integrals(jnp.full(n_subjects, np.exp(x))))
        err = max(err, float(np.max(np.abs(approx - check[..., i]))))
    table.lam_range = (float(lam_range[0]), float(lam_range[1]))
    table.max_error = err
    table.max_error_logy = 4 * err * float(k_max)    # |sum_k K_k dJ_k| with every |K_k| <= k_max
    return table
