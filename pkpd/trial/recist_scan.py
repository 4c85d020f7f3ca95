"""Scan-based RECIST 1.1 for virtual trials: vectorised over patients.

:func:`evaluate_scans` applies RECIST 1.1 to the target-lesion sum of longest diameters (SLD) of
many virtual patients at once. Its input is an ``(n_patients, n_scans)`` array of SLD (mm) and
the scan days; its output (:class:`ScanRecistResult`) holds, per patient, the best overall
response (unconfirmed and confirmed), PFS, time to response, duration of response, depth of
response and the nadir, plus the response at every scan. The loop runs over the scans (tens),
never over the patients, so 10^6 patients take seconds.

It reproduces :func:`pkpd.clinical.recist.evaluate` exactly for a subject with one non-nodal
target lesion whose diameter is the SLD, no non-target and no new lesions, and no subjects table
(no death, no new therapy); ``tests/test_trial_recist.py`` checks this on 10,000 random patients.
The conventions, in the terms of that module's rules 2-8:

* Baseline: column 0 (day <= 0), SLD > 0 mm. Later scans are at day > 0, strictly increasing.
  The measurability of single lesions (>= 10 mm) is not checked: it is the simulator's business.
* A scan that was not done (``NaN``, or ``observed=False``: dropout, administrative censoring,
  a missed visit) is no assessment at all, as a day without records in the lesion table. Every
  scan that was done is complete, so no time point is NE.
* CR: SLD <= 1e-9 mm (all target lesions gone: SLD == 0). PD: SLD - nadir >= ``pd_rel`` x nadir
  AND >= ``pd_abs_mm``; the nadir is the smallest SLD so far, baseline included. PR: SLD <=
  (1 - ``pr_rel``) x baseline. SD otherwise. Comparisons carry the engine's 1e-9 mm tolerance
  (exactly +20 % / +5 mm is PD, exactly -30 % is PR). After a CR any SLD > 0 is PD (RECIST
  Table 3 footnote, ``cr_reappearance="pd"``). After a confirmed CR/PR, SD is reported as PR
  (``pr_persistence``).
* BOR window: every scan after baseline up to and including the first PD. Unconfirmed BOR: CR,
  PR, SD (a CR/PR/SD at day >= ``sd_min_days``), PD, NE (scans, but none qualifies), MISSING (no
  scan after baseline). Confirmed BOR: a CR (PR) counts when a later CR (CR or PR) at least
  ``confirm_min_days`` later follows with only CR (CR/PR) in between; then the same fall-back.
* PFS from day 0: event at the first PD; otherwise censored at the last scan after baseline, or
  at day 0 without one. ``pfs_days`` = day + 1 (``pfs_add_one``). With
  ``censor_missed_assessments=k``, a PD more than k x ``assessment_interval_days`` +
  ``assessment_window_days`` after the previous scan is censored at that scan.
* DoR, for confirmed responders (``dor_confirmed``): from the first confirmed CR/PR to PD, same
  censoring; ``ttr_days`` = that day + 1 (``pfs_add_one``).
* Depth of response: ``best_pct_change`` = min over the window of 100 (SLD - baseline) /
  baseline (NaN without a scan after baseline); ``nadir_mm`` = min(baseline, window SLDs) and
  ``nadir_day`` = the first day it was reached (the baseline day when nothing fell below it).

Codes: per-scan responses index :data:`~pkpd.clinical.recist.OVERALL_RESPONSES` (-1: no
assessment, i.e. baseline or a scan not done); BOR codes index
:data:`~pkpd.clinical.recist.BOR_VALUES`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..clinical.recist import BOR_VALUES, OVERALL_RESPONSES, RecistConfig
from ..errors import DataError

__all__ = ["evaluate_scans", "ScanRecistResult", "SCAN_RESPONSE_CODES", "BOR_CODES"]

#: Code of each time-point response in ``ScanRecistResult.response`` (-1 = no assessment).
SCAN_RESPONSE_CODES = {r: i for i, r in enumerate(OVERALL_RESPONSES)}
#: Code of each BOR value in ``ScanRecistResult.bor`` / ``bor_confirmed``.
BOR_CODES = {b: i for i, b in enumerate(BOR_VALUES)}

_EPS = 1e-9  # mm / day tolerance, as pkpd.clinical.recist
_CR, _PR, _SD, _PD = (SCAN_RESPONSE_CODES[k] for k in ("CR", "PR", "SD", "PD"))
_NONE = -1
_CHUNK = 32_768  # patients per block of the scan loop (keeps the work arrays in cache)


@dataclass(frozen=True)
class ScanRecistResult:
    """Output of :func:`evaluate_scans`: one entry per patient (arrays of length n_patients).

    Days are days since the first dose; lengths mm. Float endpoints are NaN where they do not
    apply (``dor_*`` and ``ttr_days`` for non-responders, ``best_pct_change`` without a scan
    after baseline).

    Attributes
    ----------
    patient
        Patient ids (``patient_ids``, or 0 .. n-1).
    response
        ``(n_patients, n_scans)`` int8 time-point responses, codes of
        :data:`SCAN_RESPONSE_CODES` (CR 0, PR 1, SD 2, PD 4); -1 for baseline and scans not done.
    bor, bor_confirmed
        int8 codes of :data:`BOR_CODES` (CR 0, PR 1, SD 2, PD 4, NE 5, MISSING 6).
    bor_day, bor_confirmed_day
        Day of the assessment the BOR comes from (first CR, first PR, ...).
    pfs_days, pfs_event, pfs_day
        PFS time (days, ``day + 1`` with ``pfs_add_one``), event (1 PD, 0 censored; int8), and
        the day of the event or censoring.
    ttr_days
        Time to response: day of the first (confirmed) CR/PR + 1 (``pfs_add_one``).
    dor_start_day, dor_days, dor_event
        Duration of response of responders (``dor_event`` 1.0 / 0.0, NaN for non-responders).
    best_pct_change
        Depth of response: the best (lowest) % change of the SLD from baseline.
    nadir_mm, nadir_day
        Smallest SLD (baseline included) up to the first PD, and the first day it was reached.
    baseline_sld_mm, baseline_day
        Column 0 of the input.
    config
        The :class:`~pkpd.clinical.recist.RecistConfig` equivalent to the options used.
    """

    patient: np.ndarray
    response: np.ndarray
    bor: np.ndarray
    bor_day: np.ndarray
    bor_confirmed: np.ndarray
    bor_confirmed_day: np.ndarray
    pfs_days: np.ndarray
    pfs_event: np.ndarray
    pfs_day: np.ndarray
    ttr_days: np.ndarray
    dor_start_day: np.ndarray
    dor_days: np.ndarray
    dor_event: np.ndarray
    best_pct_change: np.ndarray
    nadir_mm: np.ndarray
    nadir_day: np.ndarray
    baseline_sld_mm: np.ndarray
    baseline_day: np.ndarray
    config: RecistConfig

    def __len__(self) -> int:
        return len(self.bor)

    def to_frame(self) -> pd.DataFrame:
        """One row per patient; the column names of ``pkpd.clinical.recist`` ``subjects``
        where they mean the same, BOR as categoricals over ``BOR_VALUES``."""
        cols = {"patient": self.patient}
        for f in dataclasses.fields(self):
            if f.name in ("patient", "response", "config"):
                continue
            v = getattr(self, f.name)
            if f.name in ("bor", "bor_confirmed"):
                v = pd.Categorical.from_codes(v, categories=list(BOR_VALUES))
            elif f.name == "dor_event":
                v = pd.array(v, dtype="Float64").astype("Int64")
            cols[f.name] = v
        return pd.DataFrame(cols)


# --------------------------------------------------------------------------------------------------
# input checks


def _fmt(x: float) -> str:
    return f"{x:g}"


def _as_float(a: object, name: str) -> np.ndarray:
    try:
        return np.asarray(a, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{name} is not numeric ({e})",
            column=name,
            fix=f"give {name} as a float array",
        ) from None


def _check_shapes(sld_mm, scan_days, observed, patient_ids):
    """Arrays of the right shapes: ``(x, days (n, m), obs (n, m) or None, ids)``."""
    x = _as_float(sld_mm, "sld_mm")
    if x.ndim != 2 or x.shape[1] < 1:
        raise DataError(
            f"sld_mm must be a 2-D array (n_patients, n_scans); got shape {x.shape}",
            column="sld_mm",
            fix="one row per patient, one column per scan (column 0 = baseline); for one "
            "patient pass sld[None, :]",
        )
    n, m = x.shape
    days = _as_float(scan_days, "scan_days")
    if days.shape not in ((m,), (n, m)):
        raise DataError(
            f"scan_days must have shape ({m},) (one schedule) or {x.shape} (one row per "
            f"patient), as sld_mm has {m} scans; got shape {days.shape}",
            column="scan_days",
            fix="give one day per column of sld_mm (days since the first dose)",
        )
    obs = None
    if observed is not None:
        obs = np.asarray(observed)
        if obs.shape != x.shape or obs.dtype != bool:
            raise DataError(
                f"observed must be a boolean array of shape {x.shape}; got {obs.dtype} of "
                f"shape {obs.shape}",
                column="observed",
                fix="pass observed=~np.isnan(sld_mm) style masks (True = scan done)",
            )
    ids = np.arange(n) if patient_ids is None else np.asarray(patient_ids)
    if ids.shape != (n,):
        raise DataError(
            f"patient_ids must have one id per row of sld_mm ({n}); got shape {ids.shape}",
            column="patient_ids",
            fix="pass one id per patient, or leave patient_ids out",
        )
    return x, days, obs, ids


def _first(mask: np.ndarray) -> tuple[int, int]:
    """(patient, scan) of the first True of a 2-D mask (row-major)."""
    i, j = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return int(i), int(j)


def _check_values(x: np.ndarray, obs: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
    """The observed-scan mask; SLD finite and >= 0 where observed, a baseline > 0 mm."""
    if obs is None:
        obs = ~np.isnan(x)
    else:
        bad = obs & np.isnan(x)
        if bad.any():
            i, j = _first(bad)
            raise DataError(
                f"sld_mm[{i}, {j}] is NaN but observed[{i}, {j}] is True",
                subject=ids[i],
                column="sld_mm",
                fix="give the SLD of every scan that was done, or mark it observed=False",
            )
    base_missing = ~obs[:, 0]
    if base_missing.any():
        i = int(np.argmax(base_missing))
        raise DataError(
            f"patient row {i} has no baseline SLD (sld_mm[{i}, 0] not observed)",
            subject=ids[i],
            column="sld_mm",
            value=float(x[i, 0]),
            fix="column 0 must hold every patient's baseline SLD (day <= 0); drop patients "
            "without a baseline",
        )
    bad = obs & ~((x >= 0) & np.isfinite(x))
    if bad.any():
        i, j = _first(bad)
        raise DataError(
            f"sld_mm[{i}, {j}] must be a finite SLD >= 0 mm",
            subject=ids[i],
            column="sld_mm",
            value=float(x[i, j]),
            fix="an SLD is a sum of diameters: clip simulated values at 0 mm "
            "(np.maximum(sld, 0)), mark scans not done as NaN, and check the units (mm)",
        )
    bad = ~(x[:, 0] > 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"baseline SLD sld_mm[{i}, 0] is 0 mm: there is no measurable disease",
            subject=ids[i],
            column="sld_mm",
            value=float(x[i, 0]),
            fix="RECIST needs a baseline SLD > 0 mm; drop patients without measurable disease",
        )
    return obs


def _check_days(days: np.ndarray, obs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Scan days as an (n, m) view: baseline <= 0, later scans > 0, strictly increasing.

    A 1-D schedule is checked whole; per-patient days only where the scan was done."""
    n, m = obs.shape
    one = days.ndim == 1
    dd = days[None, :] if one else days
    need = np.ones((1, m), bool) if one else obs
    with np.errstate(invalid="ignore"):
        prev = np.maximum.accumulate(np.where(need, dd, -np.inf), axis=1)
        not_after = np.zeros(need.shape, bool)
        not_after[:, 1:] = need[:, 1:] & ~(dd[:, 1:] > prev[:, :-1])
        post = np.zeros(need.shape, bool)
        post[:, 1:] = need[:, 1:] & ~(dd[:, 1:] > 0)
        base = np.zeros(need.shape, bool)
        base[:, 0] = need[:, 0] & ~(dd[:, 0] <= 0)
    checks = (
        (
            need & ~np.isfinite(dd),
            "is not a finite day",
            "give the day of every scan done (days since the first dose)",
        ),
        (
            base,
            "is a baseline day and must be <= 0",
            "column 0 is the baseline scan (day <= 0, day 0 = first dose): shift the days",
        ),
        (
            post,
            "is a scan after baseline and must be at day > 0",
            "only column 0 is the baseline: drop a second screening scan",
        ),
        (
            not_after,
            "is not later than the scan before it (scan days must strictly increase)",
            "sort the scans by day and merge two scans on one day",
        ),
    )
    for bad, problem, fix in checks:
        if bad.any():
            i, j = _first(bad)
            where = f"scan_days[{j}]" if one else f"scan_days[{i}, {j}] (patient row {i})"
            raise DataError(
                f"{where} {problem}",
                subject=None if one else ids[i],
                column="scan_days",
                value=float(dd[i, j]),
                fix=fix,
            )
    return np.broadcast_to(days, (n, m))


