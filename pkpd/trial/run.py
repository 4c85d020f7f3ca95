"""Run a virtual trial arm: population -> exposure -> tumour -> scans -> RECIST -> endpoints.

    from pkpd.trial import run_trial
    res = run_trial("durvalumab_ep", n=500, replicates=20, seed=1)
    res.summary()          # each endpoint: mean and 90% interval over replicates
    res.endpoints          # one row per replicate
    res.patients           # one row per patient and replicate (covariates, BOR, PFS, ...)

Each replicate draws its patients' covariates from the scenario's population, their PK and tumour
parameters from the cards (IIV), simulates the SLD at the scan days with the card's residual
error, removes the scans after dropout or the data cut-off, and applies RECIST 1.1 to the scans
(:func:`pkpd.trial.recist_scan.evaluate_scans`). The endpoints are computed per replicate.

Random numbers: replicate ``r`` of seed ``s`` uses ``numpy.random.SeedSequence([s, r])``, spawned
into independent streams for the population, the simulation (IIV and residual error), dropout,
the visit windows and the choice of the population draw (``draws=``). So two scenarios run with
the same seed share their virtual patients' covariates (common random numbers), whatever their
regimens, and the same posterior draw. ``stream=K`` gives an arm its own patients
(``SeedSequence([s, r, K])`` for the first four streams) while keeping the population draw of
replicate ``r``: independent patients in the same trial world, as in a randomised trial.

Population sources (:mod:`pkpd.trial.sources`): the scenario's tumour card, another card
(``card=``, e.g. a calibrated one), or a table of population draws (``draws=``, e.g.
:func:`~pkpd.trial.sources.posterior_draws` of a fit): replicate ``r`` then uses one row,
chosen from its own stream, as the card's typical values and IIV variances.

PFS counts radiographic progression only: this layer has no death model yet, so PFS is not
censored or ended by death.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..cards.card import Card, load_card
from ..errors import SpecError
from ..survival.km import DAYS_PER_MONTH, km_median, km_rate
from ..tumour.simulate import simulate
from .design import MAX_PATIENTS_PER_ARM, Scenario, load_scenario
from .population import Population
from .recist_scan import BOR_CODES, evaluate_scans
from .success import parse_rules, success_frame, success_rows

__all__ = ["run_trial", "TrialResult", "ENDPOINTS", "HEADLINE", "draw_index"]

#: endpoints computed per replicate (fractions 0-1, times in months, depth in %)
ENDPOINTS = ("orr", "orr_confirmed", "dcr", "median_pfs_months", "pfs_6m", "pfs_12m",
             "median_dor_months", "median_depth_pct", "median_resistance_onset_months")
#: the keys ``pkpd trial --json`` prints
HEADLINE = ("orr", "orr_confirmed", "dcr", "median_pfs_months", "pfs_6m", "pfs_12m")

#: RECIST 1.1 minimum duration of stable disease (days from the first dose); with a visit window
#: of w days, SD counts from day 42 - w, so that a 6-week scan done early still counts (the usual
#: protocol wording, "at least 6 weeks, within the visit window")
SD_MIN_DAYS = 42.0
#: a simulated SLD that is not finite (the exponential model overflowed: it grew without bound,
#: e.g. a negative synergy factor 1 + PSI*U with a large immune kill) is recorded as this value,
#: so the patient progresses at that scan; such patients are counted (``sld_capped``) and
#: warned about. Finite values, however large, are kept as simulated.
SLD_CAP_MM = 1.0e12

_CR, _PR, _SD = (BOR_CODES[c] for c in ("CR", "PR", "SD"))


@dataclass
class TrialResult:
    """Endpoints per replicate, patients per replicate, and how they were made."""

    scenario: Scenario
    endpoints: pd.DataFrame
    patients: pd.DataFrame
    meta: dict = field(default_factory=dict)
    #: P(success) per rule (:mod:`pkpd.trial.success`), when rules were given
    success: pd.DataFrame | None = None

    def summary(self, level: float = 0.90) -> pd.DataFrame:
        """Each endpoint: mean over replicates and the central ``level`` interval."""
        q = (1 - level) / 2
        e = self.endpoints[list(ENDPOINTS)]
        return pd.DataFrame({"mean": e.mean(), "lo": e.quantile(q), "hi": e.quantile(1 - q)})

    def headline(self, level: float = 0.90) -> dict:
        """The :data:`HEADLINE` endpoints (mean over replicates) and, with more than one
        replicate, ``KEY_lo`` / ``KEY_hi`` (the central ``level`` interval)."""
        s = self.summary(level)
        out = {k: _num(s.loc[k, "mean"]) for k in HEADLINE}
        if len(self.endpoints) > 1:
            for k in HEADLINE:
                out[f"{k}_lo"], out[f"{k}_hi"] = _num(s.loc[k, "lo"]), _num(s.loc[k, "hi"])
        return out


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _check(scenario, n, replicates, seed) -> tuple[Scenario, int, int]:
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    n = sc.n if n is None else n
    for name, v, hi in (("n", n, MAX_PATIENTS_PER_ARM), ("replicates", replicates, 10_000)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 1 <= v <= hi:
            raise SpecError(f"{name} = {v!r} must be a whole number from 1 to {hi:,}. Fix: e.g. "
                            f"{'--n 500' if name == 'n' else '--replicates 20'}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError(f"seed = {seed!r} must be a whole number >= 0. Fix: e.g. --seed 1")
    return sc, int(n), int(replicates)


def _observed(sc: Scenario, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which scans are done: all up to dropout (exponential, ``dropout_per_year`` = the
    probability of leaving within a year), the data cut-off and the simulated horizon; the
    baseline always. ``days``: ``(n, n_scans)`` actual scan days."""
    n = days.shape[0]
    p = sc.dropout_per_year
    if p > 0:
        rate = -math.log1p(-min(p, 1 - 1e-12)) / 365.25
        drop = rng.exponential(1.0 / rate, n)
    else:
        drop = np.full(n, np.inf)
    obs = days <= np.minimum(np.minimum(drop, sc.cutoff), sc.days)[:, None]
    obs[:, 0] = True
    return obs


