"""Classical tumour-growth-inhibition (TGI) models for the sum of longest diameters (SLD).

Every model is a small frozen class with

* ``size(t, params, ...)``: the closed-form SLD (mm) at an array of times ``t`` (days),
  never negative;
* ``rhs(t, y, params, ...)``: the right-hand side of the ODE the closed form solves, for an ODE
  reference (``initial_state(params)`` gives the state at ``t = 0`` and ``observe(state)`` the
  SLD);
* ``check(params, ...)``: validation of concrete (Python / NumPy) values, raising
  :class:`~pkpd.errors.ModelError` with the parameter, the value and the fix. ``size`` calls it;
  traced values (under ``jit`` / ``vmap`` / ``grad``) are not checked.

Parameters are a ``dict`` of floats or JAX arrays keyed by the names in ``model.parameters``
(extra keys are ignored), so ``jax.jit``, ``jax.vmap`` and ``jax.grad`` work through ``size``
and ``rhs``. Time is in days from the start of treatment (``t = 0``); SLD in mm; rates per day.
:data:`TGI_MODELS` lists the models with parameter units and one-line equations
(:func:`list_models`). See docs/tgi_library.md.

Drug input. ``exposure`` is a constant exposure ``E`` (dose level, or 1/0 for on/off) acting
from ``t = 0``. ``doses`` is a :class:`Doses` (bolus times in days >= 0, amounts in mg) into a
K-PD biophase ``dA/dt = -KP*A`` whose elimination flux ``KP*A`` (mg/day) is the exposure
(Claret 2009; Bruno 2012). In ``rhs`` the biophase amounts are states and the boluses are jumps
the integrator applies (``dose_state_index(drug)``). Pad dose arrays with amount 0 at time 0.

Numerics. The exposure integrals ``int_0^t E(s) exp(-lam s) ds`` are written with
``phi1(x) = expm1(x)/x``; near ``x = 0`` (``lam -> 0``, ``KP + lam -> 0``) a Taylor series is
used, selected with the "double where" so values and gradients stay finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np

from ..errors import ModelError, format_problem

__all__ = [
    "Doses",
    "as_doses",
    "cycle_doses",
    "phi1",
    "TGIModel",
    "Exponential",
    "Logistic",
    "Gompertz",
    "VonBertalanffy",
    "SteinFojo",
    "Claret",
    "ClaretKPD",
    "BrunoKPD",
    "TwoPopulation",
    "TGI_MODELS",
    "get_model",
    "list_models",
    "BRUNO_2012",
    "BRUNO_2012_SOURCE",
    "bruno_2012_params",
    "bruno_2012_doses",
]

Params = Mapping[str, Any]

# |x| below which phi1 uses its Taylor series. Truncation after x^6/7! leaves < 2e-16 relative
# error at |x| = 1e-2; above it, expm1(x)/x and its derivative lose at most ~eps/|x| ~ 1e-14.
_SERIES_X = 1e-2


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def phi1(x):
    """``(exp(x) - 1) / x``, equal to 1 at ``x = 0``; finite value and gradient everywhere."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SERIES_X
    xs = jnp.where(small, 1.0, x)  # "double where": the unused branch never sees x = 0
    exact = jnp.expm1(xs) / xs
    series = 1.0 + x * (1 / 2 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x * (1 / 720
                                                                         + x / 5040)))))
    return jnp.where(small, series, exact)


def _integral_exp(rate, t):
    """``int_0^t exp(-rate*s) ds = t*phi1(-rate*t)``, stable as ``rate -> 0``."""
    return t * phi1(-rate * t)


class Doses(NamedTuple):
    """Bolus doses into a K-PD biophase: ``times`` in days (>= 0), ``amounts`` in mg.

    A NamedTuple, hence a JAX pytree: it can be passed through ``jit`` and batched by ``vmap``.
    Both arrays have the same shape ``(n_doses,)``; padding entries (amount 0) are inert.
    """

    times: Any
    amounts: Any


