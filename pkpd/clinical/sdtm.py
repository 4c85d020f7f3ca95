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
from ._cdisc import (
    _code_text,
    _col,
    _collect_domains,
    _need,
    _rows_frame,
    _same,
    _texts,
    _upper_texts,
)
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


class _Tr(NamedTuple):
    """The TR variables :func:`read_sdtm` uses, as text lists (index i = TR data row i + 1)."""

    df: pd.DataFrame
    name: str
    subj: list[str]
    lnk: list[str]
    test: list[str]
    stresc: list[str]
    orres: list[str]
    stat: list[str]
    treval: list[str]
    readers: list[str]
    acpt: list[str]
    visit_col: str | None
    visits: list[str]
    stresn_col: str | None


def _read_tu(
    tu_dom: tuple[pd.DataFrame, str], evaluator: str | None, report: DataReport
) -> dict[tuple[str, str], dict]:
    """TU -> {(USUBJID, TULNKID): lesion type, organ, is_node}; every TU row accounted for."""
    tu, tu_name = tu_dom
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
    return lesion_meta


def _tr_columns(tr: pd.DataFrame, tr_name: str) -> _Tr:
    """Check TR has the variables needed and read them as text."""
    _need(tr, ["USUBJID", "TRLNKID", "TRTESTCD", "TRDTC"], tr_name, "TR")
    if _col(tr, "TRSTRESN", "TRSTRESC", "TRORRES") is None:
        _need(tr, ["TRSTRESN"], tr_name, "TR")
    subj = _texts(tr, "USUBJID")
    lnk = _texts(tr, "TRLNKID")
    test = _upper_texts(tr, "TRTESTCD")
    stresc = _texts(tr, _col(tr, "TRSTRESC"))
    orres = _texts(tr, _col(tr, "TRORRES"))
    stat = _upper_texts(tr, _col(tr, "TRSTAT"))
    treval = _texts(tr, _col(tr, "TREVAL"))
    readers = _texts(tr, _col(tr, "TREVALID"))
    acpt = _upper_texts(tr, _col(tr, "TRACPTFL"))
    visit_col = _col(tr, "VISITNUM", "VISIT")
    visits = [_code_text(v) for v in _texts(tr, visit_col)]
    stresn_col = _col(tr, "TRSTRESN")
    return _Tr(tr, tr_name, subj, lnk, test, stresc, orres, stat, treval, readers, acpt,
               visit_col, visits, stresn_col)


def _tr_keep(c: _Tr, evaluator: str | None, report: DataReport) -> np.ndarray:
    """TR rows of ``evaluator`` and, for subjects with accepted reads, of the accepted read."""
    n_tr = len(c.df)
    subj, acpt = c.subj, c.acpt
    keep = np.ones(n_tr, dtype=bool)
    for i in range(n_tr):
        if c.treval[i] and not _same(c.treval[i], evaluator):
            report.add(c.name, i + 1, subj[i], "dropped", rule="other_evaluator",
                       reason=f"TREVAL {c.treval[i]} (reading {evaluator})")
            keep[i] = False
    if n_tr and not keep.any():
        raise DataError(
            f"TR ({c.name}) has no records of evaluator {evaluator!r} (TREVAL found: "
            f"{', '.join(sorted(set(c.treval)))})",
            column="TREVAL",
            fix="choose one of those with --evaluator (API: evaluator=)",
        )
    accepted_subjects = {subj[i] for i in range(n_tr) if keep[i] and acpt[i] == "Y"}
    for i in range(n_tr):
        if keep[i] and subj[i] in accepted_subjects and acpt[i] != "Y":
            report.add(c.name, i + 1, subj[i], "dropped", rule="not_accepted",
                       reason="TRACPTFL is not Y (another read of this subject was accepted)")
            keep[i] = False
    return keep


def _tr_dates(
    c: _Tr, keep: np.ndarray, assessment_date: str
) -> tuple[list[_dt.date | None], list[str]]:
    """The assessment date of each kept TR row (the visit's earliest TRDTC with
    ``assessment_date="visit"``) and its report note."""
    n_tr = len(c.df)
    subj, readers, visits = c.subj, c.readers, c.visits
    dates: list[_dt.date | None] = [None] * n_tr
    notes = [""] * n_tr
    for i in range(n_tr):
        if keep[i]:
            dates[i], notes[i] = _date_or_fail(
                c.df["TRDTC"].iloc[i], row=i + 1, subject=subj[i], column="TRDTC",
                partial="first",
            )
    if assessment_date == "visit" and c.visit_col is not None:
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
    return dates, notes


