"""Kaplan-Meier estimates, vectorised over trial replicates.

Every function takes ``time_days`` (times to event or censoring, in days, >= 0) and ``event``
(1 = event observed, 0 = censored) of the same shape:

* a 1-D array of ``n_patients`` is one sample;
* a 2-D array of shape ``(n_replicates, n_patients)`` is one independent sample per row (one trial
  replicate, or one arm of one replicate), all estimated at once without a Python loop.

The estimates follow lifelines' :class:`~lifelines.KaplanMeierFitter` exactly (the tests check
this to 1e-12): the timeline is time 0 plus every distinct observed time (events and censorings);
at time ``t`` the patients at risk are those with ``time_days >= t`` (a patient censored at ``t``
is still at risk at ``t``); ``S(t) = exp(sum log((n - d) / n))``; the Greenwood variance is
``S(t)^2 * sum d / (n (n - d))`` (a term with ``n == d`` counts 0, as in lifelines); the pointwise
confidence band is the exponential Greenwood (log(-log)) band.

Months: 1 month = :data:`DAYS_PER_MONTH` = 30.4375 days (365.25 / 12).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import DataError

__all__ = [
    "DAYS_PER_MONTH",
    "KaplanMeier",
    "MedianSurvival",
    "days_to_months",
    "months_to_days",
    "kaplan_meier",
    "km_median",
    "km_rate",
    "number_at_risk",
    "survival_table",
]

#: Days in one month (365.25 / 12 = 30.4375), the convention of oncology trial reports.
DAYS_PER_MONTH = 30.4375


def days_to_months(days):
    """Convert days to months (1 month = 30.4375 days). Arrays and scalars alike."""
    return np.asarray(days, dtype=float) / DAYS_PER_MONTH


def months_to_days(months):
    """Convert months to days (1 month = 30.4375 days). Arrays and scalars alike."""
    return np.asarray(months, dtype=float) * DAYS_PER_MONTH


# --------------------------------------------------------------------------------------------
# input checks


def _where(index: tuple[int, ...]) -> str:
    if len(index) == 1:
        return f"patient {index[0]} (0-based index [{index[0]}])"
    r, i = index
    return f"replicate {r}, patient {i} (0-based index [{r}, {i}])"


def _check_time(time_days, name: str) -> np.ndarray:
    try:
        t = np.asarray(time_days, dtype=float)
    except (TypeError, ValueError):
        raise DataError(
            f"{name} must be numbers (days)", column=name,
            fix=f"pass {name} as a numeric array of days, one per patient",
        ) from None
    if t.ndim not in (1, 2) or t.shape[-1] == 0:
        raise DataError(
            f"{name} must be a non-empty 1-D array (one sample) or 2-D array "
            "(n_replicates, n_patients)", column=name, value=t.shape,
            fix="pass one row of patients per replicate",
        )
    bad = ~np.isfinite(t)
    if bad.any():
        index = tuple(int(k) for k in np.argwhere(bad)[0])
        raise DataError(
            f"{_where(index)} has a missing or infinite time", column=name,
            value=float(t[index]),
            fix="give every patient a finite time in days; censor a patient without an event "
            "at the last follow-up (event 0)",
        )
    if (t < 0).any():
        index = tuple(int(k) for k in np.argwhere(t < 0)[0])
        raise DataError(
            f"{_where(index)} has a negative time", column=name, value=float(t[index]),
            fix="times are days from randomisation (or first dose) and must be >= 0",
        )
    return t


def _check_event(event, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        e = np.asarray(event, dtype=float)
    except (TypeError, ValueError):
        raise DataError(
            f"{name} must be 0 (censored) or 1 (event)", column=name,
            fix=f"pass {name} as an array of 0/1 or booleans",
        ) from None
    if e.shape != shape:
        raise DataError(
            f"{name} has shape {e.shape} but the times have shape {shape}", column=name,
            value=e.shape, fix="pass one event flag per time, in an array of the same shape",
        )
    bad = ~((e == 0) | (e == 1))
    if bad.any():
        index = tuple(int(k) for k in np.argwhere(bad)[0])
        raise DataError(
            f"{_where(index)} has an event flag that is not 0 or 1", column=name,
            value=float(e[index]), fix="use 1 for an observed event and 0 for censored",
        )
    return e == 1


def _samples(time_days, event, *, time_name: str = "time_days", event_name: str = "event"):
    """Checked ``(time (R, N) float64, event (R, N) bool, one_sample)``."""
    t = _check_time(time_days, time_name)
    e = _check_event(event, t.shape, event_name)
    one = t.ndim == 1
    return np.atleast_2d(t), np.atleast_2d(e), one


def _at_times(at_days, name: str = "at_days") -> tuple[np.ndarray, bool]:
    """Checked query times as a 1-D array, and whether a scalar was given."""
    a = np.asarray(at_days, dtype=float)
    scalar = a.ndim == 0
    a = np.atleast_1d(a)
    if a.ndim != 1:
        raise DataError(f"{name} must be a scalar or a 1-D array of days", column=name,
                        value=a.shape, fix="pass the landmark times as a flat list of days")
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"landmark time {k} is not a finite time >= 0", column=name,
                        value=float(a[k]), fix="give landmark times in days, e.g. "
                        "months_to_days([6, 12])")
    return a, scalar


# --------------------------------------------------------------------------------------------
# the event table


class _Table(NamedTuple):
    time: np.ndarray  # (R, W) distinct times, time 0 first, padded with +inf
    at_risk: np.ndarray  # (R, W) float, padded with 0
    observed: np.ndarray  # (R, W) float, events at that time
    censored: np.ndarray  # (R, W) float
    n_times: np.ndarray  # (R,) valid columns per row


def _sorted(t: np.ndarray, e: np.ndarray):
    order = np.argsort(t, axis=1, kind="stable")
    return np.take_along_axis(t, order, 1), np.take_along_axis(e, order, 1), order


def _groups(ts: np.ndarray):
    """Tie groups of row-sorted times: (first-of-group mask, last-of-group mask, start index)."""
    n = ts.shape[1]
    same = ts[:, 1:] == ts[:, :-1]
    first = np.ones(ts.shape, bool)
    first[:, 1:] = ~same
    last = np.ones(ts.shape, bool)
    last[:, :-1] = ~same
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0), axis=1)
    return first, last, start


def _event_table(t: np.ndarray, e: np.ndarray) -> _Table:
    """Per-row event table on the lifelines timeline: time 0, then each distinct time."""
    n_rep, n = t.shape
    ts, es, _ = _sorted(t, e)
    _, last, start = _groups(ts)
    ce = np.cumsum(es, axis=1)
    before = np.where(start > 0, np.take_along_axis(ce, np.maximum(start - 1, 0), 1), 0)
    d = (ce - before).astype(float)  # at the last member of a group: its events
    size = (np.arange(n) - start + 1).astype(float)  # at the last member: the group size
    shift = (ts[:, 0] > 0).astype(int)  # rows that need a separate time-0 row
    m = last.sum(axis=1)
    width = int((m + shift).max())
    rows, cols = np.nonzero(last)
    k = (np.cumsum(last, axis=1) - 1)[rows, cols] + shift[rows]
    time = np.full((n_rep, width), np.inf)
    at_risk = np.zeros((n_rep, width))
    observed = np.zeros((n_rep, width))
    censored = np.zeros((n_rep, width))
    time[shift == 1, 0] = 0.0
    at_risk[shift == 1, 0] = n
    time[rows, k] = ts[rows, cols]
    at_risk[rows, k] = n - start[rows, cols]
    observed[rows, k] = d[rows, cols]
    censored[rows, k] = size[rows, cols] - d[rows, cols]
    return _Table(time, at_risk, observed, censored, m + shift)


# --------------------------------------------------------------------------------------------
# Kaplan-Meier


class KaplanMeier(NamedTuple):
    """Kaplan-Meier curves, one per sample (row).

    For 2-D input every field has shape ``(n_replicates, n_columns)`` (``n_times`` has shape
    ``(n_replicates,)``); row ``r`` is valid in its first ``n_times[r]`` columns and padded after
    them (time ``inf``, counts 0, survival and variance repeating the last value). For 1-D input
    the fields are 1-D and unpadded.

    Attributes
    ----------
    time_days : ndarray
        The timeline in days: 0, then every distinct observed time (event or censoring).
    at_risk : ndarray
        Patients at risk at each time (``time_days >= t``).
    observed : ndarray
        Events at each time.
    censored : ndarray
        Censorings at each time.
    survival : ndarray
        Kaplan-Meier ``S(t)`` just after each time (right-continuous step function).
    variance : ndarray
        Greenwood variance of ``S(t)``.
    lower, upper : ndarray
        Pointwise ``1 - alpha`` exponential Greenwood (log(-log)) confidence band of ``S(t)``.
    n_times : ndarray or int
        Valid columns per row.
    alpha : float
        The band's ``alpha``.
    """

    time_days: np.ndarray
    at_risk: np.ndarray
    observed: np.ndarray
    censored: np.ndarray
    survival: np.ndarray
    variance: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_times: np.ndarray
    alpha: float


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise DataError("alpha must lie strictly between 0 and 1", column="alpha", value=alpha,
                        fix="use alpha=0.05 for 95% intervals, 0.1 for 90%")
    return float(stats.norm.ppf(1 - alpha / 2))


def _km_arrays(tab: _Table, alpha: float):
    """S, Greenwood variance and the log(-log) band, computed as lifelines computes them."""
    n, d = tab.at_risk, tab.observed
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(n > 0, np.log(n - d) - np.log(n), 0.0)
        green = np.where((n > 0) & (n > d), d / (n * (n - d)), 0.0)
        log_s = np.cumsum(log_term, axis=1)
        surv = np.exp(log_s)
        cum_sq = np.cumsum(green, axis=1)
        z = _z(alpha)
        v = np.log(surv)
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(cum_sq) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(cum_sq) / v))
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    return surv, surv**2 * cum_sq, lower, upper


def _kaplan_meier_2d(t: np.ndarray, e: np.ndarray, alpha: float) -> KaplanMeier:
    tab = _event_table(t, e)
    surv, var, lower, upper = _km_arrays(tab, alpha)
    return KaplanMeier(tab.time, tab.at_risk, tab.observed, tab.censored, surv, var, lower,
                       upper, tab.n_times, alpha)


def kaplan_meier(time_days, event, *, alpha: float = 0.05) -> KaplanMeier:
    """Kaplan-Meier survival curves, one per sample.

    Parameters
    ----------
    time_days : array_like, shape (n_patients,) or (n_replicates, n_patients)
        Time to event or censoring, days (>= 0, finite).
    event : array_like, same shape
        1 (or True) = event observed, 0 (or False) = censored.
    alpha : float, optional
        The pointwise band is ``1 - alpha`` (default 0.05: 95%).

    Returns
    -------
    KaplanMeier
        Timeline, at-risk counts, events, censorings, ``S(t)``, Greenwood variance and band.

    Raises
    ------
    DataError
        A negative, missing or infinite time, an event flag not 0/1, or shapes that differ; the
        message names the replicate and patient index, the value and the fix.
    """
    t, e, one = _samples(time_days, event)
    km = _kaplan_meier_2d(t, e, alpha)
    if not one:
        return km
    w = int(km.n_times[0])
    return km._replace(**{f: getattr(km, f)[0, :w] for f in KaplanMeier._fields[:8]},
                       n_times=w)


def _step_index(time: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(R, K) column of the last timeline point <= each query time (the timeline starts at 0)."""
    return (time[:, :, None] <= at[None, None, :]).sum(axis=1) - 1


