"""Differentiable schedule optimisation: the anlotinib daily dose and on-days per cycle that
maximise a smooth surrogate of a trial endpoint, under a Cmax constraint.

    from pkpd.trial.optimise import optimise
    res = optimise("triplet", objective="pfs", n=200, draws=20, seed=0)
    res.summary()       # optimum (dose, on-days), objective at start and optimum, Cmax, ...
    res.per_draw        # objective per population draw at the start and the optimum
    res.practical       # capsule doses x whole on-days around the optimum, evaluated exactly

Decision variables: the daily dose ``d`` (mg, PO once daily) and the number of on-days ``k`` per
cycle (21 days unless the scenario's anlotinib regimen has another cycle length), relaxed so that
the dose on cycle day ``j + 1`` (``j = 0 .. 20``) is ``d * sigmoid((k - j - 0.5) / tau)``. At
``tau -> 0`` and whole ``k`` this is the regimen ``d mg PO QD D1-k Q21D``; ``k = 21`` is
continuous daily dosing. Everything else of the scenario (durvalumab, EP) stays as written.

Objective (maximised; the mean over a fixed set of virtual patients and over population draws):

* ``"pfs"``: restricted mean model-based progression-free time (months, up to the horizon). Per
  patient, the progression signal on each day ``t`` of the SLD grid is
  ``s_t = sigmoid((log(y_t / m_t) - log 1.2) / EPS_LOG) * sigmoid((y_t - m_t - 5 mm) / EPS_MM)``
  with ``m_t`` the running nadir (RECIST 1.1: +20% and +5 mm); ``s_t`` is a hazard
  (``RATE_PER_DAY`` per day at full signal), and the surrogate is ``sum_t S_t`` days with
  ``S_t = exp(-RATE_PER_DAY sum_{u<=t} s_u)``. As the softness goes to 0 it is the first
  progression day of :func:`pkpd.tumour.combination.derived` (capped at the horizon).
* ``"depth"``: mean depth of response (% shrinkage from baseline, positive = shrinkage) from a
  soft minimum of ``log(y_t / BASE)`` over the grid (temperature ``DEPTH_TEMP``).

Patients and draws: ``n`` virtual patients (covariates from the scenario's population, PK IIV
from the PK cards, and standard-normal tumour draws ``z``) are drawn once with a fixed seed and
reused for every schedule and every population draw (common random numbers). The tumour card is
the scenario's, or ``card=`` (e.g. a calibrated card). Population draws: by default the card's
typical values with ``PSI`` drawn from its prior; or a table, one row per draw, with columns
named as the card's parameters (typical values) and ``omega2_NAME`` (IIV variances); missing
columns take the card's values (e.g. :func:`pkpd.trial.sources.population_draws` of a fit or a
calibration, subsampled by :func:`subsample_draws`). Draw ``d``'s patient etas are
``L_d z`` with ``L_d`` the Cholesky factor of its Omega: ``z * sqrt(omega2_d)`` for a diagonal
Omega, so an ``omega2`` of 0 gives every patient the typical value.

Constraint: the mean over patients of each patient's anlotinib Cmax (the maximum of the
concentration on an hourly grid over the first ``CMAX_CYCLES`` cycles, where the periodic peak is
reached to 0.1%) must not exceed its value at the start regimen under the same relaxation. The
maximum is piecewise smooth in ``(d, k)`` and its gradient is exact almost everywhere; SLSQP
(scipy) handles the bounds and this inequality with JAX gradients of both. Anlotinib PK is linear,
so Cmax is proportional to ``d``: a final step scales ``d`` down if SLSQP stops marginally
outside, so the reported optimum satisfies the constraint with the exact Cmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..cards.card import Card, load_card
from ..errors import SpecError
from ..survival.km import DAYS_PER_MONTH
from ..tumour import combination as cm
from ..tumour.drivers import DoseInputs, dose_amounts_per_patient, grid_means
from .design import Scenario, load_scenario
from .population import Population
from .sources import OMEGA2_PREFIX, check_draws

__all__ = ["optimise", "OptimisationResult", "OBJECTIVES", "CAPSULES_MG", "on_day_weights",
           "build_problem", "Problem", "subsample_draws", "DOSE_LIMITS_MG", "TAU_DAY",
           "RATE_PER_DAY", "EPS_LOG", "EPS_MM", "DEPTH_TEMP", "CMAX_CYCLES"]

#: objectives (both are maximised)
OBJECTIVES = ("pfs", "depth")
#: anlotinib capsule strengths (mg): the practical doses
CAPSULES_MG = (8.0, 10.0, 12.0)
#: the widest dose bounds accepted (mg per day)
DOSE_LIMITS_MG = (1.0, 30.0)
#: steepness of the on/off relaxation (days of cycle position)
TAU_DAY = 0.3
#: progression hazard at full progression signal (per day)
RATE_PER_DAY = 1.0
#: softness of the +20% rule (log scale) and of the +5 mm rule (mm)
EPS_LOG = 0.02
EPS_MM = 0.5
#: temperature of the soft minimum of log(SLD / baseline) for the depth objective
DEPTH_TEMP = 0.005
#: cycles over which Cmax is taken (hourly grid)
CMAX_CYCLES = 4
_HOURS = 24


def on_day_weights(k, n_days: int, cycle_days: int = 21, tau: float = TAU_DAY):
    """Relaxed dosing indicator of days ``0 .. n_days - 1``: ``sigmoid((k - j - 0.5) / tau)``
    with ``j`` the day within the cycle (0-based); ``tau = 0`` gives the exact 0/1 indicator of
    days 1..k of each cycle (for whole ``k``). Differentiable in ``k`` for ``tau > 0``."""
    j = jnp.arange(n_days) % int(cycle_days)
    z = jnp.asarray(k, float) - j - 0.5
    if tau == 0:
        return (z > 0).astype(float)
    return jax.nn.sigmoid(z / tau)


def _pfs_days(logy, step: float, rate=RATE_PER_DAY, eps_log=EPS_LOG, eps_mm=EPS_MM):
    """Smooth restricted mean time to model-based progression (days) from the log-SLD at the
    grid nodes ``(..., n + 1)``."""
    y = jnp.exp(logy)
    m = jax.lax.cummin(y, axis=y.ndim - 1)
    sig = (jax.nn.sigmoid((logy - jnp.log(m) - math.log(1.2)) / eps_log)
           * jax.nn.sigmoid((y - m - 5.0) / eps_mm))
    hazard = jnp.cumsum(sig[..., :-1], axis=-1) * rate * step
    return jnp.exp(-hazard).sum(-1) * step


def _depth_pct(logy, log_base, temp=DEPTH_TEMP):
    """Smooth depth of response (% shrinkage, positive = smaller than baseline)."""
    rel = logy - log_base[..., None]
    soft_min = -temp * jax.scipy.special.logsumexp(-rel / temp, axis=-1)
    return 100.0 * (1.0 - jnp.exp(soft_min))


@dataclass
class Problem:
    """The optimisation problem of one scenario with fixed patients and draws (see the module
    docstring). ``value(d, k, tau)`` returns the objective per draw ``(draws,)``;
    ``cmax(d, k, tau)`` the mean over patients of the exact Cmax (ng/mL). ``draws`` holds the
    population draws (typical values and ``omega2_NAME``), ``card`` the tumour card and
    ``tumour_params`` the patients' tumour parameters ``{name: (draws, n)}``."""

    scenario: Scenario
    objective: str
    n: int
    draws: pd.DataFrame
    cycle_days: int
    start: tuple[float, float]
    horizon_days: float
    _value: object = field(repr=False, default=None)
    _cmax: object = field(repr=False, default=None)
    card: Card | None = field(repr=False, default=None)
    tumour_params: dict = field(repr=False, default_factory=dict)

    def value(self, d: float, k: float, tau: float = TAU_DAY) -> np.ndarray:
        return np.asarray(self._value(jnp.array([d, k], float), tau))

    def cmax(self, d: float, k: float, tau: float = TAU_DAY) -> float:
        return float(self._cmax(jnp.array([d, k], float), tau))

    def mean_value_fn(self, tau: float = TAU_DAY):
        """JAX function ``x = [d, k] -> mean objective`` (for ``jax.grad``)."""
        return lambda x: jnp.mean(self._value(x, tau))


