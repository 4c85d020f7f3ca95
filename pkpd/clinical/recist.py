"""RECIST 1.1 (and iRECIST) response engine for lesion-level tumour data.

:func:`evaluate` turns a canonical lesion-level table (one row per lesion per assessment) into
per-assessment responses (``RecistResult.visits``) and per-subject endpoints
(``RecistResult.subjects``: BOR, confirmed BOR, PFS, DoR, iRECIST iBOR/iPFS). It implements
``CONVENTIONS.md`` §3 exactly; every protocol parameter is a field of :class:`RecistConfig`.
Bad input raises :class:`~pkpd.errors.DataError` naming the subject, the source row, the value
and the fix. Pure Python/pandas; no JAX.

Input
-----
``lesions`` columns (required): ``subject``, ``day`` (days since first dose; day 0 = first dose;
baseline scans have ``day <= 0``), ``lesion_id``, ``lesion_type`` (``target`` | ``nontarget`` |
``new``), ``organ``, ``is_node``, ``diameter_mm`` (long axis; short axis for nodes), ``state``
(``""``, ``present``, ``absent``, ``too_small``, ``not_evaluated``, ``unequivocal``,
``equivocal``). Optional: ``reader``, ``row`` (1-based source row used in messages; created from
the input order when missing). ``subject`` is converted to ``str``. Each distinct post-baseline
``day`` of a subject is one assessment (time point); readers of CDISC data give all lesions of a
visit the same day. Results never depend on row order or on lesion labels.

``subjects`` (optional): ``subject``, ``death_day``, ``last_known_alive_day``,
``new_therapy_day`` (NaN when none).

Input checks (each a :class:`~pkpd.errors.DataError`): missing columns; non-numeric or missing
day; non-numeric, negative or infinite diameter; unknown lesion type / state / is_node; the same
lesion twice at one day; no baseline; a lesion measured before baseline; a new lesion at baseline;
an unmeasured or non-measurable baseline target; too many targets (in total or per organ); a
follow-up record typed target/nontarget whose id is not a baseline lesion of that type; a new
lesion reusing a baseline id; ``equivocal``/``unequivocal`` on a target; an ``absent`` non-nodal
target with a diameter > 0; an assessment after ``death_day``. Spellings such as "NON-TARGET",
"TOO SMALL TO MEASURE", "NOT EVALUABLE", "Y"/"N" are accepted. ``RecistResult.rows`` lists every
input row as used or ignored (with the reason).

Rules (sources: [E] Eisenhauer et al., Eur J Cancer 2009;45:228-47 (RECIST 1.1); [F] RECIST
working-group FAQ / clarifications (recist.eortc.org, eortc.be/Recist); [A] admiralonco
``response_sources.R``, ``derive_param_confirmed_bor``, ADTTE templates; [FDA] FDA guidance
"Clinical Trial Endpoints for the Approval of Cancer Drugs and Biologics"; [S] Seymour et al.,
Lancet Oncol 2017;18:e143-52 (iRECIST) and the admiralonco iRECIST vignette)

1. Baseline [E 3.1-3.2]. Baseline = all records at ``day <= 0``; the baseline day is the last such
   day. A lesion recorded at two baseline days raises "measured before baseline" (drop the earlier
   screening scan). A subject without records at ``day <= 0`` raises. Baseline targets must be
   measured and measurable: non-nodal long axis >= 10 mm, node short axis >= 15 mm (fixed by
   [E]). At most ``max_targets`` (5) targets and ``max_targets_per_organ`` (2) per organ, all
   lymph nodes being one organ (a target without organ is not counted, with a note). New
   lesions cannot be recorded at baseline. Subjects without targets are "non-measurable" and get
   the non-target-only table. ``RecistConfig(strict=False)`` turns the measurability and
   selection checks into log notes.
2. Lesion values [E 4.3.2, F]. Target ``absent`` with no diameter (or 0) = 0 mm (a node keeps a
   recorded short axis); ``too_small`` = ``too_small_mm`` (5 mm) unless a number is recorded, which
   is used (even < 5 mm); ``not_evaluated``, a missing record, or ``present``/empty state without a
   diameter = not assessed. Nodes keep their actual short axis, so the SLD can exceed 0 at CR.
   SLD = sum over the baseline targets; it is reported (``sld_mm``) only when every target was
   assessed (``sld_partial_mm`` always). Nadir = min(baseline SLD, SLD of every earlier
   completely assessed time point) - it includes baseline.
3. Target response [E 4.3.1, CONVENTIONS §3.3], in this order: any target not assessed -> PD if
   the partial SLD already meets PD vs nadir, else NE; all non-nodal 0 mm and all nodes
   < ``node_normal_mm`` -> CR; SLD >= (1 + ``pd_rel``) x nadir AND SLD - nadir >= ``pd_abs_mm`` ->
   PD; SLD <= (1 - ``pr_rel``) x baseline -> PR; else SD. Comparisons use a 1e-9 mm tolerance so
   that exactly +20 % / +5 mm is PD and exactly -30 % is PR.
   * CR followed by reappearance [E Table 3 footnote]: once the targets were CR, a later
     assessment with any non-nodal target > 0 mm or any node >= ``node_normal_mm`` is target PD
     (``cr_reappearance="pd"``, default). Likewise, after an overall CR, non-target disease seen
     again (non-target NON-CR/NON-PD) makes the time point PD; a non-target lesion that is merely
     not evaluated does not (Table 1: CR/NE -> PR).
     ``cr_reappearance="downgrade"`` instead changes the earlier CR(s) to PR (NON-CR/NON-PD without
     targets: "lesions were never gone") and evaluates the new assessment with the ordinary rules.
   * PR persistence [F "managing PR when TP measurements change slightly"]: once a PR (or CR) has
     been confirmed (rule 7), later target SD is reported as PR unless PD criteria are met
     (100 -> 70 -> 70 -> 80 mm stays PR). ``pr_persistence=False`` switches this off.
4. Non-target response [E 4.3.3]: any ``unequivocal`` -> PD; else any not evaluated (no record,
   ``not_evaluated``) -> NE; else all gone (``absent``, non-nodal 0 mm, node < ``node_normal_mm``)
   -> CR; else NON-CR/NON-PD. An empty state means ``present`` (or ``absent`` when the recorded
   diameter is 0 mm / a node < ``node_normal_mm``). ``equivocal`` and ``too_small`` count as
   present. Tumour markers are not modelled. No non-target lesions -> ``"NA"``.
5. New lesions [E 4.3.4]: a ``new`` record with state ``""``/``present``/``unequivocal``/
   ``too_small`` is an unequivocal new lesion -> PD; ``equivocal`` is not PD. When the *same*
   lesion id is later recorded unequivocal (up to and including the first PD), PD is dated at the
   first scan showing it (``overall_response`` of that scan becomes PD, ``pd_backdated=True``).
   ``absent``/``not_evaluated`` new-lesion rows carry no information (listed as ignored).
6. Overall response [E Tables 1 and 2]: PD if target PD, non-target PD or a new lesion; with
   targets: CR+CR(or NA)->CR, CR+NON-CR/NON-PD->PR, CR+NE->PR, PR->PR, SD->SD, NE->NE; without
   targets: CR->CR, NON-CR/NON-PD->NON-CR/NON-PD, NE->NE.
7. Best overall response [A, CONVENTIONS §3.7]. Window: assessments with day >= start
   (``pfs_start_day``), up to and including the first PD, and (when ``new_therapy_day`` is given
   and ``bor_exclude_after_new_therapy``) on or before the start of new anticancer therapy.
   Unconfirmed ``bor``: first of CR; PR; SD (any CR/PR/SD at day >= start + ``sd_min_days``);
   NON-CR/NON-PD (same minimum); PD; NE; MISSING (no assessment). Confirmed ``bor_confirmed``:
   CR if a CR is followed by a CR >= ``confirm_min_days`` later with only CR/NE in between
   (at most ``max_ne_between`` NE); PR if a PR is followed by a CR or PR >= ``confirm_min_days``
   later with only CR/PR/NE in between (at most ``max_ne_between`` NE) and no PR after a CR; the
   confirming assessment is the first CR(/PR) at least ``confirm_min_days`` later. Otherwise the
   same SD -> NON-CR/NON-PD -> PD -> NE -> MISSING fall-back, which reproduces RECIST Table 3.
8. PFS [CONVENTIONS §3.8, A ADTTE, FDA]. Event = first PD (day >= start) or death, whichever is
   first. No event: censored at the last adequate assessment (last assessment >= start whose
   overall response is not NE); none: censored at start. ``pfs_days`` = ADT - start + 1
   (admiral ``derive_vars_duration(add_one=TRUE)``; ``pfs_add_one=False`` drops the +1).
   FDA options: ``censor_new_therapy`` (event after the start of new therapy -> censored at the last
   adequate assessment on or before that day); ``censor_missed_assessments=k`` with
   ``assessment_interval_days=I`` (event more than k*I + ``assessment_window_days`` days after
   the last adequate assessment before it, i.e. after >= k missed scheduled assessments ->
   censored at that assessment, or at start when there is none).
   DoR: responders only (``bor_confirmed`` in CR/PR, or ``bor`` with ``dor_confirmed=False``), from
   the first (confirmed) CR/PR assessment to PD or death, same censoring rules.
   OS (only with a ``subjects`` table): death, else censored at ``last_known_alive_day``.
9. iRECIST [S, CONVENTIONS §3.9] (``irecist=True``). A RECIST PD time point is iUPD and opens an
   iUPD block. A later assessment confirms (iCPD) when it is ``irecist_confirm_min_days`` to
   ``irecist_confirm_max_days`` after the last iUPD of the block and, relative to the block:
   target SLD rose >= ``pd_abs_mm`` over the SLD at the first target iUPD (increases are
   additive); a non-target lesion grew (recorded diameter above its reference) or another
   non-target lesion became ``unequivocal``; the sum of the new lesions' recorded diameters rose
   >= ``pd_abs_mm`` or an additional unequivocal new lesion appeared; or PD is newly met in a
   category (target, non-target, new) that was not iUPD in the block. Without confirmation the
   assessment stays iUPD while RECIST PD persists, NE keeps the block open, and anything else
   (iSD/iPR/iCR/NON-iCR/NON-iUPD) resets the bar (a later iUPD needs RECIST PD vs nadir again).
   Assessments earlier than the minimum are ignored for confirmation (they may reset); later
   than the maximum they cannot confirm but become the block's new reference for the window.
   iBOR (admiralonco order): iCR, iPR, iSD (>= ``sd_min_days``), NON-iCR/NON-iUPD, iCPD, iUPD, NE,
   MISSING over the window up to the first iCPD. iPFS event = first iUPD of the block that was
   confirmed (or death); an unconfirmed final iUPD block is censored at the last adequate
   assessment (``ipfs_unconfirmed="event"`` makes its first iUPD the event) and flagged
   ``iupd_unconfirmed``. After the first iCPD an assessment is reported as iCPD while RECIST PD
   persists.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import DataError
from .lesions import LESION_STATES, LESION_TYPES, REQUIRED_LESION_COLUMNS

__all__ = [
    "RecistConfig",
    "RecistResult",
    "evaluate",
    "LESION_TYPES",
    "LESION_STATES",
    "OVERALL_RESPONSES",
    "BOR_VALUES",
    "IBOR_VALUES",
    "REQUIRED_COLUMNS",
]

#: Columns a lesion table must have, lesion types and states: the canonical lesion table of
#: :mod:`pkpd.clinical.lesions` (one definition, shared by the readers and the engine).
REQUIRED_COLUMNS = REQUIRED_LESION_COLUMNS
#: Time-point (overall) responses.
OVERALL_RESPONSES = ("CR", "PR", "SD", "NON-CR/NON-PD", "PD", "NE")
#: Values of ``bor`` and ``bor_confirmed``.
BOR_VALUES = ("CR", "PR", "SD", "NON-CR/NON-PD", "PD", "NE", "MISSING")
#: Values of ``ibor``.
IBOR_VALUES = ("iCR", "iPR", "iSD", "NON-iCR/NON-iUPD", "iCPD", "iUPD", "NE", "MISSING")

_NONCR = "NON-CR/NON-PD"
_EPS = 1e-9  # mm / day tolerance for threshold comparisons
_NODE_MEASURABLE_MM = 15.0  # RECIST 1.1: pathological, measurable node (short axis)
_NONNODAL_MEASURABLE_MM = 10.0  # RECIST 1.1: measurable non-nodal lesion (CT, long axis)
_NODE_ORGAN = "lymph node"

_TYPE_ALIASES = {
    "target": "target",
    "t": "target",
    "tl": "target",
    "nontarget": "nontarget",
    "nt": "nontarget",
    "ntl": "nontarget",
    "new": "new",
    "nl": "new",
    "newlesion": "new",
}
_STATE_ALIASES = {
    "": "",
    "nan": "",
    "none": "",
    "present": "present",
    "absent": "absent",
    "disappeared": "absent",
    "toosmall": "too_small",
    "toosmalltomeasure": "too_small",
    "tstm": "too_small",
    "notevaluated": "not_evaluated",
    "notevaluable": "not_evaluated",
    "ne": "not_evaluated",
    "notdone": "not_evaluated",
    "unequivocal": "unequivocal",
    "unequivocalprogression": "unequivocal",
    "equivocal": "equivocal",
}
_BOOL_ALIASES = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "1.0": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
    "0.0": False,
}
_I_MAP = {
    "CR": "iCR",
    "PR": "iPR",
    "SD": "iSD",
    _NONCR: "NON-iCR/NON-iUPD",
    "NE": "NE",
    "PD": "iUPD",
    "NA": "NA",
}


# --------------------------------------------------------------------------------------------------
# configuration and result


@dataclass(frozen=True)
class RecistConfig:
    """Protocol parameters of the RECIST 1.1 / iRECIST engine (defaults: CONVENTIONS.md §3).

    Days are days since the first dose; lengths are mm. Change one value with
    ``dataclasses.replace(cfg, sd_min_days=56)``.
    """

    confirm_min_days: float = 28.0
    """CR/PR confirmation: the confirming assessment is at least this many days later."""
    sd_min_days: float = 42.0
    """SD (and NON-CR/NON-PD) counts for BOR only at day >= start + this."""
    too_small_mm: float = 5.0
    """Value of a target recorded "too small to measure" without a number."""
    node_normal_mm: float = 10.0
    """A node with short axis below this is normal (counts as gone for CR)."""
    pd_rel: float = 0.20
    """PD: relative increase over the nadir (AND ``pd_abs_mm``)."""
    pd_abs_mm: float = 5.0
    """PD: absolute increase over the nadir; also the iRECIST 'further increase'."""
    pr_rel: float = 0.30
    """PR: relative decrease from baseline."""
    max_targets: int = 5
    max_targets_per_organ: int = 2
    max_ne_between: int = 1
    """Number of NE assessments allowed between a response and its confirmation."""
    cr_reappearance: Literal["pd", "downgrade"] = "pd"
    """After CR, disease seen again: ``"pd"`` (RECIST Table 3 footnote) or ``"downgrade"`` the
    earlier CR(s) to PR."""
    pr_persistence: bool = True
    """After a confirmed PR/CR, target SD is reported as PR (unless PD) [EORTC FAQ]."""
    strict: bool = True
    """Raise on baseline measurability / target selection problems (else log them)."""
    bor_exclude_after_new_therapy: bool = True
    """Ignore assessments after ``new_therapy_day`` for BOR/iBOR (when given)."""
    irecist: bool = False
    irecist_confirm_min_days: float = 28.0
    irecist_confirm_max_days: float = 56.0
    ipfs_unconfirmed: Literal["censor", "event"] = "censor"
    """Final iUPD block never confirmed: censor iPFS (default) or count its first iUPD."""
    pfs_start_day: float = 0.0
    """STARTDT of PFS/DoR/OS and the reference day of the SD minimum (0 = first dose)."""
    censor_new_therapy: bool = False
    """FDA option: PD/death after new anticancer therapy -> censored at the last adequate
    assessment on or before the therapy start."""
    censor_missed_assessments: int | None = None
    """FDA option: PD/death after >= k missed scheduled assessments -> censored at the last
    adequate assessment. Needs ``assessment_interval_days``."""
    assessment_interval_days: float | None = None
    assessment_window_days: float = 0.0
    """Allowed delay of a scheduled assessment in the missed-assessment rule."""
    pfs_add_one: bool = True
    """AVAL = ADT - STARTDT + 1 (admiral ``derive_vars_duration(add_one=TRUE)``)."""
    dor_confirmed: bool = True
    """DoR for confirmed responders (``bor_confirmed``) or unconfirmed ones (``bor``)."""

    def __post_init__(self):
        positive = {
            "confirm_min_days": self.confirm_min_days,
            "too_small_mm": self.too_small_mm,
            "node_normal_mm": self.node_normal_mm,
            "pd_rel": self.pd_rel,
            "pd_abs_mm": self.pd_abs_mm,
            "pr_rel": self.pr_rel,
            "max_targets": self.max_targets,
            "max_targets_per_organ": self.max_targets_per_organ,
            "irecist_confirm_max_days": self.irecist_confirm_max_days,
        }
        for name, v in positive.items():
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"RecistConfig.{name} must be a positive number (got {v!r}).")
        for name in ("sd_min_days", "max_ne_between", "irecist_confirm_min_days"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"RecistConfig.{name} must be >= 0 (got {v!r}).")
        if not self.pr_rel < 1:
            raise ValueError(f"RecistConfig.pr_rel must be < 1 (got {self.pr_rel!r}).")
        if self.irecist_confirm_min_days > self.irecist_confirm_max_days:
            raise ValueError(
                "RecistConfig.irecist_confirm_min_days must not exceed irecist_confirm_max_days "
                f"(got {self.irecist_confirm_min_days!r} > {self.irecist_confirm_max_days!r})."
            )
        if self.cr_reappearance not in ("pd", "downgrade"):
            raise ValueError(
                f"RecistConfig.cr_reappearance must be 'pd' or 'downgrade' "
                f"(got {self.cr_reappearance!r})."
            )
        if self.ipfs_unconfirmed not in ("censor", "event"):
            raise ValueError(
                f"RecistConfig.ipfs_unconfirmed must be 'censor' or 'event' "
                f"(got {self.ipfs_unconfirmed!r})."
            )
        if not math.isfinite(self.pfs_start_day):
            raise ValueError(
                f"RecistConfig.pfs_start_day must be finite (got {self.pfs_start_day})."
            )
        k = self.censor_missed_assessments
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(
                    "RecistConfig.censor_missed_assessments must be None or an int >= 1 "
                    f"(got {k!r})."
                )
            iv = self.assessment_interval_days
            if iv is None or not (math.isfinite(iv) and iv > 0):
                raise ValueError(
                    "RecistConfig.censor_missed_assessments needs assessment_interval_days > 0 "
                    f"(the scheduled interval between assessments; got {iv!r})."
                )
        if not (math.isfinite(self.assessment_window_days) and self.assessment_window_days >= 0):
            raise ValueError(
                f"RecistConfig.assessment_window_days must be >= 0 "
                f"(got {self.assessment_window_days!r})."
            )


@dataclass(frozen=True)
class RecistResult:
    """Output of :func:`evaluate`.

    Attributes
    ----------
    visits
        One row per subject x assessment day (baseline included, ``is_baseline=True``):
        ``subject, day, is_baseline, n_targets, n_targets_assessed, sld_mm, sld_partial_mm,
        nadir_mm, pct_change_baseline, pct_change_nadir, target_response, nontarget_response,
        new_lesions (True/False/"equivocal"), overall_response, pd_backdated``; with iRECIST also
        ``itarget_response, inontarget_response, ioverall_response``. ``nadir_mm`` is the nadir
        the assessment is compared with (baseline and earlier complete assessments).
    subjects
        One row per subject: ``subject, baseline_day, baseline_sld_mm, measurable, n_targets,
        n_nontargets, bor, bor_day, bor_confirmed, bor_confirmed_day, pfs_days, pfs_event,
        pfs_day, pfs_event_type, pfs_censor_reason, dor_start_day, dor_days, dor_event,
        best_pct_change, nadir_mm, os_days, os_event``; with iRECIST also ``ibor, ipfs_days,
        ipfs_event, ipfs_day, ipfs_censor_reason, iupd_unconfirmed``.
    log
        Notes (defaults applied, rows ignored, non-strict violations).
    rows
        Every input row accounted for: ``row, subject, day, lesion_id, status ("used" |
        "ignored"), reason``.
    config
        The :class:`RecistConfig` used.
    """

    visits: pd.DataFrame
    subjects: pd.DataFrame
    log: list[str] = field(default_factory=list)
    rows: pd.DataFrame | None = None
    config: RecistConfig = field(default_factory=RecistConfig)


# --------------------------------------------------------------------------------------------------
# input normalisation


@dataclass
class _Rec:
    row: int
    subject: str
    day: float
    lesion_id: str
    ltype: str
    organ: str
    is_node: bool
    diam: float
    state: str


def _key(s: object) -> str:
    return "".join(ch for ch in str(s).strip().lower() if ch.isalnum())


def _is_missing(v: object) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v))
    except TypeError:
        return False


def _numeric(df: pd.DataFrame, col: str, rows: np.ndarray, subj: pd.Series) -> np.ndarray:
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & ~raw.isna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{col} is not a number",
            row=int(rows[i]),
            subject=subj.iloc[i],
            column=col,
            value=raw.iloc[i],
            fix=f"give {col} as a plain number"
            + (" in mm" if col == "diameter_mm" else " (days since the first dose)"),
        )
    return num.to_numpy(dtype=float)


def _check_lesion_frame(lesions: pd.DataFrame) -> None:
    """The lesion table must be a DataFrame with every canonical column."""
    if not isinstance(lesions, pd.DataFrame):
        raise DataError(
            "lesions must be a pandas DataFrame",
            value=type(lesions).__name__,
            fix="read the lesion table with pandas (or pkpd.clinical readers) first",
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in lesions.columns]
    if missing:
        raise DataError(
            f"lesion table is missing column(s) {', '.join(missing)}",
            column=missing[0],
            value=list(lesions.columns),
            fix="provide the canonical columns " + ", ".join(REQUIRED_COLUMNS),
        )


def _source_rows(df: pd.DataFrame) -> np.ndarray:
    """1-based source rows: the ``row`` column when given, else the input order."""
    if "row" in df.columns:
        rnum = pd.to_numeric(df["row"], errors="coerce")
        if rnum.isna().any():
            i = int(np.flatnonzero(rnum.isna().to_numpy())[0])
            raise DataError(
                "row must be an integer (1-based source row)",
                column="row",
                value=df["row"].iloc[i],
                fix="drop the row column to number rows in input order",
            )
        return rnum.to_numpy().astype(int)
    return np.arange(1, len(df) + 1)


def _subject_ids(df: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    """Subject ids as stripped strings (a missing subject is an error)."""
    subj_raw = df["subject"]
    if subj_raw.isna().any():
        i = int(np.flatnonzero(subj_raw.isna().to_numpy())[0])
        raise DataError(
            "subject is missing", row=int(rows[i]), column="subject", fix="fill in the subject id"
        )
    return subj_raw.astype(str).str.strip()


def _days_and_diameters(
    df: pd.DataFrame, rows: np.ndarray, subj: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Assessment days (finite) and diameters (NaN when not measured, else finite >= 0)."""
    day = _numeric(df, "day", rows, subj)
    bad = ~np.isfinite(day)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            "assessment day is missing",
            row=int(rows[i]),
            subject=subj.iloc[i],
            column="day",
            value=df["day"].iloc[i],
            fix="give the scan day (days since the first dose; baseline scans at day <= 0) "
            "or drop the record",
        )
    diam = _numeric(df, "diameter_mm", rows, subj)
    bad = np.isinf(diam) | (diam < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            "diameter_mm must be a finite number >= 0",
            row=int(rows[i]),
            subject=subj.iloc[i],
            column="diameter_mm",
            value=df["diameter_mm"].iloc[i],
            fix="correct the measurement (mm) or leave it empty when not measured",
        )
    return day, diam