def _config(**kw) -> RecistConfig:
    try:
        return RecistConfig(**kw)
    except ValueError as e:
        raise DataError(str(e), fix="use a value RecistConfig accepts") from None


# --------------------------------------------------------------------------------------------------
# the scan loop


class _State:
    """Per-patient running state of the scan loop (arrays of length n)."""

    def __init__(self, x: np.ndarray, d: np.ndarray):
        n = x.shape[0]
        nan = np.full(n, np.nan)
        self.sld0 = x[:, 0].copy()
        self.nadir = self.sld0.copy()  # running nadir (all complete assessments)
        self.had_cr = np.zeros(n, bool)
        self.confirmed_any = np.zeros(n, bool)  # a CR/PR confirmed so far (PR persistence)
        self.run_start = nan.copy()  # first day of the current run of CR/PR responses
        self.run_pr = np.zeros(n, bool)  # that run starts with a PR
        self.active = np.ones(n, bool)  # in the BOR window (no PD yet)
        for k in (
            "first_day",
            "last_day",
            "prev_day",
            "first_cr",
            "first_pr",
            "first_sd",
            "pd_day",
            "conf_cr",
            "conf_pr",
            "best_pct",
        ):
            setattr(self, k, nan.copy())
        self.win_nadir = self.sld0.copy()
        self.win_nadir_day = d[:, 0].copy()


