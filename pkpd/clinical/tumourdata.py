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
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError, format_problem

__all__ = [
    "LESION_COLUMNS",
    "REQUIRED_LESION_COLUMNS",
    "LESION_TYPES",
    "LESION_STATES",
    "SLD_COLUMNS",
    "LALEH_COLUMNS",
    "LALEH_RULES",
    "TOO_SMALL_MM",
    "DataReport",
    "DataProblems",
    "PROBLEM_COLUMNS",
    "LesionData",
    "SdtmData",
    "AdamData",
    "LalehData",
    "NonmemTumourData",
    "validate_lesions",
    "read_lesions",
    "read_subjects",
    "SUBJECT_COLUMNS",
    "read_sdtm",
    "read_adam",
    "read_laleh_s1",
    "sld_series",
    "write_nonmem_tumour",
    "read_nonmem_tumour",
    "laleh_s1_default_path",
]

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
#: RECIST 1.1 / CDISC value of a lesion that is present but too small to measure (TRSTRESN = 5).
TOO_SMALL_MM = 5.0
_UNITS = {"diameter_mm": "mm", "day": "day"}
_HEADER_HINT = ", ".join(REQUIRED_LESION_COLUMNS) + " (optional: reader; or date and "
_HEADER_HINT += "first_dose_date instead of day)"

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

_MISSING_TOKENS = frozenset({"", ".", "na", "nan", "n/a", "none", "null"})


# ------------------------------------------------------------------------------------------------
# DataReport
# ------------------------------------------------------------------------------------------------


