"""Dosing regimens: a Python API and an equivalent text form.

A :class:`Regimen` is a value: one or more :class:`Phase` blocks run one after the other, plus
holds and dose reductions. It is resolved against patient covariates (weight, body-surface area,
renal function) into concrete doses in mg, and compiled into fixed-shape arrays for ``jax.vmap``
over a population, or into a NONMEM-style event table.

Conventions
-----------
* Study day 1 is time 0: a dose on study day ``d`` is given at ``t = d - 1`` days.
* Every output time and duration is in **days** since time 0, every amount in **mg**
  (except :meth:`Regimen.to_event_table`, which converts to the requested time unit).
* Objects are immutable; methods such as :meth:`Regimen.hold` return new objects.

The text form (case-insensitive, whitespace tolerant) is documented in ``docs/regimens.md``::

    >>> r = parse_regimen("12 mg PO QD D1-14 Q21D; reduce to 10 mg from D43")
    >>> parse_regimen(r.to_text()) == r
    True
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import RegimenError, UnitError
from ..units import amount_factor, normalize_time_unit, time_factor

__all__ = [
    "ROUTES",
    "DOSE_UNITS",
    "DOSES_PER_DAY",
    "GFR_CAP_ML_MIN",
    "MAX_DOSES",
    "MAX_CYCLES",
    "RegimenUnitError",
    "Phase",
    "Hold",
    "Reduce",
    "Regimen",
    "Protocol",
    "Doses",
    "Cycles",
    "DoseArrays",
    "parse_regimen",
    "parse_protocol",
    "stack_arrays",
    "mosteller_bsa",
    "cockcroft_gault_crcl",
    "calvert_dose_mg",
    "resolve_dose_mg",
]

ROUTES = ("PO", "IV", "SC")
DOSE_UNITS = ("mg", "mg/kg", "mg/m2", "AUC")
#: allowed numbers of doses per day (dose clock times are 24/n h apart, so n must divide 24)
DOSES_PER_DAY = (1, 2, 3, 4, 6, 8, 12, 24)
#: default cap on the GFR used in the Calvert formula (FDA carboplatin dosing guidance, 2010)
GFR_CAP_ML_MIN = 125.0
#: most doses one regimen may expand to within a horizon (about 11 years of doses every hour;
#: 10 years of daily dosing is 3653), checked before anything is allocated
MAX_DOSES = 100_000
#: most cycles one regimen may expand to within a horizon (273 years of 1-day cycles)
MAX_CYCLES = 100_000

_EPS = 1e-9  # tolerance (days) when comparing dose times with day boundaries
_ROUTE_ALIASES = {
    "PO": "PO", "ORAL": "PO", "IV": "IV", "SC": "SC", "SQ": "SC", "SUBCUT": "SC",
}
_PER_DAY_WORDS = {"QD": 1, "OD": 1, "DAILY": 1, "BID": 2, "TID": 3, "QID": 4}
_PER_DAY_TEXT = {1: "QD", 2: "BID", 3: "TID", 4: "QID"}
_MISSING = object()


class RegimenUnitError(RegimenError, UnitError):
    """An unknown dose unit; both a :class:`RegimenError` and a :class:`UnitError`."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    """Shortest exact decimal text of a float, without exponent (``12.0 -> '12'``)."""
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return np.format_float_positional(x, trim="-")


def _positive_number(value, what: str, fix: str) -> float:
    if isinstance(value, bool):
        raise RegimenError(f"{what} must be a number; got {value!r}. Fix: {fix}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RegimenError(f"{what} must be a number; got {value!r}. Fix: {fix}") from None
    if not math.isfinite(x) or x <= 0:
        raise RegimenError(f"{what} must be a positive, finite number; got {value!r}. Fix: {fix}")
    return x


def _int(value, what: str, fix: str) -> int:
    if isinstance(value, bool):
        raise RegimenError(f"{what} must be a whole number; got {value!r}. Fix: {fix}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise RegimenError(f"{what} must be a whole number; got {value!r}. Fix: {fix}")


def _study_day(value, what: str) -> int:
    d = _int(value, what, "give a 1-based study day such as 43 (day 1 is time 0)")
    if d < 1:
        raise RegimenError(
            f"{what} must be a study day >= 1 (day 1 is time 0); got {value!r}. "
            "Fix: count study days from 1"
        )
    return d


def _normalize_dose_unit(unit: str) -> tuple[str, float]:
    """Canonical dose unit and the factor that converts an amount in ``unit`` to it.

    ``"g"`` -> (``"mg"``, 1000); ``"mg/m²"`` -> (``"mg/m2"``, 1); ``"auc"`` -> (``"AUC"``, 1).
    Raises :class:`RegimenUnitError` for anything else.
    """
    fix = "use mg, mg/kg, mg/m2 (also g, ug, mcg instead of mg) or AUC (mg*min/mL)"
    if not isinstance(unit, str):
        raise RegimenUnitError(f"unknown dose unit {unit!r}. Fix: {fix}")
    u = unit.strip().replace(" ", "").replace("²", "2").replace("^2", "2")
    if u.upper() == "AUC":
        return "AUC", 1.0
    num, slash, den = u.partition("/")
    den = den.lower()
    if slash and den not in ("kg", "m2"):
        raise RegimenUnitError(f"unknown dose unit {unit!r}. Fix: {fix}")
    try:
        factor = amount_factor(num, "mg")
    except UnitError:
        raise RegimenUnitError(f"unknown dose unit {unit!r}. Fix: {fix}") from None
    return ("mg/" + den if slash else "mg"), factor


def _normalize_route(route) -> str:
    key = str(route).strip().upper()
    if key not in _ROUTE_ALIASES:
        raise RegimenError(f"unknown route {route!r}. Fix: use PO (oral), IV or SC")
    return _ROUTE_ALIASES[key]


def _day_list_text(days: Sequence[int]) -> str:
    """``(1, 2, 3, 8)`` -> ``'D1-3,8'``."""
    parts = []
    i = 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] == days[j] + 1:
            j += 1
        parts.append(str(days[i]) if i == j else f"{days[i]}-{days[j]}")
        i = j + 1
    return "D" + ",".join(parts)


# --------------------------------------------------------------------------------------------
# covariate resolution
# --------------------------------------------------------------------------------------------


def mosteller_bsa(wt_kg, ht_cm):
    """Body-surface area (m²) by Mosteller (1987): ``sqrt(WT[kg] * HT[cm] / 3600)``.

    Scalars give a float; arrays (one value per patient) give an array."""
    if np.ndim(wt_kg) == 0 and np.ndim(ht_cm) == 0:
        return math.sqrt(float(wt_kg) * float(ht_cm) / 3600.0)
    return np.sqrt(np.asarray(wt_kg, float) * np.asarray(ht_cm, float) / 3600.0)


def cockcroft_gault_crcl(age_y, wt_kg, scr_mg_dl, female):
    """Creatinine clearance (mL/min) by Cockcroft & Gault (1976).

    ``CrCL = (140 - AGE) * WT / (72 * SCR)``, times 0.85 for women; total body weight in kg,
    serum creatinine in mg/dL. Scalars give a float; arrays (one value per patient) an array.
    """
    if all(np.ndim(x) == 0 for x in (age_y, wt_kg, scr_mg_dl, female)):
        crcl = (140.0 - float(age_y)) * float(wt_kg) / (72.0 * float(scr_mg_dl))
        return crcl * 0.85 if female else crcl
    crcl = (140.0 - np.asarray(age_y, float)) * np.asarray(wt_kg, float) / (
        72.0 * np.asarray(scr_mg_dl, float))
    return np.where(np.asarray(female, bool), crcl * 0.85, crcl)


def calvert_dose_mg(auc: float, gfr_ml_min: float) -> float:
    """Carboplatin dose (mg) by Calvert (1989): ``AUC [mg*min/mL] * (GFR [mL/min] + 25)``."""
    return float(auc) * (float(gfr_ml_min) + 25.0)


def _upper_keys(covariates) -> dict[str, object]:
    if covariates is None:
        return {}
    if not hasattr(covariates, "items"):
        raise RegimenError(
            f"covariates must be a mapping such as {{'WT': 70}}; got {type(covariates).__name__}."
            " Fix: pass a dict (or a pandas Series) of covariate name -> value"
        )
    return {str(k).strip().upper(): v for k, v in covariates.items()}


def _cov(cov: dict, name: str, context: str, unit: str):
    """A positive covariate value, or _MISSING when absent/NaN."""
    if name not in cov or cov[name] is None:
        return _MISSING
    v = cov[name]
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise RegimenError(
            f"{context}: covariate {name} must be a number in {unit}; got {v!r}. "
            f"Fix: pass covariates={{'{name}': <number in {unit}>}}"
        ) from None
    if math.isnan(x):
        return _MISSING
    if not math.isfinite(x) or x <= 0:
        raise RegimenError(
            f"{context}: covariate {name} must be positive and finite ({unit}); got {v!r}. "
            f"Fix: check the value of {name}"
        )
    return x


def _is_female(value, context: str) -> bool:
    key = str(value).strip().upper()
    if isinstance(value, bool):
        return value
    if key in ("1", "1.0", "F", "FEMALE", "W", "WOMAN"):
        return True
    if key in ("0", "0.0", "M", "MALE", "MAN"):
        return False
    raise RegimenError(
        f"{context}: covariate SEX must be 1 or 'F' (female) or 0 or 'M' (male); got {value!r}. "
        "Fix: recode SEX (NONMEM data often use 1=male, 2=female: map 2 -> 'F', 1 -> 'M')"
    )


def _gfr(cov: dict, context: str, gfr_cap: float | None) -> float:
    for name in ("GFR", "CRCL"):
        x = _cov(cov, name, context, "mL/min")
        if x is not _MISSING:
            break
    else:
        needed = {n: _cov(cov, n, context, u) for n, u in
                  (("AGE", "years"), ("WT", "kg"), ("SCR", "mg/dL"))}
        sex = cov.get("SEX")
        missing = [n for n, v in needed.items() if v is _MISSING]
        if sex is None or (isinstance(sex, float) and math.isnan(sex)):
            missing.append("SEX")
        if missing:
            raise RegimenError(
                f"{context} doses by AUC (Calvert: dose = AUC x (GFR + 25)) and needs the GFR in "
                f"mL/min; missing covariate(s) {', '.join(missing)}. Fix: pass "
                "covariates={'GFR': 90} (or 'CRCL'), or AGE (y), WT (kg), SCR (mg/dL) and SEX "
                "(1/'F' = female) for Cockcroft-Gault; on the command line --cov GFR=90"
            )
        if needed["SCR"] > 20:
            raise RegimenError(
                f"{context}: SCR = {_fmt(needed['SCR'])} looks like umol/L, but Cockcroft-Gault "
                "needs mg/dL. Fix: divide SCR in umol/L by 88.4"
            )
        if needed["AGE"] >= 140:
            raise RegimenError(
                f"{context}: AGE = {_fmt(needed['AGE'])} gives a non-positive Cockcroft-Gault "
                "clearance. Fix: check AGE (years) or pass GFR directly"
            )
        x = cockcroft_gault_crcl(
            needed["AGE"], needed["WT"], needed["SCR"], _is_female(sex, context)
        )
    if gfr_cap is not None:
        x = min(x, float(gfr_cap))
    return x


def resolve_dose_mg(
    amount: float,
    unit: str,
    covariates: Mapping[str, float] | None = None,
    *,
    gfr_cap: float | None = GFR_CAP_ML_MIN,
    context: str = "the dose",
) -> float:
    """Convert a dose in ``unit`` to mg for one patient.

    Parameters
    ----------
    amount, unit
        The dose; ``unit`` is one of ``mg``, ``mg/kg``, ``mg/m2`` or ``AUC`` (mg·min/mL).
    covariates
        Mapping of covariate name (case-insensitive) to value:

        * ``mg/kg``: ``WT`` (kg).
        * ``mg/m2``: ``BSA`` (m²); if absent, Mosteller from ``WT`` (kg) and ``HT`` (cm).
        * ``AUC``: ``GFR`` (mL/min) wins, then ``CRCL`` (mL/min), then Cockcroft-Gault from
          ``AGE`` (y), ``WT`` (kg), ``SCR`` (mg/dL) and ``SEX`` (1 or "F" = female).
    gfr_cap
        Upper bound (mL/min) on the GFR used by Calvert; default 125 (FDA guidance). ``None``
        switches the cap off.
    context
        Names the dose in error messages.

    Returns
    -------
    float
        The dose in mg.
    """
    amount = float(amount)
    unit, factor = _normalize_dose_unit(unit)
    amount *= factor
    cov = _upper_keys(covariates)
    if unit == "mg":
        return amount
    if unit == "mg/kg":
        wt = _cov(cov, "WT", context, "kg")
        if wt is _MISSING:
            raise RegimenError(
                f"{context} is dosed in mg/kg and needs body weight; missing covariate WT. "
                "Fix: pass covariates={'WT': 70} (kg), on the command line --cov WT=70"
            )
        return amount * wt
    if unit == "mg/m2":
        bsa = _cov(cov, "BSA", context, "m2")
        if bsa is _MISSING:
            wt = _cov(cov, "WT", context, "kg")
            ht = _cov(cov, "HT", context, "cm")
            if wt is _MISSING or ht is _MISSING:
                raise RegimenError(
                    f"{context} is dosed in mg/m2 and needs body-surface area; missing covariate "
                    "BSA (or WT and HT for Mosteller). Fix: pass covariates={'BSA': 1.8} (m2) or "
                    "{'WT': 70, 'HT': 170} (kg, cm); on the command line --cov BSA=1.8"
                )
            if ht < 3:
                raise RegimenError(
                    f"{context}: HT = {_fmt(ht)} looks like metres, but Mosteller needs cm. "
                    "Fix: pass HT in centimetres"
                )
            bsa = mosteller_bsa(wt, ht)
        return amount * bsa
    return calvert_dose_mg(amount, _gfr(cov, context, gfr_cap))


# --------------------------------------------------------------------------------------------
# data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One repeating block of a regimen.

    Parameters
    ----------
    amount : float
        Dose per administration, in ``amount_unit`` (> 0).
    amount_unit : str
        ``"mg"``, ``"mg/kg"``, ``"mg/m2"`` or ``"AUC"`` (target carboplatin AUC in mg·min/mL).
        ``g``/``ug``/``mcg`` (optionally per kg or m²) are converted to mg on construction.
    route : str
        ``"PO"`` (also ``"oral"``), ``"IV"`` or ``"SC"``.
    infusion_min : float or None
        Infusion duration in minutes; ``None`` for a bolus or an oral dose. Not allowed for PO.
    doses_per_day : int
        1 (QD), 2 (BID), 3 (TID), ...; on each dosing day the doses are given at
        0, 24/n, 2·24/n, ... hours. Must divide 24.
    days : tuple of int
        1-based days within the cycle on which to dose, each ``<= cycle_days``.
    cycle_days : float
        Cycle length in days (>= 1).
    n_cycles : int or None
        Number of cycles; ``None`` repeats until the end of the simulation horizon.
    """

    amount: float
    amount_unit: str = "mg"
    route: str = "PO"
    infusion_min: float | None = None
    doses_per_day: int = 1
    days: tuple[int, ...] = (1,)
    cycle_days: float = 1.0
    n_cycles: int | None = None

    def __post_init__(self):
        put = object.__setattr__
        amount = _positive_number(self.amount, "the dose amount", "give a dose > 0, e.g. 12")
        unit, factor = _normalize_dose_unit(self.amount_unit)
        put(self, "amount", amount * factor)
        put(self, "amount_unit", unit)
        put(self, "route", _normalize_route(self.route))
        n = _int(self.doses_per_day, "doses_per_day", "use 1 (QD), 2 (BID), 3 (TID), ...")
        if n not in DOSES_PER_DAY:
            raise RegimenError(
                f"doses_per_day must divide 24 (one of {DOSES_PER_DAY}); got {n}. "
                "Fix: use QD, BID, TID, QID or Q<n>H with n dividing 24"
            )
        put(self, "doses_per_day", n)
        cycle = _positive_number(self.cycle_days, "cycle_days", "give the cycle length, e.g. 21")
        if cycle < 1:
            raise RegimenError(
                f"cycle_days must be at least 1 day; got {_fmt(cycle)}. Fix: for several doses a "
                "day use doses_per_day (BID, TID, Q8H) with a 1-day cycle"
            )
        put(self, "cycle_days", cycle)
        raw_days = (self.days,) if isinstance(self.days, (int, np.integer)) else self.days
        try:
            days = [_int(d, "a dosing day", "use whole 1-based days, e.g. (1, 8, 15)")
                    for d in raw_days]
        except TypeError:
            raise RegimenError(
                f"days must be a sequence of 1-based days; got {self.days!r}. Fix: e.g. (1, 8, 15)"
            ) from None
        if not days:
            raise RegimenError("days is empty. Fix: give at least one dosing day, e.g. (1,)")
        if len(set(days)) != len(days):
            dup = sorted({d for d in days if days.count(d) > 1})
            raise RegimenError(f"day(s) {dup} listed twice. Fix: list each dosing day once")
        days = tuple(sorted(days))
        for d in days:
            if d < 1 or d > cycle:
                fix = (f"use days 1..{math.floor(cycle)} or a cycle of at least {d} days"
                       if d > cycle else "count days from 1 (day 1 = the first day of the cycle)")
                raise RegimenError(
                    f"day {d} is outside the {_fmt(cycle)}-day cycle (days run 1.."
                    f"{math.floor(cycle)}). Fix: {fix}"
                )
        put(self, "days", days)
        if self.n_cycles is not None:
            nc = _int(self.n_cycles, "n_cycles", "give the number of cycles, e.g. 4")
            if nc < 1:
                raise RegimenError(
                    f"the number of cycles must be >= 1; got {nc}. Fix: write x1 or more, or "
                    "leave it out to repeat until the end of the simulation"
                )
            put(self, "n_cycles", nc)
        if self.infusion_min is not None:
            inf = _positive_number(self.infusion_min, "the infusion duration",
                                   "give minutes > 0, e.g. 60, or None for a bolus")
            if self.route == "PO":
                raise RegimenError(
                    f"an oral (PO) dose cannot have an infusion duration ({_fmt(inf)} min). "
                    "Fix: drop the infusion time or use route IV"
                )
            gap = self.min_interval_day * 1440.0
            if inf >= gap - 1e-9:
                raise RegimenError(
                    f"the infusion ({_fmt(inf)} min) is not shorter than the shortest dosing "
                    f"interval ({_fmt(gap)} min) of {self.to_text()!r}. Fix: shorten the infusion "
                    "or space the doses further apart"
                )
            put(self, "infusion_min", inf)

    # ---- derived quantities ----
    @property
    def offsets_day(self) -> np.ndarray:
        """Dose times within one cycle, in days from the cycle start (sorted)."""
        d = np.asarray(self.days, dtype=float) - 1.0
        j = np.arange(self.doses_per_day, dtype=float) / self.doses_per_day
        return (d[:, None] + j[None, :]).ravel()

    @property
    def length_days(self) -> float:
        """Total length in days (``n_cycles * cycle_days``); ``inf`` when it repeats forever."""
        return math.inf if self.n_cycles is None else self.n_cycles * self.cycle_days

    @property
    def min_interval_day(self) -> float:
        """Shortest time between consecutive doses of this phase (``inf`` for a single dose)."""
        off = self.offsets_day
        gaps = list(np.diff(off))
        if self.n_cycles != 1:
            gaps.append(self.cycle_days - (off[-1] - off[0]))
        return float(min(gaps)) if gaps else math.inf

    @property
    def duration_day(self) -> float:
        """Duration of one administration in days (0 for bolus / oral)."""
        return 0.0 if self.infusion_min is None else self.infusion_min / 1440.0

    # ---- transforms ----
    def replace(self, **changes) -> Phase:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_text(self) -> str:
        """Canonical text, e.g. ``'12 mg PO QD D1-14 Q21D'``."""
        if self.amount_unit == "AUC":
            parts = [f"AUC {_fmt(self.amount)}"]
        else:
            parts = [f"{_fmt(self.amount)} {self.amount_unit}"]
        parts.append(self.route)
        if self.infusion_min is not None:
            parts.append(f"{_fmt(self.infusion_min)} min")
        daily = self.cycle_days == 1 and self.days == (1,)
        n = self.doses_per_day
        if n != 1 or self.route == "PO" or daily:
            parts.append(_PER_DAY_TEXT.get(n, f"Q{24 // n}H"))
        if not daily:
            if self.days != (1,):
                parts.append(_day_list_text(self.days))
                parts.append(f"Q{_fmt(self.cycle_days)}D")
            elif self.cycle_days % 7 == 0:
                weeks = int(self.cycle_days // 7)
                parts.append("QW" if weeks == 1 else f"Q{weeks}W")
            else:
                parts.append(f"Q{_fmt(self.cycle_days)}D")
        if self.n_cycles is not None:
            parts.append(f"x{self.n_cycles}")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True)
