"""Virtual populations: baseline covariates for virtual trials.

A :class:`Population` draws one row of baseline covariates per virtual patient, either from a
documented parametric distribution (``models/populations/NAME.toml``; the default ``es_sclc`` is
an ES-SCLC, CASPIAN/IMpower133-like population) or by resampling whole rows of the user's own
table (:meth:`Population.from_table`), which keeps the joint structure of the table.

The columns use the covariate names of the regimen grammar and of the model cards, so a row
plugs straight into :meth:`pkpd.dosing.Regimen.doses` (mg/kg, mg/m2 and Calvert AUC doses) and
into a card's covariate effects (:meth:`pkpd.cards.Card.typical_params`):

======  ======================  =====================================================
column  unit                    meaning
======  ======================  =====================================================
ID      -                       virtual patient number (``first_id``, ``first_id + 1``, ...)
SEX     0/1                     1 = female, 0 = male (the cards' and the grammar's coding)
AGE     years                   age at baseline
ECOG    0/1                     performance status
WT      kg                      total body weight
HT      cm                      height
BSA     m2                      body-surface area, Mosteller: sqrt(WT * HT / 3600)
SCR     mg/dL                   serum creatinine
CRCL    mL/min                  Cockcroft-Gault: (140 - AGE) * WT / (72 * SCR), x 0.85 if female
GFR     mL/min                  = CRCL (the Calvert GFR estimate; the 125 mL/min cap is applied
                                when a dose is resolved, not here)
ALB     g/L                     serum albumin
LDH     U/L                     lactate dehydrogenase
======  ======================  =====================================================

The units are also in ``frame.attrs["units"]``.

Reproducibility: every draw takes its randomness from a :class:`numpy.random.Generator` as a
fixed number of uniforms per patient (:data:`UNIFORMS_PER_PATIENT` for a parametric population,
one for a resampled table), mapped by inverse CDFs. So the same seed gives the same patients, and
the draw is *chunk-invariant*: ``draw(n1, g)`` followed by ``draw(n2, g)`` gives the same patients
as ``draw(n1 + n2, g)`` from a generator in the same state.

Imports only lower layers (ground, cards).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from ..dosing.regimen import cockcroft_gault_crcl, mosteller_bsa
from ..errors import DataError, ModelError

__all__ = [
    "COVARIATE_UNITS",
    "BASE_COLUMNS",
    "PLAUSIBLE_RANGES",
    "UNIFORMS_PER_PATIENT",
    "Population",
    "list_populations",
    "populations_dir",
]

#: unit of every column a population gives (also in ``frame.attrs["units"]``)
COVARIATE_UNITS = {
    "ID": "-", "SEX": "1 = female, 0 = male", "AGE": "years", "ECOG": "0-1", "WT": "kg",
    "HT": "cm", "BSA": "m2", "SCR": "mg/dL", "CRCL": "mL/min", "GFR": "mL/min", "ALB": "g/L",
    "LDH": "U/L",
}
#: columns a user's table must hold by default (the derived BSA, CRCL and GFR are computed)
BASE_COLUMNS = ("SEX", "AGE", "WT", "HT", "SCR", "ALB", "LDH")
#: uniforms used per patient by a parametric draw (SEX, AGE, WT, HT, SCR, ALB, LDH, ECOG)
UNIFORMS_PER_PATIENT = 8
#: plausible (low, high) of each numeric column of a user's table; outside means a wrong unit or
#: a typing error
PLAUSIBLE_RANGES = {
    "AGE": (18.0, 110.0), "WT": (25.0, 300.0), "HT": (100.0, 230.0), "BSA": (0.8, 3.5),
    "SCR": (0.1, 15.0), "CRCL": (1.0, 400.0), "GFR": (1.0, 400.0), "ALB": (10.0, 60.0),
    "LDH": (20.0, 20000.0), "ECOG": (0.0, 4.0),
}
_UNIT_HINTS = {
    ("SCR", "high"): "SCR must be in mg/dL; a value in umol/L divided by 88.4 gives mg/dL",
    ("HT", "low"): "HT must be in cm; a height in metres times 100 gives cm",
    ("WT", "high"): "WT must be in kg; a weight in lb divided by 2.2046 gives kg",
    ("ALB", "low"): "ALB must be in g/L; a value in g/dL times 10 gives g/L",
    ("LDH", "high"): "LDH must be in U/L; check the value",
}
_ORDER = ("ID", "SEX", "AGE", "ECOG", "WT", "HT", "BSA", "SCR", "CRCL", "GFR", "ALB", "LDH")
_TAGS = ("[F]", "[F2]", "[D]", "[R]")
# the numbers a population file must give: section -> keys
_SPEC_KEYS = {
    "sex": ("female_fraction",),
    "age": ("median_years", "sd_years", "min_years", "max_years"),
    "ecog": ("ps1_fraction",),
    "body.male": ("weight_median_kg", "weight_sd_log", "height_median_cm", "height_sd_log",
                  "corr_log_weight_log_height"),
    "body.female": ("weight_median_kg", "weight_sd_log", "height_median_cm", "height_sd_log",
                    "corr_log_weight_log_height"),
    "body.limits": ("weight_min_kg", "weight_max_kg", "height_min_cm", "height_max_cm"),
    "creatinine": ("median_male_mg_dl", "median_female_mg_dl", "reference_age_years",
                   "age_slope_log_per_year", "sd_log", "min_mg_dl", "max_mg_dl"),
    "albumin": ("median_g_l", "sd_g_l", "min_g_l", "max_g_l"),
    "ldh": ("median_u_l", "sd_log", "min_u_l", "max_u_l"),
    "albumin_ldh": ("corr",),
}


def _trunc_std_normal(u: np.ndarray, lo, hi) -> np.ndarray:
    """Standard normal truncated to [lo, hi], by inverse CDF of the uniforms ``u``."""
    a, b = ndtr(lo), ndtr(hi)
    return ndtri(a + u * (b - a))


# --------------------------------------------------------------------------------------------
# population files
# --------------------------------------------------------------------------------------------


def populations_dir() -> Path:
    """Folder of the bundled populations: ``models/populations`` (``$PKPD_MODELS`` moves it)."""
    from ..cards import models_dir

    return models_dir() / "populations"


def list_populations() -> list[str]:
    """Names of the bundled population files."""
    return sorted(p.stem for p in populations_dir().glob("*.toml"))


def _resolve_path(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix.lower() == ".toml" or p.exists():
        if not p.is_file():
            raise ModelError(f"population file {str(p)!r} does not exist. Fix: check the path, "
                             f"or name a bundled population ({', '.join(list_populations())})")
        return p
    q = populations_dir() / f"{name_or_path}.toml"
    if not q.is_file():
        raise ModelError(f"unknown population {str(name_or_path)!r}. Fix: use one of "
                         f"{', '.join(list_populations())}, a path to a population TOML file, "
                         "or Population.from_table(your_table)")
    return q


def _section(raw: dict, dotted: str) -> dict | None:
    node = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _read_spec(raw: dict, where: str) -> dict[str, float]:
    """Flat ``{"section.key": value}`` of the numbers, each checked to have a tagged source."""
    spec: dict[str, float] = {}
    for sec, keys in _SPEC_KEYS.items():
        table = _section(raw, sec)
        if table is None:
            raise ModelError(f"{where}: missing [{sec}] table. Fix: see "
                             "models/populations/es_sclc.toml")
        sources = table.get("source", {})
        for key in keys:
            v = table.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ModelError(f"{where}: [{sec}] {key} must be a finite number; got {v!r}. "
                                 "Fix: see models/populations/es_sclc.toml")
            src = sources.get(key) if isinstance(sources, dict) else None
            if not isinstance(src, str) or not any(t in src for t in _TAGS):
                raise ModelError(f"{where}: [{sec}] {key} = {v} has no source with a "
                                 f"provenance tag. Fix: add [{sec}.source] {key} = \"... [F]\" "
                                 "(tags [F], [F2], [D], [R] as in LITERATURE.md)")
            spec[f"{sec}.{key}"] = float(v)
    _check_spec(spec, where)
    return spec


def _check_spec(s: dict[str, float], where: str) -> None:
    def bad(key, why):
        raise ModelError(f"{where}: {key} = {s[key]:g} {why}. Fix: correct the population file")

    for key in ("sex.female_fraction", "ecog.ps1_fraction"):
        if not 0.0 <= s[key] <= 1.0:
            bad(key, "must be a fraction in [0, 1]")
    for key in ("albumin_ldh.corr", "body.male.corr_log_weight_log_height",
                "body.female.corr_log_weight_log_height"):
        if not -1.0 < s[key] < 1.0:
            bad(key, "must be a correlation in (-1, 1)")
    for key, v in s.items():
        if (key.endswith(("sd_years", "sd_log", "sd_g_l")) or "median" in key) and v <= 0:
            bad(key, "must be positive")
    for sec, med, lo, hi in (
        ("age", "median_years", "min_years", "max_years"),
        ("creatinine", "median_male_mg_dl", "min_mg_dl", "max_mg_dl"),
        ("creatinine", "median_female_mg_dl", "min_mg_dl", "max_mg_dl"),
        ("albumin", "median_g_l", "min_g_l", "max_g_l"),
        ("ldh", "median_u_l", "min_u_l", "max_u_l"),
    ):
        if not s[f"{sec}.{lo}"] < s[f"{sec}.{med}"] < s[f"{sec}.{hi}"]:
            bad(f"{sec}.{med}", f"must lie strictly between {sec}.{lo} and {sec}.{hi}")
    lim = "body.limits."
    for sex in ("male", "female"):
        for what, unit in (("weight", "kg"), ("height", "cm")):
            med = f"body.{sex}.{what}_median_{unit}"
            if not s[f"{lim}{what}_min_{unit}"] < s[med] < s[f"{lim}{what}_max_{unit}"]:
                bad(med, f"must lie strictly between the [body.limits] {what} bounds")
    if s["creatinine.min_mg_dl"] <= 0 or s["ldh.min_u_l"] <= 0:
        bad("creatinine.min_mg_dl", "and ldh.min_u_l must be positive (log-normal)")
    if s["age.max_years"] >= 140:
        bad("age.max_years", "must be below 140 (Cockcroft-Gault)")


# --------------------------------------------------------------------------------------------
# parametric draw
# --------------------------------------------------------------------------------------------


def _draw_body(s: dict, female: np.ndarray, u_w: np.ndarray, u_h: np.ndarray):
    """Sex-specific bivariate log-normal weight (kg) and height (cm), each truncated."""
    def by_sex(key):
        return np.where(female, s[f"body.female.{key}"], s[f"body.male.{key}"])

    mu_w, sd_w = np.log(by_sex("weight_median_kg")), by_sex("weight_sd_log")
    mu_h, sd_h = np.log(by_sex("height_median_cm")), by_sex("height_sd_log")
    rho = by_sex("corr_log_weight_log_height")
    lim = "body.limits."
    z_w = _trunc_std_normal(u_w, (math.log(s[lim + "weight_min_kg"]) - mu_w) / sd_w,
                            (math.log(s[lim + "weight_max_kg"]) - mu_w) / sd_w)
    c_mu, c_sd = mu_h + rho * sd_h * z_w, sd_h * np.sqrt(1.0 - rho**2)
    z_h = _trunc_std_normal(u_h, (math.log(s[lim + "height_min_cm"]) - c_mu) / c_sd,
                            (math.log(s[lim + "height_max_cm"]) - c_mu) / c_sd)
    return np.exp(mu_w + sd_w * z_w), np.exp(c_mu + c_sd * z_h)


def _draw_labs(s: dict, female, age, u_scr, u_alb, u_ldh):
    """Age- and sex-dependent creatinine (mg/dL); albumin (g/L) and correlated LDH (U/L)."""
    mu = (np.log(np.where(female, s["creatinine.median_female_mg_dl"],
                          s["creatinine.median_male_mg_dl"]))
          + s["creatinine.age_slope_log_per_year"] * (age - s["creatinine.reference_age_years"]))
    sd = s["creatinine.sd_log"]
    z = _trunc_std_normal(u_scr, (math.log(s["creatinine.min_mg_dl"]) - mu) / sd,
                          (math.log(s["creatinine.max_mg_dl"]) - mu) / sd)
    scr = np.exp(mu + sd * z)
    m_a, sd_a = s["albumin.median_g_l"], s["albumin.sd_g_l"]
    z_a = _trunc_std_normal(u_alb, (s["albumin.min_g_l"] - m_a) / sd_a,
                            (s["albumin.max_g_l"] - m_a) / sd_a)
    rho, sd_l = s["albumin_ldh.corr"], s["ldh.sd_log"]
    c_mu = math.log(s["ldh.median_u_l"]) + rho * sd_l * z_a
    c_sd = sd_l * math.sqrt(1.0 - rho**2)
    z_l = _trunc_std_normal(u_ldh, (math.log(s["ldh.min_u_l"]) - c_mu) / c_sd,
                            (math.log(s["ldh.max_u_l"]) - c_mu) / c_sd)
    return scr, m_a + sd_a * z_a, np.exp(c_mu + c_sd * z_l)


def _draw_parametric(s: dict, u: np.ndarray) -> dict[str, np.ndarray]:
    female = u[:, 0] < s["sex.female_fraction"]
    m, sd = s["age.median_years"], s["age.sd_years"]
    age = m + sd * _trunc_std_normal(u[:, 1], (s["age.min_years"] - m) / sd,
                                     (s["age.max_years"] - m) / sd)
    wt, ht = _draw_body(s, female, u[:, 2], u[:, 3])
    scr, alb, ldh = _draw_labs(s, female, age, u[:, 4], u[:, 5], u[:, 6])
    return {"SEX": female.astype(float), "AGE": age,
            "ECOG": (u[:, 7] < s["ecog.ps1_fraction"]).astype(float),
            "WT": wt, "HT": ht, "SCR": scr, "ALB": alb, "LDH": ldh}


def _add_derived(cols: dict[str, np.ndarray]) -> None:
    """BSA (Mosteller), CRCL (Cockcroft-Gault) and GFR = CRCL, where absent and computable."""
    if "BSA" not in cols and {"WT", "HT"} <= cols.keys():
        cols["BSA"] = mosteller_bsa(cols["WT"], cols["HT"])
    if "CRCL" not in cols and {"AGE", "WT", "SCR", "SEX"} <= cols.keys():
        cols["CRCL"] = cockcroft_gault_crcl(cols["AGE"], cols["WT"], cols["SCR"],
                                            cols["SEX"] == 1.0)
    if "GFR" not in cols and "CRCL" in cols:
        cols["GFR"] = np.asarray(cols["CRCL"], float).copy()


def _frame(cols: dict[str, np.ndarray], first_id: int, name: str) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    cols = {"ID": np.arange(first_id, first_id + n, dtype=np.int64), **cols}
    order = [c for c in _ORDER if c in cols] + [c for c in cols if c not in _ORDER]
    df = pd.DataFrame({c: cols[c] for c in order})
    df.attrs["units"] = {c: COVARIATE_UNITS[c] for c in order if c in COVARIATE_UNITS}
    df.attrs["population"] = name
    return df


def _check_n_rng(n, rng, first_id) -> np.random.Generator:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise DataError("the number of virtual patients must be a positive integer", value=n,
                        fix="pass n >= 1, e.g. draw(1000, rng)")
    if isinstance(first_id, bool) or not isinstance(first_id, (int, np.integer)):
        raise DataError("first_id must be an integer", value=first_id,
                        fix="pass first_id=1 (or the ID after the previous chunk's last)")
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise DataError("rng must be a numpy Generator or a non-negative integer seed",
                    value=type(rng).__name__,
                    fix="pass numpy.random.default_rng(SEED) or the integer SEED")


# --------------------------------------------------------------------------------------------
# user tables
# --------------------------------------------------------------------------------------------


def _read_table(df_or_csv) -> tuple[pd.DataFrame, str]:
    if isinstance(df_or_csv, pd.DataFrame):
        return df_or_csv.copy(), "table"
    if isinstance(df_or_csv, (str, Path)):
        from ..io import check_input_file, detect_separator, read_text_file

        path = check_input_file(df_or_csv, what="population table")
        text = read_text_file(path, what="population table")
        sep = detect_separator(text.splitlines()[0]) or r"\s+"
        try:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                             engine="python" if sep == r"\s+" else "c")
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DataError(f"population table {str(path)!r} cannot be read as CSV ({e})",
                            fix="save it as a comma-separated file with a header row") from None
        return df, Path(path).stem
    raise DataError("a population table must be a pandas DataFrame or a CSV path",
                    value=type(df_or_csv).__name__, fix="pass a DataFrame or 'covariates.csv'")


def _normalise_columns(df: pd.DataFrame, required) -> pd.DataFrame:
    names = [str(c).strip().upper() for c in df.columns]
    seen: dict[str, str] = {}
    for orig, up in zip(df.columns, names):
        if up in seen:
            raise DataError(f"columns {seen[up]!r} and {orig!r} are the same covariate",
                            column=up, fix="keep one of them")
        seen[up] = orig
    df = df.set_axis(names, axis=1)
    for col in required:
        if str(col).upper() not in df.columns:
            raise DataError(
                f"the population table has no {str(col).upper()} column "
                f"({COVARIATE_UNITS.get(str(col).upper(), 'see docs/trial.md')}); it has "
                f"{', '.join(df.columns)}", column=str(col).upper(),
                fix=f"add the column, or pass required={tuple(c for c in required if c != col)}"
                " to Population.from_table to resample without it")
    if len(df) == 0:
        raise DataError("the population table has no rows",
                        fix="give at least one patient row below the header")
    return df


def _sex_column(values: pd.Series, ids) -> np.ndarray:
    codes = {"0": 0.0, "0.0": 0.0, "M": 0.0, "MALE": 0.0,
             "1": 1.0, "1.0": 1.0, "F": 1.0, "FEMALE": 1.0}
    out = np.empty(len(values))
    for i, v in enumerate(values):
        key = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
        if key.upper() not in codes:
            raise DataError(
                "SEX must be 0 or 'M' (male) or 1 or 'F' (female)", row=i + 1,
                subject=None if ids is None else ids[i], column="SEX", value=v,
                fix="recode SEX (NONMEM data often code 1 = male, 2 = female: map 1 -> 0, "
                    "2 -> 1)")
        out[i] = codes[key.upper()]
    return out


def _numeric_column(values: pd.Series, col: str, ids) -> np.ndarray:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{col} must be a number in {COVARIATE_UNITS[col]}", row=i + 1,
                        subject=None if ids is None else ids[i], column=col,
                        value=values.iloc[i],
                        fix="fill in the value, or drop the patient's row")
    lo, hi = PLAUSIBLE_RANGES[col]
    out = (x < lo) | (x > hi)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        side = "low" if x[i] < lo else "high"
        hint = _UNIT_HINTS.get((col, side), f"check the value of {col}")
        raise DataError(f"{col} = {x[i]:g} {COVARIATE_UNITS[col]} is outside the plausible "
                        f"range [{lo:g}, {hi:g}]", row=i + 1,
                        subject=None if ids is None else ids[i], column=col, fix=hint)
    return x


def _maybe_numeric(values: pd.Series) -> np.ndarray:
    """The values as float64 when every one is a number (a CSV gives text), else as they are."""
    x = pd.to_numeric(values, errors="coerce")
    return x.to_numpy(dtype=float) if x.notna().all() else values.to_numpy()


def _validate_table(df: pd.DataFrame) -> dict[str, np.ndarray]:
    ids = df["ID"].tolist() if "ID" in df.columns else None
    cols: dict[str, np.ndarray] = {}
    for col in df.columns:
        if col == "ID":
            continue
        if col == "SEX":
            cols[col] = _sex_column(df[col], ids)
        elif col in PLAUSIBLE_RANGES:
            cols[col] = _numeric_column(df[col], col, ids)
        else:
            cols[col] = _maybe_numeric(df[col])  # other columns travel with their row
    if "ECOG" in cols and np.any(cols["ECOG"] != np.round(cols["ECOG"])):
        i = int(np.flatnonzero(cols["ECOG"] != np.round(cols["ECOG"]))[0])
        raise DataError("ECOG must be a whole number 0-4", row=i + 1, column="ECOG",
                        value=cols["ECOG"][i], fix="round or recode ECOG")
    _add_derived(cols)
    for col in ("BSA", "CRCL", "GFR"):
        if col in cols and col not in df.columns:
            _numeric_column(pd.Series(cols[col]), col, ids)  # derived values: plausible too
    return cols


# --------------------------------------------------------------------------------------------
# the population
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """Baseline covariates of virtual patients: a documented distribution or a user's table.

    Build one with :meth:`load` (a bundled name such as ``"es_sclc"`` or a TOML path) or
    :meth:`from_table`; draw patients with :meth:`draw`.

    Attributes
    ----------
    name
        The population's name (file stem, or ``"table"``).
    spec
        The numbers of a parametric population, ``{"section.key": value}``; None for a table.
    table
        The validated user table (one row per patient, derived columns added); None for a
        parametric population.
    """

    name: str
    spec: Mapping[str, float] | None = field(default=None, repr=False)
    table: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def load(cls, name_or_path="es_sclc") -> Population:
        """A parametric population from ``models/populations/NAME.toml`` or a TOML path.

        Every number in the file must have a source with a provenance tag; the file is checked
        (fractions, positive scales, correlations in (-1, 1), medians inside their bounds).
        """
        path = _resolve_path(name_or_path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"population file {str(path)!r} is not valid TOML ({e}). Fix: "
                             "see models/populations/es_sclc.toml") from None
        meta = _section(raw, "population") or {}
        name = str(meta.get("name") or path.stem)
        return cls(name=name, spec=_read_spec(raw, f"population file {path.name}"))

    @classmethod
    def from_table(cls, df_or_csv, *, required=BASE_COLUMNS) -> Population:
        """A population that resamples whole rows of the user's table (a bootstrap).

        Parameters
        ----------
        df_or_csv
            A DataFrame or a CSV path, one row per patient, columns named as in
            :data:`COVARIATE_UNITS` (case-insensitive) and in those units. Other columns are
            carried along with their row.
        required
            Columns the table must have; default :data:`BASE_COLUMNS`. BSA, CRCL and GFR are
            computed when absent (Mosteller; Cockcroft-Gault; GFR = CRCL).

        Raises
        ------
        DataError
            A missing column, a non-numeric or implausible value (naming the row, column, value
            and the fix), an unknown SEX code, or an empty table.
        """
        df, name = _read_table(df_or_csv)
        df = _normalise_columns(df, required)
        cols = _validate_table(df)
        table = _frame(cols, 1, name).drop(columns="ID")
        if "ID" in df.columns:
            table.insert(0, "SOURCE_ID", _maybe_numeric(df["ID"]))
        return cls(name=name, table=table.reset_index(drop=True))

    def draw(self, n: int, rng, *, first_id: int = 1) -> pd.DataFrame:
        """``n`` virtual patients, one row each (columns and units: :data:`COVARIATE_UNITS`).

        Parameters
        ----------
        n
            Number of patients (>= 1).
        rng
            A :class:`numpy.random.Generator` (advanced by the draw) or an integer seed.
        first_id
            ID of the first patient (use it to number chunks consecutively).

        Returns
        -------
        pandas.DataFrame
            ``ID`` then the covariates; ``attrs["units"]`` maps column -> unit. A resampled
            table adds ``SOURCE_ROW`` (1-based row of the user's table) and, when the table has
            an ID column, ``SOURCE_ID``.
        """
        gen = _check_n_rng(n, rng, first_id)
        if self.table is not None:
            m = len(self.table)
            rows = np.minimum((gen.random(n) * m).astype(np.int64), m - 1)
            cols = {c: self.table[c].to_numpy()[rows] for c in self.table.columns}
            cols["SOURCE_ROW"] = rows + 1
            return _frame(cols, int(first_id), self.name)
        u = gen.random((n, UNIFORMS_PER_PATIENT))
        cols = _draw_parametric(dict(self.spec), u)
        _add_derived(cols)
        return _frame(cols, int(first_id), self.name)
