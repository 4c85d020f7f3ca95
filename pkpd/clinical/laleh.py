"""The Laleh et al. 2022 supplementary S1 workbook (SLD of five atezolizumab trials)
(:func:`read_laleh_s1`), with its documented cleaning rules (:data:`LALEH_RULES`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError
from ._common import DataReport, _is_missing, _norm_key, _number, _show, _text
from .lesions import TOO_SMALL_MM

__all__ = ["LALEH_COLUMNS", "LALEH_RULES", "LalehData", "read_laleh_s1", "laleh_s1_default_path"]


#: Columns of the Laleh S1 series (:func:`read_laleh_s1`).
LALEH_COLUMNS = (
    "study",
    "arm",
    "study_arm",
    "subject",
    "patient_id",
    "day",
    "sld_mm",
    "flag",
    "row",
    "sheet",
)

#: Documented rules of :func:`read_laleh_s1` (keys are the report's ``rule`` codes).
LALEH_RULES = {
    "not_evaluable": "NOT EVALUABLE -> kept as a not-evaluable assessment: sld_mm = NaN, flag "
    "NOT_EVALUABLE (RECIST NE); not written as an observation by write_nonmem_tumour",
    "too_small": "TOO SMALL TO MEASURE -> sld_mm = too_small_mm (default 5 mm, RECIST 1.1 / CDISC "
    "TRSTRESN; the published jmpost/RCONIS Stan fit uses 2 mm and also replaces 0 by 2 mm), "
    "flag TOO_SMALL_TO_MEASURE; write_nonmem_tumour writes it left-censored: CENS=1, DV=value, "
    "LIMIT=0",
    "missing_value": "empty diameter cell -> dropped (no measurement to use)",
    "missing_day": "empty Treatment_Day -> dropped (the value cannot be placed in time)",
    "duplicate": "same patient, day and value as an earlier row -> dropped (drop_duplicates=True)",
    "duplicate_day": "same patient and day as another row but a different value -> both kept, "
    "flag DUPLICATE_DAY (the file does not say which is right)",
    "zero": "0 mm (all target lesions gone) -> kept as 0 mm",
}


class LalehData(NamedTuple):
    """Result of :func:`read_laleh_s1`."""

    sld: pd.DataFrame
    report: DataReport



# ------------------------------------------------------------------------------------------------
# read_laleh_s1
# ------------------------------------------------------------------------------------------------

_LALEH_HEADER = ("patient_anonmyized", "treatment_day", "targetlesionlongdiam_mm", "study_arm")
_STUDY_ARM = re.compile(r"^Study_(\d+)_Arm_(\d+)$")


def laleh_s1_default_path() -> Path:
    """Where the Laleh et al. 2022 S1 workbook lives in this project's shared data."""
    repo = Path(__file__).resolve().parents[2]
    return (
        repo.parent
        / "shared"
        / "data"
        / "laleh2022_atezolizumab_sld"
        / "original"
        / "journal.pcbi.1009822.s006.xlsx"
    )


def _patient_id(v: object) -> str:
    """The anonymised id as text. The workbook stores int64 hashes as doubles (17 significant
    digits); int(double) keeps distinct cells distinct and matches the long CSV."""
    if isinstance(v, float | np.floating):
        x = float(v)
        return str(int(x)) if x.is_integer() else repr(x)
    return _text(v)


def _open_workbook(path: Path, what: str):
    """An openpyxl workbook (read-only, values), or a :class:`DataError` naming the file."""
    import zipfile

    import openpyxl

    from ..io import check_input_file

    check_input_file(path, what)
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{what} {str(path)!r} is not an Excel workbook (an .xlsx file is a zip archive; "
            "this one is not)",
            fix="give the .xlsx file itself",
        )
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged workbook can fail in many ways
        if isinstance(exc, MemoryError):
            raise
        raise DataError(
            f"{what} {str(path)!r} cannot be read as an Excel workbook "
            f"({type(exc).__name__}: {' '.join(str(exc).split())})",
            fix="give the original .xlsx file, or open it in Excel and save it again as .xlsx",
        ) from None


def _check_laleh_header(header, title: str) -> None:
    """Refuse a sheet whose first four header cells are not the S1 header."""
    names = tuple(_text(h).lower() for h in (header or ())[:4])
    if names != _LALEH_HEADER:
        raise DataError(
            f"sheet {title} does not have the S1 header",
            column="header",
            value=", ".join(_text(h) for h in (header or ())),
            fix="give the original S1 workbook (Patient_Anonmyized, Treatment_Day, "
            "TargetLesionLongDiam_mm, Study_Arm)",
        )


