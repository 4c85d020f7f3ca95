"""Tests for pkpd.trial.recist_scan (vectorised, scan-based RECIST 1.1 for virtual trials).

Oracle: the per-subject lesion-level engine :func:`pkpd.clinical.recist.evaluate`. Each virtual
patient becomes one subject with one non-nodal target lesion whose diameter is the SLD at each
scan done; both engines must give identical BOR (unconfirmed and confirmed, with their days),
PFS (time, event, day), DoR, depth of response, nadir and per-scan responses, exactly (the same
float operations, no tolerance). Hand-built cases check the rules from their text.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pkpd.clinical.recist import BOR_VALUES, OVERALL_RESPONSES, RecistConfig, evaluate
from pkpd.errors import DataError
from pkpd.trial.recist_scan import BOR_CODES, evaluate_scans

NAN = math.nan

# --------------------------------------------------------------------------------------------------
# random virtual patients


def random_patients(n: int, seed: int, n_scans: int = 13):
    """Random SLD trajectories (mm) and per-patient scan days (days since the first dose).

    Shrinking, growing and shrink-then-regrow log-linear trajectories with noise; some reach
    0 mm (and some reappear); values rounded to 1 or 0.1 mm so that exact threshold ties
    (-30 %, +20 %, +5 mm) are common; intervals around the 28-day confirmation and the 42-day SD
    minimum; baseline at day 0 or before; dropout, intermittent missed scans and patients with
    the baseline only. NaN = scan not done."""
    rng = np.random.default_rng(seed)
    steps = np.array([14, 21, 27, 28, 29, 35, 41, 42, 43, 49, 56, 63, 84], float)
    gaps = rng.choice(steps, size=(n, n_scans - 1)) + rng.choice(
        [0.0, 0.0, 0.5, -0.5], size=(n, n_scans - 1)
    )
    first = rng.choice([14.0, 27.0, 28.0, 41.0, 42.0, 43.0], size=n)
    gaps[:, 0] = np.maximum(first, 1.0)
    days = np.zeros((n, n_scans))
    days[:, 0] = rng.choice([0.0, 0.0, -3.0, -14.0], size=n)
    days[:, 1:] = np.cumsum(gaps, axis=1)

    base = np.round(rng.uniform(10.0, 150.0, size=n))
    roundish = rng.random(n) < 0.2
    base[roundish] = rng.choice([10.0, 20.0, 25.0, 50.0, 100.0], size=int(roundish.sum()))
    t = days / 42.0
    kind = rng.integers(0, 4, size=n)  # 0 shrink, 1 grow, 2 shrink-then-regrow, 3 stable
    a1 = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3],
        [
            rng.uniform(-1.5, -0.05, n),
            rng.uniform(0.02, 0.5, n),
            rng.uniform(-1.0, -0.1, n),
            rng.normal(0.0, 0.05, n),
        ],
    )
    a2 = np.where(kind == 2, rng.uniform(0.05, 0.8, n), a1)
    tc = rng.uniform(0.5, 6.0, n)
    z = a1[:, None] * np.minimum(t, tc[:, None]) + a2[:, None] * np.maximum(t - tc[:, None], 0)
    z += rng.normal(0.0, 1.0, (n, n_scans)) * rng.uniform(0.0, 0.15, n)[:, None]
    sld = base[:, None] * np.exp(z)
    sld[:, 0] = base
    # complete responses: small tumours vanish; some come back
    vanish = (sld < rng.uniform(0.0, 12.0, n)[:, None]) & (np.arange(n_scans) > 0)
    sld[vanish] = 0.0
    back = (rng.random((n, n_scans)) < 0.08) & (np.cumsum(vanish, axis=1) > 0) & ~vanish
    sld[back] = rng.choice([1.0, 3.0, 4.0, 5.0, 9.0], size=int(back.sum()))
    fine = rng.random(n) < 0.5
    sld = np.where(fine[:, None], np.round(sld, 1), np.round(sld))
    sld[:, 0] = np.maximum(sld[:, 0], 10.0)
    # missing scans: dropout, intermittent misses, baseline only
    drop = rng.geometric(0.12, size=n)
    sld[np.arange(n_scans)[None, :] > drop[:, None]] = NAN
    miss = (rng.random((n, n_scans)) < 0.06) & (rng.random(n) < 0.3)[:, None]
    miss[:, 0] = False
    sld[miss] = NAN
    sld[rng.random(n) < 0.02, 1:] = NAN
    days[np.isnan(sld) & (rng.random((n, n_scans)) < 0.5)] = NAN  # days of scans not done
    return sld, days


def lesion_table(sld: np.ndarray, days: np.ndarray) -> pd.DataFrame:
    """One non-nodal target lesion per patient, diameter = SLD at every scan done. 0 mm is
    written either as a 0 mm measurement or as ``absent`` without a diameter."""
    n, m = sld.shape
    i, k = np.nonzero(~np.isnan(sld))
    d = sld[i, k]
    absent = (d == 0) & ((i + k) % 2 == 0)
    return pd.DataFrame(
        {
            "subject": np.char.add("P", np.char.zfill(i.astype(str), 6)),
            "day": np.broadcast_to(days, (n, m))[i, k],
            "lesion_id": "T1",
            "lesion_type": "target",
            "organ": "lung",
            "is_node": False,
            "diameter_mm": np.where(absent, NAN, d),
            "state": np.where(absent, "absent", ""),
        }
    )


def nadir_days(visits: pd.DataFrame, nadir_mm: np.ndarray) -> np.ndarray:
    """Oracle nadir day from the engine's visits table: the first day, over baseline and the
    assessments up to and including the first PD, whose SLD equals the subject's nadir."""
    v = visits.copy()
    v["pd"] = (v["overall_response"] == "PD").astype(int)
    v["after_pd"] = v.groupby("subject")["pd"].cumsum() - v["pd"] > 0
    v = v[~v["after_pd"]]
    subj = np.sort(v["subject"].unique())
    nad = pd.Series(nadir_mm, index=subj)
    hit = v[v["sld_mm"].to_numpy() == nad.loc[v["subject"]].to_numpy()]
    return hit.groupby("subject")["day"].first().loc[subj].to_numpy()


