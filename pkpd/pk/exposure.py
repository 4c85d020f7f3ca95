"""Exposure metrics per dosing cycle from simulations: Cmax, Tmax, Ctrough and AUC.

* ``cmax``/``tmax``: maximum of the continuous profile within the cycle, found on a grid that
  contains every dose and infusion-end time, then refined on a 200x finer grid around the best
  grid point (the profile is exact at every point, so the only error is the refinement grid).
* ``ctrough``: the concentration just before the next cycle starts (before that cycle's dose);
  for the last cycle, at the end of its nominal length or at the horizon, whichever is first.
* ``auc``: exact integral of the concentration over the cycle (an extra state integrates C).

Work is bounded before anything is allocated: a regimen expands to at most
:data:`~pkpd.dosing.regimen.MAX_DOSES` doses, and one :func:`cycle_exposure` evaluates the profile
at
most :data:`MAX_EXPOSURE_POINTS` times (the default grid thins from 2000 (300 for ODE models)
points per cycle to fit, down to :data:`MIN_POINTS_PER_CYCLE`); :func:`concentration_profile`
takes at most :data:`MAX_PROFILE_VALUES` subject-times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..cards.card import Card, list_cards
from ..errors import RegimenError
from ..units import time_factor
from .engine import SolverConfig, compile_records, solve_population, stack

__all__ = ["CycleExposure", "cycle_exposure", "concentration_profile", "dose_records",
           "check_regimen_drug", "MAX_EXPOSURE_POINTS", "MIN_POINTS_PER_CYCLE",
           "MAX_PROFILE_VALUES"]

#: most profile evaluations (grid + peak refinement) of one cycle_exposure: about 40 s and 1 GB
#: here; 10 years of 1-day cycles (3653) fit with 141 grid points per cycle
MAX_EXPOSURE_POINTS = 2_000_000
#: fewest grid points per cycle before a horizon is refused as too long
MIN_POINTS_PER_CYCLE = 24
#: most concentrations (subjects x times) of one concentration_profile
MAX_PROFILE_VALUES = 20_000_000
_REFINE = 401  # refinement points around each cycle's grid maximum


@dataclass(frozen=True)
class CycleExposure:
    """Per-cycle metrics (lists, one entry per cycle). Times in days since the first dose."""

    drug: str
    unit: str
    auc_unit: str
    cycle_start_day: list[float]
    cycle_length_day: list[float]
    cmax: list[float]
    tmax_day: list[float]
    ctrough: list[float]
    auc: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_frame(self) -> pd.DataFrame:
        d = self.to_dict()
        for k in ("drug", "unit", "auc_unit"):
            d.pop(k)
        df = pd.DataFrame(d)
        df.insert(0, "cycle", np.arange(1, len(df) + 1))
        return df


def check_regimen_drug(card: Card, regimen) -> None:
    """A regimen (or resolved doses) prefixed with a drug (``"durvalumab: ..."``) must be for
    this card's drug: its name or its ``[card] drug`` (case-insensitive)."""
    drug = getattr(regimen, "drug", None)
    if not drug:
        return
    mine = {card.name.lower(), str(card.raw["card"].get("drug", card.name)).lower()}
    if str(drug).strip().lower() in mine:
        return
    other = (f"use the {drug} card (`pkpd exposure {drug} ...`)" if drug in list_cards()
             else "use the card of that drug")
    raise RegimenError(
        f"this regimen is for {drug} but the card is {card.name}. Fix: {other}, or drop the "
        f"'{drug}:' prefix to dose {card.name}")


def _check_days(days) -> float:
    try:
        d = float(days)
    except (TypeError, ValueError):
        d = math.nan
    if isinstance(days, bool) or not (math.isfinite(d) and d > 0):
        raise RegimenError(f"days = {days!r}: the horizon must be > 0 and finite (a number of "
                           "days). Fix: e.g. --days 84 (days=84), the horizon from the first "
                           "dose")
    return d


def _points_per_cycle(requested: int | None, default: int, n_cycles: int, n_doses: int,
                      days: float) -> int:
    """Grid points per cycle so that the whole evaluation stays within MAX_EXPOSURE_POINTS."""
    fixed = n_cycles * (_REFINE + 3) + 2 * n_doses
    budget = (MAX_EXPOSURE_POINTS - fixed) // max(n_cycles, 1)
    want = default if requested is None else int(requested)
    if want < 1:
        raise RegimenError(f"points_per_cycle must be >= 1; got {requested!r}. Fix: leave it "
                           "out for the default")
    if want <= budget:
        return want
    if requested is None and budget >= MIN_POINTS_PER_CYCLE:
        return int(budget)
    need = fixed + n_cycles * (MIN_POINTS_PER_CYCLE if requested is None else want)
    raise RegimenError(
        f"the exposure over {days:g} days ({n_cycles} cycles, {n_doses} doses) needs about "
        f"{need} concentration evaluations; at most {MAX_EXPOSURE_POINTS}, which is about "
        f"{_max_cycles()} cycles. Fix: use a shorter horizon (--days)"
        + ("" if requested is None else " or fewer points_per_cycle"))


