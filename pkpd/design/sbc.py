"""Simulation-based calibration (SBC; Talts et al. 2018, Modrák et al. 2023) of a design's fit.

A design with ``[design] truths = "prior"`` draws, for every replicate trial, all population
parameters of its base fit spec from the spec's own priors (thetas, the SDs of the etas, the
residual SDs; PSI truncated at -1 under ``synergy = "kio_m"``, as the fit's prior), simulates the
trial with them and fits it. If the fit samples the posterior of the model that simulated the
data, then for every parameter the posterior CDF at the truth (the PIT, ``pit_NAME``) is
uniform on (0, 1) across replicates, and the truth's rank among ``SBC_DRAWS`` thinned posterior
draws (``rank_NAME``) is uniform on 0..``SBC_DRAWS``. Averaged over the prior, every ``level``
posterior interval then covers its truth with probability exactly ``level``, which is the
calibration that a coverage at one fixed truth does not measure (docs/design.md).

``summarise_sbc`` reports per parameter the coverage with its binomial Monte Carlo SE, a
chi-square test of the ranks in ``SBC_BINS`` bins, and whether the ECDF of the PITs stays in the
simultaneous 95% band (Säilynoja et al. 2022, through :func:`arviz`'s
``ecdf_confidence_band``); ``plot_sbc`` draws the ECDF differences with that band (sbc.png).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from ..errors import SpecError
from ..fit.recovery import RESIDUAL_KEYS

__all__ = ["SBC_DRAWS", "SBC_BINS", "prior_draw", "sbc_columns", "summarise_sbc", "plot_sbc",
           "ecdf_band"]

#: thinned posterior draws the rank is taken among (ranks 0..SBC_DRAWS)
SBC_DRAWS = 99
#: bins of the rank histogram for the chi-square test
SBC_BINS = 10


@functools.lru_cache(maxsize=256)
def _frozen(prior, lower: float | None):
    """The prior's scipy distribution and its CDF at ``lower`` (0 without truncation)."""
    from ..fit.model import scipy_prior
    d = scipy_prior(prior)
    return d, (float(d.cdf(lower)) if lower is not None else 0.0)


def _draw(prior, rng, lower: float | None = None) -> float:
    """One draw of a prior (inverse CDF; truncated below ``lower`` where given)."""
    d, lo = _frozen(prior, lower)
    return float(d.ppf(lo + (1.0 - lo) * rng.uniform()))


def prior_draw(spec, seed: int, only=()) -> tuple[dict, dict]:
    """All population parameters of ``spec`` drawn from its priors (or the thetas in ``only``).

    Returns ``(simulate, population)``: the ``[simulate]`` overrides (``truth`` by card
    parameter, ``omega`` as eta SDs, ``residual`` as ``add_sd``/``prop_sd``) and the values by
    reported name (as the fit reports them: SD or variance). Raises SpecError where the spec's
    parameters cannot be simulated (a theta that is not a card parameter, a correlated omega
    block, a residual role the simulator does not have).

    With ``only`` (theta names), every parameter is still drawn in the same order (a theta's
    draw does not depend on ``only``), and only those thetas are returned: the others stay at
    the simulation's own values. That is a partial SBC: the fit's priors on the others are not
    the distribution their truths come from, so the drawn thetas' PITs are uniform only
    approximately, as far as the data dominate the others' posteriors (docs/design.md)."""
    if spec.card is None:
        raise SpecError("simulation-based calibration needs a tumour card in [model]")
    rng = np.random.default_rng([int(seed), 51])
    params = set(spec.card.raw["parameters"])
    sim = {"truth": {}, "omega": {}, "residual": {}}
    pop = {}
    for t in spec.thetas.values():
        if t.name not in params:
            raise SpecError(f"SBC: theta {t.name} is not a parameter of card {spec.card.name}, "
                            "so data cannot be simulated from its prior draw. Fix: name the "
                            "thetas after the card's parameters")
        low = -1.0 if (t.name == "PSI" and spec.synergy == "kio_m") else None
        pop[t.name] = sim["truth"][t.name] = _draw(t.prior, rng, low)
    for b in spec.omegas:
        if b.kind != "diag":
            raise SpecError(f"SBC: the omega block {', '.join(b.etas)} is {b.kind!r}; only "
                            "diagonal omegas are drawn. Fix: one diagonal omega per eta")
        par = b.etas[0].removeprefix("eta_")
        x = _draw(b.sd_priors[0], rng)
        pop[b.names[0]] = x
        sim["omega"][par] = math.sqrt(x) if b.report == "variance" else x
    for role, name in spec.residual.names.items():
        if role not in RESIDUAL_KEYS:
            raise SpecError(f"SBC: residual role {role!r} ({name}) cannot be simulated. Fix: "
                            "use an additive, proportional or combined residual model")
        x = _draw(spec.residual.priors[role], rng)
        pop[name] = x
        sim["residual"][RESIDUAL_KEYS[role]] = (math.sqrt(x) if spec.residual.variance[role]
                                                 else x)
    if only:
        missing = [n for n in only if n not in sim["truth"]]
        if missing:
            raise SpecError(f"SBC: {', '.join(missing)} not among the fit's thetas. Fix: use "
                            f"{', '.join(sim['truth'])}")
        sim = {"truth": {n: sim["truth"][n] for n in only}, "omega": {}, "residual": {}}
        pop = {n: pop[n] for n in only}
    return sim, pop