def _anlotinib_schedule(sc: Scenario) -> tuple[float, float, int]:
    """The start ``(dose mg, on-days)`` and cycle length of the scenario's anlotinib regimen,
    which must be one repeating phase ``D mg PO QD D1-k QcD`` (or continuous ``D mg PO QD``)."""
    if "anlotinib" not in sc.regimens:
        raise SpecError(f"scenario {sc.name} gives no anlotinib (drugs: {sorted(sc.regimens)}). "
                        "Fix: optimise a scenario with anlotinib, e.g. --scenario triplet")
    reg = sc.protocol()["anlotinib"]
    text = sc.regimens["anlotinib"]
    ph = reg.phases[0]
    ok = (len(reg.phases) == 1 and not reg.modifications and reg.start_day == 0
          and ph.n_cycles is None and ph.amount_unit == "mg" and ph.route == "PO"
          and ph.doses_per_day == 1 and float(ph.cycle_days).is_integer()
          and tuple(ph.days) == tuple(range(1, len(ph.days) + 1)))
    if not ok:
        raise SpecError(f"scenario {sc.name}: anlotinib regimen {text!r} is not one repeating "
                        "phase 'D mg PO QD D1-k QcD' from day 1 (or 'D mg PO QD'). Fix: "
                        "optimise a scenario such as triplet")
    if ph.cycle_days == 1:
        return float(ph.amount), 21.0, 21
    return float(ph.amount), float(len(ph.days)), int(ph.cycle_days)


