"""CDISC helpers shared by the SDTM and ADaM readers: reading a domain file, collecting domains
from a folder, column lookups.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ._common import _number, _read_sas, _read_table, _text

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


def _upper_texts(df: pd.DataFrame, name: str | None) -> list[str]:
    """:func:`_texts` upper-cased (codes and flags such as TRTESTCD, PARAMCD, ANL01FL)."""
    return [t.upper() for t in _texts(df, name)]


def _rows_frame(
    rows: list[dict], columns: Sequence[str], dtypes: Mapping[str, object]
) -> pd.DataFrame:
    """The output table of a reader: ``rows`` in ``columns`` order, cast to ``dtypes`` (so an
    empty table has the same columns and dtypes as a full one)."""
    return pd.DataFrame(rows, columns=list(columns)).astype(dict(dtypes))