def _scan_response(st: _State, s: np.ndarray, o: np.ndarray, cfg: RecistConfig) -> np.ndarray:
    """Time-point responses of one scan column (rule 3 for one non-nodal target)."""
    zero = s <= _EPS
    inc = s - st.nadir
    meets_pd = (inc >= cfg.pd_rel * st.nadir - _EPS) & (inc >= cfg.pd_abs_mm - _EPS)
    is_pr = s <= (1.0 - cfg.pr_rel) * st.sld0 + _EPS
    r = np.where(zero, _CR, np.where(meets_pd, _PD, np.where(is_pr, _PR, _SD)))
    r = np.where(st.had_cr & ~zero, _PD, r)  # CR followed by reappearance
    if cfg.pr_persistence:
        r = np.where((r == _SD) & st.confirmed_any, _PR, r)
    return np.where(o, r, _NONE).astype(np.int8)


def _advance(
    st: _State, r: np.ndarray, s: np.ndarray, d: np.ndarray, o: np.ndarray, cfg: RecistConfig
) -> None:
    """Update the running state with the responses ``r`` of one scan column."""
    is_cr, is_resp = r == _CR, (r == _CR) | (r == _PR)
    st.had_cr |= is_cr
    new_run = is_resp & np.isnan(st.run_start)
    st.run_start = np.where(new_run, d, np.where(o & ~is_resp, np.nan, st.run_start))
    st.run_pr = np.where(new_run, r == _PR, st.run_pr)
    conf_now = is_resp & (d - st.run_start >= cfg.confirm_min_days - _EPS)
    st.confirmed_any |= conf_now
    st.nadir = np.where(o, np.minimum(st.nadir, s), st.nadir)

    w = o & st.active  # the BOR window: up to and including the first PD
    first = w & np.isnan(st.first_day)
    st.first_day = np.where(first, d, st.first_day)
    st.prev_day = np.where(w, st.last_day, st.prev_day)
    st.last_day = np.where(w, d, st.last_day)
    st.first_cr = np.where(w & is_cr & np.isnan(st.first_cr), d, st.first_cr)
    st.first_pr = np.where(w & (r == _PR) & np.isnan(st.first_pr), d, st.first_pr)
    sd_ok = w & (is_resp | (r == _SD)) & (d >= 0.0 + cfg.sd_min_days - _EPS)
    st.first_sd = np.where(sd_ok & np.isnan(st.first_sd), d, st.first_sd)
    cr_ok = w & is_cr & (d - st.first_cr >= cfg.confirm_min_days - _EPS)
    st.conf_cr = np.where(cr_ok & np.isnan(st.conf_cr), st.first_cr, st.conf_cr)
    pr_ok = w & conf_now & st.run_pr & np.isnan(st.conf_pr)
    st.conf_pr = np.where(pr_ok, st.run_start, st.conf_pr)
    pct = 100.0 * (s - st.sld0) / st.sld0
    st.best_pct = np.where(w, np.fmin(st.best_pct, pct), st.best_pct)
    lower = w & (s < st.win_nadir)
    st.win_nadir = np.where(lower, s, st.win_nadir)
    st.win_nadir_day = np.where(lower, d, st.win_nadir_day)
    is_pd = w & (r == _PD)
    st.pd_day = np.where(is_pd, d, st.pd_day)
    st.active &= ~is_pd


