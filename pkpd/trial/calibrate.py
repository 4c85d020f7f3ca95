"""Calibrate a tumour card to published trial endpoints with ABC-SMC (``pkpd calibrate``).

A calibration spec (``fits/calibrate_*.toml``) names the card, the parameters to calibrate with
their priors, and the targets: published summary endpoints of trial arms (scenarios)::

    [calibration]
    name = "calibrate_caspian"
    card = "sclc_triplet_tgi"
    seed = 20261206
    particles = 200              # ABC-SMC population
    alpha = 0.5                  # each tolerance = this quantile of the previous distances
    tolerance = 0.5              # stop when the tolerance (distance units) is this small
    max_simulations = 6000
    check_n = 2000               # patients per arm when the calibrated card is checked
    check_replicates = 5
    card_out = "../models/sclc_triplet_tgi_caspian.toml"   # relative to this file

    [parameters]                 # typical values (card names) and IIV variances (omega2_NAME)
    KCHEMO = { dist = "lognormal", median = 0.08, sd_log = 1.0 }
    omega2_LAMBDA = { dist = "lognormal", median = 0.25, sd_log = 1.0 }
    KIO = "card"                 # the card's own prior

    [[target]]
    scenario = "durvalumab_ep"
    endpoint = "orr_confirmed"
    value = 0.68
    scale = 0.06                 # the distance counts (simulated - value) / scale
    source = "CASPIAN, Paz-Ares 2019 (LITERATURE.md section 6)"

Method (:mod:`pkpd.trial.abc`): ABC-SMC. Each simulation runs every target arm once, with the
arm's own number of patients (the published trial's N), so that the ABC posterior carries the
trial's sampling noise. The arms share their virtual patients (common random numbers), and
the numbers come from ``SeedSequence([seed, 1, k])`` for simulation ``k``. The distance is the
root mean square of ``(simulated - value) / scale`` over the targets.

The calibrated card takes, for each parameter, the posterior mean on the unconstrained scale
(so the geometric mean for log-normal parameters). It is then checked with ``check_n``
patients per arm and ``check_replicates`` replicates. The card is written with a
``[calibration]`` table: method, seed, spec hash, targets, achieved values, posterior
intervals and versions. The particles are written beside it. ``pkpd calibrate`` writes its
results folder, and the card, atomically. It replaces only files it made.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

import numpy as np
import pandas as pd

from ..cards.card import Card, load_card
from ..errors import SpecError
from ..io import read_text_file
from .abc import GaussianPrior
from .calibration_files import WRITTEN_BY
from .design import load_scenario
from .run import ENDPOINTS, run_trial
from .sources import card_for_draw

__all__ = ["calibrate", "CalibrationSpec", "Target", "load_calibration",
           "simulate_targets", "distance", "check_card", "posterior_table", "posterior_summary",
           "report", "WRITTEN_BY"]


_KEYS = {"name", "description", "card", "seed", "particles", "alpha", "tolerance",
         "min_acceptance", "max_generations", "max_simulations", "check_n",
         "check_replicates", "card_out"}
_TARGET_KEYS = {"scenario", "endpoint", "value", "scale", "n", "source"}


@dataclass(frozen=True)
class Target:
    """One published endpoint of one arm."""

    scenario: str
    endpoint: str
    value: float
    scale: float
    n: int
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.scenario}.{self.endpoint}"


@dataclass(frozen=True)
class CalibrationSpec:
    """A validated calibration spec (see the module docstring)."""

    name: str
    card: Card
    names: tuple[str, ...]              # card parameter or omega2_NAME
    prior: GaussianPrior                # on log(value) (lognormal) or value (normal)
    log_scale: tuple[bool, ...]
    targets: tuple[Target, ...]
    seed: int
    settings: dict = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    description: str = ""

    def values(self, z: np.ndarray) -> dict[str, float]:
        """Natural-scale values ``{name: value}`` of the unconstrained vector ``z``."""
        return {n: float(math.exp(v) if lg else v)
                for n, v, lg in zip(self.names, z, self.log_scale)}

    @property
    def card_out(self) -> Path | None:
        out = self.settings.get("card_out")
        if out is None:
            return None
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / out).resolve()


def _did_you_mean(name: str, options) -> str:
    near = get_close_matches(name, list(options), n=1)
    return f" (did you mean {near[0]!r}?)" if near else f". Fix: one of {', '.join(options)}"


# ---- the spec ------------------------------------------------------------------------------------
def _number(v, what: str, where: str, *, lo=None, integer=False, positive=False) -> float:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v) == int(v)
    if ok and positive:
        ok = v > 0
    if ok and lo is not None:
        ok = v >= lo
    if not ok:
        kind = "a whole number" if integer else "a number"
        bound = " > 0" if positive else (f" >= {lo}" if lo is not None else "")
        raise SpecError(f"{where}: {what} = {v!r} must be {kind}{bound}")
    return float(v)


def _prior_of(card: Card, name: str, entry, where: str) -> tuple[float, float, bool]:
    """(mean, sd, log_scale) of the Gaussian prior on the unconstrained value of ``name``."""
    if entry == "card":
        if name.startswith("omega2_"):
            raise SpecError(f"{where}: {name} has no prior on the card. Fix: give one, e.g. "
                            f'{name} = {{ dist = "lognormal", median = 0.25, sd_log = 1.0 }}')
        entry = card.priors().get(name) or {}
    if not isinstance(entry, dict) or entry.get("dist") not in ("lognormal", "normal"):
        raise SpecError(f"{where}: {name} needs a lognormal or normal prior; got {entry!r}. "
                        'Fix: e.g. { dist = "lognormal", median = 0.01, sd_log = 1.0 } or "card"')
    if entry["dist"] == "lognormal":
        med = _number(entry.get("median"), f"{name} median", where, positive=True)
        sd = _number(entry.get("sd_log"), f"{name} sd_log", where, positive=True)
        return math.log(med), sd, True
    mean = _number(entry.get("mean"), f"{name} mean", where)
    return mean, _number(entry.get("sd"), f"{name} sd", where, positive=True), False


def _parameters(raw: dict, card: Card, where: str):
    table = raw.get("parameters")
    if not isinstance(table, dict) or not table:
        raise SpecError(f"{where}: [parameters] is missing or empty. Fix: name the parameters "
                        'to calibrate, e.g. KIO = "card"')
    known = list(card.parameter_names) + [f"omega2_{k}" for k in card.raw.get("iiv", {})]
    names, mean, sd, logs = [], [], [], []
    for name, entry in table.items():
        if name not in known:
            raise SpecError(f"{where}: [parameters] {name!r} is not a parameter of card "
                            f"{card.name}" + _did_you_mean(name, known))
        m, s, lg = _prior_of(card, name, entry, where)
        names.append(name)
        mean.append(m)
        sd.append(s)
        logs.append(lg)
    prior = GaussianPrior(tuple(names), np.array(mean), np.array(sd))
    return tuple(names), prior, tuple(logs)


def _targets(raw: dict, where: str) -> tuple[Target, ...]:
    rows = raw.get("target")
    if not isinstance(rows, list) or not rows:
        raise SpecError(f"{where}: no [[target]]. Fix: add e.g. [[target]] scenario = "
                        '"durvalumab_ep", endpoint = "orr_confirmed", value = 0.68, scale = 0.06')
    out = []
    for i, t in enumerate(rows, 1):
        w = f"{where}: [[target]] {i}"
        extra = set(t) - _TARGET_KEYS
        if extra:
            bad = sorted(extra)[0]
            raise SpecError(f"{w}: unknown key {bad!r}" + _did_you_mean(bad, _TARGET_KEYS))
        sc = load_scenario(t.get("scenario", ""))
        ep = t.get("endpoint")
        if ep not in ENDPOINTS:
            raise SpecError(f"{w}: unknown endpoint {ep!r}" + _did_you_mean(str(ep), ENDPOINTS))
        out.append(Target(sc.name, ep, _number(t.get("value"), "value", w),
                          _number(t.get("scale"), "scale", w, positive=True),
                          int(_number(t.get("n", sc.n), "n", w, integer=True, positive=True)),
                          str(t.get("source", ""))))
    return tuple(out)


def load_calibration(path: str | os.PathLike) -> CalibrationSpec:
    """Read and check a calibration spec (see the module docstring)."""
    path = Path(path)
    text = read_text_file(path, "calibration spec")
    where = f"calibration spec {path}"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{where}: not valid TOML ({e}). Fix: check the line it names") from None
    tables = ("calibration", "parameters", "target", "residual")
    for sec in set(raw) - set(tables):
        raise SpecError(f"{where}: unknown table [{sec}]" + _did_you_mean(sec, tables))
    cal = raw.get("calibration", {})
    for key in set(cal) - _KEYS:
        raise SpecError(f"{where}: unknown key [calibration] {key!r}" + _did_you_mean(key, _KEYS))
    if "card" not in cal:
        raise SpecError(f'{where}: [calibration] needs card. Fix: card = "sclc_triplet_tgi"')
    card = load_card(cal["card"])
    residual = _residual(raw.get("residual"), card, where)
    if residual:
        card = card.with_values(residual=residual)
    names, prior, logs = _parameters(raw, card, where)
    settings = _settings(cal, where)
    return CalibrationSpec(
        name=str(cal.get("name", path.stem)), card=card, names=names, prior=prior,
        log_scale=logs, targets=_targets(raw, where),
        seed=int(_number(cal.get("seed", 0), "seed", where, integer=True, lo=0)),
        settings={**settings, "residual": residual}, path=path.resolve(),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        description=str(cal.get("description", "")))


_RESIDUAL_KEYS = {"prop_sd", "add_sd", "source"}


def _residual(table, card: Card, where: str) -> dict:
    """The optional ``[residual]`` table: the scan measurement error the calibrated card uses
    (``prop_sd``, ``add_sd`` in the card's size unit, and its ``source``), fixed, not fitted."""
    if table is None:
        return {}
    if not isinstance(table, dict) or set(table) - _RESIDUAL_KEYS or "source" not in table:
        raise SpecError(f"{where}: [residual] takes prop_sd, add_sd and source (required); got "
                        f"{sorted(table) if isinstance(table, dict) else table!r}")
    if card.residual.get("type") != "combined2":
        raise SpecError(f"{where}: [residual] changes a combined2 error; card {card.name} has "
                        f"{card.residual.get('type')!r}. Fix: leave [residual] out")
    out = {k: _number(table[k], k, f"{where}: [residual]", lo=0)
           for k in ("prop_sd", "add_sd") if k in table}
    if out.get("prop_sd", 1) == 0 and out.get("add_sd", 1) == 0:
        raise SpecError(f"{where}: [residual] prop_sd and add_sd are both 0. Fix: keep a "
                        "measurement error (e.g. prop_sd = 0.041, add_sd = 1.7)")
    return {**out, "source": str(table["source"])}


_DEFAULTS = dict(particles=200, alpha=0.5, tolerance=0.5, min_acceptance=0.02,
                 max_generations=12, max_simulations=6000, check_n=2000, check_replicates=5,
                 point_candidates=30)
#: the settings that change the ABC-SMC run (a checkpoint is resumed only when they match)
_ABC_SETTINGS = ("particles", "alpha", "tolerance", "min_acceptance", "max_generations",
                 "max_simulations")


def _settings(cal: dict, where: str) -> dict:
    out = {}
    for k, default in _DEFAULTS.items():
        v = cal.get(k, default)
        integer = isinstance(default, int)
        out[k] = _number(v, k, f"{where}: [calibration]", integer=integer,
                         positive=k not in ("tolerance", "min_acceptance"), lo=0)
        if integer:
            out[k] = int(out[k])
    if not 0 < out["alpha"] < 1:
        raise SpecError(f"{where}: [calibration] alpha = {out['alpha']} must be in (0, 1). "
                        "Fix: alpha = 0.5")
    if "card_out" in cal:
        out["card_out"] = str(cal["card_out"])
    return out


# ---- simulation ----------------------------------------------------------------------------------
def simulate_targets(spec: CalibrationSpec, values: dict[str, float], *, seed: int,
                     n: int | None = None, replicates: int = 1) -> pd.DataFrame:
    """Each target arm simulated with the card at ``values``: one row per target and
    replicate (``target, scenario, endpoint, replicate, simulated``). ``n``: patients per arm
    (default: each target's own N)."""
    card = card_for_draw(spec.card, pd.Series(values))
    rows, done = [], {}
    for t in spec.targets:
        key = (t.scenario, n or t.n)
        if key not in done:
            done[key] = run_trial(t.scenario, n=n or t.n, replicates=replicates, seed=seed,
                                  card=card).endpoints
        for r, v in enumerate(done[key][t.endpoint].to_numpy()):
            rows.append(dict(target=t.label, scenario=t.scenario, endpoint=t.endpoint,
                             replicate=r, simulated=float(v)))
    return pd.DataFrame(rows)


def distance(spec: CalibrationSpec, simulated: pd.Series) -> float:
    """Root mean square of ``(simulated - value) / scale`` over the targets (one value each,
    in target order); NaN (e.g. a median not reached) counts as infinitely far."""
    x = np.asarray(simulated, dtype=float)
    val = np.array([t.value for t in spec.targets])
    sc = np.array([t.scale for t in spec.targets])
    if not np.isfinite(x).all():
        return math.inf
    return float(np.sqrt(np.mean(((x - val) / sc) ** 2)))




# ---- running -------------------------------------------------------------------------------------
def _sim_seed(spec: CalibrationSpec, k: int) -> int:
    return int(np.random.SeedSequence([spec.seed, 1, k]).generate_state(1)[0])


def _distance_fn(spec: CalibrationSpec):
    def distance_of(z, k):
        sim = simulate_targets(spec, spec.values(z), seed=_sim_seed(spec, k))
        return distance(spec, sim["simulated"])
    return distance_of


def posterior_table(spec: CalibrationSpec, result) -> pd.DataFrame:
    """The final particles on the natural scale, with ``weight`` and ``distance``."""
    rows = [spec.values(z) for z in result.z]
    df = pd.DataFrame(rows, columns=list(spec.names))
    df["weight"] = result.weights
    df["distance"] = result.distances
    return df


def posterior_summary(spec: CalibrationSpec, result, point: dict | None = None) -> pd.DataFrame:
    """Each parameter: prior median, posterior 5/50/95% (weighted) and the value the
    calibrated card takes (``point``; default the posterior mean on the unconstrained
    scale)."""
    q = result.weighted_quantile([0.05, 0.5, 0.95])
    point = point or spec.values(result.mean())
    rows = []
    for name in spec.names:
        nat = [spec.values(q[i])[name] for i in range(3)]
        rows.append(dict(parameter=name, card=_card_value(spec.card, name),
                         prior_median=spec.values(spec.prior.mean)[name],
                         q5=nat[0], median=nat[1], q95=nat[2], calibrated=point[name]))
    return pd.DataFrame(rows)


def _card_value(card: Card, name: str) -> float:
    if name.startswith("omega2_"):
        return float(card.raw["iiv"][name[len("omega2_"):]]["omega2"])
    return float(card.raw["parameters"][name]["value"])


def check_card(spec: CalibrationSpec, values: dict[str, float], *, seed: int, n: int,
               replicates: int) -> pd.DataFrame:
    """The targets simulated with ``n`` patients per arm and ``replicates`` replicates at
    ``values``: per target the value, scale, simulated mean and 90% interval, and whether the
    mean is within one scale of the value."""
    sim = simulate_targets(spec, values, seed=seed, n=n, replicates=replicates)
    g = sim.groupby("target", sort=False)["simulated"]
    out = pd.DataFrame({"simulated": g.mean(), "lo": g.quantile(0.05), "hi": g.quantile(0.95)})
    out.insert(0, "value", [t.value for t in spec.targets])
    out.insert(1, "scale", [t.scale for t in spec.targets])
    out["within_scale"] = (out["simulated"] - out["value"]).abs() <= out["scale"]
    return out.reset_index()


def calibrate(spec: CalibrationSpec | str | os.PathLike, *, out: str | os.PathLike | None = None,
              progress: bool = True, write_card: bool = True, **overrides) -> dict:
    """Run the calibration of ``spec`` and write its results (see
    :mod:`pkpd.trial.calibration_files`); returns the record (also ``OUT/calibration.json``).

    ``overrides``: settings of the spec to change for this run (``particles``,
    ``max_simulations``, ``check_n``, ...), e.g. for a quick look; they are recorded.
    """
    import time

    from . import calibration_files as cf
    from .abc import abc_smc

    spec = spec if isinstance(spec, CalibrationSpec) else load_calibration(spec)
    spec = _with_settings(spec, overrides)
    out = Path(out) if out is not None else spec.path.parent / spec.name
    cf.check_out(out, WRITTEN_BY)
    card_out = spec.card_out if write_card else None
    if card_out is not None:
        cf.check_card_out(card_out)
    fp = _fingerprint(spec)
    raw = cf.read_state(out, fp)
    s = spec.settings
    t0 = time.time()
    before = float((raw or {}).get("elapsed_s", 0.0))    # time spent before an interruption
    result = abc_smc(_distance_fn(spec), spec.prior, particles=s["particles"], alpha=s["alpha"],
                     tolerance=s["tolerance"], min_acceptance=s["min_acceptance"],
                     max_generations=s["max_generations"], max_simulations=s["max_simulations"],
                     seed=spec.seed, resume=None if raw is None else cf.load_state(raw),
                     checkpoint=lambda st: cf.write_state(
                         out, fp, {**st, "elapsed_s": before + time.time() - t0}),
                     progress=_progress_printer(spec, t0) if progress else None)
    record = _record(spec, result, resumed=raw is not None,
                     seconds=before + time.time() - t0)
    _write(spec, out, result, record, card_out)
    cf.remove_partial(out)
    return record


def _with_settings(spec: CalibrationSpec, overrides: dict) -> CalibrationSpec:
    from dataclasses import replace

    bad = set(overrides) - set(_DEFAULTS)
    if bad:
        b = sorted(bad)[0]
        raise SpecError(f"unknown calibration setting {b!r}" + _did_you_mean(b, _DEFAULTS))
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return spec
    merged = _settings({**spec.settings, **given}, "calibration settings")
    return replace(spec, settings={**merged, "residual": spec.settings.get("residual", {}),
                                   "overrides": given})


def _fingerprint(spec: CalibrationSpec) -> str:
    """What the ABC-SMC run depends on: the spec's parameters, priors, targets and seed (its
    file hash, less the settings that only affect the check), the card and the ABC settings."""
    abc = {k: spec.settings[k] for k in _ABC_SETTINGS}
    body = _spec_body(spec)
    blob = json.dumps([body, spec.card.sha256, abc], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _spec_body(spec: CalibrationSpec) -> list:
    return [spec.names, spec.prior.mean.tolist(), spec.prior.sd.tolist(), spec.log_scale,
            [(t.label, t.value, t.scale, t.n) for t in spec.targets], spec.seed]


def _progress_printer(spec: CalibrationSpec, t0: float):
    import sys
    import time

    def show(info):
        eps = "inf" if not math.isfinite(info["eps"]) else f"{info['eps']:.3f}"
        print(f"calibrate {spec.name}: generation {info['generation']}: tolerance {eps}, "
              f"acceptance {info['acceptance']:.2f}, ESS {info['ess']:.0f}, "
              f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return show


def choose_point(spec: CalibrationSpec, result) -> tuple[dict, pd.DataFrame]:
    """The calibrated card's values: among the posterior mean (on the unconstrained scale) and
    the ``point_candidates`` final particles closest to the targets in the ABC run, the one
    whose endpoints with ``check_n`` patients per arm (one replicate, the spec's seed, the same
    patients for every candidate) are closest to the targets. The ABC distances come from
    trials of the published N; this picks, within the posterior, the values that reproduce the
    targets when the trial is large. Returns the values and the table of candidates."""
    s = spec.settings
    order = np.argsort(result.distances)[: s["point_candidates"]]
    cands = [("posterior mean", result.mean())] + [(f"particle {i}", result.z[i])
                                                   for i in order]
    rows = []
    for label, z in cands:
        sim = simulate_targets(spec, spec.values(z), seed=spec.seed, n=s["check_n"])
        rows.append(dict(candidate=label, large_n_distance=distance(spec, sim["simulated"]),
                         **spec.values(z),
                         **{t.label: v for t, v in zip(spec.targets, sim["simulated"])}))
    table = pd.DataFrame(rows)
    best = int(np.argmin(table["large_n_distance"].to_numpy()))
    return spec.values(cands[best][1]), table


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it is below it (no machine paths in a
    shipped card), else as given."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _record(spec: CalibrationSpec, result, *, resumed: bool, seconds: float) -> dict:
    from ..fit.run import versions

    point, cands = choose_point(spec, result)
    s = spec.settings
    check = check_card(spec, point, seed=spec.seed, n=s["check_n"],
                       replicates=s["check_replicates"])
    post = posterior_summary(spec, result, point)
    targets = {}
    for t, row in zip(spec.targets, check.itertuples()):
        targets[t.label] = dict(scenario=t.scenario, endpoint=t.endpoint, value=t.value,
                                scale=t.scale, n_in_abc=t.n, achieved=float(row.simulated),
                                achieved_lo=float(row.lo), achieved_hi=float(row.hi),
                                within_scale=bool(row.within_scale), source=t.source)
    return dict(
        written_by=WRITTEN_BY, name=spec.name, method="ABC-SMC (Beaumont 2009 PMC, adaptive "
        "quantile tolerance; pkpd.trial.abc)", base_card=spec.card.name,
        base_card_sha256=spec.card.sha256, spec=_shown_path(spec.path), spec_sha256=spec.sha256,
        seed=spec.seed, check_seed=spec.seed, check_n=s["check_n"],
        check_replicates=s["check_replicates"], particles=s["particles"], alpha=s["alpha"],
        tolerance=s["tolerance"], final_tolerance=float(result.generations[-1]["eps"]),
        generations=len(result.generations) - 1, simulations=result.simulations,
        failures=result.failures, ess=result.ess(), stopped=result.stopped,
        resumed=resumed, seconds=round(seconds, 1), versions=versions(),
        **{f"residual_{k}": v for k, v in (spec.settings.get("residual") or {}).items()},
        point=f"{cands.loc[cands['large_n_distance'].idxmin(), 'candidate']}: the closest to "
        f"the targets with {s['check_n']} patients per arm among the posterior mean and the "
        f"{len(cands) - 1} best final particles",
        values=point, targets=targets, candidates=cands.to_dict("records"),
        posterior={r.parameter: dict(card=r.card, prior_median=r.prior_median, q5=r.q5,
                                     median=r.median, q95=r.q95, calibrated=r.calibrated)
                   for r in post.itertuples()},
        history=result.generations)


def _write(spec: CalibrationSpec, out: Path, result, record: dict, card_out: Path | None):
    from ..io import atomic_write_csv, atomic_write_text
    from . import calibration_files as cf

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(posterior_table(spec, result), out / "particles.csv")
    atomic_write_csv(pd.DataFrame(result.generations), out / "generations.csv")
    atomic_write_csv(pd.DataFrame(record["candidates"]), out / "candidates.csv")
    atomic_write_csv(pd.DataFrame(record["targets"]).T.rename_axis("target").reset_index(),
                     out / "check.csv")
    new_name = Path(card_out).stem if card_out is not None else f"{spec.card.name}_calibrated"
    flat = {k: v for k, v in record.items()
            if k not in ("history", "values", "versions", "candidates")}
    flat["versions"] = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    text = cf.card_text(spec.card.path.read_text(), spec.card.name, new_name,
                        record["values"], flat, residual=spec.settings.get("residual") or {})
    _check_written_card(spec, text, record["values"])
    atomic_write_text(out / "card.toml", text)
    atomic_write_text(out / "report.md", report(spec, record))
    atomic_write_text(out / "calibration.json", json.dumps(record, indent=2, default=_plain))
    if card_out is not None:
        atomic_write_text(card_out, text)


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def _check_written_card(spec: CalibrationSpec, text: str, values: dict) -> None:
    """The card text reads back to exactly the calibrated values (a guard on the text edit)."""
    raw = tomllib.loads(text)
    for key, v in (spec.settings.get("residual") or {}).items():
        if raw["residual"][key] != v:
            raise SpecError(f"internal: the calibrated card holds residual {key} = "
                            f"{raw['residual'][key]!r}, not {v!r}")
    for name, v in values.items():
        got = (raw["iiv"][name[7:]]["omega2"] if name.startswith("omega2_")
               else raw["parameters"][name]["value"])
        if got != v:
            raise SpecError(f"internal: the calibrated card holds {name} = {got}, not {v}")


def report(spec: CalibrationSpec, record: dict) -> str:
    """A Markdown report of a calibration record."""
    lines = [f"# Calibration {spec.name}", "", spec.description, "",
             f"Method: {record['method']}. Seed {record['seed']}; {record['particles']} "
             f"particles; {record['generations']} generations; {record['simulations']} "
             f"simulated trials ({record['failures']} failed); final tolerance "
             f"{record['final_tolerance']:.3f}; stopped: {record['stopped']}; "
             f"{record['seconds']:.0f} s.", "",
             f"## Targets and achieved values ({record['check_n']} patients per arm, "
             f"{record['check_replicates']} replicates, mean and 90% interval)", "",
             "| target | published | scale | calibrated card | within scale |",
             "|---|---|---|---|---|"]
    for label, t in record["targets"].items():
        lines.append(f"| {label} | {t['value']:.3g} | {t['scale']:.3g} | {t['achieved']:.3g} "
                     f"[{t['achieved_lo']:.3g}, {t['achieved_hi']:.3g}] | "
                     f"{'yes' if t['within_scale'] else 'NO'} |")
    lines += ["", "## Parameters (ABC posterior, weighted)", "",
              "| parameter | card | prior median | 5% | median | 95% | calibrated |",
              "|---|---|---|---|---|---|---|"]
    for name, p in record["posterior"].items():
        lines.append(f"| {name} | {p['card']:.4g} | {p['prior_median']:.4g} | {p['q5']:.4g} | "
                     f"{p['median']:.4g} | {p['q95']:.4g} | {p['calibrated']:.4g} |")
    cands = pd.DataFrame(record["candidates"]).sort_values("large_n_distance").head(5)
    lines += ["", f"## Choice of the card's values ({record['point']})", "",
              "| candidate | distance at large N | " + " | ".join(spec.names) + " |",
              "|---|---|" + "---|" * len(spec.names)]
    for r in cands.itertuples(index=False):
        d = r._asdict()
        lines.append(f"| {d['candidate']} | {d['large_n_distance']:.3f} | "
                     + " | ".join(f"{d[n]:.4g}" for n in spec.names) + " |")
    lines += ["", "## Generations", "", "| generation | tolerance | acceptance | ESS |",
              "|---|---|---|---|"]
    for g in record["history"]:
        lines.append(f"| {g['generation']} | {g['eps']:.4g} | {g['acceptance']:.3f} | "
                     f"{g['ess']:.0f} |")
    return "\n".join(lines) + "\n"
