"""Population fit specifications (``fits/*.toml``), validated before any sampling.

A spec names the structural model, the data and its column mapping, the population parameters
(``[theta]``) with priors, the individual-parameter model (``[individual]``, NONMEM ``$PK``
style), the between-subject variability (``[omega]``), the residual-error model, and the sampler
settings. See ``docs/fitting.md`` for the schema; ``fits/*.toml`` are worked examples.

Defaults come from the model card: every card parameter with a prior is estimated with that
prior, every card parameter with IIV gets ``P = TV*exp(eta_P)`` (or ``TV + eta_P`` for additive
IIV), parameters whose card prior is ``fixed`` stay at their card value, and the card's residual
model is used. Anything can be overridden in the spec.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cards.card import Card, load_card
from ..errors import SpecError
from ..tumour import tgi
from .expr import Expr, PriorSpec, parse_expr, parse_prior

__all__ = ["Spec", "Theta", "OmegaBlock", "Residual", "Sampler", "DataSpec", "load_spec",
           "RESIDUAL_MODELS", "SAMPLERS", "SYNERGY", "SYNERGY_PSI_PRIORS"]

#: residual model -> (parameter roles, description)
RESIDUAL_MODELS = {
    "additive": (("add",), "y = f + a*eps"),
    "proportional": (("prop",), "y = f + b*f*eps"),
    "combined1": (("add", "prop"), "y = f + (a + b*f)*eps (SDs add; Monolix/nlmixr2 combined1)"),
    "combined2": (("add", "prop"), "y = f + sqrt(a^2 + b^2 f^2)*eps (variances add; NONMEM "
                                   "Y=F+F*EPS1+EPS2, nlmixr2 combined2)"),
}
SAMPLERS = ("nutpie", "numpyro", "pymc", "blackjax")
#: ``[model] synergy``: how the immune kill KIO and the synergy PSI of a tumour card are sampled
SYNERGY = {
    "kio_psi": "KIO and PSI as declared (PSI unconstrained)",
    "kio_m": "log KIO and log M, M = KIO*(1 + PSI) the immune kill at full VEGF suppression; "
             "PSI's prior is kept through the Jacobian, truncated to PSI > -1",
}
#: priors of PSI that ``synergy = "kio_m"`` can truncate at -1 (proper, with a known CDF)
SYNERGY_PSI_PRIORS = ("Normal", "StudentT", "Uniform", "LogNormal", "HalfNormal", "HalfCauchy",
                      "Exponential", "Gamma", "InvGamma")
_TOP = {"fit", "model", "data", "theta", "individual", "omega", "residual", "sampler", "fixed",
        "simulate", "regimens", "covariates"}


@dataclass(frozen=True)
class Theta:
    name: str
    prior: PriorSpec
    init: float | None = None
    description: str = ""


@dataclass(frozen=True)
class OmegaBlock:
    """One block of random effects: diagonal (one eta) or a correlated block.

    kind: ``"diag"`` (prior on the SD), ``"lkj"`` (SD priors + LKJ correlation prior) or
    ``"invwishart"`` (NONMEM NWPRI: Omega ~ IW(df*omega_p, df)).
    ``names`` are the reported names: per eta for diag/lkj SDs, or the lower triangle row-wise
    (omega11, omega21, omega22, ...) for invwishart/``report = "variance"``.
    """

    etas: tuple[str, ...]
    kind: str
    sd_priors: tuple[PriorSpec, ...] = ()
    lkj_eta: float = 2.0
    iw_omega: tuple[tuple[float, ...], ...] = ()
    iw_df: float = 0.0
    names: tuple[str, ...] = ()
    report: str = "sd"             # "sd" or "variance"
    mu: Expr | None = None         # mu-referencing: sample phi = mu + eta ~ N(mu, omega) (centred)
    centered_min_obs: int = 0      # with mu: only subjects with >= this many observations centred
    centered: str = "all"          # with mu: "all", or "auto" (pilot run decides per subject)
    init: float | None = None      # initial value of the SD (or variance) parameter


@dataclass(frozen=True)
class Residual:
    model: str
    names: dict                   # role -> reported name
    priors: dict                  # role -> PriorSpec
    variance: dict                # role -> bool (the parameter is a variance, not an SD)
    unit: str = ""
    init: dict = field(default_factory=dict)   # role -> initial value


@dataclass(frozen=True)
class Sampler:
    name: str = "nutpie"
    chains: int = 4
    tune: int = 1000
    draws: int = 1000
    seed: int = 1
    target_accept: float = 0.8
    max_treedepth: int = 10
    chains_per_batch: int = 2      # checkpoint unit: a batch of chains runs in parallel
    low_rank: bool = False         # nutpie: low-rank modified mass matrix adaptation
    threads: object = "auto"       # nutpie: threads a batch's chains share; "auto" or >= 1


@dataclass(frozen=True)
class DataSpec:
    path: Path | None
    format: str                    # "long" | "nonmem" | "simulate"
    subject: tuple[str, ...] = ("ID",)
    time: str = "TIME"
    time_unit: str = "day"
    dv: str = "DV"
    dv_unit: str = ""
    filter: dict = field(default_factory=dict)
    flag: str | None = None
    flag_values: dict = field(default_factory=dict)
    zero: object = "keep"          # "keep" | number (replace) | "censor" | "drop"
    missing: str = "drop"          # "drop" | "error"
    lloq: float | None = None      # M3 limit for values flagged as below it
    stop_at_progression: bool = False
    arm: str | None = None
    covariates: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict)
    time_zero: object = "data"     # "data" | "first_observation" | "first_dose" | {column=NAME}


@dataclass
class Spec:
    """A validated fit specification."""

    name: str
    path: Path | None
    raw: dict
    model_kind: str                # "tgi" | "tumour_card" | "pk_card" | "pk_model"
    model_ref: str
    time_unit: str
    parameters: tuple[str, ...]     # structural parameter names
    thetas: dict[str, Theta]
    fixed: dict[str, float]
    individual: dict[str, Expr]
    omegas: list[OmegaBlock]
    residual: Residual
    sampler: Sampler
    data: DataSpec
    card: Card | None = None
    regimens: dict = field(default_factory=dict)
    description: str = ""
    synergy: str = "kio_psi"        # "kio_psi" | "kio_m" (see SYNERGY)
    exposure: object = None         # ExposureSpec of a TGI model's [model] exposure, or None

    @property
    def etas(self) -> list[str]:
        return [e for b in self.omegas for e in b.etas]

    @property
    def population_names(self) -> list[str]:
        """Reported population parameters, in summary order."""
        out = list(self.thetas)
        for b in self.omegas:
            out += list(b.names)
        out += [self.residual.names[r] for r in RESIDUAL_MODELS[self.residual.model][0]]
        return out

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path else ""


def _read_spec_text(path: Path) -> str:
    """The spec file's text: UTF-8 (one-line error otherwise); a blank file reads as ''."""
    from ..io import read_text_file

    if path.is_file() and not path.read_bytes().strip():
        return ""
    return read_text_file(path, "fit spec")


