"""Exposure metrics per dosing cycle (or per window of continuous dosing) from simulations:
Cmax, Tmax, Ctrough and AUC, plus the steady state of continuous dosing.

* ``cmax``/``tmax``: maximum of the continuous profile within the cycle, found on a grid that
  contains every dose and infusion-end time, then refined on a 200x finer grid around the best
  grid point (the profile is exact at every point, so the only error is the refinement grid).
* ``ctrough``: the concentration just before the next cycle starts (before that cycle's dose);
  for the last cycle, at the end of its nominal length or at the horizon, whichever is first.
* ``auc``: exact integral of the concentration over the cycle (an extra state integrates C).

Continuous dosing (``12 mg PO QD``, BID, Q8H, Q2D: a phase with no day list whose "cycle" is
shorter than a week and holds evenly spaced doses) has no treatment cycle: its 1-day "cycles" are
dosing intervals. Such phases are summarised per **window** of :data:`DEFAULT_WINDOW_DAYS` days
(``window_days=`` / ``--window`` chooses another length), and the steady state of the last phase,
when it is continuous, is given as :class:`SteadyState` (Cmax,ss, Tmax,ss, Ctrough,ss,
AUC over a dosing interval and per day, Cavg,ss and the accumulation ratio), computed with a
NONMEM SS=1 dose record (exact for linear models).

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

__all__ = ["CycleExposure", "SteadyState", "cycle_exposure", "steady_state",
           "is_continuous", "concentration_profile", "dose_records", "check_regimen_drug",
           "MAX_EXPOSURE_POINTS", "MIN_POINTS_PER_CYCLE", "MAX_PROFILE_VALUES",
           "DEFAULT_WINDOW_DAYS"]

#: most profile evaluations (grid + peak refinement) of one cycle_exposure: about 40 s and 1 GB
#: here; 10 years of 1-day cycles (3653) fit with 141 grid points per cycle
MAX_EXPOSURE_POINTS = 2_000_000
#: fewest grid points per cycle before a horizon is refused as too long
MIN_POINTS_PER_CYCLE = 24
#: most concentrations (subjects x times) of one concentration_profile
MAX_PROFILE_VALUES = 20_000_000
_REFINE = 401  # refinement points around each cycle's grid maximum
_SCREEN = 21   # points around each candidate peak of a window (several near-equal peaks)
_MAX_PEAKS = 8  # most candidate peaks screened per window
#: window length (days) of continuous dosing when none is chosen: the 21-day cycle of the
#: protocols it is compared with (anlotinib D1-14 Q21D, EP Q21D, durvalumab Q3W), so that window
#: k of "12 mg PO QD" lines up with cycle k of "12 mg PO QD D1-14 Q21D"
DEFAULT_WINDOW_DAYS = 21.0


@dataclass(frozen=True)
class SteadyState:
    """Steady state of a continuous phase (typical values): one dosing interval after a dose.

    ``cmax``, ``ctrough`` and ``cavg`` (= ``auc_tau`` / interval) in the card's concentration
    unit; ``tmax_h`` is hours after the dose; ``auc_tau`` (one dosing interval) and
    ``auc_per_day`` in the card's AUC unit; ``accumulation_ratio`` is AUC over a dosing interval at
    steady state divided by AUC over the first dosing interval after a single dose.
    """

    phase: str
    dose_mg: float
    dosing_interval_h: float
    cmax: float
    tmax_h: float
    ctrough: float
    cavg: float
    auc_tau: float
    auc_per_day: float
    accumulation_ratio: float


@dataclass(frozen=True)
class CycleExposure:
    """Metrics per period (lists, one entry per period). Times in days since the first dose.

    A period is a dosing cycle (``period == "cycle"``) or, for continuous dosing or when a
    window is chosen, a window of ``window_days`` days (``period == "window"``); the fields keep
    their ``cycle_`` names (also readable as :attr:`start_day` and :attr:`length_day`), and
    :meth:`to_dict` / :meth:`to_frame` name them after the period. ``steady_state`` is set when
    the last phase is continuous.
    """

    drug: str
    unit: str
    auc_unit: str
    cycle_start_day: list[float]
    cycle_length_day: list[float]
    cmax: list[float]
    tmax_day: list[float]
    ctrough: list[float]
    auc: list[float]
    period: str = "cycle"
    window_days: float | None = None
    steady_state: SteadyState | None = None

    @property
    def start_day(self) -> list[float]:
        """Start of each period (days)."""
        return self.cycle_start_day

    @property
    def length_day(self) -> list[float]:
        """Length of each period (days)."""
        return self.cycle_length_day

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = {k: d.pop(k) for k in ("period", "window_days", "steady_state")}
        if self.period == "cycle" and self.steady_state is None and self.window_days is None:
            return d                            # the per-cycle form, unchanged
        out = {k: d[k] for k in ("drug", "unit", "auc_unit")}
        out["period"] = self.period
        out["window_days"] = extra["window_days"]
        out[f"{self.period}_start_day"] = d["cycle_start_day"]
        out[f"{self.period}_length_day"] = d["cycle_length_day"]
        out.update({k: d[k] for k in ("cmax", "tmax_day", "ctrough", "auc")})
        out["steady_state"] = extra["steady_state"]
        return out

    def to_frame(self) -> pd.DataFrame:
        d = {f"{self.period}_start_day": self.cycle_start_day,
             f"{self.period}_length_day": self.cycle_length_day,
             "cmax": self.cmax, "tmax_day": self.tmax_day, "ctrough": self.ctrough,
             "auc": self.auc}
        df = pd.DataFrame(d)
        df.insert(0, self.period, np.arange(1, len(df) + 1))
        return df


def is_continuous(phase) -> bool:
    """Whether a :class:`~pkpd.dosing.regimen.Phase` is continuous dosing: no day list, a
    "cycle" shorter than a week, and evenly spaced doses (QD, BID, Q8H, Q2D, ...). Its cycle is
    then only the dosing interval, not a treatment cycle."""
    return (phase.days == (1,) and phase.cycle_days < 7
            and (phase.cycle_days == 1 or phase.doses_per_day == 1))


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
                      days: float, period: str = "cycle", peaks: int = 1) -> int:
    """Grid points per cycle so that the whole evaluation stays within MAX_EXPOSURE_POINTS
    (``peaks`` > 1: that many candidate peaks per period are screened, :func:`_peak_search`)."""
    fixed = n_cycles * (_REFINE + 3 + (peaks * _SCREEN if peaks > 1 else 0)) + 2 * n_doses
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
        f"the exposure over {days:g} days ({n_cycles} {period}s, {n_doses} doses) needs about "
        f"{need} concentration evaluations; at most {MAX_EXPOSURE_POINTS}, which is about "
        f"{_max_cycles()} {period}s. Fix: use a shorter horizon (--days)"
        + (" or a longer window (--window)" if period == "window" else "")
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


def _check_window(window_days, days: float) -> float | None:
    if window_days is None:
        return None
    try:
        w = float(window_days)
    except (TypeError, ValueError):
        w = math.nan
    if isinstance(window_days, bool) or not (math.isfinite(w) and w > 0):
        raise RegimenError(f"window_days = {window_days!r}: the window must be a number of days "
                           "> 0. Fix: e.g. --window 21 (window_days=21), or leave it out")
    if w > days:
        raise RegimenError(f"the window ({w:g} days) is longer than the horizon ({days:g} days). "
                           f"Fix: a window of at most {days:g} days, or a longer horizon (--days)")
    return w


def _tile(t0: float, t1: float, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window`` days from ``t0``; the last one ends at ``t1``."""
    s = t0 + window * np.arange(max(math.ceil((t1 - t0) / window - 1e-9), 0))
    return s, np.minimum(s + window, t1)