def _sld_at_scans(sc: Scenario, card, cov: pd.DataFrame, days: np.ndarray, seed: int, params):
    """The observed SLD (residual error included) of each patient at its own scan days, and
    the simulation. The model is simulated once on every day a scan can fall on (a grid that
    does not depend on the draws, so it compiles once)."""
    n = days.shape[0]
    grid = sc.scans.possible_days(sc.days)
    sim = simulate(card, sc.protocol(), sc.days, n=n, seed=seed, times=grid,
                   covariates=cov.drop(columns=["ID"]), params=params, residual=True,
                   progress=False)
    dv = sim.trajectories["DV"].to_numpy().reshape(n, grid.size)
    ipred = sim.trajectories["IPRED"].to_numpy().reshape(n, grid.size)
    blown = ~np.isfinite(ipred) | ~np.isfinite(dv)
    dv = np.where(blown, SLD_CAP_MM, dv)
    col = np.searchsorted(grid, np.clip(days, 0.0, sc.days))
    sim.patients["sld_capped"] = blown.any(axis=1)
    return np.take_along_axis(dv, col, axis=1), sim


def _streams(seed: int, r: int, stream: int | None = None) -> list:
    """Seed sequences of replicate ``r``: population, simulation, dropout, visit, draw. With
    ``stream``, the first four (the patients) come from ``[seed, r, stream]``; the draw's stays."""
    base = np.random.SeedSequence([seed, r]).spawn(5)
    if stream is None:
        return base
    return [*np.random.SeedSequence([seed, r, int(stream)]).spawn(4), base[4]]


def draw_index(seed: int, r: int, n_draws: int) -> int:
    """The row of a draws table that replicate ``r`` of ``seed`` uses (the same in every arm)."""
    return int(np.random.default_rng(_streams(seed, r)[4]).integers(n_draws))