def _where(spec_path, section):
    return f"{Path(spec_path).name if spec_path else 'spec'} [{section}]"


def load_spec(source, *, overrides: Mapping | None = None) -> Spec:
    """Read and validate a spec from a TOML path or a dict (``overrides`` merge into
    ``[sampler]``, e.g. ``{"draws": 200}``)."""
    if isinstance(source, Mapping):
        raw, path = dict(source), None
    else:
        path = Path(source)
        if not path.exists():
            raise SpecError(f"spec file {path} does not exist. Fix: give the path of a fit "
                            "spec such as fits/oak_stein_fojo.toml")
        try:
            raw = tomllib.loads(_read_spec_text(path))
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{path}: not valid TOML ({e}). Fix: correct the TOML syntax at "
                            "that line (tables are [section], values key = value, strings "
                            "quoted)") from None
    unknown = set(raw) - _TOP
    if unknown:
        raise SpecError(f"{_where(path, ', '.join(sorted(unknown)))}: unknown section(s). Fix: "
                        f"use {', '.join(sorted(_TOP))}")
    if overrides:
        raw = dict(raw)
        raw["sampler"] = {**raw.get("sampler", {}), **overrides}
    fit = raw.get("fit", {})
    _keys(fit, {"name", "description", "source"}, _where(path, "fit"))
    _keys(raw.get("model", {}), {"tgi", "card", "pk", "absorption", "time_unit", "exposure",
                                 "synergy", "kill_table"}, _where(path, "model"))
    name = _fit_name(fit, path)
    model = raw.get("model")
    if not isinstance(model, Mapping):
        raise SpecError(f"{_where(path, 'model')}: missing. Fix: add [model] with card = "
                        "'CARD' (PK or tumour card) or tgi = 'stein_fojo' (closed-form library)")
    card = None
    if "tgi" in model:
        kind, ref = "tgi", str(model["tgi"])
        try:
            tm = tgi.get_model(ref)
        except Exception as e:
            raise SpecError(f"{_where(path, 'model')}: {e}") from None
        params = tuple(tm.parameters)
        time_unit = str(model.get("time_unit", "day"))
    elif "pk" in model:
        from ..pk.models import make_model
        kind, ref = "pk_model", str(model["pk"])
        try:
            m = make_model(ref, str(model.get("absorption", "iv")),
                           time_unit=str(model.get("time_unit", "h")))
        except Exception as e:
            raise SpecError(f"{_where(path, 'model')}: {e}") from None
        params = tuple(m.parameters)
        time_unit = m.time_unit
    elif "card" in model:
        ref = str(model["card"])
        card_path = (path.parent / ref) if path and ref.endswith(".toml") else ref
        try:
            card = load_card(card_path)
        except Exception as e:
            raise SpecError(f"{_where(path, 'model')}: cannot load card {ref!r}: {e}") from None
        kind = "tumour_card" if card.kind == "tumor" else "pk_card"
        params = tuple(card.parameter_names)
        if kind == "pk_card":
            m = card.model()
            params = tuple(dict.fromkeys([*m.parameters, *card.parameter_names]))
        time_unit = card.time_unit if kind == "pk_card" else "day"
    else:
        raise SpecError(f"{_where(path, 'model')}: name the model with card = 'CARD', "
                        "pk = '1cmt' (with absorption, time_unit) or tgi = 'NAME'")
    data = _data_spec(raw.get("data"), path, raw)
    thetas, fixed, individual = _parameters(raw, path, kind, params, card)
    omegas = _omegas(raw, path, individual, card)
    residual = _residual(raw, path, card)
    sampler = _sampler(raw.get("sampler", {}), path)
    synergy = _synergy(model, path, kind, thetas)
    exposure = _exposure(model, path, kind, ref)
    _time_zero_applies(data, path, kind)
    spec = Spec(name=name, path=path, raw=raw, model_kind=kind, model_ref=ref,
                time_unit=time_unit, parameters=params, thetas=thetas, fixed=fixed,
                individual=individual, omegas=omegas, residual=residual, sampler=sampler,
                data=data, card=card, regimens=dict(raw.get("regimens", {})),
                description=str(fit.get("description", "")), synergy=synergy,
                exposure=exposure)
    _cross_check(spec)
    return spec