class Hold:
    """No doses on study days ``from_day..to_day`` (inclusive); ``to_day=None`` = stopped."""

    from_day: int
    to_day: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "from_day", _study_day(self.from_day, "hold from_day"))
        if self.to_day is not None:
            to = _study_day(self.to_day, "hold to_day")
            if to < self.from_day:
                raise RegimenError(
                    f"hold to_day {to} is before from_day {self.from_day}. "
                    f"Fix: write hold D{min(to, self.from_day)}-{max(to, self.from_day)}"
                )
            object.__setattr__(self, "to_day", to)

    def covers(self, t_day: np.ndarray) -> np.ndarray:
        """Boolean mask of dose times (days since time 0) inside the hold."""
        t = np.asarray(t_day, dtype=float)
        inside = t >= self.from_day - 1 - _EPS
        if self.to_day is not None:
            inside &= t < self.to_day - _EPS
        return inside

    def to_text(self) -> str:
        if self.to_day is None:
            return f"stop from D{self.from_day}"
        if self.to_day == self.from_day:
            return f"hold D{self.from_day}"
        return f"hold D{self.from_day}-{self.to_day}"


@dataclass(frozen=True)
class Reduce:
    """From study day ``from_day`` on, every dose is ``amount`` (in ``unit``, or the phase's)."""

    amount: float
    from_day: int
    unit: str | None = None

    def __post_init__(self):
        amount = _positive_number(self.amount, "the reduced dose", "give a dose > 0, e.g. 10")
        if self.unit is not None:
            unit, factor = _normalize_dose_unit(self.unit)
            amount *= factor
            object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "from_day", _study_day(self.from_day, "reduce from_day"))

    def to_text(self) -> str:
        if self.unit is None:
            dose = _fmt(self.amount)
        elif self.unit == "AUC":
            dose = f"AUC {_fmt(self.amount)}"
        else:
            dose = f"{_fmt(self.amount)} {self.unit}"
        return f"reduce to {dose} from D{self.from_day}"