def _laleh_value(val_v, n: int, subject: str, too_small_mm: float):
    """Normalise a non-empty diameter cell: ``(sld_mm, flag, rule, reason)``."""
    flag, rule, reason = "", "", ""
    key_text = _norm_key(val_v)
    if key_text == "not evaluable":
        sld, flag, rule = math.nan, "NOT_EVALUABLE", "not_evaluable"
        reason = "NOT EVALUABLE -> sld_mm NaN (NE)"
    elif key_text == "too small to measure":
        sld, flag, rule = float(too_small_mm), "TOO_SMALL_TO_MEASURE", "too_small"
        reason = f"TOO SMALL TO MEASURE -> {_show(float(too_small_mm))} mm"
    else:
        x = _number(val_v)
        if x is None or math.isnan(x) or x < 0:
            raise DataError(
                "TargetLesionLongDiam_mm is not a diameter",
                row=n,
                subject=subject,
                column="TargetLesionLongDiam_mm",
                value=_show(val_v),
                fix="expected a number >= 0, NOT EVALUABLE or TOO SMALL TO MEASURE",
            )
        sld = x
        if x == 0:
            rule, reason = "zero", "0 mm kept as 0"
    return sld, flag, rule, reason


def _read_laleh_sheet(
    ws, src: str, report: DataReport, out: list, too_small_mm: float, drop_duplicates: bool
) -> int:
    """Read one study sheet: append its kept rows to ``out``, report the dropped ones, and
    return the number of data rows (used rows are reported by :func:`_laleh_frame`)."""
    it = ws.iter_rows(values_only=True)
    header = next(it, None)
    report.declare(src)
    _check_laleh_header(header, ws.title)
    seen: dict[tuple[str, float, str], int] = {}
    n = 0
    for n, cells in enumerate(it, start=1):
        cells = tuple(cells) + (None,) * (4 - len(cells))
        pid_v, day_v, val_v, arm_v = cells[:4]
        if all(_is_missing(c) for c in cells[:4]):
            report.add(src, n, "", "dropped", rule="blank", reason="blank row")
            continue
        study_arm = _text(arm_v)
        m = _STUDY_ARM.match(study_arm)
        if m is None:
            raise DataError(
                "Study_Arm is not of the form Study_<k>_Arm_<j>",
                row=n,
                column="Study_Arm",
                value=study_arm,
                fix=f"check sheet {ws.title}",
            )
        pid = _patient_id(pid_v)
        subject = f"{study_arm}:{pid}"
        if not pid:
            report.add(src, n, subject, "dropped", rule="missing_id",
                       reason="empty Patient_Anonmyized")
            continue
        day = _number(day_v)
        if day is None:
            raise DataError(
                "non-numeric Treatment_Day",
                row=n,
                subject=subject,
                column="Treatment_Day",
                value=_show(day_v),
                fix=f"check sheet {ws.title}",
            )
        if math.isnan(day):
            report.add(src, n, subject, "dropped", rule="missing_day",
                       reason=f"empty Treatment_Day (value {_show(val_v)!r})")
            continue
        if _is_missing(val_v):
            report.add(src, n, subject, "dropped", rule="missing_value",
                       reason="empty TargetLesionLongDiam_mm")
            continue
        sld, flag, rule, reason = _laleh_value(val_v, n, subject, too_small_mm)
        dkey = (subject, day, flag or repr(sld))
        if drop_duplicates and dkey in seen:
            report.add(
                src,
                n,
                subject,
                "dropped",
                rule="duplicate",
                reason=f"same patient, day and value as row {seen[dkey]} of {ws.title}",
            )
            continue
        seen.setdefault(dkey, n)
        out.append(
            dict(
                study=int(m[1]),
                arm=int(m[2]),
                study_arm=study_arm,
                subject=subject,
                patient_id=pid,
                day=day,
                sld_mm=sld,
                flag=flag,
                row=n,
                sheet=ws.title,
                _rule=rule,
                _reason=reason,
                _src=src,
            )
        )
    return n


