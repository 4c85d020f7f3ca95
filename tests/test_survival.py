"""pkpd.survival against lifelines (the oracle): Kaplan-Meier curves, Greenwood variance and
band, medians with their interval, landmark rates, numbers at risk, the life table, the Cox
hazard ratio (Efron ties) with its interval, and the log-rank test; vectorised 2-D input row by
row; bad input.

Tolerances: Kaplan-Meier quantities are computed with lifelines' arithmetic and must agree to
1e-12 (in practice bit for bit). The Cox estimate here is iterated to a step below 1e-10 in
log(HR); lifelines stops earlier, at the first of a Newton decrement ``g' H^-1 g / 2`` below
``precision`` (1e-7), a step norm below ``precision`` or a relative log-likelihood change below
``r_precision`` (1e-9). A decrement ``delta`` means ``|beta - beta_hat| ~ sqrt(2 delta / I)``, so
the tolerance on log(HR) is twice ``sqrt(2 max(precision, r_precision |ll|) / I)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from lifelines.utils import median_survival_times

from pkpd.errors import DataError
from pkpd.survival import (
    DAYS_PER_MONTH,
    days_to_months,
    hazard_ratio,
    kaplan_meier,
    km_median,
    km_rate,
    logrank_test,
    months_to_days,
    number_at_risk,
    survival_table,
)
from pkpd.survival.hazard import _efron, _risk, _two_arms

EXACT = 1e-12


def _sample(rng, n, scale=150.0, censor=0.35, grid=7.0, zeros=False):
    """Times on a weekly grid (many ties), random censoring; optionally some times of 0."""
    t = np.round(rng.exponential(scale, n) / grid) * grid
    if zeros:
        t[rng.random(n) < 0.03] = 0.0
    e = (rng.random(n) > censor).astype(int)
    return t, e


def _lifelines_km(t, e):
    return KaplanMeierFitter().fit(t, e)


CASES = [
    dict(n=400, scale=150.0, censor=0.35, grid=7.0),
    dict(n=60, scale=90.0, censor=0.1, grid=1.0, zeros=True),
    dict(n=250, scale=300.0, censor=0.8, grid=30.0),  # heavy censoring: median not reached
    dict(n=30, scale=100.0, censor=0.0, grid=0.5),  # no censoring
    dict(n=500, scale=200.0, censor=0.5, grid=1e-9),  # continuous times, no ties
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_kaplan_meier_matches_lifelines(case):
    rng = np.random.default_rng(100 + case)
    t, e = _sample(rng, **CASES[case])
    km = kaplan_meier(t, e)
    ref = _lifelines_km(t, e)
    table = ref.event_table
    np.testing.assert_array_equal(km.time_days, ref.survival_function_.index.values)
    np.testing.assert_allclose(km.survival, ref.survival_function_.values[:, 0], rtol=0,
                               atol=EXACT)
    np.testing.assert_array_equal(km.at_risk, table["at_risk"].values)
    np.testing.assert_array_equal(km.observed, table["observed"].values)
    np.testing.assert_array_equal(km.censored, table["censored"].values)
    greenwood = ref.survival_function_.values[:, 0] ** 2 * ref._cumulative_sq_.values
    np.testing.assert_allclose(km.variance, greenwood, rtol=0, atol=EXACT)
    band = ref.confidence_interval_.values
    np.testing.assert_allclose(np.c_[km.lower, km.upper], band, rtol=0, atol=EXACT)
    assert km.n_times == len(km.time_days)


def test_greenwood_by_hand():
    """Greenwood's formula on a small sample worked out by hand (independent of lifelines)."""
    t = [1, 2, 2, 3, 4, 5]
    e = [1, 1, 0, 1, 0, 1]
    km = kaplan_meier(t, e)
    # timeline 0, 1, 2, 3, 4, 5; at risk 6, 6, 5, 3, 2, 1; events 0, 1, 1, 1, 0, 1
    s = np.cumprod([1, 5 / 6, 4 / 5, 2 / 3, 1, 0])
    np.testing.assert_allclose(km.survival, s, atol=1e-15)
    g = np.cumsum([0, 1 / 30, 1 / 20, 1 / 6, 0, 0])  # d / (n (n - d)); n == d counts 0
    np.testing.assert_allclose(km.variance, s**2 * g, atol=1e-15)
    np.testing.assert_array_equal(km.at_risk, [6, 6, 5, 3, 2, 1])


@pytest.mark.parametrize("case", range(len(CASES)))
def test_median_and_interval_match_lifelines(case):
    rng = np.random.default_rng(200 + case)
    t, e = _sample(rng, **CASES[case])
    ref = _lifelines_km(t, e)
    med = km_median(t, e)
    ci = median_survival_times(ref.confidence_interval_).values[0]
    assert med.median_days == ref.median_survival_time_
    assert (med.lower_days, med.upper_days) == (ci[0], ci[1])


