"""Clinical estimands of a hierarchical fit of the combination tumour model (``vegf_immune_tgi``).

Input contract (what the fitter writes):

* an :class:`arviz.InferenceData` whose ``posterior`` holds ``indiv`` with dims
  ``(chain, draw, subject, param)``: every structural parameter of
  :mod:`pkpd.tumour.combination` on the natural scale, ``param`` coords =
  :data:`pkpd.tumour.combination.PARAMETERS` names (extra names are ignored), ``subject`` coords =
  the
  subject IDs (compared as strings);
* population scalars with dims ``(chain, draw)`` such as ``PSI`` (the synergy);
* drivers ``{"anlotinib", "durvalumab", "chemo"} -> (n_subject, n_steps)`` on a grid of step
  ``step_day``, rows in the posterior's subject order, as returned by
  :func:`pkpd.tumour.simulate.patient_drivers`.

Functions:

* :func:`synergy`: posterior summary of a population scalar and ``P(> 0)``, ``P(< 0)``;
* :func:`synergy_identification`: whether a design's arms can separate the synergy from the
  drugs' own effects (:func:`exposure_groups` counts the patients on each combination);
* :func:`patient_estimands`: per-subject posterior quantiles of the derived quantities of
  :func:`pkpd.tumour.combination.derived` (resistance onset, time to nadir, depth, nadir,
  progression);
* :func:`population_onset`: the distribution of the per-patient posterior-median onsets;
* :func:`coverage`: the fraction of patients whose true onset lies in their posterior interval.

Units and conventions: times in days since the first dose, sizes in mm, ``depth_pct`` in
percent, ``100 (nadir / BASE - 1)`` (negative = shrinkage; -61 means a 61% decrease), exactly as
:func:`pkpd.tumour.combination.derived` returns it. Quantiles are numpy's default (linear
interpolation between order statistics, Hyndman-Fan type 7).

Censoring at the horizon. ``resistance_onset_day`` is NaN when the tumour is still shrinking at
the end of the grid, and ``progression_day`` is NaN when model progression is not reached. Such
a draw is *not* missing: the event happens beyond the horizon (or never). Those draws are kept
and counted as ``+inf``: the fraction is reported (``p_no_regrowth``, ``p_no_progression``) and
quantiles are taken over all draws with NaN = ``+inf``, so a quantile that falls among them is
``inf`` ("beyond the horizon"), never a quantile of the uncensored draws only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import DataError, ModelError
from ..tumour import combination as cm

__all__ = ["synergy", "synergy_identification", "exposure_groups", "patient_estimands",
           "derived_draws", "default_batch", "population_onset", "coverage",
           "interval_columns", "quantile_inf"]

#: grid cells (draw x subject x step) per vmapped batch when ``batch`` is not given; about 20
#: float64 arrays of this size are live at once (a few hundred MB; 120 subjects x 730 days x 23
#: draws ran in 1.2 GB peak RSS for the whole process)
_CELLS_PER_BATCH = 2 ** 21

#: derived quantities summarised per subject, and whether NaN means "beyond the horizon"
_CENSORED = ("resistance_onset_day", "progression_day")
_SUMMARISED = ("resistance_onset_day", "time_to_nadir_day", "depth_pct", "nadir_mm",
               "progression_day")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def quantile_inf(x, q, axis: int = 0) -> np.ndarray:
    """Type-7 (numpy default) quantiles that treat NaN as ``+inf``.

    ``np.quantile`` would give NaN for ``inf - inf`` or ``0 * inf`` in the interpolation; here a
    quantile is ``inf`` as soon as it interpolates towards an infinite order statistic with a
    non-zero weight, and equals the lower order statistic exactly when the weight is zero.

    Parameters
    ----------
    x : array_like
        Values; NaN is read as ``+inf`` (event beyond the horizon).
    q : float or array_like
        Probabilities in [0, 1].
    axis : int
        Axis along which to take the quantiles.

    Returns
    -------
    numpy.ndarray
        Quantiles, ``q`` dims first (as ``np.quantile``).
    """
    a = np.asarray(x, float)
    a = np.sort(np.where(np.isnan(a), np.inf, a), axis=axis)
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    if n == 0:
        raise ValueError("quantile of an empty set of draws")
    qa = np.asarray(q, float)
    pos = qa * (n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    g = (pos - lo).reshape(qa.shape + (1,) * (a.ndim - 1))
    a_lo, a_hi = a[lo], a[hi]
    with np.errstate(invalid="ignore"):
        mid = a_lo + g * (a_hi - a_lo)
    out = np.where(g == 0, a_lo, np.where(np.isinf(a_hi), np.inf, mid))
    return out


def _stat_name(q: float) -> str:
    """Column suffix of a quantile: ``q5``, ``q95``, ``q2.5``."""
    return f"q{round(100.0 * q, 6):g}"


def interval_columns(name: str = "resistance_onset_day", level: float = 0.90) -> tuple[str, str]:
    """Names of the equal-tailed ``level`` interval columns of ``name`` in
    :func:`patient_estimands` (``level = 0.90`` -> ``name_q5``, ``name_q95``)."""
    _check_level(level)
    a = (1.0 - level) / 2.0
    return f"{name}_{_stat_name(a)}", f"{name}_{_stat_name(1.0 - a)}"


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ModelError(f"interval level {level!r} must be in (0, 1). Fix: e.g. level=0.90")


def _posterior(idata):
    post = getattr(idata, "posterior", None)
    if post is None:
        if hasattr(idata, "data_vars"):  # an xarray Dataset passed directly
            return idata
        raise ModelError(f"expected an arviz.InferenceData with a posterior group, got "
                         f"{type(idata).__name__}. Fix: pass the fit's InferenceData")
    return post


def _variable(post, name: str):
    if name not in post.data_vars:
        raise ModelError(f"posterior has no variable {name!r}; available: "
                         f"{sorted(map(str, post.data_vars))}. Fix: pass name= one of those")
    return post[name]


# ------------------------------------------------------------------------------------------------
# 1. synergy
# ------------------------------------------------------------------------------------------------

def synergy(idata, name: str = "PSI") -> dict:
    """Posterior summary of a population scalar (default the synergy ``PSI``).

    Parameters
    ----------
    idata : arviz.InferenceData
        Fit result; ``posterior[name]`` must have dims ``(chain, draw)`` only.
    name : str
        Variable name.

    Returns
    -------
    dict
        ``name, n_draws, mean, sd`` (ddof = 1), ``median, q5, q95, p_gt_0, p_lt_0`` as Python
        floats (JSON-serialisable); ``p_gt_0 + p_lt_0 < 1`` only when draws equal 0 exactly.
    """
    var = _variable(_posterior(idata), name)
    extra = [d for d in var.dims if d not in ("chain", "draw")]
    if extra:
        raise ModelError(f"posterior {name!r} has dims {list(var.dims)}: not a population scalar "
                         f"(extra {extra}). Fix: pass a scalar such as 'PSI'")
    x = np.asarray(var.values, float).ravel()
    if x.size == 0:
        raise ModelError(f"posterior {name!r} has no draws")
    if not np.all(np.isfinite(x)):
        raise ModelError(f"posterior {name!r} has {int(np.sum(~np.isfinite(x)))} non-finite "
                         "draws. Fix: check the fit (divergences, failed chains)")
    q5, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return dict(name=str(name), n_draws=int(x.size), mean=float(x.mean()),
                sd=float(x.std(ddof=1)) if x.size > 1 else 0.0, median=float(q50),
                q5=float(q5), q95=float(q95), p_gt_0=float(np.mean(x > 0)),
                p_lt_0=float(np.mean(x < 0)))


def exposure_groups(anlotinib, durvalumab) -> dict:
    """Patients per exposure group from per-patient booleans (or driver arrays
    ``(n_subject, n_steps)``, exposed where any value is positive): ``both``,
    ``anlotinib_only``, ``durvalumab_only``, ``neither``."""
    a, d = (np.asarray(x) for x in (anlotinib, durvalumab))
    a = np.any(a > 0, axis=1) if a.ndim == 2 else a.astype(bool)
    d = np.any(d > 0, axis=1) if d.ndim == 2 else d.astype(bool)
    if a.shape != d.shape:
        raise DataError(f"exposure_groups: {a.shape[0]} anlotinib flags against {d.shape[0]} "
                        "durvalumab flags. Fix: one flag per patient for each drug")
    return {"both": int(np.sum(a & d)), "anlotinib_only": int(np.sum(a & ~d)),
            "durvalumab_only": int(np.sum(~a & d)), "neither": int(np.sum(~a & ~d))}


def synergy_identification(groups: Mapping) -> dict:
    """Can the design separate the synergy PSI from the drugs' own effects?

    In the combination model the kill is ``KCHEMO B + KAA U + KIO O (1 + PSI U)``
    (:mod:`pkpd.tumour.combination`). Durvalumab's PD-L1 engagement ``O`` saturates from the
    first infusion (EC50D 0.533 ug/mL, models/sclc_triplet_tgi.toml, against typical
    concentrations of 85-600 ug/mL at 1500 mg Q3W then Q4W: first trough 85 ug/mL, peaks
    437-610 ug/mL, by ``pkpd exposure durvalumab`` with models/durvalumab.toml, Abegesah 2025),
    and then ``KIO PSI O U`` has the time course of
    ``KAA U``: PSI is told apart from KAA only by patients on anlotinib without durvalumab
    (they fix KAA), and from KIO only by patients on durvalumab without anlotinib (they fix
    KIO; otherwise only the on/off course of ``U`` separates them).

    Parameters
    ----------
    groups : dict
        :func:`exposure_groups` counts.

    Returns
    -------
    dict
        ``groups``, ``status`` ("identified", "weak", "confounded" or "absent") and ``note``
        (one sentence for a report; None when identified).
    """
    b, a, d = (int(groups.get(k, 0)) for k in ("both", "anlotinib_only", "durvalumab_only"))
    if b == 0:
        status, note = "absent", (
            "no patient receives both anlotinib and durvalumab: the data carry no information "
            "on the synergy PSI, whose posterior is its prior")
    elif a == 0:
        status, note = "confounded", (
            f"no patient receives anlotinib without durvalumab ({b} on both): once PD-L1 "
            "engagement saturates, KIO*PSI*U is collinear with KAA*U, so PSI is separated from "
            "KAA only by their priors (expect P(PSI > 0) to follow the priors, and no power); "
            "an arm on anlotinib without durvalumab identifies KAA")
    elif d == 0:
        status, note = "weak", (
            f"no patient receives durvalumab without anlotinib ({b} on both, {a} on anlotinib "
            "only): KIO and KIO*PSI are separated only by the on/off course of VEGF "
            "suppression; an arm on durvalumab without anlotinib identifies KIO")
    else:
        status, note = "identified", None
    return {"groups": dict(groups), "status": status, "note": note}


# ------------------------------------------------------------------------------------------------
# 2. per-patient estimands
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _derived_fn(step_day: float):
    """Jitted ``(params {name: (batch, n_subject)}, drivers {sig: (n_subject, n_steps)})``."""
    one = functools.partial(cm.derived, step_day=step_day)
    per_subject = jax.vmap(one, in_axes=(0, 0))
    return jax.jit(jax.vmap(per_subject, in_axes=(0, None)))


def _indiv(post, var: str):
    """``(values (n_draw, n_subject, n_param) in PARAMETERS order, subject IDs)``."""
    da = _variable(post, var)
    need = ("chain", "draw", "subject", "param")
    if set(da.dims) != set(need):
        raise ModelError(f"posterior {var!r} has dims {list(da.dims)}. Fix: the fitter writes "
                         f"{list(need)}")
    names = [str(p) for p in da.coords["param"].values]
    missing = [p for p in cm.PARAMETERS if p not in names]
    if missing:
        raise ModelError(f"posterior {var!r} lacks parameters {missing}. Fix: store every "
                         f"structural parameter {list(cm.PARAMETERS)} (natural scale)")
    da = da.transpose(*need)
    vals = np.asarray(da.values, float)
    idx = [names.index(p) for p in cm.PARAMETERS]
    vals = vals[..., idx].reshape(-1, vals.shape[2], len(idx))
    subjects = [str(s) for s in da.coords["subject"].values]
    return vals, subjects


def _drivers(drivers: Mapping, n_subject: int, subjects) -> dict:
    missing = [k for k in cm.DRIVERS if k not in drivers]
    if missing:
        raise ModelError(f"drivers lack {missing}. Fix: pass {list(cm.DRIVERS)} "
                         "(pkpd.tumour.simulate.patient_drivers)")
    out = {}
    for k in cm.DRIVERS:
        a = np.asarray(drivers[k], float)
        if a.ndim == 1:
            a = np.broadcast_to(a, (n_subject, a.shape[0]))
        if a.ndim != 2 or a.shape[0] != n_subject:
            raise ModelError(f"driver {k!r} has shape {a.shape}; the posterior has {n_subject} "
                             f"subjects ({subjects[:3]}...). Fix: one row per subject, in the "
                             "posterior's subject order")
        out[k] = a
    steps = {v.shape[1] for v in out.values()}
    if len(steps) != 1 or 0 in steps:
        raise ModelError(f"drivers have different or zero lengths {sorted(steps)}. Fix: compute "
                         "them on one grid (same days and step_day)")
    return {k: jnp.asarray(v) for k, v in out.items()}


def _select_draws(n_total: int, max_draws: int | None, seed: int) -> np.ndarray:
    if max_draws is None or n_total <= max_draws:
        return np.arange(n_total)
    if int(max_draws) < 1:
        raise ModelError(f"max_draws = {max_draws!r} must be a positive integer")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=int(max_draws), replace=False))


def default_batch(n_subject: int, n_steps: int) -> int:
    """Draws per batch when none is given: about ``2**21`` grid cells (a few hundred MB)."""
    return max(1, _CELLS_PER_BATCH // max(1, int(n_subject) * int(n_steps)))


def derived_draws(idata, drivers: Mapping, step_day: float = 1.0, max_draws: int | None = 400,
                  seed: int = 0, batch: int | None = None, var: str = "indiv"):
    """:func:`pkpd.tumour.combination.derived` for every selected (draw, subject).

    Parameters are as in :func:`patient_estimands`.

    Returns
    -------
    draws : dict
        ``{quantity: ndarray (n_selected, n_subject)}`` (NaN as returned by ``derived``).
    subjects : list of str
        Subject IDs (column order).
    selected : numpy.ndarray
        Indices of the selected draws in the flattened ``(chain, draw)`` order.
    """
    vals, subjects = _indiv(_posterior(idata), var)
    n_total, n_subject, _ = vals.shape
    if n_total == 0 or n_subject == 0:
        raise ModelError(f"posterior {var!r} has {n_total} draws and {n_subject} subjects. Fix: "
                         "pass a fit with draws")
    drv = _drivers(drivers, n_subject, subjects)
    n_steps = next(iter(drv.values())).shape[1]
    sel = _select_draws(n_total, max_draws, seed)
    vals = vals[sel]
    cm.check_params({p: vals[..., i].ravel() for i, p in enumerate(cm.PARAMETERS)},
                    f"posterior {var!r} (flattened draw x subject)")
    batch = int(min(default_batch(n_subject, n_steps) if batch is None else max(1, int(batch)),
                    len(sel)))
    fn = _derived_fn(float(step_day))
    chunks = []
    for start in range(0, len(sel), batch):
        block = vals[start:start + batch]
        n = block.shape[0]
        if n < batch:  # pad with the last draw: one compiled shape for every batch
            block = np.concatenate([block, np.repeat(block[-1:], batch - n, axis=0)])
        params = {p: jnp.asarray(block[..., i]) for i, p in enumerate(cm.PARAMETERS)}
        res = fn(params, drv)
        chunks.append({k: np.asarray(v)[:n] for k, v in res.items()})
    draws = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return draws, subjects, sel


def patient_estimands(idata, drivers: Mapping, step_day: float = 1.0, max_draws: int | None = 400,
                      seed: int = 0, batch: int | None = None, *, level: float = 0.90,
                      var: str = "indiv") -> pd.DataFrame:
    """Per-subject posterior summaries of resistance onset, nadir, depth and progression.

    Parameters
    ----------
    idata : arviz.InferenceData
        Fit result with ``posterior[var]`` of dims ``(chain, draw, subject, param)``.
    drivers : mapping
        ``{"anlotinib", "durvalumab", "chemo"} -> (n_subject, n_steps)`` on the grid of step
        ``step_day``, rows in the posterior's subject order (a 1-D array is shared by all).
    step_day : float
        Grid step (day); the horizon is ``n_steps * step_day``.
    max_draws : int or None
        At most this many posterior draws (flattened over chains) are used, chosen without
        replacement by ``numpy.random.default_rng(seed)`` (reproducible); ``None``: all.
    seed : int
        Seed of the draw selection.
    batch : int or None
        Draws per vmapped batch (each batch holds ``batch x n_subject x n_steps`` grid cells,
        about 20 float64 arrays of that size); default: about 2 million cells per batch.
    level : float
        Equal-tailed interval of the ``_q`` columns (0.90 -> ``q5`` and ``q95``).
    var : str
        Name of the individual-parameter variable.

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``subject, n_draws``, then for ``resistance_onset_day``,
        ``time_to_nadir_day``, ``depth_pct`` (percent change at nadir, negative = shrinkage),
        ``nadir_mm`` and ``progression_day`` the columns ``_median``, ``_q5``, ``_q95``;
        ``p_primary_resistance`` (fraction of draws with onset 0), ``p_no_regrowth`` (fraction of
        draws with NaN onset: still shrinking at the horizon) and ``p_no_progression``. NaN
        onsets/progressions count as ``+inf`` in the quantiles (see the module docstring), so
        those columns may hold ``inf``.
    """
    _check_level(level)
    draws, subjects, sel = derived_draws(idata, drivers, step_day, max_draws, seed, batch, var)
    a = (1.0 - level) / 2.0
    qs = (0.5, a, 1.0 - a)
    labels = ("median", _stat_name(a), _stat_name(1.0 - a))
    cols: dict = {"subject": subjects, "n_draws": np.full(len(subjects), len(sel))}
    for name in _SUMMARISED:
        x = draws[name]
        if name not in _CENSORED and np.any(np.isnan(x)):
            bad = int(np.flatnonzero(np.isnan(x).any(axis=0))[0])
            raise ModelError(f"{name} is NaN for subject {subjects[bad]} (non-finite parameters "
                             "or drivers?). Fix: check the posterior and the drivers")
        qv = quantile_inf(x, qs, axis=0)
        for lab, row in zip(labels, qv):
            cols[f"{name}_{lab}"] = row
        if name == "resistance_onset_day":
            cols["p_primary_resistance"] = np.mean(x == 0.0, axis=0)
            cols["p_no_regrowth"] = np.mean(np.isnan(x), axis=0)
        if name == "progression_day":
            cols["p_no_progression"] = np.mean(np.isnan(x), axis=0)
    return pd.DataFrame(cols)


# ------------------------------------------------------------------------------------------------
# 3. population distribution of the per-patient onsets
# ------------------------------------------------------------------------------------------------

def population_onset(table: pd.DataFrame) -> dict:
    """Distribution across patients of the posterior-median resistance onsets.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`patient_estimands`.

    Returns
    -------
    dict
        ``n_subjects``; ``median, q5, q25, q75, q95`` (days) of the per-patient median onsets,
        ``inf`` = beyond the horizon (same NaN-as-``+inf`` rule); ``frac_primary_resistance``
        (patients whose median onset is 0) and ``frac_no_regrowth`` (median onset beyond the
        horizon); ``mean_p_primary_resistance`` and ``mean_p_no_regrowth``, the posterior
        expected fractions (patient average of the per-patient probabilities). Python floats.
    """
    col = "resistance_onset_day_median"
    if col not in table.columns:
        raise DataError("the table has no median onset", column=col,
                        fix="pass the output of patient_estimands")
    m = np.asarray(table[col], float)
    if m.size == 0:
        raise DataError("the table has no subjects", fix="pass the output of patient_estimands")
    m = np.where(np.isnan(m), np.inf, m)
    qv = quantile_inf(m, [0.5, 0.05, 0.25, 0.75, 0.95])
    out = dict(n_subjects=int(m.size), median=float(qv[0]), q5=float(qv[1]),
               q25=float(qv[2]), q75=float(qv[3]), q95=float(qv[4]),
               frac_primary_resistance=float(np.mean(m == 0.0)),
               frac_no_regrowth=float(np.mean(np.isinf(m))))
    for c in ("p_primary_resistance", "p_no_regrowth"):
        if c in table.columns:
            out[f"mean_{c}"] = float(np.mean(np.asarray(table[c], float)))
    return out


# ------------------------------------------------------------------------------------------------
# 4. coverage of the true onsets
# ------------------------------------------------------------------------------------------------

def coverage(table: pd.DataFrame, truth: Mapping, level: float = 0.90,
             name: str = "resistance_onset_day") -> dict:
    """Fraction of patients whose true onset lies in their equal-tailed posterior interval.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`patient_estimands` computed with the same ``level``.
    truth : mapping
        ``{subject: true value}`` (days; NaN or ``inf`` = no regrowth within the horizon),
        computed by the caller from the true parameters on the same drivers and grid. Keys are
        compared as strings; subjects of the table absent from ``truth`` are not evaluated.
    level : float
        Interval level (0.90 -> columns ``_q5`` and ``_q95``), inclusive bounds.
    name : str
        Quantity (default the resistance onset).

    Returns
    -------
    dict
        ``coverage`` (NaN when nothing is evaluated), ``n`` (evaluated), ``n_covered``,
        ``level``, ``n_true_no_regrowth`` (true NaN/inf; covered iff the upper bound is inf) and
        ``missed`` (subject IDs not covered).
    """
    lo_col, hi_col = interval_columns(name, level)
    for c in ("subject", lo_col, hi_col):
        if c not in table.columns:
            raise DataError(f"the table has no column for level {level}", column=c,
                            fix=f"run patient_estimands(..., level={level})")
    subj = [str(s) for s in table["subject"]]
    known = set(subj)
    t = {str(k): float(v) for k, v in truth.items()}
    unknown = sorted(set(t) - known)
    if unknown:
        raise DataError(f"truth has subjects not in the table: {unknown[:5]}", subject=unknown[0],
                        fix="use the posterior's subject IDs (strings)")
    lo = np.asarray(table[lo_col], float)
    hi = np.asarray(table[hi_col], float)
    n = covered = n_inf = 0
    missed = []
    for s, a, b in zip(subj, lo, hi):
        if s not in t:
            continue
        v = t[s]
        n += 1
        if np.isnan(v) or np.isposinf(v):
            n_inf += 1
            ok = bool(np.isposinf(b) or np.isnan(b))
        else:
            ok = bool(a <= v <= b)
        covered += ok
        if not ok:
            missed.append(s)
    return dict(coverage=covered / n if n else float("nan"), n=n, n_covered=covered,
                level=float(level), n_true_no_regrowth=n_inf, missed=missed)