def _lesion_ids(df: pd.DataFrame, rows: np.ndarray, subj: pd.Series) -> pd.Series:
    """Lesion ids as stripped strings (a missing id is an error)."""
    lid_raw = df["lesion_id"]
    if lid_raw.isna().any():
        i = int(np.flatnonzero(lid_raw.isna().to_numpy())[0])
        raise DataError(
            "lesion_id is missing",
            row=int(rows[i]),
            subject=subj.iloc[i],
            column="lesion_id",
            fix="give every lesion a stable id (e.g. T01, NT01, NEW01)",
        )
    return lid_raw.astype(str).str.strip()


def _map_aliases(
    df: pd.DataFrame,
    col: str,
    table: dict,
    allowed: str,
    rows: np.ndarray,
    subj: pd.Series,
    missing_value=None,
) -> list:
    """Canonical values of ``col`` through an alias table (unknown or missing: error)."""
    out = []
    for i, v in enumerate(df[col].tolist()):
        if _is_missing(v):
            if missing_value is None:
                raise DataError(
                    f"{col} is missing",
                    row=int(rows[i]),
                    subject=subj.iloc[i],
                    column=col,
                    fix=f"use one of {allowed}",
                )
            out.append(missing_value)
            continue
        k = _key(v)
        if k not in table:
            raise DataError(
                f"unknown {col}",
                row=int(rows[i]),
                subject=subj.iloc[i],
                column=col,
                value=v,
                fix=f"use one of {allowed}",
            )
        out.append(table[k])
    return out