def test_median_not_reached_is_inf_and_exact_half_follows_lifelines():
    t = np.arange(1.0, 11.0)
    e = np.r_[1, 1, np.zeros(8)]
    med = km_median(t, e)
    assert med.median_days == np.inf and med.upper_days == np.inf
    assert _lifelines_km(t, e).median_survival_time_ == np.inf
    # S falls to 0.5 exactly at t = 2 (no averaging with the next time, unlike R)
    t, e = [1, 2, 3, 4], [1, 1, 1, 1]
    assert km_median(t, e).median_days == _lifelines_km(t, e).median_survival_time_


def test_landmark_rates_match_lifelines():
    rng = np.random.default_rng(3)
    t, e = _sample(rng, 300)
    ref = _lifelines_km(t, e)
    at = np.r_[0.0, t[:5], months_to_days([6, 12]), t.max(), t.max() + 100.0]
    np.testing.assert_allclose(km_rate(t, e, at), ref.survival_function_at_times(at).values,
                               rtol=0, atol=EXACT)
    assert km_rate(t + 1.0, e, 0.0) == 1.0 and isinstance(km_rate(t, e, 10.0), float)


def _lifelines_at_risk(ref, at):
    """At risk at ``at`` from lifelines' event table: the first row at or after ``at``."""
    table = ref.event_table
    later = table.index.values >= at
    return int(table["at_risk"].values[later][0]) if later.any() else 0


def test_number_at_risk_matches_lifelines_event_table():
    rng = np.random.default_rng(4)
    t, e = _sample(rng, 300, zeros=True)
    ref = _lifelines_km(t, e)
    at = np.r_[0.0, 3.0, t[:6], months_to_days([3, 6, 9, 12]), t.max(), t.max() + 1]
    expect = [_lifelines_at_risk(ref, a) for a in at]
    np.testing.assert_array_equal(number_at_risk(t, at, e), expect)
    np.testing.assert_array_equal(number_at_risk(t, at), [(t >= a).sum() for a in at])
    assert number_at_risk(t, 0.0) == 300


def test_survival_table_matches_lifelines_tables():
    rng = np.random.default_rng(5)
    t, e = _sample(rng, 200)
    ref = _lifelines_km(t, e)
    frame = survival_table(t, e)
    expect = ref.event_table
    assert list(frame.columns) == [
        "time_days", "time_months", "at_risk", "observed", "censored", "removed", "survival",
        "variance", "lower", "upper",
    ]
    for col in ("at_risk", "observed", "censored", "removed"):
        np.testing.assert_array_equal(frame[col].values, expect[col].values)
    np.testing.assert_array_equal(frame["time_days"].values, expect.index.values)
    np.testing.assert_allclose(frame["survival"], ref.survival_function_.values[:, 0],
                               atol=EXACT, rtol=0)
    np.testing.assert_allclose(frame["time_months"] * DAYS_PER_MONTH, frame["time_days"])


def test_two_dimensional_input_is_each_row_alone():
    """(replicates, patients) input: every row equals its own 1-D estimate and lifelines fit."""
    rng = np.random.default_rng(6)
    rows = [_sample(rng, 150, grid=g, censor=c, zeros=z)
            for g, c, z in ((7.0, 0.3, False), (1.0, 0.6, True), (30.0, 0.9, False),
                            (14.0, 0.0, False))]
    t = np.stack([r[0] for r in rows])
    e = np.stack([r[1] for r in rows])
    km = kaplan_meier(t, e)
    med = km_median(t, e)
    at = months_to_days([3, 6, 12])
    rates = km_rate(t, e, at)
    risk = number_at_risk(t, at, e)
    table = survival_table(t, e)
    assert rates.shape == (4, 3) and risk.shape == (4, 3) and med.median_days.shape == (4,)
    for r in range(4):
        ref = _lifelines_km(t[r], e[r])
        w = km.n_times[r]
        np.testing.assert_allclose(km.survival[r, :w], ref.survival_function_.values[:, 0],
                                   atol=EXACT, rtol=0)
        assert np.all(km.time_days[r, w:] == np.inf) and np.all(km.at_risk[r, w:] == 0)
        assert med.median_days[r] == ref.median_survival_time_
        ci = median_survival_times(ref.confidence_interval_).values[0]
        assert (med.lower_days[r], med.upper_days[r]) == (ci[0], ci[1])
        np.testing.assert_allclose(rates[r], ref.survival_function_at_times(at).values,
                                   atol=EXACT, rtol=0)
        np.testing.assert_array_equal(risk[r], [_lifelines_at_risk(ref, a) for a in at])
        sub = table[table["replicate"] == r]
        np.testing.assert_array_equal(sub["at_risk"].values, ref.event_table["at_risk"].values)
    assert km_rate(t, e, 182.0).shape == (4,)