def _periods(regimen, days: float, window: float | None):
    """(label, starts, ends, reported lengths) of the exposure periods. Cycles as they are,
    except that the cycles of a continuous phase become windows (DEFAULT_WINDOW_DAYS) within
    that phase; a chosen window tiles the whole horizon from the regimen's start."""
    cyc = regimen.cycle_starts(days)
    phases = regimen.phases
    cont = np.array([is_continuous(phases[k]) for k in cyc.phase_index], bool)
    if window is None and not cont.any():
        starts = np.asarray(cyc.start_day, float)
        lengths = np.asarray(cyc.length_day, float)
        return "cycle", starts, np.minimum(starts + lengths, days), lengths
    if window is not None or cont.all():
        t0 = float(cyc.start_day[0]) if len(cyc.start_day) else days
        w = DEFAULT_WINDOW_DAYS if window is None else window
        s, e = _tile(t0, days, w)
        return "window", s, e, e - s
    # cycled and continuous phases: window each continuous phase within its own cycles
    starts, ends, lengths = [], [], []
    for k in np.unique(cyc.phase_index):
        sel = cyc.phase_index == k
        s0, ln = cyc.start_day[sel], cyc.length_day[sel]
        if is_continuous(phases[k]):
            s, e = _tile(float(s0[0]), min(float(s0[-1] + ln[-1]), days), DEFAULT_WINDOW_DAYS)
            starts.append(s), ends.append(e), lengths.append(e - s)
        else:
            starts.append(s0), ends.append(np.minimum(s0 + ln, days)), lengths.append(ln)
    return ("cycle", np.concatenate(starts).astype(float), np.concatenate(ends).astype(float),
            np.concatenate(lengths).astype(float))