def as_float(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").astype(float).to_numpy()


def assert_same_as_oracle(res, sld, days, cfg: RecistConfig) -> pd.DataFrame:
    """Run pkpd.clinical.recist.evaluate on the lesion table and compare every endpoint."""
    oracle = evaluate(lesion_table(sld, days), config=replace(cfg, strict=False))
    subj = oracle.subjects
    assert len(subj) == len(res)
    bor = np.array(BOR_VALUES)
    for col in ("bor", "bor_confirmed"):
        ours = bor[getattr(res, col)]
        bad = np.flatnonzero(ours != subj[col].to_numpy())
        assert bad.size == 0, (col, bad[:5], ours[bad[:5]], subj[col].to_numpy()[bad[:5]])
    for col in (
        "bor_day",
        "bor_confirmed_day",
        "pfs_days",
        "pfs_day",
        "dor_start_day",
        "dor_days",
        "best_pct_change",
        "nadir_mm",
        "baseline_sld_mm",
    ):
        np.testing.assert_array_equal(getattr(res, col), as_float(subj[col]), err_msg=col)
    np.testing.assert_array_equal(res.pfs_event, subj["pfs_event"].to_numpy(), err_msg="pfs")
    np.testing.assert_array_equal(res.dor_event, as_float(subj["dor_event"]), err_msg="dor")
    # per-scan responses (every assessment, also after PD)
    post = oracle.visits[~oracle.visits["is_baseline"]]
    ours = np.array(OVERALL_RESPONSES)[res.response[:, 1:][~np.isnan(sld[:, 1:])]]
    np.testing.assert_array_equal(ours, post["overall_response"].to_numpy())
    np.testing.assert_array_equal(res.nadir_day, nadir_days(oracle.visits, res.nadir_mm))
    return subj


# --------------------------------------------------------------------------------------------------
# the acceptance oracle: 10,000 random patients


def test_identical_to_per_subject_engine_on_10000_random_patients():
    sld, days = random_patients(10_000, seed=15)
    res = evaluate_scans(sld, days)
    subj = assert_same_as_oracle(res, sld, days, res.config)
    # the sample exercises every branch that could disagree
    for col in ("bor", "bor_confirmed"):
        seen = set(subj[col])
        assert {"CR", "PR", "SD", "PD", "NE", "MISSING"} <= seen, (col, seen)
    assert (subj["bor"] != subj["bor_confirmed"]).sum() > 100  # unconfirmed responses
    assert 0.2 < subj["pfs_event"].mean() < 0.9
    assert set(subj["pfs_censor_reason"].dropna()) == {
        "last adequate assessment",
        "no adequate post-baseline assessment (censored at start)",
    }
    resp = res.response
    reappear = (resp[:, 2:] == 4) & (resp[:, 1:-1] == 0)  # CR then PD
    assert reappear.any(axis=1).sum() > 20
    raw_sd_kept_pr = (resp == 1) & ~(sld <= (1 - 0.3) * sld[:, :1] + 1e-9)  # PR persistence
    assert raw_sd_kept_pr.any(axis=1).sum() > 20
    assert (res.dor_event == 0).sum() > 50 and (res.dor_event == 1).sum() > 50


@pytest.mark.slow
@pytest.mark.parametrize("seed, n_scans", [(1, 13), (2, 20), (3, 6)])
def test_identical_on_more_random_patients(seed, n_scans):
    """Three more samples of 20,000 (slow: about 10 s each)."""
    sld, days = random_patients(20_000, seed=seed, n_scans=n_scans)
    res = evaluate_scans(sld, days)
    assert_same_as_oracle(res, sld, days, res.config)


def test_identical_with_other_options_and_one_schedule():
    """Non-default options (FDA missed-assessment censoring, no PR persistence, unconfirmed
    DoR, no +1, other windows) and a single 1-D schedule with NaN for scans not done."""
    sld, _ = random_patients(2_000, seed=7)
    days = np.array([-7.0, 28, 56, 84, 112, 140, 182, 224, 266, 308, 371, 434, 497])
    kw = dict(
        confirm_min_days=35.0,
        sd_min_days=49.0,
        pd_rel=0.25,
        pd_abs_mm=4.0,
        pr_rel=0.4,
        pr_persistence=False,
        dor_confirmed=False,
        pfs_add_one=False,
        censor_missed_assessments=1,
        assessment_interval_days=42.0,
        assessment_window_days=7.0,
    )
    res = evaluate_scans(sld, days, **kw)
    for k, v in kw.items():
        assert getattr(res.config, k) == v
    subj = assert_same_as_oracle(res, sld, days, res.config)
    assert subj["pfs_censor_reason"].str.contains("missed assessments").sum() > 5


def test_observed_mask_equals_nan():
    sld, days = random_patients(500, seed=3)
    obs = ~np.isnan(sld)
    filled = np.where(obs, sld, 123.0)
    a = evaluate_scans(sld, days).to_frame()
    b = evaluate_scans(filled, days, observed=obs).to_frame()
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------------------------------
# hand-built cases (expected values derived from the rule text)


def one(sld, days, **kw):
    return evaluate_scans(np.array([sld], float), np.array(days, float), **kw).to_frame().iloc[0]


def test_confirmation_at_exactly_28_days_and_sd_from_day_42():
    # PR at 28 (-30 % exactly: 70 <= 0.7 x 100), PR again at 56: 28 days later -> confirmed
    r = one([100, 70, 70, 80], [0, 28, 56, 84])
    assert (r.bor, r.bor_confirmed, r.bor_confirmed_day) == ("PR", "PR", 28.0)
    # confirmed PR persists: 80 mm (SD by size) is reported PR; DoR censored at day 84
    assert (r.dor_start_day, r.dor_days, r.dor_event, r.ttr_days) == (28.0, 57.0, 0, 29.0)
    # second PR 27 days later only: not confirmed; SD needs a scan at day >= 42 -> SD at 55
    r = one([100, 70, 70], [0, 28, 55])
    assert (r.bor, r.bor_confirmed, r.bor_confirmed_day) == ("PR", "SD", 55.0)
    r = one([100, 90], [0, 41])  # SD before day 42 does not count: NE
    assert (r.bor, r.bor_confirmed, r.pfs_days, r.pfs_event) == ("NE", "NE", 42.0, 0)


def test_progression_needs_20_percent_and_5_mm_over_the_nadir():
    # -20 % is SD; nadir 20 (day 42): 24 is +20 % but +4 mm -> SD;
    # 25 is +25 % and +5 mm -> PD at day 126
    r = one([25, 20, 24, 25], [0, 42, 84, 126])
    assert (r.bor, r.pfs_event, r.pfs_day, r.pfs_days) == ("SD", 1, 126.0, 127.0)
    assert (r.nadir_mm, r.nadir_day, r.best_pct_change) == (20.0, 42.0, -20.0)
    # first scan PD: BOR PD, PFS event at that scan
    r = one([40, 50], [-3, 42])
    assert (r.bor, r.bor_confirmed, r.pfs_days, r.nadir_day) == ("PD", "PD", 43.0, -3.0)


def test_cr_is_sld_zero_and_reappearance_is_pd():
    r = one([40, 0, 0, 3], [0, 42, 84, 126])  # 0 mm twice, 42 days apart: confirmed CR
    assert (r.bor, r.bor_confirmed, r.bor_confirmed_day) == ("CR", "CR", 42.0)
    assert (r.pfs_event, r.pfs_day) == (1, 126.0)  # 3 mm after CR: PD although < 5 mm
    r = one([40, 0.5, 0.5], [0, 42, 84])  # 0.5 mm is not CR: PR
    assert (r.bor, r.bor_confirmed) == ("PR", "PR")


def test_dropout_and_missed_scans():
    # dropout after day 84: censored at the last scan done
    r = one([50, 40, 45, NAN, NAN], [0, 42, 84, 126, 168])
    assert (r.bor, r.pfs_event, r.pfs_day, r.pfs_days) == ("SD", 0, 84.0, 85.0)
    # baseline only: MISSING, censored at day 0 (pfs_days = 0 + 1)
    r = one([50, NAN, NAN], [0, 42, 84])
    assert (r.bor, r.pfs_event, r.pfs_days) == ("MISSING", 0, 1.0)
    assert math.isnan(r.best_pct_change) and r.nadir_mm == 50.0
    # a missed scan is no assessment: PR at 42 confirmed by the PR at 126
    r = one([50, 30, NAN, 30], [0, 42, 84, 126])
    assert (r.bor_confirmed, r.bor_confirmed_day) == ("PR", 42.0)


def test_codes_and_frame():
    res = evaluate_scans(
        np.array([[50, 30, 31.0], [50, 70, NAN]]), [0, 42, 84], patient_ids=["a", "b"]
    )
    assert res.response.tolist() == [[-1, 1, 1], [-1, 4, -1]]
    assert res.bor.tolist() == [BOR_CODES["PR"], BOR_CODES["PD"]]
    f = res.to_frame()
    assert f["patient"].tolist() == ["a", "b"]
    assert f["bor"].dtype == "category" and f["dor_event"].dtype == "Int64"
    empty = evaluate_scans(np.zeros((0, 3)), [0, 42, 84])
    assert len(empty) == 0 and len(empty.to_frame()) == 0


# --------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "sld, days, kw, match",
    [
        ([50, 40], [0, 42], {}, r"sld_mm must be a 2-D array.*Fix: .*sld\[None, :\]"),
        ([[50, 40]], [0, 42, 84], {}, r"scan_days must have shape \(2,\).*got shape \(3,\)"),
        ([[50, 40]], [[0, 42]] * 2, {}, r"scan_days must have shape"),
        ([[50, 40]], [0, 42], {"observed": [[1, 1]]}, r"observed must be a boolean array"),
        ([[50, 40]], [0, 42], {"patient_ids": ["a", "b"]}, r"patient_ids must have one id"),
        ([[50, 40, 30]], [0, 84, 42], {}, r"scan_days\[2\] is not later than.*Fix: sort"),
        ([[50, 40, 30]], [0, 42, 42], {}, r"scan_days\[2\] is not later"),
        ([[50, 40], [50, 40]], [[0, 42], [0, 42.0]], {}, None),
        (
            [[50, 40, 30], [50, 40, 30]],
            [[0, 42, 84], [0, 84, 42]],
            {},
            r"ID 1 column scan_days: scan_days\[1, 2\] \(patient row 1\) is not later",
        ),
        ([[50, 40]], [7, 42], {}, r"scan_days\[0\] is a baseline day and must be <= 0"),
        ([[50, 40]], [-7, 0], {}, r"scan_days\[1\] is a scan after baseline.*> 0"),
        ([[50, 40]], [0, NAN], {}, r"scan_days\[1\] is not a finite day"),
        (
            [[50, 40], [50, -2]],
            [0, 42],
            {},
            r"ID 1 column sld_mm: sld_mm\[1, 1\] must be a finite SLD >= 0 mm; got -2.0\. Fix: ",
        ),
        ([[50, 40], [NAN, 40]], [0, 42], {}, r"ID 1 column sld_mm: patient row 1 has no baseline"),
        ([[0, 40]], [0, 42], {}, r"baseline SLD sld_mm\[0, 0\] is 0 mm"),
        ([[50, np.inf]], [0, 42], {}, r"sld_mm\[0, 1\] must be a finite SLD"),
        (
            [[50, NAN]],
            [0, 42],
            {"observed": np.array([[True, True]])},
            r"sld_mm\[0, 1\] is NaN but observed\[0, 1\] is True",
        ),
        ([["a", 1]], [0, 42], {}, r"sld_mm is not numeric"),
        ([[50, 40]], [0, 42], {"pr_rel": 1.5}, r"pr_rel must be < 1"),
    ],
)
def test_bad_input_is_a_data_error_naming_patient_scan_and_fix(sld, days, kw, match):
    if match is None:  # the same call made valid: no error
        evaluate_scans(np.array(sld, float), np.array(days, float), **kw)
        return
    with pytest.raises(DataError, match=match) as e:
        evaluate_scans(sld, days, **kw)
    assert "Fix: " in str(e.value)


def test_per_patient_days_may_be_nan_where_the_scan_was_not_done():
    sld = np.array([[50, 40, NAN, 35], [50, 55, 58, NAN]])
    days = np.array([[0, 42, NAN, 126], [0, 42, 84, NAN]])
    res = evaluate_scans(sld, days)
    assert res.pfs_day.tolist() == [126.0, 84.0]
    bad = days.copy()
    bad[0, 3] = 30.0  # earlier than the last scan done (42)
    with pytest.raises(DataError, match=r"scan_days\[0, 3\] \(patient row 0\) is not later"):
        evaluate_scans(sld, bad)
