"""Model cards: TOML files in ``models/`` with parameter values, units, IIV, residual error,
covariate effects and the literature source of every number.

A card is data. :func:`load_card` reads and validates it; :class:`Card` turns it into a
:class:`~pkpd.pk.PKModel`, typical or individual parameters (covariates applied) and IIV draws.

Covariate effect types (``[[covariates]]`` tables):

* ``power``: ``P = P_ref * (COV / reference) ** effect``
* ``linear``: ``P = P_ref * (1 + effect * (COV - reference))``
* ``exponential``: ``P = P_ref * exp(effect * (COV - reference))``
* ``categorical``: ``P = P_ref * (1 + effect)`` when ``COV == level`` (or ``>= level`` with
  ``at_least = true``), else ``P_ref``

IIV (``[iiv.NAME]``): ``type = "exp"`` gives ``P_i = P * exp(eta)``, ``type = "add"`` gives
``P_i = P + eta``; ``eta ~ N(0, Omega)`` with variances ``omega2`` and off-diagonal terms from
``[[iiv_covariance]]`` (``cov``) or ``[[iiv_correlation]]`` (``corr``).

Parameter domains (``[parameters.NAME] domain = "positive"``, ``"nonnegative"``, ``"real"`` or an
interval such as ``"[0, 1]"``; default :func:`pkpd.pk.default_domain`): the card's own values,
covariate-adjusted typical values, IIV draws and every override are checked against them.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..io import read_text_file
from ..params import (
    PARAM_NAME_RE,
    Domain,
    check_domains,
    check_names,
    default_domain,
    parse_domain,
)
from ..units import normalize_amount_unit, normalize_conc_unit, normalize_time_unit
from .registry import card_kind

__all__ = ["Card", "load_card", "list_cards", "models_dir"]

_COV_TYPES = ("power", "linear", "exponential", "categorical")


def models_dir() -> Path:
    """Folder of the bundled cards (``$PKPD_MODELS`` overrides)."""
    env = os.environ.get("PKPD_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def list_cards() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


@dataclass(frozen=True)
class Card:
    """A validated model card."""

    name: str
    path: Path | None
    raw: dict = field(repr=False)
    sha256: str = field(repr=False, default="")

    # ---- structure ------------------------------------------------------------------------
    @property
    def structure(self) -> dict:
        return self.raw["structure"]

    @property
    def time_unit(self) -> str:
        return normalize_time_unit(self.structure["time_unit"])

    @property
    def amount_unit(self) -> str:
        return normalize_amount_unit(self.structure.get("amount_unit", "mg"))

    @property
    def conc_unit(self) -> str:
        return normalize_conc_unit(self.structure["conc_unit"])

    @property
    def dose_cmt(self) -> dict[str, int]:
        return {k.upper(): int(v) for k, v in self.structure.get("dose_cmt", {}).items()}

    @property
    def source(self) -> str:
        return self.raw["card"].get("source", "")

    @property
    def kind(self) -> str:
        """``"pk"`` (a compartmental PK model) or ``"tumor"`` (a tumour-dynamics model)."""
        return str(self.raw["card"].get("kind", "pk")).lower()

    @property
    def size_unit(self) -> str:
        """Tumour size unit of a tumour card (``mm``)."""
        return str(self.structure.get("size_unit", "mm"))

    @property
    def drivers(self) -> dict[str, dict]:
        """Tumour cards: exposure drivers, ``{drug: {card, signal, ...}}``."""
        return {k: dict(v) for k, v in self.raw.get("drivers", {}).items()}

    def priors(self) -> dict[str, dict]:
        """Prior of each parameter as written in the card (``{}`` when a parameter has none)."""
        return {k: dict(v.get("prior", {})) for k, v in self.raw["parameters"].items()}

    def model(self):
        """The model object this card describes (a :class:`~pkpd.pk.PKModel` for a PK card)."""
        if self.kind == "tumor":
            raise ModelError(
                f"card {self.name} is a tumour-dynamics card, not a PK model. Fix: use "
                "pkpd.tumour.simulate.simulate(card, ...) or `pkpd simulate --model "
                + self.name + "`")
        build = card_kind(self.kind, f"card {self.name}").model
        if build is None:
            raise ModelError(f"card {self.name}: a {self.kind!r} card describes no model object")
        return build(self)

    # ---- parameters -----------------------------------------------------------------------
    @property
    def parameter_names(self) -> list[str]:
        return list(self.raw["parameters"])

    def domain(self, name: str) -> Domain:
        """Domain of parameter ``name``: the card's ``domain`` field, else the default."""
        p = self.raw["parameters"].get(name, {})
        if "domain" in p:
            return parse_domain(p["domain"], f"card {self.name}, parameter {name}")
        return default_domain(name)

    def domains(self) -> dict[str, Domain]:
        """Domain of every parameter of the card (and, for PK cards, of the model)."""
        return {k: self.domain(k) for k in self.known_parameters()}

    def units(self) -> dict[str, str]:
        return {k: str(v.get("unit", "")) for k, v in self.raw["parameters"].items()}

    def known_parameters(self) -> list[str]:
        """The card's parameters, then the model's structural parameters it does not list."""
        names = list(self.raw["parameters"])
        if self.kind == "pk":
            names += [k for k in self.model().parameters if k not in names]
        return names

    def check_params(self, params: Mapping, *, who: str = "parameters",
                     fix: str | None = None) -> None:
        """Refuse a name that is not a parameter of this card (PK cards also accept the dose
        parameters F<n>, ALAG<n>, R<n>, D<n>) and a value outside its domain. Values may be
        numbers or arrays (one per subject)."""
        n_cmt = self.model().n_cmt if self.kind == "pk" else 0
        check_names(list(params), self.known_parameters(), owner=f"card {self.name}",
                    n_cmt=n_cmt, noun="tumour parameter" if self.kind == "tumor" else "parameter")
        doms = {k: self.domain(k) for k in params}
        check_domains(params, doms, who=f"{who} of card {self.name}", units=self.units(),
                      fix=fix)

    def parameter_table(self) -> list[dict]:
        """One dict per parameter: name, value, unit, description, source."""
        return [dict(name=k, **v) for k, v in self.raw["parameters"].items()]

    @property
    def reference_covariates(self) -> dict[str, float]:
        return dict(self.raw.get("reference_covariates", {}))

    def typical_params(self, covariates: Mapping[str, float] | None = None) -> dict[str, float]:
        """Typical values with covariate effects applied (reference covariates fill gaps).

        A covariate may be an array (one value per patient); the parameters it acts on are then
        arrays of the same shape (scalars otherwise)."""
        cov = self.reference_covariates
        cov.update(covariates or {})
        out = {k: float(v["value"]) for k, v in self.raw["parameters"].items()}
        for c in self.raw.get("covariates", []):
            name = c["covariate"]
            if name not in cov:
                raise ModelError(
                    f"card {self.name}: covariate {name} is needed for {c['parameter']} but was "
                    f"not given and has no reference value. Fix: pass {name}=... "
                )
            f = _covariate_factor(c, cov[name])
            out[c["parameter"]] = out[c["parameter"]] * f
        if self.raw.get("covariates"):
            used = {c["covariate"]: cov[c["covariate"]] for c in self.raw["covariates"]}
            if any(np.ndim(v) for v in used.values()):
                used = {k: "per patient" if np.ndim(v) else v for k, v in used.items()}
            check_domains(out, {k: self.domain(k) for k in out}, units=self.units(),
                          who=f"card {self.name}: the typical value at covariates {used}",
                          fix="check the covariate values (units as in the card)")
        return out

    # ---- variability ----------------------------------------------------------------------
    @property
    def iiv_names(self) -> list[str]:
        return list(self.raw.get("iiv", {}))

    def omega(self) -> np.ndarray:
        """IIV covariance matrix in the order of :attr:`iiv_names`."""
        names = self.iiv_names
        iiv = self.raw.get("iiv", {})
        om = np.diag([float(iiv[n]["omega2"]) for n in names])
        idx = {n: i for i, n in enumerate(names)}
        for c in self.raw.get("iiv_covariance", []):
            i, j = idx[c["a"]], idx[c["b"]]
            om[i, j] = om[j, i] = float(c["cov"])
        for c in self.raw.get("iiv_correlation", []):
            i, j = idx[c["a"]], idx[c["b"]]
            om[i, j] = om[j, i] = float(c["corr"]) * np.sqrt(om[i, i] * om[j, j])
        return om

    def apply_eta(self, params: Mapping[str, float], eta: Mapping[str, float]) -> dict:
        """Individual parameters from typical values and random effects."""
        out = dict(params)
        for n in self.iiv_names:
            if n not in eta:
                continue
            if self.raw["iiv"][n].get("type", "exp") == "add":
                out[n] = out[n] + eta[n]
            else:
                out[n] = out[n] * np.exp(eta[n])
        return out

    def sample_params(self, n: int, rng: np.random.Generator,
                      covariates: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
        """``n`` individual parameter sets (dict of arrays) with IIV drawn from the card."""
        typ = self.typical_params(covariates)
        names = self.iiv_names
        etas = (rng.multivariate_normal(np.zeros(len(names)), self.omega(), size=n)
                if names else np.zeros((n, 0)))
        out = {k: np.full(n, v) for k, v in typ.items()}
        out = self.apply_eta(out, {nm: etas[:, i] for i, nm in enumerate(names)})
        check_domains(out, {k: self.domain(k) for k in out}, units=self.units(),
                      who=f"card {self.name}: an IIV draw",
                      fix="check the card's [iiv] variances and types")
        return out

    @property
    def residual(self) -> dict:
        return dict(self.raw.get("residual", {}))

    def with_values(self, values: Mapping[str, float] | None = None,
                    omega2: Mapping[str, float] | None = None,
                    residual: Mapping[str, object] | None = None) -> Card:
        """A copy of this card with other typical values and/or IIV variances.

        ``values``: ``{parameter: typical value}``; ``omega2``: ``{parameter: variance of its
        eta}`` (the parameter must have an ``[iiv.NAME]`` table; the type is kept);
        ``residual``: entries that replace those of the ``[residual]`` table. The copy is
        validated like a card file (domains, variances >= 0); its ``sha256`` is over the
        modified content (canonical JSON), so it differs from the file's whenever a value does.
        Raises :class:`~pkpd.errors.ModelError` on an unknown name or a bad value.
        """
        import copy
        import json

        raw = copy.deepcopy(self.raw)
        for what, given, table, key in (("parameter", values, "parameters", "value"),
                                        ("IIV", omega2, "iiv", "omega2")):
            for k, v in (given or {}).items():
                if k not in raw.get(table, {}):
                    known = ", ".join(raw.get(table, {})) or "(none)"
                    raise ModelError(f"card {self.name} has no {what} {k!r}. Fix: use one of "
                                     f"{known}")
                if isinstance(v, bool) or not np.isscalar(v) or not np.isfinite(float(v)):
                    raise ModelError(f"card {self.name}: {what} {k} = {v!r} is not a finite "
                                     "number. Fix: give a number")
                raw[table][k][key] = float(v)
        if residual:
            raw.setdefault("residual", {}).update(residual)
        _validate(raw, f"card {self.name} (modified copy)")
        sha = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
        return Card(name=self.name, path=self.path, raw=raw, sha256=sha)

    def summary(self) -> str:
        lines = [f"{self.name}: {self.raw['card'].get('description', '')}",
                 f"  source: {self.source}"]
        if self.kind == "tumor":
            lines += [f"  model: {self.structure['model']} (tumour; drivers: "
                      f"{', '.join(self.drivers)})",
                      f"  units: time {self.time_unit}, size {self.size_unit}"]
        else:
            lines += [f"  model: {self.model()!r}",
                      f"  units: time {self.time_unit}, amount {self.amount_unit}, "
                      f"concentration {self.conc_unit}"]
        for p in self.parameter_table():
            lines.append(f"  {p['name']:6s} = {p['value']:<10g} {p.get('unit', '')}")
        return "\n".join(lines)


def _covariate_factor(c: dict, value):
    """The factor a ``[[covariates]]`` entry applies at ``value`` (a float for a scalar value,
    an array for an array of values)."""
    x = float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=float)
    kind = c["type"]
    eff = float(c["effect"])
    if kind == "power":
        f = (x / float(c["reference"])) ** eff
    elif kind == "linear":
        f = 1.0 + eff * (x - float(c["reference"]))
    elif kind == "exponential":
        f = np.exp(eff * (x - float(c["reference"])))
    else:
        hit = x >= c["level"] if c.get("at_least") else x == c["level"]
        f = np.where(hit, 1.0 + eff, 1.0)
    return float(f) if np.ndim(f) == 0 else f