def _n_windows(regimen, days: float, window: float | None) -> int | None:
    """Number of windows of a chosen window (None without one), counted before allocating."""
    if window is None:
        return None
    return max(math.ceil((days - regimen.start_day) / window - 1e-9), 1)


def cycle_exposure(card: Card, regimen, days: float, *,
                   covariates: Mapping[str, float] | None = None,
                   params: Mapping[str, float] | None = None,
                   points_per_cycle: int | None = None,
                   window_days: float | None = None,
                   config: SolverConfig | None = None) -> CycleExposure:
    """Typical-value (no IIV) exposure per dosing cycle of ``regimen`` over ``days`` days.

    Continuous phases (:func:`is_continuous`: QD, BID, ... with no day list) are summarised per
    window of :data:`DEFAULT_WINDOW_DAYS` days instead of per 1-day "cycle". ``window_days``
    (days, > 0 and <= ``days``) summarises the whole horizon per window of that length from the
    regimen's start instead, whatever the regimen; a last window cut by the horizon is shorter
    (its real length is reported). When the last phase is continuous, ``steady_state`` holds its
    :func:`steady_state`.

    ``params`` overrides typical values; names must be the card's parameters (or dose
    parameters F1, ALAG1, ...) and values must lie in their domains (:class:`ModelError`).
    """
    check_regimen_drug(card, regimen)
    days = _check_days(days)
    window = _check_window(window_days, days)
    if params:
        card.check_params(params, who="parameter override")
    p = card.typical_params(covariates)
    p.update({k: float(v) for k, v in (params or {}).items()})
    n_cycles, n_doses = regimen.expansion(days)      # refuses a huge expansion early
    default = 2000 if card.model().linear else 300   # the ODE path pays a solve per segment
    per_cycle = window is None and not any(is_continuous(ph) for ph in regimen.phases)
    if per_cycle:                                    # per dosing cycle, as before issue 15
        points = _points_per_cycle(points_per_cycle, default, n_cycles, n_doses, days)
    elif window is not None:                         # refuses too many windows before allocating
        _points_per_cycle(points_per_cycle, default, _n_windows(regimen, days, window), n_doses,
                          days, "window")
    period, starts, ends, lengths = _periods(regimen, days, window)
    doses = regimen.doses(covariates, days)
    if len(doses.time_day) == 0 or len(starts) == 0:
        raise RegimenError(f"the regimen gives no dose within {days} days. Fix: raise --days")
    peaks = 1
    if not per_cycle:
        # a window holds many near-equal peaks: screen the best few grid maxima of each
        t = np.asarray(doses.time_day, float)
        per = np.searchsorted(t, ends, "left") - np.searchsorted(t, starts, "left")
        peaks = int(min(_MAX_PEAKS, per.max() + 1))
        points = _points_per_cycle(points_per_cycle, default, len(starts), n_doses, days, period,
                                   peaks)
    cmax, tmax, ctrough, aucs = _period_metrics(card, p, dose_records(card, doses), starts, ends,
                                                lengths, days, points, config, peaks)
    last = regimen.phases[-1]
    ss = (steady_state(card, last, covariates=covariates, params=params, config=config)
          if is_continuous(last) else None)
    return CycleExposure(
        drug=card.name, unit=card.conc_unit, auc_unit=f"{card.conc_unit}*{card.time_unit}",
        cycle_start_day=[float(s) for s in starts], cycle_length_day=[float(x) for x in lengths],
        cmax=cmax, tmax_day=tmax, ctrough=ctrough, auc=aucs, period=period,
        window_days=(None if period == "cycle" else
                     float(window if window is not None else DEFAULT_WINDOW_DAYS)),
        steady_state=ss,
    )