def _first_at_or_below(time: np.ndarray, curve: np.ndarray, valid: np.ndarray, q: float):
    """First timeline time where ``curve <= q`` per row; ``inf`` when never (lifelines)."""
    hit = (curve <= q) & valid
    idx = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), time[np.arange(len(time)), idx], np.inf)


class MedianSurvival(NamedTuple):
    """Kaplan-Meier median survival (days) and its ``1 - alpha`` confidence interval.

    Scalars for 1-D input, arrays of shape ``(n_replicates,)`` for 2-D input. ``inf`` where not
    reached (the curve, or the band for the interval, never falls to 0.5).
    """

    median_days: np.ndarray | float
    lower_days: np.ndarray | float
    upper_days: np.ndarray | float


def km_median(time_days, event, *, alpha: float = 0.05) -> MedianSurvival:
    """Median survival time and its confidence interval, in days.

    The median is the first timeline time at which ``S(t) <= 0.5`` (lifelines'
    ``median_survival_time_``; no averaging when ``S`` sits exactly at 0.5, unlike R's
    ``survfit``). Where ``S`` never reaches 0.5 the median is ``inf`` (not reached).

    The interval is Brookmeyer-Crowley style: the times at which the lower and the upper limit
    of the pointwise log(-log) band first fall to 0.5, exactly lifelines'
    ``median_survival_times(kmf.confidence_interval_)``. The upper limit is often ``inf``.

    Parameters
    ----------
    time_days, event : array_like
        As for :func:`kaplan_meier`.
    alpha : float, optional
        ``1 - alpha`` interval (default 0.05).

    Returns
    -------
    MedianSurvival
        ``median_days``, ``lower_days``, ``upper_days``: convert with :func:`days_to_months`.
    """
    t, e, one = _samples(time_days, event)
    km = _kaplan_meier_2d(t, e, alpha)
    valid = np.arange(km.time_days.shape[1]) < km.n_times[:, None]
    out = [_first_at_or_below(km.time_days, c, valid, 0.5)
           for c in (km.survival, km.lower, km.upper)]
    return MedianSurvival(*(float(o[0]) if one else o for o in out))


