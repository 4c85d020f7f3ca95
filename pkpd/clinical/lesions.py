"""Tumour (RECIST) data: the canonical lesion table, its readers, the SLD series and NONMEM files.

Tables
------
Lesion table (shared with the RECIST engine, :mod:`pkpd.clinical.recist`): a pandas DataFrame with
one row
per lesion per assessment and the columns :data:`LESION_COLUMNS`:

==============  =======  ==========================================================================
column          dtype    meaning
==============  =======  ==========================================================================
subject         str      subject identifier (text, never a float)
day             float    days since the first dose (day 0 = first dose); baseline scans have
                         day <= 0. Computed from dates (date - reference date), never from --DY
lesion_id       str      lesion identifier (TU.TULNKID), unique within a subject
lesion_type     str      ``"target"``, ``"nontarget"`` or ``"new"``
organ           str      organ / location (TU.TULOC); all lymph nodes count as one organ
is_node         bool     lymph node (short axis measured) or not (longest diameter)
diameter_mm     float    longest diameter (non-nodal) or short axis (nodal) in mm; NaN if none
state           str      ``""``, ``"present"``, ``"absent"``, ``"too_small"``, ``"not_evaluated"``,
                         ``"unequivocal"`` or ``"equivocal"``
reader          str      reader / evaluator id (TR.TREVALID), may be empty
row             int      1-based source data row (header excluded) for messages
source          str      source file name
==============  =======  ==========================================================================

``df.attrs["units"] == {"diameter_mm": "mm", "day": "day"}``; readers that compute days from dates
add ``df.attrs["reference_dates"] = {subject: "YYYY-MM-DD"}`` (the first-dose date, day 0).

SLD series (:func:`sld_series`): one row per subject and assessment day with ``subject, day,
sld_mm, n_target, n_assessed, complete, sld_partial_mm, n_too_small``.

Reader API
----------
Every reader returns a named tuple whose **last field is a** :class:`DataReport` that accounts for
every input row (used, or dropped with a reason):

* :func:`read_lesions` -> ``LesionData(lesions, report)``
* :func:`read_sdtm` -> ``SdtmData(lesions, responses, dosing, report)``
* :func:`read_adam` -> ``AdamData(sld, responses, pfs, report)``
* :func:`read_laleh_s1` -> ``LalehData(sld, report)``
* :func:`read_nonmem_tumour` -> ``NonmemTumourData(sld, dosing, report)``

Malformed input raises :class:`~pkpd.errors.DataError` naming the row, subject, column, value and
a fix. Conventions: ``../shared/docs/CONVENTIONS.md`` §1.7 (CENS/LIMIT) and §2 (CDISC).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError
from ._common import (
    _STATE_MAP,
    _TYPE_MAP,
    DataReport,
    _bool,
    _cell,
    _is_missing,
    _lower_columns,
    _norm_key,
    _number,
    _parse_date,
    _Problems,
    _read_table,
    _show,
    _text,
)

__all__ = ["LESION_COLUMNS", "REQUIRED_LESION_COLUMNS", "LESION_TYPES", "LESION_STATES",
           "SLD_COLUMNS", "TOO_SMALL_MM", "LesionData", "validate_lesions", "read_lesions",
           "read_subjects", "SUBJECT_COLUMNS", "sld_series"]


#: Canonical lesion-table columns, in order.
LESION_COLUMNS = (
    "subject",
    "day",
    "lesion_id",
    "lesion_type",
    "organ",
    "is_node",
    "diameter_mm",
    "state",
    "reader",
    "row",
    "source",
)
#: Columns a lesion-level file must have (``reader`` is optional; ``date`` + ``first_dose_date``
#: may replace ``day``).
REQUIRED_LESION_COLUMNS = LESION_COLUMNS[:8]
LESION_TYPES = ("target", "nontarget", "new")
LESION_STATES = ("", "present", "absent", "too_small", "not_evaluated", "unequivocal", "equivocal")
#: Columns of :func:`sld_series`.
SLD_COLUMNS = (
    "subject",
    "day",
    "sld_mm",
    "n_target",
    "n_assessed",
    "complete",
    "sld_partial_mm",
    "n_too_small",
)

#: RECIST 1.1 / CDISC value of a lesion that is present but too small to measure (TRSTRESN = 5).
TOO_SMALL_MM = 5.0
_UNITS = {"diameter_mm": "mm", "day": "day"}
_HEADER_HINT = ", ".join(REQUIRED_LESION_COLUMNS) + " (optional: reader; or date and "
_HEADER_HINT += "first_dose_date instead of day)"


class LesionData(NamedTuple):
    """Result of :func:`read_lesions`."""

    lesions: pd.DataFrame
    report: DataReport



def validate_lesions(df: pd.DataFrame, *, all_errors: bool = False) -> pd.DataFrame:
    """Check a lesion table and return it in canonical form (a new DataFrame).

    Parameters
    ----------
    df : pandas.DataFrame
        Columns :data:`REQUIRED_LESION_COLUMNS` (names case-insensitive), optionally ``reader``,
        ``row`` and ``source``; other columns are kept after the canonical ones.
    all_errors : bool, default False
        Raise one :class:`DataProblems` listing every problem row instead of a
        :class:`~pkpd.errors.DataError` for the first (which says how many more there are).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LESION_COLUMNS` (then any extra columns) with canonical dtypes and
        values: ``lesion_type`` in :data:`LESION_TYPES` (``NON-TARGET`` etc. accepted),
        ``state`` in :data:`LESION_STATES` (``TOO SMALL TO MEASURE``, ``NOT EVALUABLE`` ...
        accepted), ``is_node`` bool (true/false/1/0/Y/N/yes/no). ``attrs["units"]`` is set and
        ``attrs["reference_dates"]`` kept.

    Raises
    ------
    DataError
        Missing columns (listing them and the expected header), a missing subject, day or
        lesion id, a non-numeric or negative diameter or day, an unknown lesion type, state or
        nodal flag, the same lesion twice on one day (for one reader), or a lesion whose type or
        nodal flag changes between assessments.
    """
    problems = _Problems("the lesion table", all_errors)
    out = _validate_lesions(df, problems)
    problems.finish()
    return out


def _validate_lesions(df: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    """:func:`validate_lesions`, adding row problems to ``problems`` (the caller finishes it);
    table-level problems (missing columns, bad row numbers) are raised at once."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_lesions needs a pandas DataFrame, got {type(df)!r}")
    frame = _lower_columns(df, "lesion table")
    missing = [c for c in REQUIRED_LESION_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise DataError(
            f"the lesion table is missing the column(s) {', '.join(missing)} (columns found: "
            f"{found})",
            column=missing[0],
            fix=f"use the header {_HEADER_HINT}",
        )
    n = len(frame)
    if "row" in frame.columns:
        rows = np.array([_number(v) for v in frame["row"]], dtype=float)
        if np.isnan(rows).any() or (rows < 1).any() or (rows != np.round(rows)).any():
            raise DataError(
                "column row must hold the 1-based source row numbers (positive whole numbers)",
                column="row",
                fix="drop the row column (it is filled in) or rename your own column",
            )
        rows = rows.astype(np.int64)
    else:
        rows = np.arange(1, n + 1, dtype=np.int64)
    sources = [_cell(v) for v in frame["source"]] if "source" in frame.columns else [""] * n
    readers = [_cell(v) for v in frame["reader"]] if "reader" in frame.columns else [""] * n
    out = _lesion_cells(frame, rows, sources, problems)
    out["reader"] = pd.Series(readers, dtype=object)
    out["row"] = rows
    out["source"] = pd.Series(sources, dtype=object)
    out = out[list(LESION_COLUMNS)]
    ok = np.array([not problems.has(r) for r in rows], dtype=bool)
    _check_lesion_consistency(out, ok, problems)

    extra = [c for c in frame.columns if c not in LESION_COLUMNS]
    for c in extra:
        out[c] = frame[c].to_numpy()
    out.attrs["units"] = dict(_UNITS)
    ref = df.attrs.get("reference_dates")
    if ref:
        out.attrs["reference_dates"] = dict(ref)
    return out


def _lesion_cells(
    frame: pd.DataFrame, rows: np.ndarray, sources: list[str], problems: _Problems
) -> pd.DataFrame:
    """The per-row checks of :func:`validate_lesions`, column by column; a bad cell is reported
    to ``problems`` and left as a placeholder (NaN, "", False)."""
    n = len(frame)
    subjects = [_cell(v) for v in frame["subject"]]

    def fail(i, problem, column, value, fix):
        problems.add(problem, row=int(rows[i]), subject=subjects[i] or None, column=column,
                     value=value, fix=fix, source=sources[i])

    for i, s in enumerate(subjects):
        if not s:
            fail(i, "subject is missing", "subject", None,
                 "give every record the subject it belongs to")
    days = np.full(n, np.nan)
    for i, v in enumerate(frame["day"]):
        x = _number(v)
        if x is None:
            fail(i, "non-numeric day", "day", _show(v),
                 "write the number of days since the first dose (or give date and "
                 "first_dose_date columns instead of day)")
        elif math.isnan(x):
            if not problems.has(rows[i], ("date", "first_dose_date")):  # no date to count from
                fail(i, "day is missing", "day", None, "give the assessment day of every record")
        elif not math.isfinite(x):
            fail(i, "day must be finite", "day", _show(v), "write a finite number of days")
        else:
            days[i] = x
    lesion_ids = [_cell(v) for v in frame["lesion_id"]]
    for i, s in enumerate(lesion_ids):
        if not s:
            fail(i, "lesion_id is missing", "lesion_id", None, "give every lesion an id")
    types = [_TYPE_MAP.get(_norm_key(v), "") for v in frame["lesion_type"]]
    for i, v in enumerate(frame["lesion_type"]):
        if not types[i]:
            fail(i, "unknown lesion_type", "lesion_type", _show(v), "use target, nontarget or new")
    nodes = np.zeros(n, dtype=bool)
    for i, v in enumerate(frame["is_node"]):
        b = _bool(v)
        if b is None:
            fail(i, "is_node must be true or false", "is_node", _show(v),
                 "write true/false, 1/0 or Y/N (true for lymph nodes, whose short axis is "
                 "measured)")
        else:
            nodes[i] = b
    diam = np.full(n, np.nan)
    for i, v in enumerate(frame["diameter_mm"]):
        x = _number(v)
        if x is None:
            fail(i, "non-numeric diameter", "diameter_mm", _show(v),
                 "write the diameter in mm as a number (empty if not measured) and put "
                 "too_small / absent / not_evaluated in the state column")
        elif not math.isnan(x) and (x < 0 or not math.isfinite(x)):
            fail(i, "diameter must be a finite number >= 0 mm", "diameter_mm", _show(x),
                 "write the measured diameter in mm (0 for a disappeared non-nodal lesion)")
        else:
            diam[i] = x
    states = [_STATE_MAP.get(_norm_key(_cell(v))) for v in frame["state"]]
    for i, v in enumerate(frame["state"]):
        if states[i] is None:
            fail(i, "unknown lesion state", "state", _show(v),
                 "use one of present, absent, too_small, not_evaluated, unequivocal, equivocal "
                 "(or leave it empty)")
            states[i] = ""
    return pd.DataFrame(
        {
            "subject": pd.Series(subjects, dtype=object),
            "day": days,
            "lesion_id": pd.Series(lesion_ids, dtype=object),
            "lesion_type": pd.Series(types, dtype=object),
            "organ": pd.Series([_cell(v) for v in frame["organ"]], dtype=object),
            "is_node": nodes,
            "diameter_mm": diam,
            "state": pd.Series(states, dtype=object),
        }
    )


def _check_lesion_consistency(out: pd.DataFrame, ok: np.ndarray, problems: _Problems) -> None:
    """Cross-row checks on the rows without a problem of their own (``ok``): the same lesion
    twice on one day (per reader), and a lesion whose type or nodal flag changes."""
    good = out.loc[ok]
    rows = out["row"].to_numpy()

    def fail(i, problem, column, value, fix):
        problems.add(problem, row=int(rows[i]), subject=out["subject"].iloc[i], column=column,
                     value=value, fix=fix, source=out["source"].iloc[i])

    key = ["subject", "reader", "lesion_id", "day"]
    dup = good[good.duplicated(key, keep=False)]
    for _, grp in dup.groupby(key, sort=False):
        first, *others = grp.index.tolist()
        lid = out["lesion_id"].iloc[first]
        fail(first,
             f"lesion {lid} is recorded more than once on day {_show(out['day'].iloc[first])} "
             f"(also row(s) {', '.join(str(int(rows[j])) for j in others)})",
             "lesion_id", lid,
             "keep one record per lesion per assessment (use the reader column when several "
             "readers assessed the same scan)")
    lesion = ["subject", "reader", "lesion_id"]
    for col in ("lesion_type", "is_node"):
        changes = good.groupby(lesion, sort=False)[col].transform("nunique") > 1
        for _, grp in good.loc[changes].groupby(lesion, sort=False):
            first = grp.index[0]
            lid = out["lesion_id"].iloc[first]
            changed = grp.index[(grp[col] != grp[col].iloc[0]).to_numpy()][0]
            vals = sorted(map(str, grp[col].unique()))
            fail(changed,
                 f"lesion {lid} changes {col} between assessments ({', '.join(vals)})",
                 col, _show(out[col].iloc[changed]),
                 f"give lesion {lid} the same {col} on every record (a new lesion gets its own "
                 "lesion_id)")



# ------------------------------------------------------------------------------------------------
# read_lesions
# ------------------------------------------------------------------------------------------------


def read_lesions(
    path: str | os.PathLike, *, sheet: str | int | None = None, all_errors: bool = False
) -> LesionData:
    """Read a lesion-level CSV or XLSX file into the canonical lesion table.

    Parameters
    ----------
    path : path-like
        ``.csv`` (UTF-8; comma, semicolon, tab or pipe separated, detected from the header; in a
        file that is not comma-separated, ``day`` and ``diameter_mm`` may use a decimal comma)
        or ``.xlsx``. Header (case-insensitive): ``subject, day, lesion_id, lesion_type, organ,
        is_node, diameter_mm, state`` and optionally ``reader``. Instead of ``day`` the file may
        give ``date`` and ``first_dose_date`` (ISO 8601); then ``day = date -
        first_dose_date`` in days. If both are given they must agree.
    sheet : str or int, optional
        Worksheet of an XLSX file (default: the first).
    all_errors : bool, default False
        Check every row and raise one :class:`DataProblems` listing every problem, instead of
        a :class:`~pkpd.errors.DataError` for the first (which says how many more there are).

    Returns
    -------
    LesionData
        ``(lesions, report)``: the table of :func:`validate_lesions` (``row`` = data row, 1 =
        first row under the header; ``source`` = file name; ``attrs["file_format"]`` says how
        the file was read) and a :class:`DataReport` (blank rows are dropped; all other rows
        are used).

    Raises
    ------
    DataError
        A missing, empty, non-UTF-8 or unreadable file, a file with no data rows, missing
        columns, unparseable dates, inconsistent first-dose dates, and everything
        :func:`validate_lesions` checks.
    """
    path = Path(path)
    raw = _read_table(path, "lesion file", sheet=sheet, numeric=("day", "diameter_mm"))
    fmt = dict(raw.attrs.get("file_format", {}))
    raw = _lower_columns(raw, f"file {path.name}")
    raw = raw.drop(
        columns=[
            c for c in raw.columns if c.startswith("unnamed:") and raw[c].map(_is_missing).all()
        ]
    )
    n = len(raw)
    rows = np.arange(1, n + 1, dtype=np.int64)
    report = DataReport(f"lesion file {path.name}")
    blank = raw.map(_is_missing).all(axis=1).to_numpy() if n else np.zeros(0, dtype=bool)
    if blank.all():
        raise DataError(
            f"lesion file {str(path)!r} has a header but no data rows"
            + (f" ({n} blank row{'s' if n != 1 else ''})" if n else ""),
            fix="give one row per lesion per assessment under the header",
        )
    _check_lesion_header(raw, path, fmt)
    subj_text = [_text(v) for v in raw["subject"]]
    report.add(path.name, rows[blank], np.asarray(subj_text, dtype=object)[blank], "dropped",
               rule="blank", reason="blank row")
    frame = raw.loc[~blank].reset_index(drop=True)
    frame["row"] = rows[~blank]
    frame["source"] = path.name
    problems = _Problems(f"lesion file {path.name}", all_errors)
    if "date" in frame.columns:
        frame = _days_from_dates(frame, path.name, problems)
    lesions = _validate_lesions(frame, problems)
    problems.finish()
    lesions.attrs["file_format"] = fmt
    report.add(path.name, lesions["row"].to_numpy(), lesions["subject"].to_numpy(), "used")
    report._check_complete(path.name, n)
    return LesionData(lesions, report)


def _check_lesion_header(raw: pd.DataFrame, path: Path, fmt: Mapping[str, object]) -> None:
    """The required columns of a lesion file, with how the file was read when they are missing
    (a wrong separator shows up as one long column name)."""
    need = [c for c in REQUIRED_LESION_COLUMNS if not (c == "day" and "date" in raw.columns)]
    missing = [c for c in need if c not in raw.columns]
    if "date" in raw.columns and "first_dose_date" not in raw.columns:
        raise DataError(
            f"{path.name} has a date column but no first_dose_date column",
            column="first_dose_date",
            fix="add first_dose_date (the date of the first dose, day 0) for every subject, "
            "or give day instead of date",
        )
    if not missing:
        return
    how = (f"read as {fmt['separator']}-separated; " if fmt.get("separator") else
           f"worksheet {fmt['worksheet']!r}; " if fmt.get("worksheet") is not None else "")
    found = ", ".join(repr(str(c)) for c in raw.columns) or "none"
    raise DataError(
        f"lesion file {path.name} is missing the column(s) {', '.join(missing)} ({how}"
        f"columns found: {found})",
        column=missing[0],
        fix=f"use the header {_HEADER_HINT}",
    )


def _days_from_dates(frame: pd.DataFrame, name: str, problems: _Problems) -> pd.DataFrame:
    """Replace ``date`` and ``first_dose_date`` by ``day = date - first_dose_date``; a bad or
    missing date is reported to ``problems`` and leaves the day empty."""
    has_day = "day" in frame.columns
    ref: dict[str, _dt.date] = {}
    days = np.full(len(frame), np.nan)
    for i in range(len(frame)):
        r = int(frame["row"].iloc[i])
        s = _text(frame["subject"].iloc[i])
        d = f = None
        for col in ("date", "first_dose_date"):
            try:
                value, _ = _parse_date(frame[col].iloc[i])
            except (ValueError, OverflowError):
                problems.add("unparseable date", row=r, subject=s or None, column=col,
                             value=_show(frame[col].iloc[i]),
                             fix="write dates as ISO 8601 YYYY-MM-DD", source=name)
                continue
            if value is None:
                problems.add(f"{col} is missing", row=r, subject=s or None, column=col,
                             fix="give the assessment date and the first-dose date on every "
                             "record", source=name)
            elif col == "date":
                d = value
            else:
                f = value
        if f is not None and s in ref and ref[s] != f:
            problems.add(
                f"first_dose_date differs between records of the subject ({ref[s]} before)",
                row=r, subject=s, column="first_dose_date", value=str(f),
                fix="give one first-dose date per subject", source=name)
            continue
        if f is not None:
            ref[s] = f
        if d is None or f is None:
            continue
        days[i] = (d - f).days
        given = _number(frame["day"].iloc[i]) if has_day else None
        if given is not None and not math.isnan(given) and given != days[i]:
            problems.add(
                f"day disagrees with date - first_dose_date = {int(days[i])}",
                row=r, subject=s, column="day", value=_show(given),
                fix="drop the day column (days are computed from the dates) or fix it",
                source=name)
    frame = frame.drop(columns=["date", "first_dose_date"])
    frame["day"] = days
    frame.attrs["reference_dates"] = {k: v.isoformat() for k, v in ref.items()}
    return frame


#: columns of a subjects file (:func:`read_subjects`); ``subject`` is required
SUBJECT_COLUMNS = ("subject", "death_day", "last_known_alive_day", "new_therapy_day")


def read_subjects(path: str | os.PathLike) -> pd.DataFrame:
    """Read a per-subject file for :func:`pkpd.clinical.recist.evaluate` (``pkpd recist
    --subjects``).

    The file (.csv with a comma, semicolon or tab, or .xlsx) has the columns
    :data:`SUBJECT_COLUMNS` (names case-insensitive; only ``subject`` is required). Days are
    since the first dose; a decimal comma is read in a file that is not comma-separated.
    Subject ids stay text (``001`` is not ``1``). Other columns are an error, so that a
    misspelt ``death_day`` is not silently ignored.

    Raises
    ------
    DataError
        A missing, empty, non-UTF-8 or unreadable file, no data rows, no ``subject`` column,
        or an unknown column.
    """
    path = Path(path)
    raw = _read_table(path, "subjects file", numeric=SUBJECT_COLUMNS[1:])
    fmt = raw.attrs.get("file_format", {})
    df = _lower_columns(raw, f"subjects file {path.name}")
    df = df.drop(columns=[c for c in df.columns
                          if c.startswith("unnamed:") and df[c].map(_is_missing).all()])
    how = f"read as {fmt['separator']}-separated; " if fmt.get("separator") else ""
    found = ", ".join(repr(str(c)) for c in raw.columns) or "none"
    if "subject" not in df.columns:
        raise DataError(
            f"subjects file {path.name} has no subject column ({how}columns found: {found})",
            column="subject",
            fix=f"use the header {', '.join(SUBJECT_COLUMNS)} (only subject is required)",
        )
    unknown = [c for c in df.columns if c not in SUBJECT_COLUMNS]
    if unknown:
        raise DataError(
            f"subjects file {path.name} has unknown column(s) {', '.join(unknown)}",
            column=unknown[0],
            fix=f"use only the columns {', '.join(SUBJECT_COLUMNS)} (check the spelling; remove "
            "other columns)",
        )
    blank = df.map(_is_missing).all(axis=1).to_numpy() if len(df) else np.zeros(0, dtype=bool)
    if blank.all():
        raise DataError(f"subjects file {str(path)!r} has a header but no data rows",
                        fix="give one row per subject under the header, or leave out --subjects")
    df = df.map(_cell)
    df.attrs["file_format"] = dict(fmt)
    df.attrs["source"] = path.name
    return df



# ------------------------------------------------------------------------------------------------
# sld_series
# ------------------------------------------------------------------------------------------------


def _lesion_value(diameter: float, state: str, is_node: bool, too_small_mm: float):
    """(value in mm or NaN if not assessed, too small to measure?) per CONVENTIONS §3.2.

    ``is_node`` does not change the rules: a node keeps its recorded short axis, and an absent
    lesion without a number is 0 mm (as in :mod:`pkpd.clinical.recist`).
    """
    del is_node
    if not math.isnan(diameter):
        return diameter, state == "too_small"
    if state == "too_small":
        return too_small_mm, True
    if state == "absent":
        return 0.0, False
    return math.nan, False


def _sld_row(subj, day, values, n_target) -> dict:
    """One SLD row from the ``(value, too small?)`` pairs of a subject's baseline targets."""
    vals = [v for v, _ in values if not math.isnan(v)]
    k = sum(1 for v, ts in values if ts and not math.isnan(v))
    partial = float(sum(vals)) if vals else math.nan
    complete = len(vals) == n_target
    return {
        "subject": subj,
        "day": float(day),
        "sld_mm": partial if complete else math.nan,
        "n_target": n_target,
        "n_assessed": len(vals),
        "complete": complete,
        "sld_partial_mm": partial,
        "n_too_small": k,
    }


def _subject_sld_rows(subj, g: pd.DataFrame, too_small_mm: float, out: list[dict]) -> None:
    """Append the SLD rows of one subject (its lesion records ``g``) to ``out``: baseline, then
    every later assessment day. Nothing for a subject without baseline target lesions."""
    readers = sorted(set(g["reader"]))
    if len(readers) > 1:
        raise DataError(
            f"subject {subj} has assessments from several readers ({', '.join(readers)})",
            subject=subj,
            column="reader",
            fix="compute the SLD per reader: sld_series(lesions[lesions.reader == 'R1'])",
        )
    days = np.sort(g["day"].unique())
    base_days = days[days <= 0]
    base_day = float(base_days.max()) if base_days.size else float(days[0])
    base = g[g["day"] <= base_day].sort_values("day", kind="stable")
    targets = list(dict.fromkeys(base.loc[base["lesion_type"] == "target", "lesion_id"]))
    if not targets:
        return
    value = {}  # (day, lesion_id) -> (mm or NaN, too small?)
    for d, lid, diam, state, node in zip(
        g["day"], g["lesion_id"], g["diameter_mm"], g["state"], g["is_node"]
    ):
        value[(d, lid)] = _lesion_value(float(diam), state, bool(node), too_small_mm)
    # baseline: the latest usable pre-dose value of each target
    values = []
    for lid in targets:
        chosen = (math.nan, False)
        for d in days[days <= base_day]:
            v = value.get((d, lid))
            if v is not None and not math.isnan(v[0]):
                chosen = v
        values.append(chosen)
    out.append(_sld_row(subj, base_day, values, len(targets)))
    for d in days[days > base_day]:
        out.append(
            _sld_row(
                subj, d, [value.get((d, lid), (math.nan, False)) for lid in targets], len(targets)
            )
        )


def sld_series(lesions: pd.DataFrame, *, too_small_mm: float = TOO_SMALL_MM) -> pd.DataFrame:
    """Per-subject sum of diameters (SLD) of the baseline target lesions at each assessment.

    Rules (CONVENTIONS §2.3 and §3.2; the same lesion values as
    :func:`pkpd.clinical.recist.evaluate`):

    * baseline = all records on or before day 0 (one assessment, which may span several scan
      days; each target lesion contributes its latest pre-dose value; the row's day is the last
      pre-dose day). A subject without records on or before day 0 gets its first assessment day
      as baseline. Baseline target lesions = lesions of type ``target`` recorded at baseline;
      subjects without any are left out (no measurable disease).
    * value of a lesion: the recorded diameter when there is one (nodes: short axis, even
      < 10 mm; a number recorded with state too_small is used as is); ``too_small`` without a
      number -> ``too_small_mm`` (5 mm); ``absent`` without a number -> 0 mm (a disappeared
      non-nodal lesion; a node keeps its recorded short axis when there is one); otherwise (not
      evaluated, no record, present or empty state without a number) the lesion is not assessed.
    * ``sld_mm`` = sum over the baseline target lesions when all of them were assessed
      (``complete``), else NaN; ``sld_partial_mm`` = sum over the assessed ones (NaN when none).
      New and non-target lesions do not enter the SLD; every assessment day of the subject gets
      a row.

    Parameters
    ----------
    lesions : pandas.DataFrame
        A lesion table (validated with :func:`validate_lesions`). One reader per subject.
    too_small_mm : float, default 5.0
        Value of a lesion present but too small to measure.

    Returns
    -------
    pandas.DataFrame
        :data:`SLD_COLUMNS`: ``subject, day, sld_mm, n_target, n_assessed, complete,
        sld_partial_mm, n_too_small`` (number of assessed baseline target lesions in state
        ``too_small``, with a recorded number or valued at ``too_small_mm``), sorted by subject
        (order of first appearance) and day. ``attrs["units"] = {"sld_mm": "mm",
        "sld_partial_mm": "mm", "day": "day"}``.

    Raises
    ------
    DataError
        Invalid lesion table, or several readers for one subject.
    """
    les = validate_lesions(lesions)
    out: list[dict] = []
    for subj, g in les.groupby("subject", sort=False):
        _subject_sld_rows(subj, g, too_small_mm, out)
    res = pd.DataFrame(out, columns=list(SLD_COLUMNS))
    res = res.astype(
        {
            "day": float,
            "sld_mm": float,
            "n_target": np.int64,
            "n_assessed": np.int64,
            "complete": bool,
            "sld_partial_mm": float,
            "n_too_small": np.int64,
        }
    )
    res["subject"] = res["subject"].astype(object)
    res.attrs["units"] = {"sld_mm": "mm", "sld_partial_mm": "mm", "day": "day"}
    return res