def _max_cycles() -> int:
    """Most cycles (one dose each) that fit MAX_EXPOSURE_POINTS at MIN_POINTS_PER_CYCLE."""
    return MAX_EXPOSURE_POINTS // (_REFINE + 3 + 2 + MIN_POINTS_PER_CYCLE)


def dose_records(card: Card, doses) -> pd.DataFrame:
    """NONMEM-style dose records (model time unit) from a regimen's resolved doses."""
    check_regimen_drug(card, doses)
    f = time_factor("day", card.time_unit)
    cmt_of = card.dose_cmt
    rows = []
    for t, amt, dur, route in zip(doses.time_day, doses.amount_mg, doses.duration_day,
                                  doses.route):
        route = str(route).upper()
        if route not in cmt_of:
            raise RegimenError(
                f"card {card.name} has no dosing compartment for route {route}. "
                f"Fix: use one of {sorted(cmt_of)}"
            )
        d = float(dur) * f
        rows.append(dict(ATIME=float(t) * f, EVID=1, AMT=float(amt), CMT=cmt_of[route],
                         RATE=float(amt) / d if d > 0 else 0.0, DUR=0.0, II=0.0, SS=0))
    return pd.DataFrame(rows)


def _records(dose_df: pd.DataFrame, obs_times: np.ndarray) -> pd.DataFrame:
    """Merge doses and observations: an observation at a dose time comes BEFORE the dose
    (trough semantics); post-dose peaks are sampled just after the dose by the caller."""
    obs = pd.DataFrame(dict(ATIME=obs_times, EVID=0, AMT=0.0, CMT=1, RATE=0.0, DUR=0.0,
                            II=0.0, SS=0))
    obs["_o"] = 0
    d = dose_df.copy()
    d["_o"] = 1
    df = pd.concat([obs, d], ignore_index=True).sort_values(["ATIME", "_o"], kind="stable")
    df = df.drop(columns="_o").reset_index(drop=True)
    df["ADDL_SRC"] = 0
    df["ROW"] = np.arange(1, len(df) + 1)
    return df


def _profile(card: Card, params, dose_df, times, config):
    model = card.model()
    rec = compile_records(_records(dose_df, times), model, time_col="ATIME")
    conc, auc, _ = solve_population(model, {k: [v] for k, v in params.items()}, stack([rec]),
                                    config=config, with_auc=True)
    n = len(times)
    return np.asarray(conc[0])[:n], np.asarray(auc[0])[:n]


