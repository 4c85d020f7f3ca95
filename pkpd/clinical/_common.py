"""Shared by the clinical readers: missing-value tokens, value and date parsing, the row
account (:class:`DataReport`), collected problems (:class:`DataProblems`) and reading user
files (delimited text with any separator, workbooks, SAS transport and datasets).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import DataError, format_problem

__all__ = ["DataReport", "DataProblems", "PROBLEM_COLUMNS"]


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