def _laleh_frame(out: list[dict], report: DataReport) -> pd.DataFrame:
    """Assemble the kept rows: flag DUPLICATE_DAY, report the used rows, sort by subject (order
    of first appearance) and day."""
    sld = pd.DataFrame(out)
    if len(sld):
        # same patient and day, different value: keep both, flag them
        dd = sld.duplicated(["subject", "day"], keep=False).to_numpy()
        if dd.any():
            sld.loc[dd & (sld["flag"] == ""), "flag"] = "DUPLICATE_DAY"
            sld.loc[dd, "_rule"] = np.where(
                sld.loc[dd, "_rule"] == "", "duplicate_day", sld.loc[dd, "_rule"]
            )
            sld.loc[dd & (sld["_reason"] == ""), "_reason"] = (
                "another value on the same day; both kept, flag DUPLICATE_DAY"
            )
        for src, g in sld.groupby("_src", sort=False):
            report.add(src, g["row"].to_numpy(), g["subject"].to_numpy(), "used",
                       rule=g["_rule"].to_numpy(), reason=g["_reason"].to_numpy())
        order = {s: k for k, s in enumerate(pd.unique(sld["subject"]))}
        sld["_o"] = sld["subject"].map(order)
        sld = sld.sort_values(["_o", "day", "sheet", "row"], kind="stable")
        sld = sld.drop(columns=["_o", "_rule", "_reason", "_src"]).reset_index(drop=True)
    else:
        sld = pd.DataFrame(columns=list(LALEH_COLUMNS))
    return sld


def read_laleh_s1(
    path: str | os.PathLike | None = None,
    *,
    too_small_mm: float = TOO_SMALL_MM,
    drop_duplicates: bool = True,
) -> LalehData:
    """Read the Laleh et al. (2022) S1 workbook (five atezolizumab studies) into an SLD series.

    The workbook has one sheet per study (``Study1`` ... ``Study5``) with columns
    ``Patient_Anonmyized, Treatment_Day, TargetLesionLongDiam_mm, Study_Arm``. The value is read
    as the SLD (sum of target-lesion diameters; the magnitudes fit that reading, see
    PROVENANCE.md). Patients are keyed by study arm and id: ``subject =
    "Study_k_Arm_j:<id>"`` (9 ids occur in two arms).

    Rules (``LALEH_RULES``; each row of the report carries its rule code):

    * ``NOT EVALUABLE`` -> kept, ``sld_mm`` NaN, flag ``NOT_EVALUABLE`` (62 rows);
    * ``TOO SMALL TO MEASURE`` -> ``sld_mm = too_small_mm`` (5 mm per RECIST 1.1 / CDISC;
      the published jmpost/RCONIS Stan fit used 2 mm), flag ``TOO_SMALL_TO_MEASURE`` (54);
    * empty value -> dropped, rule ``missing_value`` (7);
    * empty day -> dropped, rule ``missing_day`` (1; its value is 0);
    * a row repeating an earlier row's patient, day and value -> dropped, rule ``duplicate``
      (when ``drop_duplicates``); same patient and day with a different value -> both kept,
      flag ``DUPLICATE_DAY``;
    * 0 mm is kept as 0 (rule ``zero``, all target lesions gone).

    Parameters
    ----------
    path : path-like, optional
        The xlsx; default :func:`laleh_s1_default_path`.
    too_small_mm : float, default 5.0
        Value given to TOO SMALL TO MEASURE.
    drop_duplicates : bool, default True
        Drop exact repeats (same patient, day and value).

    Returns
    -------
    LalehData
        ``(sld, report)``. ``sld`` has :data:`LALEH_COLUMNS` (``row`` = data row within the
        sheet, 1 = Excel row 2), sorted by subject (order of first appearance) then day. The
        report lists all 8,560 rows (source ``<file>:<sheet>``).
    """

    path = Path(path) if path is not None else laleh_s1_default_path()
    if not path.exists():
        raise DataError(
            f"Laleh S1 workbook not found: {str(path)!r}",
            fix="pass path= to the journal.pcbi.1009822.s006.xlsx file",
        )
    report = DataReport(f"Laleh et al. 2022 S1 ({path.name})", LALEH_RULES)
    wb = _open_workbook(path, "Laleh S1 workbook")
    out: list[dict] = []
    counts: dict[str, int] = {}  # data rows per sheet; used rows are reported below
    try:
        for ws in wb.worksheets:
            src = f"{path.name}:{ws.title}"
            counts[src] = _read_laleh_sheet(ws, src, report, out, too_small_mm, drop_duplicates)
    finally:
        wb.close()
    sld = _laleh_frame(out, report)
    for src, n_rows in counts.items():
        report._check_complete(src, n_rows)
    sld = sld[list(LALEH_COLUMNS)].astype({"day": float, "sld_mm": float, "row": np.int64})
    sld.attrs["units"] = {"sld_mm": "mm", "day": "day"}
    return LalehData(sld, report)