def _default_draws(card: Card, draws: int, rng: np.random.Generator) -> pd.DataFrame:
    """``draws`` rows: the card's typical values with PSI drawn from its prior."""
    typ = card.typical_params()
    prior = card.priors().get("PSI", {})
    if prior.get("dist") != "normal":
        raise SpecError(f"card {card.name}: PSI has no normal prior ({prior}). Fix: pass "
                        "population draws as a table (draws_table=)")
    psi = float(prior["mean"]) + float(prior["sd"]) * rng.standard_normal(draws)
    out = pd.DataFrame({k: np.full(draws, v) for k, v in typ.items()})
    out["PSI"] = psi
    return out


def _draws_table(card: Card, table) -> pd.DataFrame:
    """A user table of population draws (card parameter names and ``omega2_NAME`` IIV
    variances; strict about other columns), completed with the card's typical values and
    IIV variances."""
    df = pd.DataFrame(table).reset_index(drop=True)
    if df.empty:
        raise SpecError("draws table has no rows. Fix: one row per population draw")
    check_draws(df, card)
    typ = card.typical_params()
    unknown = [c for c in df.columns if not str(c).startswith(OMEGA2_PREFIX) and c not in typ]
    if unknown:
        raise SpecError(f"draws table: columns {unknown} are not parameters of the tumour model "
                        f"{list(cm.PARAMETERS)}. Fix: drop them")
    out = pd.DataFrame({k: (df[k].to_numpy(float) if k in df else np.full(len(df), v))
                        for k, v in typ.items()})
    om = np.diag(card.omega())
    for i, name in enumerate(card.iiv_names):
        col = OMEGA2_PREFIX + name
        v = df[col].to_numpy(float) if col in df else np.full(len(df), om[i])
        bad = np.flatnonzero(v < 0)
        if bad.size:
            raise SpecError(f"draws table, row {bad[0]}: {col} = {v[bad[0]]:g} is a variance "
                            "and cannot be negative. Fix: drop or correct that draw")
        out[col] = v
    cm.check_params({k: out[k].to_numpy() for k in cm.PARAMETERS}, "draws table")
    out.attrs.update(getattr(table, "attrs", {}))
    return out