class DataReport:
    """Account for every input row of a reader: used, or dropped with a reason.

    Each input row appears exactly once, identified by ``(source, row)``; ``row`` is the 1-based
    data row (header excluded) of that source (a file, or ``file:sheet``).

    Attributes
    ----------
    title : str
        What was read.
    rules : dict of str to str
        The documented rule behind each ``rule`` code that appears in the report.

    Examples
    --------
    >>> r = DataReport("demo")
    >>> r.add("a.csv", [1, 2], ["S1", "S1"], "used")
    >>> r.add("a.csv", 3, "S2", "dropped", rule="blank", reason="blank row")
    >>> r.n_used, r.n_dropped
    (2, 1)
    """

    _COLUMNS = ("source", "row", "subject", "status", "rule", "reason")

    def __init__(self, title: str = "", rules: Mapping[str, str] | None = None):
        self.title = title
        self.rules: dict[str, str] = dict(rules or {})
        self._parts: list[pd.DataFrame] = []
        self._frame: pd.DataFrame | None = None
        self._sources: dict[str, int] = {}

    def declare(self, source: str) -> None:
        """Fix the position of a source in :meth:`to_frame` (default: order of first rows)."""
        self._sources.setdefault(str(source), len(self._sources))

    def add(
        self,
        source: object,
        rows: object,
        subjects: object,
        status: Literal["used", "dropped"],
        *,
        rule: object = "",
        reason: object = "",
    ) -> None:
        """Record rows (scalars are broadcast to the length of ``rows``)."""
        if status not in ("used", "dropped"):
            raise ValueError(f"status must be 'used' or 'dropped', got {status!r}")
        rows_a = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        n = len(rows_a)
        if n == 0:
            return

        def col(v):
            if isinstance(v, str) or not isinstance(v, Iterable):
                return [v] * n
            out = list(v)
            if len(out) != n:
                raise ValueError("DataReport.add: all arguments must have the length of rows")
            return out

        sources = [str(s) for s in col(source)]
        for src in dict.fromkeys(sources):
            self.declare(src)
        part = pd.DataFrame(
            {
                "source": sources,
                "row": rows_a,
                "subject": ["" if s is None else str(s) for s in col(subjects)],
                "status": status,
                "rule": [str(s) for s in col(rule)],
                "reason": [str(s) for s in col(reason)],
            }
        )
        self._parts.append(part)
        self._frame = None

    def extend(self, other: DataReport) -> None:
        """Append the rows (and rules) of another report."""
        for src in other._sources:
            self.declare(src)
        self._parts.extend(other._parts)
        self.rules.update(other.rules)
        self._frame = None

    def to_frame(self) -> pd.DataFrame:
        """One row per input row: ``source, row, subject, status, rule, reason``.

        Sorted by source (in the order the reader met them) and row.
        """
        if self._frame is None:
            if self._parts:
                frame = pd.concat(self._parts, ignore_index=True)
                key = frame["source"].map(self._sources)
                frame = frame.iloc[np.lexsort((frame["row"].to_numpy(), key.to_numpy()))]
                frame = frame.reset_index(drop=True)
            else:
                frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in self._COLUMNS})
                frame["row"] = frame["row"].astype(np.int64)
            self._frame = frame[list(self._COLUMNS)]
        return self._frame.copy()

    @property
    def n_rows(self) -> int:
        return int(sum(len(p) for p in self._parts))

    @property
    def n_used(self) -> int:
        return int(sum((p["status"] == "used").sum() for p in self._parts))

    @property
    def n_dropped(self) -> int:
        return self.n_rows - self.n_used

    def dropped(self) -> pd.DataFrame:
        """The dropped rows with their reasons."""
        f = self.to_frame()
        return f[f["status"] == "dropped"].reset_index(drop=True)

    def counts(self) -> pd.DataFrame:
        """Number of rows per ``(status, rule)``."""
        f = self.to_frame()
        return (
            f.groupby(["status", "rule"], sort=True).size().rename("n").reset_index()
            if len(f)
            else pd.DataFrame({"status": [], "rule": [], "n": []})
        )

    def _check_complete(self, source: str, n_rows: int) -> None:
        """Internal invariant: rows 1..n_rows of ``source`` each appear exactly once."""
        f = self.to_frame()
        got = np.sort(f.loc[f["source"] == source, "row"].to_numpy())
        if not np.array_equal(got, np.arange(1, n_rows + 1)):
            raise RuntimeError(  # pragma: no cover - a bug in pkpd, not in the data
                f"internal error: the report of {source!r} does not account for each of its "
                f"{n_rows} rows exactly once"
            )

    def summary(self) -> str:
        """A short text account: rows per source, used/dropped, and each rule applied."""
        f = self.to_frame()
        lines = [f"DataReport: {self.title}" if self.title else "DataReport"]
        n_sub = f["subject"].replace("", np.nan).dropna().nunique()
        lines.append(
            f"{len(f)} input rows ({f['source'].nunique()} source(s), {n_sub} subjects): "
            f"{self.n_used} used, {self.n_dropped} dropped"
        )
        for src, g in f.groupby("source", sort=False):
            used = int((g["status"] == "used").sum())
            lines.append(f"  {src}: {len(g)} rows, {used} used, {len(g) - used} dropped")
        ruled = f[f["rule"] != ""]
        if len(ruled):
            lines.append("rules applied:")
            for (status, rule), g in ruled.groupby(["status", "rule"], sort=True):
                text = self.rules.get(rule) or g["reason"].iloc[0]
                lines.append(f"  {status:<7} {rule:<20} {len(g):>6}  {text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"DataReport({self.title!r}: {self.n_rows} rows, {self.n_used} used, "
            f"{self.n_dropped} dropped)"
        )


class LesionData(NamedTuple):
    """Result of :func:`read_lesions`."""

    lesions: pd.DataFrame
    report: DataReport


class SdtmData(NamedTuple):
    """Result of :func:`read_sdtm`."""

    lesions: pd.DataFrame
    responses: pd.DataFrame
    dosing: pd.DataFrame
    report: DataReport


class AdamData(NamedTuple):
    """Result of :func:`read_adam`."""

    sld: pd.DataFrame
    responses: pd.DataFrame
    pfs: pd.DataFrame
    report: DataReport


class LalehData(NamedTuple):
    """Result of :func:`read_laleh_s1`."""

    sld: pd.DataFrame
    report: DataReport


class NonmemTumourData(NamedTuple):
    """Result of :func:`read_nonmem_tumour`."""

    sld: pd.DataFrame
    dosing: pd.DataFrame
    report: DataReport


# ------------------------------------------------------------------------------------------------
# small value helpers
# ------------------------------------------------------------------------------------------------


def _is_missing(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in _MISSING_TOKENS
    if isinstance(v, float | np.floating):
        return bool(np.isnan(v))
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _text(v: object) -> str:
    """A cell as text: missing -> '', 12.0 -> '12', strings stripped."""
    if _is_missing(v) and not (isinstance(v, str) and v.strip()):
        return ""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        x = float(v)
        if x.is_integer() and abs(x) < 2**63:
            return str(int(x))
        return repr(x)
    if isinstance(v, np.integer):
        return str(int(v))
    return str(v).strip()


def _cell(v: object) -> str:
    """A user-file text cell: missing tokens ('', '.', 'NA', ...) -> ''."""
    return "" if _is_missing(v) else _text(v)


def _show(v: object) -> object:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def _number(v: object) -> float | None:
    """Parse a numeric cell; NaN for missing; None when the value is not a number."""
    if _is_missing(v):
        return math.nan
    if isinstance(v, bool | np.bool_):
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


_TRUE = frozenset({"true", "t", "1", "1.0", "y", "yes"})
_FALSE = frozenset({"false", "f", "0", "0.0", "n", "no"})


def _bool(v: object) -> bool | None:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float | np.integer | np.floating) and not _is_missing(v):
        return {1.0: True, 0.0: False}.get(float(v))
    s = _text(v).lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


def _norm_key(v: object) -> str:
    return re.sub(r"[\s_\-]+", " ", _text(v).lower()).strip()


_TYPE_MAP = {
    "target": "target",
    "non target": "nontarget",
    "nontarget": "nontarget",
    "new": "new",
    "new target": "new",
    "new non target": "new",
    "new nontarget": "new",
}
_STATE_MAP = {
    "": "",
    "present": "present",
    "absent": "absent",
    "disappeared": "absent",
    "not present": "absent",
    "tumor merged": "absent",
    "tumour merged": "absent",
    "merged": "absent",
    "too small": "too_small",
    "too small to measure": "too_small",
    "tstm": "too_small",
    "not evaluated": "not_evaluated",
    "not evaluable": "not_evaluated",
    "ne": "not_evaluated",
    "not done": "not_evaluated",
    "not assessed": "not_evaluated",
    "unequivocal": "unequivocal",
    "unequivocal progression": "unequivocal",
    "unequivocal pd": "unequivocal",
    "equivocal": "equivocal",
}

_ISO_FULL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?$")
_ISO_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DATE9 = re.compile(r"^(\d{1,2})([A-Za-z]{3})(\d{4})$")
_SAS_EPOCH = _dt.date(1960, 1, 1)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}