def _tr_value(c: _Tr, i: int) -> float:
    """The diameter (mm) of TR row i + 1: TRSTRESN, else the number in TRSTRESC/TRORRES."""
    stresn_col = c.stresn_col
    raw = c.df[stresn_col].iloc[i] if stresn_col else (c.stresc[i] or c.orres[i])
    x = _number(raw)
    if x is None:  # text in TRSTRESN: TRSTRESC may still hold the number
        x = _number(c.stresc[i]) if stresn_col else None
        x = None if x is not None and math.isnan(x) else x
    if x is None:
        raise DataError(
            "non-numeric diameter",
            row=i + 1,
            subject=c.subj[i],
            column=stresn_col or "TRSTRESC",
            value=_show(raw),
            fix="write the diameter in mm in TRSTRESN (TOO SMALL TO MEASURE: 5)",
        )
    if not math.isnan(x) and x < 0:
        raise DataError(
            "diameter must be >= 0 mm",
            row=i + 1,
            subject=c.subj[i],
            column=stresn_col or "TRSTRESC",
            value=_show(x),
            fix="write the diameter in mm",
        )
    return x


def _resolve_lesion(
    c: _Tr, i: int, lesion_meta: dict[tuple[str, str], dict]
) -> tuple[list[str], str]:
    """The TU lesion(s) of TR row i + 1: plain, split fragment (T04.1) or merged (T02/T03)."""
    subj, lnk = c.subj[i], c.lnk[i]
    if (subj, lnk) in lesion_meta:
        return [lnk], "plain"
    if "." in lnk and (subj, lnk.split(".")[0]) in lesion_meta:
        return [lnk.split(".")[0]], "fragment"
    if "/" in lnk and all((subj, p) in lesion_meta for p in lnk.split("/")):
        return lnk.split("/"), "merged"
    raise DataError(
        f"TR record links to lesion {lnk!r}, which TU does not identify",
        row=i + 1,
        subject=subj,
        column="TRLNKID",
        value=lnk,
        fix="add the lesion to TU (same USUBJID and TULNKID) or correct TRLNKID",
    )


def _lesion_record(
    meta: dict, subject: str, reader: str, lesion_id: str, day: float, row: int, *,
    parts: list[float], state: str, measured_row: int | None,
) -> dict:
    """A lesion-day record being assembled from TR rows."""
    return dict(
        meta,
        subject=subject,
        reader=reader,
        lesion_id=lesion_id,
        day=day,
        parts=parts,
        state=state,
        hint="",
        row=row,
        measured_row=measured_row,
        state_row=None,
    )


def _tr_state(c: _Tr, i: int, rec: dict, lesion_id: str, day: float) -> None:
    """Set the state of ``rec`` from the TUMSTATE/LNSTATE row i + 1."""
    r = i + 1
    s = _STATE_MAP.get(_norm_key(c.stresc[i] or c.orres[i]))
    if c.stat[i] == "NOT DONE":
        s = "not_evaluated"
    if s is None:
        raise DataError(
            "unknown lesion state",
            row=r,
            subject=c.subj[i],
            column="TRSTRESC",
            value=c.stresc[i] or c.orres[i],
            fix="use PRESENT, ABSENT, UNEQUIVOCAL, EQUIVOCAL or NOT EVALUABLE",
        )
    if rec["state_row"] is not None:
        raise DataError(
            f"lesion {lesion_id} has two {c.test[i]} records on day {_show(day)} (also row "
            f"{rec['state_row']})",
            row=r,
            subject=c.subj[i],
            column="TRTESTCD",
            value=c.test[i],
            fix="keep one state record per lesion per assessment",
        )
    rec["state"], rec["state_row"] = s, r
    if rec["measured_row"] is None:
        rec["row"] = r


