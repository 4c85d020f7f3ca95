"""Two-arm comparisons: the Cox hazard ratio of arm B vs arm A and the log-rank test.

Both are vectorised over trial replicates: each arm is given as ``time_days`` and ``event`` of
shape ``(n_patients,)`` (one trial) or ``(n_replicates, n_patients)`` (one trial per row; the two
arms must have the same number of rows, and may differ in patients).

The Cox model has one covariate, ``x = 1`` for arm B and ``0`` for arm A, and handles tied event
times by Efron's method (lifelines' ``CoxPHFitter``; R's ``coxph`` default). It is fitted by a
hand-written, vectorised Newton-Raphson with step halving on the Efron log partial likelihood,
iterated until the step in log(HR) is below 1e-10 (lifelines stops earlier: at a step norm of
1e-7 on its standardised covariate, or a relative change in log-likelihood of 1e-9). The standard
error is the inverse square root of the observed information at the optimum; the interval is
Wald, ``exp(log HR +- z se)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from ..errors import DataError
from .km import _groups, _samples, _sorted, _z

__all__ = ["HazardRatio", "LogRank", "hazard_ratio", "logrank_test"]

_MAX_ITER = 60
_TOL = 1e-10


def _two_arms(time_a, event_a, time_b, event_b):
    """Both arms checked and stacked: (time (R, NA+NB), event, x (arm B = 1), one sample)."""
    ta, ea, one_a = _samples(time_a, event_a, time_name="time_a_days", event_name="event_a")
    tb, eb, one_b = _samples(time_b, event_b, time_name="time_b_days", event_name="event_b")
    if one_a != one_b or ta.shape[0] != tb.shape[0]:
        raise DataError(
            "the two arms have different numbers of replicates", column="time_b_days",
            value=(np.shape(time_a), np.shape(time_b)),
            fix="pass both arms as 1-D arrays (one trial) or as 2-D arrays with one row per "
            "replicate and the same number of rows",
        )
    x = np.concatenate([np.zeros(ta.shape, bool), np.ones(tb.shape, bool)], axis=1)
    return np.concatenate([ta, tb], 1), np.concatenate([ea, eb], 1), x, one_a


class _Risk(NamedTuple):
    """Per sorted position: its tie group's counts (at risk, events), by arm."""

    event: np.ndarray  # (R, N) bool, sorted
    x: np.ndarray  # (R, N) bool, sorted (arm B)
    last: np.ndarray  # last member of its tie group
    n0: np.ndarray  # at risk in arm A at the group's time
    n1: np.ndarray  # at risk in arm B
    d0: np.ndarray  # events in arm A at the group's time
    d1: np.ndarray  # events in arm B
    rank: np.ndarray  # an event's rank among its group's events (0, 1, ...), Efron's l


def _risk(t: np.ndarray, e: np.ndarray, x: np.ndarray) -> _Risk:
    ts, es, order = _sorted(t, e)
    xs = np.take_along_axis(x, order, 1)
    _, last, start = _groups(ts)
    n = ts.shape[1]
    end = np.minimum.accumulate(np.where(last, np.arange(n), n - 1)[:, ::-1], axis=1)[:, ::-1]

    def before(c, idx):  # cumulative count strictly before position idx
        return np.where(idx > 0, np.take_along_axis(c, np.maximum(idx - 1, 0), 1), 0)

    c1 = np.cumsum(xs, axis=1)  # arm B patients up to here
    ce0 = np.cumsum(es & ~xs, axis=1)
    ce1 = np.cumsum(es & xs, axis=1)
    ce = ce0 + ce1
    n1 = c1[:, -1:] - before(c1, start)
    n0 = (n - start) - n1
    d0 = np.take_along_axis(ce0, end, 1) - before(ce0, start)
    d1 = np.take_along_axis(ce1, end, 1) - before(ce1, start)
    rank = ce - before(ce, start) - 1
    f = np.float64
    return _Risk(es, xs, last, n0.astype(f), n1.astype(f), d0.astype(f), d1.astype(f),
                 rank.astype(f))


def _efron(r: _Risk, beta: np.ndarray):
    """Efron log partial likelihood, score and information at ``beta`` (R,), per row."""
    phi = np.exp(beta)[:, None]
    d = r.d0 + r.d1
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(r.event, r.rank / d, 0.0)
        s0 = r.n0 + r.n1 * phi - frac * (r.d0 + r.d1 * phi)
        s1 = (r.n1 - frac * r.d1) * phi
        p = np.where(r.event, s1 / s0, 0.0)
        log_s0 = np.where(r.event, np.log(s0), 0.0)
    ll = beta * (r.event & r.x).sum(1) - log_s0.sum(1)
    score = (r.event & r.x).sum(1) - p.sum(1)
    info = (p * (1.0 - p)).sum(1)
    return ll, score, info


def _finite_mle(r: _Risk) -> tuple[np.ndarray, np.ndarray]:
    """Whether the likelihood falls off towards +inf and towards -inf (else the MLE is there)."""
    g = r.last
    bounded_up = (g & (r.d0 > 0) & (r.n1 > 0)).any(1)
    bounded_down = (g & (r.d1 > 0) & (r.n0 > 0)).any(1)
    return bounded_up, bounded_down