def as_doses(doses, what: str = "doses") -> Doses:
    """Coerce ``Doses`` or a ``(times, amounts)`` pair to :class:`Doses` (float arrays)."""
    if doses is None:
        raise ModelError(format_problem(
            f"{what} are required for this K-PD model",
            fix="pass doses=Doses(times_days, amounts_mg) (use empty arrays for no doses)"))
    if isinstance(doses, Mapping):
        doses = (doses.get("times"), doses.get("amounts"))
    try:
        times, amounts = doses
    except (TypeError, ValueError):
        raise ModelError(format_problem(
            f"{what} must be Doses(times, amounts) or a (times, amounts) pair",
            value=type(doses).__name__, fix="pass Doses(times_days, amounts_mg)")) from None
    if isinstance(times, list | tuple):
        times = np.asarray(times, dtype=float)
    tc = _concrete(times)
    if tc is not None and tc.size and np.nanmin(tc) < 0:
        raise ModelError(format_problem(
            f"{what}: dose times must be >= 0 days (t = 0 is the start of treatment)",
            value=float(np.nanmin(tc)), fix="shift the time origin to the first dose"))
    times = jnp.asarray(times, dtype=float)
    amounts = jnp.asarray(amounts, dtype=float)
    if times.shape != amounts.shape:
        raise ModelError(format_problem(
            f"{what}: times and amounts must have the same shape",
            value=(times.shape, amounts.shape), fix="give one amount per dose time"))
    return Doses(times, amounts)


def cycle_doses(amount: float, offsets: Sequence[float], cycle_days: float,
                n_cycles: int, start: float = 0.0) -> Doses:
    """Boluses of ``amount`` mg at ``start + k*cycle_days + offset`` for each cycle and offset.

    Example: capecitabine twice daily on days 1-14 of 21-day cycles is
    ``offsets = 0, 0.5, ..., 13.5`` and ``cycle_days = 21``.
    """
    off = np.asarray(offsets, dtype=float)
    times = (start + cycle_days * np.arange(int(n_cycles))[:, None] + off[None, :]).ravel()
    return Doses(times, np.full(times.shape, float(amount)))


def _concrete(v):
    """A NumPy array for concrete Python/NumPy values, else None (JAX arrays, tracers)."""
    if isinstance(v, bool | int | float | np.ndarray | np.generic):
        return np.asarray(v, dtype=float)
    return None


def _bad(model: str, name: str, cond: str, value, fix: str) -> ModelError:
    v = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value
    return ModelError(format_problem(f"{model}: parameter {name} must be {cond}", value=v,
                                     fix=fix))


def _tpos(t):
    """``max(t, 0)`` with derivative 1 at ``t = 0`` (right derivative: treatment starts at 0)."""
    return jnp.where(t >= 0, t, 0.0)


