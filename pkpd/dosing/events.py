"""NONMEM-style event tables: read, validate, write and expand ADDL doses.

An :class:`EventTable` is the one internal representation of a PK/PD dataset: a long table with
one row per event (dose, observation, other, reset), NONMEM column conventions, upper-case column
names and units as metadata. Everything that enters pkpd as data goes through
:func:`read_nonmem`, which validates the records (CONVENTIONS.md §1.9) and raises a
:class:`~pkpd.errors.DataError` naming the row, subject, column, value and a fix.

The semantics (EVID, SS, RATE, ADDL, ties, ATIME, BLQ) are described in ``docs/events.md``.

Notes
-----
Pure numpy/pandas; no JAX. Units are converted once, by :meth:`EventTable.with_units`.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import DataError, UnitError
from ..io import SEPARATORS, detect_separator, read_text_file
from ..units import (
    amount_factor,
    conc_factor,
    normalize_amount_unit,
    normalize_conc_unit,
    normalize_time_unit,
    time_factor,
)

__all__ = [
    "EventTable",
    "PkpdDataWarning",
    "read_nonmem",
    "write_nonmem",
    "expand_addl",
    "row_account",
    "MAX_DOSES_PER_RECORD",
    "MAX_DOSES_TOTAL",
    "NONMEM_COLUMNS",
    "EXTRA_COLUMNS",
    "CANONICAL_COLUMNS",
    "DERIVED_COLUMNS",
]

#: Columns in the order NONMEM users expect them (and the order :func:`write_nonmem` writes).
NONMEM_COLUMNS = ("ID", "TIME", "EVID", "AMT", "CMT", "RATE", "II", "ADDL", "SS", "DV", "MDV")
#: Reserved columns that are not NONMEM data items (rxode2/nlmixr2/Monolix).
EXTRA_COLUMNS = ("DUR", "CENS", "LIMIT")
#: All canonical event columns; every EventTable has them.
CANONICAL_COLUMNS = NONMEM_COLUMNS + EXTRA_COLUMNS
#: Columns pkpd derives: source row number and monotone absolute time.
DERIVED_COLUMNS = ("ROW", "ATIME")

_INT_COLUMNS = ("EVID", "CMT", "ADDL", "SS", "MDV", "CENS", "ROW")
_FLOAT_COLUMNS = ("TIME", "AMT", "RATE", "II", "DV", "DUR", "LIMIT", "ATIME")
_NUMERIC_INPUT = (
    "TIME",
    "EVID",
    "AMT",
    "RATE",
    "DUR",
    "II",
    "ADDL",
    "SS",
    "DV",
    "MDV",
    "CENS",
    "LIMIT",
)
_WHOLE = ("EVID", "ADDL", "SS", "MDV", "CENS")
_MISSING_TOKENS = frozenset({"", ".", "NA", "NaN", "nan", "NAN"})
_INT_TEXT = re.compile(r"[+-]?\d+")
#: a decimal-comma number ("1,5", "-0,25", "2,5e-3"), read as such in ';'-separated files
_DECIMAL_COMMA = re.compile(r"^([+-]?\d*),(\d+(?:[eE][+-]?\d+)?)$")
_DOSE_EVIDS = (1, 4)
_RESET_EVIDS = (3, 4)
_SNAP_RTOL = 1e-9
_MAX_LISTED = 8


class PkpdDataWarning(UserWarning):
    """A dataset is valid but probably not what the user meant (pkpd data warning)."""


# ------------------------------------------------------------------------------------------------
# EventTable
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EventTable:
    """A validated NONMEM-style event table with its units.

    Build one with :func:`read_nonmem` (from a file or a DataFrame); the constructor only checks
    that the canonical columns exist and normalises the unit names.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per event. Canonical columns (upper case) ``ID, TIME, EVID, AMT, CMT, RATE, II,
        ADDL, SS, DV, MDV, DUR, CENS, LIMIT``, then ``ROW`` (1-based source data row, header
        excluded) and ``ATIME`` (monotone absolute time), then the user's other columns
        (covariates, per-subject parameters) unchanged. After :func:`expand_addl` also
        ``ADDL_SRC`` and ``SEQ``.
    time_unit : str, default "h"
        Unit of TIME, ATIME, II and DUR (see :mod:`pkpd.units`).
    amt_unit : str, default "mg"
        Unit of AMT; RATE is in ``amt_unit`` per ``time_unit``.
    dv_unit : str or None, default None
        Concentration unit of DV and LIMIT, when known.
    rows : pandas.DataFrame or None, default None
        The row account of the source (set by :func:`read_nonmem`): one row per physical line of
        the file after the header, or per DataFrame row, saying what became of it. See
        :func:`row_account`.

    Raises
    ------
    DataError
        If a canonical or derived column is missing.
    UnitError
        If a unit name is unknown.
    """

    df: pd.DataFrame
    time_unit: str = "h"
    amt_unit: str = "mg"
    dv_unit: str | None = None
    rows: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.df, pd.DataFrame):
            raise TypeError(f"EventTable.df must be a pandas DataFrame, got {type(self.df)!r}")
        missing = [c for c in CANONICAL_COLUMNS + DERIVED_COLUMNS if c not in self.df.columns]
        if missing:
            raise DataError(
                f"EventTable is missing the column(s) {', '.join(missing)}",
                fix="build event tables with pkpd.dosing.events.read_nonmem(path_or_dataframe), "
                "which adds defaults and validates the records",
            )
        object.__setattr__(self, "time_unit", normalize_time_unit(self.time_unit))
        object.__setattr__(self, "amt_unit", normalize_amount_unit(self.amt_unit))
        if self.dv_unit is not None:
            object.__setattr__(self, "dv_unit", normalize_conc_unit(self.dv_unit))

    # -- user columns --------------------------------------------------------------------------
    def numeric(self, column: str) -> np.ndarray:
        """A user column (covariate, per-subject parameter) as float64, parsed strictly.

        Missing values (``.``, empty, ``NA``, ``NaN``) give NaN; text that is not a number and
        infinite values raise a :class:`~pkpd.errors.DataError` naming the row, ID, column and
        value (a value is never silently turned into "missing").

        Raises
        ------
        DataError
            If the column is absent, or a value is not a finite number.
        """
        df = self.df
        if column not in df.columns:
            raise DataError(f"column {column} not found (columns are: "
                            f"{', '.join(map(str, df.columns))})", column=column,
                            fix=f"add a {column} column to the data")
        ctx = _Ctx(df["ROW"].to_numpy(), df["ID"].astype(object).to_numpy())
        num = _parse_numeric(df[column].reset_index(drop=True), column, ctx)
        ctx.fail(np.isinf(num), f"{column} must be finite", column=column, values=num,
                 fix=f"write a finite number in {column}, or '.' for a missing value")
        return num

    # -- comparisons and display -----------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventTable):
            return NotImplemented
        return (
            self.time_unit == other.time_unit
            and self.amt_unit == other.amt_unit
            and self.dv_unit == other.dv_unit
            and self.df.reset_index(drop=True).equals(other.df.reset_index(drop=True))
        )

    __hash__ = None  # type: ignore[assignment]  # holds a mutable DataFrame

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        evid = self.df["EVID"].to_numpy()
        n_obs = int(((evid == 0) & (self.df["MDV"].to_numpy() == 0)).sum())
        n_dose = int(np.isin(evid, _DOSE_EVIDS).sum())
        dv = f", dv_unit={self.dv_unit!r}" if self.dv_unit else ""
        return (
            f"EventTable({len(self.subjects())} subjects, {len(self.df)} records: {n_dose} doses, "
            f"{n_obs} observations; time_unit={self.time_unit!r}, amt_unit={self.amt_unit!r}{dv})"
        )

    # -- access ----------------------------------------------------------------------------------
    def subjects(self) -> list:
        """Subject IDs in order of first appearance.

        Returns
        -------
        list
            Python scalars (int or str).
        """
        return [_py(v) for v in pd.unique(self.df["ID"])]

    def by_subject(self) -> Iterator[tuple[object, pd.DataFrame]]:
        """Iterate over subjects in order of first appearance.

        Records of one subject are grouped by ID even when they are not contiguous in the file
        (NONMEM would start a new individual; :func:`read_nonmem` warns about it).

        Yields
        ------
        (ID, pandas.DataFrame)
            The subject's ID and its records, in table order.
        """
        for key, sub in self.df.groupby("ID", sort=False):
            yield _py(key), sub

    def with_units(
        self,
        *,
        time_unit: str | None = None,
        amt_unit: str | None = None,
        dv_unit: str | None = None,
    ) -> EventTable:
        """Return a copy converted to other units (the one place units are converted).

        TIME, ATIME, II and DUR scale with time; AMT with amount; positive RATE with
        amount/time (the codes RATE = -1/-2 are kept); DV and LIMIT with concentration when
        ``dv_unit`` is given. User columns (covariates, LLOQ, ...) are not touched.

        Parameters
        ----------
        time_unit, amt_unit, dv_unit : str, optional
            Target units; None keeps the current one.

        Returns
        -------
        EventTable

        Raises
        ------
        UnitError
            If a unit is unknown, or ``dv_unit`` is asked for while the table's DV unit is
            unknown.

        Examples
        --------
        >>> t = read_nonmem(pd.DataFrame({"ID": [1], "TIME": [1.0], "EVID": [1], "AMT": [5.0],
        ...                               "II": [1.0], "ADDL": [1]}), time_unit="day")
        >>> float(t.with_units(time_unit="h").df["II"].iloc[0])
        24.0
        """
        new_time = normalize_time_unit(time_unit) if time_unit is not None else self.time_unit
        new_amt = normalize_amount_unit(amt_unit) if amt_unit is not None else self.amt_unit
        new_dv = self.dv_unit
        if dv_unit is not None:
            if self.dv_unit is None:
                raise UnitError(
                    "the DV unit of this table is unknown, so DV cannot be converted to "
                    f"{dv_unit!r}. Fix: read the data with read_nonmem(..., dv_unit='mg/L') "
                    "(or the right unit) first"
                )
            new_dv = normalize_conc_unit(dv_unit)
        tf = time_factor(self.time_unit, new_time)
        af = amount_factor(self.amt_unit, new_amt)
        df = self.df.copy()
        for col in ("TIME", "ATIME", "II", "DUR"):
            df[col] = df[col].astype(float) * tf
        df["AMT"] = df["AMT"].astype(float) * af
        rate = df["RATE"].to_numpy(dtype=float).copy()
        pos = rate > 0
        rate[pos] = rate[pos] * af / tf
        df["RATE"] = rate
        if dv_unit is not None:
            cf = conc_factor(self.dv_unit, new_dv)
            df["DV"] = df["DV"].astype(float) * cf
            df["LIMIT"] = df["LIMIT"].astype(float) * cf
        return EventTable(df, time_unit=new_time, amt_unit=new_amt, dv_unit=new_dv,
                          rows=self.rows)


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------


def _py(v: object) -> object:
    """numpy scalar -> Python scalar (for messages and IDs)."""
    return v.item() if isinstance(v, np.generic) else v


def _show(v: object) -> object:
    """A value as the user would recognise it in the file (5.0 -> 5)."""
    v = _py(v)
    if isinstance(v, float) and np.isfinite(v) and v == int(v):
        return int(v)
    return v


def _is_missing(v: object) -> bool:
    if isinstance(v, str):
        return v.strip() in _MISSING_TOKENS
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


class _Ctx:
    """Row numbers and subject IDs used to locate problems in messages."""

    def __init__(self, rows: np.ndarray, ids: np.ndarray, note: str = ""):
        self.rows = rows
        self.ids = ids
        self.note = note  # how the file was read, for values with a comma

    def subset(self, keep: np.ndarray) -> _Ctx:
        return _Ctx(self.rows[keep], self.ids[keep], self.note)

    def rows_text(self, idx: np.ndarray) -> str:
        shown = ", ".join(str(int(self.rows[j])) for j in idx[:_MAX_LISTED])
        if len(idx) > _MAX_LISTED:
            shown += f" and {len(idx) - _MAX_LISTED} more"
        return shown

    def fail(self, mask, problem: str, *, column: str | None, values=None, fix: str) -> None:
        """Raise a DataError at the first True of ``mask`` (mentioning the others)."""
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        if idx.size == 0:
            return
        i = idx[0]
        if idx.size > 1:
            others = idx[1:]
            plural = "s" if others.size > 1 else ""
            problem = f"{problem} (also row{plural} {self.rows_text(others)})"
        value = None if values is None else _show(values[i])
        raise DataError(
            problem,
            row=int(self.rows[i]),
            subject=_py(self.ids[i]),
            column=column,
            value=value,
            fix=fix,
        )


def _warn(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, PkpdDataWarning, stacklevel=stacklevel)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def _skip_reason(line: str) -> str | None:
    """Why a physical line is not a record (None: it is a record or the header)."""
    s = line.strip()
    if not s:
        return "blank line"
    if s[0] == "#":
        return "comment line ('#', NONMEM IGNORE=#)"
    if s[0] == "@":
        return "skipped line ('@', NONMEM IGNORE=@)"
    if s.upper().startswith("TABLE NO."):
        return "NONMEM $TABLE banner ('TABLE NO.')"
    return None


def _first_field(line: str, sep: str | None) -> str:
    s = line.strip()
    head = s.split(sep, 1)[0] if sep is not None else (s.split(None, 1)[0] if s else "")
    return head.strip().strip('"').strip("'")


def _sep_name(sep: str | None) -> str:
    return f"{SEPARATORS[sep]}-separated" if sep is not None else "whitespace-separated"


def _read_text_table(path: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Read a delimited or whitespace-separated NONMEM data file into strings plus row numbers.

    The separator is found from the header line (:func:`pkpd.io.detect_separator`): comma,
    semicolon, tab or pipe, else runs of whitespace. In a semicolon-separated file decimal commas
    (``1,5``) are read as decimal points (European Excel). Skipped lines: blank lines; lines
    whose first non-blank character is ``#`` (NONMEM's default IGNORE=#) or ``@`` (IGNORE=@
    marker); ``TABLE NO.`` banners and repeated header lines of NONMEM $TABLE output; data lines
    whose first field is exactly ``C`` (the IGNORE=C comment column convention). ROW = physical
    line number minus the header's line number.

    Returns the records as text, their ROW numbers and ``info``: ``header_line`` (1-based),
    ``n_lines``, ``separator`` and ``skipped`` (a list of ``(line, ROW or None, reason)`` for
    every other physical line).
    """
    lines = read_text_file(path, "data file").splitlines()
    skipped: list[tuple[int, int | None, str]] = []
    header_no = None
    for n, line in enumerate(lines):
        reason = _skip_reason(line)
        if reason is None:
            header_no = n
            break
        skipped.append((n + 1, None, f"{reason}, before the header"))
    if header_no is None:
        raise DataError(
            f"the data file {str(path)!r} has no header line or data (only comments)",
            fix="give a header row with the column names (ID, TIME, ...) and the records",
        )
    header_line = lines[header_no]
    sep = detect_separator(header_line)
    names = [c.strip() for c in _split_fields([header_line], sep)[0]]
    while names and names[-1] == "":
        names.pop()  # trailing separator on the header
    if names and all(_looks_numeric(c) for c in names):
        raise DataError(
            f"the first line of {str(path)!r} holds numbers, not column names; got "
            f"{header_line.strip()[:60]!r}",
            fix="add a header row with the column names (pkpd reads names from the file; "
            "NONMEM takes them from $INPUT)",
        )
    data_lines: list[str] = []
    rows: list[int] = []
    for n in range(header_no + 1, len(lines)):
        line = lines[n]
        reason = _skip_reason(line)
        if reason is None and line.strip() == header_line.strip():
            reason = "repeated header line (NONMEM $TABLE output)"
        if reason is None and _first_field(line, sep) == "C":
            reason = "comment record (first field 'C', NONMEM IGNORE=C)"
        if reason is not None:
            skipped.append((n + 1, n - header_no, reason))
            continue
        data_lines.append(line)
        rows.append(n - header_no)
    if not data_lines:
        what = f" ({len(skipped)} other line(s) skipped as comments)" if skipped else ""
        raise DataError(
            f"the data file {str(path)!r} has a header but no data records{what}",
            fix="add the records (one line per event) below the header",
        )
    fields = _split_fields(data_lines, sep)
    width = len(names)
    for k, rec in enumerate(fields):
        if len(rec) > width and all(f.strip() == "" for f in rec[width:]):
            fields[k] = rec = rec[:width]
        if len(rec) != width:
            raise DataError(
                f"the record has {len(rec)} fields but the header has {width} columns "
                f"(the file is read as {_sep_name(sep)}, from its header line)",
                row=rows[k],
                fix="make every line have one value per column; write '.' for a missing value",
            )
    if "" in names:
        raise DataError(
            f"a column in the header of {str(path)!r} has no name (position {names.index('') + 1})",
            fix="name every column in the header row",
        )
    if sep == ";":
        fields = [[_DECIMAL_COMMA.sub(r"\1.\2", f) for f in rec] for rec in fields]
    frame = pd.DataFrame(fields, columns=names, dtype=object)
    info = {"header_line": header_no + 1, "n_lines": len(lines), "separator": sep,
            "skipped": skipped}
    return frame, np.asarray(rows, dtype=np.int64), info