def _parse_date(
    v: object, *, partial: Literal["first", "error"] = "error", sas_numeric: bool = False
) -> tuple[_dt.date | None, str]:
    """Parse an ISO 8601 date (time of day ignored). Returns (date or None if missing, note).

    Raises ValueError if the value is not a date.
    """
    if _is_missing(v):
        return None, ""
    if isinstance(v, pd.Timestamp):
        return v.date(), ""
    if isinstance(v, _dt.datetime):
        return v.date(), ""
    if isinstance(v, _dt.date):
        return v, ""
    if isinstance(v, np.datetime64):
        return pd.Timestamp(v).date(), ""
    if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool):
        if sas_numeric and float(v).is_integer():
            return _SAS_EPOCH + _dt.timedelta(days=int(v)), ""
        raise ValueError("not a date")
    s = str(v).strip()
    m = _ISO_FULL.match(s)
    if m:
        return _dt.date(int(m[1]), int(m[2]), int(m[3])), ""
    m = _DATE9.match(s)
    if m and m[2].upper() in _MONTHS:
        return _dt.date(int(m[3]), _MONTHS[m[2].upper()], int(m[1])), ""
    m = _ISO_MONTH.match(s)
    if m and partial == "first":
        return _dt.date(int(m[1]), int(m[2]), 1), f"partial date {s!r} imputed to the 1st"
    if sas_numeric:
        try:
            x = float(s)
        except ValueError:
            pass
        else:
            if x.is_integer():
                return _SAS_EPOCH + _dt.timedelta(days=int(x)), ""
    raise ValueError("not an ISO 8601 date")


def _date_or_fail(v, *, row, subject, column, partial="error", sas_numeric=False):
    try:
        return _parse_date(v, partial=partial, sas_numeric=sas_numeric)
    except (ValueError, OverflowError):
        hint = ""
        if partial == "first":
            hint = " (a partial date such as 2021-03 is imputed to the 1st)"
        raise DataError(
            "unparseable date",
            row=row,
            subject=subject,
            column=column,
            value=_show(v),
            fix=f"write dates as ISO 8601 YYYY-MM-DD{hint}",
        ) from None


# ------------------------------------------------------------------------------------------------
# validate_lesions
# ------------------------------------------------------------------------------------------------