def _kpd_integral(t, doses: Doses, KP, lam):
    """``int_0^t KP*A(s)*exp(-lam*s) ds`` for boluses into ``dA/dt = -KP*A`` (A(0) = 0).

    A bolus ``D`` at ``tau`` contributes ``D*KP*exp(-lam*tau)*T*phi1(-(KP+lam)*T)`` with
    ``T = max(t - tau, 0)``.
    """
    t = jnp.asarray(t, dtype=float)
    KP = jnp.asarray(KP)[..., None]
    lam = jnp.asarray(lam)[..., None]
    T = _tpos(t[..., None] - doses.times)
    c = doses.amounts * KP * jnp.exp(-lam * doses.times) * _integral_exp(KP + lam, T)
    return jnp.sum(c, axis=-1)


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TGIModel:
    """Static description of a TGI model (frozen, hashable: usable as a ``jit`` static arg).

    Class attributes: ``name`` (registry key), ``parameters`` (names), ``units`` (per
    parameter), ``equation`` (one line), ``closed_form`` (one line), ``inputs`` (keyword inputs
    of ``size``/``rhs``: ``exposure`` or ``doses``), ``states`` (ODE state names), ``source``.
    """

    name: ClassVar[str] = ""
    parameters: ClassVar[tuple[str, ...]] = ()
    units: ClassVar[dict[str, str]] = {}
    equation: ClassVar[str] = ""
    closed_form: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    states: ClassVar[tuple[str, ...]] = ("y",)
    source: ClassVar[str] = ""

    # -- parameters --------------------------------------------------------------------------
    def _get(self, params: Params) -> tuple:
        if not isinstance(params, Mapping):
            raise ModelError(format_problem(
                f"{self.name}: params must be a dict", value=type(params).__name__,
                fix=f"pass a dict with keys {', '.join(self.parameters)}"))
        missing = [p for p in self.parameters if p not in params]
        if missing:
            raise ModelError(format_problem(
                f"{self.name}: missing parameter(s) {', '.join(missing)}",
                fix=f"give all of {', '.join(self.parameters)} (units: "
                    + ", ".join(f"{k} {v}" for k, v in self.units.items()) + ")"))
        return tuple(jnp.asarray(params[p], dtype=float) for p in self.parameters)

    def _rules(self) -> list[tuple[str, Any, str, str]]:
        """(name, predicate on a NumPy array, condition text, fix) for concrete checks."""
        return [("y0", lambda v: v > 0, "> 0 mm (baseline SLD)",
                 "give the baseline sum of longest diameters in mm, e.g. y0=60.0")]

    def check(self, params: Params, **inputs) -> None:
        """Raise ModelError for invalid concrete parameter values (traced values pass)."""
        self._get(params)
        for name, ok, cond, fix in self._rules():
            v = _concrete(params[name])
            if v is not None and not np.all(ok(v)):
                bad = v if v.ndim == 0 else v[~ok(v)].ravel()[0]
                raise _bad(self.name, name, cond, bad, fix)
        exposure = inputs.get("exposure")
        e = _concrete(exposure)
        if e is not None and np.any(e < 0):
            raise ModelError(format_problem(
                f"{self.name}: exposure must be >= 0", value=float(np.min(e)),
                fix="pass the dose level / exposure E (0 = off)"))

    # -- ODE helpers ---------------------------------------------------------------------------
    def initial_state(self, params: Params):
        """ODE state at ``t = 0`` (shape ``(len(states),)``)."""
        y0 = jnp.asarray(params["y0"], dtype=float)
        return jnp.concatenate([y0[None], jnp.zeros(len(self.states) - 1)])

    def observe(self, state):
        """SLD from an ODE state (first axis = states)."""
        return jnp.asarray(state)[0]

    def describe(self) -> dict:
        return {"name": self.name, "equation": self.equation, "closed_form": self.closed_form,
                "parameters": dict(self.units), "inputs": self.inputs, "states": self.states,
                "source": self.source}


# ---------------------------------------------------------------------------------------------
# 1-4: growth laws
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exponential(TGIModel):
    name: ClassVar[str] = "exponential"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "g")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "g": "1/day"}
    equation: ClassVar[str] = "dy/dt = g*y"
    closed_form: ClassVar[str] = "y = y0*exp(g*t)"
    source: ClassVar[str] = "textbook"

    def size(self, t, params: Params):
        self.check(params)
        y0, g = self._get(params)
        return y0 * jnp.exp(g * jnp.asarray(t, dtype=float))

    def rhs(self, t, y, params: Params):
        _, g = self._get(params)
        return g * y


def _rule_K():
    return ("K", lambda v: v > 0, "> 0 mm (carrying capacity)",
            "give the plateau SLD in mm, larger than 0")


@dataclass(frozen=True)
class Logistic(TGIModel):
    name: ClassVar[str] = "logistic"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "g", "K")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "g": "1/day", "K": "mm"}
    equation: ClassVar[str] = "dy/dt = g*y*(1 - y/K)"
    closed_form: ClassVar[str] = "y = y0*K / (y0 + (K - y0)*exp(-g*t))"
    source: ClassVar[str] = "textbook"

    def _rules(self):
        return super()._rules() + [_rule_K()]

    def size(self, t, params: Params):
        self.check(params)
        y0, g, K = self._get(params)
        den = y0 + (K - y0) * jnp.exp(-g * jnp.asarray(t, dtype=float))
        ok = den > 0  # den <= 0 only before a backward blow-up (y0 > K, t < 0)
        return jnp.where(ok, y0 * K / jnp.where(ok, den, 1.0), jnp.inf)

    def rhs(self, t, y, params: Params):
        _, g, K = self._get(params)
        return g * y * (1.0 - y / K)


