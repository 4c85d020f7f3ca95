"""Units: one vocabulary, converted once at the boundary.

Internally every model runs in its own time unit (the card's ``time_unit``), amounts in the card's
``amount_unit`` and volumes in L. Data and regimens are converted when they enter.
"""

from __future__ import annotations

from .errors import UnitError

__all__ = [
    "TIME_UNITS",
    "AMOUNT_UNITS",
    "CONC_UNITS",
    "normalize_time_unit",
    "normalize_amount_unit",
    "normalize_conc_unit",
    "time_factor",
    "amount_factor",
    "conc_factor",
]

# canonical name -> size in hours
TIME_UNITS = {"min": 1.0 / 60.0, "h": 1.0, "day": 24.0, "week": 168.0, "year": 24.0 * 365.25}
_TIME_ALIASES = {
    "min": "min", "mins": "min", "minute": "min", "minutes": "min",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "day", "day": "day", "days": "day",
    "w": "week", "wk": "week", "wks": "week", "week": "week", "weeks": "week",
    "y": "year", "yr": "year", "year": "year", "years": "year",
}
# canonical name -> size in mg
AMOUNT_UNITS = {"ng": 1e-6, "ug": 1e-3, "mg": 1.0, "g": 1e3}
_AMOUNT_ALIASES = {
    "ng": "ng", "ug": "ug", "µg": "ug", "μg": "ug", "mcg": "ug", "mg": "mg", "g": "g",
}
# canonical name -> size in mg/L
CONC_UNITS = {"ng/mL": 1e-3, "ug/mL": 1.0, "mg/L": 1.0, "ug/L": 1e-3, "ng/L": 1e-6, "g/L": 1e3}
_CONC_ALIASES = {
    "ng/ml": "ng/mL", "ug/l": "ug/L", "µg/l": "ug/L", "μg/l": "ug/L",
    "ug/ml": "ug/mL", "µg/ml": "ug/mL", "μg/ml": "ug/mL", "mcg/ml": "ug/mL",
    "mg/l": "mg/L", "ng/l": "ng/L", "g/l": "g/L",
}


def _norm(value: str, aliases: dict[str, str], kind: str, known) -> str:
    key = str(value).strip().lower()
    if key in aliases:
        return aliases[key]
    raise UnitError(
        f"unknown {kind} unit {value!r}. Fix: use one of {', '.join(sorted(set(known)))}"
    )


def normalize_time_unit(unit: str) -> str:
    """Canonical time unit name (``min``, ``h``, ``day``, ``week``, ``year``)."""
    return _norm(unit, _TIME_ALIASES, "time", TIME_UNITS)


def normalize_amount_unit(unit: str) -> str:
    """Canonical amount unit name (``ng``, ``ug``, ``mg``, ``g``)."""
    return _norm(unit, _AMOUNT_ALIASES, "amount", AMOUNT_UNITS)


def normalize_conc_unit(unit: str) -> str:
    """Canonical concentration unit name (``ng/mL``, ``ug/mL``, ``mg/L``, ...)."""
    return _norm(unit, _CONC_ALIASES, "concentration", CONC_UNITS)


def time_factor(src: str, dst: str) -> float:
    """Multiply a time in ``src`` by this to get it in ``dst``."""
    return TIME_UNITS[normalize_time_unit(src)] / TIME_UNITS[normalize_time_unit(dst)]


def amount_factor(src: str, dst: str) -> float:
    """Multiply an amount in ``src`` by this to get it in ``dst``."""
    return AMOUNT_UNITS[normalize_amount_unit(src)] / AMOUNT_UNITS[normalize_amount_unit(dst)]


def conc_factor(src: str, dst: str) -> float:
    """Multiply a concentration in ``src`` by this to get it in ``dst``."""
    return CONC_UNITS[normalize_conc_unit(src)] / CONC_UNITS[normalize_conc_unit(dst)]
