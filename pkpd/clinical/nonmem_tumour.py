"""NONMEM-style tumour modelling files: SLD observations (with CENS/LIMIT for values too small
to measure) and dose records (:func:`write_nonmem_tumour`, :func:`read_nonmem_tumour`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError
from ._common import DataReport, _lower_columns, _show, _text
from .lesions import TOO_SMALL_MM

__all__ = ["NonmemTumourData", "write_nonmem_tumour", "read_nonmem_tumour"]


class NonmemTumourData(NamedTuple):
    """Result of :func:`read_nonmem_tumour`."""

    sld: pd.DataFrame
    dosing: pd.DataFrame
    report: DataReport



# ------------------------------------------------------------------------------------------------
# NONMEM-style modelling file
# ------------------------------------------------------------------------------------------------


def _sld_inputs(sld: pd.DataFrame, incomplete: str):
    """Normalise and check the SLD table: ``(s, day, dv, k, complete)`` with ``k`` the number
    of too-small lesions per record and ``dv`` the value to write."""
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
    return s, day, dv, k, complete


def _obs_records(
    sld: pd.DataFrame,
    lloq_mm: float | None,
    too_small_mm: float,
    blq_method: str,
    obs_cmt: int,
    incomplete: str,
) -> pd.DataFrame:
    """Observation records (with CENS/LIMIT) of the SLD table; ``_ord`` puts pre-treatment
    observations (TIME <= 0) before doses and later ones after."""
    s, day, dv, k, complete = _sld_inputs(sld, incomplete)
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
    return obs.assign(_ord=np.where(obs["TIME"] <= 0, 0, 2))


def _dose_numcol(d: pd.DataFrame, name: str, default) -> np.ndarray:
    """Column ``name`` of the dosing table as floats, ``default`` where absent or missing."""
    if name not in d.columns:
        return np.full(len(d), default, dtype=float)
    return pd.to_numeric(d[name], errors="coerce").fillna(default).to_numpy(float)


def _dose_records(dosing: pd.DataFrame, dose_cmt: int) -> pd.DataFrame:
    """Dose records (EVID=1, MDV=1) of the dosing table."""
    d = _lower_columns(dosing, "dosing table")
    miss = [c for c in ("subject", "day", "amt") if c not in d.columns]
    if miss:
        raise DataError(
            f"the dosing table is missing the column(s) {', '.join(miss)}",
            column=miss[0],
            fix="give subject, day and amt columns",
        )
    return pd.DataFrame(
        {
            "SUBJECT": [_text(v) for v in d["subject"]],
            "TIME": _dose_numcol(d, "day", np.nan),
            "EVID": 1,
            "AMT": _dose_numcol(d, "amt", np.nan),
            "CMT": _dose_numcol(d, "cmt", dose_cmt).astype(int),
            "RATE": _dose_numcol(d, "rate", 0.0),
            "II": _dose_numcol(d, "ii", 0.0),
            "ADDL": _dose_numcol(d, "addl", 0).astype(int),
            "SS": 0,
            "DV": np.nan,
            "MDV": 1,
            "CENS": 0,
            "LIMIT": np.nan,
            "_ord": 1,
        }
    )


def _nonmem_records(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Observation (and dose) records as one table: ID by first appearance, sorted by ID, TIME
    and record order, in the written column order."""
    obs = parts[0]
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
    return recs[cols].reset_index(drop=True)


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
    obs = _obs_records(sld, lloq_mm, too_small_mm, blq_method, obs_cmt, incomplete)
    parts = [obs]
    if dosing is not None:
        parts.append(_dose_records(dosing, dose_cmt))
    recs = _nonmem_records(parts)
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