@dataclass(frozen=True)
class Gompertz(TGIModel):
    name: ClassVar[str] = "gompertz"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "g", "K")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "g": "1/day", "K": "mm"}
    equation: ClassVar[str] = "dy/dt = g*y*log(K/y)"
    closed_form: ClassVar[str] = "y = K*exp(log(y0/K)*exp(-g*t))"
    source: ClassVar[str] = "textbook"

    def _rules(self):
        return super()._rules() + [_rule_K()]

    def size(self, t, params: Params):
        self.check(params)
        y0, g, K = self._get(params)
        return K * jnp.exp(jnp.log(y0 / K) * jnp.exp(-g * jnp.asarray(t, dtype=float)))

    def rhs(self, t, y, params: Params):
        _, g, K = self._get(params)
        return g * y * jnp.log(K / y)


@dataclass(frozen=True)
class VonBertalanffy(TGIModel):
    name: ClassVar[str] = "von_bertalanffy"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "a", "b", "m")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "a": "mm^(1-m)/day", "b": "1/day",
                                       "m": "1 (0 < m < 1)"}
    equation: ClassVar[str] = "dy/dt = a*y**m - b*y"
    closed_form: ClassVar[str] = ("u = y**(1-m): u = u0*exp(-c*t) + a*(1-m)*t*phi1(-c*t), "
                                  "c = (1-m)*b; y = u**(1/(1-m))")
    source: ClassVar[str] = "von Bertalanffy (general form)"

    def _rules(self):
        return super()._rules() + [
            ("m", lambda v: (v > 0) & (v < 1), "in (0, 1)",
             "use 0 < m < 1 (m = 2/3 is the classical surface-area law)"),
            ("a", lambda v: v >= 0, ">= 0 mm^(1-m)/day", "growth coefficient a must be >= 0"),
        ]

    def size(self, t, params: Params):
        self.check(params)
        y0, a, b, m = self._get(params)
        t = jnp.asarray(t, dtype=float)
        q = 1.0 - m
        c = q * b
        u = y0**q * jnp.exp(-c * t) + a * q * _integral_exp(c, t)
        pos = u > 0
        return jnp.where(pos, jnp.where(pos, u, 1.0) ** (1.0 / q), 0.0)

    def rhs(self, t, y, params: Params):
        _, a, b, m = self._get(params)
        return a * jnp.maximum(y, 0.0) ** m - b * y


# ---------------------------------------------------------------------------------------------
# 5: Stein-Fojo / Wilkerson "g and d"
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteinFojo(TGIModel):
    name: ClassVar[str] = "stein_fojo"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "d", "g")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "d": "1/day", "g": "1/day"}
    equation: ClassVar[str] = ("dy/dt = y0*(g*exp(g*t) - d*exp(-d*t)) for t >= 0, "
                               "g*y for t < 0")
    closed_form: ClassVar[str] = "y = y0*(exp(-d*t) + exp(g*t) - 1) (t >= 0), y0*exp(g*t) (t < 0)"
    source: ClassVar[str] = "Stein/Wilkerson 'g and d' [R]; Claret 2018; Chan 2021"

    def _rules(self):
        return super()._rules() + [
            ("d", lambda v: v >= 0, ">= 0 1/day (decay rate)", "use d >= 0"),
            ("g", lambda v: v >= 0, ">= 0 1/day (growth rate)",
             "use g >= 0 (with g < 0 the bi-exponential goes negative)"),
        ]

    def size(self, t, params: Params):
        self.check(params)
        y0, d, g = self._get(params)
        t = jnp.asarray(t, dtype=float)
        tp = _tpos(t)
        after = y0 * (jnp.exp(-d * tp) + jnp.expm1(g * tp))
        before = y0 * jnp.exp(g * jnp.minimum(t, 0.0))
        return jnp.maximum(jnp.where(t >= 0, after, before), 0.0)

    def rhs(self, t, y, params: Params):
        y0, d, g = self._get(params)
        tp = _tpos(jnp.asarray(t, dtype=float))
        return jnp.where(t >= 0, y0 * (g * jnp.exp(g * tp) - d * jnp.exp(-d * tp)), g * y)