def cycle_exposure(card: Card, regimen, days: float, *,
                   covariates: Mapping[str, float] | None = None,
                   params: Mapping[str, float] | None = None,
                   points_per_cycle: int | None = None,
                   config: SolverConfig | None = None) -> CycleExposure:
    """Typical-value (no IIV) exposure per dosing cycle of ``regimen`` over ``days`` days.

    ``params`` overrides typical values; names must be the card's parameters (or dose
    parameters F1, ALAG1, ...) and values must lie in their domains (:class:`ModelError`).
    """
    check_regimen_drug(card, regimen)
    days = _check_days(days)
    if params:
        card.check_params(params, who="parameter override")
    p = card.typical_params(covariates)
    p.update({k: float(v) for k, v in (params or {}).items()})
    n_cycles, n_doses = regimen.expansion(days)      # refuses a huge expansion early
    # the exact path is cheap per point; the ODE path pays a solve per segment
    points_per_cycle = _points_per_cycle(points_per_cycle,
                                         2000 if card.model().linear else 300,
                                         n_cycles, n_doses, days)
    doses = regimen.doses(covariates, days)
    cycles = regimen.cycle_starts(days)
    starts = np.asarray(cycles.start_day, float)
    lengths = np.asarray(cycles.length_day, float)
    if len(doses.time_day) == 0 or len(starts) == 0:
        raise RegimenError(f"the regimen gives no dose within {days} days. Fix: raise --days")
    f = time_factor("day", card.time_unit)
    dose_df = dose_records(card, doses)
    ends = np.minimum(starts + lengths, days)
    # pass 1: grid with every dose and infusion end
    grid = [np.linspace(s, e, points_per_cycle + 1) for s, e in zip(starts, ends)]
    t_dose = dose_df["ATIME"].to_numpy() / f
    t_end = t_dose + np.where(dose_df["RATE"] > 0, dose_df["AMT"] / dose_df["RATE"].where(
        dose_df["RATE"] > 0, 1.0) / f, 0.0)
    tgrid = np.unique(np.concatenate(grid + [t_end, starts, ends]))
    # peaks at bolus times need the post-dose value: evaluate just after (1e-9 day)
    tgrid = np.unique(np.concatenate([tgrid, t_dose + 1e-9]))
    tgrid = tgrid[(tgrid >= 0) & (tgrid <= days)]
    conc, auc = _profile(card, p, dose_df, tgrid * f, config)
    step = np.max(lengths) / points_per_cycle
    # each cycle is a contiguous slice of the sorted grids (searchsorted, not a mask per cycle)
    lo, hi = np.searchsorted(tgrid, starts, "left"), np.searchsorted(tgrid, ends, "right")
    peak = [a + int(np.argmax(conc[a:b])) for a, b in zip(lo, hi)]
    rt = np.unique(np.concatenate([np.clip(np.linspace(tgrid[i] - step, tgrid[i] + step,
                                                       _REFINE), s, e)
                                   for i, s, e in zip(peak, starts, ends)]))
    rc, _ = _profile(card, p, dose_df, rt * f, config)
    rlo, rhi = np.searchsorted(rt, starts, "left"), np.searchsorted(rt, ends, "right")
    cmax, tmax, ctrough, aucs = [], [], [], []
    for k, (s, e) in enumerate(zip(starts, ends)):
        cand_t = np.concatenate([tgrid[lo[k]:hi[k]], rt[rlo[k]:rhi[k]]])
        cand_c = np.concatenate([conc[lo[k]:hi[k]], rc[rlo[k]:rhi[k]]])
        j = int(np.argmax(cand_c))
        cmax.append(float(cand_c[j]))
        tmax.append(float(cand_t[j]))
        # trough: value at the cycle end (observations sort before doses at the same time)
        ctrough.append(float(conc[np.searchsorted(tgrid, e)]))
        aucs.append(float(auc[np.searchsorted(tgrid, e)] - auc[np.searchsorted(tgrid, s)]))
    return CycleExposure(
        drug=card.name, unit=card.conc_unit, auc_unit=f"{card.conc_unit}*{card.time_unit}",
        cycle_start_day=[float(s) for s in starts], cycle_length_day=[float(x) for x in lengths],
        cmax=cmax, tmax_day=tmax, ctrough=ctrough, auc=aucs,
    )


def _check_times(times_day) -> np.ndarray:
    try:
        t = np.atleast_1d(np.asarray(times_day, dtype=float))
    except (TypeError, ValueError):
        raise RegimenError(f"times must be numbers of days; got {times_day!r}. Fix: e.g. "
                           "np.arange(0, 85, 1.0)") from None
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise RegimenError("times must be a non-empty list of finite days >= 0. Fix: e.g. "
                           "np.arange(0, 85, 1.0)")
    return t


def concentration_profile(card: Card, regimen, times_day, *,
                          covariates: Mapping[str, float] | None = None,
                          params: Mapping[str, np.ndarray] | None = None,
                          config: SolverConfig | None = None) -> np.ndarray:
    """Concentrations (n_subjects, n_times) of ``regimen`` at ``times_day``.

    ``params`` maps parameter names to arrays of individual values (e.g. from
    :meth:`Card.sample_params`); by default the typical values give one row. Observations at a
    dose time are pre-dose values.
    """
    check_regimen_drug(card, regimen)
    times_day = _check_times(times_day)
    if params is None:
        params = {k: np.array([v]) for k, v in card.typical_params(covariates).items()}
    else:
        params = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in params.items()}
        card.check_params(params, who="params")
        sizes = {len(v) for v in params.values()}
        if len(sizes) != 1:
            raise RegimenError(f"params arrays have different lengths {sorted(sizes)}. Fix: "
                               "give one value per subject for every parameter")
    n = len(next(iter(params.values())))
    if n * len(times_day) > MAX_PROFILE_VALUES:
        raise RegimenError(
            f"{n} subjects x {len(times_day)} times = {n * len(times_day)} concentrations; at "
            f"most {MAX_PROFILE_VALUES}. Fix: fewer subjects or output times")
    model = card.model()
    dose_df = dose_records(card, regimen.doses(covariates, float(np.max(times_day)) + 1e-9))
    f = time_factor("day", card.time_unit)
    rec = compile_records(_records(dose_df, np.asarray(times_day, float) * f), model,
                          time_col="ATIME")
    conc, _ = solve_population(model, params, stack([rec] * n), config=config)
    return np.asarray(conc)[:, : len(times_day)]