# ---- sections ---------------------------------------------------------------------------------
_DATA_KEYS = {"path", "format", "subject", "time", "time_unit", "dv", "dv_unit", "filter", "flag",
              "flag_values", "zero", "missing", "lloq", "stop_at_progression", "arm",
              "covariates", "time_zero"}
_LONG_ONLY = {"subject", "time", "dv", "filter", "flag", "flag_values", "zero", "missing", "lloq",
              "stop_at_progression", "arm"}


def _fit_name(fit, path) -> str:
    """``[fit] name`` (default: the spec file's stem): the name of the results folder, so a
    plain name; a path (``../other``, ``.``) would make pkpd write or replace folders elsewhere."""
    given = "name" in fit
    name = str(fit["name"]) if given else (path.stem if path else "fit")
    bad = ("is empty" if not name.strip() else
           "is '.' or '..'" if name in (".", "..") else
           "contains a path separator" if ("/" in name or "\\" in name) else
           "starts with a dot (pkpd keeps its hidden working folders .NAME.partial there)"
           if name.startswith(".") else
           "contains a control character" if any(ord(c) < 32 for c in name) else "")
    if not bad:
        return name
    if given:
        raise SpecError(f"{_where(path, 'fit')}: name {name!r} {bad}; it names the results "
                        "folder, so it must be a plain folder name. Fix: e.g. name = "
                        "'phenobarbital'; to write elsewhere use `pkpd fit SPEC --out FOLDER`")
    raise SpecError(f"{_where(path, 'fit')}: the results folder would be named after the spec "
                    f"file, {name!r}, which {bad}. Fix: add [fit] name = 'NAME' (a plain "
                    "folder name), or rename the spec file")


def _keys(table, allowed, where):
    extra = set(table) - set(allowed)
    if extra:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(extra))}. Fix: use "
                        f"{', '.join(sorted(allowed))}")


