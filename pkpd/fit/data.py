"""Observation data of a population fit: reading, the spec's value rules, and the row account.

Every input row ends up either used or dropped with a reason (``FitData.rows``); nothing is lost
silently. Times are converted once, here, to the model's time unit.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, SpecError
from ..io import detect_separator, read_text_file
from ..units import time_factor

__all__ = ["FitData", "read_fit_data", "progression_cut"]


@dataclass
class FitData:
    """Observations of one fit, one entry per used observation (``obs_*``)."""

    subjects: list[str]
    obs_subject: np.ndarray          # int index into subjects
    obs_time: np.ndarray             # model time unit
    y: np.ndarray                    # dv unit; for censored rows the limit
    censored: np.ndarray             # bool: y is an upper limit (M3: P(Y <= limit))
    covariates: dict[str, np.ndarray] = field(default_factory=dict)   # (n_subjects,)
    arms: list[str] | None = None
    rows: pd.DataFrame | None = None    # the row account
    sha256: str = ""
    events: object = None            # EventTable for PK fits
    obs_row: np.ndarray | None = None   # source ROW of each used observation
    meta: dict = field(default_factory=dict)
    #: time-varying exposure records {"subject", "time" (model unit, shifted), "value"}, sorted
    #: by subject then time; None unless [model] exposure = { column = ... }
    exposure: dict | None = None

    @property
    def n_obs(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"subject": np.asarray(self.subjects)[self.obs_subject],
                           "time": self.obs_time, "y": self.y, "censored": self.censored})
        if self.arms is not None:
            df["arm"] = np.asarray(self.arms)[self.obs_subject]
        return df


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_fit_data(spec) -> FitData:
    """Read the spec's data (``long`` or ``nonmem``) and apply its rules."""
    d = spec.data
    if d.format == "nonmem":
        return _read_nonmem(spec)
    if d.format == "long":
        df = read_long_file(d.path)
        out = long_table(df, spec)
        out.sha256 = _sha(d.path)
        return out
    raise SpecError("simulated data are made by pkpd.fit.simulate_data (format 'simulate')")


#: cell values read as missing: a true blank, NONMEM's '.', and NA/NaN (as in docs/events.md)
MISSING_TOKENS = ("", ".", "NA", "NaN", "nan", "NAN")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")


def read_long_file(path) -> pd.DataFrame:
    """A long-format fit data file as a DataFrame, with the file checks every reader shares.

    The file must be UTF-8 (a byte-order mark is allowed), not empty, with a header and at
    least one data row. The separator is found from the header line: comma, semicolon, tab or
    pipe, else whitespace; in a ``;``-separated file decimal commas (``1,5``) are decimal points
    (European Excel). Only blank cells, ``.``, ``NA`` and ``NaN`` are missing; any other text is
    kept as text, so that :func:`long_table` can refuse it by row. Blank lines are kept (as
    all-missing rows) so that row numbers stay the data row numbers of the file. The data row
    of the header's next line is 1; ``df.attrs["header_line"]`` is the header's line number.
    """
    text = read_text_file(path, "fit data file")
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.strip())
    sep = detect_separator(lines[head])
    if not any(ln.strip() for ln in lines[head + 1:]):
        raise DataError(f"fit data file {str(path)!r} has a header but no data rows",
                        fix="add the observations (one row each) below the header")
    kw = {"decimal": ","} if sep == ";" else {}
    df = pd.read_csv(io.StringIO("\n".join(lines[head:]) + "\n"),
                     sep=sep if sep is not None else r"\s+", keep_default_na=False,
                     na_values=list(MISSING_TOKENS), skip_blank_lines=False, low_memory=False,
                     **kw)
    df = df.iloc[: _last_nonblank(lines, head)]
    df.attrs["header_line"] = head + 1
    df.attrs["separator"] = sep
    return df


def _last_nonblank(lines, head) -> int:
    """Data rows up to the last non-blank line (trailing blank lines are not rows)."""
    n = len(lines)
    while n > head + 1 and not lines[n - 1].strip():
        n -= 1
    return n - head - 1