# ---------------------------------------------------------------------------------------------
# 6: Claret 2009 (constant exposure, K-PD)
# ---------------------------------------------------------------------------------------------
def _rule_KP(name: str = "KP"):
    return (name, lambda v: v >= 0, ">= 0 1/day (K-PD biophase elimination rate)",
            f"use {name} >= 0 (1/day)")


def _need_exposure(model: str, exposure):
    if exposure is None:
        raise ModelError(format_problem(
            f"{model}: exposure is required",
            fix="pass exposure=E (dose level or concentration; 1.0 / 0.0 for on / off)"))
    return jnp.asarray(exposure, dtype=float)


@dataclass(frozen=True)
class Claret(TGIModel):
    name: ClassVar[str] = "claret"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "KL", "KD", "lam")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "KL": "1/day", "KD": "1/day per unit of E",
                                       "lam": "1/day"}
    equation: ClassVar[str] = "dy/dt = KL*y - KD*E*exp(-lam*t)*y, E constant from t = 0"
    closed_form: ClassVar[str] = "y = y0*exp(KL*t - KD*E*t*phi1(-lam*t))"
    inputs: ClassVar[tuple[str, ...]] = ("exposure",)
    source: ClassVar[str] = "Claret L et al., J Clin Oncol 2009;27:4103"

    def size(self, t, params: Params, *, exposure=None):
        E = _need_exposure(self.name, exposure)
        self.check(params, exposure=exposure)
        y0, KL, KD, lam = self._get(params)
        t = jnp.asarray(t, dtype=float)
        return y0 * jnp.exp(KL * t - KD * E * _integral_exp(lam, _tpos(t)))

    def rhs(self, t, y, params: Params, *, exposure=None):
        E = _need_exposure(self.name, exposure)
        _, KL, KD, lam = self._get(params)
        t = jnp.asarray(t, dtype=float)
        kill = jnp.where(t >= 0, KD * E * jnp.exp(-lam * _tpos(t)), 0.0)
        return (KL - kill) * y


@dataclass(frozen=True)
class ClaretKPD(TGIModel):
    name: ClassVar[str] = "claret_kpd"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "KL", "KD", "lam", "KP")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "KL": "1/day", "KD": "1/mg",
                                       "lam": "1/day", "KP": "1/day"}
    equation: ClassVar[str] = ("dy/dt = KL*y - KD*KP*A*exp(-lam*t)*y, dA/dt = -KP*A "
                               "(+ bolus doses, mg)")
    closed_form: ClassVar[str] = ("y = y0*exp(KL*t - KD*sum_i D_i*KP*exp(-lam*tau_i)"
                                  "*T_i*phi1(-(KP+lam)*T_i)), T_i = max(t - tau_i, 0)")
    inputs: ClassVar[tuple[str, ...]] = ("doses",)
    states: ClassVar[tuple[str, ...]] = ("y", "A")
    source: ClassVar[str] = ("Claret L et al., J Clin Oncol 2009;27:4103 (K-PD exposure as in "
                             "Bruno 2012)")

    def dose_state_index(self, drug: int = 1) -> int:
        """ODE state index receiving the boluses (the biophase amount ``A``)."""
        return 1

    def _rules(self):
        return super()._rules() + [_rule_KP()]

    def size(self, t, params: Params, *, doses=None):
        doses = as_doses(doses, f"{self.name}: doses")
        self.check(params)
        y0, KL, KD, lam, KP = self._get(params)
        t = jnp.asarray(t, dtype=float)
        return y0 * jnp.exp(KL * t - KD * _kpd_integral(t, doses, KP, lam))

    def rhs(self, t, y, params: Params):
        """State ``[SLD, A]``; boluses are added to ``A`` (index 1) by the integrator."""
        _, KL, KD, lam, KP = self._get(params)
        sld, A = y[0], y[1]
        decay = jnp.exp(-lam * _tpos(jnp.asarray(t, dtype=float)))
        return jnp.stack([(KL - KD * KP * A * decay) * sld, -KP * A])