def _newton(r: _Risk, fit: np.ndarray):
    """Maximise the Efron likelihood in rows ``fit``; returns (beta, info, converged)."""
    beta = np.zeros(len(fit))
    ll, score, info = _efron(r, beta)
    step = np.ones(len(fit))
    converged = np.zeros(len(fit), bool)
    active = fit.copy()
    for _ in range(_MAX_ITER):
        delta = np.where(active, score / np.where(info > 0, info, 1.0), 0.0)
        converged |= active & (np.abs(delta) < _TOL)
        active &= ~converged
        if not active.any():
            break
        trial = beta + step * delta
        ll_t, score_t, info_t = _efron(r, trial)
        ok = active & (ll_t >= ll - 1e-12 * np.abs(ll))
        beta, ll, score, info = (np.where(ok, a, b) for a, b in (
            (trial, beta), (ll_t, ll), (score_t, score), (info_t, info)))
        step = np.where(ok, 1.0, step / 2)
        active &= step >= 1e-10
    return beta, info, converged


class HazardRatio(NamedTuple):
    """Cox hazard ratio of arm B vs arm A (HR < 1: B better), with its Wald interval.

    Scalars for one trial, arrays of shape ``(n_replicates,)`` otherwise. Where the maximum
    likelihood estimate is infinite (no events in arm B where arm A is at risk: HR = 0; no
    events in arm A where arm B is at risk: HR = inf; neither: NaN), ``hazard_ratio`` takes that
    limit, ``se``, ``lower`` and ``upper`` are NaN and ``finite`` is False.
    """

    hazard_ratio: np.ndarray | float
    lower: np.ndarray | float
    upper: np.ndarray | float
    log_hazard_ratio: np.ndarray | float
    se: np.ndarray | float
    finite: np.ndarray | bool
    alpha: float


class LogRank(NamedTuple):
    """Log-rank test of arm B vs arm A (1 degree of freedom).

    ``observed_b`` and ``expected_b`` are arm B's events and their expectation under equal
    hazards; ``statistic`` is ``(O - E)^2 / V`` with the hypergeometric variance ``V``.
    """

    statistic: np.ndarray | float
    p_value: np.ndarray | float
    observed_b: np.ndarray | float
    expected_b: np.ndarray | float


def _out(values, one: bool):
    return [v[0].item() if one else v for v in values]


def hazard_ratio(time_a_days, event_a, time_b_days, event_b, *, alpha: float = 0.05) -> HazardRatio:
    """Cox proportional-hazards hazard ratio of arm B vs arm A (Efron ties) and its interval.

    Parameters
    ----------
    time_a_days, event_a : array_like, shape (n_a,) or (n_replicates, n_a)
        Arm A (the control): times in days and event flags (1 event, 0 censored).
    time_b_days, event_b : array_like, shape (n_b,) or (n_replicates, n_b)
        Arm B (the experimental arm).
    alpha : float, optional
        ``1 - alpha`` Wald interval (default 0.05: 95%).

    Returns
    -------
    HazardRatio
        ``hazard_ratio``, ``lower``, ``upper``, ``log_hazard_ratio``, ``se``, ``finite``.
    """
    z = _z(alpha)
    t, e, x, one = _two_arms(time_a_days, event_a, time_b_days, event_b)
    r = _risk(t, e, x)
    up, down = _finite_mle(r)
    fit = up & down
    beta, info, converged = _newton(r, fit)
    limit = np.where(up & ~down, -np.inf, np.where(down & ~up, np.inf, np.nan))
    beta = np.where(fit, beta, limit)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(converged, 1.0 / np.sqrt(info), np.nan)
    hr = np.exp(beta)
    values = _out([hr, np.exp(beta - z * se), np.exp(beta + z * se), beta, se, converged], one)
    return HazardRatio(*values, alpha=alpha)


def logrank_test(time_a_days, event_a, time_b_days, event_b) -> LogRank:
    """Log-rank test comparing arm B with arm A, as lifelines' ``logrank_test``.

    Parameters
    ----------
    time_a_days, event_a, time_b_days, event_b : array_like
        As for :func:`hazard_ratio`.

    Returns
    -------
    LogRank
        ``statistic`` (chi-squared, 1 df), ``p_value``, ``observed_b``, ``expected_b``; NaN
        statistic and p-value where there is no event.
    """
    t, e, x, one = _two_arms(time_a_days, event_a, time_b_days, event_b)
    r = _risk(t, e, x)
    g = r.last
    n = r.n0 + r.n1
    d = r.d0 + r.d1
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(g, d * r.n1 / n, 0.0).sum(1)
        var = np.where(g & (n > 1), d * (r.n1 / n) * (r.n0 / n) * (n - d) / (n - 1), 0.0).sum(1)
        observed = np.where(g, r.d1, 0.0).sum(1)
        stat = np.where(var > 0, (observed - expected) ** 2 / var, np.nan)
    p = stats.chi2.sf(stat, 1)
    return LogRank(*_out([stat, p, observed, expected], one))
