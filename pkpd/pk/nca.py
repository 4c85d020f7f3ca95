"""Non-compartmental analysis (NCA) with PKNCA / Phoenix WinNonlin conventions.

Implements CONVENTIONS.md section 5: AUC/AUMC integration rules, automatic terminal-slope
(lambda z) "best fit" selection, BLQ handling, dose-time imputation, single- and multiple-dose
parameters, accumulation ratios and the CDISC PP (PPTESTCD) export. Output column names are PKNCA's
(``cmax``, ``auclast``, ``aucinf.obs``, ``lambda.z``, ...); see ``docs/nca.md``.

Everything is plain numpy / pandas; no JAX.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError, format_problem

__all__ = [
    "AUC_METHODS",
    "ROUTES",
    "IMPUTE_METHODS",
    "DEFAULT_BLQ",
    "CDISC_PPTESTCD",
    "LambdaZResult",
    "auc_segments",
    "aumc_segments",
    "auc",
    "aumc",
    "lambda_z",
    "nca",
    "accumulation",
    "to_cdisc",
]

AUC_METHODS = ("linear", "lin up/log down", "lin-log")
ROUTES = ("extravascular", "iv bolus", "iv infusion")
IMPUTE_METHODS = ("auto", "start_conc0", "start_predose", "start_cmin", "start_logslope", None)
#: PKNCA ``conc.blq`` default: leading BLQ kept as 0, middle dropped, trailing kept as 0.
DEFAULT_BLQ = {"first": "keep", "middle": "drop", "last": "keep"}
#: PKNCA ``max.shift`` for ``start_predose``: fraction of the interval length.
MAX_PREDOSE_SHIFT = 0.05

_METHOD_ALIASES = {
    "linear": "linear",
    "lin": "linear",
    "linuplogdown": "lin up/log down",
    "linearuplogdown": "lin up/log down",
    "linlog": "lin-log",
}
_ROUTE_ALIASES = {
    "extravascular": "extravascular",
    "ev": "extravascular",
    "oral": "extravascular",
    "po": "extravascular",
    "ivbolus": "iv bolus",
    "bolus": "iv bolus",
    "ivinfusion": "iv infusion",
    "infusion": "iv infusion",
}


def _normalize_method(method: str) -> str:
    key = re.sub(r"[\s_\-/]", "", str(method).lower())
    if key not in _METHOD_ALIASES:
        raise ValueError(
            format_problem(
                f"unknown AUC method {method!r}",
                fix=f"use one of {', '.join(repr(m) for m in AUC_METHODS)}",
            )
        )
    return _METHOD_ALIASES[key]


def _normalize_route(route: str) -> str:
    key = re.sub(r"[\s_\-/]", "", str(route).lower())
    if key not in _ROUTE_ALIASES:
        raise ValueError(
            format_problem(
                f"unknown route {route!r}",
                fix=f"use one of {', '.join(repr(r) for r in ROUTES)}",
            )
        )
    return _ROUTE_ALIASES[key]


def _as_profile(t, c, *, subject=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (time, conc) profile: 1-D, same length, finite, strictly increasing, conc >= 0."""
    t = np.asarray(t, dtype=float)
    c = np.asarray(c, dtype=float)
    if t.ndim != 1 or c.ndim != 1 or t.shape != c.shape:
        raise DataError(
            f"time and concentration must be 1-D arrays of equal length (got shapes "
            f"{t.shape} and {c.shape})",
            subject=subject,
            fix="pass one profile at a time",
        )
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(c))):
        raise DataError(
            "time and concentration must be finite",
            subject=subject,
            fix="drop missing (NaN) concentrations before integrating; nca() does this for you",
        )
    if np.any(np.diff(t) <= 0):
        raise DataError(
            "times must be strictly increasing (no duplicates)",
            subject=subject,
            column="time",
            fix="sort the profile by time and remove duplicated sampling times",
        )
    if np.any(c < 0):
        raise DataError(
            "concentrations must be >= 0",
            subject=subject,
            column="conc",
            fix="code BLQ samples as 0 and correct negative values",
        )
    return t, c


def _log_segments(t: np.ndarray, c: np.ndarray, method: str) -> np.ndarray:
    """Boolean per segment: True where the log rule is used (CONVENTIONS 5.3)."""
    c1, c2 = c[:-1], c[1:]
    if method == "linear":
        return np.zeros(c1.shape, dtype=bool)
    if method == "lin up/log down":
        # both zero -> 0 (linear gives 0); decreasing and C2 > 0 -> log; otherwise linear
        return (c2 < c1) & (c2 > 0)
    # lin-log: linear before Tmax, log from Tmax on unless a zero (or equal concentrations)
    if c.size == 0:
        return np.zeros(0, dtype=bool)
    tmax = t[int(np.argmax(c))]
    return (t[:-1] >= tmax) & (c1 > 0) & (c2 > 0) & (c1 != c2)


def auc_segments(t, c, method: str = "lin up/log down") -> np.ndarray:
    """Area under the curve of each interval between consecutive samples.

    Parameters
    ----------
    t, c : array_like
        Sampling times (strictly increasing) and concentrations (>= 0, BLQ coded as 0).
    method : {"lin up/log down", "linear", "lin-log"}
        ``"lin up/log down"`` (PKNCA default): both concentrations zero -> 0; decreasing with
        C2 > 0 -> log trapezoid ``(C1 - C2) / ln(C1/C2) * dt``; otherwise linear trapezoid.
        ``"linear"``: linear trapezoid everywhere. ``"lin-log"``: linear before Tmax, log from Tmax
        on unless a concentration is zero (or the two are equal).

    Returns
    -------
    numpy.ndarray
        ``len(t) - 1`` partial areas.
    """
    method = _normalize_method(method)
    t, c = _as_profile(t, c)
    dt = np.diff(t)
    c1, c2 = c[:-1], c[1:]
    out = (c1 + c2) / 2.0 * dt
    lg = _log_segments(t, c, method)
    if np.any(lg):
        out[lg] = (c1[lg] - c2[lg]) / (np.log(c1[lg]) - np.log(c2[lg])) * dt[lg]
    return out


def aumc_segments(t, c, method: str = "lin up/log down") -> np.ndarray:
    """Area under the first-moment curve (t * C) of each interval; same rules as `auc_segments`.

    Linear: ``(t1*C1 + t2*C2) / 2 * dt``. Log: ``dt*(t2*C2 - t1*C1)/L - dt**2*(C2 - C1)/L**2`` with
    ``L = ln(C2/C1)`` (exact for an exponential between the two points).
    """
    method = _normalize_method(method)
    t, c = _as_profile(t, c)
    dt = np.diff(t)
    t1, t2, c1, c2 = t[:-1], t[1:], c[:-1], c[1:]
    out = (t1 * c1 + t2 * c2) / 2.0 * dt
    lg = _log_segments(t, c, method)
    if np.any(lg):
        lr = np.log(c2[lg]) - np.log(c1[lg])
        out[lg] = (
            dt[lg] * (t2[lg] * c2[lg] - t1[lg] * c1[lg]) / lr
            - dt[lg] ** 2 * (c2[lg] - c1[lg]) / lr**2
        )
    return out