# --------------------------------------------------------------------------------------------------
# endpoints


def _bor_codes(st: _State, confirmed: bool) -> tuple[np.ndarray, np.ndarray]:
    """BOR codes and days (rule 7) from the window summary."""
    if confirmed:
        cr, pr = st.conf_cr, st.conf_pr
    else:
        cr, pr = st.first_cr, st.first_pr
    choices = [
        (cr, BOR_CODES["CR"]),
        (pr, BOR_CODES["PR"]),
        (st.first_sd, BOR_CODES["SD"]),
        (st.pd_day, BOR_CODES["PD"]),
        (st.first_day, BOR_CODES["NE"]),
    ]
    code = np.full(len(cr), BOR_CODES["MISSING"], np.int8)
    day = np.full(len(cr), np.nan)
    for src, c in reversed(choices):
        has = ~np.isnan(src)
        code = np.where(has, c, code).astype(np.int8)
        day = np.where(has, src, day)
    return code, day


def _time_to_event(st: _State, start: np.ndarray, cfg: RecistConfig):
    """Rule 8 from ``start`` (PD event, else censored at the last scan or at ``start``):
    ``(days, event, day)``."""
    add = 1.0 if cfg.pfs_add_one else 0.0
    event = ~np.isnan(st.pd_day)
    day = np.where(event, st.pd_day, np.where(np.isnan(st.last_day), start, st.last_day))
    if cfg.censor_missed_assessments is not None:
        ref = np.where(np.isnan(st.prev_day), start, st.prev_day)
        limit = cfg.censor_missed_assessments * cfg.assessment_interval_days
        late = event & (st.pd_day - ref > limit + cfg.assessment_window_days + _EPS)
        day = np.where(late, ref, day)
        event = event & ~late
    return day - start + add, event.astype(np.int8), day