def _replicate(sc: Scenario, pop: Population, n: int, seed: int, r: int, params, card=None,
               stream: int | None = None):
    """One replicate: the per-patient table and the endpoints."""
    pop_ss, sim_ss, drop_ss, visit_ss, _ = _streams(seed, r, stream)
    cov = pop.draw(n, np.random.default_rng(pop_ss))
    days = sc.scans.patient_days(n, np.random.default_rng(visit_ss))
    sld, sim = _sld_at_scans(sc, sc.model if card is None else card, cov, days,
                             int(sim_ss.generate_state(1)[0]), params)
    obs = _observed(sc, days, np.random.default_rng(drop_ss))
    rec = evaluate_scans(np.where(obs, sld, np.nan), np.where(obs, days, np.nan), observed=obs,
                         sd_min_days=SD_MIN_DAYS - sc.scans.window_days)
    pat = rec.to_frame().drop(columns=["patient"])
    pat.insert(0, "replicate", r)
    pat.insert(1, "ID", cov["ID"].to_numpy())
    pat["resistance_onset_day"] = sim.patients["resistance_onset_day"].to_numpy()
    pat["sld_capped"] = sim.patients["sld_capped"].to_numpy()
    for c in cov.columns.drop("ID"):
        pat[c] = cov[c].to_numpy()
    return pat, _endpoints(rec, pat["resistance_onset_day"].to_numpy())


def _warn_capped(name: str, k: int, total: int) -> None:
    if k:
        import warnings

        warnings.warn(f"scenario {name}: {k} of {total} virtual patients had a simulated SLD "
                      "that overflowed (not finite: the tumour model grew without bound, e.g. "
                      f"a negative synergy factor 1 + PSI*U); it was recorded as "
                      f"{SLD_CAP_MM:g} mm, so they progress at that scan "
                      "(patients['sld_capped'])",
                      RuntimeWarning, stacklevel=3)


def _endpoints(rec, onset_day: np.ndarray) -> dict:
    resp_u = np.isin(rec.bor, (_CR, _PR))
    resp_c = np.isin(rec.bor_confirmed, (_CR, _PR))
    six, twelve = km_rate(rec.pfs_days, rec.pfs_event, np.array([6, 12]) * DAYS_PER_MONTH)
    dor = rec.dor_days[resp_c]
    dor_m = (km_median(dor, rec.dor_event[resp_c].astype(int)).median_days / DAYS_PER_MONTH
             if dor.size else np.nan)
    return {
        "orr": resp_u.mean(), "orr_confirmed": resp_c.mean(),
        "dcr": np.isin(rec.bor_confirmed, (_CR, _PR, _SD)).mean(),
        "median_pfs_months": km_median(rec.pfs_days, rec.pfs_event).median_days / DAYS_PER_MONTH,
        "pfs_6m": six, "pfs_12m": twelve, "median_dor_months": dor_m,
        "median_depth_pct": float(np.nanmedian(rec.best_pct_change))
        if np.isfinite(rec.best_pct_change).any() else np.nan,
        "median_resistance_onset_months": _median_with_infinity(onset_day) / DAYS_PER_MONTH,
    }


def _median_with_infinity(day: np.ndarray) -> float:
    """Median where NaN (not reached within the horizon) counts as later than every value."""
    x = np.where(np.isnan(day), np.inf, day)
    return float(np.median(x))


def _client(dask):
    """A ``distributed.Client`` for ``dask`` (a client, or a scheduler address)."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - the [dask] extra is part of dev
        raise SpecError("--dask needs the dask extra. Fix: pip install 'pkpd[dask]'") from None
    if isinstance(dask, Client):
        return dask, False
    try:
        return Client(str(dask), timeout="5s"), True
    except OSError as e:
        raise SpecError(f"cannot reach the Dask scheduler at {dask!r} ({e}). Fix: start one "
                        "(dask scheduler) or leave --dask out to run in this process") from None


def _replicates(sc, pop, n, seed, replicates, params, progress, dask, cards=None,
                stream=None) -> list:
    """``[(patients, endpoints), ...]`` in replicate order, in this process or on Dask. Each
    replicate depends only on ``(seed, r)`` (and its card), so the backend does not change the
    numbers. ``cards``: one card (or None) per replicate."""
    cards = list(cards) if cards is not None else [None] * replicates
    if dask is not None:
        client, own = _client(dask)
        try:
            futures = client.map(_replicate, [sc] * replicates, [pop] * replicates,
                                 [n] * replicates, [int(seed)] * replicates,
                                 list(range(replicates)), [params] * replicates,
                                 cards, [stream] * replicates, pure=False)
            return client.gather(futures)
        finally:
            if own:
                client.close()
    out, bar = [], None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=replicates, desc=f"trial {sc.name}", unit="replicate")
    for r in range(replicates):
        out.append(_replicate(sc, pop, n, int(seed), r, params, cards[r], stream))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _cards(sc: Scenario, card, draws, seed: int, replicates: int):
    """The base card, one card per replicate, the draw index per replicate (or None) and the
    population source's description."""
    from .sources import card_for_draw, check_draws

    if card is not None and not isinstance(card, Card):
        card = load_card(card)
    if draws is None:
        return card, [card] * replicates, None, f"card {card.name if card else sc.model}"
    base = card if card is not None else load_card(sc.model)
    check_draws(draws, base)
    idx = [draw_index(seed, r, len(draws)) for r in range(replicates)]
    cards = [card_for_draw(base, draws.iloc[i]) for i in idx]
    return base, cards, idx, draws.attrs.get("source", "draws table")