def _node_flags(df: pd.DataFrame, rows: np.ndarray, subj: pd.Series) -> list[bool | None]:
    """``is_node`` as True/False, None when missing (a non-boolean value is an error)."""
    is_node: list[bool | None] = []
    for i, v in enumerate(df["is_node"].tolist()):
        if _is_missing(v):
            is_node.append(None)
        elif isinstance(v, bool | np.bool_):
            is_node.append(bool(v))
        else:
            k = str(v).strip().lower()
            if k not in _BOOL_ALIASES:
                raise DataError(
                    "is_node is not a boolean",
                    row=int(rows[i]),
                    subject=subj.iloc[i],
                    column="is_node",
                    value=v,
                    fix="use True/False (or Y/N, 1/0)",
                )
            is_node.append(_BOOL_ALIASES[k])
    return is_node


def _check_duplicates(recs: list[_Rec]) -> None:
    """The same lesion twice at one assessment day is an error naming both rows."""
    seen: dict[tuple, _Rec] = {}
    for r in sorted(recs, key=lambda r: (r.subject, r.day, r.lesion_id, r.row)):
        k = (r.subject, r.day, r.lesion_id)
        if k in seen:
            first = seen[k]
            raise DataError(
                f"lesion {r.lesion_id} is recorded twice at day {r.day:g} "
                f"(rows {first.row} and {r.row})",
                row=r.row,
                subject=r.subject,
                column="lesion_id",
                value=r.lesion_id,
                fix="keep one record per lesion and assessment (e.g. the accepted read of one "
                "reader)",
            )
        seen[k] = r


def _normalize(lesions: pd.DataFrame) -> tuple[list[_Rec], list[str]]:
    """Check the lesion table and turn its rows into :class:`_Rec` records (plus log notes)."""
    _check_lesion_frame(lesions)
    df = lesions.reset_index(drop=True)
    n = len(df)
    log: list[str] = []
    rows = _source_rows(df)
    subj = _subject_ids(df, rows)
    day, diam = _days_and_diameters(df, rows, subj)
    lid = _lesion_ids(df, rows, subj)
    ltype = _map_aliases(df, "lesion_type", _TYPE_ALIASES, "target, nontarget, new", rows, subj)
    state = _map_aliases(
        df, "state", _STATE_ALIASES, ", ".join(repr(s) for s in LESION_STATES), rows, subj, ""
    )
    is_node = _node_flags(df, rows, subj)
    organ = ["" if _is_missing(v) else str(v).strip().lower() for v in df["organ"].tolist()]

    recs = []
    for i in range(n):
        node = is_node[i]
        if node is None:
            node = False
            log.append(f"row {rows[i]} (ID {subj.iloc[i]}): is_node missing, taken as False")
        recs.append(
            _Rec(
                row=int(rows[i]),
                subject=subj.iloc[i],
                day=float(day[i]),
                lesion_id=lid.iloc[i],
                ltype=ltype[i],
                organ=organ[i],
                is_node=node,
                diam=float(diam[i]),
                state=state[i],
            )
        )
    _check_duplicates(recs)
    return recs, log