def _numbers(df: pd.DataFrame, col: str, check: np.ndarray, subj, hint: str = "") -> np.ndarray:
    """Column ``col`` as float64: missing cells give NaN; on rows where ``check`` is True, text
    that is not a number, and infinite values, raise a DataError naming the row, subject, column
    and value. Rows outside ``check`` (filtered out, or handled by a flag rule) give NaN."""
    s = df[col]
    semicolon = df.attrs.get("separator") == ";"
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        x = s.to_numpy(dtype=float, na_value=np.nan)
        bad = np.zeros(len(x), bool)
    else:
        x = np.full(len(s), np.nan)
        bad = np.zeros(len(s), bool)
        for i, v in enumerate(s.astype(object).to_numpy()):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            t = str(v).strip()
            if t in MISSING_TOKENS:
                continue
            if semicolon and _DECIMAL_COMMA.match(t):
                t = t.replace(",", ".")
            try:
                x[i] = float(t)
            except ValueError:
                bad[i] = True
    check = np.asarray(check, bool)
    for mask, problem, text in ((bad & check, f"{col} holds text that is not a number", True),
                                (np.isinf(x) & check, f"{col} is infinite", False)):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            v = s.iloc[i]
            fix = "write a finite number, or leave the cell blank (or '.') if it is missing"
            if isinstance(v, str) and _DECIMAL_COMMA.match(v.strip()):
                fix = (f"write {v.strip().replace(',', '.')}: decimal commas are read only in "
                       "';'-separated files")
            elif semicolon and isinstance(v, str) and "," in v:
                fix += ("; the file is read as semicolon-separated, with decimal commas (1,5 is "
                        "read as 1.5)")
            elif text:
                fix += hint
            more = int(mask.sum()) - 1
            also = f" ({more} more such row{'s' if more > 1 else ''})" if more else ""
            raise DataError(problem + also, row=i + 1, subject=subj[i], column=col,
                            value=v if isinstance(v, str) else float(x[i]), fix=fix)
    return x


def _require(df: pd.DataFrame, cols, where: str):
    missing = [c for c in cols if c and c not in df.columns]
    if missing:
        raise DataError(f"{where}: column(s) {', '.join(missing)} not found (columns are: "
                        f"{', '.join(map(str, df.columns))})",
                        fix="fix the column mapping in the spec's [data] section")


def long_table(df: pd.DataFrame, spec) -> FitData:
    """One row per observation: subject key column(s), time, dv, optional flag and arm."""
    d = spec.data
    _require(df, [*d.subject, d.time, d.dv, d.flag, d.arm, *d.covariates, *d.filter,
                  *_extra_columns(spec)], f"data file {d.path}")
    attrs = dict(df.attrs)
    df = df.reset_index(drop=True)
    df.attrs.update(attrs)
    rows = pd.DataFrame({"row": np.arange(1, len(df) + 1), "used": False, "reason": ""})
    rows.insert(1, "line", rows["row"] + int(attrs.get("header_line", 1)))
    keep = ~df.isna().all(axis=1).to_numpy()
    rows.loc[~keep, "reason"] = "blank line"
    for col, want in d.filter.items():
        want = want if isinstance(want, list) else [want]
        hit = df[col].isin(want).to_numpy()
        rows.loc[~hit & keep, "reason"] = f"filter {col} not in {want}"
        keep &= hit
    in_scope = keep.copy()
    subj = df[list(d.subject)].astype(str).agg(":".join, axis=1).to_numpy()
    flags = (df[d.flag].fillna("").astype(str).str.strip().to_numpy() if d.flag
             else np.full(len(df), "", dtype=object))
    ruled = keep & np.isin(flags, [str(k) for k in d.flag_values])
    dropped = keep & np.isin(flags, [str(k) for k, r in d.flag_values.items() if r == "drop"])
    t = _numbers(df, d.time, keep & ~dropped, subj)
    y = _numbers(df, d.dv, keep & ~ruled, subj, hint=(
        f"; to read a code such as '<LOQ' in {d.dv}, declare it in [data]: flag = '{d.dv}' "
        "and flag_values = { '<LOQ' = 'censor' } (with lloq), or = 'missing' or 'drop'"))
    cens = np.zeros(len(df), bool)
    if d.flag:
        _flag_rules(d, flags, keep, y, cens, rows)
    bad_t = keep & ~np.isfinite(t)
    if bad_t.any():
        _missing(d, rows, bad_t, "missing time", df, subj)
        keep &= ~bad_t
    _zero_rule(d, keep, y, cens, rows)
    bad_y = keep & ~np.isfinite(y)
    if bad_y.any():
        _missing(d, rows, bad_y, "missing value", df, subj)
        keep &= ~bad_y
    neg = keep & (y < 0)
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise DataError("negative observation", row=i + 1, subject=subj[i], column=d.dv,
                        value=y[i], fix="observations must be >= 0")
    idx = np.flatnonzero(keep)
    order = np.lexsort((t[idx], subj[idx]))
    idx = idx[order]
    if d.stop_at_progression:
        cut = progression_cut(subj[idx], t[idx], y[idx])
        rows.loc[idx[~cut], "reason"] = "after the first progression (stop_at_progression)"
        idx = idx[cut]
    if idx.size == 0:
        raise DataError(f"data file {d.path}: no observation is left after the spec's rules",
                        fix="check [data] filter and flag rules")
    rows.loc[idx, "used"] = True
    rows.loc[idx, "reason"] = "used"
    subjects, inv = np.unique(subj[idx], return_inverse=True)
    # first-appearance order of subjects (stable, as in the file)
    first = pd.unique(subj[idx])
    pos = {s: i for i, s in enumerate(first)}
    inv = np.array([pos[s] for s in subj[idx]])
    fac = time_factor(d.time_unit, spec.time_unit)
    covs = _subject_covariates(df, d, subj, in_scope, first)
    arms = None
    if d.arm:
        arms = list(df[d.arm].astype(str).groupby(subj).first().loc[first])
    rows["subject"] = subj
    scope = in_scope & ~dropped & np.isfinite(t)
    origin = _long_origin(df, d, subj, t, idx, first, inv, scope)
    ex = _exposure_column(spec)
    exposure = None
    if ex:
        sel = scope & np.isin(subj, first)
        e = _numbers(df, ex, sel, subj)
        sel &= np.isfinite(e)
        exposure = _exposure_records(list(first), np.array([pos.get(s, -1) for s in subj[sel]]),
                                     t[sel], e[sel], origin, fac, ex, np.flatnonzero(sel) + 1)
    return FitData(subjects=list(first), obs_subject=inv, obs_time=(t[idx] - origin[inv]) * fac,
                   y=y[idx], censored=cens[idx], covariates=covs, arms=arms, rows=rows,
                   obs_row=idx + 1, exposure=exposure,
                   meta={"time_factor": fac, "time_zero": d.time_zero,
                         "time_origin": origin})


