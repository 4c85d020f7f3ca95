"""Exposure drivers on a uniform time grid: exact interval-mean concentrations of a PK card.

Tumour and biomarker models respond to exposure on a time scale of days, so pkpd drives them with
the **mean concentration over each interval of a uniform grid** (default 1 day): the interval AUC
divided by the interval length, as in the daily-AUC exposure of Hansson et al. 2013 (CPT:PSP
2:e84). For linear PK these means are exact, with no ODE solver:

* the state at the end of each interval is ``x_{k+1} = E x_k + sum_j U[k, j] R_j``, where
  ``E = exp(K h)`` and ``R_j`` is the end-of-interval response to one *piece type* ``j``: a bolus
  at offset ``a`` into compartment ``c``, or a unit-rate infusion over ``[a, b]`` within the
  interval;
* the interval AUC is ``c' (P1 x_k + sum_j U[k, j] S_j)`` with ``P1 = int_0^h exp(K s) ds`` and
  the pieces' own AUC contributions ``S_j`` (which use ``P2 = int_0^h (h - s) exp(K s) ds``).

Matrix functions of 1- and 2-state systems use their (real) eigenvalues through Sylvester's
formula with divided differences, so everything is elementwise and vectorises over patients;
larger time-invariant systems use one block matrix exponential per patient and piece type.

Time-varying clearance (:class:`~pkpd.pk.NonlinearCompartment` with ``time_varying=True`` and no
Michaelis-Menten term) is handled by freezing CL at each interval's midpoint, a second-order
approximation tested against the ODE path of :mod:`pkpd.pk.engine`: for the durvalumab card the
interval means of the typical patient differ by at most 5.3e-5 (relative) on a 1-day grid,
1.2e-5 on a 0.5-day grid and 2.3e-6 on a 0.25-day grid; across the card's IIV (faster CL change)
the 1-day grid reached 9.5e-5 in ``bench/simulate.py``. Michaelis-Menten models are refused.

Doses come from :meth:`pkpd.dosing.regimen.Regimen.doses`; every output is in the card's
concentration
unit and times are in days since time 0 (study day 1).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..cards.card import Card
from ..errors import ModelError, RegimenError
from ..pk.models import NonlinearCompartment, PKModel
from ..units import time_factor

__all__ = ["DoseInputs", "GridExposure", "dose_inputs", "dose_amounts_per_patient", "grid_means",
           "grid_concentrations", "matfuncs", "phi1", "phi2", "population_fn"]


# --------------------------------------------------------------------------------------------
# stable phi-functions: phi1(z) = (e^z - 1)/z, phi2(z) = (e^z - 1 - z)/z^2, phi3 = (phi2 - 1/2)/z
# --------------------------------------------------------------------------------------------
_SMALL = 0.1


def _series(z, start: int, n: int = 9):
    # sum_{k>=0} z^k / (k + start)!
    out = jnp.zeros_like(z)
    fact = [1.0]
    for i in range(1, n + start + 1):
        fact.append(fact[-1] * i)
    for k in reversed(range(n)):
        out = out * z + 1.0 / fact[k + start]
    return out


def phi1(z):
    """``(exp(z) - 1) / z`` with the limit 1 at 0; safe values and gradients everywhere."""
    z = jnp.asarray(z, dtype=float)
    small = jnp.abs(z) < _SMALL
    zs = jnp.where(small, 1.0, z)
    return jnp.where(small, _series(z, 1), jnp.expm1(zs) / zs)


def phi2(z):
    """``(exp(z) - 1 - z) / z**2`` with the limit 1/2 at 0."""
    z = jnp.asarray(z, dtype=float)
    small = jnp.abs(z) < _SMALL
    zs = jnp.where(small, 1.0, z)
    return jnp.where(small, _series(z, 2), (jnp.expm1(zs) / zs - 1.0) / zs)


def _scalar_funcs(mu, L):
    """exp(mu L), int_0^L exp(mu s) ds = L phi1(mu L), int_0^L (L - s) exp(mu s) ds = L^2 phi2."""
    z = mu * L
    small = jnp.abs(z) < _SMALL
    zs = jnp.where(small, 1.0, z)
    q = jnp.expm1(zs) / zs
    p1 = jnp.where(small, _series(z, 1), q)
    p2 = jnp.where(small, _series(z, 2), (q - 1.0) / zs)
    return jnp.exp(z), L * p1, L * L * p2


def matfuncs(K, L):
    """``(exp(K L), int_0^L exp(K s) ds, int_0^L (L - s) exp(K s) ds)`` for a square ``K``.

    1x1 and 2x2 (real-spectrum, e.g. compartmental) matrices use eigenvalues and divided
    differences, elementwise; larger ones use the block-triangular matrix exponential (Van Loan).
    """
    n = K.shape[-1]
    if n == 1:
        return tuple(x[..., None, None] for x in _scalar_funcs(K[..., 0, 0], L))
    if n == 2:
        m = 0.5 * (K[..., 0, 0] + K[..., 1, 1])
        det = K[..., 0, 0] * K[..., 1, 1] - K[..., 0, 1] * K[..., 1, 0]
        # half-gap of the eigenvalues, floored at delta = 1e-7 |m|: a repeated eigenvalue (e.g.
        # KA = CL/V) then costs about 1e-9 relative, and values and gradients stay finite
        delta2 = (1e-7 * m) ** 2 + 1e-300
        d = jnp.sqrt(jnp.maximum(m * m - det, 0.0) + delta2)
        mu1, mu2 = m + d, m - d
        f1 = _scalar_funcs(mu1, L)
        f2 = _scalar_funcs(mu2, L)
        eye = jnp.eye(2)
        out = []
        for a, b in zip(f1, f2):
            dd = (a - b) / (2.0 * d)
            shifted = K - mu2[..., None, None] * eye
            out.append(b[..., None, None] * eye + dd[..., None, None] * shifted)
        return tuple(out)
    z = jnp.zeros_like(K)
    eye = jnp.broadcast_to(jnp.eye(n), K.shape)
    top = jnp.concatenate([K * L, eye * L, z], axis=-1)
    mid = jnp.concatenate([z, z, eye * L], axis=-1)
    bot = jnp.concatenate([z, z, z], axis=-1)
    big = jnp.concatenate([top, mid, bot], axis=-2)
    ex = jnp.vectorize(jax.scipy.linalg.expm, signature="(k,k)->(k,k)")(big)
    return ex[..., :n, :n], ex[..., :n, n:2 * n], ex[..., :n, 2 * n:]


def _mm(A, B):
    """Batched small matrix product, elementwise (XLA's batched dot is slow for 2x2)."""
    return (A[..., :, :, None] * B[..., None, :, :]).sum(-2)


def _mv(A, x):
    return (A * x[..., None, :]).sum(-1)


# --------------------------------------------------------------------------------------------
# dose inputs on the grid
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DoseInputs:
    """Doses of one regimen laid on a uniform grid (shared by every patient of a population).

    ``types`` are the distinct piece types ``(kind, cmt, a_day, b_day)``: ``kind`` ``"bolus"``
    (``a == b`` = offset within the interval) or ``"infusion"`` (``[a, b]`` within the interval),
    ``cmt`` the 0-based compartment. ``amount[k, j]`` is the bolus amount (mg) or the infusion
    rate (mg per day) of type ``j`` in interval ``k``.
    """

    step_day: float
    n_steps: int
    types: tuple[tuple[str, int, float, float], ...]
    amount: np.ndarray

    @property
    def active(self) -> tuple[tuple[int, ...], ...]:
        """Intervals in which each piece type occurs (static structure for time-varying K)."""
        return tuple(tuple(int(k) for k in np.flatnonzero(self.amount[:, j]))
                     for j in range(len(self.types)))

    @property
    def horizon_day(self) -> float:
        return self.step_day * self.n_steps


def dose_inputs(card: Card, doses, n_steps: int, step_day: float = 1.0) -> DoseInputs:
    """Lay a regimen's resolved :class:`~pkpd.dosing.regimen.Doses` on a grid of ``n_steps``
    intervals."""
    types, entries = _dose_layout(card, doses, n_steps, step_day)
    amount = np.zeros((n_steps, len(types)))
    for k, j, i, div in entries:
        amount[k, j] += float(doses.amount_mg[i]) / div
    return DoseInputs(step_day=float(step_day), n_steps=int(n_steps), types=types, amount=amount)


def dose_amounts_per_patient(card: Card, doses, amounts_mg: np.ndarray, n_steps: int,
                             step_day: float = 1.0) -> tuple[DoseInputs, np.ndarray]:
    """:func:`dose_inputs` for a population on one schedule: ``amounts_mg`` is
    ``(n_patients, n_doses)`` (from :meth:`~pkpd.dosing.regimen.Regimen.doses_per_patient`).
    Returns the inputs of the schedule and the per-patient grid amounts
    ``(n_patients, n_steps, n_types)``; row ``p`` equals ``dose_inputs`` of patient ``p``."""
    amounts_mg = np.asarray(amounts_mg, dtype=float)
    if amounts_mg.ndim != 2 or amounts_mg.shape[1] != len(doses.time_day):
        raise ModelError(f"amounts_mg has shape {amounts_mg.shape}; expected (n_patients, "
                         f"{len(doses.time_day)}). Fix: one row of dose amounts per patient")
    bad = np.argwhere(~np.isfinite(amounts_mg) | (amounts_mg < 0))
    if bad.size:
        p, i = (int(x) for x in bad[0])
        raise RegimenError(f"patient {p + 1}, dose {i + 1} (day {doses.time_day[i]:g}): amount "
                           f"{amounts_mg[p, i]!r} mg is not a non-negative number. Fix: check "
                           "the regimen and the patient's covariates")
    inputs = dose_inputs(card, doses, n_steps, step_day)
    _, entries = _dose_layout(card, doses, n_steps, step_day)
    grid = np.zeros((amounts_mg.shape[0], n_steps, len(inputs.types)))
    for k, j, i, div in entries:
        grid[:, k, j] += amounts_mg[:, i] / div
    return inputs, grid


def _dose_layout(card: Card, doses, n_steps: int, step_day: float):
    """The grid types and, per grid entry, ``(step, type, dose index, divisor)``: the entry
    adds ``amount / divisor`` (1 for a bolus, the duration for an infusion's rate)."""
    if step_day <= 0 or not np.isfinite(step_day):
        raise ModelError(f"grid step {step_day!r} day must be > 0. Fix: e.g. step_day=1.0")
    cmt_of = card.dose_cmt
    horizon = n_steps * step_day
    keys: dict[tuple, int] = {}
    exact: list[tuple[str, int, float, float]] = []
    entries: list[tuple[int, int, int, float]] = []

    def add(kind, cmt, a, b, k, i, div):
        # pieces equal to 1e-9 day share a type; the first one's exact offsets are kept
        key = (kind, cmt, round(a, 9), round(b, 9))
        if key not in keys:
            keys[key] = len(keys)
            exact.append((kind, cmt, float(a), float(b)))
        entries.append((k, keys[key], i, div))

    for i, (t, amt, dur, route) in enumerate(zip(doses.time_day, doses.amount_mg,
                                                  doses.duration_day, doses.route)):
        route = str(route).upper()
        if route not in cmt_of:
            raise RegimenError(
                f"dose {i + 1} (day {t:g}): card {card.name} has no dosing compartment for "
                f"route {route}. Fix: use one of {sorted(cmt_of)}")
        cmt = cmt_of[route] - 1
        if amt < 0 or not np.isfinite(amt):
            raise RegimenError(f"dose {i + 1} (day {t:g}): amount {amt!r} mg is not a "
                               "non-negative number. Fix: check the regimen and covariates")
        if t < 0:
            raise RegimenError(f"dose {i + 1}: time {t:g} day is before time 0. Fix: doses start "
                               "at study day 1 (time 0)")
        if t >= horizon:
            continue
        if dur <= 0:
            k = min(int(np.floor(t / step_day)), n_steps - 1)
            a = t - k * step_day
            add("bolus", cmt, a, a, k, i, 1.0)
            continue
        t0, t1 = float(t), min(float(t + dur), horizon)
        k = int(np.floor(t0 / step_day))
        while t0 < t1 - 1e-12 and k < n_steps:
            end = min((k + 1) * step_day, t1)
            add("infusion", cmt, t0 - k * step_day, end - k * step_day, k, i, float(dur))
            t0 = end
            k += 1
    types = tuple(exact) or (("bolus", 0, 0.0, 0.0),)
    return types, entries


# --------------------------------------------------------------------------------------------
# the grid solve (pure JAX; vmap over patients)
# --------------------------------------------------------------------------------------------
def _check_model(model: PKModel) -> None:
    if model.linear:
        return
    if isinstance(model, NonlinearCompartment) and not model.michaelis_menten:
        if model.n_cmt > 2:
            raise ModelError(
                f"{model!r}: time-varying clearance on the grid supports at most 2 states. "
                "Fix: use pkpd.pk.engine.solve for this model")
        return
    raise ModelError(
        f"{model!r}: Michaelis-Menten elimination has no exact grid solution. Fix: use a linear "
        "or time-varying-CL card (e.g. durvalumab, not durvalumab_baverel2018), or "
        "pkpd.pk.engine.solve")


def grid_means(model: PKModel, params: Mapping, inputs: DoseInputs, amount=None, active=None):
    """Interval-mean and end-of-interval concentrations (each ``(n_steps,)``) for one patient.

    Pure JAX: ``jax.vmap`` over ``params`` (and ``amount``, the ``(n_steps, n_types)`` dose
    matrix, which defaults to ``inputs.amount``), ``jax.grad`` through everything.
    ``params`` are in the model's units (e.g. L/h); the grid is converted once here.
    """
    _check_model(model)
    f = time_factor("day", model.time_unit)
    h = inputs.step_day * f
    U = jnp.asarray(inputs.amount if amount is None else amount, dtype=float)
    active = inputs.active if active is None else active
    n = model.n_cmt
    c = model.central
    fvec = model.dose_param(params, "F", 1.0)
    tv = not model.linear

    def piece_response(E_funcs, kind, cmt, a, b):
        """End-of-interval state (..., n) and AUC (...) per unit input of one piece type."""
        if kind == "bolus":
            E, P1, _ = E_funcs(h - a * f)
            return E[..., :, cmt] * fvec[cmt], P1[..., c, cmt] * fvec[cmt]
        Ei, P1i, P2i = E_funcs((b - a) * f)
        Eo, P1o, _ = E_funcs(h - b * f)
        inside = P1i[..., :, cmt]
        # rates are per day on the grid; the model integrates per its own time unit
        r = _mv(Eo, inside) / f * fvec[cmt]
        s = (P2i[..., c, cmt] + _mv(P1o, inside)[..., c]) / f * fvec[cmt]
        return r, s

    if not tv:
        K = model.rate_matrix(params)
    else:
        t_mid = (jnp.arange(inputs.n_steps) + 0.5) * h
        K = jax.vmap(lambda t: model.rate_matrix(params, t))(t_mid)  # (n_steps, n, n)
    E, P1, _ = matfuncs(K, h)
    # inputs per interval: b_k (end-state increment) and a_k (AUC increment)
    b = jnp.zeros((inputs.n_steps, n))
    a = jnp.zeros(inputs.n_steps)
    for j, (typ, steps) in enumerate(zip(inputs.types, active)):
        if not steps:
            continue
        if tv:
            idx = np.asarray(steps)
            Kj = K[idx]
            r, s = piece_response(lambda L, Kj=Kj: matfuncs(Kj, L), *typ)
            b = b.at[idx].add(U[idx, j][:, None] * r)
            a = a.at[idx].add(U[idx, j] * s)
        else:
            r, s = piece_response(lambda L: matfuncs(K, L), *typ)
            b = b + U[:, j][:, None] * r
            a = a + U[:, j] * s
    # x_{k+1} = E_k x_k + b_k: the only sequential part
    if tv:
        def step(x, eb):
            x_new = _mv(eb[0], x) + eb[1]
            return x_new, x_new

        _, x_end = jax.lax.scan(step, jnp.zeros(n), (E, b))
    else:
        def step(x, bk):
            x_new = _mv(E, x) + bk
            return x_new, x_new

        _, x_end = jax.lax.scan(step, jnp.zeros(n), b)
    x_start = jnp.concatenate([jnp.zeros((1, n)), x_end[:-1]], axis=0)
    p1row = jnp.broadcast_to(P1[..., c, :], (inputs.n_steps, n))
    auc = (p1row * x_start).sum(-1) + a
    end = x_end[:, c]
    v = model.volume(params)
    scale = model.conc_scale / v
    return auc / h * scale, end * scale


@functools.lru_cache(maxsize=64)
def _population_fn(model, types, active, n_steps, step_day):
    shell = DoseInputs(step_day=step_day, n_steps=n_steps, types=types,
                       amount=np.zeros((n_steps, len(types))))
    return jax.jit(jax.vmap(lambda p, u: grid_means(model, p, shell, u, active),
                            in_axes=(0, None)))


def population_fn(model: PKModel, inputs: DoseInputs):
    """Jitted ``(params, amount) -> (mean, end)``, vmapped over the leading axis of ``params``
    (dose matrix shared); cached on the model and the grid structure."""
    return _population_fn(model, inputs.types, inputs.active, inputs.n_steps, inputs.step_day)


@dataclass(frozen=True)
class GridExposure:
    """Interval means and end-of-interval concentrations of one drug, ``(n_patients, n_steps)``."""

    drug: str
    unit: str
    step_day: float
    mean: np.ndarray
    end: np.ndarray

    @property
    def start_day(self) -> np.ndarray:
        return np.arange(self.mean.shape[-1]) * self.step_day


def grid_concentrations(card: Card, regimen, n_steps: int, *, step_day: float = 1.0,
                        params: Mapping[str, np.ndarray] | None = None,
                        covariates: Mapping[str, float] | None = None) -> GridExposure:
    """Interval-mean concentrations of ``regimen`` for one or many patients.

    ``params`` maps the card's parameters to arrays of individual values (e.g. from
    :meth:`Card.sample_params`); by default the typical values at ``covariates`` give one row.
    Doses are resolved once at ``covariates`` (shared by all patients).
    """
    model = card.model()
    if params is None:
        params = {k: np.array([v]) for k, v in card.typical_params(covariates).items()}
    params = {k: jnp.asarray(np.atleast_1d(np.asarray(v, float))) for k, v in params.items()}
    model.check_params(params)
    doses = regimen.doses(covariates, n_steps * step_day)
    inputs = dose_inputs(card, doses, n_steps, step_day)
    mean, end = population_fn(model, inputs)(params, jnp.asarray(inputs.amount))
    return GridExposure(drug=card.name, unit=card.conc_unit, step_day=step_day,
                        mean=np.asarray(mean), end=np.asarray(end))