def _normalize_subjects(subjects: pd.DataFrame | None) -> dict[str, dict]:
    """Per-subject death / last-known-alive / new-therapy days from the subjects table.

    Empty cells (``""``, NaN) are missing; a row that is empty throughout is skipped. A row
    without a subject, a day that is not a finite number, or a subject given twice is an error
    naming the row (1-based, header excluded) and the value."""
    if subjects is None:
        return {}
    if not isinstance(subjects, pd.DataFrame) or "subject" not in subjects.columns:
        raise DataError(
            "subjects table must be a DataFrame with a subject column",
            column="subject",
            fix="pass columns subject, death_day, last_known_alive_day, new_therapy_day",
        )
    out: dict[str, dict] = {}
    cols = ("death_day", "last_known_alive_day", "new_therapy_day")
    where = f" of {subjects.attrs['source']}" if subjects.attrs.get("source") else ""

    def blank(v) -> bool:
        return v is None or (isinstance(v, str) and not v.strip()) or bool(
            not isinstance(v, str) and pd.isna(v))

    ids = ["" if blank(v) else str(v).strip() for v in subjects["subject"]]
    vals = {}
    for c in cols:
        vals[c] = np.full(len(subjects), np.nan)
        if c not in subjects.columns:
            continue
        for i, v in enumerate(subjects[c]):
            if blank(v):
                continue
            x = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
            if pd.isna(x) or not np.isfinite(x):
                raise DataError(
                    f"{c}{where} is not a finite number",
                    row=i + 1,
                    subject=ids[i] or None,
                    column=c,
                    value=v,
                    fix="give days since the first dose, or leave empty",
                )
            vals[c][i] = float(x)
    for i, s in enumerate(ids):
        if not s:
            if all(np.isnan(vals[c][i]) for c in cols):
                continue  # a blank row
            raise DataError(
                f"subject{where} is missing",
                row=i + 1,
                column="subject",
                fix="give the subject of every row",
            )
        if s in out:
            raise DataError(
                "subject appears twice in the subjects table",
                row=i + 1,
                subject=s,
                column="subject",
                fix="keep one row per subject",
            )
        out[s] = {c: float(vals[c][i]) for c in cols}
    return out


# --------------------------------------------------------------------------------------------------
# rule helpers


def _meets_pd(sld: float, nadir: float, cfg: RecistConfig) -> bool:
    inc = sld - nadir
    return inc >= cfg.pd_rel * nadir - _EPS and inc >= cfg.pd_abs_mm - _EPS


def _is_confirmed(resp: list[str], days: list[float], i: int, cfg: RecistConfig) -> bool:
    """admiralonco ``cbor_cr``/``cbor_pr``: is response ``resp[i]`` (CR or PR) confirmed?"""
    r = resp[i]
    if r == "CR":
        targets, allowed = {"CR"}, {"CR", "NE"}
    elif r == "PR":
        targets, allowed = {"CR", "PR"}, {"CR", "PR", "NE"}
    else:
        return False
    for j in range(i + 1, len(resp)):
        if resp[j] in targets and days[j] - days[i] >= cfg.confirm_min_days - _EPS:
            joined = list(zip(resp[i + 1 : j + 1], days[i + 1 : j + 1], strict=True))
            if any(x not in allowed for x, _ in joined):
                return False
            if sum(x == "NE" for x, _ in joined) > cfg.max_ne_between:
                return False
            if r == "PR":
                cr = [d for x, d in joined if x == "CR"]
                pr = [d for x, d in joined if x == "PR"]
                if cr and pr and not min(cr) > max(pr):
                    return False
            return True
    return False


def _bor(
    resp: list[str], days: list[float], start: float, cfg: RecistConfig, confirmed: bool
) -> tuple[str, float]:
    """Best overall response and the day of the assessment it comes from."""
    n = len(resp)
    if n == 0:
        return "MISSING", math.nan
    for best in ("CR", "PR"):
        for i in range(n):
            if resp[i] == best and (not confirmed or _is_confirmed(resp, days, i, cfg)):
                return best, days[i]
    sd_from = start + cfg.sd_min_days - _EPS
    for i in range(n):
        if resp[i] in ("CR", "PR", "SD") and days[i] >= sd_from:
            return "SD", days[i]
    for i in range(n):
        if resp[i] == _NONCR and days[i] >= sd_from:
            return _NONCR, days[i]
    for i in range(n):
        if resp[i] == "PD":
            return "PD", days[i]
    return "NE", days[0]


def _ibor(resp: list[str], days: list[float], start: float, cfg: RecistConfig) -> str:
    if not resp:
        return "MISSING"
    for best in ("iCR", "iPR"):
        if best in resp:
            return best
    sd_from = start + cfg.sd_min_days - _EPS
    if any(r in ("iCR", "iPR", "iSD") and d >= sd_from for r, d in zip(resp, days, strict=True)):
        return "iSD"
    if any(r == "NON-iCR/NON-iUPD" and d >= sd_from for r, d in zip(resp, days, strict=True)):
        return "NON-iCR/NON-iUPD"
    if "iCPD" in resp:
        return "iCPD"
    if "iUPD" in resp:
        return "iUPD"
    return "NE"


def _time_to_event(
    start: float,
    a_days: list[float],
    a_resp: list[str],
    pd_day: float,
    death_day: float,
    new_therapy_day: float,
    cfg: RecistConfig,
) -> dict:
    """PFS-type endpoint from ``start``. ``a_days``/``a_resp``: assessments (any day)."""
    adequate = sorted(d for d, r in zip(a_days, a_resp, strict=True) if r != "NE" and d >= start)

    def last_adequate(until: float, inclusive: bool = True) -> float | None:
        c = [d for d in adequate if (d <= until if inclusive else d < until)]
        return c[-1] if c else None

    add = 1.0 if cfg.pfs_add_one else 0.0
    ev_day, ev_type = math.nan, None
    if not math.isnan(pd_day) and pd_day >= start:
        ev_day, ev_type = pd_day, "PD"
    if not math.isnan(death_day) and death_day >= start and not death_day >= ev_day:
        ev_day, ev_type = death_day, "death"
    censor_day, reason = None, None
    if ev_type is not None:
        if (
            cfg.censor_new_therapy
            and not math.isnan(new_therapy_day)
            and ev_day > new_therapy_day + _EPS
        ):
            c = last_adequate(new_therapy_day)
            censor_day = start if c is None else c
            reason = f"{ev_type} after new anticancer therapy (day {new_therapy_day:g})"
        elif cfg.censor_missed_assessments is not None:
            ref = last_adequate(ev_day, inclusive=ev_type == "death")
            ref_day = start if ref is None else ref
            k = cfg.censor_missed_assessments
            limit = k * cfg.assessment_interval_days + cfg.assessment_window_days
            if ev_day - ref_day > limit + _EPS:
                censor_day = ref_day
                reason = f"{ev_type} after >= {k} missed assessments"
        if censor_day is None:
            return {
                "days": ev_day - start + add,
                "event": 1,
                "day": ev_day,
                "event_type": ev_type,
                "censor_reason": None,
            }
    else:
        until = math.inf
        if cfg.censor_new_therapy and not math.isnan(new_therapy_day):
            until = new_therapy_day
        c = last_adequate(until)
        if c is None:
            censor_day = start
            reason = "no adequate post-baseline assessment (censored at start)"
        else:
            censor_day = c
            reason = "last adequate assessment"
    return {
        "days": censor_day - start + add,
        "event": 0,
        "day": censor_day,
        "event_type": None,
        "censor_reason": reason,
    }