Modification = Hold | Reduce


def _mod_key(m: Modification):
    if isinstance(m, Hold):
        return (m.from_day, 0, math.inf if m.to_day is None else m.to_day, 0.0, "")
    return (m.from_day, 1, 0, m.amount, m.unit or "")


class Doses:
    """Concrete doses of one regimen (all arrays have one entry per dose, sorted by time).

    Attributes
    ----------
    time_day : ndarray of float
        Dose (start) time in days since time 0 (study day 1).
    amount_mg : ndarray of float
        Dose in mg.
    duration_day : ndarray of float
        Infusion duration in days (0 for bolus / oral).
    route : ndarray of str
        ``"PO"``, ``"IV"`` or ``"SC"``.
    phase_index, cycle_index : ndarray of int
        0-based phase of the regimen and 0-based cycle within that phase.
    cycle_start_day : ndarray of float
        Start time (days) of the cycle the dose belongs to.
    drug : str or None
        The regimen's drug.
    """

    __slots__ = ("time_day", "amount_mg", "duration_day", "route", "phase_index",
                 "cycle_index", "cycle_start_day", "drug")

    def __init__(self, time_day, amount_mg, duration_day, route, phase_index, cycle_index,
                 cycle_start_day, drug=None):
        arrays = dict(
            time_day=np.asarray(time_day, dtype=float),
            amount_mg=np.asarray(amount_mg, dtype=float),
            duration_day=np.asarray(duration_day, dtype=float),
            route=np.asarray(route, dtype="<U2"),
            phase_index=np.asarray(phase_index, dtype=int),
            cycle_index=np.asarray(cycle_index, dtype=int),
            cycle_start_day=np.asarray(cycle_start_day, dtype=float),
        )
        for name, a in arrays.items():
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        object.__setattr__(self, "drug", drug)

    def __setattr__(self, name, value):
        raise AttributeError("Doses is immutable")

    def __len__(self) -> int:
        return int(self.time_day.shape[0])

    def __repr__(self) -> str:
        return f"Doses(drug={self.drug!r}, n={len(self)})"

    def to_frame(self) -> pd.DataFrame:
        """One row per dose (columns named like the attributes, plus ``drug``)."""
        df = pd.DataFrame({name: getattr(self, name) for name in self.__slots__[:-1]})
        df.insert(0, "drug", self.drug)
        return df