def _split_fields(lines: list[str], sep: str | None) -> list[list[str]]:
    if sep is None:
        return [line.split() for line in lines]
    return [[f.strip() for f in rec]
            for rec in csv.reader(lines, delimiter=sep, skipinitialspace=True)]


def _looks_numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _canonical_names(columns: list[str]) -> dict[str, str]:
    """Map original column name -> canonical upper-case name (for reserved columns only)."""
    reserved = set(CANONICAL_COLUMNS) | set(DERIVED_COLUMNS)
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for c in columns:
        key = str(c).strip().upper()
        if key in reserved:
            if key in seen:
                raise DataError(
                    f"the columns {seen[key]!r} and {c!r} both mean {key} (names are "
                    "case-insensitive)",
                    column=key,
                    fix="keep one of them",
                )
            seen[key] = c
            mapping[c] = key
    return mapping


def _text_to_float(obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse values exactly (Python's float, not pandas' fast parser); return (numbers, bad).

    Missing tokens give NaN and are not bad.
    """
    miss = np.fromiter((_is_missing(v) for v in obj), dtype=bool, count=len(obj))
    work = np.where(miss, "nan", obj).astype(object)
    work = np.array([v.strip() if isinstance(v, str) else v for v in work], dtype=object)
    try:
        return np.asarray(work, dtype=float), np.zeros(len(obj), dtype=bool)
    except (TypeError, ValueError):
        pass
    num = np.full(len(obj), np.nan)
    bad = np.zeros(len(obj), dtype=bool)
    for i, v in enumerate(work):
        try:
            num[i] = float(v)
        except (TypeError, ValueError):
            bad[i] = True
    return num, bad


def _parse_numeric(values: pd.Series, col: str, ctx: _Ctx) -> np.ndarray:
    """Strictly parse a canonical numeric column; missing tokens -> NaN."""
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    obj = values.astype(object).to_numpy()
    num, bad = _text_to_float(obj)
    if bad.any():
        extra = ""
        first = obj[int(np.flatnonzero(bad)[0])]
        if isinstance(first, str) and _DECIMAL_COMMA.match(first.strip()):
            point = _DECIMAL_COMMA.sub(r"\1.\2", first.strip())
            extra = (f"; decimal commas are read only in ';'-separated files, so write {point} "
                     "(or save the file with ';' as the separator)")
        elif ctx.note and isinstance(first, str) and "," in first:
            extra = f"; {ctx.note}"
        elif col == "TIME":
            extra = "; clock times or dates are not supported, convert them to elapsed time"
        ctx.fail(
            bad,
            f"non-numeric value in {col}",
            column=col,
            values=obj,
            fix=f"write a number in {col}, or '.' for a missing value{extra}",
        )
    return num


def _parse_user_column(values: pd.Series) -> pd.Series:
    """Text-file user columns: missing tokens -> NaN; numbers if every value is a number.

    Whole numbers without missing values become int64, other numbers float64 (parsed exactly),
    anything else stays text.
    """
    obj = values.astype(object).to_numpy()
    miss = np.fromiter((_is_missing(v) for v in obj), dtype=bool, count=len(obj))
    if (
        len(obj)
        and not miss.any()
        and all(isinstance(v, str) and _INT_TEXT.fullmatch(v.strip()) for v in obj)
    ):
        try:
            return pd.Series(np.array([int(v) for v in obj], dtype=np.int64))
        except OverflowError:
            pass
    num, bad = _text_to_float(obj)
    if not bad.any():
        return pd.Series(num)
    return pd.Series(np.where(miss, np.nan, obj).astype(object))


def _parse_ids(values: pd.Series, ctx_rows: np.ndarray) -> np.ndarray:
    obj = values.astype(object).to_numpy()
    miss = np.fromiter((_is_missing(v) for v in obj), dtype=bool, count=len(obj))
    if miss.any():
        i = int(np.flatnonzero(miss)[0])
        raise DataError(
            "ID is missing",
            row=int(ctx_rows[i]),
            column="ID",
            value=_show(obj[i]),
            fix="give every record the ID of its subject",
        )
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        num = values.to_numpy(dtype=float)
        if np.all(num == np.round(num)):
            return num.astype(np.int64)
        return num
    texts = [v.strip() if isinstance(v, str) else str(_py(v)) for v in obj]
    numeric = []
    for t in texts:
        try:
            x = float(t)
        except ValueError:
            return np.asarray(texts, dtype=object)
        # keep zero-padded identifiers such as "007" as text
        if len(t) > 1 and t.lstrip("+-")[:1] == "0" and t.lstrip("+-")[1:2].isdigit():
            return np.asarray(texts, dtype=object)
        numeric.append(x)
    num = np.asarray(numeric, dtype=float)
    if np.all(np.isfinite(num)) and np.all(num == np.round(num)):
        return num.astype(np.int64)
    return num


def _parse_cmt(
    values: pd.Series | None,
    n: int,
    ctx: _Ctx,
    cmt_names: Mapping[str, int] | None,
    default_cmt: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (CMT as float with NaN for missing, given mask)."""
    if values is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        out = values.to_numpy(dtype=float, na_value=np.nan)
        return out, ~np.isnan(out)
    obj = values.astype(object).to_numpy()
    lookup: dict[str, int] = {}
    folded: dict[str, list[int]] = {}
    if cmt_names is not None:
        for name, num in cmt_names.items():
            lookup[str(name)] = int(num)
            folded.setdefault(str(name).casefold(), []).append(int(num))
    out = np.full(n, np.nan)
    cache: dict[object, float] = {}
    for i, v in enumerate(obj):
        if _is_missing(v):
            continue
        if v in cache:
            out[i] = cache[v]
            continue
        text = v.strip() if isinstance(v, str) else v
        try:
            x = float(text)
        except (TypeError, ValueError):
            key = str(text)
            if key in lookup:
                x = float(lookup[key])
            elif len(folded.get(key.casefold(), [])) == 1:
                x = float(folded[key.casefold()][0])
            elif cmt_names is None:
                raise DataError(
                    "CMT holds a compartment name but no cmt_names mapping was given",
                    row=int(ctx.rows[i]),
                    subject=_py(ctx.ids[i]),
                    column="CMT",
                    value=v,
                    fix="pass read_nonmem(..., cmt_names={'depot': 1, 'central': 2, ...}) "
                    "or write compartment numbers",
                ) from None
            else:
                known = ", ".join(repr(k) for k in lookup)
                raise DataError(
                    "unknown compartment name in CMT",
                    row=int(ctx.rows[i]),
                    subject=_py(ctx.ids[i]),
                    column="CMT",
                    value=v,
                    fix=f"use one of {known} or a compartment number",
                ) from None
        cache[v] = x
        out[i] = x
    return out, ~np.isnan(out)


def _convert_legacy_evids(
    w: dict[str, np.ndarray], ctx: _Ctx, cmt_given: np.ndarray, ss_given: np.ndarray
) -> np.ndarray:
    """Convert classic RxODE/rxode2 EVIDs (>= 100) to NONMEM records in place.

    Classic code = 100000*(cmt // 100) + 10000*kind + 100*(cmt % 100) + flag, with kind 0 bolus,
    1/2 infusion switched on (+AMT = rate) and off (-AMT) by a pair of records, 8/9 modelled
    duration/rate (6/7: their switch-off records), 4/5 replace/multiply; flag 1 dose, 10 SS=1,
    20 SS=2, 30 compartment off. Returns the mask of records to keep (switch-off records go).
    """
    evid = w["EVID"]
    n = len(evid)
    keep = np.ones(n, dtype=bool)
    legacy = np.flatnonzero(~np.isnan(evid) & (evid >= 100))
    if legacy.size == 0:
        return keep
    orig = evid.copy()
    used_off: set[int] = set()
    for i in legacy:
        where = {"row": int(ctx.rows[i]), "subject": _py(ctx.ids[i]), "column": "EVID"}
        e, flag, kind, cmt = _decode_legacy_evid(orig[i], where)
        if kind in (6, 7):  # switch-off of a modelled rate/duration: implied by RATE=-1/-2
            keep[i] = False
            continue
        if i in used_off:
            keep[i] = False
            continue
        ss_code = {1: 0, 10: 1, 20: 2}[flag]
        _check_legacy_items(w, i, e, cmt, ss_code, ctx, cmt_given, ss_given, where)
        w["CMT"][i] = cmt
        w["SS"][i] = ss_code
        w["EVID"][i] = 1
        if kind == 9:
            w["RATE"][i] = -1.0
        elif kind == 8:
            w["RATE"][i] = -2.0
        elif kind in (1, 2):
            amt = w["AMT"][i]
            j_off = _legacy_switch_off(w, orig, i, e, cmt, used_off, ctx)
            used_off.add(j_off)
            keep[j_off] = False
            duration = w["TIME"][j_off] - w["TIME"][i]
            w["RATE"][i] = amt
            w["AMT"][i] = amt * duration
    return keep


_FIX_PAIR = (
    "rewrite the infusion as one NONMEM record: EVID=1, AMT=rate*duration, RATE=rate "
    "(or DUR=duration)"
)


def _decode_legacy_evid(code: float, where: dict) -> tuple[int, int, int, int]:
    """Check one classic rxode2 EVID and split it into (EVID, flag, kind, compartment).

    ``where`` locates the record (row, subject, column) for the messages.
    """
    e = int(code)
    if e != code:
        raise DataError(
            "EVID must be a whole number",
            value=_show(code),
            fix="use EVID 0-4 (NONMEM) or a classic rxode2 code",
            **where,
        )
    flag = e % 100
    kind = (e // 10000) % 10
    cmt = (e // 100) % 100 + 100 * (e // 100000)
    if flag == 30:
        raise DataError(
            "classic EVID that switches a compartment off (flag 30) is not supported",
            value=e,
            fix="remove the record; pkpd does not switch compartments off",
            **where,
        )
    if flag not in (1, 10, 20) or kind == 3:
        raise DataError(
            "unknown classic rxode2 EVID",
            value=e,
            fix="use NONMEM EVIDs 0-4 with AMT/RATE/CMT/SS columns, or classic codes "
            "100*cmt+1 (bolus) and 10000+100*cmt+1 (infusion)",
            **where,
        )
    if kind in (4, 5):
        raise DataError(
            "classic EVID for a replace/multiply event (rxode2 EVID 5/6) is not supported",
            value=e,
            fix="remove the record or express it as a dose",
            **where,
        )
    return e, flag, kind, cmt


def _check_legacy_items(
    w: dict[str, np.ndarray],
    i: int,
    e: int,
    cmt: int,
    ss_code: int,
    ctx: _Ctx,
    cmt_given: np.ndarray,
    ss_given: np.ndarray,
    where: dict,
) -> None:
    """CMT, SS, RATE and DUR given on the classic EVID record ``i`` must agree with its code."""
    if cmt_given[i] and w["CMT"][i] not in (0, cmt):
        raise DataError(
            f"CMT disagrees with the compartment {cmt} coded in the classic EVID {e}",
            row=int(ctx.rows[i]),
            subject=_py(ctx.ids[i]),
            column="CMT",
            value=_show(w["CMT"][i]),
            fix=f"set CMT={cmt} or leave it empty",
        )
    if ss_given[i] and w["SS"][i] not in (0, ss_code):
        raise DataError(
            f"SS disagrees with the steady-state flag coded in the classic EVID {e}",
            row=int(ctx.rows[i]),
            subject=_py(ctx.ids[i]),
            column="SS",
            value=_show(w["SS"][i]),
            fix=f"set SS={ss_code} or leave it empty",
        )
    if w["RATE"][i] != 0 or w["DUR"][i] != 0:
        raise DataError(
            "RATE/DUR must be empty on a classic rxode2 EVID record (the EVID codes the "
            "infusion)",
            value=e,
            fix="convert the record to EVID=1 with RATE or DUR, or set RATE and DUR to 0",
            **where,
        )


def _legacy_switch_off(
    w: dict[str, np.ndarray],
    orig: np.ndarray,
    i: int,
    e: int,
    cmt: int,
    used_off: set[int],
    ctx: _Ctx,
) -> int:
    """The record that switches off the classic infusion switched on by record ``i``.

    It is the next record of the same subject with the same classic EVID and AMT = -(the
    rate), not yet paired; ``orig`` holds the EVIDs as read.
    """
    amt = w["AMT"][i]
    if not amt > 0:
        raise DataError(
            "classic infusion switch-off record (negative AMT) without a preceding "
            "switch-on record",
            row=int(ctx.rows[i]),
            subject=_py(ctx.ids[i]),
            column="AMT",
            value=_show(amt),
            fix=_FIX_PAIR,
        )
    for j in range(i + 1, len(orig)):
        if (
            ctx.ids[j] == ctx.ids[i]
            and orig[j] == e
            and j not in used_off
            and w["AMT"][j] == -amt
        ):
            return j
    raise DataError(
        f"classic infusion into CMT {cmt} is switched on (AMT={_show(amt)} is the "
        "rate) but never switched off",
        row=int(ctx.rows[i]),
        subject=_py(ctx.ids[i]),
        column="EVID",
        value=e,
        fix=_FIX_PAIR,
    )


def _load(source) -> tuple[pd.DataFrame, np.ndarray | None, bool, dict | None]:
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame.reset_index(drop=True), None, False, None
    if isinstance(source, EventTable):
        return _load(source.df)
    path = Path(source)
    frame, rows, info = _read_text_table(path)
    return frame, rows, True, info


@dataclass(eq=False)
class _Reading:
    """The records :func:`read_nonmem` is validating, and what locates them in the source."""

    frame: pd.DataFrame  # the records: reserved columns renamed upper case, ROW/ATIME dropped
    lines: np.ndarray  # physical line of each record (a DataFrame's position 1..N)
    ctx: _Ctx  # ROW numbers and subject IDs, for messages
    names: dict[str, str]  # original -> canonical name of the reserved columns
    found: str  # the columns found (after renaming), for messages
    from_text: bool  # read from a text file: user columns are parsed
    info: dict | None  # what _read_text_table says about the file; None for a DataFrame
    present: dict[str, bool]  # canonical column -> given in the source
    w: dict[str, np.ndarray] = field(default_factory=dict)  # canonical input columns, float

    @property
    def n(self) -> int:
        return len(self.frame)

    def keep_only(self, keep: np.ndarray) -> list[tuple[int, int, object]]:
        """Drop the records not in ``keep``; return (line, ROW, ID) of each one dropped."""
        ctx = self.ctx
        dropped = [(int(self.lines[i]), int(ctx.rows[i]), _py(ctx.ids[i]))
                   for i in np.flatnonzero(~keep)]
        if not keep.all():
            self.lines = self.lines[keep]
            self.w = {k: v[keep] for k, v in self.w.items()}
            self.ctx = ctx.subset(keep)
            self.frame = self.frame.loc[keep].reset_index(drop=True)
        return dropped


def read_nonmem(
    source: str | os.PathLike | pd.DataFrame,
    *,
    time_unit: str = "h",
    amt_unit: str = "mg",
    dv_unit: str | None = None,
    cmt_names: Mapping[str, int] | None = None,
    n_cmt: int | None = None,
    default_cmt: int | None = None,
    blq_method: Literal["m1", "m3", "m4"] = "m3",
) -> EventTable:
    """Read and validate a NONMEM-style dataset.

    Parameters
    ----------
    source : path or pandas.DataFrame
        A UTF-8 text file separated by commas, semicolons (decimal commas are then read as decimal
        points), tabs or ``|``, or a whitespace-separated NONMEM table (``.tab``, ``.txt``) -- the
        separator is found from the header line -- or a DataFrame. Column names are case-insensitive
        for the reserved columns. Missing values: ``.``, empty, ``NA``, ``NaN``. Skipped lines:
        blank, first non-blank character ``#`` or ``@``, ``TABLE NO.`` banners and repeated headers
        (NONMEM $TABLE output), and records whose first field is exactly ``C`` (IGNORE=C). The first
        remaining line is the header.
    time_unit, amt_unit : str
        Units of TIME (and II, DUR) and of AMT in the data; recorded, not converted.
    dv_unit : str, optional
        Concentration unit of DV, if known.
    cmt_names : mapping of str to int, optional
        Compartment names allowed in CMT and their numbers (rxode2 style), e.g.
        ``{"depot": 1, "central": 2}``. Without ``n_cmt``, CMT must be one of these numbers.
    n_cmt : int, optional
        Number of model compartments; CMT must lie in 1..n_cmt (0 = model default).
    default_cmt : int, optional
        CMT given to records without one (column absent or ``.``). Without it such records get
        CMT = 0, NONMEM's "default compartment" (default dose compartment on doses, default
        observation compartment on observations), which the model resolves.
    blq_method : {"m3", "m4", "m1"}, default "m3"
        How BLQ/LLOQ flags become CENS/LIMIT: CENS=1, DV=LLOQ and LIMIT=-inf (M3), LIMIT=0
        (M4), or as M3 with MDV=1 (M1: BLQ records excluded from the likelihood).

    Returns
    -------
    EventTable
        In file order, with ROW and ATIME added and defaults filled in; ``rows`` holds the row
        account (every input line and what became of it, see :func:`row_account`).

    Raises
    ------
    DataError
        On the first invalid record (row, ID, column, value and a fix in the message), and for
        a file that is missing, a folder, empty, not UTF-8, or has no header or no records; an
        ADDL expansion beyond :data:`MAX_DOSES_PER_RECORD` / :data:`MAX_DOSES_TOTAL`. The full
        list of checks is in ``docs/events.md``.
    UnitError
        If a unit name is unknown.

    Warns
    -----
    PkpdDataWarning
        Non-contiguous IDs, DV on dose records, duplicate (ID, TIME, EVID, CMT), observation
        records with MDV=0 but no DV.

    Examples
    --------
    >>> df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1.0], "AMT": [100.0, 0.0],
    ...                    "DV": [None, 2.5]})
    >>> t = read_nonmem(df)
    >>> t.df["EVID"].tolist(), t.df["MDV"].tolist()
    ([1, 0], [1, 0])
    """
    time_unit = normalize_time_unit(time_unit)
    amt_unit = normalize_amount_unit(amt_unit)
    if dv_unit is not None:
        dv_unit = normalize_conc_unit(dv_unit)
    if blq_method not in ("m1", "m3", "m4"):
        raise ValueError(f"blq_method must be 'm1', 'm3' or 'm4', got {blq_method!r}")

    r = _read_source(source)  # the records, reserved names normalised, ROW and ID
    # validate each column, then convert legacy EVIDs (dropping their switch-off records)
    r.w, cmt_given, ss_given = _parse_columns(r, cmt_names, default_cmt)
    folded = r.keep_only(_convert_legacy_evids(r.w, r.ctx, cmt_given, ss_given))
    # derive EVID, CMT, AMT, CENS/LIMIT, MDV and ATIME, checking each
    evid, inferred = _resolve_evid(r.w, r.ctx)
    is_dose, is_obs = np.isin(evid, _DOSE_EVIDS), evid == 0
    cmt = _resolve_cmt(r.w["CMT"], r.ctx, n_cmt, cmt_names, default_cmt)
    _check_nondose_items(r, evid, is_dose)
    _check_dose_ranges(r.w, is_dose, r.ctx)
    amt = _dose_amounts(r.w, is_dose, r.ctx)
    cens, limit, dv, mdv_forced = _censoring(r, is_obs, blq_method)
    mdv, given_lost = _resolve_mdv(r.w["MDV"], dv, is_obs, evid, mdv_forced, r.ctx)
    codes, atime = _absolute_time(r.w["TIME"], evid, r.ctx)
    # warn, assemble the table and its row account
    _warn_records(r, codes, atime, evid, cmt, is_dose, inferred, given_lost)
    result = _assemble(r, evid=evid, amt=amt, cmt=cmt, dv=dv, mdv=mdv, cens=cens, limit=limit,
                       atime=atime)
    account = _read_account(result, r.lines, r.info, folded, time_unit)
    return EventTable(result, time_unit=time_unit, amt_unit=amt_unit, dv_unit=dv_unit,
                      rows=account)


# ------------------------------------------------------------------------------------------------
# read_nonmem, step by step
# ------------------------------------------------------------------------------------------------


def _read_source(source) -> _Reading:
    """Read the file or frame; normalise the reserved column names; ROW numbers and IDs."""
    frame, file_rows, from_text, info = _load(source)
    n = len(frame)
    # physical line of each record (a DataFrame's position 1..N), for the row account
    lines = file_rows + info["header_line"] if info else np.arange(1, n + 1, dtype=np.int64)
    names = _canonical_names(list(frame.columns))
    frame = frame.rename(columns=names)
    found = ", ".join(map(str, frame.columns)) or "none"
    for req in ("ID", "TIME"):
        if req not in frame.columns:
            raise DataError(
                f"required column {req} is missing (columns found: {found})",
                column=req,
                fix=f"add a {req} column (names are case-insensitive)",
            )

    # -- ROW --------------------------------------------------------------------------------------
    if "ROW" in frame.columns:
        rv, bad_rv = _text_to_float(frame["ROW"].astype(object).to_numpy())
        if bad_rv.any() or np.isnan(rv).any() or np.any(rv < 1) or np.any(rv != np.round(rv)):
            raise DataError(
                "column ROW is reserved for the 1-based source row number and must hold "
                "positive whole numbers",
                column="ROW",
                fix="rename your ROW column (e.g. to RECORD)",
            )
        rows = rv.astype(np.int64)
    elif file_rows is not None:
        rows = file_rows
    else:
        rows = np.arange(1, n + 1, dtype=np.int64)
    frame = frame.drop(columns=[c for c in DERIVED_COLUMNS if c in frame.columns])

    ids = _parse_ids(frame["ID"], rows)
    ctx = _Ctx(rows, ids)
    if info and info["separator"] == ";":
        ctx.note = ("the file is read as semicolon-separated, with decimal commas (1,5 is read as "
                    "1.5)")
    present = {c: c in frame.columns for c in CANONICAL_COLUMNS}
    return _Reading(frame, lines, ctx, names, found, from_text, info, present)


def _parse_columns(
    r: _Reading, cmt_names: Mapping[str, int] | None, default_cmt: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Parse and check the numeric canonical columns (absent ones are all NaN).

    Returns the columns as float (RATE, DUR, II, ADDL and SS with 0 for missing), and the masks
    of records with a CMT and with an SS given.
    """
    frame, ctx, n, present = r.frame, r.ctx, r.n, r.present
    w: dict[str, np.ndarray] = {}
    for col in _NUMERIC_INPUT:
        w[col] = _parse_numeric(frame[col], col, ctx) if present[col] else np.full(n, np.nan)
    for col in _NUMERIC_INPUT:
        if col != "LIMIT":  # LIMIT=-inf is the M3 lower bound
            ctx.fail(
                np.isinf(w[col]),
                f"{col} must be finite",
                column=col,
                values=w[col],
                fix=f"write a finite number in {col}",
            )
    ctx.fail(
        np.isnan(w["TIME"]),
        "TIME is missing",
        column="TIME",
        values=np.full(n, "."),
        fix="give every record a TIME",
    )
    for col in _WHOLE:
        x = w[col]
        ctx.fail(
            ~np.isnan(x) & (x != np.round(x)),
            f"{col} must be a whole number",
            column=col,
            values=x,
            fix=f"write an integer in {col}",
        )
    cmt, cmt_given = _parse_cmt(
        frame["CMT"] if present["CMT"] else None, n, ctx, cmt_names, default_cmt
    )
    ctx.fail(
        cmt_given & (cmt != np.round(cmt)),
        "CMT must be a whole number",
        column="CMT",
        values=cmt,
        fix="write a compartment number or name in CMT",
    )
    w["CMT"] = cmt
    ss_given = ~np.isnan(w["SS"])
    for col in ("RATE", "DUR", "II", "ADDL", "SS"):
        w[col] = np.where(np.isnan(w[col]), 0.0, w[col])
    return w, cmt_given, ss_given


def _resolve_evid(w: dict[str, np.ndarray], ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    """EVID after the legacy conversion: infer missing ones, check the range.

    Returns (EVID as int64, mask of the inferred ones).
    """
    evid = w["EVID"]
    amt, rate, mdv_in = w["AMT"], w["RATE"], w["MDV"]
    inferred = np.isnan(evid)
    if inferred.any():
        guess = np.where((amt > 0) | (rate != 0), 1.0, np.where(mdv_in == 1, 2.0, 0.0))
        evid = np.where(inferred, guess, evid)
    bad = ~np.isin(evid, (0, 1, 2, 3, 4))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        e = evid[i]
        if e < 0:
            problem = (
                "negative EVIDs are rxode2 solver-output codes (end of infusion), not input records"
            )
            fix = "drop these records; pkpd creates infusion ends itself"
        elif e in (5, 6, 7):
            problem = f"EVID {int(e)} (rxode2 replace/multiply/phantom event) is not supported"
            fix = "use EVID 0 (observation), 1 (dose), 2 (other), 3 (reset) or 4 (reset+dose)"
        else:
            problem = "EVID must be 0, 1, 2, 3 or 4"
            fix = (
                "use EVID 0 (observation), 1 (dose), 2 (other), 3 (reset) or 4 (reset+dose);"
                " classic rxode2 codes 100*cmt+1 and 10000+100*cmt+1 are converted"
            )
        ctx.fail(bad, problem, column="EVID", values=evid, fix=fix)
    return evid.astype(np.int64), inferred


def _resolve_cmt(
    cmt_in: np.ndarray,
    ctx: _Ctx,
    n_cmt: int | None,
    cmt_names: Mapping[str, int] | None,
    default_cmt: int | None,
) -> np.ndarray:
    """CMT with the default filled in, checked against the model's compartments (int64)."""
    fill = float(default_cmt) if default_cmt is not None else 0.0
    cmt = np.where(np.isnan(cmt_in), fill, cmt_in)
    ctx.fail(
        cmt < 0,
        "negative CMT (switching a compartment off) is not supported",
        column="CMT",
        values=cmt,
        fix="remove the record; pkpd does not switch compartments off",
    )
    if n_cmt is not None:
        ctx.fail(
            cmt > n_cmt,
            f"CMT is not a compartment of the model (1..{n_cmt})",
            column="CMT",
            values=cmt,
            fix=f"use a compartment number from 1 to {n_cmt} (0 = model default)",
        )
    elif cmt_names is not None:
        allowed = {0} | {int(v) for v in cmt_names.values()}
        ctx.fail(
            ~np.isin(cmt, list(allowed)),
            "CMT is not one of the model's compartments",
            column="CMT",
            values=cmt,
            fix="use one of " + ", ".join(f"{k}={v}" for k, v in cmt_names.items()),
        )
    return cmt.astype(np.int64)


def _check_nondose_items(r: _Reading, evid: np.ndarray, is_dose: np.ndarray) -> None:
    """Doses need an AMT column; RATE, AMT, II, ADDL, SS and DUR belong on doses only."""
    ctx, w = r.ctx, r.w
    nondose = ~is_dose
    if not r.present["AMT"] and is_dose.any():
        ctx.fail(
            is_dose,
            f"dose records (EVID 1/4) need an AMT column (columns found: {r.found})",
            column="AMT",
            values=evid,
            fix="add an AMT column with the dose amounts",
        )
    amt, rate = w["AMT"], w["RATE"]
    evtxt = "EVID 0/2/3 (observation, other, reset)"
    ctx.fail(
        nondose & (rate != 0),
        f"RATE must be 0 on {evtxt} records",
        column="RATE",
        values=rate,
        fix="set RATE=0, or make the record a dose (EVID=1)",
    )
    amt_on_nondose = nondose & ~np.isnan(amt) & (amt != 0)
    ctx.fail(
        amt_on_nondose,
        f"AMT must be 0 or missing on {evtxt} records",
        column="AMT",
        values=amt,
        fix="set AMT=0 (or '.'), or make the record a dose (EVID=1)",
    )
    for col in ("II", "ADDL", "SS", "DUR"):
        x = w[col]
        ctx.fail(
            nondose & (x != 0),
            f"{col} must be 0 on {evtxt} records",
            column=col,
            values=x,
            fix=f"set {col}=0 (or '.'), or make the record a dose (EVID=1)",
        )


def _check_dose_ranges(w: dict[str, np.ndarray], is_dose: np.ndarray, ctx: _Ctx) -> None:
    """SS, RATE, DUR, ADDL and II in range (ADDL also within the expansion limits)."""
    rate, ii, addl, ss, dur = w["RATE"], w["II"], w["ADDL"], w["SS"], w["DUR"]
    ctx.fail(
        is_dose & ~np.isin(ss, (0, 1, 2, 3)),
        "SS must be 0, 1, 2 or 3",
        column="SS",
        values=ss,
        fix="use SS=0 (no steady state), 1 (reset to SS), 2 (SS added) or 3",
    )
    ctx.fail(
        ~((rate >= 0) | (rate == -1) | (rate == -2)),
        "RATE must be >= 0 (0 = bolus, >0 = zero-order rate), -1 (rate modelled) or -2 "
        "(duration modelled)",
        column="RATE",
        values=rate,
        fix="write a non-negative rate, -1 or -2",
    )
    ctx.fail(
        dur < 0,
        "DUR (infusion duration) must not be negative",
        column="DUR",
        values=dur,
        fix="write a duration >= 0 (0 = bolus); for a modelled duration use RATE=-2",
    )
    ctx.fail(
        (dur > 0) & (rate != 0),
        "both DUR>0 and RATE!=0 on one record is ambiguous",
        column="DUR",
        values=dur,
        fix="give either RATE or DUR for an infusion, and set the other to 0",
    )
    ctx.fail(
        is_dose & (addl < 0),
        "negative ADDL (NONMEM 7.5 'empirical steady state') is not supported",
        column="ADDL",
        values=addl,
        fix="use SS=1 with II for a steady-state dose, or ADDL>=0",
    )
    _check_addl_size(np.where(is_dose, addl, 0.0), ctx)
    ctx.fail(
        is_dose & (ii < 0),
        "II must not be negative",
        column="II",
        values=ii,
        fix="write the dosing interval (> 0) in II",
    )


def _dose_amounts(w: dict[str, np.ndarray], is_dose: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Check AMT and II on doses (a steady-state constant infusion has AMT=0, II=0).

    Returns AMT with 0 on the records that are not doses.
    """
    amt, rate, ii, addl, ss = w["AMT"], w["RATE"], w["II"], w["ADDL"], w["SS"]
    n = len(amt)
    ss_inf = is_dose & (ss > 0) & (rate != 0) & (ii == 0) & (np.isnan(amt) | (amt == 0))
    ctx.fail(
        ss_inf & (rate == -2),
        "RATE=-2 (modelled duration) is meaningless for a steady-state constant infusion "
        "(AMT=0, II=0, SS>0)",
        column="RATE",
        values=rate,
        fix="use RATE>0 or RATE=-1 for a constant infusion, or give AMT and II for SS "
        "intermittent infusions",
    )
    ctx.fail(
        ss_inf & (addl > 0),
        "a steady-state constant infusion (AMT=0, RATE>0, II=0, SS>0) must have ADDL=0",
        column="ADDL",
        values=addl,
        fix="set ADDL=0",
    )
    amt = np.where(ss_inf & np.isnan(amt), 0.0, amt)
    ctx.fail(
        is_dose & np.isnan(amt),
        "AMT is missing on a dose record (EVID 1/4)",
        column="AMT",
        values=np.full(n, "."),
        fix="write the dose amount (> 0) in AMT, or make the record EVID=2",
    )
    ctx.fail(
        is_dose & (amt < 0),
        "AMT must be > 0 on a dose record (EVID 1/4)",
        column="AMT",
        values=amt,
        fix="write the dose amount (> 0) in AMT",
    )
    ctx.fail(
        is_dose & (amt == 0) & ~ss_inf,
        "AMT=0 on a dose record is only allowed for a steady-state constant infusion "
        "(AMT=0, RATE>0, II=0, SS=1)",
        column="AMT",
        values=amt,
        fix="write the dose amount (> 0) in AMT, or use EVID=2 for a record that is not a dose",
    )
    ctx.fail(
        is_dose & (addl > 0) & (ii == 0),
        "ADDL>0 needs an interdose interval II>0",
        column="II",
        values=ii,
        fix="write the dosing interval in II, or set ADDL=0",
    )
    ctx.fail(
        is_dose & (ss > 0) & (ii == 0) & ~ss_inf,
        "a steady-state dose (SS>0) needs II>0 (only a constant infusion AMT=0, RATE>0 has II=0)",
        column="II",
        values=ii,
        fix="write the dosing interval in II, or set SS=0",
    )
    return np.where(~is_dose, 0.0, amt)


def _censoring(
    r: _Reading, is_obs: np.ndarray, blq_method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CENS and LIMIT from a CENS column, or from BLQ flags and the LLOQ (``blq_method``).

    Returns (CENS, LIMIT, DV with the LLOQ on BLQ records, MDV forced by the BLQ handling or
    -1 where not forced).
    """
    frame, ctx, n, w = r.frame, r.ctx, r.n, r.w
    dv = w["DV"]
    cens = w["CENS"]
    limit = w["LIMIT"]
    mdv_forced = np.full(n, -1)  # -1 = not forced by BLQ handling
    upper = {str(c).strip().upper(): c for c in frame.columns if c not in r.names.values()}
    if r.present["CENS"]:
        cens = np.where(np.isnan(cens), 0.0, cens)
        ctx.fail(
            ~np.isin(cens, (-1, 0, 1)),
            "CENS must be -1 (right-censored), 0 (quantified) or 1 (left-censored, BLQ)",
            column="CENS",
            values=cens,
            fix="use CENS in {-1, 0, 1}",
        )
    else:
        blq_col = next((upper[k] for k in ("BLQ", "BLQFN", "BLQFL") if k in upper), None)
        cens = np.zeros(n)
        if blq_col is not None:
            flag = _blq_flags(frame[blq_col], str(blq_col), ctx)
            lloq_col = next((upper[k] for k in ("LLOQ", "ALLOQ") if k in upper), None)
            lloq = (
                _parse_numeric(frame[lloq_col], str(lloq_col), ctx)
                if lloq_col is not None
                else np.full(n, np.nan)
            )
            ctx.fail(np.isinf(lloq), f"{lloq_col} must be finite", column=str(lloq_col),
                     values=lloq, fix=f"write the assay LLOQ (a finite number) in {lloq_col}")
            blq_rows = is_obs & (flag == 1)
            lloq_name = str(lloq_col) if lloq_col is not None else "LLOQ"
            ctx.fail(
                blq_rows & np.isnan(lloq),
                f"{blq_col}=1 (below LLOQ) but the LLOQ is missing",
                column=lloq_name,
                values=np.full(n, "."),
                fix="give the assay LLOQ (in DV units) in an LLOQ column on every BLQ record",
            )
            cens = np.where(blq_rows, 1.0, 0.0)
            dv = np.where(blq_rows, lloq, dv)
            limit = np.where(blq_rows, 0.0 if blq_method == "m4" else -np.inf, limit)
            mdv_forced = np.where(blq_rows, 1 if blq_method == "m1" else 0, -1)
    ctx.fail(
        is_obs & (cens != 0) & np.isnan(dv),
        "a censored record (CENS=+-1) must hold the limit (LLOQ/ULOQ) in DV",
        column="DV",
        values=np.full(n, "."),
        fix="write the LLOQ (CENS=1) or ULOQ (CENS=-1) in DV",
    )
    return cens, limit, dv, mdv_forced


def _resolve_mdv(
    mdv_in: np.ndarray,
    dv: np.ndarray,
    is_obs: np.ndarray,
    evid: np.ndarray,
    mdv_forced: np.ndarray,
    ctx: _Ctx,
) -> tuple[np.ndarray, np.ndarray]:
    """MDV: checked, inferred from DV where missing, 1 on every record that is not an observation.

    Returns (MDV as int64, mask of observations given MDV=0 but no DV).
    """
    ctx.fail(
        ~np.isnan(mdv_in) & ~np.isin(mdv_in, (0, 1, 100, 101)),
        "MDV must be 0 or 1 (100/101 accepted)",
        column="MDV",
        values=mdv_in,
        fix="use MDV=0 for an observation, 1 otherwise",
    )
    no_dv = np.isnan(dv)
    mdv = np.where(np.isnan(mdv_in), np.where(no_dv, 1.0, 0.0), mdv_in)
    lost = is_obs & no_dv & np.isin(mdv, (0, 100))
    given_lost = lost & ~np.isnan(mdv_in)
    mdv = np.where(lost, 1.0, mdv)
    mdv = np.where(mdv_forced >= 0, mdv_forced, mdv)
    mdv = np.where(evid != 0, 1.0, mdv).astype(np.int64)
    return mdv, given_lost


def _absolute_time(
    time: np.ndarray, evid: np.ndarray, ctx: _Ctx
) -> tuple[np.ndarray, np.ndarray]:
    """Check the time order within subjects; ATIME (monotone across resets).

    Returns (subject codes in order of first appearance, ATIME).
    """
    ids = ctx.ids
    codes, _ = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    time_s = pd.Series(time)
    prev_time = time_s.groupby(codes).shift().to_numpy(dtype=float)
    prev_row = pd.Series(ctx.rows).groupby(codes).shift().to_numpy(dtype=float)
    is_reset = np.isin(evid, _RESET_EVIDS)
    back = (time < prev_time) & ~is_reset
    if back.any():
        i = int(np.flatnonzero(back)[0])
        subj = _py(ids[i])
        ctx.fail(
            back,
            f"TIME goes backwards within ID {subj} ({_show(time[i])} after "
            f"{_show(prev_time[i])} at row {int(prev_row[i])})",
            column="TIME",
            values=time,
            fix="sort the records by TIME within each subject, or start a new occasion with "
            "EVID=3/4",
        )
    drop = np.where(np.isnan(prev_time), 0.0, np.maximum(prev_time - time, 0.0))
    atime = time + pd.Series(drop).groupby(codes).cumsum().to_numpy(dtype=float)
    return codes, atime


def _warn_records(
    r: _Reading,
    codes: np.ndarray,
    atime: np.ndarray,
    evid: np.ndarray,
    cmt: np.ndarray,
    is_dose: np.ndarray,
    inferred: np.ndarray,
    given_lost: np.ndarray,
) -> None:
    """Warn about valid records that are probably not what the user meant.

    Called by :func:`read_nonmem` only: the warnings name the line that called it.
    """
    ctx, dv_in = r.ctx, r.w["DV"]
    _warn_noncontiguous(codes, ctx.ids, ctx, stacklevel=5)
    dv_on_dose = is_dose & ~np.isnan(dv_in) & ((dv_in != 0) | inferred)
    if dv_on_dose.any():
        idx = np.flatnonzero(dv_on_dose)
        _warn(
            f"DV is given on dose records at rows {ctx.rows_text(idx)}; pkpd ignores DV on "
            "dose records (NONMEM does too, while Monolix would read a row with both a dose "
            "and a measurement as a measurement). Fix: move the measurement to its own "
            "EVID=0 record, or write '.' in DV on dose records",
            stacklevel=4,
        )
    key = pd.DataFrame({"c": codes, "t": atime, "e": evid, "m": cmt})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        idx = np.flatnonzero(dup)
        _warn(
            f"duplicate records (same ID, TIME, EVID and CMT) at rows {ctx.rows_text(idx)}; "
            "they are all kept and processed in file order. Fix: remove repeated records if "
            "they are not intended",
            stacklevel=4,
        )
    if given_lost.any():
        _warn(
            f"observation records with MDV=0 but no DV at rows "
            f"{ctx.rows_text(np.flatnonzero(given_lost))}; they are treated as MDV=1 (not "
            "observations). Fix: write the measured value in DV or set MDV=1",
            stacklevel=4,
        )


def _assemble(
    r: _Reading,
    *,
    evid: np.ndarray,
    amt: np.ndarray,
    cmt: np.ndarray,
    dv: np.ndarray,
    mdv: np.ndarray,
    cens: np.ndarray,
    limit: np.ndarray,
    atime: np.ndarray,
) -> pd.DataFrame:
    """The event table: canonical columns, ROW and ATIME, then the user's columns."""
    w, ctx = r.w, r.ctx
    out = {
        "ID": ctx.ids,
        "TIME": w["TIME"].astype(float),
        "EVID": evid,
        "AMT": amt.astype(float),
        "CMT": cmt,
        "RATE": w["RATE"].astype(float),
        "II": w["II"].astype(float),
        "ADDL": w["ADDL"].astype(np.int64),
        "SS": w["SS"].astype(np.int64),
        "DV": dv.astype(float),
        "MDV": mdv,
        "DUR": w["DUR"].astype(float),
        "CENS": cens.astype(np.int64),
        "LIMIT": limit.astype(float),
        "ROW": ctx.rows.astype(np.int64),
        "ATIME": atime.astype(float),
    }
    result = pd.DataFrame(out)
    for col in r.frame.columns:
        if col in r.names.values():
            continue
        values = r.frame[col].reset_index(drop=True)
        result[col] = _parse_user_column(values) if r.from_text else values
    return result


def _blq_flags(values: pd.Series, col: str, ctx: _Ctx) -> np.ndarray:
    """0/1 flags from BLQ, BLQFN (numeric) or BLQFL ('Y'/'N'/blank)."""
    obj = values.astype(object)
    out = np.zeros(len(obj))
    for i, v in enumerate(obj):
        if _is_missing(v):
            continue
        text = str(v).strip().upper() if isinstance(v, str) else v
        if text in ("Y", "YES", "TRUE"):
            out[i] = 1
        elif text in ("N", "NO", "FALSE"):
            out[i] = 0
        else:
            try:
                x = float(text)
            except (TypeError, ValueError):
                x = np.nan
            if x not in (0.0, 1.0):
                raise DataError(
                    f"{col} must be 0/1 (or Y/N)",
                    row=int(ctx.rows[i]),
                    subject=_py(ctx.ids[i]),
                    column=col,
                    value=_show(v),
                    fix=f"write 1 (below LLOQ) or 0 in {col}",
                )
            out[i] = x
    return out


def _warn_noncontiguous(codes: np.ndarray, ids: np.ndarray, ctx: _Ctx,
                        stacklevel: int = 4) -> None:
    if len(codes) < 2:
        return
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    block_codes = codes[starts]
    seen: set[int] = set()
    again: list[int] = []
    for pos, c in zip(starts, block_codes):
        if c in seen:
            again.append(int(pos))
        seen.add(int(c))
    if again:
        parts = [f"ID {_py(ids[p])} at row {int(ctx.rows[p])}" for p in again[:_MAX_LISTED]]
        more = f" and {len(again) - _MAX_LISTED} more" if len(again) > _MAX_LISTED else ""
        _warn(
            "IDs are not contiguous: " + ", ".join(parts) + more + " reappear(s) after other "
            "subjects. NONMEM would start a new individual there; pkpd groups all records of "
            "an ID into one subject (in file order). Fix: sort the file by ID (keeping the "
            "time order), or give the second block its own ID",
            stacklevel=stacklevel,
        )


# ------------------------------------------------------------------------------------------------
# size limits and the row account
# ------------------------------------------------------------------------------------------------

#: at most this many doses (ADDL + 1) from one dose record
MAX_DOSES_PER_RECORD = 100_000
#: at most this many dose records in a table after ADDL expansion (explicit and implied)
MAX_DOSES_TOTAL = 2_000_000

_SIZE_FIX = ("use SS=1 (with II) for a dose at steady state instead of a long ADDL run, or a "
             "shorter horizon (a smaller ADDL)")


def _check_addl_size(addl: np.ndarray, ctx: _Ctx) -> None:
    """Refuse ADDL expansions beyond :data:`MAX_DOSES_PER_RECORD` per record or
    :data:`MAX_DOSES_TOTAL` in all, before any memory is spent on them. ``addl`` is 0 on
    non-dose records."""
    addl = np.asarray(addl, dtype=float)
    big = addl + 1 > MAX_DOSES_PER_RECORD
    if big.any():
        i = int(np.flatnonzero(big)[0])
        raise DataError(
            f"ADDL={_show(addl[i])} expands to {int(addl[i]) + 1} doses; at most "
            f"{MAX_DOSES_PER_RECORD} per record",
            row=int(ctx.rows[i]), subject=_py(ctx.ids[i]), column="ADDL", fix=_SIZE_FIX)
    dose = addl > 0
    total = float(np.sum(addl[dose] + 1))
    if total > MAX_DOSES_TOTAL:
        per = pd.Series(addl[dose] + 1).groupby(pd.Series(ctx.ids[dose], dtype=object),
                                               sort=False).sum()
        top = per.idxmax()
        raise DataError(
            f"the ADDL records expand to {int(total)} doses in all; at most {MAX_DOSES_TOTAL} "
            f"(ID {_py(top)} alone has {int(per[top])})", column="ADDL", fix=_SIZE_FIX)


_ACCOUNT_COLUMNS = ("line", "row", "ID", "EVID", "used", "reason")
_FOLDED = "classic rxode2 switch-off record: folded into its dose record (RATE/duration)"


def _record_reasons(df: pd.DataFrame, time_unit: str) -> list[str]:
    """What each record of an event table is, in words (for the row account)."""
    evid = df["EVID"].to_numpy()
    mdv = df["MDV"].to_numpy()
    cens = df["CENS"].to_numpy()
    base = np.select(
        [(evid == 0) & (mdv == 0) & (cens == 0), (evid == 0) & (mdv == 0), evid == 0,
         evid == 1, evid == 2, evid == 3],
        ["observation", "censored observation (CENS != 0)",
         "observation record without a value (MDV=1)", "dose", "other event (EVID 2)",
         "reset (EVID 3)"],
        "reset and dose (EVID 4)").astype(object)
    addl, ii, ss = df["ADDL"].to_numpy(), df["II"].to_numpy(), df["SS"].to_numpy()
    for i in np.flatnonzero(np.isin(evid, _DOSE_EVIDS) & ((addl > 0) | (ss > 0))):
        if addl[i] > 0:
            base[i] += (f" and {int(addl[i])} additional doses every {_show(ii[i])} "
                        f"{time_unit} (ADDL)")
        if ss[i] > 0:
            base[i] += f" at steady state (SS={int(ss[i])})"
    return list(base)


def _read_account(df: pd.DataFrame, lines: np.ndarray, info: dict | None, folded: list,
                  time_unit: str) -> pd.DataFrame:
    """The row account of :func:`read_nonmem`: every physical line after the header (or every
    DataFrame row), sorted by line."""
    parts = [pd.DataFrame({
        "line": np.asarray(lines, dtype=np.int64), "row": df["ROW"].to_numpy(),
        "ID": df["ID"].astype(object).to_numpy(), "EVID": df["EVID"].to_numpy(),
        "used": True, "reason": _record_reasons(df, time_unit)})]
    extra = [(ln, row, sid, _FOLDED) for ln, row, sid in folded]
    if info:
        extra += [(ln, row, None, reason) for ln, row, reason in info["skipped"]]
    if extra:
        parts.append(pd.DataFrame({
            "line": [e[0] for e in extra], "row": [e[1] for e in extra],
            "ID": pd.Series([e[2] for e in extra], dtype=object), "EVID": None,
            "used": False, "reason": [e[3] for e in extra]}))
    acc = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    acc["row"] = acc["row"].astype("Int64")
    acc["EVID"] = acc["EVID"].astype("Int64")
    acc = acc.sort_values("line", kind="stable").reset_index(drop=True)
    return acc[list(_ACCOUNT_COLUMNS)]


def row_account(table: EventTable, *, predicted: bool = False) -> pd.DataFrame:
    """What became of every input row of an event table.

    Parameters
    ----------
    table : EventTable
        From :func:`read_nonmem` (it carries the account of its source in ``table.rows``; the
        account survives :meth:`EventTable.with_units` and :func:`expand_addl`). For a table
        built otherwise, the account lists its records.
    predicted : bool, default False
        Add "; predicted" to the EVID 0/2 records (``pkpd predict`` writes a prediction there).

    Returns
    -------
    pandas.DataFrame
        Columns ``line`` (physical 1-based line in the file; for a DataFrame source its position
        1..N), ``row`` (ROW, as in error messages; empty for lines before the header), ``ID``,
        ``EVID`` (empty for lines that are not records), ``used`` (the line became an event
        record) and ``reason``: what the record is (``observation``, ``dose and 27 additional
        doses every 24 h (ADDL)``, ``reset (EVID 3)``, ...) or why the line is not one (blank,
        ``#``/``@`` comment, ``C`` comment record, repeated header, ``TABLE NO.`` banner, classic
        rxode2 switch-off record). For a file, ``len(account)`` is the number of lines minus the
        header line.
    """
    if table.rows is not None:
        acc = table.rows.copy()
    else:
        df = table.df
        if "ADDL_SRC" in df.columns:
            df = df[df["ADDL_SRC"] == 0]
        acc = _read_account(df, df["ROW"].to_numpy(), None, [], table.time_unit)
    if predicted:
        hit = acc["used"].to_numpy(bool) & acc["EVID"].isin([0, 2]).to_numpy(bool)
        acc.loc[hit, "reason"] = acc.loc[hit, "reason"] + "; predicted"
    return acc


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def write_nonmem(table: EventTable, path: str | os.PathLike) -> Path:
    """Write an event table as a NONMEM-ready CSV file, atomically.

    Columns: ``ID, TIME, EVID, AMT, CMT, RATE, II, ADDL, SS, DV, MDV``, then DUR, CENS and
    LIMIT if any record uses them, then ROW if it is not simply 1..N (so that row numbers in
    later messages still point at the original source), then the user's columns. ATIME is
    derived and not written. Missing values are written as ``.``. The file is written to a
    temporary file in the same folder and moved into place with :func:`os.replace`.

    Parameters
    ----------
    table : EventTable
    path : str or path-like

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    ``read_nonmem(write_nonmem(t, p))`` equals ``t`` for tables returned by :func:`read_nonmem`.
    A table from :func:`expand_addl` can be written too, but implied doses that fall after a
    reset where TIME restarts will not read back (TIME would go backwards).
    """
    if not isinstance(table, EventTable):
        raise TypeError(f"write_nonmem needs an EventTable, got {type(table)!r}")
    df = table.df
    cols = list(NONMEM_COLUMNS)
    if (df["DUR"] != 0).any():
        cols.append("DUR")
    if (df["CENS"] != 0).any():
        cols.append("CENS")
    if df["LIMIT"].notna().any():
        cols.append("LIMIT")
    if not np.array_equal(df["ROW"].to_numpy(), np.arange(1, len(df) + 1)):
        cols.append("ROW")
    reserved = set(CANONICAL_COLUMNS) | set(DERIVED_COLUMNS)
    cols += [c for c in df.columns if c not in reserved]
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            df[cols].to_csv(fh, index=False, na_rep=".", lineterminator="\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


# ------------------------------------------------------------------------------------------------
# ADDL expansion
# ------------------------------------------------------------------------------------------------


def expand_addl(
    table: EventTable,
    *,
    tie_order: Literal["file", "dose_first", "obs_first"] = "file",
) -> EventTable:
    """Expand ADDL into explicit dose records and fix the processing order (CONVENTIONS §1.5).

    For every dose record (EVID 1 or 4) with ADDL = n > 0 and II = tau > 0, emit copies
    k = 1..n at TIME + k*tau (ATIME + k*tau) with ADDL=0, EVID=1 (also when the source is EVID
    4: only the first dose resets), SS=0, MDV=1, the same AMT/RATE/DUR/CMT (RATE -1/-2 kept), II
    kept (for time-after-dose), all other columns and ROW copied from the source, and
    ``ADDL_SRC = k`` (0 on the original records). The source record keeps everything but its
    ADDL is set to 0, so that no record carries ADDL afterwards and a second expansion is a
    no-op.

    Implied doses are never dropped, even after a later reset (EVID 3/4) or SS=1 record that
    cancels them: the engine cancels them itself and needs to see them to do so.

    Parameters
    ----------
    table : EventTable
    tie_order : {"file", "dose_first", "obs_first"}, default "file"
        Order of records at the same ATIME. "file" (NONMEM): implied ADDL doses first, then the
        explicit records in file order. "dose_first" (rxode2): resets (EVID 3), then doses
        (implied, then explicit), then the rest. "obs_first": EVID 0 records, then implied doses,
        then the other explicit records. Within each group, file order.

    Returns
    -------
    EventTable
        Subjects in order of first appearance, each subject's records contiguous and sorted by
        ATIME with ties as above; new columns ``ADDL_SRC`` and ``SEQ`` (0..N-1, the processing
        order within the subject).

    Raises
    ------
    DataError
        If ADDL > 0 with II = 0, or the expansion would exceed :data:`MAX_DOSES_PER_RECORD`
        doses from one record or :data:`MAX_DOSES_TOTAL` in all.

    Warns
    -----
    PkpdDataWarning
        When an observation (EVID 0) falls exactly on an implied dose time: NONMEM gives the
        dose first, so a "trough" drawn there is post-dose (a classic data-prep error).

    Notes
    -----
    An implied dose time within a relative 1e-9 of an explicit record's ATIME (floating-point
    error of TIME + k*II) is set exactly to it, so that ties are recognised.

    Examples
    --------
    >>> df = pd.DataFrame({"ID": 1, "TIME": [10.0, 20.0], "AMT": 10.0, "II": [12.0, 0.0],
    ...                    "ADDL": [2, 0]})
    >>> expand_addl(read_nonmem(df)).df["TIME"].tolist()
    [10.0, 20.0, 22.0, 34.0]
    """
    if tie_order not in ("file", "dose_first", "obs_first"):
        raise ValueError(
            f"tie_order must be 'file', 'dose_first' or 'obs_first', got {tie_order!r}"
        )
    df = table.df.reset_index(drop=True).copy()
    n = len(df)
    if "ADDL_SRC" in df.columns:
        df["ADDL_SRC"] = df["ADDL_SRC"].fillna(0).astype(np.int64)
    else:
        df["ADDL_SRC"] = np.zeros(n, dtype=np.int64)
    evid = df["EVID"].to_numpy()
    addl = df["ADDL"].to_numpy()
    ii = df["II"].to_numpy(dtype=float)
    is_src = np.isin(evid, _DOSE_EVIDS) & (addl > 0)
    _check_addl_sources(df, is_src, addl, ii)
    copies, rep_idx, k = _implied_doses(df, is_src, addl, ii)
    df.loc[is_src, "ADDL"] = 0

    codes_all, _ = pd.factorize(df["ID"].astype(object), sort=False)
    explicit_implied = df["ADDL_SRC"].to_numpy() > 0
    if len(copies):
        _snap_implied_times(copies, codes_all[rep_idx], codes_all, df)

    full = pd.concat([df, copies], ignore_index=True)
    codes = np.concatenate([codes_all, codes_all[rep_idx]])
    implied = np.concatenate([explicit_implied, np.ones(len(copies), dtype=bool)])
    base_pos = np.concatenate([np.arange(n), rep_idx])
    kk = np.concatenate([df["ADDL_SRC"].to_numpy(), k])
    order = _processing_order(full, codes, implied, base_pos, kk, tie_order)
    full = full.iloc[order].reset_index(drop=True)
    implied = implied[order]
    full["SEQ"] = full.groupby(codes[order], sort=False).cumcount().astype(np.int64)
    _warn_obs_at_implied_doses(full, codes[order], implied)
    cols = [c for c in full.columns if c not in ("ADDL_SRC", "SEQ")] + ["ADDL_SRC", "SEQ"]
    return EventTable(
        full[cols], time_unit=table.time_unit, amt_unit=table.amt_unit, dv_unit=table.dv_unit,
        rows=table.rows,
    )


def _check_addl_sources(
    df: pd.DataFrame, is_src: np.ndarray, addl: np.ndarray, ii: np.ndarray
) -> None:
    """ADDL sources (doses with ADDL>0) need II>0, and must stay within the expansion limits."""
    if np.any(is_src & ~(ii > 0)):
        i = int(np.flatnonzero(is_src & ~(ii > 0))[0])
        raise DataError(
            "ADDL>0 needs an interdose interval II>0",
            row=int(df["ROW"].iloc[i]),
            subject=_py(df["ID"].iloc[i]),
            column="II",
            value=_show(ii[i]),
            fix="write the dosing interval in II, or set ADDL=0",
        )
    _check_addl_size(np.where(is_src, addl, 0),
                     _Ctx(df["ROW"].to_numpy(), df["ID"].astype(object).to_numpy()))


def _implied_doses(
    df: pd.DataFrame, is_src: np.ndarray, addl: np.ndarray, ii: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The implied doses k = 1..ADDL of every source record, at TIME + k*II.

    Returns (the implied dose records, the position of each one's source in ``df``, k).
    """
    src_idx = np.flatnonzero(is_src)
    reps = addl[src_idx].astype(np.int64)
    rep_idx = np.repeat(src_idx, reps)
    k = (
        np.concatenate([np.arange(1, r + 1) for r in reps])
        if reps.size
        else np.zeros(0, dtype=np.int64)
    )
    copies = df.iloc[rep_idx].copy()
    shift = k * ii[rep_idx]
    copies["TIME"] = copies["TIME"].to_numpy(dtype=float) + shift
    copies["ATIME"] = copies["ATIME"].to_numpy(dtype=float) + shift
    copies["ADDL"] = 0
    copies["EVID"] = 1
    copies["SS"] = 0
    copies["MDV"] = 1
    copies["ADDL_SRC"] = k.astype(np.int64)
    return copies, rep_idx, k


def _snap_implied_times(
    copies: pd.DataFrame, c_codes: np.ndarray, codes_all: np.ndarray, df: pd.DataFrame
) -> None:
    """Snap implied dose times onto explicit record times that differ only by rounding error.

    An implied ATIME within a relative ``_SNAP_RTOL`` of an ATIME of the same subject in ``df``
    is set exactly to it (TIME moves with it); ``copies`` is changed in place. ``c_codes`` and
    ``codes_all`` are the subject codes of ``copies`` and ``df``.
    """
    c_at = copies["ATIME"].to_numpy(dtype=float)
    e_at = df["ATIME"].to_numpy(dtype=float)
    new_at = c_at.copy()
    for code in np.unique(c_codes):
        sel = np.flatnonzero(c_codes == code)
        ref = np.sort(e_at[codes_all == code])
        pos = np.clip(np.searchsorted(ref, c_at[sel]), 1, max(len(ref) - 1, 1))
        for cand in (pos - 1, np.minimum(pos, len(ref) - 1)):
            near = ref[cand]
            close = np.abs(near - c_at[sel]) <= _SNAP_RTOL * np.maximum(1.0, np.abs(near))
            new_at[sel[close]] = near[close]
    delta = new_at - c_at
    copies["ATIME"] = new_at
    copies["TIME"] = copies["TIME"].to_numpy(dtype=float) + delta


def _processing_order(
    full: pd.DataFrame,
    codes: np.ndarray,
    implied: np.ndarray,
    base_pos: np.ndarray,
    kk: np.ndarray,
    tie_order: str,
) -> np.ndarray:
    """The order in which the records are processed: by subject, ATIME, then ``tie_order``.

    Within a tie group, by source position ``base_pos``, then ADDL index ``kk``.
    """
    ev = full["EVID"].to_numpy()
    if tie_order == "file":
        rank = np.where(implied, 0, 1)
    elif tie_order == "dose_first":
        rank = np.where(
            ~implied & (ev == 3), 0, np.where(implied, 1, np.where(np.isin(ev, _DOSE_EVIDS), 2, 3))
        )
    else:
        rank = np.where(~implied & (ev == 0), 0, np.where(implied, 1, 2))
    atime = full["ATIME"].to_numpy(dtype=float)
    return np.lexsort((kk, base_pos, rank, atime, codes))


def _warn_obs_at_implied_doses(full: pd.DataFrame, f_codes: np.ndarray,
                               implied: np.ndarray) -> None:
    """Warn about observations exactly at an implied dose time (called by expand_addl only)."""
    f_at = full["ATIME"].to_numpy(dtype=float)
    dose_keys = set(zip(f_codes[implied].tolist(), f_at[implied].tolist()))
    obs = full["EVID"].to_numpy() == 0
    hits = [i for i in np.flatnonzero(obs) if (int(f_codes[i]), float(f_at[i])) in dose_keys]
    if hits:
        listed = ", ".join(
            f"row {int(full['ROW'].iloc[i])} (ID {_py(full['ID'].iloc[i])}, TIME "
            f"{_show(full['TIME'].iloc[i])})"
            for i in hits[:_MAX_LISTED]
        )
        more = f" and {len(hits) - _MAX_LISTED} more" if len(hits) > _MAX_LISTED else ""
        _warn(
            f"observations fall exactly on an implied (ADDL) dose time: {listed}{more}. As in "
            "NONMEM the dose is given first, so these samples are post-dose. Fix: if they are "
            "troughs, move the sample time slightly earlier (e.g. by 1e-3 h) or make the dose "
            "explicit after the observation",
            stacklevel=4,
        )