def _peak_search(card, p, dose_df, tgrid, conc, lo, hi, starts, ends, step, peaks, config):
    """Refinement times for each period when it holds several near-equal peaks (a window of
    continuous dosing): the ``peaks`` highest grid local maxima of the period are screened with
    _SCREEN points each (one solve for all), and the best screened point is refined with _REFINE
    points over one screening spacing. Returns the screened and refined times, sorted."""
    f = time_factor("day", card.time_unit)
    n = len(conc)
    left = np.concatenate([[-np.inf], conc[:-1]])
    right = np.concatenate([conc[1:], [-np.inf]])
    is_max = (conc > left) & (conc >= right)
    cand = []
    for a, b in zip(lo, hi):
        idx = a + np.flatnonzero(is_max[a:b])
        idx = idx[np.argsort(-conc[idx], kind="stable")[:peaks]] if idx.size else idx
        cand.append(np.append(idx, a + int(np.argmax(conc[a:b]))).clip(0, n - 1))
    st = np.unique(np.concatenate([
        np.clip(np.linspace(tgrid[i] - step, tgrid[i] + step, _SCREEN), s, e)
        for c, s, e in zip(cand, starts, ends) for i in c]))
    sc, _ = _profile(card, p, dose_df, st * f, config)
    slo, shi = np.searchsorted(st, starts, "left"), np.searchsorted(st, ends, "right")
    fine = 2 * step / (_SCREEN - 1)
    best = [st[a + int(np.argmax(sc[a:b]))] for a, b in zip(slo, shi)]
    rt = np.concatenate([np.clip(np.linspace(t - fine, t + fine, _REFINE), s, e)
                         for t, s, e in zip(best, starts, ends)])
    return np.unique(np.concatenate([st, rt]))


def _period_metrics(card, p, dose_df, starts, ends, lengths, days, points_per_cycle, config,
                    peaks=1):
    """Cmax, Tmax, Ctrough (value at the period end, before a dose there) and exact AUC of each
    period [start, end]."""
    f = time_factor("day", card.time_unit)
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
    # each period is a contiguous slice of the sorted grids (searchsorted, not a mask per cycle)
    lo, hi = np.searchsorted(tgrid, starts, "left"), np.searchsorted(tgrid, ends, "right")
    if peaks > 1:
        rt = _peak_search(card, p, dose_df, tgrid, conc, lo, hi, starts, ends, step, peaks,
                          config)
    else:
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
    return cmax, tmax, ctrough, aucs


def steady_state(card: Card, phase, *, covariates: Mapping[str, float] | None = None,
                 params: Mapping[str, float] | None = None,
                 points: int = 2000, config: SolverConfig | None = None) -> SteadyState:
    """Typical-value steady state of a continuous :class:`~pkpd.dosing.regimen.Phase` (one
    dose every ``cycle_days / doses_per_day`` days), from a NONMEM SS=1 dose record (exact for
    linear models; nonlinear models run in as the engine documents).

    Cmax,ss is refined like :func:`cycle_exposure`'s; Ctrough,ss is the value one dosing interval
    after the dose (= just before the next one); AUC over the interval is exact.
    """
    from ..dosing.regimen import Regimen

    if not is_continuous(phase):
        raise RegimenError(f"{phase.to_text()!r} is not continuous dosing (it has a day list or a "
                           "cycle of a week or more), so it has no single dosing interval. Fix: "
                           "use a QD/BID/Q8H/Q2D phase")
    if params:
        card.check_params(params, who="parameter override")
    p = card.typical_params(covariates)
    p.update({k: float(v) for k, v in (params or {}).items()})
    tau = phase.cycle_days / phase.doses_per_day                     # days
    f = time_factor("day", card.time_unit)
    one = dose_records(card, Regimen(phases=(phase.replace(n_cycles=1),)).doses(covariates,
                                                                                tau)).iloc[:1]
    ss = one.assign(II=tau * f, SS=1)
    t = np.linspace(0.0, tau, points + 1)
    t[0] = 1e-9 * tau                     # just after the dose (an observation at 0 is pre-dose)
    conc, auc = _profile(card, p, ss, t * f, config)
    i = int(np.argmax(conc))
    step = tau / points
    rt = np.clip(np.linspace(t[i] - step, t[i] + step, _REFINE), t[0], tau)
    rc, _ = _profile(card, p, ss, rt * f, config)
    j = int(np.argmax(rc))
    cmax, tmax = (float(rc[j]), float(rt[j])) if rc[j] > conc[i] else (float(conc[i]),
                                                                       float(t[i]))
    _, auc1 = _profile(card, p, one, np.array([tau]) * f, config)   # first interval, one dose
    auc_tau = float(auc[-1])
    h = time_factor("day", "h")
    per_day = 1.0 / tau
    return SteadyState(
        phase=phase.to_text(), dose_mg=float(one["AMT"].iloc[0]), dosing_interval_h=tau * h,
        cmax=cmax, tmax_h=tmax * h, ctrough=float(conc[-1]), cavg=auc_tau / (tau * f),
        auc_tau=auc_tau, auc_per_day=auc_tau * per_day,
        accumulation_ratio=auc_tau / float(auc1[0]))


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