def km_rate(time_days, event, at_days):
    """Landmark Kaplan-Meier survival ``S(at)``, e.g. 6- and 12-month PFS.

    ``S`` is the right-continuous step function: an event at exactly ``at_days`` counts. A
    landmark beyond the last observed time gets the last value of the curve (lifelines'
    ``survival_function_at_times``); check follow-up with :func:`number_at_risk`.

    Parameters
    ----------
    time_days, event : array_like
        As for :func:`kaplan_meier`.
    at_days : float or array_like of shape (K,)
        Landmark times in days (>= 0), e.g. ``months_to_days([6, 12])``.

    Returns
    -------
    float or ndarray
        Shape ``()``, ``(K,)``, ``(n_replicates,)`` or ``(n_replicates, K)`` following the inputs.
    """
    t, e, one = _samples(time_days, event)
    at, scalar = _at_times(at_days)
    km = _kaplan_meier_2d(t, e, 0.05)
    out = np.take_along_axis(km.survival, _step_index(km.time_days, at), 1)
    return _shape(out, one, scalar)


def _shape(out: np.ndarray, one: bool, scalar: bool):
    if scalar:
        out = out[:, 0]
    if one:
        out = out[0]
    return float(out) if np.ndim(out) == 0 else out


def number_at_risk(time_days, at_days, event=None):
    """Patients still at risk (``time_days >= at``) at each time, for risk tables under plots.

    This is the Kaplan-Meier risk set (lifelines' ``event_table["at_risk"]``). lifelines'
    plotting helper ``add_at_risk_counts`` instead shows those with ``time > at``; the two
    differ only for a patient whose time equals the tick exactly.

    Parameters
    ----------
    time_days : array_like, shape (n_patients,) or (n_replicates, n_patients)
        Time to event or censoring, days.
    at_days : float or array_like of shape (K,)
        Times in days (>= 0).
    event : array_like, optional
        Checked when given (same rules as :func:`kaplan_meier`); the count does not depend on it.

    Returns
    -------
    int or ndarray of int
        Shape following the inputs, as for :func:`km_rate`.
    """
    if event is None:
        t = _check_time(time_days, "time_days")
        one, t = t.ndim == 1, np.atleast_2d(t)
    else:
        t, _, one = _samples(time_days, event)
    at, scalar = _at_times(at_days)
    out = (t[:, :, None] >= at[None, None, :]).sum(axis=1)
    out = _shape(out, one, scalar)
    return int(out) if isinstance(out, float) else out