# ---------------------------------------------------------------------------------------------
# 7: Bruno 2012 (n drugs, additive independent K-PD effects)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrunoKPD(TGIModel):
    """Bruno 2012: ``dy/dt = KL*y - sum_x KDx*KPx*Ax*exp(-LAMx*t)*y`` for drugs x = 1..n.

    Parameters ``y0, KL`` and per drug ``KDx`` (1/mg), ``KPx`` (1/day), ``LAMx`` (1/day);
    ``doses`` is a sequence of ``n_drugs`` :class:`Doses` (mg). ODE state
    ``[SLD, A1, ..., An]``; drug x's boluses go into state ``x``.
    """

    n_drugs: int = 2

    name: ClassVar[str] = "bruno_2012"
    closed_form: ClassVar[str] = ("y = y0*exp(KL*t - sum_x KDx*sum_i D_xi*KPx*exp(-LAMx*tau_xi)"
                                  "*T*phi1(-(KPx+LAMx)*T)), T = max(t - tau_xi, 0)")
    inputs: ClassVar[tuple[str, ...]] = ("doses",)
    source: ClassVar[str] = "Bruno R et al., CPT:PSP 2012;1:e19 (Suppl. Table S1)"

    def __post_init__(self):
        if not isinstance(self.n_drugs, int) or self.n_drugs < 1:
            raise ModelError(format_problem("BrunoKPD: n_drugs must be an integer >= 1",
                                            value=self.n_drugs, fix="use n_drugs=2"))

    @property
    def parameters(self) -> tuple[str, ...]:  # type: ignore[override]
        per = [(f"KD{i}", f"KP{i}", f"LAM{i}") for i in range(1, self.n_drugs + 1)]
        return ("y0", "KL") + tuple(p for trio in per for p in trio)

    @property
    def units(self) -> dict[str, str]:  # type: ignore[override]
        u = {"y0": "mm", "KL": "1/day"}
        for i in range(1, self.n_drugs + 1):
            u |= {f"KD{i}": "1/mg", f"KP{i}": "1/day", f"LAM{i}": "1/day"}
        return u

    @property
    def equation(self) -> str:  # type: ignore[override]
        return ("dy/dt = KL*y - sum_x KDx*KPx*Ax*exp(-LAMx*t)*y, dAx/dt = -KPx*Ax, "
                f"x = 1..{self.n_drugs} (+ bolus doses, mg)")

    @property
    def states(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("y",) + tuple(f"A{i}" for i in range(1, self.n_drugs + 1))

    def dose_state_index(self, drug: int) -> int:
        """ODE state index receiving the boluses of drug ``drug`` (1-based)."""
        return drug

    def _rules(self):
        return super()._rules() + [_rule_KP(f"KP{i}") for i in range(1, self.n_drugs + 1)]

    def _doses(self, doses) -> list[Doses]:
        if doses is None or isinstance(doses, Doses) or len(doses) != self.n_drugs:
            raise ModelError(format_problem(
                f"{self.name}: doses must be a sequence of {self.n_drugs} Doses (one per drug)",
                value=None if doses is None else type(doses).__name__,
                fix="pass doses=(Doses(times1, mg1), Doses(times2, mg2)); empty arrays for a "
                    "drug not given"))
        return [as_doses(d, f"{self.name}: doses of drug {i}") for i, d in enumerate(doses, 1)]

    def size(self, t, params: Params, *, doses=None):
        doses = self._doses(doses)
        self.check(params)
        v = self._get(params)
        y0, KL = v[0], v[1]
        t = jnp.asarray(t, dtype=float)
        logy = KL * t
        for i, d in enumerate(doses):
            KD, KP, lam = v[2 + 3 * i: 5 + 3 * i]
            logy = logy - KD * _kpd_integral(t, d, KP, lam)
        return y0 * jnp.exp(logy)

    def rhs(self, t, y, params: Params):
        """State ``[SLD, A1, ..., An]``; boluses of drug x are added to state x."""
        v = self._get(params)
        KL = v[1]
        tp = _tpos(jnp.asarray(t, dtype=float))
        rate = KL
        dA = []
        for i in range(self.n_drugs):
            KD, KP, lam = v[2 + 3 * i: 5 + 3 * i]
            A = y[1 + i]
            rate = rate - KD * KP * A * jnp.exp(-lam * tp)
            dA.append(-KP * A)
        return jnp.stack([rate * y[0], *dA])


# ---------------------------------------------------------------------------------------------
# 8: two populations (sensitive + resistant)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoPopulation(TGIModel):
    name: ClassVar[str] = "two_population"
    parameters: ClassVar[tuple[str, ...]] = ("y0", "f", "gS", "kS", "gR")
    units: ClassVar[dict[str, str]] = {"y0": "mm", "f": "1 (resistant fraction at t = 0)",
                                       "gS": "1/day", "kS": "1/day per unit of E",
                                       "gR": "1/day"}
    equation: ClassVar[str] = ("y = S + R, dS/dt = (gS - kS*E)*S, dR/dt = gR*R, "
                               "S0 = (1-f)*y0, R0 = f*y0, E constant from t = 0")
    closed_form: ClassVar[str] = "y = (1-f)*y0*exp(gS*t - kS*E*max(t,0)) + f*y0*exp(gR*t)"
    inputs: ClassVar[tuple[str, ...]] = ("exposure",)
    states: ClassVar[tuple[str, ...]] = ("S", "R")
    source: ClassVar[str] = "generic sensitive/resistant two-population model [R]"

    def _rules(self):
        return super()._rules() + [
            ("f", lambda v: (v >= 0) & (v <= 1), "in [0, 1] (resistant fraction)",
             "give the fraction of the baseline SLD that is resistant, 0 <= f <= 1")]

    def size(self, t, params: Params, *, exposure=None):
        E = _need_exposure(self.name, exposure)
        self.check(params, exposure=exposure)
        y0, f, gS, kS, gR = self._get(params)
        t = jnp.asarray(t, dtype=float)
        S = (1.0 - f) * y0 * jnp.exp(gS * t - kS * E * _tpos(t))
        R = f * y0 * jnp.exp(gR * t)
        return S + R

    def rhs(self, t, y, params: Params, *, exposure=None):
        """State ``[S, R]``."""
        E = _need_exposure(self.name, exposure)
        _, _, gS, kS, gR = self._get(params)
        kill = jnp.where(jnp.asarray(t) >= 0, kS * E, 0.0)
        return jnp.stack([(gS - kill) * y[0], gR * y[1]])

    def initial_state(self, params: Params):
        y0 = jnp.asarray(params["y0"], dtype=float)
        f = jnp.asarray(params["f"], dtype=float)
        return jnp.stack([(1.0 - f) * y0, f * y0])

    def observe(self, state):
        state = jnp.asarray(state)
        return state[0] + state[1]

    def nadir_time(self, params: Params, *, exposure=None):
        """Time (days > 0) of the SLD minimum, or NaN when there is no interior minimum.

        With ``a = gS - kS*E`` the minimum of ``y(t)`` on ``t > 0`` exists iff ``0 < f < 1``,
        ``a < 0 < gR`` and ``y'(0) < 0``, i.e. ``(1-f)*(-a) > f*gR``; then
        ``t* = log((1-f)*(-a) / (f*gR)) / (gR - a)``.
        """
        E = _need_exposure(self.name, exposure)
        self.check(params, exposure=exposure)
        _, f, gS, kS, gR = self._get(params)
        a = gS - kS * E
        num = (1.0 - f) * (-a)
        den = f * gR
        ok = (f > 0) & (f < 1) & (a < 0) & (gR > 0) & (num > den)
        ratio = jnp.where(ok, num / jnp.where(ok, den, 1.0), 2.0)
        span = jnp.where(ok, gR - a, 1.0)
        return jnp.where(ok, jnp.log(ratio) / span, jnp.nan)

    def nadir_size(self, params: Params, *, exposure=None):
        """SLD at :meth:`nadir_time` (NaN when there is no interior minimum)."""
        tn = self.nadir_time(params, exposure=exposure)
        ok = jnp.isfinite(tn)
        return jnp.where(ok, self.size(jnp.where(ok, tn, 0.0), params, exposure=exposure),
                         jnp.nan)


# ---------------------------------------------------------------------------------------------
# registry and published values
# ---------------------------------------------------------------------------------------------
TGI_MODELS: dict[str, TGIModel] = {
    m.name: m
    for m in (Exponential(), Logistic(), Gompertz(), VonBertalanffy(), SteinFojo(), Claret(),
              ClaretKPD(), BrunoKPD(n_drugs=2), TwoPopulation())
}


def get_model(name: str) -> TGIModel:
    """The registered model ``name`` (clear error listing the names otherwise)."""
    try:
        return TGI_MODELS[name]
    except KeyError:
        raise ModelError(format_problem(
            "unknown TGI model", value=name,
            fix=f"use one of {', '.join(TGI_MODELS)}")) from None


def list_models() -> list[dict]:
    """One row per registered model: name, equation, closed form, parameter units, inputs."""
    return [m.describe() for m in TGI_MODELS.values()]


BRUNO_2012_SOURCE = (
    "Bruno R, Lindbom L, Schaedeli Stark F, Chanu P, Gilberg F, Frey N, Claret L. "
    "CPT Pharmacometrics Syst Pharmacol 2012;1:e19, doi:10.1038/psp.2012.20, Suppl. Table S1 "
    "(via nlmixr2lib Bruno_2012_capecitabine_docetaxel_tgi.R; LITERATURE.md section 3.2). "
    "Published in weeks: KL 0.00437/wk, KD0_doc 0.00128 per (mg/wk), KD0_cap 0.00470 per "
    "(g/wk), lam_doc 0.045/wk, lam_cap 0.240/wk, KP_doc 0.1/wk and KP_cap 3/wk (fixed). "
    "Converted here to days (rates / 7); KD multiplies KP*A (mg/time) and the kill rate "
    "(1/time), so its unit is 1/mg in any time unit (capecitabine: 0.00470/1000 per mg). "
    "Drug 1 = docetaxel, drug 2 = capecitabine; doses in mg."
)

#: Bruno 2012 typical values in day units (drug 1 docetaxel, drug 2 capecitabine); no y0.
BRUNO_2012: dict[str, float] = {
    "KL": 0.00437 / 7.0,
    "KD1": 0.00128,  # 1/mg (docetaxel)
    "KP1": 0.1 / 7.0,
    "LAM1": 0.045 / 7.0,
    "KD2": 0.00470 / 1000.0,  # 1/mg (capecitabine; published per g)
    "KP2": 3.0 / 7.0,
    "LAM2": 0.240 / 7.0,
}


def bruno_2012_params(y0: float) -> dict[str, float]:
    """Bruno 2012 typical parameters (day units) with baseline SLD ``y0`` (mm)."""
    return {"y0": float(y0), **BRUNO_2012}


def bruno_2012_doses(bsa_m2: float = 1.8, *, docetaxel_mg_m2: float = 75.0,
                     capecitabine_mg_m2: float = 1250.0, n_cycles: int = 6
                     ) -> tuple[Doses, Doses]:
    """The Bruno 2012 regimen as boluses in mg: docetaxel on day 1 and capecitabine twice daily
    on days 1-14 of 21-day cycles (capecitabine 825 or 1250 mg/m2 BID in the studies).

    Returns ``(docetaxel, capecitabine)`` for :class:`BrunoKPD` (drug 1, drug 2).
    """
    doc = cycle_doses(docetaxel_mg_m2 * bsa_m2, [0.0], 21.0, n_cycles)
    cap = cycle_doses(capecitabine_mg_m2 * bsa_m2, np.arange(28) * 0.5, 21.0, n_cycles)
    return doc, cap