def _endpoints(st: _State, cfg: RecistConfig) -> dict:
    """Per-patient endpoints from the final state."""
    bor, bor_day = _bor_codes(st, confirmed=False)
    cbor, cbor_day = _bor_codes(st, confirmed=True)
    n = len(bor)
    pfs_days, pfs_event, pfs_day = _time_to_event(st, np.zeros(n), cfg)
    if cfg.dor_confirmed:
        responder = cbor <= BOR_CODES["PR"]
        rs = np.fmin(st.conf_cr, st.conf_pr)
    else:
        responder = bor <= BOR_CODES["PR"]
        rs = np.fmin(st.first_cr, st.first_pr)
    rs = np.where(responder, rs, np.nan)
    dor_days, dor_event, _ = _time_to_event(st, rs, cfg)
    add = 1.0 if cfg.pfs_add_one else 0.0
    return {
        "bor": bor,
        "bor_day": bor_day,
        "bor_confirmed": cbor,
        "bor_confirmed_day": cbor_day,
        "pfs_days": pfs_days,
        "pfs_event": pfs_event,
        "pfs_day": pfs_day,
        "ttr_days": rs - 0.0 + add,
        "dor_start_day": rs,
        "dor_days": np.where(responder, dor_days, np.nan),
        "dor_event": np.where(responder, dor_event, np.nan),
        "best_pct_change": st.best_pct,
        "nadir_mm": st.win_nadir,
        "nadir_day": st.win_nadir_day,
    }