def _data_spec(d, path, raw) -> DataSpec:
    if not isinstance(d, Mapping):
        raise SpecError(f"{_where(path, 'data')}: missing. Fix: add [data] with path, format "
                        "and the column mapping (subject, time, dv)")
    _keys(d, _DATA_KEYS, _where(path, "data"))
    if d.get("format") == "nonmem":
        bad = (set(d) & _LONG_ONLY) - {"arm"}
        if bad:
            raise SpecError(f"{_where(path, 'data')}: {', '.join(sorted(bad))} apply to "
                            "format 'long' only; a NONMEM dataset uses ID/TIME/DV/EVID/MDV "
                            "and CENS/LIMIT. Fix: remove them, or edit the dataset")
    fmt = str(d.get("format", "long"))
    if fmt not in ("long", "nonmem", "simulate"):
        raise SpecError(f"{_where(path, 'data')}: format {fmt!r} is unknown. Fix: use 'long' "
                        "(one row per observation), 'nonmem' (event records) or 'simulate'")
    p = None
    if fmt != "simulate":
        if "path" not in d:
            raise SpecError(f"{_where(path, 'data')}: no path. Fix: path = 'file.csv' "
                            "(relative to the spec file)")
        p = Path(d["path"])
        if not p.is_absolute() and path is not None:
            p = (path.parent / p).resolve()
        if not p.exists():
            raise SpecError(f"{_where(path, 'data')}: data file {p} does not exist. Fix: check "
                            "the path (it is relative to the spec file)")
    elif "simulate" not in raw:
        raise SpecError(f"{_where(path, 'data')}: format 'simulate' needs a [simulate] section")
    subject = _subject_columns(d.get("subject", "ID"), path)
    missing, lloq = _missing_and_lloq(d, path)
    zero = d.get("zero", "keep")
    if not (isinstance(zero, (int, float)) or zero in ("keep", "censor", "drop")):
        raise SpecError(f"{_where(path, 'data')}: zero = {zero!r}. Fix: 'keep', 'censor', "
                        "'drop' or a number (the value a 0 is replaced by)")
    covs = d.get("covariates", [])
    return DataSpec(path=p, format=fmt, subject=subject, time=str(d.get("time", "TIME")),
                    time_unit=str(d.get("time_unit", "day")), dv=str(d.get("dv", "DV")),
                    dv_unit=str(d.get("dv_unit", "")), filter=dict(d.get("filter", {})),
                    flag=d.get("flag"), flag_values=dict(d.get("flag_values", {})), zero=zero,
                    missing=missing, lloq=lloq,
                    stop_at_progression=bool(d.get("stop_at_progression", False)),
                    arm=d.get("arm"), covariates=tuple(covs), raw=dict(d),
                    time_zero=_time_zero(d.get("time_zero", "data"), fmt, path))


#: ``[data] time_zero`` values (besides ``{ column = NAME }``)
TIME_ZERO = {"data": "times as in the file",
             "first_observation": "each subject's first used observation is t = 0",
             "first_dose": "each subject's first dose record (EVID 1 or 4) is t = 0 (format "
                           "'nonmem')"}


def _time_zero(tz, fmt, path):
    """``[data] time_zero``: one of :data:`TIME_ZERO` or ``{ column = NAME }`` (a per-subject
    column holding the time, in the data's time unit, that becomes t = 0)."""
    w = _where(path, "data")
    fix = ("Fix: time_zero = " + ", ".join(f"'{k}' ({v})" for k, v in TIME_ZERO.items())
           + " or { column = 'NAME' } (a column holding each subject's origin time)")
    if isinstance(tz, Mapping):
        if set(tz) != {"column"} or not isinstance(tz["column"], str) or not tz["column"]:
            raise SpecError(f"{w}: time_zero = {dict(tz)!r}. {fix}")
        return {"column": tz["column"]}
    if tz not in TIME_ZERO:
        raise SpecError(f"{w}: time_zero = {tz!r} is unknown. {fix}")
    if tz == "first_dose" and fmt != "nonmem":
        raise SpecError(f"{w}: time_zero = 'first_dose' needs dose records (format 'nonmem'); "
                        f"format {fmt!r} has none. Fix: use format 'nonmem', or time_zero = "
                        "{ column = 'NAME' } with each subject's first-dose time in a column")
    if tz != "data" and fmt == "simulate":
        raise SpecError(f"{w}: time_zero applies to data files, not to format 'simulate'. "
                        "Fix: remove it")
    return tz


def _time_zero_applies(data, path, kind) -> None:
    if data.time_zero != "data" and kind in ("pk_model", "pk_card"):
        raise SpecError(f"{_where(path, 'data')}: time_zero shifts observation times only, and "
                        "a PK fit predicts from its dose records. Fix: remove time_zero and "
                        "give the event table's TIME from the first dose")


def _exposure(model, path, kind, ref):
    """``[model] exposure`` (see :mod:`pkpd.fit.exposure`): only for a TGI library model that
    takes an exposure, and required there."""
    from .exposure import STEP_MODELS, parse_exposure
    w = _where(path, "model")
    given = model.get("exposure")
    takes = kind == "tgi" and "exposure" in tgi.get_model(ref).inputs
    if given is None:
        if takes:
            raise SpecError(f"{w}: the TGI model {ref!r} needs an exposure. Fix: exposure = 1.0 "
                            "(constant), { column = 'CONC' } (a data column) or { card = "
                            "'PK_CARD', regimen = '150 mg PO QD' }")
        return None
    if not takes:
        raise SpecError(f"{w}: exposure applies to the TGI models that take one ("
                        + ", ".join(n for n, m in tgi.TGI_MODELS.items() if "exposure" in m.inputs)
                        + f"); this model is {ref!r}. Fix: remove exposure")
    ex = parse_exposure(given, w, ref, path)
    if ex.kind != "constant" and ref not in STEP_MODELS:
        raise SpecError(f"{w}: a time-varying exposure is available for "
                        f"{', '.join(STEP_MODELS)}. Fix: use a constant exposure = E")
    return ex


