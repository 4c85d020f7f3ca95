"""Compartmental PK models.

A model is a static description (compartments, parameter names, equations); parameters are a
``dict`` of JAX scalars keyed by NONMEM-style names, so that ``jit``, ``vmap`` and ``grad`` work
through every model. Two families share one API:

* **Linear time-invariant** models (:class:`OneCompartment`, :class:`TwoCompartment`,
  :class:`ThreeCompartment`, each with IV or first-order oral input) give a rate matrix ``K`` with
  ``dA/dt = K A + r(t)``. The engine solves them exactly with the matrix exponential, including
  exact steady state.
* **Nonlinear / time-varying** models (:class:`NonlinearCompartment`: Michaelis-Menten
  elimination and/or a time-varying clearance) give a right-hand side; the engine integrates them
  with diffrax segment-wise between events.

Compartment numbering follows NONMEM's ADVANs: with oral absorption the depot is compartment 1
and the central compartment is 2 (ADVAN2/4/12); IV-only models start at the central compartment
(ADVAN1/3/11). Dose-related parameters use NONMEM names with the 1-based compartment number:
``F1``/``F2`` (bioavailability, default 1), ``ALAG1`` (lag, default 0), ``R1`` (modelled rate for
RATE=-1) and ``D1`` (modelled duration for RATE=-2).

Units: amounts in the card's amount unit (mg), volumes in L, clearances in L per model time unit.
The central concentration is ``A_central / V`` in mg/L (= ug/mL), multiplied by ``conc_scale`` to
give the card's concentration unit (e.g. 1000 for ng/mL).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from ..cards.registry import register_kind
from ..errors import ModelError
from ..params import (  # noqa: F401  (re-exported: pkpd.pk.Domain, ...)
    PARAM_NAME_RE,
    Domain,
    check_domains,
    check_names,
    default_domain,
    parse_domain,
)
from ..units import conc_factor, normalize_amount_unit, normalize_conc_unit

__all__ = [
    "PKModel",
    "OneCompartment",
    "TwoCompartment",
    "ThreeCompartment",
    "NonlinearCompartment",
    "make_model",
    "ODEView",
    "as_ode",
    "Domain",
    "parse_domain",
    "default_domain",
    "check_domains",
    "check_names",
    "PARAM_NAME_RE",
]



class PKModel:
    """Base class: static structure of a compartmental model.

    Attributes
    ----------
    compartments : tuple of str
        Compartment names in NONMEM order (index 0 is CMT=1).
    central : int
        0-based index of the central (observed) compartment.
    parameters : tuple of str
        Required structural parameter names.
    linear : bool
        True when ``dA/dt = K A + r`` with constant ``K`` (exact matrix-exponential path).
    conc_scale : float
        Multiplier from mg/L to the output concentration unit.
    """

    compartments: tuple[str, ...] = ()
    central: int = 0
    parameters: tuple[str, ...] = ()
    linear: bool = True

    def __init__(self, *, conc_scale: float = 1.0, time_unit: str = "h"):
        self.conc_scale = float(conc_scale)
        self.time_unit = time_unit

    # -- identity: models are values (equal structure -> equal, so jit caches are shared) ----
    def _key(self) -> tuple:
        return (type(self).__name__, self.compartments, self.parameters, self.conc_scale,
                self.time_unit, tuple(sorted((k, v) for k, v in vars(self).items()
                                             if isinstance(v, (bool, int, float, str)))))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    # -- structure -------------------------------------------------------------------------
    @property
    def n_cmt(self) -> int:
        return len(self.compartments)

    def dose_parameter_names(self) -> tuple[str, ...]:
        """Optional per-compartment dose parameters (F, ALAG, R, D) this model accepts."""
        names = []
        for i in range(1, self.n_cmt + 1):
            names += [f"F{i}", f"ALAG{i}", f"R{i}", f"D{i}"]
        return tuple(names)

    def check_params(self, params: Mapping, domains: Mapping[str, Domain] | None = None, *,
                     who: str | None = None) -> None:
        """Every required parameter is given, and every concrete value lies in its domain
        (``domains`` first, then :func:`default_domain`)."""
        missing = [p for p in self.parameters if p not in params]
        if missing:
            raise ModelError(
                f"{type(self).__name__} needs parameters {list(self.parameters)}; missing "
                f"{missing}. Fix: pass them (e.g. --param {missing[0]}=...) or use a model card"
            )
        check_domains(params, domains, who=who or f"{type(self).__name__} parameters")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(compartments={self.compartments})"

    # -- equations -------------------------------------------------------------------------
    def rate_matrix(self, p: Mapping, t=None):
        """Matrix ``K`` with ``dA/dt = K A`` (linear models; ``t`` ignored)."""
        raise NotImplementedError

    def rhs(self, t, a, p: Mapping):
        """Right-hand side without dose inputs: ``dA/dt`` at time ``t``."""
        return self.rate_matrix(p, t) @ a

    def volume(self, p: Mapping):
        """Central volume (L)."""
        raise NotImplementedError

    def concentration(self, a, p: Mapping):
        """Central concentration in the output unit."""
        return a[..., self.central] / self.volume(p) * self.conc_scale

    def dose_param(self, p: Mapping, kind: str, default: float):
        """Vector over compartments of ``F``/``ALAG``/``R``/``D`` (``F1``, ``F2``, ...)."""
        vals = [jnp.asarray(p.get(f"{kind}{i}", default), dtype=float)
                for i in range(1, self.n_cmt + 1)]
        return jnp.stack(vals)


def _disposition(n_disp: int, p: Mapping, v1_name: str):
    """Rate matrix of a mammillary disposition with 1, 2 or 3 compartments (central first)."""
    cl = p["CL"]
    v1 = p[v1_name]
    k10 = cl / v1
    if n_disp == 1:
        return jnp.array([[-k10]])
    q2, v2 = p["Q"] if "Q" in p else p["Q2"], p["V2"]
    k12, k21 = q2 / v1, q2 / v2
    if n_disp == 2:
        return jnp.array([[-(k10 + k12), k21], [k12, -k21]])
    q3, v3 = p["Q3"], p["V3"]
    k13, k31 = q3 / v1, q3 / v3
    return jnp.array(
        [[-(k10 + k12 + k13), k21, k31], [k12, -k21, 0.0], [k13, 0.0, -k31]]
    )


class _Mammillary(PKModel):
    n_disp = 1
    v1_name = "V"
    disp_params: tuple[str, ...] = ("CL", "V")

    def __init__(self, absorption: str = "iv", **kw):
        super().__init__(**kw)
        absorption = absorption.lower()
        if absorption not in ("iv", "oral"):
            raise ModelError(
                f"unknown absorption {absorption!r}. Fix: use 'iv' or 'oral' (first-order)"
            )
        self.absorption = absorption
        disp_names = ("central", "peripheral", "peripheral2")[: self.n_disp]
        if absorption == "oral":
            self.compartments = ("depot",) + disp_names
            self.central = 1
            self.parameters = ("KA",) + self.disp_params
        else:
            self.compartments = disp_names
            self.central = 0
            self.parameters = self.disp_params

    def rate_matrix(self, p, t=None):
        kd = _disposition(self.n_disp, p, self.v1_name)
        if self.absorption == "iv":
            return kd
        ka = p["KA"]
        n = self.n_disp + 1
        k = jnp.zeros((n, n), dtype=kd.dtype)
        k = k.at[1:, 1:].set(kd)
        k = k.at[0, 0].set(-ka)
        k = k.at[1, 0].set(ka)
        return k

    def volume(self, p):
        return p[self.v1_name]

    def __repr__(self):
        return f"{type(self).__name__}(absorption={self.absorption!r})"


class OneCompartment(_Mammillary):
    """One-compartment model (ADVAN1 IV, ADVAN2 oral). Parameters CL, V (+ KA)."""

    n_disp = 1
    v1_name = "V"
    disp_params = ("CL", "V")


class TwoCompartment(_Mammillary):
    """Two-compartment model (ADVAN3 IV, ADVAN4 oral). Parameters CL, V1, Q, V2 (+ KA)."""

    n_disp = 2
    v1_name = "V1"
    disp_params = ("CL", "V1", "Q", "V2")


class ThreeCompartment(_Mammillary):
    """Three-compartment model (ADVAN11 IV, ADVAN12 oral). CL, V1, Q2, V2, Q3, V3 (+ KA)."""

    n_disp = 3
    v1_name = "V1"
    disp_params = ("CL", "V1", "Q2", "V2", "Q3", "V3")


class NonlinearCompartment(PKModel):
    """1- or 2-compartment model with Michaelis-Menten and/or time-varying elimination.

    ``dA_c/dt = -CL(t)/V1·A_c - VMAX·C/(KM + C) - Q/V1·A_c + Q/V2·A_p`` with ``C = A_c/V1`` and

    ``CL(t) = CL · exp(TMAX · t^HILL / (TC50^HILL + t^HILL))``

    (Abegesah 2025 / Baverel 2018 forms for durvalumab; ``TMAX`` is the maximal log-fold change,
    negative for a decline). ``t`` is the time since the start of the subject's record (the first
    dose, in NONMEM datasets that start at TIME 0), in the model's time unit.

    Parameters
    ----------
    n_disp : 1 or 2
        Number of disposition compartments.
    absorption : "iv" or "oral"
    michaelis_menten : bool
        Add saturable elimination with ``VMAX`` (amount/time) and ``KM`` (mg/L).
    time_varying : bool
        Multiply CL by the time-varying factor with ``TMAX``, ``TC50`` and ``HILL`` (default 1).
    """

    linear = False

    def __init__(self, n_disp: int = 1, absorption: str = "iv", *, michaelis_menten=False,
                 time_varying=False, **kw):
        super().__init__(**kw)
        if n_disp not in (1, 2):
            raise ModelError(f"n_disp must be 1 or 2; got {n_disp!r}")
        if not (michaelis_menten or time_varying):
            raise ModelError(
                "NonlinearCompartment needs michaelis_menten=True and/or time_varying=True. "
                "Fix: use OneCompartment/TwoCompartment for linear kinetics (exact solution)"
            )
        self.n_disp = n_disp
        self.absorption = absorption.lower()
        self.michaelis_menten = michaelis_menten
        self.time_varying = time_varying
        self.v1_name = "V" if n_disp == 1 else "V1"
        disp = ("central",) if n_disp == 1 else ("central", "peripheral")
        params = ["CL", self.v1_name] + (["Q", "V2"] if n_disp == 2 else [])
        if michaelis_menten:
            params += ["VMAX", "KM"]
        if time_varying:
            params += ["TMAX", "TC50"]
        if self.absorption == "oral":
            self.compartments = ("depot",) + disp
            self.central = 1
            params = ["KA"] + params
        elif self.absorption == "iv":
            self.compartments = disp
            self.central = 0
        else:
            raise ModelError(f"unknown absorption {absorption!r}. Fix: use 'iv' or 'oral'")
        self.parameters = tuple(params)

    def clearance(self, p, t):
        cl = p["CL"]
        if self.time_varying:
            hill = p.get("HILL", 1.0)
            tt = jnp.maximum(t, 0.0)
            th = tt**hill
            cl = cl * jnp.exp(p["TMAX"] * th / (p["TC50"] ** hill + th))
        return cl

    def rate_matrix(self, p, t=None):
        """Linear part of the system at time ``t`` (time-varying CL included, MM excluded)."""
        q = dict(p)
        q["CL"] = self.clearance(p, 0.0 if t is None else t)
        k = _disposition(self.n_disp, q, self.v1_name)
        if self.absorption == "iv":
            return k
        n = self.n_disp + 1
        full = jnp.zeros((n, n), dtype=k.dtype).at[1:, 1:].set(k)
        return full.at[0, 0].set(-p["KA"]).at[1, 0].set(p["KA"])

    def rhs(self, t, a, p):
        da = self.rate_matrix(p, t) @ a
        if self.michaelis_menten:
            c = a[self.central] / p[self.v1_name]
            da = da.at[self.central].add(-p["VMAX"] * c / (p["KM"] + c))
        return da

    def volume(self, p):
        return p[self.v1_name]

    def __repr__(self):
        return (f"NonlinearCompartment(n_disp={self.n_disp}, absorption={self.absorption!r}, "
                f"michaelis_menten={self.michaelis_menten}, time_varying={self.time_varying})")


_STRUCTURES = {
    "1cmt": OneCompartment,
    "2cmt": TwoCompartment,
    "3cmt": ThreeCompartment,
}


def make_model(structure: str, absorption: str = "iv", *, michaelis_menten: bool = False,
               time_varying: bool = False, conc_scale: float = 1.0,
               time_unit: str = "h") -> PKModel:
    """Build a model from a card's structure fields (``"1cmt"``, ``"2cmt"``, ``"3cmt"``)."""
    key = structure.lower().replace("-", "").replace("_", "").replace("compartment", "cmt")
    if key not in _STRUCTURES:
        raise ModelError(
            f"unknown structure {structure!r}. Fix: use one of {sorted(_STRUCTURES)}"
        )
    if michaelis_menten or time_varying:
        if key == "3cmt":
            raise ModelError("nonlinear 3-compartment models are not available yet")
        return NonlinearCompartment(
            1 if key == "1cmt" else 2, absorption, michaelis_menten=michaelis_menten,
            time_varying=time_varying, conc_scale=conc_scale, time_unit=time_unit,
        )
    return _STRUCTURES[key](absorption, conc_scale=conc_scale, time_unit=time_unit)