def _lower_columns(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    names = [str(c).strip().lower() for c in frame.columns]
    seen: dict[str, str] = {}
    for orig, low in zip(frame.columns, names):
        if low in seen:
            raise DataError(
                f"the {what} has a duplicate column: two columns named {low!r} (ignoring "
                f"case): {seen[low]!r} and {orig!r}",
                column=str(orig),
                fix="keep one of them",
            )
        seen[low] = str(orig)
    out = frame.copy()
    out.columns = names
    return out


#: columns of :attr:`DataProblems.problems` (and of ``pkpd recist --errors``)
PROBLEM_COLUMNS = ("source", "row", "subject", "column", "value", "problem", "fix", "message")


class DataProblems(DataError):
    """Every row problem found in one input, raised when a reader is called with
    ``all_errors=True`` (``pkpd recist --all-errors``).

    ``problems`` is a DataFrame with :data:`PROBLEM_COLUMNS`, one row per problem (a data row
    can have several), sorted by source and row (problems of the whole table last); ``str()``
    gives the count and the first problem.
    """

    def __init__(self, what: str, problems: Sequence[Mapping[str, object]]):
        self.what = what
        order = {s: k for k, s in enumerate(dict.fromkeys(p["source"] for p in problems))}
        items = sorted(problems, key=lambda p: (
            order[p["source"]], math.inf if p["row"] is None else p["row"]))
        self.problems = pd.DataFrame(items, columns=list(PROBLEM_COLUMNS))
        self.n_problems = len(self.problems)
        keys = self.problems[["source", "row"]].dropna().drop_duplicates()
        self.n_rows = len(keys)
        first = self.problems["message"].iloc[0] if self.n_problems else ""
        super().__init__(f"{self.headline()}; the first: {first}")

    def headline(self) -> str:
        n, m = self.n_problems, self.n_rows
        return (f"{n} problem{'s' if n != 1 else ''} in {m} row{'s' if m != 1 else ''} of "
                f"{self.what}")

    def lines(self, limit: int | None = 20) -> list[str]:
        """One message per problem (the first ``limit``), then a line counting the rest."""
        msgs = self.problems["message"].tolist()
        if limit is None or len(msgs) <= limit:
            return msgs
        return msgs[:limit] + [f"... and {len(msgs) - limit} more"]

    def to_frame(self) -> pd.DataFrame:
        return self.problems.copy()


class _Problems:
    """The row problems of one input, collected by the per-row checks.

    Checks call :meth:`add` and go on with the next row, so that one pass finds every problem.
    :meth:`finish` then raises: with ``collect`` a :class:`DataProblems` listing them all,
    otherwise the first problem as a :class:`DataError` that says how many more there are.
    """

    def __init__(self, what: str, collect: bool = False):
        self.what = what
        self.collect = collect
        self.items: list[dict] = []
        self._rows: dict[int, set] = {}

    def add(self, problem: str, *, row: int | None = None, subject: object = None,
            column: str | None = None, value: object = None, fix: str | None = None,
            source: str = "") -> None:
        message = format_problem(problem, row=row, subject=subject, column=column, value=value,
                                 fix=fix)
        self.items.append({"source": source or self.what, "row": row, "subject": subject,
                           "column": column, "value": value, "problem": problem, "fix": fix,
                           "message": message})
        if row is not None:
            self._rows.setdefault(int(row), set()).add(column)

    def has(self, row: int, columns: Iterable[str] | None = None) -> bool:
        """Whether a problem was found on this data row (in one of ``columns``, if given)."""
        found = self._rows.get(int(row))
        return bool(found) and (columns is None or not found.isdisjoint(columns))

    def finish(self) -> None:
        if not self.items:
            return
        if self.collect:
            raise DataProblems(self.what, self.items)
        first = self.items[0]
        err = DataError(first["problem"], row=first["row"], subject=first["subject"],
                        column=first["column"], value=first["value"], fix=first["fix"])
        more = len(self.items) - 1
        err.n_more = more
        if more:
            err.args = (f"{err} [{more} more problem{'s' if more != 1 else ''} in {self.what}; "
                        "list them all with `pkpd recist --all-errors` (API: all_errors=True)]",)
        raise err


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
# reading user files: delimited text, workbooks, SAS transport / datasets
# ------------------------------------------------------------------------------------------------

#: a number written with a decimal comma (``12,5``, ``-0,75``, ``1,5e3``)
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")
#: a number written with a decimal point or none (``12``, ``12.5``, ``.5``, ``1e3``)
_DECIMAL_POINT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_EXCEL_SEP_LINE = re.compile(r"^\ufeff?sep=(.)\s*$", re.IGNORECASE)


def _file_format(df: pd.DataFrame) -> dict:
    return df.attrs.setdefault("file_format", {})


def _decimal_commas(df: pd.DataFrame, numeric: Iterable[str] | None, what: str) -> list[str]:
    """Read decimal commas (``12,5`` -> ``12.5``) in the numeric columns of a file that is not
    comma-separated. ``numeric`` names those columns (case-insensitive); None: every column whose
    filled cells are all numbers. A column that mixes ``12,5`` and ``12.5`` is an error (a point
    may be a thousands separator there). Returns the columns converted."""
    wanted = None if numeric is None else {str(c).strip().lower() for c in numeric}
    converted = []
    for col in df.columns:
        if wanted is not None and str(col).strip().lower() not in wanted:
            continue
        cells = [(i, str(v).strip()) for i, v in enumerate(df[col]) if not _is_missing(v)]
        comma = [(i, s) for i, s in cells if _DECIMAL_COMMA.match(s)]
        if not comma:
            continue
        if wanted is None and any(
            not (_DECIMAL_COMMA.match(s) or _DECIMAL_POINT.match(s)) for _, s in cells
        ):
            continue  # a text column that happens to hold "1,2"
        point = [(i, s) for i, s in cells if "." in s and _DECIMAL_POINT.match(s)]
        if point:
            (ic, sc), (ip, sp) = comma[0], point[0]
            raise DataError(
                f"{what}: column {col} mixes decimal commas (row {ic + 1}: {sc!r}) and decimal "
                f"points (row {ip + 1}: {sp!r}), so neither can be read safely",
                fix="write every number of the column the same way (e.g. save the file from "
                "Excel again, or replace ',' by '.' in that column)",
            )
        values = df[col].to_numpy(dtype=object).copy()
        for i, s in comma:
            values[i] = s.replace(",", ".")
        df[col] = values
        converted.append(str(col))
    return converted


def _read_delimited(path: Path, what: str, numeric: Iterable[str] | None) -> pd.DataFrame:
    """A delimited text file (comma, semicolon, tab or pipe; an Excel ``sep=;`` first line is
    honoured) as text cells; decimal commas are read when the separator is not a comma.

    A row with more fields than the header is an error naming its line (trailing empty fields
    are ignored); a shorter row has empty cells at its end."""
    import csv
    import io

    from ..io import SEPARATORS, detect_separator, read_text_file

    text = read_text_file(path, what)
    lines = text.splitlines()
    first = next(k for k, line in enumerate(lines) if line.strip())
    m = _EXCEL_SEP_LINE.match(lines[first])
    sep = m.group(1) if m else detect_separator(lines[first]) or ","
    name = SEPARATORS.get(sep, repr(sep))
    body = "\n".join(lines[first + 1:] if m else lines[first:])
    reader = csv.reader(io.StringIO(body), delimiter=sep)
    header = next(reader, None)
    if not header or not "".join(header).strip():
        raise DataError(f"{what} {str(path)!r} holds no header row",
                        fix="give a file with a header row and data rows")
    width = len(header)
    skipped = first + (1 if m else 0)  # lines above the header
    data = []
    for fields in reader:
        if len(fields) > width:
            if any(f.strip() for f in fields[width:]):
                line = reader.line_num + skipped
                raise DataError(
                    f"{what} {str(path)!r} (read as {name}-separated): line {line} has "
                    f"{len(fields)} fields but the header has {width}",
                    value=sep.join(fields) if len(sep.join(fields)) <= 80 else None,
                    fix=f"quote values that contain {sep!r}, or check the separator of that line",
                )
            fields = fields[:width]
        data.append(fields + [""] * (width - len(fields)))
    columns = [h.strip() or f"Unnamed: {k}" for k, h in enumerate(header)]
    df = pd.DataFrame(data, columns=columns, dtype=object) if data else pd.DataFrame(
        {c: pd.Series([], dtype=object) for c in columns})
    fmt = _file_format(df)
    fmt["separator"] = name
    if sep != ",":
        fmt["decimal_comma_columns"] = _decimal_commas(df, numeric, f"{what} {path.name}")
    return df


def _read_workbook(path: Path, what: str, sheet: str | int | None) -> pd.DataFrame:
    """A worksheet of an .xlsx/.xlsm workbook (default: the first)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{what} {str(path)!r} is not an Excel workbook (an .xlsx file is a zip archive; "
            "this one is not)",
            fix="open it in Excel and save it as .xlsx, or save it as CSV UTF-8",
        )
    try:
        book = pd.ExcelFile(path, engine="openpyxl")
    except Exception as exc:  # noqa: BLE001 - a damaged workbook can fail in many ways
        if isinstance(exc, MemoryError):
            raise
        raise DataError(
            f"{what} {str(path)!r} cannot be read as an Excel workbook "
            f"({type(exc).__name__}: {' '.join(str(exc).split())})",
            fix="open it in Excel and save it again as .xlsx, or save it as CSV UTF-8",
        ) from None
    with book:
        names = book.sheet_names
        if isinstance(sheet, str) and sheet not in names or isinstance(sheet, int) and not (
            -len(names) <= sheet < len(names)
        ):
            raise DataError(
                f"{what} {str(path)!r} has no worksheet {sheet!r} (worksheets: "
                f"{', '.join(names) or 'none'})",
                fix="name one of its worksheets",
            )
        df = book.parse(0 if sheet is None else sheet, dtype=object)
    _file_format(df)["worksheet"] = names[0] if sheet is None else sheet
    return df


def _read_table(
    path: str | os.PathLike,
    what: str,
    *,
    sheet: str | int | None = None,
    numeric: Iterable[str] | None = None,
) -> pd.DataFrame:
    """A user's table file: ``.csv``/``.txt``/``.tsv`` (see :func:`_read_delimited`) or
    ``.xlsx``/``.xlsm``; every file-level failure is a :class:`DataError` naming the file."""
    from ..io import check_input_file

    path = check_input_file(path, what)
    ext = path.suffix.lower()
    if ext in (".csv", ".txt", ".tsv"):
        return _read_delimited(path, what, numeric)
    if ext in (".xlsx", ".xlsm"):
        return _read_workbook(path, what, sheet)
    if ext == ".xls":
        raise DataError(
            f"{what} {str(path)!r} is an old-style .xls workbook, which pkpd does not read",
            fix="save it as .xlsx or as CSV UTF-8",
        )
    raise DataError(
        f"unsupported {what} type {ext or '(no extension)'!r} ({path.name})",
        fix="give a .csv (comma, semicolon or tab separated) or .xlsx file",
    )


def _read_sas(path: Path, what: str) -> pd.DataFrame:
    """A SAS transport (.xpt) or SAS dataset (.sas7bdat) file."""
    ext = path.suffix.lower()
    kind = "SAS transport (XPT)" if ext == ".xpt" else "SAS7BDAT"
    try:
        import pyreadstat

        reader = pyreadstat.read_xport if ext == ".xpt" else pyreadstat.read_sas7bdat
        df, _ = reader(str(path))
    except Exception as exc:  # noqa: BLE001 - readstat reports a damaged file in many ways
        if isinstance(exc, MemoryError):
            raise
        raise DataError(
            f"{what} {str(path)!r} cannot be read as a {kind} file "
            f"({type(exc).__name__}: {' '.join(str(exc).split())})",
            fix="export the dataset again (SAS XPORT version 5 for SDTM/ADaM, or CSV)",
        ) from None
    return df


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

    def row(subj, day, values, n_target):
        vals = [v for v, _ in values if not math.isnan(v)]
        k = sum(1 for v, ts in values if ts and not math.isnan(v))
        partial = float(sum(vals)) if vals else math.nan
        complete = len(vals) == n_target
        out.append(
            {
                "subject": subj,
                "day": float(day),
                "sld_mm": partial if complete else math.nan,
                "n_target": n_target,
                "n_assessed": len(vals),
                "complete": complete,
                "sld_partial_mm": partial,
                "n_too_small": k,
            }
        )

    for subj, g in les.groupby("subject", sort=False):
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
            continue
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
        row(subj, base_day, values, len(targets))
        for d in days[days > base_day]:
            row(subj, d, [value.get((d, lid), (math.nan, False)) for lid in targets], len(targets))
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


# ------------------------------------------------------------------------------------------------
# CDISC file reading
# ------------------------------------------------------------------------------------------------


def _read_cdisc_table(path: Path, domain: str | None = None) -> pd.DataFrame:
    """Read a .csv, .xpt or .sas7bdat file: upper-case column names, text cells stripped."""
    from ..io import check_input_file

    what = f"{(domain or path.stem).upper()} file"
    check_input_file(path, what)
    ext = path.suffix.lower()
    if ext == ".csv":
        df = _read_table(path, what)
    elif ext in (".xpt", ".sas7bdat"):
        df = _read_sas(path, what)
    else:
        raise DataError(
            f"unsupported CDISC file type {ext!r} ({path.name})",
            fix="give .csv, .xpt or .sas7bdat files",
        )
    df.columns = [str(c).strip().upper() for c in df.columns]
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: v.strip() if isinstance(v, str) else v)
    return df.reset_index(drop=True)


_CDISC_EXT = (".csv", ".xpt", ".sas7bdat")


def _collect_domains(
    source, wanted: Sequence[str], what: str
) -> dict[str, tuple[pd.DataFrame, str]]:
    """Map domain name -> (table, source name) from a folder, a list of paths or a mapping."""
    out: dict[str, tuple[pd.DataFrame, str]] = {}

    def put(dom: str, item, name: str):
        dom = dom.upper()
        if dom in out:
            raise DataError(
                f"two inputs for the {dom} domain ({out[dom][1]} and {name})",
                fix=f"give one {dom} file",
            )
        if isinstance(item, pd.DataFrame):
            df = item.copy()
            df.columns = [str(c).strip().upper() for c in df.columns]
            out[dom] = (df.reset_index(drop=True), name)
        else:
            out[dom] = (_read_cdisc_table(Path(item), dom), Path(item).name)

    if isinstance(source, Mapping):
        for k, v in source.items():
            put(str(k), v, v if not isinstance(v, pd.DataFrame) else f"{str(k).lower()}")
        return out
    if isinstance(source, str | os.PathLike):
        folder = Path(source)
        if not folder.is_dir():
            found = "is a file, not a folder" if folder.exists() else "does not exist"
            raise DataError(
                f"{what} folder {str(folder)!r} {found}",
                fix=f"give a folder holding {', '.join(d.lower() for d in wanted)} files "
                "(.csv, .xpt or .sas7bdat), or a list of paths",
            )
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in _CDISC_EXT and f.stem.upper() in wanted:
                put(f.stem, f, f.name)
        return out
    for item in source:
        p = Path(item)
        dom = p.stem.upper()
        if dom not in wanted:
            df = _read_cdisc_table(p)
            if "DOMAIN" in df.columns and len(df):
                dom = str(df["DOMAIN"].iloc[0]).upper()
            if dom not in wanted:
                raise DataError(
                    f"cannot tell which domain {p.name} holds",
                    fix=f"name the file after its domain ({', '.join(wanted)}) or give a "
                    "DOMAIN column",
                )
            if dom in out:
                raise DataError(f"two inputs for the {dom} domain", fix=f"give one {dom} file")
            out[dom] = (df, p.name)
            continue
        put(dom, p, p.name)
    return out


def _need(df: pd.DataFrame, cols: Sequence[str], name: str, domain: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"{domain} ({name}) is missing the variable(s) {', '.join(missing)} (variables "
            f"found: {', '.join(df.columns) or 'none'})",
            column=missing[0],
            fix=f"give {domain} with the SDTMIG/ADaM variable names ({', '.join(cols)} are needed)",
        )


def _col(df: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _texts(df: pd.DataFrame, name: str | None) -> list[str]:
    if name is None:
        return [""] * len(df)
    return [_text(v) for v in df[name]]


def _code_text(s: str) -> str:
    """'2.0' -> '2' (a VISITNUM read from CSV text or from a numeric XPT column)."""
    x = _number(s)
    if x is not None and math.isfinite(x) and x.is_integer():
        return str(int(x))
    return s


def _same(a: str, b: str | None) -> bool:
    return b is None or a.strip().upper() == b.strip().upper()


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

    def day_of(df, i, subj, refs, name, column="ADT"):
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

    def num(df, col, i, subj):
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

    # -- ADTR -----------------------------------------------------------------------------------
    sld_rows = []
    if adtr is not None:
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
            aval = num(tr, "AVAL", i, subj[i])
            day = day_of(tr, i, subj[i], refs, name)
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
                    base_mm=num(tr, "BASE", i, subj[i]),
                    pchg=num(tr, "PCHG", i, subj[i]),
                    nadir_mm=num(tr, "NADIR", i, subj[i]),
                    visit=visit[i],
                    paramcd=pc[i],
                    row=r,
                    source=name,
                )
            )
            report.add(name, r, subj[i], "used")
        report._check_complete(name, len(tr))
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
    sld = sld.sort_values(["subject", "day"], kind="stable").reset_index(drop=True)

    # -- ADRS -----------------------------------------------------------------------------------
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
            day = day_of(rs, i, subj[i], refs, name) if "ADT" in rs.columns else math.nan
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
    responses = responses.astype({"day": float, "row": np.int64})

    # -- ADTTE ----------------------------------------------------------------------------------
    tte_rows = []
    if adtte is not None:
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
            aval = num(te, "AVAL", i, subj[i])
            cnsr = num(te, "CNSR", i, subj[i])
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
                day_of(te, i, subj[i], refs, name) if "ADT" in te.columns and refs[i] else math.nan
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
    pfs = pfs.astype(
        {"aval_days": float, "cnsr": np.int64, "event": np.int64, "day": float, "row": np.int64}
    )
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
    out = []
    counts: dict[str, int] = {}  # data rows per sheet; used rows are reported below
    try:
        for ws in wb.worksheets:
            it = ws.iter_rows(values_only=True)
            header = next(it, None)
            src = f"{path.name}:{ws.title}"
            report.declare(src)
            names = tuple(_text(h).lower() for h in (header or ())[:4])
            if names != _LALEH_HEADER:
                raise DataError(
                    f"sheet {ws.title} does not have the S1 header",
                    column="header",
                    value=", ".join(_text(h) for h in (header or ())),
                    fix="give the original S1 workbook (Patient_Anonmyized, Treatment_Day, "
                    "TargetLesionLongDiam_mm, Study_Arm)",
                )
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
                flag, rule, reason = "", "", ""
                if _is_missing(val_v):
                    report.add(src, n, subject, "dropped", rule="missing_value",
                               reason="empty TargetLesionLongDiam_mm")
                    continue
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
            counts[src] = n
    finally:
        wb.close()
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
    for src, n_rows in counts.items():
        report._check_complete(src, n_rows)
    sld = sld[list(LALEH_COLUMNS)].astype({"day": float, "sld_mm": float, "row": np.int64})
    sld.attrs["units"] = {"sld_mm": "mm", "day": "day"}
    return LalehData(sld, report)


# ------------------------------------------------------------------------------------------------
# NONMEM-style modelling file
# ------------------------------------------------------------------------------------------------


def write_nonmem_tumour(
    sld: pd.DataFrame,
    path: str | os.PathLike,
    dosing: pd.DataFrame | None = None,
    lloq_mm: float | None = None,
    *,
    too_small_mm: float = TOO_SMALL_MM,
    blq_method: Literal["m3", "m4"] = "m4",
    obs_cmt: int = 1,
    dose_cmt: int = 1,
    incomplete: Literal["drop", "mdv"] = "drop",
) -> Path:
    """Write an SLD series (and doses) as a NONMEM-style modelling file, atomically.

    Records: ``ID, TIME, EVID, AMT, CMT, RATE, II, ADDL, SS, DV, MDV`` (+ ``CENS, LIMIT`` when a
    record is censored) and ``SUBJECT`` (the original subject id as text; NONMEM users drop it
    in $INPUT with ``SUBJECT=DROP``). ``ID`` is 1, 2, ... in order of first appearance, TIME is
    in days since the first dose, DV is the SLD in mm. Written through
    :func:`pkpd.dosing.events.write_nonmem` after validation by
    :func:`pkpd.dosing.events.read_nonmem`.

    Observation rules (CONVENTIONS §1.7):

    * NaN ``sld_mm`` (not evaluable) -> not written;
    * ``complete`` False (not all baseline target lesions assessed) -> not written
      (``incomplete="drop"``) or written with MDV=1 (``"mdv"``; DV = ``sld_partial_mm`` when
      the table has it);
    * too small to measure (``n_too_small`` > 0, or ``flag == "TOO_SMALL_TO_MEASURE"``) ->
      left-censored interval: ``CENS=1, DV = sld_mm`` (the sum with each such lesion at its
      recorded value or ``too_small_mm``), ``LIMIT = max(sld_mm - too_small_mm * n_too_small,
      0)``: the true SLD lies in (LIMIT, DV) (wider than needed if a lesion was recorded below
      ``too_small_mm``);
    * ``sld_mm < lloq_mm`` (when given; includes 0 mm) -> ``CENS=1, DV=lloq_mm``, ``LIMIT=0``
      (``blq_method="m4"``: sizes are positive) or ``-inf`` (``"m3"``);
    * other records: ``CENS=0``, LIMIT missing, MDV=0.

    Dose records (``dosing``: columns ``subject, day, amt`` and optionally ``cmt, rate, ii,
    addl``): EVID=1, MDV=1. At equal TIME, pre-treatment observations (TIME <= 0) come before
    doses and doses before later observations.

    Parameters
    ----------
    sld : pandas.DataFrame
        ``subject, day, sld_mm`` and optionally ``complete``, ``n_too_small``, ``flag`` (the
        output of :func:`sld_series`, :func:`read_laleh_s1` or :func:`read_adam`).
    path : path-like
    dosing : pandas.DataFrame, optional
    lloq_mm : float, optional
        Limit below which an SLD is written as censored.
    too_small_mm : float, default 5.0
        Value that was given to each too-small lesion.
    blq_method : {"m4", "m3"}
    obs_cmt, dose_cmt : int, default 1
        CMT of observation and (when ``dosing`` has no ``cmt``) dose records.
    incomplete : {"drop", "mdv"}

    Returns
    -------
    pathlib.Path
    """
    from ..dosing.events import read_nonmem, write_nonmem

    if blq_method not in ("m3", "m4"):
        raise ValueError(f"blq_method must be 'm3' or 'm4', got {blq_method!r}")
    if incomplete not in ("drop", "mdv"):
        raise ValueError(f"incomplete must be 'drop' or 'mdv', got {incomplete!r}")
    s = _lower_columns(sld, "SLD table")
    missing = [c for c in ("subject", "day", "sld_mm") if c not in s.columns]
    if missing:
        raise DataError(
            f"the SLD table is missing the column(s) {', '.join(missing)}",
            column=missing[0],
            fix="give subject, day and sld_mm columns",
        )
    s = s.assign(subject=[_text(v) for v in s["subject"]]).reset_index(drop=True)
    day = pd.to_numeric(s["day"], errors="coerce").to_numpy(dtype=float)
    dv = pd.to_numeric(s["sld_mm"], errors="coerce").to_numpy(dtype=float)
    if "n_too_small" in s.columns:
        k = pd.to_numeric(s["n_too_small"], errors="coerce").fillna(0).to_numpy(dtype=float)
    elif "flag" in s.columns:
        k = (s["flag"].astype(str) == "TOO_SMALL_TO_MEASURE").to_numpy(dtype=float)
    else:
        k = np.zeros(len(s))
    complete = (
        s["complete"].astype(bool).to_numpy()
        if "complete" in s.columns
        else np.ones(len(s), dtype=bool)
    )
    if "sld_partial_mm" in s.columns and incomplete == "mdv":
        partial = pd.to_numeric(s["sld_partial_mm"], errors="coerce").to_numpy(dtype=float)
        dv = np.where(complete, dv, partial)
    bad_day = np.isnan(day)
    if bad_day.any():
        i = int(np.flatnonzero(bad_day)[0])
        raise DataError(
            "day is missing or not a number",
            row=i + 1,
            subject=s["subject"][i],
            column="day",
            value=_show(s["day"][i]),
            fix="give every record a day",
        )
    keep = ~np.isnan(dv) & (complete | (incomplete == "mdv"))
    cens = np.zeros(len(s), dtype=np.int64)
    limit = np.full(len(s), np.nan)
    out_dv = dv.copy()
    ts = k > 0
    cens[ts] = 1
    limit[ts] = np.maximum(dv[ts] - too_small_mm * k[ts], 0.0)
    if lloq_mm is not None:
        below = dv < float(lloq_mm)
        cens[below] = 1
        out_dv[below] = float(lloq_mm)
        limit[below] = 0.0 if blq_method == "m4" else -np.inf
    mdv = np.where(complete, 0, 1)
    obs = pd.DataFrame(
        {
            "SUBJECT": s["subject"],
            "TIME": day,
            "EVID": 0,
            "AMT": 0.0,
            "CMT": obs_cmt,
            "RATE": 0.0,
            "II": 0.0,
            "ADDL": 0,
            "SS": 0,
            "DV": out_dv,
            "MDV": mdv,
            "CENS": cens,
            "LIMIT": limit,
        }
    )[keep]
    obs = obs.assign(_ord=np.where(obs["TIME"] <= 0, 0, 2))
    parts = [obs]
    if dosing is not None:
        d = _lower_columns(dosing, "dosing table")
        miss = [c for c in ("subject", "day", "amt") if c not in d.columns]
        if miss:
            raise DataError(
                f"the dosing table is missing the column(s) {', '.join(miss)}",
                column=miss[0],
                fix="give subject, day and amt columns",
            )

        def numcol(name, default):
            if name not in d.columns:
                return np.full(len(d), default, dtype=float)
            return pd.to_numeric(d[name], errors="coerce").fillna(default).to_numpy(float)

        dose = pd.DataFrame(
            {
                "SUBJECT": [_text(v) for v in d["subject"]],
                "TIME": numcol("day", np.nan),
                "EVID": 1,
                "AMT": numcol("amt", np.nan),
                "CMT": numcol("cmt", dose_cmt).astype(int),
                "RATE": numcol("rate", 0.0),
                "II": numcol("ii", 0.0),
                "ADDL": numcol("addl", 0).astype(int),
                "SS": 0,
                "DV": np.nan,
                "MDV": 1,
                "CENS": 0,
                "LIMIT": np.nan,
                "_ord": 1,
            }
        )
        parts.append(dose)
    recs = pd.concat(parts, ignore_index=True)
    order = {
        v: i + 1
        for i, v in enumerate(
            pd.unique(
                pd.concat([obs["SUBJECT"]] + ([parts[1]["SUBJECT"]] if len(parts) > 1 else []))
            )
        )
    }
    recs.insert(0, "ID", recs["SUBJECT"].map(order).astype(np.int64))
    recs = recs.sort_values(["ID", "TIME", "_ord"], kind="stable").drop(columns="_ord")
    cols = [
        "ID",
        "TIME",
        "EVID",
        "AMT",
        "CMT",
        "RATE",
        "II",
        "ADDL",
        "SS",
        "DV",
        "MDV",
        "CENS",
        "LIMIT",
        "SUBJECT",
    ]
    recs = recs[cols].reset_index(drop=True)
    table = read_nonmem(recs, time_unit="day", dv_unit=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nonmem(table, path)


def read_nonmem_tumour(path: str | os.PathLike) -> NonmemTumourData:
    """Read a NONMEM-style tumour file (as written by :func:`write_nonmem_tumour`).

    Parameters
    ----------
    path : path-like
        Read with :func:`pkpd.dosing.events.read_nonmem` (time unit: days).

    Returns
    -------
    NonmemTumourData
        ``(sld, dosing, report)``:

        * ``sld``: EVID=0 records: ``subject, day, sld_mm, cens, limit_mm, mdv, row`` (for a
          censored record ``sld_mm`` is DV, the upper limit; subject = SUBJECT column as
          text, else ID);
        * ``dosing``: EVID 1/4 records: ``subject, day, amt, cmt, rate, ii, addl, row``;
        * ``report``: other records (EVID 2/3) are dropped with a reason.
    """
    from ..dosing.events import read_nonmem

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate-record warnings were given at writing time
        table = read_nonmem(path, time_unit="day")
    df = table.df
    subj = df["ID"].map(_text).astype(object)
    cols = {c.upper(): c for c in df.columns}
    if "SUBJECT" in cols:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        raw.columns = [c.strip().upper() for c in raw.columns]
        rows = df["ROW"].to_numpy()
        if "SUBJECT" in raw.columns and rows.max(initial=0) <= len(raw):
            subj = pd.Series(raw["SUBJECT"].to_numpy()[rows - 1], dtype=object)
        else:  # pragma: no cover - unusual layouts
            subj = df[cols["SUBJECT"]].map(_text).astype(object)
    report = DataReport(f"NONMEM tumour file {path.name}")
    evid = df["EVID"].to_numpy()
    is_obs = evid == 0
    is_dose = np.isin(evid, (1, 4))
    other = ~(is_obs | is_dose)
    rows = df["ROW"].to_numpy()
    report.add(path.name, rows[is_obs], subj[is_obs], "used", reason="observation")
    report.add(path.name, rows[is_dose], subj[is_dose], "used", reason="dose record")
    report.add(path.name, rows[other], subj[other], "dropped", rule="other_evid",
               reason="EVID 2/3 record (not an observation or a dose)")
    sld = pd.DataFrame(
        {
            "subject": subj[is_obs].to_numpy(),
            "day": df["TIME"][is_obs].to_numpy(float),
            "sld_mm": df["DV"][is_obs].to_numpy(float),
            "cens": df["CENS"][is_obs].to_numpy(),
            "limit_mm": df["LIMIT"][is_obs].to_numpy(float),
            "mdv": df["MDV"][is_obs].to_numpy(),
            "row": rows[is_obs],
        }
    )
    dosing = pd.DataFrame(
        {
            "subject": subj[is_dose].to_numpy(),
            "day": df["TIME"][is_dose].to_numpy(float),
            "amt": df["AMT"][is_dose].to_numpy(float),
            "cmt": df["CMT"][is_dose].to_numpy(),
            "rate": df["RATE"][is_dose].to_numpy(float),
            "ii": df["II"][is_dose].to_numpy(float),
            "addl": df["ADDL"][is_dose].to_numpy(),
            "row": rows[is_dose],
        }
    )
    sld.attrs["units"] = {"sld_mm": "mm", "limit_mm": "mm", "day": "day"}
    dosing.attrs["units"] = {"day": "day"}
    return NonmemTumourData(sld, dosing, report)