def subsample_draws(table: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """The first ``n`` rows of ``table`` after a random permutation from
    ``SeedSequence([seed, 11])`` (all rows, shuffled, when ``n >= len(table)``): a
    deterministic subsample of a posterior table whose rows may be ordered (chains, or
    systematically resampled particles in particle order). ``attrs`` are kept and
    ``attrs["rows"]`` lists the rows taken."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise SpecError(f"draws = {n!r} must be a whole number >= 1. Fix: e.g. --draws 20")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    rows = rng.permutation(len(table))[:n]
    out = table.iloc[rows].reset_index(drop=True)
    out.attrs.update(table.attrs)
    out.attrs["rows"] = [int(r) for r in rows]
    return out


def _with_params(card: Card, dr: pd.DataFrame, params) -> pd.DataFrame:
    """``dr`` with typical values fixed in every draw (``params``: {card parameter: value})."""
    for k, v in (params or {}).items():
        if k not in dr.columns or str(k).startswith(OMEGA2_PREFIX):
            raise SpecError(f"params (--set): {k!r} is not a parameter of card {card.name}. "
                            f"Fix: use one of {', '.join(card.typical_params())}")
        if isinstance(v, bool) or not np.isscalar(v) or not np.isfinite(float(v)):
            raise SpecError(f"params (--set): {k} = {v!r} is not a finite number. Fix: e.g. "
                            "PSI=0")
        dr[k] = float(v)
    cm.check_params({k: dr[k].to_numpy() for k in cm.PARAMETERS}, "draws with params")
    return dr


def _eta_draws(card: Card, dr: pd.DataFrame, z: np.ndarray) -> np.ndarray:
    """Patient etas ``(draws, n, n_iiv)`` from the shared standard normals ``z`` ``(n, n_iiv)``
    (common random numbers): ``eta = L_d z`` with ``L_d`` the Cholesky factor of draw ``d``'s
    Omega; for a diagonal Omega ``eta = z * sqrt(omega2_d)``."""
    names = card.iiv_names
    om2 = np.stack([dr[OMEGA2_PREFIX + nm].to_numpy(float) for nm in names], axis=1)
    base = card.omega()
    if np.count_nonzero(base - np.diag(np.diag(base))) == 0:
        return z[None, :, :] * np.sqrt(om2)[:, None, :]
    out = np.empty((len(dr), *z.shape))
    for d in range(len(dr)):
        omega = card.with_values(omega2=dict(zip(names, om2[d], strict=True))).omega()
        try:
            chol = np.linalg.cholesky(omega)
        except np.linalg.LinAlgError:
            raise SpecError(f"card {card.name}, population draw {d}: Omega with the draw's IIV "
                            f"variances {dict(zip(names, om2[d].round(6).tolist(), strict=True))}"
                            " and the card's IIV correlations is not positive definite. Fix: "
                            "give positive variances to correlated IIVs") from None
        out[d] = z @ chol.T
    return out


def _tumour_params(card: Card, draws: pd.DataFrame, n: int, rng) -> dict[str, np.ndarray]:
    """Tumour parameters ``(draws, n)``: each draw's typical values and IIV variances applied
    to the same standard-normal patient draws (common random numbers, :func:`_eta_draws`)."""
    names = card.iiv_names
    z = rng.standard_normal((n, len(names)))
    eta = _eta_draws(card, draws, z)
    typ = {k: draws[k].to_numpy(float)[:, None] * np.ones((1, n)) for k in cm.PARAMETERS}
    tp = card.apply_eta(typ, {nm: eta[:, :, i] for i, nm in enumerate(names)})
    cm.check_params({k: np.ravel(v) for k, v in tp.items()}, f"card {card.name} draws")
    return {k: np.asarray(tp[k], float) for k in cm.PARAMETERS}


def _numeric(table: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): table[c].to_numpy(dtype=float) for c in table.columns
            if pd.api.types.is_numeric_dtype(table[c])}


def _fixed_signals(sc: Scenario, card: Card, table: pd.DataFrame, n_steps: int, step: float,
                   rng) -> dict[str, np.ndarray]:
    """Durvalumab and chemotherapy driver signals ``(n, n_steps)`` of the scenario's other
    drugs (they do not depend on the anlotinib schedule)."""
    protocol = sc.protocol()
    n = len(table)
    out = {s: np.zeros((n, n_steps)) for s in cm.DRIVERS}
    cov = table.drop(columns=["ID"])
    for drug, drv in card.drivers.items():
        if drug == "anlotinib" or drug not in protocol:
            continue
        pk = load_card(drv["card"])
        scale = 1.0 / float(drv["reference_mean"]) if drv["signal"] == "chemo" else 1.0
        doses, per = protocol[drug].doses_per_patient(cov, n_steps * step)
        inputs, grid = dose_amounts_per_patient(pk, doses, per, n_steps, step)
        p = {k: jnp.asarray(v) for k, v in pk.sample_params(n, rng, _numeric(table)).items()}
        model, active = pk.model(), inputs.active
        mean = jax.jit(jax.vmap(lambda q, u, model=model, inputs=inputs, active=active:
                                grid_means(model, q, inputs, u, active)[0]))(p, jnp.asarray(grid))
        out[drv["signal"]] = out[drv["signal"]] + np.asarray(mean) * scale
    return out


def _check_scalars(objective, n, draws, seed) -> None:
    if objective not in OBJECTIVES:
        raise SpecError(f"objective {objective!r} is unknown. Fix: use one of {list(OBJECTIVES)}")
    for name, v, hi in (("n", n, 100_000), ("draws", draws, 1_000)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 1 <= v <= hi:
            raise SpecError(f"{name} = {v!r} must be a whole number from 1 to {hi:,}. Fix: e.g. "
                            f"--{name} {20 if name == 'draws' else 200}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError(f"seed = {seed!r} must be a whole number >= 0. Fix: e.g. --seed 1")


def _check_bounds(dose_bounds, day_bounds, start, cycle_days: int) -> tuple:
    """The dose (mg) and on-day bounds as floats, checked against the limits and the start."""
    out = []
    for what, b, lo_lim, hi_lim, unit in (
            ("dose bounds", dose_bounds, *DOSE_LIMITS_MG, "mg"),
            ("on-day bounds", day_bounds, 1.0, float(cycle_days), "days")):
        try:
            lo, hi = (float(x) for x in b)
        except (TypeError, ValueError):
            raise SpecError(f"{what} {b!r} must be two numbers (low, high) in {unit}. Fix: e.g. "
                            "--dose-bounds 4,16") from None
        if not (lo_lim <= lo < hi <= hi_lim):
            raise SpecError(f"{what} ({lo:g}, {hi:g}) {unit} must satisfy {lo_lim:g} <= low < "
                            f"high <= {hi_lim:g}. Fix: e.g. "
                            + ("--dose-bounds 4,16" if unit == "mg" else "--day-bounds 7,21"))
        out.append((lo, hi))
    (dlo, dhi), (klo, khi) = out
    d0, k0 = start
    if not (dlo <= d0 <= dhi and klo <= k0 <= khi):
        raise SpecError(f"the start ({d0:g} mg, {k0:g} on-days) lies outside the bounds "
                        f"dose {dlo:g}-{dhi:g} mg, on-days {klo:g}-{khi:g}. Fix: widen the bounds")
    return np.array([dlo, klo]), np.array([dhi, khi])


def _load_tumour_card(sc: Scenario, card) -> Card:
    """The scenario's tumour card, or ``card`` (a Card, a name or a path) in its place."""
    if card is None:
        return load_card(sc.model)
    card = card if isinstance(card, Card) else load_card(card)
    if card.kind != "tumor" or "anlotinib" not in card.drivers:
        raise SpecError(f"card {card.name} is not a tumour card with an anlotinib driver (kind "
                        f"{card.kind!r}, drivers {sorted(card.drivers)}). "
                        f"Fix: give a tumour card such as {sc.model} or a calibration of it")
    return card


def build_problem(scenario: Scenario | str = "triplet", *, objective: str = "pfs", n: int = 200,
                  draws: int = 20, seed: int = 0, draws_table=None, card=None,
                  params: dict | None = None) -> Problem:
    """The fixed patients, draws and jitted objective/Cmax functions of :func:`optimise`
    (arguments as there)."""
    _check_scalars(objective, n, draws, seed)
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    d0, k0, cycle = _anlotinib_schedule(sc)
    card = _load_tumour_card(sc, card)
    step = float(card.structure.get("grid_step_day", 1.0))
    if step != 1.0:
        raise SpecError(f"card {card.name}: grid_step_day = {step:g}; optimise needs a 1-day "
                        "grid (one dose per grid day). Fix: use grid_step_day = 1")
    n_steps = int(math.ceil(sc.days / step))
    pop_ss, pk_ss, eta_ss, draw_ss = np.random.SeedSequence(int(seed)).spawn(4)
    dr = _with_params(card, _draws_table(card, draws_table if draws_table is not None else
                                         _default_draws(card, draws, np.random.default_rng(
                                             draw_ss))), params)
    tp = _tumour_params(card, dr, n, np.random.default_rng(eta_ss))
    table = Population.load(sc.population).draw(n, np.random.default_rng(pop_ss))
    pk_rng = np.random.default_rng(pk_ss)
    fixed = _fixed_signals(sc, card, table, n_steps, step, pk_rng)
    anl = load_card(card.drivers["anlotinib"]["card"])
    pk = {k: jnp.asarray(v) for k, v in anl.sample_params(n, pk_rng, _numeric(table)).items()}
    value, cmax = _functions(anl, pk, {k: jnp.asarray(v) for k, v in tp.items()}, fixed,
                             objective, n_steps, step, cycle)
    return Problem(sc, objective, n, dr, cycle, (d0, k0), float(sc.days), value, cmax, card, tp)


def _functions(anl: Card, pk: dict, tp: dict, fixed: dict, objective: str, n_steps: int,
               step: float, cycle: int):
    """Jitted ``value(x, tau) -> (draws,)`` and ``cmax(x, tau) -> mean exact Cmax``."""
    model = anl.model()
    types = (("bolus", anl.dose_cmt["PO"] - 1, 0.0, 0.0),)
    daily = DoseInputs(step, n_steps, types, np.zeros((n_steps, 1)))
    n_cmax_days = min(n_steps, CMAX_CYCLES * cycle)
    hourly = DoseInputs(1.0 / _HOURS, n_cmax_days * _HOURS, types,
                        np.zeros((n_cmax_days * _HOURS, 1)))
    dur, chemo = jnp.asarray(fixed["durvalumab"]), jnp.asarray(fixed["chemo"])

    def conc(x, tau, shell, n_days, which):
        u = x[0] * on_day_weights(x[1], n_days, cycle, tau)
        if shell.n_steps != n_days:  # hourly: the day's dose at hour 0
            u = jnp.zeros(shell.n_steps).at[::_HOURS].set(u)
        act = (tuple(range(shell.n_steps)),)
        return jax.vmap(lambda q: grid_means(model, q, shell, u[:, None], act)[which])(pk)

    def per_draw(ca, p):
        drivers = {"anlotinib": ca, "durvalumab": dur, "chemo": chemo}
        sol = jax.vmap(lambda q, dv: cm.solve_grid(q, dv, step))(p, drivers)
        logy = jnp.concatenate([sol["logy"], sol["logy_end"][:, -1:]], axis=1)
        if objective == "pfs":
            return jnp.mean(_pfs_days(logy, step)) / DAYS_PER_MONTH
        return jnp.mean(_depth_pct(logy, jnp.log(p["BASE"])))

    def value(x, tau):
        ca = conc(x, tau, daily, n_steps, 0)
        return jax.lax.map(jax.checkpoint(lambda p: per_draw(ca, p)), tp)

    def cmax(x, tau):
        c = conc(x, tau, hourly, n_cmax_days, 1)
        return jnp.mean(jnp.max(c, axis=1))

    return jax.jit(value, static_argnums=1), jax.jit(cmax, static_argnums=1)


@dataclass
class OptimisationResult:
    """What :func:`optimise` found. Objective values are in months (``pfs``) or % shrinkage
    (``depth``); doses in mg per day; on-days per cycle; Cmax in ng/mL (mean over patients)."""

    objective: str
    start: dict
    optimum: dict
    per_draw: pd.DataFrame
    practical: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def improvement(self, level: float = 0.90) -> dict:
        """Optimum minus start per population draw: mean, central ``level`` interval and the
        probability of an improvement (share of draws with a positive difference)."""
        return _interval(self.per_draw["difference"].to_numpy(), level)

    def best_practical(self) -> dict:
        """The best capsule dose x whole on-days schedule that respects the constraint (exact
        grid), or the one with the lowest Cmax when none does."""
        ok = self.practical[self.practical["feasible"]]
        row = (ok.loc[ok["objective"].idxmax()] if len(ok)
               else self.practical.loc[self.practical["cmax_ng_ml"].idxmin()])
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}

    def summary(self) -> dict:
        """One JSON-ready dictionary: start, optimum, improvement, practical schedule, meta."""
        return {"objective": self.objective, "start": self.start, "optimum": self.optimum,
                "improvement": self.improvement(), "practical": self.best_practical(),
                "practical_improvement": _interval(
                    self.per_draw["practical_difference"].to_numpy()),
                **{k: v for k, v in self.meta.items()}}