def _subject_columns(subject, path) -> tuple[str, ...]:
    """``[data] subject``: a column name or a list of column names (joined into one ID)."""
    cols = [subject] if isinstance(subject, str) else subject
    if (not isinstance(cols, list) or not cols
            or not all(isinstance(c, str) and c.strip() for c in cols)):
        raise SpecError(f"{_where(path, 'data')}: subject = {subject!r} is not a column name. "
                        "Fix: subject = 'ID' (the name of the subject column, quoted), or a "
                        "list of names such as ['STUDY', 'ID']")
    return tuple(cols)


def _missing_and_lloq(d, path) -> tuple[str, float | None]:
    """``[data] missing`` ('drop' or 'error') and ``lloq`` (a positive finite number or absent)."""
    missing = d.get("missing", "drop")
    if missing not in ("drop", "error"):
        raise SpecError(f"{_where(path, 'data')}: missing = {missing!r} is unknown. Fix: "
                        "'drop' (leave out rows without an observation, each recorded with "
                        "its reason) or 'error' (refuse them)")
    lloq = d.get("lloq")
    if lloq is not None:
        ok = (isinstance(lloq, (int, float)) and not isinstance(lloq, bool)
              and np.isfinite(lloq) and lloq > 0)
        if not ok:
            raise SpecError(f"{_where(path, 'data')}: lloq = {lloq!r} is not a positive "
                            "number. Fix: give the lower limit of quantification in the "
                            "observation's unit, e.g. lloq = 5.0, or remove lloq")
        lloq = float(lloq)
    return missing, lloq


def _parameters(raw, path, kind, params, card):
    tspec = raw.get("theta", {})
    fixed_spec = dict(raw.get("fixed", {}))
    ind_spec = dict(raw.get("individual", {}))
    for k in fixed_spec:
        if k not in params:
            raise SpecError(f"{_where(path, 'fixed')}: {k!r} is not a parameter of the model. "
                            f"Fix: use one of {', '.join(params)}")
        if k in tspec:
            raise SpecError(f"{_where(path, 'theta')}: a prior on the fixed parameter {k!r}. "
                            f"Fix: remove {k} from [fixed] to estimate it, or drop its prior")
        if k in ind_spec:
            raise SpecError(f"{_where(path, 'fixed')}: {k!r} is fixed at {fixed_spec[k]!r} and "
                            f"also has the expression [individual] {k} = {ind_spec[k]!r}; the "
                            "fixed value would silently replace the expression. Fix: remove "
                            f"{k} from [fixed] to use the expression, or from [individual] to "
                            "hold it fixed")
    for k in ind_spec:
        if k not in params:
            raise SpecError(f"{_where(path, 'individual')}: {k!r} is not a parameter of the "
                            f"model. Fix: use one of {', '.join(params)}")
    thetas: dict[str, Theta] = {}
    for k, v in tspec.items():
        if isinstance(v, Mapping) and "prior" in v:
            _keys(v, {"prior", "init", "description"}, _where(path, f"theta.{k}"))
        v = v if isinstance(v, Mapping) and "prior" in v else {"prior": v}
        thetas[k] = Theta(k, parse_prior(v["prior"], _where(path, f"theta.{k}")),
                          v.get("init"), str(v.get("description", "")))
    fixed: dict[str, float] = {}
    individual: dict[str, Expr] = {}
    card_priors = card.priors() if card is not None else {}
    card_iiv = dict(card.raw.get("iiv", {})) if card is not None else {}
    card_vals = dict(card.typical_params()) if card is not None and kind == "pk_card" else (
        {k: float(v["value"]) for k, v in card.raw["parameters"].items()} if card else {})
    for p in params:
        if p in fixed_spec:
            fixed[p] = float(fixed_spec[p])
            continue
        if p in ind_spec:
            individual[p] = parse_expr(ind_spec[p], _where(path, f"individual.{p}"))
            continue
        if p in tspec:                       # theta with the parameter's own name
            iiv = card_iiv.get(p)
            individual[p] = _default_indiv(p, iiv, path)
            continue
        prior = card_priors.get(p, {})
        if card is not None and prior and str(prior.get("dist", "")).lower() != "fixed":
            thetas[p] = Theta(p, parse_prior(prior, f"card {card.name} parameter {p}"))
            individual[p] = _default_indiv(p, card_iiv.get(p), path)
        elif p in card_vals:
            fixed[p] = float(card_vals[p])
        else:
            raise SpecError(f"{_where(path, 'individual')}: the model parameter {p!r} has no "
                            "expression, prior or fixed value. Fix: add it to [individual] "
                            "(with thetas), to [theta] or to [fixed]")
    # thetas declared but never used
    used = set().union(*(e.names for e in individual.values())) if individual else set()
    for k in thetas:
        if k not in used and k not in individual:
            raise SpecError(f"{_where(path, 'theta')}: {k!r} is not used by any [individual] "
                            "expression. Fix: use it, or remove it")
    return thetas, fixed, individual