def _exposure_column(spec) -> str | None:
    ex = getattr(spec, "exposure", None)
    return ex.column if ex is not None and ex.kind == "column" else None


def _extra_columns(spec) -> list[str]:
    """Data columns the spec names outside [data]'s mapping: the exposure and time_zero ones."""
    tz = spec.data.time_zero
    return [c for c in (_exposure_column(spec), tz.get("column") if isinstance(tz, dict)
                        else None) if c]


def _exposure_records(names, sidx, time, value, origin, fac, column, rows) -> dict:
    """Exposure records sorted by subject then time, times shifted to each subject's origin
    and converted to the model unit."""
    from .exposure import check_records
    check_records(names, sidx, time, value, column, rows)
    tt = (time - origin[sidx]) * fac
    o = np.lexsort((tt, sidx))
    return {"subject": sidx[o], "time": tt[o], "value": value[o]}


def _long_origin(df, d, subj, t, idx, first, inv, scope) -> np.ndarray:
    """Each subject's time origin (data time unit) under ``[data] time_zero``."""
    n = len(first)
    tz = d.time_zero
    if tz == "data":
        return np.zeros(n)
    if tz == "first_observation":
        lost = sorted(set(subj[scope]) - set(first))
        if lost:
            raise DataError("no observation is left for this subject after the spec's rules, "
                            "so time_zero = 'first_observation' cannot place its records",
                            subject=lost[0], fix="remove the subject's rows (a [data] filter), "
                            "or use time_zero = { column = 'NAME' }")
        origin = np.full(n, np.inf)
        np.minimum.at(origin, inv, t[idx])
        return origin
    col = tz["column"]
    v = pd.Series(_numbers(df, col, scope, subj)).groupby(subj).first()
    return _per_subject(v, first, col)


def _per_subject(v: pd.Series, first, col) -> np.ndarray:
    per = v.reindex(list(first))
    if per.isna().any():
        s = per[per.isna()].index[0]
        raise DataError(f"time_zero column {col} has no value for this subject", subject=s,
                        column=col, fix=f"fill {col} (the subject's origin time, in the data's "
                        "time unit) on at least one of its rows")
    return per.to_numpy(float)