def run_trial(scenario: Scenario | str, *, n: int | None = None, replicates: int = 1,
              seed: int = 0, population: Population | str | None = None,
              params: dict | None = None, card=None, draws: pd.DataFrame | None = None,
              success=None, stream: int | None = None, level: float = 0.90,
              progress: bool = False, dask=None) -> TrialResult:
    """Simulate ``replicates`` trials of one arm (``scenario``: a name in ``scenarios/``, a path
    or a :class:`Scenario`) with ``n`` patients each (default: the scenario's ``n``).

    ``population``: a :class:`~pkpd.trial.population.Population` or its name (default: the
    scenario's); ``params``: overrides of the tumour card's typical values (e.g. ``{"PSI": 0}``);
    ``card``: a tumour card (:class:`~pkpd.cards.Card`, name or path) in place of the
    scenario's, e.g. a calibrated card.
    ``draws``: population draws (a DataFrame with card parameter names and ``omega2_NAME``
    columns, one row per draw, e.g. :func:`pkpd.trial.sources.posterior_draws`); each replicate
    uses one row (``meta["draw_index"]``, ``endpoints["draw"]``); ``params`` still override.
    ``success``: rules (:mod:`pkpd.trial.success`, e.g. ``"orr_confirmed >= 0.75"``); their
    P(success) with a Wilson ``level`` interval is in ``result.success``.
    ``stream``: an integer giving this arm its own patients (see the module docstring).
    ``dask``: a ``distributed.Client`` or a scheduler address; the replicates then run on its
    workers, with the same numbers as in this process.
    """
    sc, n, replicates = _check(scenario, n, replicates, seed)
    rules = parse_rules(success, endpoints=ENDPOINTS)
    pop = population if isinstance(population, Population) else Population.load(
        population or sc.population)
    card, cards, idx, source = _cards(sc, card, draws, int(seed), replicates)
    done = _replicates(sc, pop, n, seed, replicates, params, progress, dask, cards, stream)
    pats = [pat for pat, _ in done]
    rows = [{"replicate": r, **ends} for r, (_, ends) in enumerate(done)]
    ends = pd.DataFrame(rows)
    if idx is not None:
        ends["draw"] = idx
    meta = dict(scenario=sc.name, scenario_path=str(sc.path or ""), n=n, replicates=replicates,
                seed=int(seed), population=getattr(pop, "name", str(population)),
                params=dict(params or {}), regimens=dict(sc.regimens),
                card=card.name if card is not None else sc.model,
                card_sha256=card.sha256 if card is not None else load_card(sc.model).sha256,
                population_source=source, draw_index=idx, stream=stream,
                scan_days=sc.scans.all_days().tolist(), cutoff_day=sc.cutoff,
                dropout_per_year=sc.dropout_per_year,
                pfs_note="radiographic progression only (no death model)")
    patients = pd.concat(pats, ignore_index=True)
    meta["sld_capped_patients"] = int(patients["sld_capped"].sum())
    _warn_capped(sc.name, meta["sld_capped_patients"], len(patients))
    res = TrialResult(sc, ends, patients, meta)
    if rules:
        met = {ru.text: (ru.met(ends[ru.endpoint]), ends[ru.endpoint].isna().to_numpy())
               for ru in rules}
        res.success = success_frame(success_rows(sc.name, met, level))
    return res