def _default_indiv(p, iiv, path):
    if not iiv:
        return parse_expr(p, _where(path, f"individual.{p}"))
    typ = str(iiv.get("type", "exp"))
    return parse_expr(f"{p} + eta_{p}" if typ == "add" else f"{p}*exp(eta_{p})",
                      _where(path, f"individual.{p}"))


def _omegas(raw, path, individual, card) -> list[OmegaBlock]:
    ospec = dict(raw.get("omega", {}))
    etas_used = []                      # [omega] order first, then order of appearance
    for e in individual.values():
        for n in sorted(e.names, key=e.text.find):
            if n.startswith("eta_") and n not in etas_used:
                etas_used.append(n)
    etas_used.sort(key=lambda n: list(ospec).index(n) if n in ospec else len(ospec))
    blocks_raw = ospec.pop("block", [])
    blocks: list[OmegaBlock] = []
    seen: set[str] = set()
    for i, b in enumerate(blocks_raw):
        w = _where(path, f"omega.block {i + 1}")
        _keys(b, {"etas", "prior", "omega", "df", "names", "sd_prior", "lkj_eta"}, w)
        etas = tuple(b.get("etas", ()))
        if len(etas) < 2:
            raise SpecError(f"{w}: a block needs at least two etas in 'etas'")
        for e in etas:
            if e not in etas_used:
                raise SpecError(f"{w}: {e!r} is not used by any [individual] expression. Fix: "
                                f"use one of {', '.join(etas_used)}")
            if e in seen:
                raise SpecError(f"{w}: {e!r} is in two omega blocks")
            seen.add(e)
        p = len(etas)
        tri = [f"omega{r + 1}{c + 1}" for r in range(p) for c in range(r + 1)]
        prior = str(b.get("prior", "lkj")).lower()
        if prior == "invwishart":
            om = np.asarray(b.get("omega"), dtype=float)
            df = float(b.get("df", 0))
            if om.shape != (p, p) or not np.allclose(om, om.T) or np.any(
                    np.linalg.eigvalsh(om) <= 0):
                raise SpecError(f"{w}: omega must be a symmetric positive-definite {p}x{p} "
                                f"matrix (NONMEM $OMEGAP); got {b.get('omega')}")
            if df <= p - 1:
                raise SpecError(f"{w}: the inverse-Wishart needs df > {p - 1}; got {df}")
            blocks.append(OmegaBlock(etas, "invwishart", iw_omega=tuple(map(tuple, om)),
                                     iw_df=df, names=tuple(b.get("names", tri)),
                                     report="variance"))
        elif prior == "lkj":
            sds = b.get("sd_prior", "HalfNormal(1)")
            sds = sds if isinstance(sds, list) else [sds] * p
            names = tuple(b.get("names", [f"omega_{e.removeprefix('eta_')}" for e in etas]))
            blocks.append(OmegaBlock(etas, "lkj", tuple(parse_prior(s, w) for s in sds),
                                     lkj_eta=float(b.get("lkj_eta", 2.0)), names=names))
        else:
            raise SpecError(f"{w}: prior {prior!r}. Fix: 'lkj' (with sd_prior, lkj_eta) or "
                            "'invwishart' (with omega and df, NONMEM NWPRI)")
        if len(blocks[-1].names) != (len(tri) if blocks[-1].kind == "invwishart" else p):
            raise SpecError(f"{w}: names has the wrong length")
    for k in ospec:
        if k not in etas_used:
            raise SpecError(f"{_where(path, 'omega')}: {k!r} is not used by any [individual] "
                            f"expression. Fix: use one of {', '.join(etas_used) or '(none)'}")
    card_iiv = dict(card.raw.get("iiv", {})) if card is not None else {}
    for e in etas_used:
        if e in seen:
            continue
        v = ospec.get(e, {})
        v = v if isinstance(v, Mapping) else {"prior": v}
        _keys(v, {"prior", "name", "report", "mu", "centered", "centered_min_obs", "init"},
              _where(path, f"omega.{e}"))
        par = e.removeprefix("eta_")
        default = "HalfNormal(1)"
        if par in card_iiv and "omega2" in card_iiv[par]:
            default = f"HalfNormal({2 * float(card_iiv[par]['omega2']) ** 0.5!r})"
        report = str(v.get("report", "sd"))
        if report not in ("sd", "variance"):
            raise SpecError(f"{_where(path, f'omega.{e}')}: report must be 'sd' or 'variance'")
        mu = v.get("mu")
        blocks.append(OmegaBlock((e,), "diag", (parse_prior(v.get("prior", default),
                                                            _where(path, f"omega.{e}")),),
                                 names=(str(v.get("name", f"omega_{par}")),), report=report,
                                 mu=parse_expr(mu, _where(path, f"omega.{e}.mu"))
                                 if mu is not None else None,
                                 centered_min_obs=int(v.get("centered_min_obs", 0)),
                                 centered=str(v.get("centered", "all")),
                                 init=v.get("init")))
    for b in blocks:
        if b.centered not in ("all", "auto"):
            raise SpecError(f"{_where(path, 'omega')}: centered = {b.centered!r}. Fix: 'all' "
                            "or 'auto' (a short pilot run picks the subjects to centre)")
        if b.centered == "auto" and b.mu is None:
            raise SpecError(f"{_where(path, 'omega')}: centered = 'auto' for {b.etas[0]} needs "
                            "mu (the mu-referenced typical value on the eta scale)")
        for pr in b.sd_priors:
            if pr.support != "positive":
                raise SpecError(f"{_where(path, 'omega')}: the prior {pr.text!r} of "
                                f"{', '.join(b.etas)} allows negative values. Fix: HalfNormal, "
                                "Exponential, HalfCauchy, LogNormal, ...")
    return blocks