def _tr_measurement(
    c: _Tr, i: int, rec: dict, ids: list[str], kind: str, day: float, reason: str,
    records: dict, lesion_meta: dict[tuple[str, str], dict], report: DataReport,
) -> None:
    """Add the diameter of TR row i + 1 to ``rec`` (0 mm to the others of a merged lesion)."""
    r = i + 1
    subj, test = c.subj[i], c.test[i]
    node = lesion_meta[(subj, ids[0])]["is_node"]
    wanted = "LPERP" if node else "LDIAM"
    if test != "DIAMETER" and test != wanted:
        why = (
            "RECIST uses the short axis (LPERP) of a nodal lesion"
            if node
            else "RECIST uses the longest diameter (LDIAM) of a non-nodal lesion"
        )
        report.add(c.name, r, subj, "dropped", rule="other_axis",
                   reason=f"{test} of lesion {c.lnk[i]}: {why}")
        return
    x = _tr_value(c, i)
    text = _norm_key(c.stresc[i] or c.orres[i])
    hint = ""
    if c.stat[i] == "NOT DONE":
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
            subject=subj,
            column="TRLNKID",
            value=c.lnk[i],
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
            records.setdefault(
                (subj, c.readers[i], other, day),
                _lesion_record(lesion_meta[(subj, other)], subj, c.readers[i], other, day, r,
                               parts=[0.0], state="absent", measured_row=r),
            )
    report.add(c.name, r, subj, "used", reason=reason)


def _tr_records(
    c: _Tr, keep: np.ndarray, dates: list[_dt.date | None], notes: list[str],
    lesion_meta: dict[tuple[str, str], dict], ref: dict[str, tuple[_dt.date, str]],
    report: DataReport,
) -> tuple[dict[tuple[str, str, str, float], dict], list[tuple[int, str, str, float, float]]]:
    """The lesion-day records of the kept TR rows, and the SUMDIAM rows
    ``(index, subject, reader, day, value)``."""
    subj, readers, test = c.subj, c.readers, c.test
    records: dict[tuple[str, str, str, float], dict] = {}
    sumdiam: list[tuple[int, str, str, float, float]] = []
    for i in range(len(c.df)):
        if not keep[i]:
            continue
        r = i + 1
        if dates[i] is None:
            report.add(c.name, r, subj[i], "dropped", rule="no_date",
                       reason="no TRDTC and no dated record at the same visit")
            keep[i] = False
            continue
        day = float((dates[i] - _ref_for(ref, subj[i], r, "TR")).days)
        if test[i] == "SUMDIAM":
            sumdiam.append((i, subj[i], readers[i], day, _tr_value(c, i)))
            continue
        if test[i] not in _MEASURE_TESTS + _STATE_TESTS:
            report.add(c.name, r, subj[i], "dropped", rule="tr_other_test",
                       reason=f"TRTESTCD {test[i]} is not used by RECIST 1.1")
            continue
        ids, kind = _resolve_lesion(c, i, lesion_meta)
        rec = records.setdefault(
            (subj[i], readers[i], ids[0], day),
            _lesion_record(lesion_meta[(subj[i], ids[0])], subj[i], readers[i], ids[0], day, r,
                           parts=[], state="", measured_row=None),
        )
        if test[i] in _STATE_TESTS:
            _tr_state(c, i, rec, ids[0], day)
            report.add(c.name, r, subj[i], "used", reason=notes[i])
            continue
        _tr_measurement(c, i, rec, ids, kind, day, notes[i], records, lesion_meta, report)
    return records, sumdiam


def _lesion_table(records: dict, tr_name: str, all_errors: bool) -> pd.DataFrame:
    """The canonical lesion table of the assembled records, validated."""
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
    return validate_lesions(frame, all_errors=all_errors) if len(frame) else _empty_lesions()


def _check_sumdiam(
    lesions: pd.DataFrame, sumdiam: list[tuple[int, str, str, float, float]], tr_name: str,
    report: DataReport,
) -> None:
    """Cross-check each SUMDIAM record against the SLD derived from the lesions (0.5 mm)."""
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


def _read_tr(
    tr_dom: tuple[pd.DataFrame, str],
    lesion_meta: dict[tuple[str, str], dict],
    ref: dict[str, tuple[_dt.date, str]],
    evaluator: str | None,
    assessment_date: str,
    all_errors: bool,
    report: DataReport,
) -> pd.DataFrame:
    """TR -> the canonical lesion table; every TR row accounted for."""
    c = _tr_columns(*tr_dom)
    keep = _tr_keep(c, evaluator, report)
    dates, notes = _tr_dates(c, keep, assessment_date)
    records, sumdiam = _tr_records(c, keep, dates, notes, lesion_meta, ref, report)
    lesions = _lesion_table(records, c.name, all_errors)
    if sumdiam:
        _check_sumdiam(lesions, sumdiam, c.name, report)
    report._check_complete(c.name, len(c.df))
    return lesions