def _validate(raw: dict, where: str) -> None:
    for sec in ("card", "structure", "parameters"):
        if not isinstance(raw.get(sec), dict):
            raise ModelError(f"{where}: missing [{sec}] table. Fix: see models/anlotinib.toml")
    s = raw["structure"]
    kind = card_kind(str(raw["card"].get("kind", "pk")), where)
    for key in kind.structure:
        if key not in s:
            raise ModelError(f"{where}: [structure] needs '{key}'. Fix: see {kind.example}")
    normalize_time_unit(s["time_unit"])
    domains = _validate_parameters(raw["parameters"], where)
    if kind.check is not None:
        kind.check(raw, where)
    _validate_iiv(raw, domains, where)
    for c in raw.get("covariates", []):
        _validate_covariate(c, raw["parameters"], where)


def _number(value, what: str, where: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ModelError(f"{where}: {what} must be a finite number; got {value!r}. Fix: {fix}")
    return float(value)


def _validate_iiv(raw: dict, domains: dict[str, Domain], where: str) -> None:
    iiv = raw.get("iiv", {})
    for name, v in iiv.items():
        if name not in raw["parameters"]:
            raise ModelError(f"{where}: IIV on unknown parameter {name}. Fix: use one of "
                             f"{', '.join(raw['parameters'])}")
        if not isinstance(v, dict) or "omega2" not in v:
            raise ModelError(f"{where}: [iiv.{name}] needs omega2 (the variance of eta). Fix: "
                             "e.g. omega2 = 0.09 for a CV of about 30%")
        om = _number(v["omega2"], f"IIV {name} omega2", where, "give a variance >= 0")
        if om < 0:
            raise ModelError(f"{where}: IIV {name} omega2 must be >= 0 (a variance); got "
                             f"{v['omega2']!r}. Fix: omega2 = ln(1 + CV^2), e.g. 0.09")
        kind = v.get("type", "exp")
        if kind not in ("exp", "add"):
            raise ModelError(f"{where}: IIV {name} type {kind!r}. Fix: use type = \"exp\" "
                             "(P*exp(eta)) or \"add\" (P + eta)")
        _check_iiv_domain(name, kind, domains[name], where)
    for sec, key in (("iiv_covariance", "cov"), ("iiv_correlation", "corr")):
        for c in raw.get(sec, []):
            for end in ("a", "b"):
                if c.get(end) not in iiv:
                    raise ModelError(f"{where}: [[{sec}]] {end} = {c.get(end)!r} has no [iiv] "
                                     f"table. Fix: use one of {', '.join(iiv) or '(none)'}")
            _number(c.get(key), f"[[{sec}]] {key}", where, f"give {key} as a number")


def _validate_covariate(c: dict, params: dict, where: str) -> None:
    if c.get("type") not in _COV_TYPES:
        raise ModelError(f"{where}: covariate type {c.get('type')!r}. Fix: use one of "
                         f"{', '.join(_COV_TYPES)}")
    if c.get("parameter") not in params:
        raise ModelError(f"{where}: covariate effect on unknown parameter {c.get('parameter')!r}. "
                         f"Fix: use one of {', '.join(params)}")
    if not isinstance(c.get("covariate"), str):
        raise ModelError(f"{where}: a [[covariates]] entry on {c['parameter']} names no "
                         "covariate. Fix: add covariate = \"WT\" (for example)")
    keys = ("effect", "level") if c["type"] == "categorical" else ("effect", "reference")
    for key in keys:
        _number(c.get(key), f"the {c['type']} effect of {c['covariate']} on {c['parameter']}: "
                f"{key}", where, f"give {key} as a number")


def _validate_parameters(params: dict, where: str) -> dict[str, Domain]:
    """Names, required fields, numeric values inside their domains; returns the domains."""
    if not isinstance(params, dict) or not params:
        raise ModelError(f"{where}: [parameters] is empty. Fix: add [parameters.NAME] tables")
    domains = {}
    for name, p in params.items():
        if not PARAM_NAME_RE.fullmatch(name):
            raise ModelError(f"{where}: parameter name {name!r} is not a name (a letter, then "
                             "letters, digits or _). Fix: rename it, e.g. CL_F for 'CL/F'")
        if not isinstance(p, dict):
            raise ModelError(f"{where}: parameters.{name} must be a table with value, unit, "
                             "source. Fix: see models/anlotinib.toml")
        for key in ("value", "unit", "source"):
            if key not in p:
                raise ModelError(f"{where}: parameter {name} needs '{key}' (value, unit, source). "
                                 "Fix: see models/anlotinib.toml")
        v = p["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"{where}: parameter {name} value must be a number; got {v!r}. "
                             "Fix: write e.g. value = 9.26")
        dom = (parse_domain(p["domain"], f"{where}: parameter {name}") if "domain" in p
               else default_domain(name))
        check_domains({name: v}, {name: dom}, who=where, units={name: str(p["unit"])},
                      fix=f"correct the value, or state the parameter's domain (domain = ...) "
                      f"if {dom.describe()} is wrong for {name}")
        domains[name] = dom
    return domains


def _check_iiv_domain(name: str, kind: str, dom: Domain, where: str) -> None:
    """IIV must not be able to leave the domain: ``exp`` needs an upper end of inf and a lower
    end <= 0, ``add`` needs the whole real line."""
    if kind == "add" and (np.isfinite(dom.lo) or np.isfinite(dom.hi)):
        raise ModelError(f"{where}: IIV on {name} is additive (P + eta), which can leave its "
                         f"domain, {dom.describe()}. Fix: use type = \"exp\" (P * exp(eta))")
    if kind == "exp" and (np.isfinite(dom.hi) or dom.lo > 0):
        raise ModelError(f"{where}: IIV on {name} is exponential (P * exp(eta)), which can leave "
                         f"its domain, {dom.describe()}. Fix: drop the IIV on {name} or widen "
                         "its domain")


def load_card(name_or_path: str | os.PathLike) -> Card:
    """Load a card by name (``"anlotinib"``) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = models_dir() / f"{name_or_path}.toml"
    if not p.exists():
        raise ModelError(
            f"no model card {str(name_or_path)!r}. Fix: use one of {', '.join(list_cards())} "
            "or a path to a .toml card"
        )
    text = read_text_file(p, "model card")     # a file, not empty, UTF-8
    data = p.read_bytes()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{p}: not valid TOML ({exc}). Fix: correct the TOML syntax there "
                         "(models/anlotinib.toml is an example card)") from None
    _validate(raw, str(p))
    card = Card(name=raw["card"].get("name", p.stem), path=p, raw=raw,
                sha256=hashlib.sha256(data).hexdigest())
    if card.kind == "pk":
        card.model()  # structure must build
    return card