class Cycles(NamedTuple):
    """Cycles that start before the horizon: start time and length (days), phase, cycle."""

    start_day: np.ndarray
    length_day: np.ndarray
    phase_index: np.ndarray
    cycle_index: np.ndarray


class DoseArrays(NamedTuple):
    """Fixed-shape dose arrays (a JAX pytree). Padding: amount 0, mask 0, duration 0 and the
    time of the last real dose (0 when there is none), so no infinities reach gradients."""

    time: jnp.ndarray
    amount: jnp.ndarray
    duration: jnp.ndarray
    mask: jnp.ndarray


def _pad_arrays(time, amount, duration, n: int, max_doses: int | None, who: str) -> DoseArrays:
    size = n if max_doses is None else _int(max_doses, "max_doses", "give a whole number")
    if size < n:
        raise RegimenError(
            f"{who} has {n} doses but max_doses is {size}. Fix: pass max_doses >= {n} "
            "(or None for exactly the number of doses)"
        )
    pad = size - n
    last = float(time[-1]) if n else 0.0
    t = np.concatenate([np.asarray(time, float), np.full(pad, last)])
    a = np.concatenate([np.asarray(amount, float), np.zeros(pad)])
    d = np.concatenate([np.asarray(duration, float), np.zeros(pad)])
    m = np.concatenate([np.ones(n), np.zeros(pad)])
    f = jnp.float64
    return DoseArrays(jnp.asarray(t, f), jnp.asarray(a, f), jnp.asarray(d, f), jnp.asarray(m, f))


def stack_arrays(arrays: Sequence[DoseArrays], max_doses: int | None = None) -> DoseArrays:
    """Pad several :class:`DoseArrays` to a common length and stack them (leading axis).

    Parameters
    ----------
    arrays
        One :class:`DoseArrays` per subject (e.g. from :meth:`Regimen.to_arrays` with each
        subject's covariates).
    max_doses
        Common length; default the longest number of real doses.

    Returns
    -------
    DoseArrays
        Arrays of shape ``(len(arrays), max_doses)``, ready for ``jax.vmap``.
    """
    if len(arrays) == 0:
        raise RegimenError("stack_arrays got no arrays. Fix: pass one DoseArrays per subject")
    trimmed = []
    for k, arr in enumerate(arrays):
        mask = np.asarray(arr.mask)
        n = int(mask.sum())
        if not np.all(mask[:n] == 1):
            raise RegimenError(
                f"arrays[{k}] has padding before real doses. Fix: build it with to_arrays"
            )
        trimmed.append((np.asarray(arr.time)[:n], np.asarray(arr.amount)[:n],
                        np.asarray(arr.duration)[:n], n))
    size = max(n for *_, n in trimmed) if max_doses is None else max_doses
    padded = [_pad_arrays(t, a, d, n, size, f"arrays[{k}]")
              for k, (t, a, d, n) in enumerate(trimmed)]
    return DoseArrays(*(jnp.stack(xs) for xs in zip(*padded)))


def _horizon(days, total: float, who: str) -> float:
    if days is None:
        if math.isinf(total):
            raise RegimenError(
                f"{who} repeats until the end of the simulation, so the horizon is needed. "
                "Fix: pass days=<horizon in days>, e.g. days=365"
            )
        return total
    try:
        h = float(days)
    except (TypeError, ValueError):
        raise RegimenError(
            f"days must be a number of days; got {days!r}. Fix: e.g. days=365"
        ) from None
    if math.isnan(h) or h < 0:
        raise RegimenError(f"days must be >= 0; got {days!r}. Fix: e.g. days=365")
    if math.isinf(h):
        if math.isinf(total):
            raise RegimenError(
                f"{who} repeats forever and days is infinite. Fix: pass a finite days=<horizon>"
            )
        return total
    return h