def _interval(diff: np.ndarray, level: float = 0.90) -> dict:
    q = (1 - level) / 2
    return {"mean": float(np.mean(diff)), "lo": float(np.quantile(diff, q)),
            "hi": float(np.quantile(diff, 1 - q)), "p_improvement": float(np.mean(diff > 0))}


def _slsqp(pr: Problem, lo, hi, cref: float, tau: float, max_iter: int):
    """SLSQP in scaled variables ``z = (x - lo) / (hi - lo)``: maximise the mean objective
    subject to ``cmax(x) <= cref``. Returns the optimum x and scipy's result."""
    from scipy.optimize import minimize

    span = hi - lo
    f_vg = jax.jit(jax.value_and_grad(pr.mean_value_fn(tau)))
    c_vg = jax.jit(jax.value_and_grad(lambda x: pr._cmax(x, tau)))
    x0 = np.array(pr.start, float)
    f0 = abs(float(f_vg(jnp.asarray(x0))[0])) or 1.0

    def f(z):
        v, g = f_vg(jnp.asarray(lo + z * span))
        return -float(v) / f0, -np.asarray(g) * span / f0

    def c(z):
        return 1.0 - float(c_vg(jnp.asarray(lo + z * span))[0]) / cref

    def cj(z):
        return -np.asarray(c_vg(jnp.asarray(lo + z * span))[1]) * span / cref

    res = minimize(f, (x0 - lo) / span, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * 2,
                   constraints=[{"type": "ineq", "fun": c, "jac": cj}],
                   options={"maxiter": int(max_iter), "ftol": 1e-10})
    x = lo + np.clip(res.x, 0.0, 1.0) * span
    # linear PK: Cmax is proportional to the dose, so scaling d restores feasibility exactly
    over = pr.cmax(*x, tau) / cref
    if over > 1.0:
        x[0] = max(lo[0], x[0] / over)
    return x, res