def auc(t, c, method: str = "lin up/log down") -> float:
    """AUC from the first to the last sample given (see `auc_segments` for the rules).

    Returns 0.0 for a single sample. To get AUClast pass the profile up to Tlast; `nca` does this.
    """
    return float(np.sum(auc_segments(t, c, method)))


def aumc(t, c, method: str = "lin up/log down") -> float:
    """AUMC (area under t*C) from the first to the last sample given (rules of `aumc_segments`)."""
    return float(np.sum(aumc_segments(t, c, method)))


def _interp_conc(t1, c1, t2, c2, t, method: str, after_tmax: bool) -> float:
    """Concentration at t1 < t < t2 by the method's segment rule (log or linear)."""
    if method == "lin up/log down":
        use_log = c2 < c1 and c2 > 0
    elif method == "lin-log":
        use_log = after_tmax and c1 > 0 and c2 > 0 and c1 != c2
    else:
        use_log = False
    frac = (t - t1) / (t2 - t1)
    if use_log:
        return float(c1 * math.exp(math.log(c2 / c1) * frac))
    return float(c1 + (c2 - c1) * frac)


# --------------------------------------------------------------------------------------------------
# lambda z


@dataclass(frozen=True)
class LambdaZResult:
    """Terminal-slope fit of ``ln C = intercept - lambda_z * t``.

    Attributes
    ----------
    lambda_z : float
        Terminal elimination rate constant (1/time); NaN when no acceptable fit.
    intercept : float
        Intercept of ln C at t = 0.
    n_points : int
        Number of points in the chosen fit (0 when none).
    t_first, t_last : float
        First and last time used in the fit (PKNCA ``lambda.z.time.first`` / ``.last``).
    r_squared, adj_r_squared : float
        R^2 and adjusted R^2 = 1 - (1 - R^2)(n - 1)/(n - 2).
    half_life : float
        ln 2 / lambda_z.
    span_ratio : float
        (t_last - t_first) / half_life.
    times : tuple of float
        Sampling times used.
    reason : str
        Empty when the fit succeeded, else why lambda_z is NaN.
    """

    lambda_z: float = math.nan
    intercept: float = math.nan
    n_points: int = 0
    t_first: float = math.nan
    t_last: float = math.nan
    r_squared: float = math.nan
    adj_r_squared: float = math.nan
    half_life: float = math.nan
    span_ratio: float = math.nan
    times: tuple[float, ...] = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when a terminal slope was estimated."""
        return math.isfinite(self.lambda_z)

    def predict(self, t):
        """Concentration predicted by the terminal line at time(s) ``t``."""
        return np.exp(self.intercept - self.lambda_z * np.asarray(t, dtype=float))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Slope, intercept and R^2 of y ~ x by ordinary least squares (centred sums)."""
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    sxx, sxy, syy = float(dx @ dx), float(dx @ dy), float(dy @ dy)
    slope = sxy / sxx
    intercept = ym - slope * xm
    if syy == 0.0:
        r2 = 0.0
    else:
        r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
        r2 = r * r
    return slope, float(intercept), r2


def _adj_r2(r2: float, n: int) -> float:
    return 1.0 - (1.0 - r2) * (n - 1) / (n - 2) if n > 2 else math.nan


def _match_times(t: np.ndarray, wanted, what: str, subject=None) -> np.ndarray:
    wanted = np.atleast_1d(np.asarray(wanted, dtype=float))
    mask = np.zeros(t.shape, dtype=bool)
    for w in wanted:
        hit = np.isclose(t, w, rtol=1e-9, atol=1e-12)
        if not hit.any():
            raise DataError(
                f"{what} time {w:g} is not one of the profile's sampling times",
                subject=subject,
                fix=f"give {what} times exactly as they appear in the data",
            )
        mask |= hit
    return mask


def _fit_result(tt, cc, lam, icpt, r2, adj, reason="") -> LambdaZResult:
    hl = math.log(2.0) / lam
    return LambdaZResult(
        lambda_z=lam,
        intercept=icpt,
        n_points=int(tt.size),
        t_first=float(tt[0]),
        t_last=float(tt[-1]),
        r_squared=r2,
        adj_r_squared=adj,
        half_life=hl,
        span_ratio=float((tt[-1] - tt[0]) / hl),
        times=tuple(float(x) for x in tt),
        reason=reason,
    )


def lambda_z(
    t,
    c,
    tmax_index: int,
    *,
    min_points: int = 3,
    adj_r2_factor: float = 1e-4,
    allow_tmax: bool = False,
    exclude=None,
    include=None,
    _subject=None,
) -> LambdaZResult:
    """Terminal elimination rate by the PKNCA / Phoenix "best fit" rule (CONVENTIONS 5.4).

    Candidates are the points after Tmax (Tmax itself only with ``allow_tmax``) with
    concentration > 0, which therefore end at Tlast. ``ln C`` is regressed on ``t`` by OLS over the
    last 3, 4, 5, ... candidates. A fit is kept when ``lambda_z = -slope > 0`` and
    ``adj.R2 > max(adj.R2) - adj_r2_factor`` (the maximum taken over all fits, as PKNCA does); of
    the kept fits the one with the MOST points wins.

    Parameters
    ----------
    t, c : array_like
        The cleaned profile (BLQ handled, strictly increasing times, conc >= 0).
    tmax_index : int
        Index of Tmax in ``t``.
    min_points : int, default 3
        Minimum number of points in a fit (PKNCA ``min.hl.points``).
    adj_r2_factor : float, default 1e-4
        Tolerance on adjusted R^2 (PKNCA ``adj.r.squared.factor``).
    allow_tmax : bool, default False
        Allow the Tmax point in the fit (PKNCA ``allow.tmax.in.half.life``).
    exclude : sequence of float, optional
        Sampling times removed from the candidates before the search (PKNCA
        ``exclude_half.life``).
    include : sequence of float, optional
        Manual selection: fit exactly these sampling times (positive concentrations only), no
        search and no Tmax restriction (PKNCA ``include_half.life``). Cannot be combined with
        ``exclude``.

    Returns
    -------
    LambdaZResult
        NaN estimates (not an exception) with ``reason`` set when fewer than ``min_points``
        usable points exist or no fit has lambda_z > 0.
    """
    t, c = _as_profile(t, c, subject=_subject)
    if min_points < 2:
        raise ValueError(format_problem("min_points must be >= 2", fix="use min_points=3"))
    if include is not None and exclude is not None:
        raise ValueError(
            format_problem(
                "give either include or exclude for lambda z, not both",
                fix="list the points to use in include, or those to drop in exclude",
            )
        )
    if include is not None:
        return _lambda_z_manual(t, c, include, min_points, _subject)
    n = t.size
    if n == 0 or not 0 <= tmax_index < n:
        return LambdaZResult(reason="no Tmax (no concentrations)")
    idx = np.arange(n)
    mask = (idx >= tmax_index) if allow_tmax else (idx > tmax_index)
    mask &= c > 0
    if exclude is not None:
        mask &= ~_match_times(t, exclude, "exclude", _subject)
    tc, cc = t[mask], c[mask]
    if tc.size < min_points:
        return LambdaZResult(
            reason=f"too few points for half-life ({tc.size} after Tmax with conc > 0; "
            f"min_points={min_points})"
        )
    return _lambda_z_best_fit(tc, cc, min_points, adj_r2_factor)