@dataclass(frozen=True)
class Regimen:
    """A dosing regimen: phases run one after the other, plus holds and reductions.

    Parameters
    ----------
    phases : tuple of Phase
        Phase ``k + 1`` starts when phase ``k``'s ``n_cycles`` cycles are done; only the last
        phase may have ``n_cycles=None`` (repeat until the horizon). A single Phase is accepted.
    drug : str or None
        Drug name (used by :class:`Protocol` and in the text form as ``drug: ...``).
    start_day : float
        Offset in days of the first cycle on the shared cycle clock (time of study day
        ``start_day + 1``); text ``start D85`` means ``start_day=84``.
    modifications : tuple of Hold and Reduce
        Kept sorted by ``from_day``; use :meth:`hold` and :meth:`reduce` to add them.
    """

    phases: tuple[Phase, ...]
    drug: str | None = None
    start_day: float = 0.0
    modifications: tuple[Modification, ...] = ()

    def __post_init__(self):
        phases = (self.phases,) if isinstance(self.phases, Phase) else tuple(self.phases)
        if not phases:
            raise RegimenError("a regimen needs at least one phase. Fix: pass phases=(Phase(...),)")
        for k, p in enumerate(phases):
            if not isinstance(p, Phase):
                raise RegimenError(
                    f"phase {k + 1} is a {type(p).__name__}, not a Phase. Fix: build it with "
                    "Phase(...) or parse_regimen('...')"
                )
            if p.n_cycles is None and k < len(phases) - 1:
                raise RegimenError(
                    f"phase {k + 1} ({p.to_text()!r}) has no number of cycles, so it never ends "
                    f"and phase {k + 2} would never start. Fix: give phase {k + 1} n_cycles "
                    "(text: add e.g. 'x4' before 'then')"
                )
        for k in range(len(phases) - 1):
            a, b = phases[k], phases[k + 1]
            if a.infusion_min is None:
                continue
            last = a.length_days - a.cycle_days + a.offsets_day[-1]
            gap = a.length_days + b.offsets_day[0] - last
            if a.infusion_min >= gap * 1440 - 1e-9:
                raise RegimenError(
                    f"the last infusion of phase {k + 1} ({_fmt(a.infusion_min)} min) overlaps "
                    f"the first dose of phase {k + 2}. Fix: shorten the infusion"
                )
        object.__setattr__(self, "phases", phases)
        if self.drug is not None and (not isinstance(self.drug, str) or not self.drug.strip()):
            raise RegimenError(f"drug must be a non-empty name; got {self.drug!r}. Fix: e.g. "
                               "drug='anlotinib'")
        start = self.start_day
        if isinstance(start, bool) or not isinstance(start, (int, float, np.number)) or not (
            math.isfinite(float(start)) and float(start) >= 0
        ):
            raise RegimenError(
                f"start_day must be a finite number of days >= 0; got {start!r}. Fix: e.g. "
                "start_day=84 to start on study day 85"
            )
        object.__setattr__(self, "start_day", float(start))
        mods = tuple(self.modifications)
        for m in mods:
            if not isinstance(m, (Hold, Reduce)):
                raise RegimenError(
                    f"modifications must be Hold or Reduce; got {m!r}. Fix: use "
                    "Regimen.hold(...) and Regimen.reduce(...)"
                )
        mods = tuple(sorted(mods, key=_mod_key))
        reduce_days = [m.from_day for m in mods if isinstance(m, Reduce)]
        if len(set(reduce_days)) != len(reduce_days):
            dup = sorted({d for d in reduce_days if reduce_days.count(d) > 1})
            raise RegimenError(
                f"two dose reductions start on the same day (D{dup[0]}). Fix: keep one of them"
            )
        object.__setattr__(self, "modifications", mods)

    # ---- construction ----
    @classmethod
    def from_text(cls, text: str) -> Regimen:
        """Same as :func:`parse_regimen`."""
        return parse_regimen(text)

    def hold(self, from_day: int, to_day: int | None = None) -> Regimen:
        """No doses on study days ``from_day..to_day`` inclusive (1-based, day 1 = time 0).

        ``to_day=None`` stops the drug permanently from ``from_day``. Holds skip doses; they do
        not shift the cycle clock. Returns a new Regimen.
        """
        return self._with_mod(Hold(from_day, to_day))

    def stop(self, from_day: int) -> Regimen:
        """Permanent discontinuation from study day ``from_day`` (``hold(from_day, None)``)."""
        return self.hold(from_day, None)

    def reduce(self, amount: float, from_day: int, unit: str | None = None) -> Regimen:
        """Every dose on/after study day ``from_day`` becomes ``amount``.

        ``unit=None`` keeps each phase's own unit. Several reductions stack in day order (the
        latest one that has started applies), e.g. ``.reduce(10, 43).reduce(8, 85)``.
        Returns a new Regimen.
        """
        return self._with_mod(Reduce(amount, from_day, unit))

    def _with_mod(self, mod: Modification) -> Regimen:
        return dataclasses.replace(self, modifications=self.modifications + (mod,))

    def then(self, other: Phase | Regimen) -> Regimen:
        """Append a phase (or another regimen's phases) after the last phase."""
        extra = (other,) if isinstance(other, Phase) else tuple(other.phases)
        return dataclasses.replace(self, phases=self.phases + extra)

    def with_drug(self, drug: str | None) -> Regimen:
        """A copy with another drug name."""
        return dataclasses.replace(self, drug=drug)

    def start_on(self, study_day: int) -> Regimen:
        """A copy whose first cycle starts on study day ``study_day`` (1-based)."""
        return dataclasses.replace(self, start_day=float(_study_day(study_day, "start day") - 1))

    # ---- schedule ----
    @property
    def total_days(self) -> float:
        """``start_day`` plus the length of all phases (``inf`` if the last one never ends)."""
        return self.start_day + sum(p.length_days for p in self.phases)

    def _who(self) -> str:
        return f"the {self.drug} regimen" if self.drug else "the regimen"

    def expansion(self, days: float | None = None) -> tuple[int, int]:
        """Upper bounds on the number of cycles and of doses within ``days`` (default: the end
        of the regimen), counted without allocating anything (holds not subtracted).

        Raises :class:`RegimenError` when they exceed :data:`MAX_CYCLES` or :data:`MAX_DOSES`.
        """
        horizon = _horizon(days, self.total_days, self._who())
        n_cycles = n_doses = 0
        t0 = self.start_day
        for p in self.phases:
            if t0 >= horizon:
                break
            n = math.ceil((horizon - t0) / p.cycle_days) + 1
            if p.n_cycles is not None:
                n = min(n, p.n_cycles)
            n_cycles += n
            n_doses += n * len(p.days) * p.doses_per_day
            t0 = t0 + p.length_days
        if n_doses > MAX_DOSES or n_cycles > MAX_CYCLES:
            what, n, most = (("doses", n_doses, MAX_DOSES) if n_doses > MAX_DOSES
                             else ("cycles", n_cycles, MAX_CYCLES))
            raise RegimenError(
                f"{self._who()} ({self.to_text()!r}) expands to {n} {what} within "
                f"{_fmt(horizon)} days; at most {most} are allowed. Fix: use a shorter horizon "
                "(days); steady state is usually reached within a few cycles")
        return n_cycles, n_doses

    def cycle_starts(self, days: float | None = None) -> Cycles:
        """Every cycle that starts before ``days`` (default: the end of the regimen).

        Returns
        -------
        Cycles
            ``start_day`` (0-based time in days), ``length_day``, ``phase_index`` and
            ``cycle_index`` (0-based within the phase). Holds and stops do not change the cycle
            clock, so cycles after a stop are still listed.
        """
        horizon = _horizon(days, self.total_days, self._who())
        self.expansion(horizon)
        starts, lengths, phase_idx, cycle_idx = [], [], [], []
        t0 = self.start_day
        for k, p in enumerate(self.phases):
            if t0 >= horizon:
                break
            n = math.ceil((horizon - t0) / p.cycle_days) + 1
            if p.n_cycles is not None:
                n = min(n, p.n_cycles)
            c = np.arange(n)
            s = t0 + c * p.cycle_days
            keep = s < horizon
            starts.append(s[keep])
            cycle_idx.append(c[keep])
            lengths.append(np.full(int(keep.sum()), p.cycle_days))
            phase_idx.append(np.full(int(keep.sum()), k))
            t0 = t0 + p.length_days
        if not starts:
            empty = np.zeros(0)
            return Cycles(empty, empty.copy(), np.zeros(0, int), np.zeros(0, int))
        return Cycles(np.concatenate(starts), np.concatenate(lengths),
                      np.concatenate(phase_idx).astype(int), np.concatenate(cycle_idx).astype(int))

    def doses(
        self,
        covariates: Mapping[str, float] | None = None,
        days: float | None = None,
        *,
        gfr_cap: float | None = GFR_CAP_ML_MIN,
    ) -> Doses:
        """Every dose with time < ``days``, resolved to mg for one patient.

        Parameters
        ----------
        covariates
            Patient covariates (see :func:`resolve_dose_mg`); only needed for mg/kg, mg/m2 and
            AUC doses that fall inside the horizon.
        days
            Horizon in days since time 0; default the end of the regimen (required when the
            last phase repeats forever).
        gfr_cap
            Cap (mL/min) on the GFR used for AUC dosing; ``None`` for no cap.

        Returns
        -------
        Doses
        """
        t, ph, ci, cs = self._schedule(days)
        amounts = np.empty(t.shape)
        cache: dict[tuple, float] = {}
        for i, (key, context) in enumerate(self._dose_keys(t, ph)):
            if key not in cache:
                who = f"{context} of {self._who()}"
                cache[key] = resolve_dose_mg(*key, covariates, gfr_cap=gfr_cap, context=who)
            amounts[i] = cache[key]
        dur = np.array([self.phases[k].duration_day for k in ph], dtype=float)
        route = [self.phases[k].route for k in ph]
        return Doses(t, amounts, dur, route, ph, ci, cs, drug=self.drug)

    def _schedule(self, days: float | None):
        """Dose times (days) with their phase, cycle and cycle-start day, holds applied, in
        time order: the part of :meth:`doses` that does not depend on the patient."""
        horizon = _horizon(days, self.total_days, self._who())
        cyc = self.cycle_starts(horizon)
        times, phase_idx, cycle_idx, cstart = [], [], [], []
        for k, p in enumerate(self.phases):
            sel = cyc.phase_index == k
            if not sel.any():
                continue
            s = cyc.start_day[sel]
            t = (s[:, None] + p.offsets_day[None, :]).ravel()
            times.append(t)
            phase_idx.append(np.full(t.shape, k))
            cycle_idx.append(np.repeat(cyc.cycle_index[sel], p.offsets_day.size))
            cstart.append(np.repeat(s, p.offsets_day.size))
        if times:
            t = np.concatenate(times)
            ph = np.concatenate(phase_idx).astype(int)
            ci = np.concatenate(cycle_idx).astype(int)
            cs = np.concatenate(cstart)
        else:
            t, cs = np.zeros(0), np.zeros(0)
            ph, ci = np.zeros(0, int), np.zeros(0, int)
        keep = t < horizon
        for m in self.modifications:
            if isinstance(m, Hold):
                keep &= ~m.covers(t)
        order = np.argsort(t[keep], kind="stable")
        t, ph, ci, cs = (a[keep][order] for a in (t, ph, ci, cs))
        return t, ph, ci, cs

    def _dose_keys(self, t: np.ndarray, ph: np.ndarray) -> list[tuple[tuple, str]]:
        """Per dose: its ``(amount, unit)`` (a reduction overrides its phase) and a description
        for messages."""
        spec_idx = np.full(t.shape, -1)
        reductions = [m for m in self.modifications if isinstance(m, Reduce)]
        for r, m in enumerate(reductions):
            spec_idx[t >= m.from_day - 1 - _EPS] = r
        out = []
        for i in range(t.size):
            p = self.phases[ph[i]]
            if spec_idx[i] < 0:
                out.append(((p.amount, p.amount_unit), f"phase {ph[i] + 1} ({p.to_text()!r})"))
            else:
                m = reductions[spec_idx[i]]
                out.append(((m.amount, m.unit or p.amount_unit),
                            f"the reduction ({m.to_text()!r}) in phase {ph[i] + 1}"))
        return out

    def doses_per_patient(self, covariates, days: float | None = None, *,
                          gfr_cap: float | None = GFR_CAP_ML_MIN) -> tuple[Doses, np.ndarray]:
        """The doses of a population: one schedule (the same for every patient) and the amounts
        resolved per patient.

        ``covariates`` is a sequence of per-patient mappings (or a pandas DataFrame, one row
        per patient). Returns the :class:`Doses` of the first patient and the amounts in mg,
        shape ``(n_patients, n_doses)``; row ``i`` equals ``doses(covariates[i]).amount_mg``.
        """
        rows = covariates.to_dict("records") if hasattr(covariates, "to_dict") else list(
            covariates)
        if not rows:
            raise RegimenError(f"{self._who()}: no patients. Fix: give one covariate row per "
                               "patient")
        try:
            first = self.doses(rows[0], days, gfr_cap=gfr_cap)
        except RegimenError as e:
            raise type(e)(f"patient 1: {e}") from None
        t, ph, _, _ = self._schedule(days)
        keys = self._dose_keys(t, ph)
        amounts = np.empty((len(rows), t.size))
        for key in {k for k, _ in keys}:
            cols = [i for i, (k, _) in enumerate(keys) if k == key]
            context = f"{keys[cols[0]][1]} of {self._who()}"
            vals = np.empty(len(rows))
            for j, row in enumerate(rows):
                try:
                    vals[j] = resolve_dose_mg(*key, row, gfr_cap=gfr_cap, context=context)
                except RegimenError as e:
                    raise type(e)(f"patient {j + 1}: {e}") from None
            amounts[:, cols] = vals[:, None]
        return first, amounts

    def to_arrays(
        self,
        covariates: Mapping[str, float] | None = None,
        days: float | None = None,
        max_doses: int | None = None,
        *,
        gfr_cap: float | None = GFR_CAP_ML_MIN,
    ) -> DoseArrays:
        """Fixed-shape float64 arrays ``time`` (days), ``amount`` (mg), ``duration`` (days),
        ``mask`` (1 real dose, 0 padding) of length ``max_doses`` (default: number of doses).

        Padding entries repeat the last real dose time with amount 0, duration 0 and mask 0.
        Raises :class:`RegimenError` when ``max_doses`` is smaller than the number of doses.
        """
        d = self.doses(covariates, days, gfr_cap=gfr_cap)
        return _pad_arrays(d.time_day, d.amount_mg, d.duration_day, len(d), max_doses,
                           self._who())

    def to_event_table(
        self,
        covariates: Mapping[str, float] | None = None,
        days: float | None = None,
        cmt: int | Mapping[str, int] = 1,
        id: int = 1,  # noqa: A002 - NONMEM's name
        time_unit: str = "h",
        *,
        gfr_cap: float | None = GFR_CAP_ML_MIN,
    ) -> pd.DataFrame:
        """NONMEM-style dosing records, one row per dose.

        Columns ``ID, TIME, EVID, AMT, CMT, RATE, II, ADDL, SS, MDV``: EVID = MDV = 1,
        AMT in mg, TIME in ``time_unit``, RATE = AMT / duration (mg per ``time_unit``) for
        infusions and 0 for bolus / oral, II = ADDL = SS = 0 (every dose is listed).
        ``cmt`` is one compartment for every dose or a mapping route (PO/IV/SC) -> compartment.
        ``df.attrs`` holds ``time_unit`` and ``amt_unit`` (``"mg"``).
        """
        d = self.doses(covariates, days, gfr_cap=gfr_cap)
        return _event_frame([(d, cmt)], id, time_unit)

    # ---- text ----
    def to_text(self) -> str:
        """Canonical text; ``parse_regimen(r.to_text()) == r``."""
        parts = [" then ".join(p.to_text() for p in self.phases)]
        if self.start_day:
            if self.start_day.is_integer():
                parts.append(f"start D{int(self.start_day) + 1}")
            else:
                parts.append(f"delay {_fmt(self.start_day)} d")
        parts += [m.to_text() for m in self.modifications]
        text = "; ".join(parts)
        return text if self.drug is None else f"{_drug_text(self.drug)}: {text}"

    def __str__(self) -> str:
        return self.to_text()