def _fmt(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------------------------------
# per-subject engine


@dataclass
class _Baseline:
    """A subject's baseline (rule 1): its lesions, the targets and non-targets, the SLD."""

    day: float
    lesions: dict[str, _Rec]
    tid: list[str]
    t_node: dict[str, bool]
    ntid: list[str]
    nt_node: dict[str, bool]
    measurable: bool
    sld0: float


@dataclass
class _TimePoints:
    """Per-assessment results of a subject (rules 2-6), one entry per post-baseline day.

    ``nt_unq``/``nt_diam``/``new_unq``/``new_diam``/``new_seen`` are the lesion details iRECIST
    needs (``new_seen``: any informative new-lesion record, equivocal or unequivocal)."""

    days: list[float]
    backdated: list[bool]
    tr: list[str] = field(default_factory=list)
    ntr: list[str] = field(default_factory=list)
    newl: list[object] = field(default_factory=list)
    ovr: list[str] = field(default_factory=list)
    sld_full: list[float] = field(default_factory=list)
    sld_part: list[float] = field(default_factory=list)
    nadirs: list[float] = field(default_factory=list)
    n_assessed: list[int] = field(default_factory=list)
    nt_unq: list[set] = field(default_factory=list)
    nt_diam: list[dict] = field(default_factory=list)
    new_unq: list[set] = field(default_factory=list)
    new_diam: list[dict] = field(default_factory=list)
    new_seen: list[set] = field(default_factory=list)


def _problem(
    sid: str,
    cfg: RecistConfig,
    log: list[str],
    msg: str,
    r: _Rec,
    value: object,
    fix: str,
    column: str = "diameter_mm",
) -> None:
    """A baseline measurability / selection problem: an error, or a log note when not strict."""
    if cfg.strict:
        raise DataError(msg, row=r.row, subject=sid, column=column, value=value, fix=fix)
    log.append(f"row {r.row} (ID {sid}): {msg}; got {value!r} (strict=False: kept)")


# ---- rule 1: baseline ---------------------------------------------------------------------------


def _split_baseline(sid: str, recs: list[_Rec]) -> tuple[list[_Rec], list[_Rec]]:
    """Baseline records (``day <= 0``) and post-baseline records, each sorted by day and id."""
    recs = sorted(recs, key=lambda r: (r.day, r.lesion_id, r.row))
    base = [r for r in recs if r.day <= 0]
    post = [r for r in recs if r.day > 0]
    if not base:
        first = min(recs, key=lambda r: (r.day, r.row))
        raise DataError(
            "no baseline assessment: the subject has no lesion records at day <= 0",
            row=first.row,
            subject=sid,
            column="day",
            value=first.day,
            fix="add the baseline scan (day <= 0, day 0 = first dose) or shift the days so that "
            "day 0 is the first dose",
        )
    return base, post


def _baseline_lesions(sid: str, base: list[_Rec]) -> dict[str, _Rec]:
    """One baseline record per lesion; no lesion twice and no new lesion at baseline."""
    blesion: dict[str, _Rec] = {}
    for r in base:  # sorted by day: the later record overwrites only after the check
        if r.lesion_id in blesion:
            e = blesion[r.lesion_id]
            raise DataError(
                f"lesion {r.lesion_id} measured before baseline: recorded at day {_fmt(e.day)} "
                f"and again at day {_fmt(r.day)} (baseline = last assessment at day <= 0)",
                row=e.row,
                subject=sid,
                column="day",
                value=e.day,
                fix=f"drop the earlier screening scan (row {e.row}) so that each lesion has one "
                "baseline record",
            )
        blesion[r.lesion_id] = r
        if r.ltype == "new":
            raise DataError(
                f"new lesion {r.lesion_id} recorded at baseline (day {_fmt(r.day)})",
                row=r.row,
                subject=sid,
                column="lesion_type",
                value=r.ltype,
                fix="lesions present at baseline are target or nontarget; 'new' is only for "
                "lesions appearing after the first dose",
            )
    return blesion


def _check_target_measurable(
    sid: str, targets: list[_Rec], cfg: RecistConfig, log: list[str]
) -> None:
    """Baseline targets are measured (error) and measurable (``_problem``)."""
    for r in targets:
        if r.state not in ("", "present") or math.isnan(r.diam):
            raise DataError(
                f"target lesion {r.lesion_id} is not measured at baseline "
                f"(state {r.state or 'empty'!s}, diameter {r.diam})",
                row=r.row,
                subject=sid,
                column="diameter_mm",
                value=r.diam,
                fix="record the baseline diameter of every target lesion, or make the lesion "
                "non-target",
            )
        limit = _NODE_MEASURABLE_MM if r.is_node else _NONNODAL_MEASURABLE_MM
        if r.diam < limit - _EPS:
            kind = "lymph node short axis" if r.is_node else "non-nodal long axis"
            _problem(
                sid,
                cfg,
                log,
                f"target lesion {r.lesion_id} is not measurable at baseline: {kind} "
                f"{_fmt(r.diam)} mm < {_fmt(limit)} mm",
                r,
                r.diam,
                "record it as a non-target lesion (RECIST 1.1: measurable = non-nodal >= 10 mm, "
                "node short axis >= 15 mm) or correct the measurement",
            )


def _check_target_selection(
    sid: str, targets: list[_Rec], cfg: RecistConfig, log: list[str]
) -> None:
    """At most ``max_targets`` targets and ``max_targets_per_organ`` per organ."""
    if len(targets) > cfg.max_targets:
        _problem(
            sid,
            cfg,
            log,
            f"{len(targets)} target lesions at baseline; at most {cfg.max_targets} are allowed",
            targets[0],
            [r.lesion_id for r in targets],
            f"keep the {cfg.max_targets} largest reproducible lesions (max "
            f"{cfg.max_targets_per_organ} per organ) as targets and record the others as "
            "non-target",
            column="lesion_type",
        )
    per_organ: dict[str, list[_Rec]] = defaultdict(list)
    for r in targets:
        org = _NODE_ORGAN if r.is_node else r.organ
        if not org:
            log.append(
                f"row {r.row} (ID {sid}): organ of target {r.lesion_id} missing; not checked "
                "against the per-organ limit"
            )
            continue
        per_organ[org].append(r)
    for org in sorted(per_organ):
        lst = per_organ[org]
        if len(lst) > cfg.max_targets_per_organ:
            _problem(
                sid,
                cfg,
                log,
                f"{len(lst)} target lesions in organ {org!r}; at most "
                f"{cfg.max_targets_per_organ} per organ are allowed (all lymph nodes are one "
                "organ)",
                lst[0],
                [r.lesion_id for r in lst],
                "record the extra lesions of this organ as non-target",
                column="organ",
            )


def _baseline(sid: str, base: list[_Rec], cfg: RecistConfig, log: list[str]) -> _Baseline:
    """Rule 1: the baseline lesions, target checks and the baseline SLD."""
    baseline_day = max(r.day for r in base)
    blesion = _baseline_lesions(sid, base)
    targets = sorted(
        (r for r in blesion.values() if r.ltype == "target"), key=lambda r: r.lesion_id
    )
    nontargets = sorted(
        (r for r in blesion.values() if r.ltype == "nontarget"), key=lambda r: r.lesion_id
    )
    _check_target_measurable(sid, targets, cfg, log)
    _check_target_selection(sid, targets, cfg, log)
    for r in base:
        if r.ltype == "nontarget" and r.state in ("absent", "not_evaluated"):
            log.append(
                f"row {r.row} (ID {sid}): non-target {r.lesion_id} recorded {r.state} at "
                "baseline; treated as present"
            )
    measurable = bool(targets)
    return _Baseline(
        day=baseline_day,
        lesions=blesion,
        tid=[r.lesion_id for r in targets],
        t_node={r.lesion_id: r.is_node for r in targets},
        ntid=[r.lesion_id for r in nontargets],
        nt_node={r.lesion_id: r.is_node for r in nontargets},
        measurable=measurable,
        sld0=math.fsum(r.diam for r in targets) if measurable else math.nan,
    )


# ---- follow-up consistency ----------------------------------------------------------------------


def _check_followup_record(sid: str, r: _Rec, bl: _Baseline) -> None:
    """A post-baseline record must agree with the baseline lesion types and its own type."""
    if r.ltype == "target" and r.lesion_id not in bl.t_node:
        was = "non-target" if r.lesion_id in bl.nt_node else "not a baseline lesion"
        raise DataError(
            f"lesion {r.lesion_id} is recorded as target at day {_fmt(r.day)} but was {was} "
            "at baseline",
            row=r.row,
            subject=sid,
            column="lesion_id",
            value=r.lesion_id,
            fix="target lesions are chosen at baseline: record a lesion that appeared later "
            "as lesion_type 'new', or correct the lesion_id",
        )
    if r.ltype == "nontarget" and r.lesion_id not in bl.nt_node:
        was = "target" if r.lesion_id in bl.t_node else "not a baseline lesion"
        raise DataError(
            f"lesion {r.lesion_id} is recorded as non-target at day {_fmt(r.day)} but was "
            f"{was} at baseline",
            row=r.row,
            subject=sid,
            column="lesion_id",
            value=r.lesion_id,
            fix="keep the baseline lesion_type; record lesions appearing after the first dose "
            "as lesion_type 'new'",
        )
    if r.ltype == "new" and r.lesion_id in bl.lesions:
        raise DataError(
            f"new lesion {r.lesion_id} at day {_fmt(r.day)} has the id of a baseline lesion",
            row=r.row,
            subject=sid,
            column="lesion_id",
            value=r.lesion_id,
            fix="give new lesions their own ids (e.g. NEW01)",
        )
    if r.ltype == "target" and r.state in ("equivocal", "unequivocal"):
        raise DataError(
            f"state {r.state!r} is not a target-lesion state",
            row=r.row,
            subject=sid,
            column="state",
            value=r.state,
            fix="targets are measured: give diameter_mm, or state absent / too_small / "
            "not_evaluated",
        )
    if (
        r.ltype == "target"
        and r.state == "absent"
        and not bl.t_node[r.lesion_id]
        and not math.isnan(r.diam)
        and r.diam > 0
    ):
        raise DataError(
            f"target {r.lesion_id} is 'absent' but has a diameter",
            row=r.row,
            subject=sid,
            column="diameter_mm",
            value=r.diam,
            fix="an absent non-nodal target is 0 mm: clear the diameter or the state",
        )


def _followup_by_day(
    sid: str, post: list[_Rec], bl: _Baseline, ignored: dict[int, str]
) -> dict[float, list[_Rec]]:
    """Checked post-baseline records grouped by assessment day (uninformative rows noted)."""
    by_day: dict[float, list[_Rec]] = defaultdict(list)
    for r in post:
        _check_followup_record(sid, r, bl)
        if r.ltype == "new" and r.state in ("absent", "not_evaluated"):
            ignored[r.row] = f"new lesion state {r.state}: no new lesion recorded"
        by_day[r.day].append(r)
    return by_day


def _check_after_death(sid: str, post: list[_Rec], days: list[float], death: float) -> None:
    """No assessment after ``death_day``."""
    if not math.isnan(death) and days and days[-1] > death + _EPS:
        late = [r for r in post if r.day > death + _EPS][0]
        raise DataError(
            f"assessment at day {_fmt(late.day)} after death (day {_fmt(death)})",
            row=late.row,
            subject=sid,
            column="day",
            value=late.day,
            fix="check the death day in the subjects table or the scan day",
        )


# ---- rules 2-6: time points ---------------------------------------------------------------------


def _pd_before(ovr: list[str], k: int) -> bool:
    """Was any assessment before ``k`` overall PD?"""
    return any(o == "PD" for o in ovr[:k])


def _confirmed_before(ovr: list[str], days: list[float], k: int, cfg: RecistConfig) -> bool:
    """Was any CR/PR before ``k`` confirmed by assessments before ``k``?"""
    return any(_is_confirmed(ovr[:k], days[:k], i, cfg) for i in range(k))


def _target_values(
    sid: str,
    tid: list[str],
    trec: dict[str, _Rec],
    d: float,
    cfg: RecistConfig,
    log: list[str],
) -> dict[str, float]:
    """Rule 2: the value (mm) of every assessed target at day ``d``."""
    values: dict[str, float] = {}
    for lid in tid:
        r = trec.get(lid)
        if r is None or r.state == "not_evaluated":
            continue
        if r.state == "absent":
            values[lid] = 0.0 if math.isnan(r.diam) else r.diam
        elif r.state == "too_small":
            if math.isnan(r.diam):
                values[lid] = cfg.too_small_mm
                log.append(
                    f"row {r.row} (ID {sid}): target {lid} too small to measure at day "
                    f"{_fmt(d)} -> {_fmt(cfg.too_small_mm)} mm"
                )
            else:
                values[lid] = r.diam
        elif not math.isnan(r.diam):
            values[lid] = r.diam
        else:
            log.append(
                f"row {r.row} (ID {sid}): target {lid} has no diameter at day {_fmt(d)}; "
                "not assessed"
            )
    return values


def _target_response(
    bl: _Baseline,
    values: dict[str, float],
    part: float,
    complete: bool,
    nadir: float,
    tp: _TimePoints,
    k: int,
    cfg: RecistConfig,
) -> tuple[str, bool]:
    """Rule 3: target response at assessment ``k``, and whether earlier CRs are to be
    downgraded (``cr_reappearance="downgrade"``)."""
    reappeared = any(
        (v >= cfg.node_normal_mm - _EPS) if bl.t_node[lid] else (v > _EPS)
        for lid, v in values.items()
    )
    if not bl.measurable:
        t = "NA"
    elif not complete:
        t = "PD" if _meets_pd(part, nadir, cfg) else "NE"
    elif not reappeared:
        t = "CR"
    elif _meets_pd(part, nadir, cfg):
        t = "PD"
    elif part <= (1.0 - cfg.pr_rel) * bl.sld0 + _EPS:
        t = "PR"
    else:
        t = "SD"
    downgrade = False
    had_target_cr = "CR" in tp.tr
    if bl.measurable and had_target_cr and reappeared and t not in ("PD",):
        # CR followed by reappearance (RECIST Table 3 footnote)
        if cfg.cr_reappearance == "pd":
            t = "PD"
        elif not _pd_before(tp.ovr, k):
            downgrade = True
    if t == "SD" and cfg.pr_persistence and _confirmed_before(tp.ovr, tp.days, k, cfg):
        t = "PR"
    return t, downgrade


def _nontarget_response(bl: _Baseline, ntrec: dict[str, _Rec], cfg: RecistConfig) -> str:
    """Rule 4: non-target response ("NA" without non-target lesions)."""
    if not bl.ntid:
        return "NA"
    pd_nt = ne_nt = False
    all_gone = True
    for lid in bl.ntid:
        r = ntrec.get(lid)
        if r is None or r.state == "not_evaluated":
            ne_nt = True
            continue
        if r.state == "unequivocal":
            pd_nt = True
            all_gone = False
            continue
        dv = r.diam
        if r.state == "absent":
            gone = True
        elif bl.nt_node[lid]:  # a node is normal (gone) below node_normal_mm
            gone = not math.isnan(dv) and dv < cfg.node_normal_mm - _EPS
        else:  # empty state with a recorded 0 mm means gone
            gone = r.state == "" and not math.isnan(dv) and dv <= _EPS
        if not gone:
            all_gone = False
    if pd_nt:
        return "PD"
    if ne_nt:
        return "NE"
    if all_gone:
        return "CR"
    return _NONCR


def _new_lesions(nrec: list[_Rec], tp: _TimePoints) -> tuple[set, set, object]:
    """Rule 5: unequivocal and equivocal new lesion ids and the ``new_lesions`` value
    (True / "equivocal" / False); records the iRECIST details in ``tp``."""
    unq = {r.lesion_id for r in nrec if r.state in ("", "present", "unequivocal", "too_small")}
    eqv = {r.lesion_id for r in nrec if r.state == "equivocal"} - unq
    tp.new_unq.append(unq)
    tp.new_seen.append(unq | eqv)
    tp.new_diam.append(
        {r.lesion_id: r.diam for r in nrec if r.lesion_id in unq and not math.isnan(r.diam)}
    )
    nl: object = True if unq else ("equivocal" if eqv else False)
    return unq, eqv, nl


def _overall_response(t: str, nt: str, nl: object, measurable: bool) -> str:
    """Rule 6: overall time-point response (RECIST Tables 1 and 2)."""
    if t == "PD" or nt == "PD" or nl is True:
        return "PD"
    if measurable:
        if t == "CR":
            return "CR" if nt in ("CR", "NA") else "PR"
        if t == "PR":
            return "PR"
        if t == "SD":
            return "SD"
        return "NE"
    return {"CR": "CR", _NONCR: _NONCR}.get(nt, "NE")


def _downgrade_earlier_cr(
    sid: str, d: float, k: int, measurable: bool, tp: _TimePoints, log: list[str]
) -> None:
    """``cr_reappearance="downgrade"``: the CRs before ``k`` become PR (NON-CR/NON-PD)."""
    for j in range(k):
        if tp.tr[j] == "CR":
            tp.tr[j] = "PR"
        if tp.ovr[j] == "CR":  # Table 2 has no PR: non-measurable CR -> NON-CR/NON-PD
            tp.ovr[j] = "PR" if measurable else _NONCR
    log.append(
        f"ID {sid}: disease seen again at day {_fmt(d)} after CR; earlier CR downgraded "
        "(cr_reappearance='downgrade')"
    )


def _backdate_equivocal(
    sid: str,
    d: float,
    k: int,
    unq: set,
    eqv: set,
    first_equivocal: dict[str, int],
    tp: _TimePoints,
    log: list[str],
) -> None:
    """Rule 5: an equivocal new lesion later confirmed: PD dated at the first scan showing it."""
    if not _pd_before(tp.ovr, k):
        hits = sorted(first_equivocal[lid] for lid in unq if lid in first_equivocal)
        if hits:
            k1 = hits[0]
            ovr_k1 = tp.ovr[k1]
            if ovr_k1 != "PD":
                tp.ovr[k1] = "PD"
                tp.backdated[k1] = True
                log.append(
                    f"ID {sid}: equivocal new lesion at day {_fmt(tp.days[k1])} confirmed "
                    f"unequivocal at day {_fmt(d)}; PD dated day {_fmt(tp.days[k1])}"
                )
    for lid in unq:
        first_equivocal.pop(lid, None)
    for lid in sorted(eqv):
        if lid not in first_equivocal and not any(lid in s for s in tp.new_seen[:k]):
            first_equivocal[lid] = k


def _assess_time_points(
    sid: str,
    bl: _Baseline,
    by_day: dict[float, list[_Rec]],
    days: list[float],
    cfg: RecistConfig,
    log: list[str],
) -> _TimePoints:
    """Rules 2-6 at every post-baseline assessment, in day order."""
    tp = _TimePoints(days=days, backdated=[False] * len(days))
    nadir = bl.sld0
    first_equivocal: dict[str, int] = {}
    for k, d in enumerate(days):
        rows_k = by_day[d]
        trec = {r.lesion_id: r for r in rows_k if r.ltype == "target"}
        ntrec = {r.lesion_id: r for r in rows_k if r.ltype == "nontarget"}
        nrec = [r for r in rows_k if r.ltype == "new"]

        # -- target lesions
        values = _target_values(sid, bl.tid, trec, d, cfg, log)
        part = math.fsum(values.values())
        complete = bl.measurable and len(values) == len(bl.tid)
        tp.n_assessed.append(len(values))
        tp.sld_part.append(part if bl.measurable else math.nan)
        tp.sld_full.append(part if complete else math.nan)
        tp.nadirs.append(nadir)
        t, downgrade = _target_response(bl, values, part, complete, nadir, tp, k, cfg)

        # -- non-target lesions
        nt = _nontarget_response(bl, ntrec, cfg)
        tp.nt_unq.append({lid for lid, r in ntrec.items() if r.state == "unequivocal"})
        tp.nt_diam.append({lid: r.diam for lid, r in ntrec.items() if not math.isnan(r.diam)})

        # -- new lesions
        unq, eqv, nl = _new_lesions(nrec, tp)

        # -- overall (Tables 1 and 2)
        o = _overall_response(t, nt, nl, bl.measurable)
        if o != "PD" and nt == _NONCR and "CR" in tp.ovr:
            # overall CR followed by disease seen again (RECIST Table 3 footnote)
            if cfg.cr_reappearance == "pd":
                o = "PD"
            elif not _pd_before(tp.ovr, k):
                downgrade = True
        if downgrade:
            _downgrade_earlier_cr(sid, d, k, bl.measurable, tp, log)

        # -- equivocal new lesion later confirmed: PD dated at the first scan showing it
        _backdate_equivocal(sid, d, k, unq, eqv, first_equivocal, tp, log)

        tp.tr.append(t)
        tp.ntr.append(nt)
        tp.newl.append(nl)
        tp.ovr.append(o)
        if complete:
            nadir = min(nadir, part)
    return tp


# ---- visits table -------------------------------------------------------------------------------


def _visit_rows(sid: str, bl: _Baseline, tp: _TimePoints) -> list[dict]:
    """Rows of ``RecistResult.visits`` for one subject: baseline, then every assessment."""
    sld0 = bl.sld0
    visits = [
        {
            "subject": sid,
            "day": bl.day,
            "is_baseline": True,
            "n_targets": len(bl.tid),
            "n_targets_assessed": len(bl.tid),
            "sld_mm": sld0,
            "sld_partial_mm": sld0,
            "nadir_mm": sld0,
            "pct_change_baseline": 0.0 if bl.measurable and sld0 > 0 else math.nan,
            "pct_change_nadir": 0.0 if bl.measurable and sld0 > 0 else math.nan,
            "target_response": None,
            "nontarget_response": None,
            "new_lesions": None,
            "overall_response": None,
            "pd_backdated": False,
        }
    ]
    for k, d in enumerate(tp.days):
        s = tp.sld_full[k]
        nd = tp.nadirs[k]
        visits.append(
            {
                "subject": sid,
                "day": d,
                "is_baseline": False,
                "n_targets": len(bl.tid),
                "n_targets_assessed": tp.n_assessed[k],
                "sld_mm": s,
                "sld_partial_mm": tp.sld_part[k],
                "nadir_mm": nd,
                "pct_change_baseline": 100.0 * (s - sld0) / sld0
                if not math.isnan(s) and sld0 > 0
                else math.nan,
                "pct_change_nadir": 100.0 * (s - nd) / nd
                if not math.isnan(s) and nd > 0
                else math.nan,
                "target_response": tp.tr[k],
                "nontarget_response": tp.ntr[k],
                "new_lesions": tp.newl[k],
                "overall_response": tp.ovr[k],
                "pd_backdated": tp.backdated[k],
            }
        )
    return visits


# ---- rules 7-8: per-subject endpoints -----------------------------------------------------------


def _bor_window(days: list[float], ntd: float, cfg: RecistConfig) -> list[int]:
    """Indices of the assessments in the BOR window (rule 7), before the first-PD cut."""
    start = cfg.pfs_start_day

    def in_window(d: float) -> bool:
        if d < start - _EPS:
            return False
        return not (cfg.bor_exclude_after_new_therapy and not math.isnan(ntd) and d > ntd + _EPS)

    return [k for k in range(len(days)) if in_window(days[k])]


def _window_until(
    widx: list[int], resp: list[str], days: list[float], stop: str
) -> tuple[list[str], list[float]]:
    """Responses and days of the window up to and including the first ``stop`` response."""
    w_resp, w_days = [], []
    for k in widx:
        w_resp.append(resp[k])
        w_days.append(days[k])
        if resp[k] == stop:
            break
    return w_resp, w_days


def _duration_of_response(
    w_resp: list[str],
    w_days: list[float],
    responder: bool,
    a_days: list[float],
    ovr: list[str],
    pd_day: float,
    death: float,
    ntd: float,
    cfg: RecistConfig,
) -> dict:
    """Rule 8 DoR: from the first (confirmed) CR/PR to PD or death (responders only)."""
    dor = {"days": math.nan, "event": np.nan, "start": math.nan}
    if responder:
        if cfg.dor_confirmed:
            rs = [
                w_days[i]
                for i in range(len(w_resp))
                if w_resp[i] in ("CR", "PR") and _is_confirmed(w_resp, w_days, i, cfg)
            ][0]
        else:
            rs = [w_days[i] for i in range(len(w_resp)) if w_resp[i] in ("CR", "PR")][0]
        tte = _time_to_event(rs, a_days, ovr, pd_day, death, ntd, cfg)
        dor = {"days": tte["days"], "event": tte["event"], "start": rs}
    return dor


def _sld_endpoints(bl: _Baseline, tp: _TimePoints, w_days: list[float]) -> tuple[float, float]:
    """Best % change from baseline and the nadir over the complete assessments of the window."""
    sld0 = bl.sld0
    w_set = set(w_days)
    comp = [
        (tp.days[k], tp.sld_full[k])
        for k in range(len(tp.days))
        if not math.isnan(tp.sld_full[k]) and tp.days[k] in w_set
    ]
    best_pct = min(100.0 * (s - sld0) / sld0 for _, s in comp) if comp and sld0 > 0 else math.nan
    subj_nadir = min([sld0] + [s for _, s in comp]) if bl.measurable else math.nan
    return best_pct, subj_nadir


def _overall_survival(
    info: dict, days: list[float], baseline_day: float, cfg: RecistConfig
) -> tuple[float, object]:
    """Rule 8 OS (only with a subjects table): death, else censored at last known alive."""
    start = cfg.pfs_start_day
    death = info.get("death_day", math.nan)
    lka = info.get("last_known_alive_day", math.nan)
    add = 1.0 if cfg.pfs_add_one else 0.0
    if info:
        if not math.isnan(death):
            return death - start + add, 1
        last = lka if not math.isnan(lka) else (days[-1] if days else baseline_day)
        return max(last, start) - start + add, 0
    return math.nan, np.nan


def _subject_endpoints(
    sid: str, bl: _Baseline, tp: _TimePoints, info: dict, cfg: RecistConfig
) -> tuple[dict, list[int]]:
    """Rules 7-8: one row of ``RecistResult.subjects`` and the BOR window indices."""
    days, ovr = tp.days, tp.ovr
    start = cfg.pfs_start_day
    ntd = info.get("new_therapy_day", math.nan)
    death = info.get("death_day", math.nan)

    widx = _bor_window(days, ntd, cfg)
    w_resp, w_days = _window_until(widx, ovr, days, "PD")
    bor, bor_day = _bor(w_resp, w_days, start, cfg, confirmed=False)
    cbor, cbor_day = _bor(w_resp, w_days, start, cfg, confirmed=True)

    a_days = [days[k] for k in range(len(days))]
    pd_days = [days[k] for k in range(len(days)) if ovr[k] == "PD" and days[k] >= start - _EPS]
    pd_day = pd_days[0] if pd_days else math.nan
    pfs = _time_to_event(start, a_days, ovr, pd_day, death, ntd, cfg)

    responder = (cbor if cfg.dor_confirmed else bor) in ("CR", "PR")
    dor = _duration_of_response(w_resp, w_days, responder, a_days, ovr, pd_day, death, ntd, cfg)
    best_pct, subj_nadir = _sld_endpoints(bl, tp, w_days)
    os_days, os_event = _overall_survival(info, days, bl.day, cfg)

    summary = {
        "subject": sid,
        "baseline_day": bl.day,
        "baseline_sld_mm": bl.sld0,
        "measurable": bl.measurable,
        "n_targets": len(bl.tid),
        "n_nontargets": len(bl.ntid),
        "bor": bor,
        "bor_day": bor_day,
        "bor_confirmed": cbor,
        "bor_confirmed_day": cbor_day,
        "pfs_days": pfs["days"],
        "pfs_event": pfs["event"],
        "pfs_day": pfs["day"],
        "pfs_event_type": pfs["event_type"],
        "pfs_censor_reason": pfs["censor_reason"],
        "dor_start_day": dor["start"],
        "dor_days": dor["days"],
        "dor_event": dor["event"],
        "best_pct_change": best_pct,
        "nadir_mm": subj_nadir,
        "os_days": os_days,
        "os_event": os_event,
    }
    return summary, widx


# ---- rule 9: iRECIST ----------------------------------------------------------------------------


def _add_irecist(
    visits: list[dict],
    summary: dict,
    tp: _TimePoints,
    widx: list[int],
    info: dict,
    cfg: RecistConfig,
) -> None:
    """Rule 9: iRECIST columns of the visits and iBOR / iPFS of the subject (in place)."""
    days = tp.days
    n = len(days)
    start = cfg.pfs_start_day
    ntd = info.get("new_therapy_day", math.nan)
    death = info.get("death_day", math.nan)
    a_days = [days[k] for k in range(n)]
    ires = _irecist(tp, cfg)
    for k in range(n):
        visits[k + 1]["itarget_response"] = _I_MAP[tp.tr[k]]
        visits[k + 1]["inontarget_response"] = _I_MAP[tp.ntr[k]]
        visits[k + 1]["ioverall_response"] = ires["resp"][k]
    visits[0]["itarget_response"] = None
    visits[0]["inontarget_response"] = None
    visits[0]["ioverall_response"] = None
    iw_resp, iw_days = _window_until(widx, ires["resp"], days, "iCPD")
    summary["ibor"] = _ibor(iw_resp, iw_days, start, cfg)
    ipd_day = ires["ipd_day"]
    if math.isnan(ipd_day) and cfg.ipfs_unconfirmed == "event":
        ipd_day = ires["unconfirmed_day"]
    ipfs = _time_to_event(start, a_days, tp.ovr, ipd_day, death, ntd, cfg)
    summary["ipfs_days"] = ipfs["days"]
    summary["ipfs_event"] = ipfs["event"]
    summary["ipfs_day"] = ipfs["day"]
    summary["ipfs_censor_reason"] = ipfs["censor_reason"]
    summary["iupd_unconfirmed"] = not math.isnan(ires["unconfirmed_day"])


def _evaluate_subject(
    sid: str,
    recs: list[_Rec],
    info: dict,
    cfg: RecistConfig,
    log: list[str],
    ignored: dict[int, str],
) -> tuple[list[dict], dict]:
    """All rules for one subject: its ``visits`` rows and its ``subjects`` row."""
    base, post = _split_baseline(sid, recs)
    bl = _baseline(sid, base, cfg, log)
    by_day = _followup_by_day(sid, post, bl, ignored)
    days = sorted(by_day)
    _check_after_death(sid, post, days, info.get("death_day", math.nan))
    tp = _assess_time_points(sid, bl, by_day, days, cfg, log)
    visits = _visit_rows(sid, bl, tp)
    summary, widx = _subject_endpoints(sid, bl, tp, info, cfg)
    if cfg.irecist:
        _add_irecist(visits, summary, tp, widx, info, cfg)
    return visits, summary


def _ipd_categories(tp: _TimePoints, k: int) -> set:
    """Categories (target, nontarget, new) in RECIST PD at assessment ``k``."""
    c = set()
    if tp.tr[k] == "PD":
        c.add("target")
    if tp.ntr[k] == "PD":
        c.add("nontarget")
    if tp.newl[k] is True or tp.backdated[k]:
        c.add("new")
    return c


def _irecist_add_refs(b: dict, cats: set, k: int, tp: _TimePoints, known_new: set) -> None:
    """Record assessment ``k`` as the reference of the block's newly iUPD categories."""
    for c in cats - b["cats"]:
        b["cats"].add(c)
        if c == "target":
            b["t_ref"] = tp.sld_part[k]
        elif c == "nontarget":
            b["nt_ref"] = dict(tp.nt_diam[k])
            b["nt_unq"] = set(tp.nt_unq[k])
        else:
            b["nl_ref"] = dict(tp.new_diam[k])
    b["nl_known"] = set(known_new) | set(tp.new_seen[k])


def _irecist_confirms(blk: dict, cats: set, k: int, tp: _TimePoints, cfg: RecistConfig) -> bool:
    """Does assessment ``k`` show the further progression that confirms the iUPD block?"""
    confirm = False
    if "target" in blk["cats"]:
        if not math.isnan(tp.sld_part[k]) and tp.sld_part[k] - blk["t_ref"] >= (
            cfg.pd_abs_mm - _EPS
        ):
            confirm = True
    elif "target" in cats:
        confirm = True
    if "nontarget" in blk["cats"]:
        grew = any(
            v > blk["nt_ref"][lid] + _EPS
            for lid, v in tp.nt_diam[k].items()
            if lid in blk["nt_ref"]
        )
        if grew or (tp.nt_unq[k] - blk["nt_unq"]):
            confirm = True
    elif "nontarget" in cats:
        confirm = True
    if "new" in blk["cats"]:
        if tp.new_unq[k] - blk["nl_known"]:
            confirm = True
        ref = blk["nl_ref"]
        new_diam = tp.new_diam[k]
        common = [lid for lid in ref if lid in new_diam]
        if common and math.fsum(new_diam[lid] - ref[lid] for lid in common) >= (
            cfg.pd_abs_mm - _EPS
        ):
            confirm = True
    elif "new" in cats:
        confirm = True
    return confirm


def _irecist(tp: _TimePoints, cfg: RecistConfig) -> dict:
    """iRECIST time-point responses (CONVENTIONS §3.9, Seymour 2017 Table 2)."""
    days = tp.days
    n = len(days)
    resp: list[str] = []
    blk: dict | None = None
    done = False
    ipd_day = math.nan
    known_new: set = set()

    for k in range(n):
        o = tp.ovr[k]
        is_pd = o == "PD"
        if done:
            resp.append("iCPD" if is_pd else _I_MAP[o])
        elif blk is None:
            if is_pd:
                blk = {"first": k, "last": k, "cats": set()}
                _irecist_add_refs(blk, _ipd_categories(tp, k), k, tp, known_new)
                resp.append("iUPD")
            else:
                resp.append(_I_MAP[o])
        else:
            gap = days[k] - days[blk["last"]]
            cats = _ipd_categories(tp, k)
            confirm = _irecist_confirms(blk, cats, k, tp, cfg)
            early = gap < cfg.irecist_confirm_min_days - _EPS
            late = gap > cfg.irecist_confirm_max_days + _EPS
            if confirm and not early and not late:
                resp.append("iCPD")
                done = True
                ipd_day = days[blk["first"]]
                blk = None
            elif is_pd:
                resp.append("iUPD")
                if not early:
                    blk["last"] = k
                    if late:
                        _irecist_add_refs(blk, cats, k, tp, known_new)
            elif o == "NE":
                resp.append("NE")
            else:
                resp.append(_I_MAP[o])
                blk = None
        known_new |= tp.new_seen[k]
    unconfirmed = days[blk["first"]] if blk is not None and not done else math.nan
    return {"resp": resp, "ipd_day": ipd_day, "unconfirmed_day": unconfirmed}


# --------------------------------------------------------------------------------------------------
# public entry point

_VISIT_COLUMNS = (
    "subject",
    "day",
    "is_baseline",
    "n_targets",
    "n_targets_assessed",
    "sld_mm",
    "sld_partial_mm",
    "nadir_mm",
    "pct_change_baseline",
    "pct_change_nadir",
    "target_response",
    "nontarget_response",
    "new_lesions",
    "overall_response",
    "pd_backdated",
)
_SUBJECT_COLUMNS = (
    "subject",
    "baseline_day",
    "baseline_sld_mm",
    "measurable",
    "n_targets",
    "n_nontargets",
    "bor",
    "bor_day",
    "bor_confirmed",
    "bor_confirmed_day",
    "pfs_days",
    "pfs_event",
    "pfs_day",
    "pfs_event_type",
    "pfs_censor_reason",
    "dor_start_day",
    "dor_days",
    "dor_event",
    "best_pct_change",
    "nadir_mm",
    "os_days",
    "os_event",
)
_IRECIST_VISIT_COLUMNS = ("itarget_response", "inontarget_response", "ioverall_response")
_IRECIST_SUBJECT_COLUMNS = (
    "ibor",
    "ipfs_days",
    "ipfs_event",
    "ipfs_day",
    "ipfs_censor_reason",
    "iupd_unconfirmed",
)


def _evaluate_subjects(
    recs: list[_Rec], info: dict[str, dict], cfg: RecistConfig, log: list[str]
) -> tuple[list[dict], list[dict], dict[int, str]]:
    """Every subject in id order: visit rows, subject rows and the ignored input rows."""
    by_subject: dict[str, list[_Rec]] = defaultdict(list)
    for r in recs:
        by_subject[r.subject].append(r)
    ignored: dict[int, str] = {}
    visit_rows: list[dict] = []
    summaries: list[dict] = []
    for sid in sorted(by_subject):
        v, s = _evaluate_subject(sid, by_subject[sid], info.get(sid, {}), cfg, log, ignored)
        visit_rows.extend(v)
        summaries.append(s)
    for sid in sorted(set(info) - set(by_subject)):
        log.append(f"ID {sid}: in the subjects table but has no lesion records; not evaluated")
    return visit_rows, summaries, ignored


def _result_tables(
    visit_rows: list[dict], summaries: list[dict], cfg: RecistConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``visits`` and ``subjects`` tables with their columns and dtypes."""
    visit_cols = list(_VISIT_COLUMNS)
    subj_cols = list(_SUBJECT_COLUMNS)
    if cfg.irecist:
        visit_cols += list(_IRECIST_VISIT_COLUMNS)
        subj_cols += list(_IRECIST_SUBJECT_COLUMNS)
    visits = pd.DataFrame(visit_rows, columns=visit_cols)
    visits["new_lesions"] = visits["new_lesions"].astype(object)
    subj_df = pd.DataFrame(summaries, columns=subj_cols)
    for c in ("pfs_event",) + (("ipfs_event",) if cfg.irecist else ()):
        subj_df[c] = subj_df[c].astype(int)
    subj_df["dor_event"] = subj_df["dor_event"].astype("Int64")
    subj_df["os_event"] = subj_df["os_event"].astype("Int64")
    return visits, subj_df


def _rows_table(recs: list[_Rec], ignored: dict[int, str], log: list[str]) -> pd.DataFrame:
    """``RecistResult.rows``: every input row used or ignored; ignored rows are logged."""
    rows = pd.DataFrame(
        {
            "row": [r.row for r in recs],
            "subject": [r.subject for r in recs],
            "day": [r.day for r in recs],
            "lesion_id": [r.lesion_id for r in recs],
            "status": ["ignored" if r.row in ignored else "used" for r in recs],
            "reason": [ignored.get(r.row, "") for r in recs],
        }
    ).sort_values("row", kind="stable", ignore_index=True)
    for r in recs:
        if r.row in ignored:
            log.append(f"row {r.row} (ID {r.subject}): ignored ({ignored[r.row]})")
    return rows


def evaluate(
    lesions: pd.DataFrame,
    subjects: pd.DataFrame | None = None,
    config: RecistConfig | None = None,
) -> RecistResult:
    """Apply RECIST 1.1 (and optionally iRECIST) to a canonical lesion-level table.

    Parameters
    ----------
    lesions
        One row per lesion per assessment; columns :data:`REQUIRED_COLUMNS` (+ optional
        ``reader``, ``row``). See the module docstring for values and rules.
    subjects
        Optional per-subject table: ``subject, death_day, last_known_alive_day,
        new_therapy_day`` (days since the first dose, NaN when none).
    config
        Protocol parameters; default :class:`RecistConfig()`.

    Returns
    -------
    RecistResult
        ``visits`` and ``subjects`` tables, ``log`` notes and the ``rows`` accounting.

    Raises
    ------
    DataError
        Malformed or inconsistent input; the message names the subject, the source row, the
        value and the fix.
    """
    cfg = RecistConfig() if config is None else config
    if not isinstance(cfg, RecistConfig):
        raise TypeError(f"config must be a RecistConfig (got {type(cfg).__name__}).")
    recs, log = _normalize(lesions)
    info = _normalize_subjects(subjects)
    visit_rows, summaries, ignored = _evaluate_subjects(recs, info, cfg, log)
    visits, subj_df = _result_tables(visit_rows, summaries, cfg)
    rows = _rows_table(recs, ignored, log)
    return RecistResult(visits=visits, subjects=subj_df, log=log, rows=rows, config=cfg)
