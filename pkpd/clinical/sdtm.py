"""SDTM tumour domains (TU, TR, RS, DM, EX, ...) -> the canonical lesion table
(:func:`read_sdtm`). Conventions: ``../shared/docs/CONVENTIONS.md`` §2.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError
from ._cdisc import _code_text, _col, _collect_domains, _need, _same, _texts
from ._common import (
    _STATE_MAP,
    _TYPE_MAP,
    DataReport,
    _date_or_fail,
    _norm_key,
    _number,
    _parse_date,
    _show,
)
from .lesions import _UNITS, LESION_COLUMNS, sld_series, validate_lesions

__all__ = ["SdtmData", "read_sdtm"]


class SdtmData(NamedTuple):
    """Result of :func:`read_sdtm`."""

    lesions: pd.DataFrame
    responses: pd.DataFrame
    dosing: pd.DataFrame
    report: DataReport



# ------------------------------------------------------------------------------------------------
# read_sdtm
# ------------------------------------------------------------------------------------------------


_MEASURE_TESTS = ("LDIAM", "LPERP", "DIAMETER")
_STATE_TESTS = ("TUMSTATE", "LNSTATE")


def _reference_dates(
    dm: tuple[pd.DataFrame, str] | None,
    ex: tuple[pd.DataFrame, str] | None,
) -> dict[str, tuple[_dt.date, str]]:
    ref: dict[str, tuple[_dt.date, str]] = {}
    if dm is not None:
        df, name = dm
        _need(df, ["USUBJID"], name, "DM")
        subj = _texts(df, "USUBJID")
        for var in ("RFXSTDTC", "RFSTDTC"):
            if var not in df.columns:
                continue
            for i, v in enumerate(df[var]):
                if subj[i] in ref:
                    continue
                d, _ = _date_or_fail(v, row=i + 1, subject=subj[i], column=var)
                if d is not None:
                    ref[subj[i]] = (d, f"DM.{var}")
    if ex is not None:
        df, name = ex
        _need(df, ["USUBJID", "EXSTDTC"], name, "EX")
        subj = _texts(df, "USUBJID")
        first: dict[str, _dt.date] = {}
        for i, v in enumerate(df["EXSTDTC"]):
            d, _ = _date_or_fail(v, row=i + 1, subject=subj[i], column="EXSTDTC")
            if d is not None and (subj[i] not in first or d < first[subj[i]]):
                first[subj[i]] = d
        for s, d in first.items():
            ref.setdefault(s, (d, "EX.EXSTDTC"))
    return ref


def _ref_for(ref, subject: str, row: int, domain: str) -> _dt.date:
    if subject not in ref:
        raise DataError(
            "no reference (first-dose) date for the subject",
            row=row,
            subject=subject,
            column="USUBJID",
            value=f"{domain} record",
            fix="give DM with RFXSTDTC (or RFSTDTC), or EX with EXSTDTC, for every subject",
        )
    return ref[subject][0]


def _sdtm_domains(source) -> dict[str, tuple[pd.DataFrame, str]]:
    """The SDTM domains of ``source``; TU and TR must be among them."""
    doms = _collect_domains(source, ("TU", "TR", "RS", "DM", "EX"), "SDTM")
    missing = [d for d in ("TU", "TR") if d not in doms]
    if missing:
        where = ""
        if isinstance(source, str | os.PathLike):
            files = sorted(f.name for f in Path(source).iterdir())
            shown = ", ".join(files[:12]) + (f", ... ({len(files)} in all)" if len(files) > 12
                                            else "")
            where = f" in folder {str(source)!r} (files there: {shown or 'none'})"
        raise DataError(
            f"SDTM input lacks the {' and '.join(missing)} domain(s){where} (domains found: "
            f"{', '.join(doms) or 'none'})",
            fix="give tu and tr files (.csv, .xpt or .sas7bdat) named after their domain, or "
            "give a lesion-level .csv/.xlsx file instead of a folder",
        )
    for dom in ("TU", "TR"):
        df, name = doms[dom]
        if not len(df):
            raise DataError(
                f"the {dom} domain ({name}) has no records",
                fix=f"give the {dom} records (one per lesion{' per assessment' * (dom == 'TR')}) "
                "under the header",
            )
    return doms


def read_sdtm(
    source: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, object],
    evaluator: str | None = "INVESTIGATOR",
    *,
    criteria: str | None = "RECIST 1.1",
    assessment_date: Literal["visit", "record"] = "visit",
    all_errors: bool = False,
) -> SdtmData:
    """Read SDTM TU + TR (+ RS, DM, EX) into the canonical lesion table and a response table.

    Algorithm (CONVENTIONS §2.3):

    1. TR records are kept when ``TREVAL`` equals ``evaluator`` (case-insensitive; empty TREVAL
       is kept; ``evaluator=None`` keeps all). When a subject has accepted reads
       (``TRACPTFL == "Y"``), the other reads are dropped. TU is filtered on TUEVAL likewise.
    2. Lesions come from TU: ``TULNKID``, ``TUSTRESC`` (or TUORRES) TARGET / NON-TARGET / NEW
       (NEW TARGET and NEW NON-TARGET read as new), ``TULOC`` (nodal when it contains "NODE").
    3. Measurement: ``LDIAM`` for non-nodal and ``LPERP`` (short axis) for nodal lesions
       (``DIAMETER`` for both when that is what the data use); the value is ``TRSTRESN``
       (TOO SMALL TO MEASURE keeps its TRSTRESN, normally 5 mm, and gets state too_small);
       ``TRSTAT == "NOT DONE"`` -> missing, state not_evaluated. ``TUMSTATE``/``LNSTATE`` give the
       state. Split fragments (``T04.1``, ``T04.2`` under TU lesion T04) are summed; a merged
       record (``T02/T03``) is assigned to its first lesion and the others get 0 mm (absent).
    4. Day = assessment date - reference date, in days, from calendar dates (``--DY`` is
       never used). Reference (day 0) = DM.RFXSTDTC, else DM.RFSTDTC, else the first
       EX.EXSTDTC. With ``assessment_date="visit"`` all records of a visit (VISITNUM, else
       VISIT) get the visit's earliest TRDTC; ``"record"`` uses each record's own TRDTC. A
       partial TRDTC/RSDTC (YYYY-MM) is imputed to the 1st (noted in the report).
    5. ``SUMDIAM`` records are not used for the SLD; each is cross-checked against the SLD
       derived from the lesions (:func:`sld_series`, tolerance 0.5 mm) and the result is noted
       in the report.

    Parameters
    ----------
    source : folder, list of paths, or mapping
        A folder with ``tu``, ``tr`` and optionally ``rs``, ``dm``, ``ex`` files (``.csv``,
        ``.xpt`` or ``.sas7bdat``; names case-insensitive), a list of such paths (domain from
        the file name or a DOMAIN column), or ``{"TU": path_or_DataFrame, ...}``.
    evaluator : str or None, default "INVESTIGATOR"
        TREVAL / TUEVAL / RSEVAL to keep (e.g. ``"INDEPENDENT ASSESSOR"``); None keeps all.
    criteria : str or None, default "RECIST 1.1"
        RSCAT of the RS records to keep (None keeps all).
    assessment_date : {"visit", "record"}, default "visit"
        How an assessment day is chosen (see 4.).
    all_errors : bool, default False
        List every problem of the lesion-table checks (:func:`validate_lesions`) at once, as a
        :class:`DataProblems`; the SDTM-specific checks before them stop at the first problem.

    Returns
    -------
    SdtmData
        ``(lesions, responses, dosing, report)``:

        * ``lesions``: the canonical lesion table (``reader`` = TREVALID, ``row`` = TR data
          row, ``source`` = TR file name), ``attrs["reference_dates"]`` set;
        * ``responses``: RS ``OVRLRESP`` per visit: ``subject, day, visit, response, criteria,
          reader, row, source``;
        * ``dosing``: EX records: ``subject, day, amt, unit, treatment, row, source``;
        * ``report``: every TU, TR, RS, DM and EX row, used or dropped with a reason.

    Raises
    ------
    DataError
        Missing domains or variables, unknown lesion types or states, TR records linked to no
        TU lesion, unparseable dates, subjects without a reference date, duplicate measurements.
    """
    doms = _sdtm_domains(source)
    report = DataReport("SDTM " + ", ".join(f"{d}={n}" for d, (_, n) in doms.items()))
    ref = _reference_dates(doms.get("DM"), doms.get("EX"))

    # -- TU -------------------------------------------------------------------------------------
    tu, tu_name = doms["TU"]
    type_col = _col(tu, "TUSTRESC", "TUORRES")
    _need(tu, ["USUBJID", "TULNKID", type_col or "TUSTRESC"], tu_name, "TU")
    tu_subj = _texts(tu, "USUBJID")
    tu_lnk = _texts(tu, "TULNKID")
    tu_type = _texts(tu, type_col)
    tu_loc = _texts(tu, _col(tu, "TULOC"))
    tu_eval = _texts(tu, _col(tu, "TUEVAL"))
    tu_test = _texts(tu, _col(tu, "TUTESTCD"))
    lesion_meta: dict[tuple[str, str], dict] = {}
    for i in range(len(tu)):
        r = i + 1
        if tu_eval[i] and not _same(tu_eval[i], evaluator):
            report.add(tu_name, r, tu_subj[i], "dropped", rule="other_evaluator",
                       reason=f"TUEVAL {tu_eval[i]} (reading {evaluator})")
            continue
        if tu_test[i] and tu_test[i].upper() not in ("TUMIDENT", "LESIDENT"):
            report.add(tu_name, r, tu_subj[i], "dropped", rule="tu_other_test",
                       reason=f"TUTESTCD {tu_test[i]} is not a lesion identification")
            continue
        if not tu_lnk[i]:
            raise DataError(
                "TULNKID is missing",
                row=r,
                subject=tu_subj[i],
                column="TULNKID",
                fix="give every TU lesion its link id (e.g. T01, NT01, NEW01)",
            )
        t = _TYPE_MAP.get(_norm_key(tu_type[i]))
        if t is None:
            raise DataError(
                "unknown lesion type",
                row=r,
                subject=tu_subj[i],
                column=type_col,
                value=tu_type[i],
                fix="use TARGET, NON-TARGET or NEW",
            )
        meta = dict(lesion_type=t, organ=tu_loc[i], is_node="NODE" in tu_loc[i].upper())
        key = (tu_subj[i], tu_lnk[i])
        if key in lesion_meta and lesion_meta[key] != meta:
            raise DataError(
                f"lesion {tu_lnk[i]} is identified twice with different type or location",
                row=r,
                subject=tu_subj[i],
                column="TULNKID",
                value=tu_lnk[i],
                fix="give each TULNKID one TU record (or identical ones)",
            )
        lesion_meta[key] = meta
        report.add(tu_name, r, tu_subj[i], "used", reason="lesion identification")
    report._check_complete(tu_name, len(tu))

    # -- TR -------------------------------------------------------------------------------------
    tr, tr_name = doms["TR"]
    _need(tr, ["USUBJID", "TRLNKID", "TRTESTCD", "TRDTC"], tr_name, "TR")
    if _col(tr, "TRSTRESN", "TRSTRESC", "TRORRES") is None:
        _need(tr, ["TRSTRESN"], tr_name, "TR")
    n_tr = len(tr)
    subj = _texts(tr, "USUBJID")
    lnk = _texts(tr, "TRLNKID")
    test = [t.upper() for t in _texts(tr, "TRTESTCD")]
    stresc = _texts(tr, _col(tr, "TRSTRESC"))
    orres = _texts(tr, _col(tr, "TRORRES"))
    stat = [s.upper() for s in _texts(tr, _col(tr, "TRSTAT"))]
    treval = _texts(tr, _col(tr, "TREVAL"))
    readers = _texts(tr, _col(tr, "TREVALID"))
    acpt = [s.upper() for s in _texts(tr, _col(tr, "TRACPTFL"))]
    visit_col = _col(tr, "VISITNUM", "VISIT")
    visits = [_code_text(v) for v in _texts(tr, visit_col)]
    stresn_col = _col(tr, "TRSTRESN")

    keep = np.ones(n_tr, dtype=bool)
    for i in range(n_tr):
        if treval[i] and not _same(treval[i], evaluator):
            report.add(tr_name, i + 1, subj[i], "dropped", rule="other_evaluator",
                       reason=f"TREVAL {treval[i]} (reading {evaluator})")
            keep[i] = False
    if n_tr and not keep.any():
        raise DataError(
            f"TR ({tr_name}) has no records of evaluator {evaluator!r} (TREVAL found: "
            f"{', '.join(sorted(set(treval)))})",
            column="TREVAL",
            fix="choose one of those with --evaluator (API: evaluator=)",
        )
    accepted_subjects = {subj[i] for i in range(n_tr) if keep[i] and acpt[i] == "Y"}
    for i in range(n_tr):
        if keep[i] and subj[i] in accepted_subjects and acpt[i] != "Y":
            report.add(tr_name, i + 1, subj[i], "dropped", rule="not_accepted",
                       reason="TRACPTFL is not Y (another read of this subject was accepted)")
            keep[i] = False

    # dates
    dates: list[_dt.date | None] = [None] * n_tr
    notes = [""] * n_tr
    for i in range(n_tr):
        if keep[i]:
            dates[i], notes[i] = _date_or_fail(
                tr["TRDTC"].iloc[i], row=i + 1, subject=subj[i], column="TRDTC", partial="first"
            )
    if assessment_date == "visit" and visit_col is not None:
        vdate: dict[tuple[str, str, str], _dt.date] = {}
        for i in range(n_tr):
            if keep[i] and dates[i] is not None and visits[i]:
                k = (subj[i], readers[i], visits[i])
                vdate[k] = min(dates[i], vdate.get(k, dates[i]))
        for i in range(n_tr):
            k = (subj[i], readers[i], visits[i])
            if keep[i] and visits[i] and k in vdate:
                if dates[i] != vdate[k]:
                    notes[i] = (notes[i] + "; " if notes[i] else "") + (
                        f"day of visit {visits[i]} (earliest TRDTC {vdate[k]}) used"
                    )
                dates[i] = vdate[k]
    elif assessment_date not in ("visit", "record"):
        raise ValueError(f"assessment_date must be 'visit' or 'record', got {assessment_date!r}")

    # lesion records
    records: dict[tuple[str, str, str, float], dict] = {}
    sumdiam: list[tuple[int, str, str, float, float]] = []

    def value_of(i: int) -> float:
        raw = tr[stresn_col].iloc[i] if stresn_col else (stresc[i] or orres[i])
        x = _number(raw)
        if x is None:  # text in TRSTRESN: TRSTRESC may still hold the number
            x = _number(stresc[i]) if stresn_col else None
            x = None if x is not None and math.isnan(x) else x
        if x is None:
            raise DataError(
                "non-numeric diameter",
                row=i + 1,
                subject=subj[i],
                column=stresn_col or "TRSTRESC",
                value=_show(raw),
                fix="write the diameter in mm in TRSTRESN (TOO SMALL TO MEASURE: 5)",
            )
        if not math.isnan(x) and x < 0:
            raise DataError(
                "diameter must be >= 0 mm",
                row=i + 1,
                subject=subj[i],
                column=stresn_col or "TRSTRESC",
                value=_show(x),
                fix="write the diameter in mm",
            )
        return x

    for i in range(n_tr):
        if not keep[i]:
            continue
        r = i + 1
        if dates[i] is None:
            report.add(tr_name, r, subj[i], "dropped", rule="no_date",
                       reason="no TRDTC and no dated record at the same visit")
            keep[i] = False
            continue
        day = float((dates[i] - _ref_for(ref, subj[i], r, "TR")).days)
        if test[i] == "SUMDIAM":
            sumdiam.append((i, subj[i], readers[i], day, value_of(i)))
            continue
        if test[i] not in _MEASURE_TESTS + _STATE_TESTS:
            report.add(tr_name, r, subj[i], "dropped", rule="tr_other_test",
                       reason=f"TRTESTCD {test[i]} is not used by RECIST 1.1")
            continue
        # resolve the lesion: plain, split fragment (T04.1) or merged (T02/T03)
        if (subj[i], lnk[i]) in lesion_meta:
            ids, kind = [lnk[i]], "plain"
        elif "." in lnk[i] and (subj[i], lnk[i].split(".")[0]) in lesion_meta:
            ids, kind = [lnk[i].split(".")[0]], "fragment"
        elif "/" in lnk[i] and all((subj[i], p) in lesion_meta for p in lnk[i].split("/")):
            ids, kind = lnk[i].split("/"), "merged"
        else:
            raise DataError(
                f"TR record links to lesion {lnk[i]!r}, which TU does not identify",
                row=r,
                subject=subj[i],
                column="TRLNKID",
                value=lnk[i],
                fix="add the lesion to TU (same USUBJID and TULNKID) or correct TRLNKID",
            )
        meta = lesion_meta[(subj[i], ids[0])]
        rec = records.setdefault(
            (subj[i], readers[i], ids[0], day),
            dict(
                meta,
                subject=subj[i],
                reader=readers[i],
                lesion_id=ids[0],
                day=day,
                parts=[],
                state="",
                hint="",
                row=r,
                measured_row=None,
                state_row=None,
            ),
        )
        reason = notes[i]
        if test[i] in _STATE_TESTS:
            s = _STATE_MAP.get(_norm_key(stresc[i] or orres[i]))
            if stat[i] == "NOT DONE":
                s = "not_evaluated"
            if s is None:
                raise DataError(
                    "unknown lesion state",
                    row=r,
                    subject=subj[i],
                    column="TRSTRESC",
                    value=stresc[i] or orres[i],
                    fix="use PRESENT, ABSENT, UNEQUIVOCAL, EQUIVOCAL or NOT EVALUABLE",
                )
            if rec["state_row"] is not None:
                raise DataError(
                    f"lesion {ids[0]} has two {test[i]} records on day {_show(day)} (also row "
                    f"{rec['state_row']})",
                    row=r,
                    subject=subj[i],
                    column="TRTESTCD",
                    value=test[i],
                    fix="keep one state record per lesion per assessment",
                )
            rec["state"], rec["state_row"] = s, r
            if rec["measured_row"] is None:
                rec["row"] = r
            report.add(tr_name, r, subj[i], "used", reason=reason)
            continue
        # measurements
        node = meta["is_node"]
        wanted = "LPERP" if node else "LDIAM"
        if test[i] != "DIAMETER" and test[i] != wanted:
            why = (
                "RECIST uses the short axis (LPERP) of a nodal lesion"
                if node
                else "RECIST uses the longest diameter (LDIAM) of a non-nodal lesion"
            )
            report.add(tr_name, r, subj[i], "dropped", rule="other_axis",
                       reason=f"{test[i]} of lesion {lnk[i]}: {why}")
            continue
        x = value_of(i)
        text = _norm_key(stresc[i] or orres[i])
        hint = ""
        if stat[i] == "NOT DONE":
            x, hint = math.nan, "not_evaluated"
        elif text in ("too small to measure", "too small", "tstm"):
            hint = "too_small"
        elif text in ("not evaluable", "not evaluated", "ne"):
            x, hint = math.nan, "not_evaluated"
        if kind != "fragment" and rec["measured_row"] is not None:
            raise DataError(
                f"lesion {ids[0]} is measured twice on day {_show(day)} (also row "
                f"{rec['measured_row']})",
                row=r,
                subject=subj[i],
                column="TRLNKID",
                value=lnk[i],
                fix="keep one measurement per lesion per assessment",
            )
        rec["parts"].append(x)
        rec["hint"] = rec["hint"] or hint
        rec["measured_row"] = rec["measured_row"] or r
        rec["row"] = rec["measured_row"]
        if kind == "fragment":
            reason = (reason + "; " if reason else "") + f"fragment of split lesion {ids[0]}"
        if kind == "merged":
            reason = (reason + "; " if reason else "") + (
                f"merged lesion: value assigned to {ids[0]}, 0 mm to {', '.join(ids[1:])}"
            )
            for other in ids[1:]:
                om = lesion_meta[(subj[i], other)]
                records.setdefault(
                    (subj[i], readers[i], other, day),
                    dict(
                        om,
                        subject=subj[i],
                        reader=readers[i],
                        lesion_id=other,
                        day=day,
                        parts=[0.0],
                        state="absent",
                        hint="",
                        row=r,
                        measured_row=r,
                        state_row=None,
                    ),
                )
        report.add(tr_name, r, subj[i], "used", reason=reason)

    rows_out = []
    for rec in records.values():
        parts = rec["parts"]
        diam = math.nan if not parts or any(math.isnan(p) for p in parts) else float(sum(parts))
        state = rec["state"] or rec["hint"]
        rows_out.append(
            {
                "subject": rec["subject"],
                "day": rec["day"],
                "lesion_id": rec["lesion_id"],
                "lesion_type": rec["lesion_type"],
                "organ": rec["organ"],
                "is_node": rec["is_node"],
                "diameter_mm": diam,
                "state": state,
                "reader": rec["reader"],
                "row": rec["row"],
                "source": tr_name,
            }
        )
    frame = pd.DataFrame(rows_out, columns=list(LESION_COLUMNS))
    frame = frame.sort_values(["row", "lesion_id"], kind="stable").reset_index(drop=True)
    lesions = validate_lesions(frame, all_errors=all_errors) if len(frame) else _empty_lesions()

    # SUMDIAM cross-check
    if sumdiam:
        derived: dict[tuple[str, str, float], float] = {}
        for rd in sorted(set(lesions["reader"])):
            part = lesions[lesions["reader"] == rd]
            for _, s in sld_series(part).iterrows():
                derived[(s["subject"], rd, s["day"])] = s["sld_mm"]
        for i, s, rd, day, x in sumdiam:
            d = derived.get((s, rd, day), math.nan)
            if math.isnan(d) or math.isnan(x):
                rule, why = "sumdiam_unchecked", "SUMDIAM not cross-checked (no derived SLD)"
            elif abs(d - x) <= 0.5:
                rule, why = "sumdiam_ok", "SUMDIAM agrees with the derived SLD"
            else:
                rule, why = (
                    "sumdiam_mismatch",
                    (
                        f"SUMDIAM {_show(x)} mm differs from the derived SLD {_show(d)} mm by more "
                        "than 0.5 mm (the derived SLD is used)"
                    ),
                )
            report.add(tr_name, i + 1, s, "used", rule=rule, reason=why)
    report._check_complete(tr_name, n_tr)

    # -- RS -------------------------------------------------------------------------------------
    resp_rows = []
    if "RS" in doms:
        rs, rs_name = doms["RS"]
        res_col = _col(rs, "RSSTRESC", "RSORRES")
        _need(rs, ["USUBJID", "RSTESTCD", res_col or "RSSTRESC", "RSDTC"], rs_name, "RS")
        rsubj = _texts(rs, "USUBJID")
        rtest = [t.upper() for t in _texts(rs, "RSTESTCD")]
        rres = [t.upper() for t in _texts(rs, res_col)]
        rcat = _texts(rs, _col(rs, "RSCAT"))
        reval = _texts(rs, _col(rs, "RSEVAL"))
        rreader = _texts(rs, _col(rs, "RSEVALID"))
        racpt = [s.upper() for s in _texts(rs, _col(rs, "RSACPTFL"))]
        rvisit = _texts(rs, _col(rs, "VISIT", "VISITNUM"))
        acc = {rsubj[i] for i in range(len(rs)) if racpt[i] == "Y"}
        for i in range(len(rs)):
            r = i + 1
            if rtest[i] != "OVRLRESP":
                report.add(
                    rs_name,
                    r,
                    rsubj[i],
                    "dropped",
                    rule="rs_other_test",
                    reason=f"RSTESTCD {rtest[i]}: only OVRLRESP is read (the RECIST "
                    "engine derives target/non-target responses)",
                )
                continue
            if criteria is not None and rcat[i] and not _same(rcat[i], criteria):
                report.add(rs_name, r, rsubj[i], "dropped", rule="other_criteria",
                           reason=f"RSCAT {rcat[i]} (reading {criteria})")
                continue
            if reval[i] and not _same(reval[i], evaluator):
                report.add(rs_name, r, rsubj[i], "dropped", rule="other_evaluator",
                           reason=f"RSEVAL {reval[i]} (reading {evaluator})")
                continue
            if rsubj[i] in acc and racpt[i] != "Y":
                report.add(rs_name, r, rsubj[i], "dropped", rule="not_accepted",
                           reason="RSACPTFL is not Y (another read was accepted)")
                continue
            d, note = _date_or_fail(
                rs["RSDTC"].iloc[i], row=r, subject=rsubj[i], column="RSDTC", partial="first"
            )
            if d is None:
                report.add(
                    rs_name, r, rsubj[i], "dropped", rule="no_date", reason="RSDTC is missing"
                )
                continue
            day = float((d - _ref_for(ref, rsubj[i], r, "RS")).days)
            resp_rows.append(
                dict(
                    subject=rsubj[i],
                    day=day,
                    visit=rvisit[i],
                    response=rres[i],
                    criteria=rcat[i],
                    reader=rreader[i],
                    row=r,
                    source=rs_name,
                )
            )
            report.add(rs_name, r, rsubj[i], "used", reason=note)
        report._check_complete(rs_name, len(rs))
    responses = pd.DataFrame(
        resp_rows,
        columns=["subject", "day", "visit", "response", "criteria", "reader", "row", "source"],
    ).astype({"day": float, "row": np.int64})

    # -- EX (dosing) ----------------------------------------------------------------------------
    dose_rows = []
    if "EX" in doms:
        ex, ex_name = doms["EX"]
        esubj = _texts(ex, "USUBJID")
        dose_col = _col(ex, "EXDOSE")
        unit = _texts(ex, _col(ex, "EXDOSU"))
        trt = _texts(ex, _col(ex, "EXTRT"))
        for i in range(len(ex)):
            r = i + 1
            d, _ = _parse_date(ex["EXSTDTC"].iloc[i])
            amt = _number(ex[dose_col].iloc[i]) if dose_col else math.nan
            if d is None or amt is None or math.isnan(amt):
                why = "EXSTDTC is missing" if d is None else "EXDOSE is missing or not a number"
                report.add(ex_name, r, esubj[i], "dropped", rule="ex_incomplete", reason=why)
                continue
            day = float((d - _ref_for(ref, esubj[i], r, "EX")).days)
            note = "dose record"
            if ref[esubj[i]][1] == "EX.EXSTDTC" and day == 0:
                note = "dose record; first EXSTDTC = reference date (no DM RFXSTDTC/RFSTDTC)"
            dose_rows.append(
                dict(
                    subject=esubj[i],
                    day=day,
                    amt=amt,
                    unit=unit[i],
                    treatment=trt[i],
                    row=r,
                    source=ex_name,
                )
            )
            report.add(ex_name, r, esubj[i], "used", reason=note)
        report._check_complete(ex_name, len(ex))
    dosing = pd.DataFrame(
        dose_rows, columns=["subject", "day", "amt", "unit", "treatment", "row", "source"]
    ).astype({"day": float, "amt": float, "row": np.int64})

    # -- DM -------------------------------------------------------------------------------------
    tumour_subjects = set(lesions["subject"]) | set(responses["subject"])
    if "DM" in doms:
        dm, dm_name = doms["DM"]
        dsubj = _texts(dm, "USUBJID")
        for i, s in enumerate(dsubj):
            if s in tumour_subjects:
                src = ref.get(s, (None, "none"))[1]
                report.add(dm_name, i + 1, s, "used", reason=f"reference date from {src}")
            else:
                report.add(dm_name, i + 1, s, "dropped", rule="no_tumour_data",
                           reason="no tumour records for this subject")
        report._check_complete(dm_name, len(dm))

    used_ref = {
        s: ref[s][0].isoformat()
        for s in sorted(tumour_subjects | set(dosing["subject"]))
        if s in ref
    }
    for t in (lesions, responses, dosing):
        t.attrs["reference_dates"] = dict(used_ref)
    lesions.attrs["units"] = dict(_UNITS)
    responses.attrs["units"] = {"day": "day"}
    dosing.attrs["units"] = {"day": "day"}
    return SdtmData(lesions, responses, dosing, report)


def _empty_lesions() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series([], dtype=object) for c in LESION_COLUMNS})
    out = out.astype({"day": float, "is_node": bool, "diameter_mm": float, "row": np.int64})
    out.attrs["units"] = dict(_UNITS)
    return out