def _evaluate_chunk(x, d2, obs, response, cfg: RecistConfig) -> dict:
    """The scan loop for a block of patients; fills ``response`` in place."""
    st = _State(x, d2)
    with np.errstate(invalid="ignore"):
        for k in range(1, x.shape[1]):
            s, d, o = x[:, k], d2[:, k], obs[:, k]
            r = _scan_response(st, s, o, cfg)
            response[:, k] = r
            _advance(st, r, s, d, o, cfg)
        return _endpoints(st, cfg)


def evaluate_scans(
    sld_mm,
    scan_days,
    *,
    observed=None,
    patient_ids=None,
    confirm_min_days: float = 28.0,
    sd_min_days: float = 42.0,
    pd_rel: float = 0.20,
    pd_abs_mm: float = 5.0,
    pr_rel: float = 0.30,
    pr_persistence: bool = True,
    dor_confirmed: bool = True,
    pfs_add_one: bool = True,
    censor_missed_assessments: int | None = None,
    assessment_interval_days: float | None = None,
    assessment_window_days: float = 0.0,
) -> ScanRecistResult:
    """RECIST 1.1 on the target SLD of many patients at once (vectorised over patients).

    Parameters
    ----------
    sld_mm
        ``(n_patients, n_scans)`` float array: the SLD (mm) at each scan; column 0 is the
        baseline (must be observed and > 0 mm). NaN marks a scan not done.
    scan_days
        Scan days (days since the first dose): ``(n_scans,)`` for one schedule, or
        ``(n_patients, n_scans)`` per patient (NaN allowed where the scan was not done).
        Baseline day <= 0, later days > 0, strictly increasing.
    observed
        Optional ``(n_patients, n_scans)`` boolean mask of the scans done (default: not NaN).
        A scan not done is no assessment; after dropout every later scan is not done.
    patient_ids
        Optional ids (default 0 .. n-1), used in the result and in error messages.
    confirm_min_days, sd_min_days, pd_rel, pd_abs_mm, pr_rel, pr_persistence, dor_confirmed, \
pfs_add_one, censor_missed_assessments, assessment_interval_days, assessment_window_days
        As in :class:`pkpd.clinical.recist.RecistConfig` (same defaults): confirmation >= 28
        days, SD from day 42, PD +20 % and +5 mm over the nadir, PR -30 % from baseline.

    Returns
    -------
    ScanRecistResult
        Per-patient arrays (``.to_frame()`` for a DataFrame); see the module docstring for the
        rules.

    Raises
    ------
    DataError
        Wrong shapes, a missing or zero baseline, a negative or infinite SLD, scan days that are
        not increasing (or a later scan at day <= 0); the message names the patient row, the
        scan and the fix.
    """
    cfg = _config(
        confirm_min_days=confirm_min_days,
        sd_min_days=sd_min_days,
        pd_rel=pd_rel,
        pd_abs_mm=pd_abs_mm,
        pr_rel=pr_rel,
        pr_persistence=pr_persistence,
        dor_confirmed=dor_confirmed,
        pfs_add_one=pfs_add_one,
        censor_missed_assessments=censor_missed_assessments,
        assessment_interval_days=assessment_interval_days,
        assessment_window_days=assessment_window_days,
    )
    x, days, obs, ids = _check_shapes(sld_mm, scan_days, observed, patient_ids)
    obs = _check_values(x, obs, ids)
    d2 = _check_days(days, obs, ids)
    response = np.full(x.shape, _NONE, np.int8)
    parts = [
        _evaluate_chunk(
            x[a : a + _CHUNK],
            d2[a : a + _CHUNK],
            obs[a : a + _CHUNK],
            response[a : a + _CHUNK],
            cfg,
        )
        for a in range(0, x.shape[0], _CHUNK)
    ] or [_evaluate_chunk(x, d2, obs, response, cfg)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return ScanRecistResult(
        patient=ids,
        response=response,
        baseline_sld_mm=x[:, 0].copy(),
        baseline_day=d2[:, 0].copy(),
        config=cfg,
        **out,
    )
