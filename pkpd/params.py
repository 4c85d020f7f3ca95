"""Parameter names and domains: the ground rules every card, model and override obeys.

A parameter name is NONMEM-style (``CL``, ``V1``, ``KA``, ``F1``, ``ALAG1``). A domain says which
values a parameter may take: ``"positive"``, ``"nonnegative"``, ``"real"`` or an interval such as
``"[0, 1]"``; :func:`default_domain` gives the domain of a name a card does not declare.
Used by :mod:`pkpd.cards` (card values, covariates, IIV draws), :mod:`pkpd.pk` (model parameters)
and :mod:`pkpd.fit` (overrides).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ModelError


def _is_tracer(v) -> bool:
    """A JAX tracer (inside ``jit``/``grad``): its value is not known here (no JAX import)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(v, jax.core.Tracer)


__all__ = ["Domain", "parse_domain", "default_domain", "check_domains", "check_names",
           "PARAM_NAME_RE"]

#: what a parameter name may look like (NONMEM-style: CL, V1, KA, F1, ALAG1, ...)
PARAM_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DOSE_PARAM_RE = re.compile(r"(F|ALAG|R|D)(\d+)")


def check_names(names, known, *, owner: str, n_cmt: int = 0, noun: str = "parameter") -> None:
    """Raise :class:`~pkpd.errors.ModelError` for a name that is not a parameter of ``owner``
    (e.g. ``"card anlotinib"``): a case-insensitive match is suggested, and the message lists
    the parameters. ``n_cmt > 0`` also accepts the dose parameters ``F<n>``, ``ALAG<n>``,
    ``R<n>`` and ``D<n>`` of compartments 1..n_cmt."""
    known = list(known)
    listing = ", ".join(known)
    if n_cmt:
        listing += (f"; dose parameters F<n>, ALAG<n>, R<n>, D<n> for compartments "
                    f"{'1' if n_cmt == 1 else f'1-{n_cmt}'}")
    for name in names:
        if name in known:
            continue
        m = _DOSE_PARAM_RE.fullmatch(str(name))
        if n_cmt and m and 1 <= int(m.group(2)) <= n_cmt:
            continue
        if not isinstance(name, str) or not PARAM_NAME_RE.fullmatch(name):
            raise ModelError(
                f"{name!r} is not a parameter name (a name is a letter followed by letters, "
                f"digits or _); {owner} has parameters {listing}. Fix: use one of these names")
        near = [k for k in known if k.upper() == name.upper()]
        if not near and n_cmt and _DOSE_PARAM_RE.fullmatch(name.upper()):
            m = _DOSE_PARAM_RE.fullmatch(name.upper())
            if 1 <= int(m.group(2)) <= n_cmt:
                near = [name.upper()]
        hint = f"; did you mean {near[0]}?" if near else "."
        raise ModelError(f"unknown {noun} {name!r} of {owner}{hint} Parameters: {listing}. "
                         "Fix: use one of these names (case matters)")


# --------------------------------------------------------------------------------------------
# parameter domains
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Domain:
    """The values a parameter may take: an interval (open or closed ends), always finite.

    Written in a card as ``domain = "positive"`` (``(0, inf)``), ``"nonnegative"``
    (``[0, inf)``), ``"real"`` (any finite number) or an interval such as ``"[0, 1]"``,
    ``"(0, 1]"`` or ``"(-inf, 0)"``.
    """

    text: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_closed: bool = False
    hi_closed: bool = False

    def contains(self, value) -> np.ndarray:
        """Boolean array: which of ``value`` lie in the domain (NaN and +-inf never do)."""
        a = np.asarray(value, dtype=float)
        ok = np.isfinite(a)
        with np.errstate(invalid="ignore"):
            ok &= (a >= self.lo) if self.lo_closed else (a > self.lo)
            ok &= (a <= self.hi) if self.hi_closed else (a < self.hi)
        return ok

    def describe(self) -> str:
        """``'positive (> 0)'``, ``'in [0, 1]'``, ``'real (any finite number)'``, ..."""
        if self.text in _NAMED_TEXT:
            return _NAMED_TEXT[self.text]
        return f"in {self.interval()}"

    def rule(self) -> str:
        """``'> 0'``, ``'>= 0'``, ``'a finite number'``, ``'in [0, 1]'``, ..."""
        return {"positive": "> 0", "nonnegative": ">= 0", "real": "a finite number"
                }.get(self.text, f"in {self.interval()}")

    def interval(self) -> str:
        lo = "-inf" if math.isinf(self.lo) else f"{self.lo:g}"
        hi = "inf" if math.isinf(self.hi) else f"{self.hi:g}"
        return f"{'[' if self.lo_closed else '('}{lo}, {hi}{']' if self.hi_closed else ')'}"


