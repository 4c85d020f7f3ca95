"""Design specifications (``fits/designs/NAME.toml``): a simulated trial, the truths to simulate
it under, and the decision rule whose operating characteristics are estimated.

A design spec names a base fit spec with ``[data] format = "simulate"`` and replaces parts of
its ``[simulate]`` section for each replicate trial::

    base = "../triplet_recovery.toml"      # a fit spec, relative to this file

    [design]
    name = "three_arm_40"                  # default: the file name
    description = "3 x 40 patients"
    arms = { triplet = 40, durvalumab_ep = 40, anlotinib_ep = 40 }   # replaces [simulate].arms
    truths = [{ PSI = 0.0 }, { PSI = 0.5 }, { PSI = 1.0 }]          # each merged into its truth
    # truths = "prior": simulation-based calibration, each replicate's population parameters
    # drawn from the base spec's priors (pkpd.design.sbc); truths = { prior = ["PSI"] } draws
    # only the named thetas, the rest at the base's values (a partial, approximate SBC)
    replicates = 40                        # simulated trials per truth
    seed = 20261207                        # design seed (replicate seeds derive from it)
    level = 0.90                           # equal-tailed posterior interval judged for coverage

    [rule]                     # claim when P(parameter > threshold | data) > probability
    parameter = "PSI"
    threshold = 0.0
    probability = 0.90

    [sampler]                              # the short schedule of each replicate fit
    chains = 2
    tune = 300
    draws = 300

    [regimens.NAME]                        # optional: regimens added to (or replacing) the base's

Every replicate is a new trial: :func:`replicate_seeds` derives its data seed (patients, etas,
residuals) and its sampler seed from ``(design seed, truth index, replicate)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SpecError
from ..io import read_text_file

__all__ = ["Design", "Rule", "load_design", "replicate_seeds", "fit_raw", "DESIGN_KEYS",
           "RULE_KEYS"]

_TOP = {"base", "design", "rule", "sampler", "regimens"}
DESIGN_KEYS = {"name", "description", "arms", "truths", "replicates", "seed", "level"}
RULE_KEYS = {"parameter", "threshold", "probability"}
_SAMPLER_KEYS = {"name", "chains", "tune", "draws", "target_accept", "max_treedepth",
                 "chains_per_batch", "low_rank"}
#: the sampler keys a design may not set: the replicate's seed is derived (replicate_seeds)
_FORBIDDEN_SAMPLER = {"seed"}


@dataclass(frozen=True)
class Rule:
    """Claim an effect when ``P(parameter > threshold | data) > probability``."""

    parameter: str = "PSI"
    threshold: float = 0.0
    probability: float = 0.90

    def text(self) -> str:
        return f"P({self.parameter} > {self.threshold:g} | data) > {self.probability:g}"


@dataclass(frozen=True)
class Design:
    """A validated design spec (see the module docstring)."""

    name: str
    path: Path | None
    base_path: Path | None
    base_raw: dict
    arms: dict
    truths: tuple
    replicates: int
    seed: int
    level: float
    rule: Rule
    sampler: dict
    regimens: dict
    description: str = ""
    raw: dict = field(default_factory=dict)
    prior_only: tuple = ()          # SBC: the thetas drawn from their priors (empty: all)

    @property
    def sbc(self) -> bool:
        """Simulation-based calibration: every replicate draws its truth from the priors
        (``truths = "prior"``, or ``{ prior = [...] }`` for some thetas only;
        :mod:`pkpd.design.sbc`)."""
        return self.truths == ("prior",)

    def truth_value(self, i: int) -> float:
        """True value of the rule's parameter under truth ``i`` (NaN for ``"prior"``: each
        replicate has its own)."""
        if self.sbc:
            return float("nan")
        return float(self.truths[i][self.rule.parameter])

    def identification(self) -> dict | None:
        """Whether the arms can separate the synergy from the drugs' own effects
        (:func:`pkpd.fit.estimands.synergy_identification`), from the drugs of each arm's
        regimen; None when the rule's parameter is not PSI."""
        if self.rule.parameter != "PSI":
            return None
        from ..fit.estimands import exposure_groups, synergy_identification
        known = {**self.base_raw.get("regimens", {}), **self.regimens}
        n = list(self.arms.values())
        on = {drug: np.repeat([drug in known[arm] for arm in self.arms], n)
              for drug in ("anlotinib", "durvalumab")}
        groups = exposure_groups(on["anlotinib"], on["durvalumab"])
        return synergy_identification(groups)

    def fingerprint(self) -> str:
        """SHA-256 of everything that defines a replicate's result: the base spec, arms, truths,
        seed, level, rule, sampler and regimens, and the simulator's version (not
        ``replicates``: more may be added later)."""
        from ..fit.recovery import SIMULATOR_VERSION
        key = {"base": self.base_raw, "arms": self.arms, "truths": list(self.truths),
               "seed": self.seed, "level": self.level, "rule": self.rule.__dict__,
               "sampler": self.sampler, "regimens": self.regimens,
               "simulator": SIMULATOR_VERSION, "prior_only": list(self.prior_only)}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def replicate_seeds(seed: int, truth_index: int, replicate: int) -> tuple[int, int]:
    """``(data seed, sampler seed)`` of one replicate trial, both in ``[0, 2**31)``.

    Derived with :class:`numpy.random.SeedSequence` from ``(seed, truth_index, replicate)``:
    deterministic, and distinct across truths and replicates (a different trial each time).
    """
    for name, v in (("seed", seed), ("truth_index", truth_index), ("replicate", replicate)):
        if int(v) < 0:
            raise SpecError(f"{name} = {v} must be >= 0")
    words = np.random.SeedSequence([int(seed), int(truth_index), int(replicate)]
                                   ).generate_state(2, dtype=np.uint32)
    return int(words[0] >> 1), int(words[1] >> 1)