_RESPONSE_COLUMNS = ("subject", "day", "visit", "response", "criteria", "reader", "row", "source")
_DOSING_COLUMNS = ("subject", "day", "amt", "unit", "treatment", "row", "source")


def _read_rs(
    rs_dom: tuple[pd.DataFrame, str] | None,
    ref: dict[str, tuple[_dt.date, str]],
    evaluator: str | None,
    criteria: str | None,
    report: DataReport,
) -> pd.DataFrame:
    """RS OVRLRESP records -> the response table; every RS row accounted for."""
    resp_rows = []
    if rs_dom is not None:
        rs, rs_name = rs_dom
        res_col = _col(rs, "RSSTRESC", "RSORRES")
        _need(rs, ["USUBJID", "RSTESTCD", res_col or "RSSTRESC", "RSDTC"], rs_name, "RS")
        rsubj = _texts(rs, "USUBJID")
        rtest = _upper_texts(rs, "RSTESTCD")
        rres = _upper_texts(rs, res_col)
        rcat = _texts(rs, _col(rs, "RSCAT"))
        reval = _texts(rs, _col(rs, "RSEVAL"))
        rreader = _texts(rs, _col(rs, "RSEVALID"))
        racpt = _upper_texts(rs, _col(rs, "RSACPTFL"))
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
    return _rows_frame(resp_rows, _RESPONSE_COLUMNS, {"day": float, "row": np.int64})


def _read_ex(
    ex_dom: tuple[pd.DataFrame, str] | None,
    ref: dict[str, tuple[_dt.date, str]],
    report: DataReport,
) -> pd.DataFrame:
    """EX records -> the dosing table; every EX row accounted for."""
    dose_rows = []
    if ex_dom is not None:
        ex, ex_name = ex_dom
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
    return _rows_frame(dose_rows, _DOSING_COLUMNS, {"day": float, "amt": float, "row": np.int64})


def _account_dm(
    dm_dom: tuple[pd.DataFrame, str] | None,
    ref: dict[str, tuple[_dt.date, str]],
    tumour_subjects: set[str],
    report: DataReport,
) -> None:
    """Account for every DM row: used (reference date) when the subject has tumour records."""
    if dm_dom is None:
        return
    dm, dm_name = dm_dom
    dsubj = _texts(dm, "USUBJID")
    for i, s in enumerate(dsubj):
        if s in tumour_subjects:
            src = ref.get(s, (None, "none"))[1]
            report.add(dm_name, i + 1, s, "used", reason=f"reference date from {src}")
        else:
            report.add(dm_name, i + 1, s, "dropped", rule="no_tumour_data",
                       reason="no tumour records for this subject")
    report._check_complete(dm_name, len(dm))


def _set_sdtm_attrs(
    lesions: pd.DataFrame,
    responses: pd.DataFrame,
    dosing: pd.DataFrame,
    ref: dict[str, tuple[_dt.date, str]],
    tumour_subjects: set[str],
) -> None:
    """Reference dates of the subjects used, and units, on the three tables."""
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
    lesion_meta = _read_tu(doms["TU"], evaluator, report)
    lesions = _read_tr(
        doms["TR"], lesion_meta, ref, evaluator, assessment_date, all_errors, report
    )
    responses = _read_rs(doms.get("RS"), ref, evaluator, criteria, report)
    dosing = _read_ex(doms.get("EX"), ref, report)
    tumour_subjects = set(lesions["subject"]) | set(responses["subject"])
    _account_dm(doms.get("DM"), ref, tumour_subjects, report)
    _set_sdtm_attrs(lesions, responses, dosing, ref, tumour_subjects)
    return SdtmData(lesions, responses, dosing, report)


def _empty_lesions() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series([], dtype=object) for c in LESION_COLUMNS})
    out = out.astype({"day": float, "is_node": bool, "diameter_mm": float, "row": np.int64})
    out.attrs["units"] = dict(_UNITS)
    return out