_NAMED = {
    "positive": Domain("positive", 0.0, math.inf, False, False),
    "nonnegative": Domain("nonnegative", 0.0, math.inf, True, False),
    "real": Domain("real"),
}
_NAMED_TEXT = {"positive": "positive (> 0)", "nonnegative": "nonnegative (>= 0)",
               "real": "real (any finite number)"}
_ALIASES = {"non-negative": "nonnegative", "non_negative": "nonnegative", ">0": "positive",
            ">=0": "nonnegative", "finite": "real"}
_NUM = r"[-+]?(?:inf|(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)"
_INTERVAL_RE = re.compile(rf"([\[(])\s*({_NUM})\s*,\s*({_NUM})\s*([\])])")
_DOMAIN_FIX = ('use "positive", "nonnegative", "real" or an interval such as "[0, 1]", '
               '"(0, 1]" or "(-inf, 0)"')


def parse_domain(text, where: str = "domain") -> Domain:
    """A :class:`Domain` from its text; :class:`~pkpd.errors.ModelError` naming ``where`` when
    the text is not one."""
    if not isinstance(text, str):
        raise ModelError(f"{where}: domain must be text; got {text!r}. Fix: {_DOMAIN_FIX}")
    key = "".join(text.split()).lower()
    key = _ALIASES.get(key, key)
    if key in _NAMED:
        return _NAMED[key]
    m = _INTERVAL_RE.fullmatch(key)
    if m is None:
        raise ModelError(f"{where}: unknown domain {text!r}. Fix: {_DOMAIN_FIX}")
    lo, hi = float(m.group(2)), float(m.group(3))
    if not lo < hi:
        raise ModelError(f"{where}: domain {text!r} is empty (lower end >= upper end). "
                         f"Fix: {_DOMAIN_FIX}")
    return Domain(text.strip(), lo, hi, m.group(1) == "[" and math.isfinite(lo),
                  m.group(4) == "]" and math.isfinite(hi))


#: default domain by parameter name (a card's ``domain`` field overrides it)
_DEFAULT_DOMAINS = (
    (re.compile(r"(CL\d*|V\d*|Q\d*|KA|K\d*|VMAX|KM|TC50|HILL|KE0|KTR|MTT|R\d+|D\d+)"),
     "positive"),
    (re.compile(r"F\d+"), "(0, 1]"),
    (re.compile(r"ALAG\d+"), "nonnegative"),
    (re.compile(r"TMAX"), "real"),
)


def default_domain(name: str) -> Domain:
    """Domain of a parameter that its card does not state: clearances, volumes, rate
    constants, ``KM``, ``TC50``, ``HILL``, modelled rates ``R<n>`` and durations ``D<n>``
    positive; bioavailability ``F<n>`` in (0, 1]; lag ``ALAG<n>`` nonnegative; anything else
    (``TMAX``, tumour parameters, ...) any finite number."""
    for pattern, text in _DEFAULT_DOMAINS:
        if pattern.fullmatch(str(name)):
            return parse_domain(text)
    return _NAMED["real"]


def check_domains(params: Mapping, domains: Mapping[str, Domain] | None = None, *,
                  who: str = "parameters", units: Mapping[str, str] | None = None,
                  fix: str | None = None) -> None:
    """Raise :class:`~pkpd.errors.ModelError` naming the parameter, the value and its domain
    when a concrete value of ``params`` lies outside its domain (``domains`` first, then
    :func:`default_domain`). Traced (``jit``) values are not checked."""
    for name, v in params.items():
        if _is_tracer(v):
            continue
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            raise ModelError(f"{who}: {name} must be a number; got {v!r}. Fix: give a number"
                             ) from None
        dom = (domains or {}).get(name) or default_domain(name)
        ok = dom.contains(a)
        if np.all(ok):
            continue
        i = int(np.flatnonzero(~np.atleast_1d(ok))[0])
        val = float(np.atleast_1d(a)[i])
        where = f" (index {i} of {a.size})" if a.ndim else ""
        unit = (units or {}).get(name)
        unit = f"; {name} in {unit}" if unit not in (None, "", "-", "1") else ""
        default_fix = (f"give {name} a finite value" if dom.text == "real"
                       else f"give {name} a value {dom.rule()}")
        raise ModelError(
            f"{who}: {name} = {val:.6g}{where} must be {dom.rule()} (domain {dom.text!r}{unit})."
            f" Fix: {fix or default_fix}")