def _where(path, section=None) -> str:
    name = Path(path).name if path else "design"
    return f"{name} [{section}]" if section else name


def _keys(table, allowed, where) -> None:
    if not isinstance(table, Mapping):
        raise SpecError(f"{where}: expected a table, got {table!r}")
    extra = set(table) - set(allowed)
    if extra:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(extra))}. Fix: use "
                        f"{', '.join(sorted(allowed))}")


def _number(v, what, where, *, integer=False, low=None, high=None, open_=False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and np.isfinite(float(v))
    if ok and integer:
        ok = float(v).is_integer()
    if ok and low is not None:
        ok = float(v) > low if open_ else float(v) >= low
    if ok and high is not None:
        ok = float(v) < high if open_ else float(v) <= high
    if not ok:
        rng = (f" in ({low}, {high})" if open_ else f" >= {low}") if low is not None else ""
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{where}: {what} must be {kind}{rng}; got {v!r}")
    return int(v) if integer else float(v)


def _read(source):
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"design spec {path} does not exist. Fix: give the path of a design "
                        "such as fits/designs/three_arm_40.toml")
    try:
        return tomllib.loads(read_text_file(path, "design spec")), path
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML ({e}). Fix: correct the TOML syntax") from None


def _base(raw, path) -> tuple[dict, Path | None]:
    """The base fit spec's raw dict (card paths made absolute) and its path."""
    base = raw.get("base")
    if isinstance(base, Mapping):
        return copy.deepcopy(dict(base)), None
    if not isinstance(base, str) or not base:
        raise SpecError(f"{_where(path)}: no base fit spec. Fix: base = "
                        "'../triplet_recovery.toml' (a fit spec with [data] format = 'simulate')")
    bp = Path(base)
    if not bp.is_absolute():
        bp = (path.parent if path else Path.cwd()) / bp
    if not bp.is_file():
        raise SpecError(f"{_where(path)}: base {base!r}: {bp} does not exist. Fix: the path is "
                        "relative to the design file")
    try:
        braw = tomllib.loads(read_text_file(bp, "fit spec"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{bp}: not valid TOML ({e})") from None
    card = braw.get("model", {}).get("card")
    if isinstance(card, str) and card.endswith(".toml") and not Path(card).is_absolute():
        braw["model"]["card"] = str((bp.parent / card).resolve())
    return braw, bp.resolve()


def _prior_only(truths, where, rule, thetas) -> tuple:
    """``truths = { prior = [names] }``: the thetas drawn from their priors, checked."""
    names = truths.get("prior")
    extra = sorted(set(truths) - {"prior"})
    if extra or not isinstance(names, list) or not names:
        raise SpecError(f"{where}: truths = {truths!r}: a table must be {{ prior = [names] }} "
                        f"(the thetas drawn from their priors). Fix: truths = "
                        f"{{ prior = [\"{rule.parameter}\"] }}, or truths = \"prior\" for all")
    bad = [n for n in names if n not in thetas]
    if bad:
        raise SpecError(f"{where}: truths prior: {', '.join(map(str, bad))} not among the fit's "
                        f"thetas. Fix: use {', '.join(thetas)}")
    if rule.parameter not in names:
        raise SpecError(f"{where}: truths prior does not draw the rule's parameter "
                        f"{rule.parameter}. Fix: add \"{rule.parameter}\" to the list")
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: truths prior names a theta twice ({names})")
    return tuple(names)


def _truths(d, where, rule, params) -> tuple:
    truths = d.get("truths")
    if truths == "prior" or isinstance(truths, Mapping):
        return ("prior",)
    if not isinstance(truths, list) or not truths:
        raise SpecError(f"{where}: truths must be a non-empty list of tables, or \"prior\" "
                        f"(simulation-based calibration). Fix: truths = "
                        f"[{{ {rule.parameter} = 0.0 }}, {{ {rule.parameter} = 0.5 }}]")
    out = []
    for k, t in enumerate(truths):
        if not isinstance(t, Mapping) or not t:
            raise SpecError(f"{where}: truth {k + 1} is {t!r}, not a table of parameter values")
        bad = sorted(set(t) - set(params))
        if bad:
            raise SpecError(f"{where}: truth {k + 1}: unknown parameter(s) {', '.join(bad)}. "
                            f"Fix: use parameters of the card: {', '.join(params)}")
        if rule.parameter not in t:
            raise SpecError(f"{where}: truth {k + 1} does not set the rule's parameter "
                            f"{rule.parameter}. Fix: add {rule.parameter} = VALUE to it")
        out.append({n: _number(v, n, f"{where} truth {k + 1}") for n, v in t.items()})
    keys = [json.dumps(t, sort_keys=True) for t in out]
    if len(set(keys)) != len(keys):
        raise SpecError(f"{where}: truths repeat ({keys}). Fix: give each truth once")
    return tuple(out)


def _rule(r, path) -> Rule:
    w = _where(path, "rule")
    _keys(r, RULE_KEYS, w)
    rule = Rule(parameter=str(r.get("parameter", "PSI")),
                threshold=_number(r.get("threshold", 0.0), "threshold", w),
                probability=_number(r.get("probability", 0.9), "probability", w, low=0.0,
                                    high=1.0, open_=True))
    return rule


def _sampler(s, path) -> dict:
    w = _where(path, "sampler")
    bad = set(s) & _FORBIDDEN_SAMPLER
    if bad:
        raise SpecError(f"{w}: {', '.join(sorted(bad))} is derived per replicate from "
                        "[design] seed. Fix: remove it and set [design] seed")
    _keys(s, _SAMPLER_KEYS, w)
    return dict(s)


def load_design(source) -> Design:
    """Read and validate a design spec (a TOML path or a dict); the base fit spec, the arms,
    regimens, truths, rule and sampler are all checked before anything is simulated.

    Raises
    ------
    SpecError : unknown keys or sections, a base that is not a simulated-data fit spec, arms
        without a regimen, truths naming unknown parameters or not setting the rule's parameter,
        ``replicates < 1``, ``level`` or ``probability`` outside (0, 1), a rule parameter that is
        not a population parameter of the fit.
    """
    raw, path = _read(source)
    _keys(raw, _TOP, _where(path))
    d = raw.get("design", {})
    w = _where(path, "design")
    _keys(d, DESIGN_KEYS, w)
    base_raw, base_path = _base(raw, path)
    if base_raw.get("data", {}).get("format") != "simulate":
        raise SpecError(f"{_where(path)}: base {base_path or 'spec'} does not simulate its data "
                        "([data] format = 'simulate'). Fix: use a recovery spec such as "
                        "fits/triplet_recovery.toml")
    rule = _rule(raw.get("rule", {}), path)
    sampler = _sampler(raw.get("sampler", {}), path)
    regimens = dict(raw.get("regimens", {}))
    arms = d.get("arms", base_raw.get("simulate", {}).get("arms"))
    if not isinstance(arms, Mapping) or not arms:
        raise SpecError(f"{w}: arms must be a table of patients per arm. Fix: arms = "
                        "{ triplet = 40, durvalumab_ep = 40, anlotinib_ep = 40 }")
    arms = {str(a): _number(n, f"arm {a}", w, integer=True, low=1) for a, n in arms.items()}
    known = {**base_raw.get("regimens", {}), **regimens}
    for a in arms:
        if a not in known:
            raise SpecError(f"{w}: arm {a!r} has no regimen in the base or the design. Fix: add "
                            f"[regimens.{a}] or use one of {', '.join(sorted(known))}")
    name = str(d.get("name", path.stem if path else "design"))
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SpecError(f"{w}: name {name!r} must be a plain folder name")
    from ..fit.spec import load_spec
    probe = load_spec(_merge(base_raw, arms, {}, 0, 0, sampler, regimens, name))
    params = list(probe.card.raw["parameters"]) if probe.card is not None else []
    if rule.parameter not in probe.population_names:
        raise SpecError(f"{_where(path, 'rule')}: parameter {rule.parameter!r} is not a "
                        f"population parameter of the fit. Fix: use one of "
                        f"{', '.join(probe.population_names)}")
    truths = _truths(d, w, rule, params)
    only = d.get("truths")
    only = (_prior_only(only, w, rule, list(probe.thetas))
            if isinstance(only, Mapping) else ())
    return Design(name=name, path=path.resolve() if path else None, base_path=base_path,
                  base_raw=base_raw, arms=arms, truths=truths, prior_only=only,
                  replicates=_number(d.get("replicates", 40), "replicates", w, integer=True,
                                     low=1),
                  seed=_number(d.get("seed", 1), "seed", w, integer=True, low=0),
                  level=_number(d.get("level", 0.9), "level", w, low=0.0, high=1.0, open_=True),
                  rule=rule, sampler=sampler, regimens=regimens,
                  description=str(d.get("description", "")), raw=raw)


def _merge(base_raw, arms, truth, data_seed, sampler_seed, sampler, regimens, name) -> dict:
    raw = copy.deepcopy(base_raw)
    sim = raw.setdefault("simulate", {})
    sim.pop("n", None)
    sim["arms"] = dict(arms)
    sim["seed"] = int(data_seed)
    sim["truth"] = {**sim.get("truth", {}), **truth}
    raw["regimens"] = {**raw.get("regimens", {}), **copy.deepcopy(regimens)}
    raw["sampler"] = {**raw.get("sampler", {}), **sampler, "seed": int(sampler_seed)}
    raw.setdefault("fit", {})["name"] = name
    return raw


def fit_raw(design: Design, truth_index: int, replicate: int) -> dict:
    """The raw fit spec of one replicate trial (for :func:`pkpd.fit.load_spec`): the base with
    ``[simulate]`` arms, seed and truth, ``[regimens]`` and ``[sampler]`` replaced."""
    ds, ss = replicate_seeds(design.seed, truth_index, replicate)
    truth = {} if design.sbc else design.truths[truth_index]
    raw = _merge(design.base_raw, design.arms, truth, ds, ss, design.sampler, design.regimens,
                 f"{design.name}_t{truth_index}_r{replicate:03d}")
    if design.sbc:
        from ..fit.spec import load_spec
        from .sbc import prior_draw
        sim, _ = prior_draw(load_spec(raw), ds, only=design.prior_only)
        raw["simulate"]["truth"].update(sim["truth"])
        for key in ("omega", "residual"):
            if sim[key]:
                raw["simulate"][key] = sim[key]
    return raw