def _cmt_for(cmt, route: str, who: str) -> int:
    if isinstance(cmt, Mapping):
        norm = {_normalize_route(k): v for k, v in cmt.items()}
        if route not in norm:
            raise RegimenError(
                f"{who} has {route} doses but cmt has no compartment for {route}; got {dict(cmt)}."
                f" Fix: add it, e.g. cmt={{'{route}': 1, ...}}"
            )
        cmt = norm[route]
    return _int(cmt, "cmt", "give a compartment number, e.g. cmt=1")


def _event_frame(items, id, time_unit: str) -> pd.DataFrame:  # noqa: A002
    unit = normalize_time_unit(time_unit)
    f = time_factor("day", unit)
    rows = []
    for d, cmt in items:
        who = f"the {d.drug} regimen" if d.drug else "the regimen"
        for i in range(len(d)):
            amt = float(d.amount_mg[i])
            dur = float(d.duration_day[i]) * f
            rows.append((id, float(d.time_day[i]) * f, 1, amt, _cmt_for(cmt, d.route[i], who),
                         amt / dur if dur > 0 else 0.0, 0.0, 0, 0, 1))
    cols = ["ID", "TIME", "EVID", "AMT", "CMT", "RATE", "II", "ADDL", "SS", "MDV"]
    df = pd.DataFrame(rows, columns=cols)
    df = df.sort_values(["TIME", "CMT"], kind="stable").reset_index(drop=True)
    df = df.astype({"EVID": int, "CMT": int, "ADDL": int, "SS": int, "MDV": int,
                    "TIME": float, "AMT": float, "RATE": float, "II": float})
    df.attrs["time_unit"] = unit
    df.attrs["amt_unit"] = "mg"
    return df


@dataclass(frozen=True)
class Protocol(Mapping):
    """Several drugs on one shared cycle clock (study day 1 = time 0 for all).

    Build it from a mapping ``drug -> Regimen`` (``Protocol({"anlotinib": r1, ...})``) or with
    :func:`parse_protocol`. A regimen without a drug name takes its key; a different name is an
    error. It behaves as a read-only mapping.
    """

    regimens: tuple[tuple[str, Regimen], ...]

    def __post_init__(self):
        items = self.regimens.items() if isinstance(self.regimens, Mapping) else self.regimens
        out = []
        for name, reg in items:
            if not isinstance(reg, Regimen):
                raise RegimenError(f"Protocol[{name!r}] is not a Regimen. Fix: use Regimen(...) "
                                   "or parse_regimen('...')")
            if reg.drug is None:
                reg = reg.with_drug(name)
            elif reg.drug != name:
                raise RegimenError(
                    f"the regimen for {reg.drug!r} is stored under {name!r}. Fix: use the same "
                    "name, or reg.with_drug(name)"
                )
            out.append((name, reg))
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise RegimenError(f"a drug appears twice in the protocol ({names}). Fix: merge them")
        if not out:
            raise RegimenError("a protocol needs at least one regimen. Fix: {'drug': Regimen}")
        object.__setattr__(self, "regimens", tuple(out))

    @classmethod
    def from_regimens(cls, *regimens: Regimen) -> Protocol:
        """Build from regimens that carry their drug names."""
        for r in regimens:
            if r.drug is None:
                raise RegimenError("a regimen has no drug name. Fix: regimen.with_drug('name')")
        return cls(tuple((r.drug, r) for r in regimens))

    @classmethod
    def from_text(cls, text: str) -> Protocol:
        """Same as :func:`parse_protocol`."""
        return parse_protocol(text)

    def __getitem__(self, drug: str) -> Regimen:
        for name, reg in self.regimens:
            if name == drug:
                return reg
        raise KeyError(drug)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.regimens)

    def __len__(self) -> int:
        return len(self.regimens)

    def with_regimen(self, drug: str, regimen: Regimen) -> Protocol:
        """A copy with ``drug``'s regimen replaced (or added)."""
        items = dict(self.regimens)
        items[drug] = regimen if regimen.drug is not None else regimen.with_drug(drug)
        return Protocol(tuple(items.items()))

    def hold(self, from_day: int, to_day: int | None = None, drugs=None) -> Protocol:
        """Hold ``drugs`` (default all) on study days ``from_day..to_day``."""
        chosen = set(self) if drugs is None else {drugs} if isinstance(drugs, str) else set(drugs)
        unknown = chosen - set(self)
        if unknown:
            raise RegimenError(f"unknown drug(s) {sorted(unknown)}. Fix: use one of {list(self)}")
        return Protocol(tuple((n, r.hold(from_day, to_day) if n in chosen else r)
                              for n, r in self.regimens))

    @property
    def total_days(self) -> float:
        """End of the longest regimen (``inf`` if one repeats forever)."""
        return max(r.total_days for _, r in self.regimens)

    def doses(self, covariates=None, days: float | None = None, *,
              gfr_cap: float | None = GFR_CAP_ML_MIN) -> dict[str, Doses]:
        """Each drug's :class:`Doses` (same clock, same covariates), keyed by drug name."""
        horizon = _horizon(days, self.total_days, "the protocol")
        return {n: r.doses(covariates, horizon, gfr_cap=gfr_cap) for n, r in self.regimens}

    def to_arrays(self, covariates=None, days: float | None = None,
                  max_doses: int | Mapping[str, int] | None = None, *,
                  gfr_cap: float | None = GFR_CAP_ML_MIN) -> dict[str, DoseArrays]:
        """Each drug's :class:`DoseArrays` (``max_doses`` may be a per-drug mapping)."""
        horizon = _horizon(days, self.total_days, "the protocol")
        out = {}
        for n, r in self.regimens:
            md = max_doses.get(n) if isinstance(max_doses, Mapping) else max_doses
            out[n] = r.to_arrays(covariates, horizon, md, gfr_cap=gfr_cap)
        return out

    def to_event_table(self, covariates=None, days: float | None = None,
                       cmt: Mapping[str, int | Mapping[str, int]] | int | None = None,
                       id: int = 1, time_unit: str = "h", *,  # noqa: A002
                       gfr_cap: float | None = GFR_CAP_ML_MIN) -> pd.DataFrame:
        """All drugs' dosing records in one table sorted by TIME then CMT.

        ``cmt`` maps drug -> compartment (or drug -> {route: compartment}); a single int is
        only accepted for a one-drug protocol.
        """
        if not isinstance(cmt, Mapping):
            if len(self) > 1 or cmt is None:
                raise RegimenError(
                    "each drug needs its own dosing compartment. Fix: pass cmt="
                    + "{" + ", ".join(f"'{n}': {k + 1}" for k, n in enumerate(self)) + "}"
                )
            cmt = {next(iter(self)): cmt}
        missing = [n for n in self if n not in cmt]
        if missing:
            raise RegimenError(f"cmt has no compartment for {missing}. Fix: add them to cmt")
        d = self.doses(covariates, days, gfr_cap=gfr_cap)
        return _event_frame([(d[n], cmt[n]) for n in self], id, time_unit)

    def to_text(self) -> str:
        """One ``drug: regimen`` line per drug; ``parse_protocol(p.to_text()) == p``."""
        return "\n".join(r.to_text() for _, r in self.regimens)

    def __str__(self) -> str:
        return self.to_text()