def sbc_columns(result, population: dict, level: float) -> dict:
    """Per population parameter: ``truth_NAME``, ``pit_NAME`` (fraction of posterior draws
    below the truth), ``rank_NAME`` (among :data:`SBC_DRAWS` draws thinned evenly over the
    chains) and ``covered_NAME`` (the equal-tailed ``level`` interval holds the truth)."""
    post = result.idata.posterior
    out = {"sbc_draws": SBC_DRAWS}
    a = (1.0 - level) / 2.0
    for name, truth in population.items():
        x = np.asarray(post[name].values, float).ravel()
        idx = np.round(np.linspace(0, len(x) - 1, SBC_DRAWS)).astype(int)
        lo, hi = np.quantile(x, [a, 1.0 - a])
        out[f"truth_{name}"] = float(truth)
        out[f"pit_{name}"] = float(np.mean(x < truth))
        out[f"rank_{name}"] = int(np.sum(x[idx] < truth))
        out[f"covered_{name}"] = bool(lo <= truth <= hi)
    return out


@functools.lru_cache(maxsize=32)
def ecdf_band(n: int, prob: float = 0.95, points: int = 51) -> tuple:
    """Simultaneous ``prob`` band of the ECDF of ``n`` uniform values on ``points`` grid points
    (Säilynoja et al. 2022; arviz, optimised): ``(grid, lower, upper)`` as ECDF values.

    The grid is interior, ``j / (points + 1)``: at 0 and 1 the band is the single point 0 (or
    1), and a PIT computed from finitely many draws is exactly 0 (or 1) with positive
    probability (a truth below every draw), so the ends would flag a calibrated fit."""
    from arviz.stats.ecdf_utils import ecdf_confidence_band
    grid = np.linspace(0.0, 1.0, points + 2)[1:-1]
    lo, hi = ecdf_confidence_band(n, grid, grid, prob=prob, method="optimized")
    return grid, np.asarray(lo, float), np.asarray(hi, float)


def _parameters(df: pd.DataFrame) -> list[str]:
    return [c.removeprefix("pit_") for c in df.columns if c.startswith("pit_")]


def _pit_ecdf(df: pd.DataFrame, name: str, grid: np.ndarray) -> np.ndarray:
    """ECDF of parameter ``name``'s PITs on ``grid``."""
    pit = df[f"pit_{name}"].to_numpy(float)
    return np.mean(pit[None, :] <= grid[:, None], axis=1)