def _practical(pr: Problem, x, cref_exact: float, value_start: np.ndarray):
    """Capsule doses x the whole on-days around the optimum, on the exact 0/1 grid."""
    days = sorted({int(np.clip(np.floor(x[1]), 1, pr.cycle_days)),
                   int(np.clip(np.ceil(x[1]), 1, pr.cycle_days))})
    rows, diffs = [], {}
    for d in CAPSULES_MG:
        for k in days:
            v = pr.value(d, k, 0.0)
            cmax = pr.cmax(d, k, 0.0)
            text = (f"{d:g} mg PO QD" if k == pr.cycle_days
                    else f"{d:g} mg PO QD D1-{k} Q{pr.cycle_days}D")
            rows.append({"regimen": text, "dose_mg": d, "on_days": k,
                         "objective": float(v.mean()), "cmax_ng_ml": cmax,
                         "feasible": bool(cmax <= cref_exact * (1 + 1e-12))})
            diffs[text] = v - value_start
    return pd.DataFrame(rows), diffs


def optimise(scenario: Scenario | str = "triplet", *, objective: str = "pfs", n: int = 200,
             draws: int = 20, seed: int = 0, draws_table=None, card=None,
             params: dict | None = None, dose_bounds_mg=(4.0, 16.0),
             on_days_bounds=(7.0, 21.0), tau: float = TAU_DAY,
             max_iter: int = 30) -> OptimisationResult:
    """Find the anlotinib daily dose (mg) and on-days per cycle that maximise ``objective``
    under the mean-Cmax constraint, starting from the scenario's anlotinib regimen.

    Parameters
    ----------
    scenario : a scenario with anlotinib as one repeating phase (default ``triplet``:
        12 mg PO QD D1-14 Q21D).
    objective : ``"pfs"`` (restricted mean progression-free time, months) or ``"depth"``
        (mean depth of response, %); see the module docstring for the smooth surrogates.
    n : virtual patients (fixed, common random numbers across schedules and draws).
    draws : population draws (typical values, PSI from its prior); ignored with
        ``draws_table``: a DataFrame, one row per draw, columns named as the tumour card's
        parameters (typical values) and ``omega2_NAME`` (IIV variances; each draw's patients
        are the shared standard-normal draws scaled by that draw's Omega), e.g.
        :func:`pkpd.trial.sources.population_draws` subsampled by :func:`subsample_draws`.
        Missing columns take the card's values.
    card : a tumour card (:class:`~pkpd.cards.Card`, name or path) in place of the
        scenario's, e.g. a calibrated card; it also gives the anlotinib, durvalumab and
        chemotherapy PK cards (its drivers).
    params : typical values fixed in every draw, e.g. ``{"PSI": 0.0}`` (after the draws).
    dose_bounds_mg, on_days_bounds : box bounds of ``(d, k)``; the start must lie inside.
    tau : steepness of the on/off relaxation (days).
    max_iter : SLSQP iterations.

    Returns
    -------
    OptimisationResult
    """
    import time

    t0 = time.perf_counter()
    _check_scalars(objective, n, draws, seed)
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    d0, k0, cycle = _anlotinib_schedule(sc)
    lo, hi = _check_bounds(dose_bounds_mg, on_days_bounds, (d0, k0), cycle)
    if isinstance(tau, bool) or not (isinstance(tau, int | float) and 0.05 <= tau <= 2.0):
        raise SpecError(f"tau = {tau!r} day must be from 0.05 to 2. Fix: e.g. tau=0.3")
    pr = build_problem(sc, objective=objective, n=n, draws=draws, seed=seed,
                       draws_table=draws_table, card=card, params=params)
    cref = pr.cmax(*pr.start, tau)
    x, res = _slsqp(pr, lo, hi, cref, tau, max_iter)
    v0, v1 = pr.value(*pr.start, tau), pr.value(*x, tau)
    exact0 = pr.value(*pr.start, 0.0)
    cref_exact = pr.cmax(*pr.start, 0.0)
    practical, diffs = _practical(pr, x, cref_exact, exact0)
    per = pr.draws[["PSI"]].copy()
    per.insert(0, "draw", np.arange(len(per)))
    if len(pr.draws.attrs.get("rows", ())) == len(per):   # rows of the source table
        per.insert(1, "source_row", pr.draws.attrs["rows"])
    per["start"], per["optimum"], per["difference"] = v0, v1, v1 - v0
    out = OptimisationResult(objective, {}, {}, per, practical)
    best = out.best_practical()
    per["practical_difference"] = diffs[best["regimen"]]
    cmax_opt = pr.cmax(*x, tau)
    out.start = {"dose_mg": pr.start[0], "on_days": pr.start[1], "objective": float(v0.mean()),
                 "objective_exact_grid": float(exact0.mean()), "cmax_ng_ml": cref,
                 "cmax_exact_grid_ng_ml": cref_exact}
    out.optimum = {"dose_mg": float(x[0]), "on_days": float(x[1]),
                   "objective": float(v1.mean()), "cmax_ng_ml": cmax_opt,
                   "cmax_limit_ng_ml": cref, "constraint_ok": bool(cmax_opt <= cref)}
    source = pr.draws.attrs.get("source", "draws table" if draws_table is not None else
                                f"card {pr.card.name} typical values, PSI from its prior")
    out.meta = {"scenario": pr.scenario.name, "card": pr.card.name,
                "card_path": str(pr.card.path or ""), "population_source": source,
                "params": {k: float(v) for k, v in (params or {}).items()},
                **({"source_rows": per["source_row"].tolist()} if "source_row" in per else {}),
                "n": int(n), "draws": int(len(pr.draws)),
                "seed": int(seed), "cycle_days": pr.cycle_days, "tau_day": float(tau),
                "unit": "months" if objective == "pfs" else "% shrinkage",
                "dose_bounds_mg": [lo[0].item(), hi[0].item()],
                "on_days_bounds": [lo[1].item(), hi[1].item()],
                "iterations": int(res.nit), "evaluations": int(res.nfev),
                "optimiser": f"scipy SLSQP: {res.message}",
                "seconds": round(time.perf_counter() - t0, 2)}
    return out
