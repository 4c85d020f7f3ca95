"""ADaM tumour datasets (ADTR, ADRS, ADTTE, ADSL) -> SLD series, responses and PFS
(:func:`read_adam`). Conventions: ``../shared/docs/CONVENTIONS.md`` §2.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError
from ._cdisc import _col, _need, _read_cdisc_table, _same, _texts
from ._common import DataReport, _date_or_fail, _number, _show, _text

__all__ = ["AdamData", "read_adam"]


class AdamData(NamedTuple):
    """Result of :func:`read_adam`."""

    sld: pd.DataFrame
    responses: pd.DataFrame
    pfs: pd.DataFrame
    report: DataReport



# ------------------------------------------------------------------------------------------------
# read_adam
# ------------------------------------------------------------------------------------------------

_TTE_FACTORS = {
    "DAYS": 1.0,
    "DAY": 1.0,
    "D": 1.0,
    "WEEKS": 7.0,
    "WEEK": 7.0,
    "MONTHS": 365.25 / 12,
    "MONTH": 365.25 / 12,
    "YEARS": 365.25,
    "YEAR": 365.25,
}


def _adam_one(source, name: str) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        df = source.copy()
        df.columns = [str(c).strip().upper() for c in df.columns]
        return df.reset_index(drop=True), name.lower()
    p = Path(source)
    return _read_cdisc_table(p, name), p.name


def _adam_refs(df: pd.DataFrame, adsl_ref: dict[str, _dt.date], name: str) -> list:
    """Per-row reference date: TRTSDT on the record (ADSL variable), else from adsl."""
    subj = _texts(df, "USUBJID")
    out = []
    for i in range(len(df)):
        d = None
        if "TRTSDT" in df.columns:
            d, _ = _date_or_fail(
                df["TRTSDT"].iloc[i], row=i + 1, subject=subj[i], column="TRTSDT", sas_numeric=True
            )
        if d is None:
            d = adsl_ref.get(subj[i])
        out.append(d)
    return out


def _adam_day(df, i, subj, refs, name, column="ADT"):
    """Day of row ``i`` (``column`` - TRTSDT, first dose = day 0); NaN when the date is empty."""
    d, _ = _date_or_fail(
        df[column].iloc[i], row=i + 1, subject=subj, column=column, sas_numeric=True
    )
    if d is None:
        return math.nan
    if refs[i] is None:
        raise DataError(
            "no first-dose date (TRTSDT) for the subject",
            row=i + 1,
            subject=subj,
            column="TRTSDT",
            fix="give TRTSDT on the records or pass adsl= with TRTSDT "
            "(ADY is not used for time arithmetic)",
        )
    return float((d - refs[i]).days)


def _adam_num(df, col, i, subj):
    """Number in ``col`` of row ``i`` (NaN when the column is absent or the cell empty)."""
    if col not in df.columns:
        return math.nan
    x = _number(df[col].iloc[i])
    if x is None:
        raise DataError(
            f"non-numeric {col}",
            row=i + 1,
            subject=subj,
            column=col,
            value=_show(df[col].iloc[i]),
            fix=f"write a number in {col}",
        )
    return x


def _adsl_refs(adsl, report: DataReport) -> dict[str, _dt.date]:
    """Read ADSL: first-dose date (TRTSDT) per subject; every row is reported as used."""
    adsl_ref: dict[str, _dt.date] = {}
    if adsl is not None:
        sl, sl_name = _adam_one(adsl, "adsl")
        _need(sl, ["USUBJID", "TRTSDT"], sl_name, "ADSL")
        ssubj = _texts(sl, "USUBJID")
        for i in range(len(sl)):
            d, _ = _date_or_fail(
                sl["TRTSDT"].iloc[i], row=i + 1, subject=ssubj[i], column="TRTSDT", sas_numeric=True
            )
            if d is not None:
                adsl_ref[ssubj[i]] = d
            report.add(sl_name, i + 1, ssubj[i], "used", reason="TRTSDT (day 0)")
    return adsl_ref


def _read_adtr(adtr, adsl_ref, report, evaluator, sld_params, keep_incomplete) -> list[dict]:
    """Read ADTR: the SLD records kept by the PARAMCD / PARCAT2 / ANL01FL rules."""
    sld_rows: list[dict] = []
    if adtr is None:
        return sld_rows
    tr, name = _adam_one(adtr, "adtr")
    _need(tr, ["USUBJID", "PARAMCD", "AVAL", "ADT"], name, "ADTR")
    subj = _texts(tr, "USUBJID")
    pc = [p.upper() for p in _texts(tr, "PARAMCD")]
    cat2 = _texts(tr, _col(tr, "PARCAT2"))
    anl = [a.upper() for a in _texts(tr, _col(tr, "ANL01FL"))]
    visit = _texts(tr, _col(tr, "AVISIT", "AVISITN"))
    refs = _adam_refs(tr, adsl_ref, name)
    wanted = [p.upper() for p in sld_params]
    for i in range(len(tr)):
        r = i + 1
        if pc[i] not in wanted:
            report.add(name, r, subj[i], "dropped", rule="other_param",
                       reason=f"PARAMCD {pc[i]}: the SLD is read from {'/'.join(wanted)}")
            continue
        if cat2[i] and not _same(cat2[i], evaluator):
            report.add(name, r, subj[i], "dropped", rule="other_evaluator",
                       reason=f"PARCAT2 {cat2[i]} (reading {evaluator})")
            continue
        complete = anl[i] == "Y" if "ANL01FL" in tr.columns else True
        if not complete and not keep_incomplete:
            report.add(
                name,
                r,
                subj[i],
                "dropped",
                rule="incomplete",
                reason="ANL01FL is not Y: not all baseline target lesions assessed "
                "(keep_incomplete=True keeps it)",
            )
            continue
        aval = _adam_num(tr, "AVAL", i, subj[i])
        day = _adam_day(tr, i, subj[i], refs, name)
        if math.isnan(day) or math.isnan(aval):
            report.add(name, r, subj[i], "dropped", rule="missing_value",
                       reason="ADT or AVAL is missing")
            continue
        sld_rows.append(
            dict(
                subject=subj[i],
                day=day,
                sld_mm=aval,
                complete=complete,
                base_mm=_adam_num(tr, "BASE", i, subj[i]),
                pchg=_adam_num(tr, "PCHG", i, subj[i]),
                nadir_mm=_adam_num(tr, "NADIR", i, subj[i]),
                visit=visit[i],
                paramcd=pc[i],
                row=r,
                source=name,
            )
        )
        report.add(name, r, subj[i], "used")
    report._check_complete(name, len(tr))
    return sld_rows


def _sld_frame(sld_rows: list[dict]) -> pd.DataFrame:
    """Assemble the SLD table; refuse two SLD records for one subject and day; sort."""
    sld = pd.DataFrame(
        sld_rows,
        columns=[
            "subject",
            "day",
            "sld_mm",
            "complete",
            "base_mm",
            "pchg",
            "nadir_mm",
            "visit",
            "paramcd",
            "row",
            "source",
        ],
    )
    sld = sld.astype({"day": float, "sld_mm": float, "complete": bool, "row": np.int64})
    dup = sld.duplicated(["subject", "day"], keep=False).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        same = sld[(sld["subject"] == sld["subject"].iloc[i]) & (sld["day"] == sld["day"].iloc[i])]
        raise DataError(
            f"two SLD records on day {_show(sld['day'].iloc[i])} (rows "
            f"{', '.join(map(str, same['row']))})",
            row=int(sld["row"].iloc[i]),
            subject=sld["subject"].iloc[i],
            column="PARAMCD",
            value=sld["paramcd"].iloc[i],
            fix="keep one SLD parameter per subject and date (e.g. sld_params=('SDIAM',))",
        )
    return sld.sort_values(["subject", "day"], kind="stable").reset_index(drop=True)


def _read_adrs(adrs, adsl_ref, report, evaluator, criteria, response_params) -> pd.DataFrame:
    """Read ADRS into the responses table (PARAMCD / PARCAT2 / PARCAT3 / ANL01FL rules)."""
    resp_rows = []
    if adrs is not None:
        rs, name = _adam_one(adrs, "adrs")
        _need(rs, ["USUBJID", "PARAMCD", "AVALC"], name, "ADRS")
        subj = _texts(rs, "USUBJID")
        pc = [p.upper() for p in _texts(rs, "PARAMCD")]
        cat2 = _texts(rs, _col(rs, "PARCAT2"))
        cat3 = _texts(rs, _col(rs, "PARCAT3"))
        anl = [a.upper() for a in _texts(rs, _col(rs, "ANL01FL"))]
        visit = _texts(rs, _col(rs, "AVISIT", "AVISITN"))
        refs = _adam_refs(rs, adsl_ref, name)
        with_anl = {pc[i] for i in range(len(rs)) if anl[i] == "Y"}
        wanted = [p.upper() for p in response_params]
        for i in range(len(rs)):
            r = i + 1
            if pc[i] not in wanted:
                report.add(name, r, subj[i], "dropped", rule="other_param",
                           reason=f"PARAMCD {pc[i]} not requested (response_params)")
                continue
            if cat2[i] and not _same(cat2[i], evaluator):
                report.add(name, r, subj[i], "dropped", rule="other_evaluator",
                           reason=f"PARCAT2 {cat2[i]} (reading {evaluator})")
                continue
            if cat3[i] and criteria is not None and not _same(cat3[i], criteria):
                report.add(name, r, subj[i], "dropped", rule="other_criteria",
                           reason=f"PARCAT3 {cat3[i]} (reading {criteria})")
                continue
            if pc[i] in with_anl and anl[i] != "Y":
                report.add(
                    name, r, subj[i], "dropped", rule="not_analysed", reason="ANL01FL is not Y"
                )
                continue
            day = _adam_day(rs, i, subj[i], refs, name) if "ADT" in rs.columns else math.nan
            resp_rows.append(
                dict(
                    subject=subj[i],
                    paramcd=pc[i],
                    day=day,
                    response=_text(rs["AVALC"].iloc[i]).upper(),
                    visit=visit[i],
                    row=r,
                    source=name,
                )
            )
            report.add(name, r, subj[i], "used")
        report._check_complete(name, len(rs))
    responses = pd.DataFrame(
        resp_rows, columns=["subject", "paramcd", "day", "response", "visit", "row", "source"]
    )
    return responses.astype({"day": float, "row": np.int64})


def _read_adtte(adtte, adsl_ref, report, tte_params) -> list[dict]:
    """Read ADTTE: the time-to-event records of ``tte_params``, AVAL converted to days."""
    tte_rows: list[dict] = []
    if adtte is None:
        return tte_rows
    te, name = _adam_one(adtte, "adtte")
    _need(te, ["USUBJID", "PARAMCD", "AVAL", "CNSR"], name, "ADTTE")
    subj = _texts(te, "USUBJID")
    pc = [p.upper() for p in _texts(te, "PARAMCD")]
    unit = [u.upper() for u in _texts(te, _col(te, "AVALU"))]
    evnt = _texts(te, _col(te, "EVNTDESC"))
    cnsd = _texts(te, _col(te, "CNSDTDSC"))
    refs = _adam_refs(te, adsl_ref, name)
    wanted = [p.upper() for p in tte_params]
    for i in range(len(te)):
        r = i + 1
        if pc[i] not in wanted:
            report.add(name, r, subj[i], "dropped", rule="other_param",
                       reason=f"PARAMCD {pc[i]} not requested (tte_params)")
            continue
        aval = _adam_num(te, "AVAL", i, subj[i])
        cnsr = _adam_num(te, "CNSR", i, subj[i])
        if math.isnan(aval) or math.isnan(cnsr):
            report.add(name, r, subj[i], "dropped", rule="missing_value",
                       reason="AVAL or CNSR is missing")
            continue
        factor = _TTE_FACTORS.get(unit[i] or "DAYS")
        if factor is None:
            raise DataError(
                "unknown AVALU",
                row=r,
                subject=subj[i],
                column="AVALU",
                value=unit[i],
                fix="use DAYS, WEEKS, MONTHS or YEARS",
            )
        day = (
            _adam_day(te, i, subj[i], refs, name) if "ADT" in te.columns and refs[i] else math.nan
        )
        tte_rows.append(
            dict(
                subject=subj[i],
                paramcd=pc[i],
                aval_days=aval * factor,
                cnsr=int(cnsr),
                event=int(cnsr == 0),
                day=day,
                description=evnt[i] or cnsd[i],
                row=r,
                source=name,
            )
        )
        note = "" if factor == 1.0 else f"AVAL in {unit[i]} converted to days"
        report.add(name, r, subj[i], "used", reason=note)
    report._check_complete(name, len(te))
    return tte_rows


def _pfs_frame(tte_rows: list[dict]) -> pd.DataFrame:
    """Assemble the PFS (time-to-event) table."""
    pfs = pd.DataFrame(
        tte_rows,
        columns=[
            "subject",
            "paramcd",
            "aval_days",
            "cnsr",
            "event",
            "day",
            "description",
            "row",
            "source",
        ],
    )
    return pfs.astype(
        {"aval_days": float, "cnsr": np.int64, "event": np.int64, "day": float, "row": np.int64}
    )


def read_adam(
    adtr=None,
    adrs=None,
    adtte=None,
    *,
    adsl=None,
    evaluator: str | None = "Investigator",
    criteria: str | None = "RECIST 1.1",
    sld_params: Sequence[str] = ("SDIAM", "SUMDIAM"),
    response_params: Sequence[str] = ("OVR", "BOR", "CBOR"),
    tte_params: Sequence[str] = ("PFS",),
    keep_incomplete: bool = False,
) -> AdamData:
    """Read ADaM ADTR / ADRS / ADTTE into tidy SLD, response and PFS tables.

    Days are ``ADT - TRTSDT`` (first dose = day 0) from dates; ``ADY`` is never used. TRTSDT is
    taken from the record (ADaM BDS datasets carry ADSL variables) or from ``adsl``. Dates may be
    ISO 8601 text, DATE9 text (01MAR2021), SAS date numbers (days since 1960-01-01) or dates.

    * ADTR: ``PARAMCD`` in ``sld_params`` (SDIAM, admiralonco, or SUMDIAM), ``PARCAT2`` equal
      to ``evaluator`` (case-insensitive; kept when PARCAT2 is absent or empty), ``ANL01FL ==
      "Y"`` (all baseline target lesions assessed) unless ``keep_incomplete``. Per-lesion
      parameters (LDIAMn, NLDIAMn) and other rows are dropped with a reason.
    * ADRS: ``PARAMCD`` in ``response_params``; PARCAT2 = evaluator, PARCAT3 = ``criteria``;
      where a parameter has ANL01FL = "Y" records, only those are kept.
    * ADTTE: ``PARAMCD`` in ``tte_params``; AVAL converted to days with AVALU (DAYS default).

    Parameters
    ----------
    adtr, adrs, adtte, adsl : path or DataFrame, optional
        ``.csv``, ``.xpt`` or ``.sas7bdat`` files, or DataFrames with the ADaM variable names.
    evaluator : str or None, default "Investigator"
        PARCAT2 value to keep (``"IRF"`` / ``"Independent Review Facility"`` ...); None keeps
        all.
    criteria : str or None, default "RECIST 1.1"
        PARCAT3 value of ADRS records to keep; None keeps all.
    sld_params, response_params, tte_params : sequence of str
        PARAMCD values to read.
    keep_incomplete : bool, default False
        Keep ADTR records with ANL01FL != "Y" (``complete`` is then False).

    Returns
    -------
    AdamData
        ``(sld, responses, pfs, report)``:

        * ``sld``: ``subject, day, sld_mm, complete, base_mm, pchg, nadir_mm, visit, paramcd,
          row, source``;
        * ``responses``: ``subject, paramcd, day, response, visit, row, source`` (day NaN when
          the record has no ADT, e.g. a BOR of NE);
        * ``pfs``: ``subject, paramcd, aval_days, cnsr, event, day, description, row, source``
          (``event`` = 1 when CNSR == 0; ``day`` = ADT - TRTSDT);
        * ``report``.

    Raises
    ------
    DataError
        Missing variables, unparseable dates or numbers, no TRTSDT for a subject, or two SLD
        records for one subject and day.
    """
    report = DataReport("ADaM")
    adsl_ref = _adsl_refs(adsl, report)
    # -- ADTR -----------------------------------------------------------------------------------
    sld = _sld_frame(
        _read_adtr(adtr, adsl_ref, report, evaluator, sld_params, keep_incomplete)
    )
    # -- ADRS -----------------------------------------------------------------------------------
    responses = _read_adrs(adrs, adsl_ref, report, evaluator, criteria, response_params)
    # -- ADTTE ----------------------------------------------------------------------------------
    pfs = _pfs_frame(_read_adtte(adtte, adsl_ref, report, tte_params))
    sld.attrs["units"] = {
        "sld_mm": "mm",
        "day": "day",
        "base_mm": "mm",
        "nadir_mm": "mm",
        "pchg": "%",
    }
    responses.attrs["units"] = {"day": "day"}
    pfs.attrs["units"] = {"aval_days": "day", "day": "day"}
    return AdamData(sld, responses, pfs, report)