def test_month_conversion():
    assert DAYS_PER_MONTH == 365.25 / 12
    np.testing.assert_allclose(months_to_days([6, 12]), [182.625, 365.25])
    np.testing.assert_allclose(days_to_months(months_to_days([0.5, 7.3])), [0.5, 7.3])


# ---------------------------------------------------------------------------------------------
# Cox hazard ratio and log-rank


def _arms(rng, na, nb, hr, grid=7.0):
    ta = np.round(rng.exponential(150.0, na) / grid) * grid
    tb = np.round(rng.exponential(150.0 / hr, nb) / grid) * grid
    ea = (rng.random(na) > 0.3).astype(int)
    eb = (rng.random(nb) > 0.4).astype(int)
    return ta, ea, tb, eb


def _lifelines_cox(ta, ea, tb, eb, **fit_options):
    df = pd.DataFrame({"T": np.r_[ta, tb], "E": np.r_[ea, eb],
                       "arm_b": np.r_[np.zeros(len(ta)), np.ones(len(tb))]})
    return CoxPHFitter().fit(df, "T", "E", fit_options=fit_options or None)


def _cox_tolerance(fitter, info, precision=1e-7, r_precision=1e-9):
    """Twice lifelines' own convergence bound on log(HR) (module docstring)."""
    delta = max(precision, r_precision * abs(fitter.log_likelihood_))
    return 2 * np.sqrt(2 * delta / info)


ARMS = [(300, 300, 0.7, 7.0), (40, 90, 1.0, 30.0), (250, 120, 1.6, 1.0), (500, 500, 0.5, 1e-9)]


@pytest.mark.parametrize("case", range(len(ARMS)))
def test_hazard_ratio_matches_lifelines_cox(case):
    na, nb, true_hr, grid = ARMS[case]
    ta, ea, tb, eb = _arms(np.random.default_rng(300 + case), na, nb, true_hr, grid)
    res = hazard_ratio(ta, ea, tb, eb)
    ref = _lifelines_cox(ta, ea, tb, eb)
    info = 1 / res.se**2
    tol = _cox_tolerance(ref, info)
    assert res.finite
    assert abs(res.log_hazard_ratio - ref.params_["arm_b"]) < tol
    assert abs(res.se - ref.standard_errors_["arm_b"]) < 10 * tol * res.se
    row = ref.summary.loc["arm_b"]
    assert abs(np.log(res.hazard_ratio) - np.log(row["exp(coef)"])) < tol
    assert abs(np.log(res.lower) - np.log(row["exp(coef) lower 95%"])) < 20 * tol
    assert abs(np.log(res.upper) - np.log(row["exp(coef) upper 95%"])) < 20 * tol
    # a tighter lifelines fit comes closer, within its own (tighter) bound
    tight = _lifelines_cox(ta, ea, tb, eb, precision=1e-12, r_precision=1e-15)
    assert abs(res.log_hazard_ratio - tight.params_["arm_b"]) < _cox_tolerance(
        tight, info, 1e-12, 1e-15)


def test_efron_likelihood_equals_lifelines_at_its_estimate():
    """The Efron log partial likelihood here, at lifelines' estimate, equals lifelines' value."""
    ta, ea, tb, eb = _arms(np.random.default_rng(7), 200, 150, 0.8, grid=14.0)
    ref = _lifelines_cox(ta, ea, tb, eb)
    t, e, x, _ = _two_arms(ta, ea, tb, eb)
    ll, _, _ = _efron(_risk(t, e, x), np.array([ref.params_["arm_b"]]))
    assert abs(ll[0] - ref.log_likelihood_) < 1e-12 * abs(ref.log_likelihood_)
    res = hazard_ratio(ta, ea, tb, eb, alpha=0.1)
    z = 1.6448536269514722
    np.testing.assert_allclose([res.lower, res.upper],
                               np.exp(res.log_hazard_ratio + np.r_[-z, z] * res.se), rtol=1e-14)


@pytest.mark.parametrize("case", range(len(ARMS)))
def test_logrank_matches_lifelines(case):
    na, nb, true_hr, grid = ARMS[case]
    ta, ea, tb, eb = _arms(np.random.default_rng(400 + case), na, nb, true_hr, grid)
    res = logrank_test(ta, ea, tb, eb)
    ref = lifelines_logrank(ta, tb, ea, eb)
    assert abs(res.statistic - ref.test_statistic) < 1e-10 * max(1.0, ref.test_statistic)
    assert abs(res.p_value - ref.p_value) < 1e-12
    assert res.observed_b == eb.sum()