def _lambda_z_manual(t, c, include, min_points: int, subject) -> LambdaZResult:
    """`lambda_z` with ``include``: fit exactly the given times (positive concentrations only)."""
    mask = _match_times(t, include, "include", subject) & (c > 0)
    tt, cc = t[mask], c[mask]
    if tt.size < min_points:
        return LambdaZResult(
            reason=f"too few points for half-life ({tt.size} included with conc > 0; "
            f"min_points={min_points})"
        )
    slope, icpt, r2 = _ols(tt, np.log(cc))
    lam = -slope
    if not lam > 0:
        return LambdaZResult(reason="manually included points give lambda.z <= 0")
    return _fit_result(tt, cc, lam, icpt, r2, _adj_r2(r2, tt.size))


def _lambda_z_best_fit(
    tc: np.ndarray, cc: np.ndarray, min_points: int, adj_r2_factor: float
) -> LambdaZResult:
    """The "best fit" search of `lambda_z` over the last 3, 4, ... candidates ``tc``, ``cc``."""
    y = np.log(cc)
    ks = list(range(min_points, tc.size + 1))
    lams, icpts, r2s, adjs = [], [], [], []
    for k in ks:
        slope, icpt, r2 = _ols(tc[-k:], y[-k:])
        lams.append(-slope)
        icpts.append(icpt)
        r2s.append(r2)
        adjs.append(_adj_r2(r2, k))
    lams_a = np.array(lams)
    adjs_a = np.array(adjs)
    if min_points == 2 and tc.size == 2:
        best = lams_a > 0
    else:
        with np.errstate(invalid="ignore"):
            best = (lams_a > 0) & (adjs_a > np.nanmax(adjs_a) - adj_r2_factor)
    best &= np.isfinite(lams_a)
    if not best.any():
        if not (lams_a > 0).any():
            reason = "no terminal fit with lambda.z > 0 (concentrations not declining)"
        else:
            reason = (
                "no fit with lambda.z > 0 within adj.r.squared.factor of the best adjusted R^2 "
                "(a non-declining span fits best)"
            )
        return LambdaZResult(reason=reason)
    j = int(np.flatnonzero(best)[-1])  # ks increase with index: the last kept has most points
    k = ks[j]
    return _fit_result(tc[-k:], cc[-k:], float(lams[j]), icpts[j], r2s[j], adjs[j])


# --------------------------------------------------------------------------------------------------
# BLQ handling


def _blq_rules(blq) -> dict:
    if blq is None:
        return dict(DEFAULT_BLQ)
    if isinstance(blq, str | int | float):
        rules = {k: blq for k in DEFAULT_BLQ}
    elif isinstance(blq, Mapping):
        unknown = set(blq) - set(DEFAULT_BLQ)
        if unknown:
            raise ValueError(
                format_problem(
                    f"unknown BLQ position(s) {sorted(unknown)}",
                    fix="use the keys 'first', 'middle' and 'last'",
                )
            )
        rules = {**DEFAULT_BLQ, **blq}
    else:
        raise ValueError(format_problem("blq must be a string, number or mapping", value=blq))
    for k, v in rules.items():
        ok = v in ("keep", "drop") or (
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 and np.isfinite(v)
        )
        if not ok:
            raise ValueError(
                format_problem(
                    f"invalid BLQ rule for {k!r}",
                    value=v,
                    fix="use 'keep', 'drop' or a non-negative number to substitute",
                )
            )
    return rules


def _clean_blq(t: np.ndarray, c: np.ndarray, rules: dict) -> tuple[np.ndarray, np.ndarray]:
    """Apply the BLQ rules; BLQ is coded as 0. An all-BLQ profile counts as leading ("first")."""
    if t.size == 0:
        return t, c
    blq = c == 0
    pos = np.flatnonzero(~blq)
    if pos.size == 0:
        where = np.full(t.shape, "first", dtype=object)
    else:
        where = np.full(t.shape, "middle", dtype=object)
        where[: pos[0]] = "first"
        where[pos[-1] + 1 :] = "last"
    keep = np.ones(t.shape, dtype=bool)
    c = c.copy()
    for i in np.flatnonzero(blq):
        rule = rules[where[i]]
        if rule == "drop":
            keep[i] = False
        elif rule != "keep":
            c[i] = float(rule)
    return t[keep], c[keep]


# --------------------------------------------------------------------------------------------------
# NCA of one profile

_BASE_COLUMNS = [
    "route", "start", "end", "tau", "dose", "c0", "cmax", "tmax", "tlast", "clast.obs",
    "auclast", "aucall", "aumclast", "lambda.z", "r.squared", "adj.r.squared",
    "lambda.z.n.points", "lambda.z.time.first", "lambda.z.time.last", "half.life", "span.ratio",
    "clast.pred", "aucinf.obs", "aucinf.pred", "aucpext.obs", "aucpext.pred", "aumcinf.obs",
    "mrt.obs", "cl.obs", "vz.obs",
]  # fmt: skip
_TAU_COLUMNS = [
    "auc.tau", "ctau", "cmin", "ctrough", "cav", "ptr", "swing", "deg.fluc", "cl.tau",
]  # fmt: skip
_FLAG_COLUMNS = ["flag_r2", "flag_span", "flag_pext", "note"]