def _flag_rules(d, flags, keep, y, cens, rows) -> None:
    """Apply ``[data] flag_values`` in place: a number replaces the value, 'missing' blanks it,
    'censor' makes it censored at lloq, 'drop' drops the row (``keep`` and the row account)."""
    for fval, rule in d.flag_values.items():
        hit = keep & (flags == fval)
        if isinstance(rule, (int, float)) and not isinstance(rule, bool):
            y[hit] = float(rule)
        elif rule == "missing":
            y[hit] = np.nan
        elif rule == "censor":
            y[hit] = _lloq(d, fval)
            cens[hit] = True
        elif rule == "drop":
            rows.loc[hit, "reason"] = f"flag {fval}: dropped by the spec"
            keep &= ~hit
        else:
            raise SpecError(f"[data] flag_values {fval} = {rule!r}. Fix: a number "
                            "(replacement value), 'missing', 'censor' or 'drop'")


def _zero_rule(d, keep, y, cens, rows) -> None:
    """Apply ``[data] zero`` in place to kept, uncensored zero values: a number replaces them,
    'censor' makes them censored at lloq, 'drop' drops the rows."""
    zero = keep & ~cens & (y == 0)
    if zero.any():
        if isinstance(d.zero, (int, float)) and not isinstance(d.zero, bool):
            y[zero] = float(d.zero)
        elif d.zero == "censor":
            y[zero] = _lloq(d, "0")
            cens[zero] = True
        elif d.zero == "drop":
            rows.loc[zero, "reason"] = "value 0 dropped by the spec (zero = 'drop')"
            keep &= ~zero


def _subject_covariates(df, d, subj, in_scope, first) -> dict[str, np.ndarray]:
    """Each covariate's first value per subject (subjects in ``first`` order), read on the rows
    in scope; a subject without a value is an error."""
    covs = {}
    for c in d.covariates:
        v = pd.Series(_numbers(df, c, in_scope, subj))
        per = v.groupby(subj).first()
        if per.loc[first].isna().any():
            s = per.loc[first][per.loc[first].isna()].index[0]
            raise DataError(f"covariate {c} is missing for this subject", subject=s, column=c,
                            fix="fill it, or remove the subject from the data")
        covs[c] = per.loc[first].to_numpy(float)
    return covs


def _lloq(d, what):
    if d.lloq is None:
        raise SpecError(f"[data]: censoring {what} needs a limit. Fix: set lloq = 5.0 (in the "
                        "dv unit) in [data]")
    return float(d.lloq)


def _missing(d, rows, mask, what, df, subj):
    if d.missing == "error":
        i = int(np.flatnonzero(mask)[0])
        raise DataError(what, row=i + 1, subject=subj[i],
                        fix="fill it, or set missing = 'drop' in [data] to drop such rows")
    rows.loc[mask, "reason"] = f"{what} (missing = 'drop')"


def progression_cut(subj, t, y, rel: float = 0.2, abs_mm: float = 5.0) -> np.ndarray:
    """Mask keeping each subject's observations up to and including the first one that is
    >= 20% and >= 5 mm above the running nadir (RECIST 1.1 target-lesion PD), rows sorted by
    subject then time."""
    keep = np.ones(len(y), bool)
    start = 0
    n = len(y)
    while start < n:
        end = start
        while end < n and subj[end] == subj[start]:
            end += 1
        nadir = np.inf
        stopped = False
        for i in range(start, end):
            if stopped:
                keep[i] = False
                continue
            if np.isfinite(nadir) and y[i] >= (1 + rel) * nadir and y[i] - nadir >= abs_mm:
                stopped = True
            nadir = min(nadir, y[i])
        start = end
    return keep