# --------------------------------------------------------------------------------------------
# text form: tokenizer + recursive-descent parser
# --------------------------------------------------------------------------------------------

_WORD = r"[^\W\d_](?:[^\W_]|[/^](?=[^\W_])|\.(?=\d))*"
_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)"
    rf"|(?P<word>{_WORD})"
    r"|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<punct>[-–—,;:=×])"
)
_WORD_RE = re.compile(_WORD)
_Q_RE = re.compile(r"Q(\d+(?:\.\d+)?)?([DWH])")
_FIX_FREQ = "frequencies look like Q21D, Q3W, QW, QD, BID, TID, Q12H"
_FIX_DAYS = "day lists look like D1-14, D1,8,15 or D1-3,8 (1-based days of the cycle)"
_FIX_DOSE = "a phase starts with its dose, e.g. '12 mg', '100 mg/m2', '20 mg/kg' or 'AUC 5'"
_FIX_OPTION = (
    "after the dose expected a route (PO, IV, SC), an infusion time (60 min, over 1 h), a "
    "frequency (QD, BID, Q12H), a day list (D1-14), a cycle length (Q21D, Q3W), a number of "
    "cycles (x4), 'then' or ';'"
)
_FIX_CLAUSE = (
    "clauses after ';' look like 'hold D22-28', 'hold D22', 'stop from D100', "
    "'reduce to 10 mg from D43', 'start D85' or 'delay 3 d'"
)


def _drug_text(name: str) -> str:
    if _WORD_RE.fullmatch(name):
        return name
    for q in ('"', "'"):
        if q not in name:
            return f"{q}{name}{q}"
    raise RegimenError(f"drug name {name!r} contains both quote characters and cannot be "
                       "written as text. Fix: rename the drug")


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, word, str, punct, end
    text: str
    pos: int  # 0-based offset in the source text

    @property
    def up(self) -> str:
        t = self.text.upper()
        return {"–": "-", "—": "-", "×": "X"}.get(t, t)