class ODEView(PKModel):
    """The same equations as a linear model, solved by the ODE path (diffrax) instead of the
    matrix exponential. Used to cross-check the exact solutions; see :func:`as_ode`."""

    linear = False

    def __init__(self, base: PKModel):
        super().__init__(conc_scale=base.conc_scale, time_unit=base.time_unit)
        self.base = base
        self.compartments = base.compartments
        self.central = base.central
        self.parameters = base.parameters

    def rate_matrix(self, p, t=None):
        return self.base.rate_matrix(p, t)

    def rhs(self, t, a, p):
        return self.base.rhs(t, a, p)

    def volume(self, p):
        return self.base.volume(p)

    def _key(self) -> tuple:
        return ("ODEView", self.base._key())

    def __repr__(self):
        return f"ODEView({self.base!r})"


def as_ode(model: PKModel) -> PKModel:
    """Return ``model`` to be solved numerically (diffrax), for cross-checks of exact paths."""
    return model if not model.linear else ODEView(model)


# ---- the "pk" card kind -------------------------------------------------------------------------
def _check_pk_card(raw: dict, where: str) -> None:
    normalize_conc_unit(raw["structure"]["conc_unit"])


def _card_model(card) -> PKModel:
    """The PK model a ``kind = "pk"`` card describes (:meth:`pkpd.cards.Card.model`)."""
    s = card.structure
    if normalize_amount_unit(s.get("amount_unit", "mg")) != "mg":
        raise ModelError(f"card {card.name}: amount_unit must be mg (volumes in L)")
    return make_model(
        s["model"], s.get("absorption", "iv"),
        michaelis_menten=bool(s.get("michaelis_menten", False)),
        time_varying=bool(s.get("time_varying", False)),
        conc_scale=conc_factor("mg/L", card.conc_unit), time_unit=card.time_unit,
    )


register_kind("pk", structure=("model", "time_unit", "conc_unit"), example="models/anlotinib.toml",
              check=_check_pk_card, model=_card_model)