def summarise_sbc(df: pd.DataFrame, level: float) -> dict:
    """SBC per parameter: ``n``, ``coverage`` with its binomial SE, the chi-square p-value of
    the ranks in :data:`SBC_BINS` bins, the largest ECDF excursion of the PITs from uniform and
    ``in_band`` (inside the simultaneous 95% band); ``flags`` list the parameters that fail
    (outside the band, or coverage more than 2 SEs of ``level`` away)."""
    from scipy.stats import chisquare
    n = len(df)
    if n == 0:
        return {"n": 0, "level": level, "parameters": [], "flags": []}
    grid, lo, hi = ecdf_band(n)
    rows, flags = [], []
    se_nominal = math.sqrt(level * (1 - level) / n)
    for name in _parameters(df):
        ecdf = _pit_ecdf(df, name, grid)
        ranks = df[f"rank_{name}"].to_numpy(int)
        bins = np.minimum(ranks * SBC_BINS // (SBC_DRAWS + 1), SBC_BINS - 1)
        counts = np.bincount(bins, minlength=SBC_BINS)
        cov = float(df[f"covered_{name}"].astype(bool).mean())
        r = {"parameter": name, "n": n, "coverage": cov,
             "se_coverage": math.sqrt(cov * (1 - cov) / n),
             "chi2_p": float(chisquare(counts).pvalue),
             "max_ecdf_diff": float(np.max(np.abs(ecdf - grid))),
             "in_band": bool(np.all((ecdf >= lo - 1e-12) & (ecdf <= hi + 1e-12)))}
        rows.append(r)
        if not r["in_band"]:
            flags.append(f"{name}: the ECDF of its PITs leaves the simultaneous 95% band "
                         f"(largest difference {r['max_ecdf_diff']:.3f})")
        if abs(cov - level) > 2 * se_nominal:
            flags.append(f"{name}: {100 * level:g}% coverage {cov:.3f} is more than 2 SEs "
                         f"({se_nominal:.3f}) from {level:g}")
    return {"n": n, "level": level, "parameters": rows, "flags": flags}


def _drawn_text(summary: dict) -> str:
    only = summary.get("prior_only") or []
    if not only:
        return "truths drawn from the fit's priors"
    return (f"{', '.join(only)} drawn from the fit's prior, the other parameters at the "
            "simulation's values (a partial SBC: approximate where the data do not dominate "
            "the others' posteriors)")


def sbc_markdown(name: str, summary: dict) -> str:
    lines = [f"# Simulation-based calibration: {name}", "",
             f"{summary['n']} replicate trials, {_drawn_text(summary)}. Coverage of "
             f"the {100 * summary['level']:g}% equal-tailed intervals (binomial SE); chi-square "
             f"test of the ranks among {SBC_DRAWS} thinned draws in {SBC_BINS} bins; ECDF of "
             "the PITs against the simultaneous 95% band.", "",
             "| parameter | coverage ± SE | rank chi-square p | max ECDF diff | in band |",
             "|---|---|---|---|---|"]
    for r in summary["parameters"]:
        lines.append(f"| {r['parameter']} | {r['coverage']:.3f} ± {r['se_coverage']:.3f} | "
                     f"{r['chi2_p']:.3f} | {r['max_ecdf_diff']:.3f} | "
                     f"{'yes' if r['in_band'] else 'no'} |")
    lines += ["", "Flags: " + ("; ".join(summary["flags"]) if summary["flags"] else "none"), ""]
    return "\n".join(lines)


def plot_sbc(df: pd.DataFrame, path) -> object:
    """sbc.png: per parameter, ECDF of the PITs minus the uniform CDF, with the simultaneous
    95% band (a calibrated fit stays inside it)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_write_bytes
    names = _parameters(df)
    grid, lo, hi = ecdf_band(len(df))
    cols = min(4, len(names))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), dpi=100,
                             sharex=True, sharey=True, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        ecdf = _pit_ecdf(df, name, grid)
        ax.fill_between(grid, lo - grid, hi - grid, color="0.85", lw=0)
        ax.step(grid, ecdf - grid, where="post", color="C0")
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.supxlabel("PIT (posterior CDF at the truth)")
    fig.supylabel("ECDF - uniform")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