def _residual(raw, path, card) -> Residual:
    r = raw.get("residual")
    w = _where(path, "residual")
    if r is None and card is not None and "residual" in card.raw:
        cr = card.raw["residual"]
        model = str(cr.get("type", "proportional"))
        r = {"model": model}
        if "prop_sd" in cr:
            r["prop"] = {"prior": f"HalfNormal({2 * float(cr['prop_sd'])!r})",
                         "name": "sigma_prop"}
        if "add_sd" in cr:
            r["add"] = {"prior": f"HalfNormal({2 * float(cr['add_sd'])!r})", "name": "sigma_add"}
    if r is None:
        raise SpecError(f"{w}: missing. Fix: add [residual] with model = 'additive', "
                        "'proportional', 'combined1' or 'combined2' and priors")
    model = str(r.get("model", ""))
    if model not in RESIDUAL_MODELS:
        raise SpecError(f"{w}: error model {model!r} is unknown. Fix: use one of "
                        + "; ".join(f"{k} ({v[1]})" for k, v in RESIDUAL_MODELS.items()))
    roles = RESIDUAL_MODELS[model][0]
    extra = set(r) - {"model", "unit", *roles}
    if extra:
        raise SpecError(f"{w}: {', '.join(sorted(extra))} do not belong to the {model} model, "
                        f"whose parameters are {', '.join(roles)}")
    names, priors, variance, init = {}, {}, {}, {}
    for role in roles:
        if role not in r:
            raise SpecError(f"{w}: the {model} model needs a prior for {role!r}. Fix: "
                            f"{role} = {{ prior = 'HalfNormal(1)', name = 'sigma' }}")
        v = r[role] if isinstance(r[role], Mapping) else {"prior": r[role]}
        pr = parse_prior(v["prior"], f"{w} {role}")
        if pr.support != "positive":
            raise SpecError(f"{w}: the prior {pr.text!r} of {role} allows negative values. "
                            "Fix: use a positive distribution (HalfNormal, InvGamma, ...)")
        names[role] = str(v.get("name", "sigma" if len(roles) == 1 else f"sigma_{role}"))
        priors[role] = pr
        variance[role] = bool(v.get("variance", False))
        if "init" in v:
            init[role] = float(v["init"])
    return Residual(model, names, priors, variance, str(r.get("unit", "")), init)


def _sampler(s, path) -> Sampler:
    w = _where(path, "sampler")
    known = set(Sampler.__dataclass_fields__)
    extra = set(s) - known
    if extra:
        raise SpecError(f"{w}: unknown setting(s) {', '.join(sorted(extra))}. Fix: use "
                        f"{', '.join(sorted(known))}")
    vals = {k: (_threads(v, w) if k == "threads" else _sampler_value(k, v, w))
            for k, v in s.items()}
    out = Sampler(**vals)
    if out.name not in SAMPLERS:
        raise SpecError(f"{w}: sampler {out.name!r} is unknown. Fix: use one of "
                        f"{', '.join(SAMPLERS)}")
    for k in ("chains", "tune", "draws", "chains_per_batch", "max_treedepth"):
        low = 0 if k == "tune" else 1
        if getattr(out, k) < low:
            raise SpecError(f"{w}: {k} must be an integer >= {low}; got {getattr(out, k)}. "
                            f"Fix: e.g. {k} = {getattr(Sampler, k)}")
    if not 0.5 <= out.target_accept < 1:
        raise SpecError(f"{w}: target_accept must be in [0.5, 1); got {out.target_accept}. "
                        "Fix: e.g. target_accept = 0.8 (0.9-0.99 for difficult posteriors)")
    return out