def survival_table(time_days, event, *, alpha: float = 0.05) -> pd.DataFrame:
    """The Kaplan-Meier life table as a frame, one row per timeline time (and replicate).

    Columns: ``replicate`` (2-D input only), ``time_days``, ``time_months``, ``at_risk``,
    ``observed`` (events), ``censored``, ``removed`` (events + censorings), ``survival``,
    ``variance`` (Greenwood), ``lower``, ``upper`` (``1 - alpha`` log(-log) band). The rows match
    lifelines' ``event_table`` joined with ``survival_function_`` and ``confidence_interval_``.
    """
    t, e, one = _samples(time_days, event)
    km = _kaplan_meier_2d(t, e, alpha)
    valid = np.arange(km.time_days.shape[1]) < km.n_times[:, None]
    rows, _ = np.nonzero(valid)
    frame = {"replicate": rows} if not one else {}
    frame["time_days"] = km.time_days[valid]
    frame["time_months"] = km.time_days[valid] / DAYS_PER_MONTH
    for name in ("at_risk", "observed", "censored"):
        frame[name] = getattr(km, name)[valid].astype(np.int64)
    frame["removed"] = frame["observed"] + frame["censored"]
    for name in ("survival", "variance", "lower", "upper"):
        frame[name] = getattr(km, name)[valid]
    return pd.DataFrame(frame)
