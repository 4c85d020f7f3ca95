"""Exposure metrics per dosing cycle from simulations: Cmax, Tmax, Ctrough and AUC.

* ``cmax``/``tmax``: maximum of the continuous profile within the cycle, found on a grid that
  contains every dose and infusion-end time, then refined on a 200x finer grid around the best
  grid point (the profile is exact at every point, so the only error is the refinement grid).
* ``ctrough``: the concentration just before the next cycle starts (before that cycle's dose);
  for the last cycle, at the end of its nominal length or at the horizon, whichever is first.
* ``auc``: exact integral of the concentration over the cycle (an extra state integrates C).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .cards import Card
from .engine import SolverConfig, compile_records, solve_population, stack
from .errors import RegimenError
from .units import time_factor

__all__ = ["CycleExposure", "cycle_exposure", "dose_records"]


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


def dose_records(card: Card, doses) -> pd.DataFrame:
    """NONMEM-style dose records (model time unit) from a regimen's resolved doses."""
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
    """Typical-value (no IIV) exposure per dosing cycle of ``regimen`` over ``days`` days."""
    p = card.typical_params(covariates)
    p.update(params or {})
    if points_per_cycle is None:
        # the exact path is cheap per point; the ODE path pays a solve per segment
        points_per_cycle = 2000 if card.model().linear else 300
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
    cmax, tmax, ctrough, aucs = [], [], [], []
    refine_t = []
    for s, e in zip(starts, ends):
        m = (tgrid >= s) & (tgrid <= e)
        i = np.argmax(np.where(m, conc, -np.inf))
        refine_t.append(np.clip(np.linspace(tgrid[i] - step, tgrid[i] + step, 401), s, e))
    rt = np.unique(np.concatenate(refine_t))
    rc, _ = _profile(card, p, dose_df, rt * f, config)
    for s, e in zip(starts, ends):
        m = (tgrid >= s) & (tgrid <= e)
        mr = (rt >= s) & (rt <= e)
        cand_t = np.concatenate([tgrid[m], rt[mr]])
        cand_c = np.concatenate([conc[m], rc[mr]])
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


def concentration_profile(card: Card, regimen, times_day, *,
                          covariates: Mapping[str, float] | None = None,
                          params: Mapping[str, np.ndarray] | None = None,
                          config: SolverConfig | None = None) -> np.ndarray:
    """Concentrations (n_subjects, n_times) of ``regimen`` at ``times_day``.

    ``params`` maps parameter names to arrays of individual values (e.g. from
    :meth:`Card.sample_params`); by default the typical values give one row. Observations at a
    dose time are pre-dose values.
    """
    if params is None:
        params = {k: np.array([v]) for k, v in card.typical_params(covariates).items()}
    n = len(next(iter(params.values())))
    model = card.model()
    dose_df = dose_records(card, regimen.doses(covariates, float(np.max(times_day)) + 1e-9))
    f = time_factor("day", card.time_unit)
    rec = compile_records(_records(dose_df, np.asarray(times_day, float) * f), model,
                          time_col="ATIME")
    conc, _ = solve_population(model, params, stack([rec] * n), config=config)
    return np.asarray(conc)[:, : len(times_day)]
