"""Benchmark: trial survival endpoints, pkpd's vectorised estimators vs a lifelines loop.

20 replicates x 2 arms x 2,000 patients (exponential times, about 30% censored). Measured in the
same run, best of 3:
  * pkpd (pkpd.survival): km_median, km_rate at 6 and 12 months, number_at_risk, hazard_ratio
    (Cox, Efron ties) and logrank_test, each called once on the (20, 2000) arrays;
  * baseline: lifelines, replicate by replicate (KaplanMeierFitter + median_survival_times +
    survival_function_at_times, CoxPHFitter, logrank_test);
ratio = baseline seconds / pkpd seconds. The last line is one JSON object.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd


def _data(seed: int = 10):
    rng = np.random.default_rng(seed)
    ta, tb = rng.exponential(150.0, (20, 2000)), rng.exponential(200.0, (20, 2000))
    ea, eb = rng.random((20, 2000)) < 0.7, rng.random((20, 2000)) < 0.7
    return ta, ea, tb, eb


def _pkpd(ta, ea, tb, eb, at):
    from pkpd.survival import hazard_ratio, km_median, km_rate, logrank_test, number_at_risk

    km_median(tb, eb)
    km_rate(tb, eb, at)
    number_at_risk(tb, at)
    hazard_ratio(ta, ea, tb, eb)
    logrank_test(ta, ea, tb, eb)


def _lifelines(ta, ea, tb, eb, at):
    from lifelines import CoxPHFitter, KaplanMeierFitter
    from lifelines.statistics import logrank_test

    for r in range(ta.shape[0]):
        km = KaplanMeierFitter().fit(tb[r], eb[r])
        km.median_survival_time_, km.survival_function_at_times(at)
        df = pd.DataFrame({"T": np.r_[ta[r], tb[r]], "E": np.r_[ea[r], eb[r]],
                           "B": np.r_[np.zeros(ta.shape[1]), np.ones(tb.shape[1])]})
        CoxPHFitter().fit(df, "T", "E")
        logrank_test(ta[r], tb[r], ea[r], eb[r])


def _best(fn, *args, reps: int = 3) -> float:
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    data = _data()
    at = np.array([6.0, 12.0]) * 30.4375
    pk = _best(_pkpd, *data, at)
    base = _best(_lifelines, *data, at)
    print(f"pkpd {pk:.3f} s; lifelines loop {base:.3f} s; ratio {base / pk:.1f}")
    print(json.dumps({"replicates": 20, "patients_per_arm": 2000, "pkpd_s": round(pk, 4),
                      "lifelines_s": round(base, 4), "ratio_vs_lifelines": round(base / pk, 2)}))


if __name__ == "__main__":
    main()