def _tokenize(text: str) -> list[_Tok]:
    toks, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise RegimenError(
                f"could not read {text[pos]!r} at character {pos + 1} in {text!r}. Fix: remove "
                "it; regimens use words, numbers and - , ; : (e.g. '12 mg PO QD D1-14 Q21D')"
            )
        if m.lastgroup != "ws":
            toks.append(_Tok(m.lastgroup, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    """Recursive descent over the token list; one instance per text."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise RegimenError(f"a regimen text must be a string; got {type(text).__name__}. "
                               "Fix: e.g. parse_regimen('12 mg PO QD D1-14 Q21D')")
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    # ---- token access ----
    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.peek()
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def error(self, tok: _Tok, fix: str, problem: str | None = None) -> RegimenError:
        if tok.kind == "end":
            msg = f"the text ends too early at character {tok.pos + 1} in {self.text!r}"
        else:
            msg = f"could not read {tok.text!r} at character {tok.pos + 1} in {self.text!r}"
        if problem:
            msg += f" ({problem})"
        return RegimenError(f"{msg}. Fix: {fix}")

    def accept(self, *words: str) -> _Tok | None:
        if self.peek().kind in ("word", "punct") and self.peek().up in words:
            return self.next()
        return None

    def number(self, fix: str, integer: bool = False) -> tuple[float, _Tok]:
        """A number token (decimal or scientific: ``12``, ``0.5``, ``1.2e1``)."""
        tok = self.next()
        if tok.kind != "num":
            raise self.error(tok, fix)
        x = float(tok.text)
        if not math.isfinite(x):
            raise self.error(tok, fix, "the number is too large")
        if integer:
            if not x.is_integer():
                raise self.error(tok, fix, "expected a whole number")
            return int(x), tok
        return x, tok

    # ---- grammar ----
    def regimen(self) -> Regimen:
        drug = None
        if self.peek().kind in ("word", "str") and self.peek(1).text == ":":
            tok = self.next()
            drug = tok.text[1:-1] if tok.kind == "str" else tok.text
            self.next()
        phases = [self.phase(1)]
        while self.peek().up == "THEN":
            then = self.next()
            if phases[-1].n_cycles is None:
                raise self.error(
                    then, "add the number of cycles before 'then', e.g. '... Q3W x4 then ...'",
                    f"phase {len(phases)} has no xN, so it never ends and the next phase "
                    "would never start",
                )
            phases.append(self.phase(len(phases) + 1))
        clauses = []
        while self.accept(";"):
            if self.peek().kind == "end":
                break
            clauses.append(self.clause())
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(tok, "expected 'then', ';' or the end of the text")
        start = None
        for kind, value, tok in clauses:
            if kind == "start":
                if start is not None:
                    raise self.error(tok, "give the start (start D.. or delay ..) once")
                start = value
        try:
            reg = Regimen(tuple(phases), drug=drug, start_day=start or 0.0)
            for kind, value, _tok in clauses:
                if kind == "hold":
                    reg = reg.hold(*value)
                elif kind == "reduce":
                    reg = reg.reduce(*value)
        except RegimenError as e:
            raise RegimenError(f"in {self.text!r}: {e}") from None
        return reg

    def dose(self, unit_optional: bool = False) -> tuple[float, str | None]:
        tok = self.peek()
        m = (re.fullmatch(r"AUC((?:\d+(?:\.\d+)?|\.\d+)(?:E[-+]?\d+)?)?", tok.up)
             if tok.kind == "word" else None)
        if m:
            self.next()
            if m.group(1):
                return float(m.group(1)), "AUC"
            self.accept("=")
            amount, _ = self.number("write the target AUC as 'AUC 5' (mg*min/mL)")
            return amount, "AUC"
        if tok.text in ("-", "–", "—") and self.peek(1).kind == "num":
            raise self.error(tok, "give a positive dose, e.g. '12 mg'", "the dose must be > 0")
        amount, _ = self.number(_FIX_DOSE)
        unit_tok = self.peek()
        if unit_optional and (
            unit_tok.kind != "word" or unit_tok.up in ("FROM", "ON") or self._is_day_ref()
        ):
            return amount, None
        if unit_tok.kind != "word":
            raise self.error(unit_tok, "give the dose unit: mg, mg/kg, mg/m2 (or AUC 5)")
        try:
            _normalize_dose_unit(unit_tok.text)
        except UnitError:
            raise RegimenUnitError(
                str(self.error(unit_tok, "dose units are mg, mg/kg, mg/m2 (g, ug, mcg also work) "
                               "or 'AUC 5'", "unknown dose unit"))
            ) from None
        self.next()
        return amount, unit_tok.text

    def phase(self, number: int) -> Phase:
        first = self.peek()
        amount, unit = self.dose()
        fields: dict[str, tuple[object, _Tok]] = {}

        def put(key: str, value, tok: _Tok, what: str):
            if key in fields:
                raise self.error(tok, f"give the {what} once per phase",
                                 f"{what} already given as {fields[key][1].text!r}")
            fields[key] = (value, tok)

        while True:
            tok = self.peek()
            up = tok.up
            if tok.kind == "end" or up in (";", "THEN"):
                break
            if tok.kind == "word" and up in _ROUTE_ALIASES:
                put("route", _ROUTE_ALIASES[up], self.next(), "route")
            elif up == "OVER" or (tok.kind == "num" and self.peek(1).up not in
                                  ("CYCLE", "CYCLES")):
                put("infusion_min", self.infusion(), tok, "infusion time")
            elif tok.kind == "num":
                n, _ = self.number("write the number of cycles as x4", integer=True)
                self.next()
                put("n_cycles", n, tok, "number of cycles")
            elif up in _PER_DAY_WORDS:
                put("doses_per_day", _PER_DAY_WORDS[self.next().up], tok, "doses per day")
            elif tok.kind == "word" and up == "QOD":
                self.next()
                put("cycle_days", 2.0, tok, "cycle length")
            elif tok.kind == "word" and _Q_RE.fullmatch(up):
                kind, value = self.frequency()
                put(kind, value, tok, "doses per day" if kind == "doses_per_day"
                    else "cycle length")
            elif tok.kind == "word" and up.startswith("Q"):
                raise self.error(tok, _FIX_FREQ)
            elif self._is_day_ref():
                put("days", self.day_list(), tok, "day list")
            elif tok.kind == "word" and re.fullmatch(r"D[\d.,-]*", up):
                raise self.error(tok, _FIX_DAYS)
            elif up == "X" or (tok.kind == "word" and re.fullmatch(r"X\d+", up)):
                self.next()
                if up == "X":
                    n, _ = self.number("write the number of cycles as x4", integer=True)
                else:
                    n = int(up[1:])
                put("n_cycles", n, tok, "number of cycles")
            else:
                raise self.error(tok, _FIX_OPTION)
        if "route" not in fields:
            raise self.error(self.peek(), "add the route after the dose: PO, IV or SC",
                             f"phase {number} has no route")
        if "days" in fields and "cycle_days" not in fields:
            raise self.error(fields["days"][1], "add the cycle length, e.g. 'D1-14 Q21D'",
                             "a day list needs a cycle length")
        kwargs = {k: v for k, (v, _) in fields.items()}
        try:
            return Phase(amount, unit, **kwargs)
        except RegimenError as e:
            raise RegimenError(
                f"in {self.text!r}, phase {number} (from character {first.pos + 1}): {e}"
            ) from None

    def infusion(self) -> float:
        self.accept("OVER")
        fix = "infusion times look like '60 min', 'over 1 h' or '1.5 h'"
        value, _ = self.number(fix)
        tok = self.next()
        if tok.kind != "word":
            raise self.error(tok, fix)
        try:
            unit = normalize_time_unit(tok.text)
        except UnitError:
            raise self.error(tok, fix, "not a time unit") from None
        return value * time_factor(unit, "min")

    def frequency(self) -> tuple[str, float]:
        tok = self.next()
        num, unit = _Q_RE.fullmatch(tok.up).groups()
        n = float(num) if num else None
        if n is not None and n <= 0:
            raise self.error(tok, _FIX_FREQ, "the interval must be > 0")
        if unit == "D":
            return ("doses_per_day", 1) if n is None else ("cycle_days", n)
        if unit == "W":
            return "cycle_days", 7.0 * (n or 1.0)
        hours = n or 1.0
        per_day = 24.0 / hours
        if per_day.is_integer() and int(per_day) in DOSES_PER_DAY:
            return "doses_per_day", int(per_day)
        if (hours / 24.0).is_integer():
            return "cycle_days", hours / 24.0
        raise self.error(tok, "use Q<n>H with n dividing 24 (Q6H, Q8H, Q12H) or a multiple of "
                         "24 (Q48H)")

    def _is_day_ref(self) -> bool:
        tok = self.peek()
        if tok.kind != "word":
            return False
        if re.fullmatch(r"D\d+", tok.up):
            return True
        return tok.up in ("D", "DAY", "DAYS") and self.peek(1).kind == "num"

    def day_number(self, allow_bare: bool = False) -> int:
        tok = self.peek()
        if tok.kind == "word" and re.fullmatch(r"D\d+", tok.up):
            self.next()
            return int(tok.up[1:])
        if tok.kind == "word" and tok.up in ("D", "DAY", "DAYS"):
            self.next()
            return self.number(_FIX_DAYS, integer=True)[0]
        if allow_bare and tok.kind == "num":
            return self.number(_FIX_DAYS, integer=True)[0]
        raise self.error(tok, "days look like D43 (1-based study day; day 1 is time 0)")

    def day_list(self) -> tuple[int, ...]:
        days: list[int] = []
        first = True
        while True:
            tok = self.peek()
            a = self.day_number(allow_bare=not first)
            first = False
            b = a
            if self.accept("-", "TO"):
                b = self.day_number(allow_bare=True)
                if b < a:
                    raise self.error(tok, f"write D{b}-{a}", f"the range {a}-{b} runs backwards")
            if len(days) + b - a + 1 > MAX_DOSES:
                raise self.error(tok, "list the dosing days of one cycle (e.g. D1-14 Q21D)",
                                 f"the day list has more than {MAX_DOSES} days")
            days.extend(range(a, b + 1))
            nxt = self.peek(1)
            if self.peek().text == "," and (nxt.kind == "num" or re.fullmatch(r"D\d+", nxt.up)):
                self.next()
                continue
            return tuple(days)

    def clause(self) -> tuple[str, object, _Tok]:
        tok = self.next()
        up = tok.up
        if up == "HOLD":
            from_kw = self.accept("FROM", "ON")
            a = self.day_number()
            if self.accept("-", "TO", "UNTIL"):
                return "hold", (a, self.day_number(allow_bare=True)), tok
            if from_kw is not None and from_kw.up == "FROM":
                return "hold", (a, None), tok
            return "hold", (a, a), tok
        if up in ("STOP", "DISCONTINUE"):
            self.accept("FROM", "ON")
            return "hold", (self.day_number(), None), tok
        if up == "REDUCE":
            self.accept("TO")
            amount, unit = self.dose(unit_optional=True)
            self.accept("FROM", "ON")
            return "reduce", (amount, self.day_number(), unit), tok
        if up == "START":
            self.accept("ON", "AT", "FROM")
            return "start", float(self.day_number() - 1), tok
        if up in ("DELAY", "OFFSET"):
            value, _ = self.number("write the delay as e.g. 'delay 3 d' or 'delay 12 h'")
            unit = "day"
            if self.peek().kind == "word":
                try:
                    unit = normalize_time_unit(self.peek().text)
                except UnitError:
                    raise self.error(self.peek(), "write the delay as e.g. 'delay 3 d'") from None
                self.next()
            return "start", value / time_factor("day", unit), tok
        raise self.error(tok, _FIX_CLAUSE)


def parse_regimen(text: str) -> Regimen:
    """Parse the text form of a regimen (case-insensitive, whitespace tolerant).

    Examples
    --------
    >>> parse_regimen("12 mg PO QD D1-14 Q21D").phases[0].days
    (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
    >>> parse_regimen("1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W").total_days
    inf

    Raises
    ------
    RegimenError
        Naming the offending token, its (1-based) character position and the fix.
    """
    return _Parser(text).regimen()


def parse_protocol(text: str) -> Protocol:
    """Parse several ``drug: regimen`` lines (blank lines and ``#`` comments are skipped)."""
    if not isinstance(text, str):
        raise RegimenError(f"a protocol text must be a string; got {type(text).__name__}. "
                           "Fix: one 'drug: regimen' per line")
    regimens = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0]
        if not body.strip():
            continue
        try:
            reg = parse_regimen(body)
        except RegimenError as e:
            raise type(e)(f"line {lineno}: {e}") from None
        if reg.drug is None:
            raise RegimenError(
                f"line {lineno} ({body.strip()!r}) names no drug. Fix: start it with the drug, "
                "e.g. 'anlotinib: 12 mg PO QD D1-14 Q21D'"
            )
        regimens.append(reg)
    if not regimens:
        raise RegimenError("the protocol text is empty. Fix: one 'drug: regimen' per line")
    return Protocol.from_regimens(*regimens)