def _read_nonmem(spec) -> FitData:
    from ..dosing.events import read_nonmem
    d = spec.data
    table = read_nonmem(d.path, time_unit=d.time_unit)
    df = table.df
    _require(df, list(d.covariates), f"data file {d.path}")
    obs = df[(df["EVID"] == 0) & (df["MDV"] == 0)].copy()
    if obs.empty:
        raise DataError(f"data file {d.path}: no observation records (EVID 0 with MDV 0 and a "
                        "DV)", column="DV", fix="check that the file has a DV column and "
                        "observation records")
    rows = _nonmem_rows(table)
    ids = list(pd.unique(df["ID"]))
    pos = {s: i for i, s in enumerate(ids)}
    yv = obs["DV"].to_numpy(float)
    bad = ~np.isfinite(yv)
    if bad.any():
        r = obs.iloc[int(np.flatnonzero(bad)[0])]
        raise DataError("observation record without DV", row=int(r["ROW"]), subject=r["ID"],
                        fix="set MDV=1 on records without a value")
    cens = (obs["CENS"].to_numpy() == 1) if "CENS" in obs else np.zeros(len(obs), bool)
    covs = {}
    for c in d.covariates:
        v = pd.Series(table.numeric(c)).groupby(df["ID"].to_numpy(), sort=False).first()
        if v.loc[ids].isna().any():
            s = v.loc[ids][v.loc[ids].isna()].index[0]
            raise DataError(f"covariate {c} is missing for this subject", subject=s, column=c,
                            fix="fill it on at least one record")
        covs[c] = v.loc[ids].to_numpy(float)
    fac = time_factor(d.time_unit, spec.time_unit)
    names = [str(s) for s in ids]
    obs_s = np.array([pos[s] for s in obs["ID"]])
    origin = _nonmem_origin(table, d, ids, obs, obs_s)
    exposure = None
    ex = _exposure_column(spec)
    if ex:
        _require(df, [ex], f"data file {d.path}")
        e = table.numeric(ex)
        tt = df["TIME"].to_numpy(float)
        sel = np.isfinite(e) & np.isfinite(tt)
        exposure = _exposure_records(names, np.array([pos[s] for s in df["ID"][sel]], int),
                                     tt[sel], e[sel], origin, fac, ex,
                                     df["ROW"].to_numpy()[sel])
    return FitData(subjects=names, obs_subject=obs_s,
                   obs_time=(obs["TIME"].to_numpy(float) - origin[obs_s]) * fac, y=yv,
                   censored=cens, covariates=covs, rows=rows, sha256=_sha(d.path), events=table,
                   obs_row=obs["ROW"].to_numpy(), exposure=exposure,
                   meta={"time_factor": fac, "time_zero": d.time_zero, "time_origin": origin})


def _nonmem_origin(table, d, ids, obs, obs_s) -> np.ndarray:
    """Each subject's time origin (data time unit) under ``[data] time_zero``, NONMEM format."""
    df = table.df
    tz = d.time_zero
    if tz == "data":
        return np.zeros(len(ids))
    if tz == "first_observation":
        have = set(obs["ID"])
        lost = [s for s in ids if s not in have]
        if lost:
            raise DataError("this subject has no observation record, so time_zero = "
                            "'first_observation' cannot place its records", subject=lost[0],
                            fix="remove the subject, or use time_zero = 'first_dose'")
        origin = np.full(len(ids), np.inf)
        np.minimum.at(origin, obs_s, obs["TIME"].to_numpy(float))
        return origin
    if tz == "first_dose":
        doses = df[df["EVID"].isin([1, 4])]
        v = doses.groupby("ID", sort=False)["TIME"].min()
        missing = [s for s in ids if s not in v.index]
        if missing:
            raise DataError("this subject has no dose record (EVID 1 or 4), so time_zero = "
                            "'first_dose' cannot place it", subject=missing[0],
                            fix="add its dose records, remove the subject, or use "
                            "time_zero = 'first_observation'")
        return v.loc[ids].to_numpy(float)
    col = tz["column"]
    _require(df, [col], f"data file {d.path}")
    v = pd.Series(table.numeric(col)).groupby(df["ID"].to_numpy(), sort=False).first()
    return _per_subject(v, ids, col)


def _nonmem_rows(table) -> pd.DataFrame:
    """The row account of a NONMEM-format fit file: every physical line after the header (see
    :func:`pkpd.dosing.events.row_account`), with ``used`` meaning "enters the fit": observations
    (reason ``used``), doses and resets; EVID 2 records, records without a value (MDV=1) and
    lines that are not records (blank, comments, ``C`` records, repeated headers) are not."""
    from ..dosing.events import row_account
    acc = row_account(table).rename(columns={"ID": "subject"})
    rec = np.flatnonzero(acc["used"].to_numpy(bool))     # the records, in file order
    df = table.df
    evid, mdv = df["EVID"].to_numpy(), df["MDV"].to_numpy()
    obs, mdv1, other = (evid == 0) & (mdv == 0), (evid == 0) & (mdv != 0), evid == 2
    acc.loc[rec[obs], "reason"] = "used"
    acc.loc[rec[mdv1], "reason"] = "MDV=1: not an observation"
    acc.loc[rec[mdv1 | other], "used"] = False
    return acc[["row", "line", "subject", "EVID", "used", "reason"]]
