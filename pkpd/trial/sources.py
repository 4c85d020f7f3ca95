"""Population sources of a virtual trial: the population parameters each replicate uses.

By default every replicate uses the tumour card's typical values and IIV (or a calibrated card,
``run_trial(card=...)``). With a fit's posterior, each replicate first draws one posterior draw of
the population parameters, then its patients from them::

    from pkpd.trial import run_trial
    from pkpd.trial.sources import posterior_draws
    draws = posterior_draws("fits/triplet_recovery")     # one row per chain x draw
    res = run_trial("triplet", n=500, replicates=50, draws=draws)

:func:`posterior_draws` maps a ``pkpd fit`` posterior of a tumour card onto the card's names:
the typical value of each parameter of the spec's ``[individual]`` block is its expression at
eta = 0 (e.g. ``KG*exp(eta_KG)`` -> the draw of ``KG``), and the variance of its eta becomes
``omega2_NAME`` (the square of the posterior ``omega_sd``) when the expression has the card's IIV
form (``P*exp(eta)`` for ``type = "exp"``, ``P + eta`` for ``"add"``; checked numerically).
Parameters the fit held fixed take the fit's fixed value (the card's own unless the spec changed
it); IIV the fit did not estimate, IIV correlations and the residual error stay as in the card.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..cards.card import Card, load_card
from ..errors import SpecError

__all__ = ["posterior_draws", "check_draws", "card_for_draw", "OMEGA2_PREFIX",
           "calibration_draws", "population_draws", "prior_draws", "with_prior", "N_DRAWS"]

#: rows of a draws table made by resampling weighted particles or drawing from priors
N_DRAWS = 1000

#: column prefix of IIV variances in a table of population draws
OMEGA2_PREFIX = "omega2_"

#: the eta used to tell ``P*exp(eta)`` from ``P + eta``
_PROBE_ETA = 0.1


def _not_a_fit(path: Path, why: str) -> SpecError:
    spec = path.with_suffix(".toml") if path.suffix != ".toml" else path
    return SpecError(f"{path} is not a pkpd fit: {why}. Fix: run pkpd fit {spec}, or give a "
                     "folder that pkpd fit wrote (fit.json and posterior.nc) or pkpd calibrate "
                     "wrote (calibration.json and particles.csv)")


def _load(path: Path):
    from ..fit.folders import is_pkpd_fit
    from ..fit.run import load_fit

    if not path.is_dir():
        raise _not_a_fit(path, "no such folder")
    if not is_pkpd_fit(path):
        raise _not_a_fit(path, "no fit.json written by pkpd fit")
    res = load_fit(path)
    if res.idata is None or "posterior" not in res.idata.groups():
        raise SpecError(f"{path} has no posterior.nc (reference folders in git keep only the "
                        "summary). Fix: run pkpd fit on its spec with --out pointing there to "
                        "regenerate the posterior")
    model = res.record.get("model", {})
    if model.get("kind") != "tumour_card":
        raise SpecError(f"{path} is a fit of a {model.get('kind', 'unknown')!r} model, not of a "
                        "tumour card, so its parameters cannot drive a trial. Fix: give a fit "
                        "whose spec has [model] card = \"<tumour card>\"")
    return res


def _env(post, record: dict, card: Card) -> tuple[dict, list[str], int]:
    """Per-draw values of the posterior's population scalars, the fit's fixed values, the
    card's reference covariates, and the etas' names; flattened over chain x draw."""
    n = post.sizes["chain"] * post.sizes["draw"]
    env = {k: np.asarray(v.values, float).reshape(n) for k, v in post.data_vars.items()
           if v.dims == ("chain", "draw") and not k.endswith("__")}
    env.update({k: np.full(n, float(v)) for k, v in record["model"].get("fixed", {}).items()})
    for k, v in card.reference_covariates.items():
        env.setdefault(k, np.full(n, float(v)))
    etas = [str(e) for e in post.coords["eta_name"].values] if "eta_name" in post.coords else []
    return env, etas, n


def _iiv_column(par: str, expr, env: dict, eta: str, typical: np.ndarray, card: Card,
                path: Path) -> str:
    """Check that ``expr`` has the card's IIV form in ``eta``; the card's IIV type."""
    iiv = card.raw.get("iiv", {}).get(par)
    if iiv is None:
        raise SpecError(f"{path}: the fit has IIV on {par} ({expr.text}) but card {card.name} "
                        f"has none. Fix: add [iiv.{par}] to the card, or give the card the fit "
                        "used")
    kind = iiv.get("type", "exp")
    probe = expr.evaluate({**env, eta: np.full_like(typical, _PROBE_ETA)}, np)
    want = typical * np.exp(_PROBE_ETA) if kind == "exp" else typical + _PROBE_ETA
    if not np.allclose(probe, want, rtol=1e-9, atol=1e-12):
        form = f"{par}*exp(eta)" if kind == "exp" else f"{par} + eta"
        raise SpecError(f"{path}: {par} = {expr.text!r} is not of the card's IIV form {form} "
                        f"(type {kind!r}), so its omega cannot be carried over. Fix: fit with "
                        "the card's IIV form")
    return kind


def posterior_draws(path: str | os.PathLike, card: Card | str | None = None) -> pd.DataFrame:
    """Population-parameter draws of a ``pkpd fit`` folder, in the tumour card's names.

    Parameters
    ----------
    path : a fit folder (``fits/NAME``) holding ``fit.json`` and ``posterior.nc``.
    card : the card to map onto (default: the card the fit used).

    Returns
    -------
    pandas.DataFrame
        One row per chain x draw (index ``chain``, ``draw``): a column per card parameter of the
        fit's ``[individual]`` block and ``[fixed]`` table (typical values, card units), and
        ``omega2_NAME`` (IIV variance) for each parameter with a fitted eta. ``attrs`` holds the
        source, the card's name and the card hash recorded by the fit.
    """
    from ..fit.expr import parse_expr

    path = Path(path)
    res = _load(path)
    model = res.record["model"]
    card = load_card(model["ref"]) if card is None else (
        card if isinstance(card, Card) else load_card(card))
    post = res.idata.posterior
    env, etas, n = _env(post, res.record, card)
    zero = {e: np.zeros(n) for e in etas}
    cols: dict[str, np.ndarray] = {}
    for par, text in model.get("individual", {}).items():
        expr = parse_expr(text, f"{path} fit.json, individual {par}")
        missing = sorted(expr.names - set(env) - set(etas))
        if missing:
            raise SpecError(f"{path}: {par} = {text!r} needs {', '.join(missing)}, which is not a "
                            "population parameter of the posterior nor a reference covariate of "
                            f"card {card.name}. Fix: add it to the card's reference_covariates")
        typical = np.broadcast_to(expr.evaluate({**env, **zero}, np), (n,)).astype(float)
        cols[par] = typical
        used = sorted(expr.names & set(etas))
        if len(used) > 1:
            raise SpecError(f"{path}: {par} = {text!r} has {len(used)} etas; a card has one per "
                            "parameter. Fix: one eta per parameter")
        if used:
            _iiv_column(par, expr, {**env, **zero}, used[0], typical, card, path)
            sd = post["omega_sd"].sel(eta_name=used[0]).values.reshape(n)
            cols[OMEGA2_PREFIX + par] = np.asarray(sd, float) ** 2
    for par, v in model.get("fixed", {}).items():
        cols.setdefault(par, np.full(n, float(v)))
    index = pd.MultiIndex.from_product([post.coords["chain"].values, post.coords["draw"].values],
                                       names=["chain", "draw"])
    out = pd.DataFrame(cols, index=index)
    check_draws(out, card)
    out.attrs.update(source=f"posterior {path}", card=card.name,
                     fit_card_sha256=res.record.get("cards", {}).get(model["ref"], ""),
                     fit=res.record.get("name", path.name))
    return out


def check_draws(draws: pd.DataFrame, card: Card) -> None:
    """Refuse a table of population draws that ``card`` cannot take: no rows, a column that is
    neither a card parameter nor ``omega2_NAME`` of an IIV of the card, a non-finite value."""
    from difflib import get_close_matches

    if not isinstance(draws, pd.DataFrame) or draws.empty:
        raise SpecError("draws must be a pandas DataFrame with at least one row (one per draw "
                        "of the population parameters). Fix: e.g. posterior_draws('fits/NAME')")
    known = list(card.raw["parameters"]) + [OMEGA2_PREFIX + k for k in card.iiv_names]
    for c in draws.columns:
        if c not in known:
            low = {k.lower(): k for k in known}
            near = [low[str(c).lower()]] if str(c).lower() in low else \
                get_close_matches(str(c), known, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise SpecError(f"draws column {c!r} is not a parameter of card {card.name} nor "
                            f"omega2_NAME of one of its IIVs. Fix: {hint}use names from "
                            f"{', '.join(known)}")
        v = pd.to_numeric(draws[c], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise SpecError(f"draws column {c!r}, row {bad[0]}: {draws[c].iloc[bad[0]]!r} is not "
                            "a finite number. Fix: drop or correct that draw")


def card_for_draw(card: Card, row: pd.Series) -> Card:
    """``card`` with the typical values and IIV variances of one row of a draws table."""
    values = {k: float(v) for k, v in row.items() if not str(k).startswith(OMEGA2_PREFIX)}
    omega2 = {str(k)[len(OMEGA2_PREFIX):]: float(v) for k, v in row.items()
              if str(k).startswith(OMEGA2_PREFIX)}
    return card.with_values(values=values, omega2=omega2)


def calibration_draws(path: str | os.PathLike, n: int = N_DRAWS) -> pd.DataFrame:
    """The ABC posterior of a ``pkpd calibrate`` folder as ``n`` equally weighted rows:
    its weighted particles (``particles.csv``) resampled systematically (no random numbers:
    particle ``i`` appears about ``n * weight_i`` times). ``attrs["card"]`` is the folder's
    calibrated card (``card.toml``), on which the rows are to be applied."""
    from .calibration_files import is_calibration

    path = Path(path)
    if not is_calibration(path):
        raise _not_a_fit(path, "no fit.json written by pkpd fit, and no calibration.json "
                         "written by pkpd calibrate")
    parts = pd.read_csv(path / "particles.csv")
    w = parts["weight"].to_numpy(float)
    cum = np.cumsum(w / w.sum())
    idx = np.minimum(np.searchsorted(cum, (np.arange(n) + 0.5) / n), len(w) - 1)
    out = parts.drop(columns=["weight", "distance"]).iloc[idx].reset_index(drop=True)
    out.attrs.update(source=f"calibration {path}", card=str(path / "card.toml"))
    return out


def population_draws(path: str | os.PathLike, card: Card | str | None = None) -> pd.DataFrame:
    """Population draws of a folder: a ``pkpd fit`` posterior (:func:`posterior_draws`) or a
    ``pkpd calibrate`` ABC posterior (:func:`calibration_draws`)."""
    from .calibration_files import is_calibration

    if is_calibration(Path(path)):
        return calibration_draws(path)
    return posterior_draws(path, card)


def prior_draws(card: Card | str, names, n: int = N_DRAWS, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of the card's typical values with ``names`` drawn from the card's priors
    (normal or log-normal), from ``SeedSequence([seed, 7])``: e.g. the synergy PSI, which no
    published arm without anlotinib can inform."""
    card = card if isinstance(card, Card) else load_card(card)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    out = pd.DataFrame({k: np.full(n, v) for k, v in card.typical_params().items()})
    for name in names:
        out[name] = _from_prior(card, name, rng, n)
    out.attrs.update(source=f"card {card.name} with {', '.join(names)} from the prior")
    return out


def _from_prior(card: Card, name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    pri = card.priors().get(name)
    if pri is None or pri.get("dist") not in ("normal", "lognormal"):
        raise SpecError(f"card {card.name} has no normal or log-normal prior on {name!r} "
                        f"(got {pri!r}). Fix: give a parameter with a prior, e.g. PSI")
    if pri["dist"] == "normal":
        return rng.normal(float(pri["mean"]), float(pri["sd"]), n)
    return float(pri["median"]) * np.exp(float(pri["sd_log"]) * rng.standard_normal(n))


def with_prior(draws: pd.DataFrame, card: Card | str, names, seed: int = 0) -> pd.DataFrame:
    """``draws`` with the columns ``names`` replaced by draws from the card's priors (one per
    row, from ``SeedSequence([seed, 7])``)."""
    card = card if isinstance(card, Card) else load_card(card)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    out = draws.copy()
    for name in names:
        out[name] = _from_prior(card, name, rng, len(out))
    out.attrs.update(draws.attrs)
    out.attrs["source"] = f"{draws.attrs.get('source', 'draws')}; {', '.join(names)} from the prior"
    return out