def _nan_div(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return a / b


def _profile_nca(
    t_all: np.ndarray,
    c_all: np.ndarray,
    *,
    subject,
    route: str,
    dose: float,
    dur: float,
    tau: float | None,
    rules: dict,
    method: str,
    impute,
    min_points: int,
    adj_r2_factor: float,
    allow_tmax: bool,
    exclude,
    include,
    min_r2: float,
    min_span_ratio: float,
    max_pext: float,
    next_dose: float = math.inf,
) -> dict:
    """NCA parameters of one profile (times after the dose), as a dict of output columns."""
    notes: list[str] = []
    out: dict = dict.fromkeys(_BASE_COLUMNS[5:], math.nan)
    if tau is not None:
        out.update(dict.fromkeys(_TAU_COLUMNS, math.nan))

    # ---- window: post-dose (and <= tau for an interval); predose kept for start_predose
    impute_rule = _impute_rule(impute, route, tau)
    tw, cw = _dose_window(t_all, c_all, tau, impute_rule, notes)

    # ---- BLQ rules on the observed profile
    to, co = _clean_blq(tw, cw, rules)
    if to.size == 0:
        notes.append("no usable concentrations")
        out["note"] = "; ".join(notes)
        out.update(flag_r2=pd.NA, flag_span=pd.NA, flag_pext=pd.NA)
        return out

    # ---- integration arrays: observed plus an imputed point at the dose time
    ti, ci, c0 = _integration_arrays(to, co, impute_rule, notes)
    auc_ok = ti[0] == 0.0
    out["c0"] = c0

    # ---- primary parameters
    imax, tlast, clast = _primary_parameters(out, to, co, ti, ci, auc_ok, method, notes)

    # ---- lambda z
    if out["cmax"] > 0:
        lz = lambda_z(
            to, co, imax, min_points=min_points, adj_r2_factor=adj_r2_factor,
            allow_tmax=allow_tmax, exclude=exclude, include=include, _subject=subject,
        )  # fmt: skip
    else:
        lz = LambdaZResult(reason="no positive concentrations")
    clast_pred = _terminal_parameters(out, lz, tlast, clast, auc_ok, route, dose, dur, notes)

    # ---- dosing interval
    if tau is not None:
        arrays = _ProfileArrays(t_all, c_all, to, co, ti, ci)
        _interval_parameters(
            out, arrays, lz, clast_pred, tlast, tau=tau, next_dose=next_dose, auc_ok=auc_ok,
            method=method, dose=dose, notes=notes,
        )  # fmt: skip

    # ---- flags (reported, not applied)
    r2, span, pext = out["r.squared"], out["span.ratio"], out["aucpext.obs"]
    out["flag_r2"] = bool(r2 < min_r2) if math.isfinite(r2) else pd.NA
    out["flag_span"] = bool(span < min_span_ratio) if math.isfinite(span) else pd.NA
    out["flag_pext"] = bool(pext > max_pext) if math.isfinite(pext) else pd.NA
    out["note"] = "; ".join(notes)
    return out


def _impute_rule(impute, route: str, tau: float | None):
    """The dose-time imputation rule, with "auto" resolved for the route and dosing."""
    if impute == "auto":
        if route == "iv bolus":
            return "start_logslope"
        if tau is None:
            return "start_conc0"
        return "start_predose"
    return impute


def _dose_window(
    t_all: np.ndarray, c_all: np.ndarray, tau: float | None, impute_rule, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The post-dose samples (<= tau for an interval); with ``start_predose`` and no sample at
    t=0, the last predose sample within 5% of the interval is moved to t=0 (noted)."""
    if tau is None:
        in_win = t_all >= 0
    else:
        in_win = (t_all >= 0) & (t_all <= tau)
    tw, cw = t_all[in_win], c_all[in_win]
    has_zero_time = tw.size > 0 and tw[0] == 0.0
    if not has_zero_time and impute_rule == "start_predose":
        length = tau if tau is not None else (float(tw[-1]) if tw.size else 0.0)
        pre = np.flatnonzero((t_all < 0) & (t_all >= -MAX_PREDOSE_SHIFT * length))
        if pre.size:
            j = pre[-1]
            notes.append(f"predose sample at t={t_all[j]:g} moved to t=0 (start_predose)")
            tw = np.concatenate([[0.0], tw])
            cw = np.concatenate([[c_all[j]], cw])
    return tw, cw


def _integration_arrays(
    to: np.ndarray, co: np.ndarray, impute_rule, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Integration arrays (observed plus an imputed point at the dose time) and C0.

    C0 is NaN when t=0 is not sampled and cannot be imputed; the arrays then start after the dose
    (AUCs are not computed) and a note says why.
    """
    ti, ci = to, co
    c0 = math.nan
    if to[0] == 0.0:
        c0 = float(co[0])
    elif impute_rule == "start_conc0":
        c0 = 0.0
    elif impute_rule == "start_logslope":
        pos = np.flatnonzero(co > 0)
        if pos.size >= 2 and pos[0] == 0 and pos[1] == 1 and co[1] < co[0]:
            t1, t2, c1, c2 = to[0], to[1], co[0], co[1]
            c0 = float(c1 * math.exp(-math.log(c2 / c1) / (t2 - t1) * t1))
        elif pos.size:
            c0 = float(co[pos[0]])
            notes.append("C0 set to the first positive concentration (no log-linear decline)")
        else:
            c0 = 0.0
    elif impute_rule == "start_cmin":
        c0 = float(np.min(co))
    if to[0] != 0.0:
        if math.isnan(c0):
            why = {
                "start_predose": "no predose sample within 5% of the interval before the dose",
                None: "impute=None",
            }.get(impute_rule, f"{impute_rule} not applicable")
            notes.append(
                f"no concentration at dose time (first sample t={to[0]:g}; {why}): AUCs not "
                "computed; choose impute='start_conc0' (first dose) or 'start_cmin' (steady state)"
            )
        else:
            notes.append(f"C0={c0:g} imputed at t=0 ({impute_rule})")
            ti = np.concatenate([[0.0], to])
            ci = np.concatenate([[c0], co])
    return ti, ci, c0


def _primary_parameters(
    out: dict, to, co, ti, ci, auc_ok: bool, method: str, notes: list[str]
) -> tuple[int, float, float]:
    """Cmax, Tmax, Tlast, Clast and (when t=0 is known) AUClast, AUCall, AUMClast into ``out``;
    returns the index of Tmax, Tlast and Clast."""
    cmax = float(np.max(co))
    imax = int(np.argmax(co))
    out["cmax"] = cmax
    out["tmax"] = float(to[imax]) if cmax > 0 else math.nan
    pos = np.flatnonzero(co > 0)
    if pos.size:
        tlast, clast = float(to[pos[-1]]), float(co[pos[-1]])
    else:
        tlast, clast = math.nan, 0.0
        notes.append("all concentrations BLQ")
    out["tlast"], out["clast.obs"] = tlast, clast

    if auc_ok:
        if pos.size:
            sel = ti <= tlast
            out["auclast"] = auc(ti[sel], ci[sel], method)
            out["aumclast"] = aumc(ti[sel], ci[sel], method)
            trailing0 = np.flatnonzero((ti > tlast) & (ci == 0))
            if trailing0.size:
                sel_all = ti <= ti[trailing0[0]]
                out["aucall"] = auc(ti[sel_all], ci[sel_all], method)
            else:
                out["aucall"] = out["auclast"]
        else:
            out["auclast"] = out["aucall"] = out["aumclast"] = 0.0
    return imax, tlast, clast


def _terminal_parameters(
    out: dict, lz: LambdaZResult, tlast, clast, auc_ok, route, dose, dur, notes: list[str]
) -> float:
    """The lambda-z columns and the extrapolations to infinity into ``out``; returns
    ``clast.pred`` (NaN without lambda z, which is then noted)."""
    if not lz.ok:
        notes.append(f"lambda.z not estimated: {lz.reason}")
        return math.nan
    lam = lz.lambda_z
    out.update({
        "lambda.z": lam, "r.squared": lz.r_squared, "adj.r.squared": lz.adj_r_squared,
        "lambda.z.n.points": lz.n_points, "lambda.z.time.first": lz.t_first,
        "lambda.z.time.last": lz.t_last, "half.life": lz.half_life,
        "span.ratio": (tlast - lz.t_first) / lz.half_life,
    })  # fmt: skip
    clast_pred = float(math.exp(lz.intercept - lam * tlast))
    out["clast.pred"] = clast_pred
    if auc_ok:
        aucl, aumcl = out["auclast"], out["aumclast"]
        aucinf_obs = aucl + clast / lam
        aucinf_pred = aucl + clast_pred / lam
        aumcinf = aumcl + clast * tlast / lam + clast / lam**2
        out["aucinf.obs"] = aucinf_obs
        out["aucinf.pred"] = aucinf_pred
        out["aucpext.obs"] = 100.0 * (aucinf_obs - aucl) / aucinf_obs
        out["aucpext.pred"] = 100.0 * (aucinf_pred - aucl) / aucinf_pred
        out["aumcinf.obs"] = aumcinf
        mrt = aumcinf / aucinf_obs
        if route == "iv infusion":
            mrt -= dur / 2.0
        out["mrt.obs"] = mrt
        out["cl.obs"] = _nan_div(dose, aucinf_obs)
        out["vz.obs"] = _nan_div(out["cl.obs"], lam)
    return clast_pred


class _ProfileArrays(NamedTuple):
    """The samples of one profile: all (``t_all``, ``c_all``), observed in the window after the
    BLQ rules (``to``, ``co``), and for integration (``ti``, ``ci``: plus an imputed C0)."""

    t_all: np.ndarray
    c_all: np.ndarray
    to: np.ndarray
    co: np.ndarray
    ti: np.ndarray
    ci: np.ndarray


def _interval_parameters(
    out: dict, arrays: _ProfileArrays, lz: LambdaZResult, clast_pred: float, tlast: float, *,
    tau: float, next_dose: float, auc_ok: bool, method: str, dose: float, notes: list[str],
) -> None:  # fmt: skip
    """The dosing-interval columns (``ctau``, ``auc.tau``, ``cav``, ``ptr``, ...) into ``out``."""
    to, co, ti, ci = arrays.to, arrays.co, arrays.ti, arrays.ci
    cmax = out["cmax"]
    at_tau = np.flatnonzero(to == tau)
    ctrough = float(co[at_tau[0]]) if at_tau.size else math.nan
    out["ctrough"] = ctrough
    cmin = float(np.min(co))
    out["cmin"] = cmin
    if at_tau.size:
        ctau = ctrough
    else:
        ctau = _unsampled_ctau(out, arrays, lz, clast_pred, tlast, tau, next_dose, method, notes)
    out["ctau"] = ctau
    if auc_ok and math.isfinite(ctau):
        if at_tau.size:
            sel = ti <= tau
            out["auc.tau"] = auc(ti[sel], ci[sel], method)
        else:
            out["auc.tau"] = auc(np.append(ti, tau), np.append(ci, ctau), method)
    out["cav"] = out["auc.tau"] / tau
    out["ptr"] = _nan_div(cmax, ctrough) if ctrough > 0 else math.nan
    out["swing"] = 100.0 * (cmax - cmin) / cmin if cmin > 0 else math.nan
    out["deg.fluc"] = _nan_div(100.0 * (cmax - cmin), out["cav"])
    out["cl.tau"] = _nan_div(dose, out["auc.tau"])


def _unsampled_ctau(
    out: dict, arrays: _ProfileArrays, lz: LambdaZResult, clast_pred: float, tlast: float,
    tau: float, next_dose: float, method: str, notes: list[str],
) -> float:  # fmt: skip
    """C(tau) when tau is not sampled: interpolated with a later sample (before the next dose),
    0 after a BLQ last sample, else extrapolated with lambda z; NaN when none applies (noted)."""
    t_all, c_all = arrays.t_all, arrays.c_all
    ta, ca = float(arrays.ti[-1]), float(arrays.ci[-1])
    # a sample after tau interpolates C(tau) only if no later dose precedes it
    after = np.flatnonzero((t_all > tau) & (t_all <= next_dose))
    if after.size and c_all[after[0]] > 0 and ca > 0:
        tb, cb = float(t_all[after[0]]), float(c_all[after[0]])
        after_tmax = out["cmax"] > 0 and ta >= out["tmax"]
        ctau = _interp_conc(ta, ca, tb, cb, tau, method, after_tmax)
        notes.append(f"C(tau) interpolated with the sample at t={tb:g}")
    elif ca == 0:
        ctau = 0.0
    elif lz.ok:
        ctau = clast_pred * math.exp(-lz.lambda_z * (tau - tlast))
        notes.append("C(tau) extrapolated from Tlast with lambda.z (clast.pred)")
    else:
        ctau = math.nan
        notes.append("C(tau) not sampled and cannot be extrapolated (no lambda.z)")
    return ctau


# --------------------------------------------------------------------------------------------------
# data-frame front end


def _require_columns(data: pd.DataFrame, cols: dict) -> None:
    for role, col in cols.items():
        if col is not None and col not in data.columns:
            raise DataError(
                f"missing {role} column {col!r} (columns are {list(data.columns)})",
                column=col,
                fix=f"rename your {role} column to {col!r} or pass {role}='<your column>'",
            )


def _numeric(data: pd.DataFrame, col: str) -> np.ndarray:
    raw = data[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            "value is not numeric",
            row=i + 1,
            column=col,
            value=raw.iloc[i],
            fix=f"make every {col} a number (use an empty cell for missing values)",
        )
    return num.to_numpy(dtype=float)


def _per_profile_value(values: np.ndarray, times: np.ndarray, start: float, what: str, subject):
    """The single per-profile value of a dose or duration column (0 and NaN ignored)."""
    ok = np.isfinite(values) & (values != 0)
    if not ok.any():
        return math.nan
    at_start = ok & (times == start)
    if at_start.any():
        vals = np.unique(values[at_start])
        if vals.size == 1:
            return float(vals[0])
    vals = np.unique(values[ok])
    if vals.size > 1:
        raise DataError(
            f"more than one {what} in the profile ({', '.join(f'{v:g}' for v in vals)})",
            subject=subject,
            column=what,
            fix=f"split the data into one profile per dose (or pass a numeric {what})",
        )
    return float(vals[0])


def nca(
    data: pd.DataFrame,
    *,
    id: str | Sequence[str] = "ID",
    time: str = "TIME",
    conc: str = "DV",
    dose: str | float | None = None,
    route: str = "extravascular",
    dur: str | float | None = None,
    tau: float | None = None,
    start: float = 0.0,
    blq=None,
    lloq: str | float | None = None,
    method: str = "lin up/log down",
    evid: str | None = "EVID",
    impute: str | None = "auto",
    min_points: int = 3,
    adj_r2_factor: float = 1e-4,
    allow_tmax: bool = False,
    exclude: Mapping | None = None,
    include: Mapping | None = None,
    min_r2: float = 0.9,
    min_span_ratio: float = 2.0,
    max_pext: float = 20.0,
) -> pd.DataFrame:
    """Non-compartmental analysis, one row per profile, PKNCA parameter names.

    Parameters
    ----------
    data : pandas.DataFrame
        Long concentration-time data. If the ``evid`` column exists only rows with EVID == 0 are
        concentrations (dose rows are used for ``dose`` only).
    id : str or sequence of str, default "ID"
        Column(s) identifying a profile (e.g. ``["ID", "PERIOD"]``).
    time : str, default "TIME"
        Actual time. With ``start`` the profile time is ``TIME - start`` (time after the dose).
    conc : str, default "DV"
        Concentration; BLQ coded as 0 (or below ``lloq``); missing (NaN) values are dropped.
    dose : str or float, optional
        Dose amount, or a column holding it (e.g. "AMT"; the non-zero value of the profile, the
        one at ``start`` if several). Needed for ``cl.obs``, ``vz.obs`` and ``cl.tau``.
    route : {"extravascular", "iv bolus", "iv infusion"}
        Extravascular gives apparent parameters (``cl.obs`` is CL/F, ``vz.obs`` is Vz/F).
    dur : str or float, optional
        Infusion duration (required for "iv infusion"; MRT is reduced by dur/2).
    tau : float, optional
        Dosing interval. The profile becomes the interval [0, tau] (after ``start``) and
        ``auc.tau``, ``ctau``, ``cmin``, ``ctrough``, ``cav``, ``ptr``, ``swing``, ``deg.fluc``
        and ``cl.tau`` are added.
    start : float, default 0
        Time of the dose that starts the profile (e.g. 144 for day 7 of once-daily dosing).
    blq : str, number or mapping, optional
        BLQ rules per position ``{"first": "keep", "middle": "drop", "last": "keep"}`` (default,
        PKNCA). Each rule is "keep" (as 0), "drop" or a number to substitute; a single value
        applies to all positions.
    lloq : str or float, optional
        Concentrations below this value (or column) are treated as BLQ (set to 0).
    method : {"lin up/log down", "linear", "lin-log"}
        AUC/AUMC integration rule (CONVENTIONS 5.3).
    evid : str or None, default "EVID"
        Event-id column used to separate dose rows from observations (ignored if absent).
    impute : str or None, default "auto"
        Concentration at dose time when not sampled: "auto" = "start_logslope" for IV bolus,
        "start_conc0" for a single dose (``tau`` None), "start_predose" for an interval; also
        "start_cmin"; None = no imputation (AUCs are then NaN when t=0 is not sampled).
    min_points, adj_r2_factor, allow_tmax
        Lambda z options, see `lambda_z`.
    exclude, include : mapping, optional
        Per-profile manual lambda-z point selection, ``{profile id: [times]}`` (the profile id is
        a tuple when ``id`` has several columns).
    min_r2, min_span_ratio, max_pext : float
        Flag thresholds: ``flag_r2`` = r.squared < min_r2, ``flag_span`` = span.ratio <
        min_span_ratio, ``flag_pext`` = aucpext.obs > max_pext. Flags are reported, not applied.

    Returns
    -------
    pandas.DataFrame
        One row per profile: the id columns, then ``route, start, end, tau, dose, c0, cmax,
        tmax, tlast, clast.obs, auclast, aucall, aumclast, lambda.z, r.squared, adj.r.squared,
        lambda.z.n.points, lambda.z.time.first, lambda.z.time.last, half.life, span.ratio,
        clast.pred, aucinf.obs, aucinf.pred, aucpext.obs, aucpext.pred, aumcinf.obs, mrt.obs,
        cl.obs, vz.obs`` (+ interval columns with ``tau``), ``flag_r2, flag_span, flag_pext`` and
        ``note`` (why something is missing, what was imputed). Times are relative to ``start``.

    Raises
    ------
    DataError
        Missing columns, non-numeric values, missing times, unsorted or duplicated times within
        a profile, negative concentrations; the message names the subject and says how to fix.
    """
    opts = _nca_options(
        data, id, time=time, conc=conc, dose=dose, route=route, dur=dur, tau=tau, start=start,
        blq=blq, lloq=lloq, method=method, evid=evid, impute=impute, min_points=min_points,
        adj_r2_factor=adj_r2_factor, allow_tmax=allow_tmax, exclude=exclude, include=include,
        min_r2=min_r2, min_span_ratio=min_span_ratio, max_pext=max_pext,
    )  # fmt: skip
    return _nca_frame(_nca_rows(data, opts), opts)


@dataclass(frozen=True)
class _NcaOptions:
    """The arguments of `nca`, checked: ``ids`` a list, method and route normalised, ``rules``
    the resolved BLQ rules (in place of ``blq``)."""

    ids: list
    time: str
    conc: str
    dose: str | float | None
    route: str
    dur: str | float | None
    tau: float | None
    start: float
    rules: dict
    lloq: str | float | None
    method: str
    evid: str | None
    impute: str | None
    min_points: int
    adj_r2_factor: float
    allow_tmax: bool
    exclude: Mapping | None
    include: Mapping | None
    min_r2: float
    min_span_ratio: float
    max_pext: float


def _nca_options(data, id, *, time, conc, dose, route, dur, tau, blq, lloq, method, impute,
                 **rest) -> _NcaOptions:  # fmt: skip
    """Check the arguments of `nca` (in this order) and the columns they name."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError("data must be a pandas DataFrame")
    ids = [id] if isinstance(id, str) else list(id)
    method = _normalize_method(method)
    route = _normalize_route(route)
    rules = _blq_rules(blq)
    if impute not in IMPUTE_METHODS:
        raise ValueError(
            format_problem(
                f"unknown impute rule {impute!r}",
                fix=f"use one of {', '.join(repr(m) for m in IMPUTE_METHODS)}",
            )
        )
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise ValueError(format_problem("tau must be a positive number", value=tau))
    cols = {f"id ({c})": c for c in ids}
    cols.update(time=time, conc=conc)
    for role, val in (("dose", dose), ("dur", dur), ("lloq", lloq)):
        if isinstance(val, str):
            cols[role] = val
    _require_columns(data, cols)
    if route == "iv infusion" and dur is None:
        raise DataError(
            "route 'iv infusion' needs the infusion duration",
            column="dur",
            fix="pass dur=<duration> or dur='<duration column>'",
        )
    return _NcaOptions(
        ids=ids, time=time, conc=conc, dose=dose, route=route, dur=dur, tau=tau, rules=rules,
        lloq=lloq, method=method, impute=impute, **rest,
    )  # fmt: skip


class _NcaColumns(NamedTuple):
    """The numeric columns of the (index-reset) data, read once for all profiles."""

    is_obs: np.ndarray
    has_evid: bool
    t_raw: np.ndarray
    c_raw: np.ndarray
    dose_raw: np.ndarray | None
    dur_raw: np.ndarray | None
    lloq_raw: np.ndarray | None


def _nca_rows(data: pd.DataFrame, opts: _NcaOptions) -> list[dict]:
    """Read the columns, check the profile ids, and give one output row per profile."""
    ids = opts.ids
    data = data.reset_index(drop=True)
    is_obs = np.ones(len(data), dtype=bool)
    has_evid = opts.evid is not None and opts.evid in data.columns
    if has_evid:
        is_obs = _numeric(data, opts.evid) == 0
    cols = _NcaColumns(
        is_obs=is_obs,
        has_evid=has_evid,
        t_raw=_numeric(data, opts.time),
        c_raw=_numeric(data, opts.conc),
        dose_raw=_numeric(data, opts.dose) if isinstance(opts.dose, str) else None,
        dur_raw=_numeric(data, opts.dur) if isinstance(opts.dur, str) else None,
        lloq_raw=_numeric(data, opts.lloq) if isinstance(opts.lloq, str) else None,
    )
    for c in ids:
        miss = data[c].isna().to_numpy()
        if miss.any():
            i = int(np.flatnonzero(miss)[0])
            raise DataError(
                "missing profile id", row=i + 1, column=c, fix=f"fill in {c} for every row"
            )
    grouped = data.groupby(ids if len(ids) > 1 else ids[0], sort=True, dropna=False)
    return [_nca_row(key, frame, cols, opts) for key, frame in grouped]


def _nca_row(key, frame: pd.DataFrame, cols: _NcaColumns, opts: _NcaOptions) -> dict:
    """The output row of one profile: id columns, route, start, end, tau, dose, then the NCA."""
    ids, start, tau = opts.ids, opts.start, opts.tau
    subject = key if len(ids) > 1 else (key[0] if isinstance(key, tuple) else key)
    pos = frame.index.to_numpy()  # positional (index was reset)
    obs = pos[cols.is_obs[pos]]
    t, c, n_missing = _profile_samples(cols, obs, subject, opts)
    d, du = _profile_dose(cols, pos, subject, opts)

    next_dose = math.inf
    if cols.has_evid:
        dose_t = cols.t_raw[pos[~cols.is_obs[pos]]] - start
        later = dose_t[np.isfinite(dose_t) & (dose_t > 0)]
        if later.size:
            next_dose = float(later.min())
    res = _profile_nca(
        t, c, subject=subject, route=opts.route, dose=d, dur=du, tau=tau, rules=opts.rules,
        method=opts.method, impute=opts.impute, min_points=opts.min_points,
        adj_r2_factor=opts.adj_r2_factor, allow_tmax=opts.allow_tmax,
        exclude=None if opts.exclude is None else opts.exclude.get(subject),
        include=None if opts.include is None else opts.include.get(subject),
        min_r2=opts.min_r2, min_span_ratio=opts.min_span_ratio, max_pext=opts.max_pext,
        next_dose=next_dose,
    )  # fmt: skip
    if tau is None and next_dose < math.inf and (t > next_dose).any():
        extra = (
            f"samples after the next dose (t={next_dose:g}) are included; pass tau for an "
            "interval analysis"
        )
        res["note"] = f"{res['note']}; {extra}" if res["note"] else extra
    if n_missing:
        extra = f"{n_missing} missing concentration(s) dropped"
        res["note"] = f"{res['note']}; {extra}" if res["note"] else extra
    keyvals = key if isinstance(key, tuple) else (key,)
    row = dict(zip(ids, keyvals))
    row.update(
        route=opts.route,
        start=float(start),
        end=float(start + tau) if tau is not None else math.inf,
        tau=float(tau) if tau is not None else math.nan,
        dose=d,
    )
    row.update(res)
    return row


def _profile_samples(
    cols: _NcaColumns, obs: np.ndarray, subject, opts: _NcaOptions
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check a profile's observations (times present, sorted, unique; concentrations >= 0 and
    finite) and give times after the dose, concentrations (below LLOQ set to 0) and the number
    of missing concentrations dropped."""
    time, conc = opts.time, opts.conc
    t = cols.t_raw[obs]
    c = cols.c_raw[obs]
    if not np.isfinite(t).all():
        i = int(obs[np.flatnonzero(~np.isfinite(t))[0]])
        raise DataError(
            "missing time", row=i + 1, subject=subject, column=time,
            fix="fill in the actual sampling time or remove the row",
        )  # fmt: skip
    dt = np.diff(t)
    if (dt < 0).any():
        k = int(np.flatnonzero(dt < 0)[0])
        raise DataError(
            f"times are not sorted within the profile (t={t[k + 1]:g} after t={t[k]:g})",
            row=int(obs[k + 1]) + 1, subject=subject, column=time,
            fix=f"sort the data by {', '.join(opts.ids)} and {time}",
        )  # fmt: skip
    if (dt == 0).any():
        k = int(np.flatnonzero(dt == 0)[0])
        raise DataError(
            f"duplicate sampling time t={t[k]:g} within the profile",
            row=int(obs[k + 1]) + 1, subject=subject, column=time,
            fix="keep one concentration per time (average replicates or drop one), or "
            "split the rows into separate profiles with an extra id column",
        )  # fmt: skip
    if (c < 0).any():
        k = int(np.flatnonzero(c < 0)[0])
        raise DataError(
            "negative concentration", row=int(obs[k]) + 1, subject=subject, column=conc,
            value=float(c[k]), fix="code BLQ samples as 0 and correct the value",
        )  # fmt: skip
    if np.isinf(c).any():
        k = int(np.flatnonzero(np.isinf(c))[0])
        raise DataError(
            "infinite concentration", row=int(obs[k]) + 1, subject=subject, column=conc,
            fix="correct the value or leave the cell empty",
        )  # fmt: skip
    keep = ~np.isnan(c)
    n_missing = int((~keep).sum())
    t, c = t[keep] - opts.start, c[keep].copy()
    if opts.lloq is not None:
        lim = cols.lloq_raw[obs][keep] if cols.lloq_raw is not None else float(opts.lloq)
        c = np.where(c < lim, 0.0, c)
    return t, c, n_missing


def _profile_dose(
    cols: _NcaColumns, pos: np.ndarray, subject, opts: _NcaOptions
) -> tuple[float, float]:
    """The profile's dose (NaN when not given) and infusion duration (0 unless "iv infusion")."""
    dose, dur, start = opts.dose, opts.dur, opts.start
    if cols.dose_raw is not None:
        d = _per_profile_value(cols.dose_raw[pos], cols.t_raw[pos], start, dose, subject)
    else:
        d = float(dose) if dose is not None else math.nan
    if opts.route == "iv infusion":
        if cols.dur_raw is not None:
            du = _per_profile_value(cols.dur_raw[pos], cols.t_raw[pos], start, dur, subject)
        else:
            du = float(dur)
        if not (math.isfinite(du) and du > 0):
            raise DataError(
                "infusion duration must be a positive number", subject=subject,
                column=dur if isinstance(dur, str) else "dur", value=du,
                fix="give the infusion duration in the time unit of the data",
            )  # fmt: skip
    else:
        du = 0.0
    return d, du


def _nca_frame(rows_out: list[dict], opts: _NcaOptions) -> pd.DataFrame:
    """The output table: columns in order, nullable boolean flags, Int64 point counts."""
    ids, tau = opts.ids, opts.tau
    columns = ids + _BASE_COLUMNS + (_TAU_COLUMNS if tau is not None else []) + _FLAG_COLUMNS
    out = pd.DataFrame(rows_out, columns=columns)
    for f in ("flag_r2", "flag_span", "flag_pext"):
        out[f] = out[f].astype("boolean")
    out["lambda.z.n.points"] = out["lambda.z.n.points"].astype("Int64")
    out.attrs["nca_id"] = ids
    return out


# --------------------------------------------------------------------------------------------------
# accumulation and CDISC export


def accumulation(
    nca_first: pd.DataFrame, nca_ss: pd.DataFrame, *, on: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Observed and theoretical accumulation (CONVENTIONS 5.5).

    Parameters
    ----------
    nca_first : pandas.DataFrame
        `nca` output for the first dosing interval (run with ``tau``).
    nca_ss : pandas.DataFrame
        `nca` output for the steady-state (or later) interval (run with ``tau``).
    on : str or sequence of str, optional
        Profile id columns to match on; default: the ``id`` used by `nca`.

    Returns
    -------
    pandas.DataFrame
        Per profile: ``rac.auc`` = AUCtau,ss / AUCtau,1; ``rac.cmax`` = Cmax,ss / Cmax,1;
        ``rac.ctrough`` = Ctrough,ss / Ctrough,1; ``rac.theoretical`` = 1 / (1 - exp(-lambda.z *
        tau)) with the first-interval lambda.z and tau (Phoenix Accumulation_Index).
    """
    if on is None:
        on = nca_first.attrs.get("nca_id") or nca_ss.attrs.get("nca_id") or ["ID"]
    on = [on] if isinstance(on, str) else list(on)
    need = ["auc.tau", "cmax", "ctrough", "lambda.z", "tau"]
    for name, df in (("nca_first", nca_first), ("nca_ss", nca_ss)):
        missing = [c for c in on + need if c not in df.columns]
        if missing:
            raise DataError(
                f"{name} lacks column(s) {missing}",
                column=missing[0],
                fix="pass the output of nca(..., tau=<dosing interval>) for both intervals",
            )
    m = nca_first[on + need].merge(
        nca_ss[on + need], on=on, how="inner", suffixes=(".first", ".ss"), validate="one_to_one"
    )
    out = m[on].copy()
    out["rac.auc"] = m["auc.tau.ss"] / m["auc.tau.first"]
    out["rac.cmax"] = m["cmax.ss"] / m["cmax.first"]
    out["rac.ctrough"] = m["ctrough.ss"] / m["ctrough.first"]
    out["rac.theoretical"] = 1.0 / (1.0 - np.exp(-m["lambda.z.first"] * m["tau.first"]))
    out.attrs["nca_id"] = on
    return out


#: PKNCA name -> (PPTESTCD, PPTEST); route-dependent names are resolved in `to_cdisc`.
CDISC_PPTESTCD: dict[str, tuple[str, str]] = {
    "c0": ("C0", "Initial Conc"),
    "cmax": ("CMAX", "Max Conc"),
    "tmax": ("TMAX", "Time of CMAX"),
    "tlast": ("TLST", "Time of Last Nonzero Conc"),
    "clast.obs": ("CLST", "Last Nonzero Conc"),
    "auclast": ("AUCLST", "AUC to Last Nonzero Conc"),
    "aucall": ("AUCALL", "AUC All"),
    "aumclast": ("AUMCLST", "AUMC to Last Nonzero Conc"),
    "lambda.z": ("LAMZ", "Lambda z"),
    "r.squared": ("R2", "R Squared"),
    "adj.r.squared": ("R2ADJ", "R Squared Adjusted"),
    "lambda.z.n.points": ("LAMZNPT", "Number of Points for Lambda z"),
    "lambda.z.time.first": ("LAMZLL", "Lambda z Lower Limit"),
    "lambda.z.time.last": ("LAMZUL", "Lambda z Upper Limit"),
    "half.life": ("LAMZHL", "Half-Life Lambda z"),
    "span.ratio": ("LAMZSPN", "Lambda z Span"),
    "clast.pred": ("CLSTP", "Last Nonzero Conc Predicted"),
    "aucinf.obs": ("AUCIFO", "AUC Infinity Obs"),
    "aucinf.pred": ("AUCIFP", "AUC Infinity Pred"),
    "aucpext.obs": ("AUCPEO", "AUC %Extrapolation Obs"),
    "aucpext.pred": ("AUCPEP", "AUC %Extrapolation Pred"),
    "aumcinf.obs": ("AUMCIFO", "AUMC Infinity Obs"),
    "auc.tau": ("AUCTAU", "AUC Over Dosing Interval"),
    "cmin": ("CMIN", "Min Conc"),
    "ctrough": ("CTROUGH", "Trough Conc"),
    "cav": ("CAVG", "Average Conc"),
    "ptr": ("PTROUGHR", "Peak Trough Ratio"),
    "deg.fluc": ("FLUCP", "Fluctuation%"),
}
_CDISC_BY_ROUTE = {
    # name: (extravascular, intravascular)
    "mrt.obs": (
        ("MRTEVIFO", "MRT Extravasc Infinity Obs"),
        ("MRTIVIFO", "MRT Intravasc Infinity Obs"),
    ),
    "cl.obs": (("CLFO", "Total CL Obs by F"), ("CLO", "Total CL Obs")),
    "vz.obs": (("VZFO", "Vz Obs by F"), ("VZO", "Vz Obs")),
}  # fmt: skip


def to_cdisc(df: pd.DataFrame, *, id: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Long CDISC PP-style table from `nca` output.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of `nca`.
    id : str or sequence of str, optional
        Profile id columns (default: those used by `nca`).

    Returns
    -------
    pandas.DataFrame
        Columns: the id columns, ``PPTESTCD``, ``PPTEST``, ``PPSTRESN`` (value) and ``PKNCA``
        (source column). Route decides CL/Vz/MRT codes: extravascular -> CLFO, VZFO, MRTEVIFO
        (apparent, "by F"); IV -> CLO, VZO, MRTIVIFO. Columns without a mapped code (``ctau``,
        ``swing``, ``cl.tau``, flags) are not exported. Missing values are kept as NaN.
    """
    if id is None:
        id = df.attrs.get("nca_id") or ["ID"]
    ids = [id] if isinstance(id, str) else list(id)
    missing = [c for c in ids + ["route"] if c not in df.columns]
    if missing:
        raise DataError(
            f"NCA table lacks column(s) {missing}",
            column=missing[0],
            fix="pass the DataFrame returned by nca()",
        )
    records = []
    for _, r in df.iterrows():
        iv = r["route"] != "extravascular"
        for name in df.columns:
            if name in CDISC_PPTESTCD:
                code, label = CDISC_PPTESTCD[name]
            elif name in _CDISC_BY_ROUTE:
                code, label = _CDISC_BY_ROUTE[name][1 if iv else 0]
            else:
                continue
            val = r[name]
            rec = {c: r[c] for c in ids}
            rec.update(
                PPTESTCD=code,
                PPTEST=label,
                PPSTRESN=float(val) if pd.notna(val) else math.nan,
                PKNCA=name,
            )
            records.append(rec)
    out = pd.DataFrame(records, columns=ids + ["PPTESTCD", "PPTEST", "PPSTRESN", "PKNCA"])
    out.attrs["nca_id"] = ids
    return out