def test_two_arm_replicates_row_by_row():
    rng = np.random.default_rng(8)
    arms = [_arms(rng, 120, 100, hr, 7.0) for hr in (0.6, 1.0, 1.5)]
    ta, ea, tb, eb = (np.stack([a[k] for a in arms]) for k in range(4))
    res = hazard_ratio(ta, ea, tb, eb)
    lr = logrank_test(ta, ea, tb, eb)
    for r in range(3):
        one = hazard_ratio(ta[r], ea[r], tb[r], eb[r])
        assert abs(res.log_hazard_ratio[r] - one.log_hazard_ratio) < 1e-12
        assert abs(res.se[r] - one.se) < 1e-12
        ref = lifelines_logrank(ta[r], tb[r], ea[r], eb[r])
        assert abs(lr.p_value[r] - ref.p_value) < 1e-12


def test_infinite_estimates_take_their_limit():
    rng = np.random.default_rng(9)
    ta, ea, tb, eb = _arms(rng, 50, 50, 1.0)
    zero = hazard_ratio(ta, ea, tb, np.zeros(50))  # no events in arm B
    assert zero.hazard_ratio == 0.0 and not zero.finite and np.isnan(zero.lower)
    inf = hazard_ratio(ta, np.zeros(50), tb, eb)
    assert inf.hazard_ratio == np.inf and not inf.finite and np.isnan(inf.se)
    none = hazard_ratio(ta, np.zeros(50), tb, np.zeros(50))
    assert np.isnan(none.hazard_ratio) and not none.finite
    assert np.isnan(logrank_test(ta, np.zeros(50), tb, np.zeros(50)).p_value)
    mixed = hazard_ratio(np.stack([ta, ta]), np.stack([ea, ea]), np.stack([tb, tb]),
                         np.stack([eb, np.zeros(50)]))
    assert mixed.finite.tolist() == [True, False] and mixed.hazard_ratio[1] == 0.0


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("time_days", "event", "words"),
    [
        ([1.0, -2.0, 3.0], [1, 0, 1], ["patient 1", "negative", "-2.0", "Fix"]),
        ([1.0, np.nan, 3.0], [1, 0, 1], ["patient 1", "missing", "nan", "Fix"]),
        ([1.0, 2.0, np.inf], [1, 0, 1], ["patient 2", "infinite", "inf", "Fix"]),
        ([1.0, 2.0, 3.0], [1, 2, 1], ["patient 1", "not 0 or 1", "2.0", "Fix"]),
        ([1.0, 2.0, 3.0], [1, np.nan, 1], ["patient 1", "not 0 or 1", "nan"]),
        ([1.0, 2.0, 3.0], [1, 0], ["shape (2,)", "(3,)", "Fix"]),
        ([[1.0, 2.0], [3.0, -4.0]], [[1, 0], [1, 1]], ["replicate 1, patient 1", "-4.0"]),
        ([], [], ["non-empty", "Fix"]),
        (["a", "b"], [1, 0], ["numbers", "Fix"]),
    ],
)
def test_bad_input_names_index_value_and_fix(time_days, event, words):
    for call in (lambda: kaplan_meier(time_days, event), lambda: km_median(time_days, event),
                 lambda: km_rate(time_days, event, 10.0),
                 lambda: hazard_ratio([1.0, 2.0, 3.0], [1, 1, 0], time_days, event)):
        with pytest.raises(DataError) as err:
            call()
        for word in words:
            assert word in str(err.value)


def test_bad_landmarks_alpha_and_arms():
    t, e = [1.0, 2.0, 3.0], [1, 0, 1]
    with pytest.raises(DataError, match="landmark time 1 .*-6.0"):
        km_rate(t, e, [6.0, -6.0])
    with pytest.raises(DataError, match="alpha"):
        km_median(t, e, alpha=5)
    with pytest.raises(DataError, match="different numbers of replicates"):
        hazard_ratio(np.ones((2, 3)), np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(DataError, match="different numbers of replicates"):
        logrank_test(t, e, np.ones((1, 3)), np.ones((1, 3)))


def test_no_lifelines_at_runtime():
    """The estimators do not import lifelines (it is the test oracle only)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, pkpd.survival as s; s.km_median([1, 2], [1, 0]); "
            "s.hazard_ratio([1, 2], [1, 1], [3, 4], [1, 0]); "
            "assert 'lifelines' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


warnings.filterwarnings("ignore", category=DeprecationWarning, module="lifelines")