def _threads(v, w):
    """``[sampler] threads``: "auto" or an integer >= 1."""
    if v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SpecError(f"{w}: threads must be \"auto\" or an integer >= 1; got {v!r}. Fix: "
                        "threads = \"auto\" (1 thread for cheap models, one per chain otherwise)"
                        " or e.g. threads = 2")
    return int(v)


def _sampler_value(k, v, w):
    """One ``[sampler]`` setting converted to its type; text, fractions and bools are refused
    where an integer is needed."""
    default = getattr(Sampler, k)
    typ = type(default)
    if typ is bool:
        if not isinstance(v, bool):
            raise SpecError(f"{w}: {k} must be true or false; got {v!r}. Fix: {k} = true "
                            "or false (no quotes)")
        return v
    if typ is str:
        return str(v)
    ok = (not isinstance(v, bool) and isinstance(v, (int, float))
          and (typ is float or float(v).is_integer()) and np.isfinite(float(v)))
    if not ok:
        kind = "an integer" if typ is int else "a number"
        raise SpecError(f"{w}: {k} must be {kind}; got {v!r}. Fix: e.g. {k} = {default!r} "
                        "(a TOML number, no quotes)")
    return typ(v)


def _synergy(model, path, kind, thetas) -> str:
    """``[model] synergy``: "kio_m" by default where it applies (a tumour card whose KIO and PSI
    are thetas with priors it can use), else "kio_psi"; an explicit "kio_m" that cannot apply
    is an error naming the reason."""
    w = _where(path, "model")
    given = model.get("synergy")
    if given is not None and given not in SYNERGY:
        raise SpecError(f"{w}: synergy = {given!r} is unknown. Fix: use one of "
                        + "; ".join(f"'{k}' ({v})" for k, v in SYNERGY.items()))
    why = None
    if kind != "tumour_card" or "KIO" not in thetas or "PSI" not in thetas:
        why = "it needs a tumour card whose KIO and PSI are both estimated ([theta])"
    elif thetas["KIO"].prior.support != "positive":
        why = (f"KIO's prior {thetas['KIO'].prior.text!r} allows values <= 0 (KIO = M/(1 + PSI) "
               "is sampled on the log scale)")
    elif thetas["PSI"].prior.dist not in SYNERGY_PSI_PRIORS:
        why = (f"PSI's prior {thetas['PSI'].prior.text!r} cannot be truncated at -1 (use one of "
               f"{', '.join(SYNERGY_PSI_PRIORS)})")
    if why is None:
        return str(given or "kio_m")
    if given == "kio_m":
        raise SpecError(f"{w}: synergy = 'kio_m' cannot be used: {why}. Fix: change that, or "
                        "set synergy = 'kio_psi'")
    return "kio_psi"


def _cross_check(spec: Spec) -> None:
    names = set(spec.thetas) | set(spec.etas)
    covs = set(spec.data.covariates)
    for p, e in spec.individual.items():
        for n in e.names:
            if n not in names and n not in covs and n not in spec.fixed:
                raise SpecError(
                    f"{_where(spec.path, 'individual')}: {p} = {e.text!r} uses {n!r}, which is "
                    "not a theta, an eta (eta_*), a fixed parameter or a covariate listed in "
                    "[data] covariates. Fix: declare it")
    for b in spec.omegas:
        if b.mu is not None:
            bad = [n for n in b.mu.names if n not in spec.thetas and n not in covs
                   and n not in spec.fixed]
            if bad:
                raise SpecError(f"{_where(spec.path, 'omega')}: mu of {b.etas[0]} = "
                                f"{b.mu.text!r} uses {', '.join(bad)}, which are not thetas, "
                                "fixed parameters or covariates")
    clash = (set(spec.thetas) | set(spec.fixed)) & covs
    if clash:
        raise SpecError(f"{_where(spec.path, 'data')}: {', '.join(sorted(clash))} is both a "
                        "covariate and a parameter. Fix: rename the theta")
    pop = spec.population_names
    dup = {n for n in pop if pop.count(n) > 1}
    if dup:
        raise SpecError(f"{_where(spec.path, 'theta')}: reported names used twice: "
                        f"{', '.join(sorted(dup))}")
