"""Diagnostics of a Bayesian hierarchical fit stored as an ``arviz.InferenceData``.

The functions read the layout the fitter produces:

- ``posterior``: population scalars (dims ``chain, draw``), named by the model spec
  (e.g. ``mu_b, omega_b, sigma`` or ``theta1..theta8, omega11, omega21, omega22, sigma``);
  ``eta`` (dims ``chain, draw, subject, eta_name``), the random effects on the log scale; and
  ``omega_sd`` (dims ``chain, draw, eta_name``), the SD of each eta.
- ``prior`` (optional): the same population scalars drawn from the prior.
- ``sample_stats``: ``diverging``, ``energy`` and optionally ``tree_depth`` / ``depth`` /
  ``reached_max_treedepth`` / ``maxdepth_reached``, ``n_steps`` and ``step_size``.
- ``log_likelihood["y"]`` (dims ``chain, draw, obs``): pointwise log-likelihood.
- ``constant_data["obs_subject"]`` (``obs``): integer index of each observation's subject into the
  ``subject`` coordinate; ``constant_data["censored"]`` (``obs``, bool) is optional.
- ``observed_data["y"]`` and ``posterior_predictive["y"]`` (``chain, draw, obs``) are optional.

Every function is pure. :func:`report` combines them into one JSON-serialisable dict with a list of
human-readable ``problems``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from ..errors import PkpdError

__all__ = [
    "DiagnosticsError",
    "convergence",
    "sampler_stats",
    "shrinkage",
    "prior_posterior_overlap",
    "loo",
    "ppc",
    "vpc_table",
    "population_predictions",
    "add_population_predictive",
    "report",
]

#: Overlap coefficient below which a parameter counts as informed by the data.
INFORMED_OVERLAP = 0.35
#: Posterior SD / prior SD below which a parameter counts as informed by the data.
INFORMED_SD_RATIO = 0.5

_SAMPLE_DIMS = ("chain", "draw")


class DiagnosticsError(PkpdError, ValueError):
    """The InferenceData lacks a group or variable a diagnostic needs, or has the wrong shape."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _group(idata: az.InferenceData, name: str, purpose: str) -> xr.Dataset:
    if name not in idata.groups():
        raise DiagnosticsError(
            f"{purpose} needs the '{name}' group of the InferenceData, which is missing "
            f"(groups present: {', '.join(idata.groups()) or 'none'})"
        )
    return idata[name]


def _var(ds: xr.Dataset, group: str, name: str, purpose: str) -> xr.DataArray:
    if name not in ds.data_vars:
        raise DiagnosticsError(
            f"{purpose} needs variable '{name}' in group '{group}'; "
            f"present: {', '.join(map(str, ds.data_vars)) or 'none'}"
        )
    return ds[name]


def _population_dataset(ds: xr.Dataset, group: str, population: Sequence[str]) -> xr.Dataset:
    """Select the population scalars, checking that each has dims exactly (chain, draw)."""
    if isinstance(population, str):
        population = [population]
    if len(population) == 0:
        raise DiagnosticsError("population is empty; pass the names of the population parameters")
    for name in population:
        da = _var(ds, group, name, "a population diagnostic")
        if tuple(da.dims) != _SAMPLE_DIMS:
            raise DiagnosticsError(
                f"population parameter '{name}' in group '{group}' must have dims "
                f"(chain, draw); got {tuple(da.dims)}"
            )
    return ds[list(population)]


def _draws(da: xr.DataArray) -> np.ndarray:
    """Flatten (chain, draw, ...) to (sample, ...) as a float array."""
    da = da.transpose(*_SAMPLE_DIMS, ...)
    arr = np.asarray(da.values, dtype=float)
    return arr.reshape((-1,) + arr.shape[2:])


def _to_python(obj):
    """Recursively convert numpy scalars/arrays to Python types; non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): _to_python(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_python(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_to_python(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, pd.DataFrame):
        return [_to_python(r) for r in obj.to_dict(orient="records")]
    return obj


def _subject_labels(idata: az.InferenceData, n_subjects: int) -> np.ndarray:
    """Labels of the subject coordinate (from posterior eta if present), else 0..n-1."""
    for group in ("posterior", "constant_data", "log_likelihood"):
        if group in idata.groups() and "subject" in idata[group].coords:
            labels = np.asarray(idata[group].coords["subject"].values)
            if labels.size >= n_subjects:
                return labels
    return np.arange(n_subjects)


# --------------------------------------------------------------------------------------------
# 1. convergence
# --------------------------------------------------------------------------------------------


def convergence(idata: az.InferenceData, population: Sequence[str]) -> pd.DataFrame:
    """Posterior summary and convergence diagnostics of the population parameters.

    Parameters
    ----------
    idata
        Fit result with a ``posterior`` group.
    population
        Names of the population scalars (dims ``chain, draw``), in the order of the output rows.

    Returns
    -------
    pandas.DataFrame
        One row per parameter with columns ``parameter, mean, sd, q5, q95, ess_bulk, ess_tail,
        r_hat, mcse_mean``. ``sd`` uses ``ddof=1``; ``q5``/``q95`` are the 5 % and 95 % sample
        quantiles over all chains; ESS are ``arviz.ess(method="bulk"/"tail")``; ``r_hat`` is the
        rank-normalised split R-hat of ``arviz.rhat(method="rank")``; ``mcse_mean`` is
        ``arviz.mcse(method="mean")``.
    """
    post = _population_dataset(_group(idata, "posterior", "convergence"), "posterior", population)
    ess_bulk = az.ess(post, method="bulk")
    ess_tail = az.ess(post, method="tail")
    r_hat = az.rhat(post, method="rank")
    mcse = az.mcse(post, method="mean")
    rows = []
    for name in population:
        x = _draws(post[name])
        rows.append(
            {
                "parameter": name,
                "mean": float(np.mean(x)),
                "sd": float(np.std(x, ddof=1)) if x.size > 1 else float("nan"),
                "q5": float(np.quantile(x, 0.05)),
                "q95": float(np.quantile(x, 0.95)),
                "ess_bulk": float(ess_bulk[name]),
                "ess_tail": float(ess_tail[name]),
                "r_hat": float(r_hat[name]),
                "mcse_mean": float(mcse[name]),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "parameter",
            "mean",
            "sd",
            "q5",
            "q95",
            "ess_bulk",
            "ess_tail",
            "r_hat",
            "mcse_mean",
        ],
    )


# --------------------------------------------------------------------------------------------
# 2. sampler statistics
# --------------------------------------------------------------------------------------------


def sampler_stats(idata: az.InferenceData, *, max_tree_depth: int = 10) -> dict:
    """Summary of the NUTS sampler statistics.

    Parameters
    ----------
    idata
        Fit result with a ``sample_stats`` group holding at least ``diverging``.
    max_tree_depth
        The sampler's maximum tree depth (PyMC, NumPyro and nutpie default to 10). Used only when
        the sampler did not record a boolean "reached max depth" flag: a draw hits the limit when
        ``tree_depth >= max_tree_depth`` or, from leapfrog counts alone,
        ``n_steps >= 2**max_tree_depth - 1``.

    Returns
    -------
    dict
        ``n_chains, n_draws, n_divergent, n_divergent_per_chain, divergent_fraction,
        bfmi_per_chain, bfmi_min, n_max_tree_depth`` (None if unknown),
        ``n_max_tree_depth_per_chain``, ``mean_step_size`` and ``mean_n_steps`` (mean leapfrog
        steps per draw; None if not recorded). BFMI is ``arviz.bfmi`` (None without ``energy``).
    """
    ss = _group(idata, "sample_stats", "sampler_stats")
    div = _var(ss, "sample_stats", "diverging", "sampler_stats").astype(bool)
    div = div.transpose(*_SAMPLE_DIMS, ...)
    n_chains, n_draws = int(div.sizes["chain"]), int(div.sizes["draw"])
    per_chain = div.values.reshape(n_chains, -1).sum(axis=1).astype(int)
    out: dict = {
        "n_chains": n_chains,
        "n_draws": n_draws,
        "n_divergent": int(per_chain.sum()),
        "n_divergent_per_chain": [int(v) for v in per_chain],
        "divergent_fraction": float(per_chain.sum() / div.size) if div.size else float("nan"),
    }

    if "energy" in ss.data_vars:
        bfmi = np.asarray(az.bfmi(idata), dtype=float)
        out["bfmi_per_chain"] = [float(v) for v in bfmi]
        out["bfmi_min"] = float(np.min(bfmi))
    else:
        out["bfmi_per_chain"] = None
        out["bfmi_min"] = None

    hits = None
    for flag in ("reached_max_treedepth", "maxdepth_reached"):
        if flag in ss.data_vars:
            hits = ss[flag].astype(bool)
            break
    if hits is None:
        for depth in ("tree_depth", "depth"):
            if depth in ss.data_vars:
                hits = ss[depth] >= max_tree_depth
                break
    if hits is None and "n_steps" in ss.data_vars:
        hits = ss["n_steps"] >= 2**max_tree_depth - 1
    if hits is None:
        out["n_max_tree_depth"] = None
        out["n_max_tree_depth_per_chain"] = None
    else:
        h = hits.transpose(*_SAMPLE_DIMS, ...).values.reshape(n_chains, -1).sum(axis=1)
        out["n_max_tree_depth"] = int(h.sum())
        out["n_max_tree_depth_per_chain"] = [int(v) for v in h]

    out["mean_step_size"] = float(ss["step_size"].mean()) if "step_size" in ss.data_vars else None
    out["mean_n_steps"] = float(ss["n_steps"].mean()) if "n_steps" in ss.data_vars else None
    return out


# --------------------------------------------------------------------------------------------
# 3. shrinkage
# --------------------------------------------------------------------------------------------


def shrinkage(idata: az.InferenceData) -> dict[str, float]:
    """Eta-shrinkage of each random effect.

    ``shrinkage_k = 1 - SD_i(E[eta_ik | y]) / E[omega_sd_k | y]``, where ``E[eta_ik | y]`` is the
    posterior mean of subject ``i``'s eta (taking the role of NONMEM's EBE/MAP estimate), the SD
    is taken over subjects with ``ddof=1``, and the denominator is the posterior mean of the
    eta's SD ``omega_sd``. 0 means the data pin each subject down (individual estimates spread as
    much as the population); 1 means all individual estimates collapse onto the population value.
    Values can be slightly negative by chance.

    Returns
    -------
    dict
        ``{eta_name: shrinkage}`` as Python floats.
    """
    post = _group(idata, "posterior", "shrinkage")
    eta = _var(post, "posterior", "eta", "shrinkage")
    omega_sd = _var(post, "posterior", "omega_sd", "shrinkage")
    for da, dims in ((eta, {"subject", "eta_name"}), (omega_sd, {"eta_name"})):
        if set(da.dims) != set(_SAMPLE_DIMS) | dims:
            raise DiagnosticsError(
                f"posterior '{da.name}' must have dims {_SAMPLE_DIMS + tuple(sorted(dims))}; "
                f"got {tuple(da.dims)}"
            )
    if eta.sizes["subject"] < 2:
        raise DiagnosticsError("shrinkage needs at least 2 subjects")
    eta_mean = eta.mean(dim=_SAMPLE_DIMS)
    sd_between = eta_mean.std(dim="subject", ddof=1)
    omega_mean = omega_sd.mean(dim=_SAMPLE_DIMS)
    out: dict[str, float] = {}
    names = eta_mean.coords["eta_name"].values if "eta_name" in eta_mean.coords else None
    for k in range(eta_mean.sizes["eta_name"]):
        name = str(names[k]) if names is not None else str(k)
        sd_k = float(sd_between.isel(eta_name=k))
        om_k = float(
            omega_mean.sel(eta_name=names[k]) if names is not None else omega_mean.isel(eta_name=k)
        )
        out[name] = 1.0 - sd_k / om_k if om_k > 0 else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# 4. prior vs posterior
# --------------------------------------------------------------------------------------------


def _kde_on(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if x.size < 2 or not np.ptp(x) > 0:
        return np.full(grid.shape, np.nan)
    return stats.gaussian_kde(x, bw_method="scott")(grid)


def _overlap_coefficient(prior: np.ndarray, posterior: np.ndarray, n_grid: int = 512) -> float:
    """Overlap coefficient ``integral min(p_prior, p_post)`` from Gaussian KDEs (Scott bandwidth).

    Evaluated by the trapezoid rule on a common grid: the union of a grid spanning the pooled draws
    (padded by 3 bandwidths) and a fine grid on each sample's own range, so that a narrow
    posterior inside a wide prior is still resolved. Parameters whose draws are all positive are
    compared on the log scale (the overlap coefficient is invariant to monotone transforms, and
    log removes the KDE boundary bias at 0).
    """
    prior = prior[np.isfinite(prior)]
    posterior = posterior[np.isfinite(posterior)]
    if prior.size < 2 or posterior.size < 2:
        return float("nan")
    if np.all(prior > 0) and np.all(posterior > 0):
        prior, posterior = np.log(prior), np.log(posterior)
    if not (np.ptp(prior) > 0 and np.ptp(posterior) > 0):
        return float("nan")
    grids = []
    for x in (prior, posterior, np.concatenate([prior, posterior])):
        bw = np.std(x, ddof=1) * x.size ** (-0.2)
        grids.append(np.linspace(x.min() - 3 * bw, x.max() + 3 * bw, n_grid))
    grid = np.unique(np.concatenate(grids))
    dens = np.minimum(_kde_on(prior, grid), _kde_on(posterior, grid))
    return float(np.clip(np.trapezoid(dens, grid), 0.0, 1.0))


def prior_posterior_overlap(
    idata: az.InferenceData,
    population: Sequence[str],
    *,
    overlap_threshold: float = INFORMED_OVERLAP,
    sd_ratio_threshold: float = INFORMED_SD_RATIO,
) -> pd.DataFrame:
    """How far the data moved each population parameter away from its prior.

    Parameters
    ----------
    idata
        Fit result with ``posterior`` and ``prior`` groups holding the population scalars.
    population
        Names of the population parameters, in row order.
    overlap_threshold, sd_ratio_threshold
        Rule for ``informed``: a parameter is informed by the data when
        ``overlap < overlap_threshold`` (default 0.35: the posterior moved away from the prior) or
        ``sd_ratio < sd_ratio_threshold`` (default 0.5: the posterior is at least twice as
        narrow as the prior). Otherwise it is prior-dominated and its estimate largely restates
        the prior.

    Returns
    -------
    pandas.DataFrame
        Columns ``parameter, overlap, sd_ratio, informed``. ``overlap`` is the overlap coefficient
        ``integral min(p_prior, p_posterior)`` in [0, 1] of the marginal densities, estimated by
        Gaussian KDE (Scott bandwidth) on a common grid (log scale for positive parameters).
        ``sd_ratio`` is posterior SD / prior SD on the natural scale.

    Raises
    ------
    DiagnosticsError
        If the ``prior`` group or a parameter in it is missing.
    """
    if "prior" not in idata.groups():
        raise DiagnosticsError(
            "prior_posterior_overlap needs a 'prior' group with draws of the population "
            "parameters; sample the prior (e.g. pm.sample_prior_predictive) and add it to the "
            "InferenceData"
        )
    post = _population_dataset(idata.posterior, "posterior", population)
    prior = _population_dataset(idata.prior, "prior", population)
    rows = []
    for name in population:
        x_prior = _draws(prior[name])
        x_post = _draws(post[name])
        ov = _overlap_coefficient(x_prior, x_post)
        sd_prior = float(np.std(x_prior, ddof=1))
        sd_ratio = float(np.std(x_post, ddof=1)) / sd_prior if sd_prior > 0 else float("nan")
        informed = bool(
            (np.isfinite(ov) and ov < overlap_threshold)
            or (np.isfinite(sd_ratio) and sd_ratio < sd_ratio_threshold)
        )
        rows.append({"parameter": name, "overlap": ov, "sd_ratio": sd_ratio, "informed": informed})
    return pd.DataFrame(rows, columns=["parameter", "overlap", "sd_ratio", "informed"])


# --------------------------------------------------------------------------------------------
# 5. LOO
# --------------------------------------------------------------------------------------------


def _default_reff(posterior: xr.Dataset) -> float:
    """Relative efficiency ESS_mean / n_samples averaged over the low-dimensional posterior vars.

    arviz averages over every posterior variable, which is slow when the posterior holds per-subject
    or per-observation arrays; here only variables with dims (chain, draw) and ``omega_sd`` are
    used. With one chain reff is 1 (as in arviz).
    """
    n_chains = int(posterior.sizes.get("chain", 1))
    if n_chains == 1:
        return 1.0
    names = [
        v
        for v, da in posterior.data_vars.items()
        if tuple(da.dims) == _SAMPLE_DIMS or v == "omega_sd"
    ]
    if not names:
        return 1.0
    n_samples = n_chains * int(posterior.sizes["draw"])
    ess = az.ess(posterior[names], method="mean")
    values = np.hstack([np.asarray(ess[v].values, dtype=float).ravel() for v in names])
    values = values[np.isfinite(values)]
    return float(values.mean() / n_samples) if values.size else 1.0


def _sum_by_subject(ll: np.ndarray, obs_subject: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``ll`` (chain, draw, obs) within subjects: returns (chain, draw, unit) and unit ids."""
    order = np.argsort(obs_subject, kind="stable")
    sorted_subj = obs_subject[order]
    units, starts = np.unique(sorted_subj, return_index=True)
    summed = np.add.reduceat(ll[..., order], starts, axis=-1)
    return summed, units


def loo(
    idata: az.InferenceData,
    by: str = "subject",
    *,
    var_name: str = "y",
    reff: float | None = None,
    k_threshold: float = 0.7,
) -> dict:
    """PSIS-LOO cross-validation (``arviz.loo``) by subject or by observation.

    Parameters
    ----------
    idata
        Fit result with ``log_likelihood[var_name]`` (chain, draw, obs) and, for
        ``by="subject"``, ``constant_data["obs_subject"]``.
    by
        ``"subject"`` (default): leave one patient out. The pointwise log-likelihood is summed
        within each subject so that a unit is a whole patient, the exchangeable unit of a
        hierarchical model. ``"obs"``: leave one observation out.
    var_name
        Log-likelihood variable.
    reff
        Relative MCMC efficiency passed to arviz; default: ESS_mean / n_samples averaged over the
        population scalars and ``omega_sd`` (see ``_default_reff``), 1 for a single chain.
    k_threshold
        Pareto k-hat above which a unit's LOO estimate is unreliable (default 0.7).

    Returns
    -------
    dict
        ``by, n_units, n_samples, elpd_loo, se, p_loo, good_k`` (arviz's sample-size-dependent
        threshold), ``n_pareto_k_above_0.7``, ``n_pareto_k_above_1.0``,
        ``fraction_pareto_k_above_0.7`` (these three use ``k_threshold`` in place of 0.7 if
        given), ``pareto_k_high_units`` (labels of the units above the threshold) and
        ``warnings`` (the messages arviz raised, as strings).
    """
    if by not in ("subject", "obs"):
        raise DiagnosticsError(f"loo: by must be 'subject' or 'obs'; got {by!r}")
    ll_group = _group(idata, "log_likelihood", "loo")
    ll_da = _var(ll_group, "log_likelihood", var_name, "loo")
    if ll_da.ndim != 3:
        raise DiagnosticsError(
            f"log_likelihood '{var_name}' must have dims (chain, draw, obs); got {ll_da.dims}"
        )
    ll_da = ll_da.transpose(*_SAMPLE_DIMS, ...)
    obs_dim = ll_da.dims[2]
    if by == "subject":
        cd = _group(idata, "constant_data", "loo(by='subject')")
        obs_subject = np.asarray(
            _var(cd, "constant_data", "obs_subject", "loo(by='subject')").values
        ).astype(int)
        if obs_subject.shape != (ll_da.sizes[obs_dim],):
            raise DiagnosticsError(
                f"constant_data 'obs_subject' has shape {obs_subject.shape}; expected "
                f"({ll_da.sizes[obs_dim]},) to match log_likelihood '{var_name}'"
            )
        summed, units = _sum_by_subject(np.asarray(ll_da.values, dtype=float), obs_subject)
        labels_all = _subject_labels(idata, int(units.max()) + 1)
        labels = labels_all[units]
        unit_da = xr.DataArray(
            summed,
            dims=("chain", "draw", "subject"),
            coords={
                "chain": ll_da.coords["chain"].values,
                "draw": ll_da.coords["draw"].values,
                "subject": labels,
            },
        )
    else:
        labels = (
            np.asarray(ll_da.coords[obs_dim].values)
            if obs_dim in ll_da.coords
            else np.arange(ll_da.sizes[obs_dim])
        )
        unit_da = ll_da
    if reff is None:
        reff = _default_reff(idata.posterior) if "posterior" in idata.groups() else 1.0
    data = az.InferenceData(log_likelihood=xr.Dataset({var_name: unit_da}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = az.loo(data, pointwise=True, var_name=var_name, reff=reff)
    k = np.asarray(res.pareto_k.values, dtype=float).ravel()
    high = k > k_threshold
    return {
        "by": by,
        "n_units": int(k.size),
        "n_samples": int(res.n_samples),
        "elpd_loo": float(res.elpd_loo),
        "se": float(res.se),
        "p_loo": float(res.p_loo),
        "good_k": float(res.good_k),
        "n_pareto_k_above_0.7": int(high.sum()),
        "n_pareto_k_above_1.0": int((k > 1.0).sum()),
        "fraction_pareto_k_above_0.7": float(high.mean()) if k.size else float("nan"),
        "pareto_k_high_units": [_to_python(v) for v in np.asarray(labels)[high]],
        "warnings": [str(w.message) for w in caught],
    }


# --------------------------------------------------------------------------------------------
# 6. posterior predictive checks
# --------------------------------------------------------------------------------------------


def _censored_mask(idata: az.InferenceData, n_obs: int) -> np.ndarray:
    if "constant_data" in idata.groups() and "censored" in idata.constant_data.data_vars:
        cens = np.asarray(idata.constant_data["censored"].values).astype(bool).ravel()
        if cens.shape != (n_obs,):
            raise DiagnosticsError(
                f"constant_data 'censored' has shape {cens.shape}; expected ({n_obs},)"
            )
        return cens
    return np.zeros(n_obs, dtype=bool)


def _ppc_arrays(
    idata: az.InferenceData, var_name: str, observed: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    observed = observed or var_name
    obs = np.asarray(
        _var(_group(idata, "observed_data", "ppc"), "observed_data", observed, "ppc").values,
        dtype=float,
    ).ravel()
    rep_da = _var(
        _group(idata, "posterior_predictive", "ppc"), "posterior_predictive", var_name, "ppc"
    )
    rep = _draws(rep_da).reshape(-1, obs.size) if rep_da.size else np.empty((0, obs.size))
    if rep.shape[1] != obs.size:
        raise DiagnosticsError(
            f"posterior_predictive '{var_name}' has {rep.shape[1]} observations per draw; "
            f"observed_data has {obs.size}"
        )
    return obs, rep


def _subject_se(idata: az.InferenceData, inside: np.ndarray, use: np.ndarray, target: float):
    """Cluster-robust SE of a coverage fraction, patients as clusters (None without
    ``constant_data.obs_subject``).

    Observations of one patient share its etas, so their coverage indicators are correlated and
    the binomial SE ``sqrt(p (1 - p) / n)`` is too small. With ``c_i`` covered of ``n_i`` used
    observations of patient ``i`` and ``N = sum n_i``: ``SE = sqrt(sum_i (c_i - p n_i)^2) / N``
    at ``p = target`` (the sandwich / ratio-estimator variance; it reduces to the binomial SE
    when every patient has one observation).
    """
    if not ("constant_data" in idata.groups() and "obs_subject" in idata.constant_data):
        return None
    subj = np.asarray(idata.constant_data["obs_subject"].values).astype(int).ravel()
    if subj.shape != use.shape or not use.any():
        return None
    n_i = np.bincount(subj[use], minlength=subj.max() + 1).astype(float)
    c_i = np.bincount(subj[use], weights=inside[use].astype(float), minlength=subj.max() + 1)
    return float(np.sqrt(np.sum((c_i - target * n_i) ** 2)) / n_i.sum())


def ppc(
    idata: az.InferenceData,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    *,
    var_name: str = "y",
    observed: str | None = None,
    chunk: int = 1024,
    return_pit: bool = True,
) -> dict:
    """Posterior predictive check of each observation against its replicated distribution.

    What the replicates condition on decides what the check means. The fitter's
    ``posterior_predictive["y"]`` is drawn from each patient's own posterior etas (individual
    predictions, IPRED + residual): those etas were fitted to the same observations, so the
    coverage of a correct model is *above* the nominal level (typically 95-99 % for a 90 %
    interval with a few points per patient). ``posterior_predictive["y_pop"]``
    (:func:`add_population_predictive`) draws new etas from the population distribution, as a
    VPC does; its coverage of a correct model is close to nominal.

    For each observation ``j``, ``pit_j = mean_s(y_rep[s, j] <= y_obs[j])`` (a posterior
    predictive p-value / probability-integral transform). For a censored observation (``y_obs`` is
    the limit), ``pit_j`` is the predicted probability of censoring ``P(y_rep <= limit)``.

    Coverage uses the predictive interval ``[q(quantiles[0]), q(quantiles[-1])]`` of ``y_rep`` per
    observation (default the central 90 % interval, target 0.90), over uncensored observations
    only; censored observations are counted and summarised by their mean ``P(y_rep <= limit)``.

    Parameters
    ----------
    idata
        Fit result with ``observed_data[var_name]`` and ``posterior_predictive[var_name]``.
    quantiles
        Increasing quantile levels; the first and last bound the interval, a 0.5 entry adds the
        fraction of observations below the predictive median.
    var_name
        Replicated variable in ``posterior_predictive``.
    observed
        Observed variable in ``observed_data`` (default: ``var_name``).
    chunk
        Observations processed at a time (bounds memory for large draw x obs arrays).
    return_pit
        Include the per-observation ``pit`` list.

    Returns
    -------
    dict
        ``n_obs, n_censored, n_used, interval, target_coverage, coverage, coverage_se`` (binomial
        SE at the target), ``coverage_z``, ``coverage_se_subject`` (patients as clusters, see
        ``_subject_se``; None without ``obs_subject``) and ``coverage_z_subject`` (z with the
        larger of the two SEs, so never more alarming than the binomial z),
        ``n_nonfinite_draws`` (non-finite replicates, e.g. failed solves, ignored),
        ``fraction_below, fraction_above`` (outside the
        interval), ``fraction_below_median`` (if 0.5 in ``quantiles``), ``pit_mean``,
        ``censored_mean_p_below_limit`` and, if requested, ``pit``.
    """
    q = np.asarray(quantiles, dtype=float)
    if q.ndim != 1 or q.size < 2 or np.any(np.diff(q) <= 0) or q[0] < 0 or q[-1] > 1:
        raise DiagnosticsError(
            f"ppc: quantiles must be >= 2 increasing levels in [0, 1]; got {tuple(quantiles)}"
        )
    obs, rep = _ppc_arrays(idata, var_name, observed)
    n_obs = obs.size
    if rep.shape[0] == 0:
        raise DiagnosticsError("ppc: posterior_predictive has no draws")
    cens = _censored_mask(idata, n_obs)
    pit, qv, n_bad = _pit_and_quantiles(rep, obs, q, chunk)
    use = ~cens & np.isfinite(obs)
    n_used = int(use.sum())
    lo, hi = qv[0, use], qv[-1, use]
    y = obs[use]
    target = round(float(q[-1] - q[0]), 12)
    below = float(np.mean(y < lo)) if n_used else float("nan")
    above = float(np.mean(y > hi)) if n_used else float("nan")
    inside = (y >= lo) & (y <= hi)
    coverage = float(np.mean(inside)) if n_used else float("nan")
    se = math.sqrt(target * (1 - target) / n_used) if n_used else float("nan")
    inside_all = np.zeros(n_obs, bool)
    inside_all[use] = inside
    se_subj = _subject_se(idata, inside_all, use, target)
    out = {
        "n_obs": int(n_obs),
        "n_censored": int(cens.sum()),
        "n_used": n_used,
        "interval": [float(q[0]), float(q[-1])],
        "target_coverage": target,
        "coverage": coverage,
        "coverage_se": se,
        "coverage_z": (coverage - target) / se if n_used and se > 0 else float("nan"),
        "coverage_se_subject": se_subj,
        "coverage_z_subject": (
            (coverage - target) / max(se_subj, se) if se_subj is not None and se > 0 else None
        ),
        "n_nonfinite_draws": n_bad,
        "fraction_below": below,
        "fraction_above": above,
        "pit_mean": float(np.mean(pit[use])) if n_used else float("nan"),
        "censored_mean_p_below_limit": float(np.mean(pit[cens])) if cens.any() else None,
    }
    median_idx = np.flatnonzero(np.isclose(q, 0.5))
    if median_idx.size and n_used:
        out["fraction_below_median"] = float(np.mean(y < qv[median_idx[0], use]))
    if return_pit:
        out["pit"] = [float(v) for v in pit]
    return out


def _pit_and_quantiles(rep: np.ndarray, obs: np.ndarray, q: np.ndarray, chunk: int):
    """Per observation: PIT, the ``q`` quantiles of the replicates, and how many replicates
    were non-finite (ignored: a failed solve of a draw with extreme new etas)."""
    n_obs = obs.size
    pit = np.empty(n_obs)
    qv = np.empty((q.size, n_obs))
    n_bad = 0
    for start in range(0, n_obs, chunk):
        sl = slice(start, start + chunk)
        block = rep[:, sl]
        ok = np.isfinite(block)
        if ok.all():
            pit[sl] = np.mean(block <= obs[sl], axis=0)
            qv[:, sl] = np.quantile(block, q, axis=0)
            continue
        n_bad += int((~ok).sum())
        block = np.where(ok, block, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pit[sl] = np.sum(block <= obs[sl], axis=0) / np.maximum(ok.sum(axis=0), 1)
            qv[:, sl] = np.nanquantile(block, q, axis=0)
    return pit, qv, n_bad


def _omega_cholesky(spec, post: xr.Dataset) -> np.ndarray:
    """Cholesky factor of Omega per posterior draw, ``(sample, n_eta, n_eta)`` in the order of
    ``spec.etas``: a diagonal eta's SD from ``omega_sd``; an LKJ block from its SDs and
    ``corr_*`` draws; an inverse-Wishart block from its covariance entries (``names``, lower
    triangle row-wise)."""
    etas = list(spec.etas)
    sd = _draws(post["omega_sd"].sel(eta_name=etas))            # (S, n_eta)
    cov = np.zeros(sd.shape + (len(etas),))
    idx = np.arange(len(etas))
    cov[:, idx, idx] = sd**2
    for b in spec.omegas:
        pos = [etas.index(e) for e in b.etas]
        for r in range(1, len(pos)):
            for c in range(r):
                if b.kind == "lkj":
                    nm = (f"corr_{b.etas[r].removeprefix('eta_')}_"
                          f"{b.etas[c].removeprefix('eta_')}")
                    value = _draws(post[nm]) * sd[:, pos[r]] * sd[:, pos[c]]
                else:                                            # invwishart: covariances
                    value = _draws(post[b.names[r * (r + 1) // 2 + c]])
                cov[:, pos[r], pos[c]] = cov[:, pos[c], pos[r]] = value
    return np.linalg.cholesky(cov)


def _population_parameters(problem, post: xr.Dataset, rng: np.random.Generator) -> np.ndarray:
    """Individual parameters ``(sample, subject, param)`` with *new* etas drawn from
    N(0, Omega) of each posterior draw (population parameters, covariates and fixed values as
    fitted): the patients of a VPC, not the fitted ones."""
    spec, data = problem.spec, problem.data
    n = data.n_subjects
    n_s = int(post.sizes["chain"] * post.sizes["draw"])
    env: dict = {k: float(v) for k, v in spec.fixed.items()}
    env.update({c: np.asarray(v, float)[None, :] for c, v in data.covariates.items()})
    for name in spec.thetas:
        env[name] = _draws(post[name])[:, None]
    if spec.etas:
        z = rng.standard_normal((n_s, n, len(spec.etas)))
        eta = np.einsum("sij,snj->sni", _omega_cholesky(spec, post), z)
        env.update({e: eta[:, :, k] for k, e in enumerate(spec.etas)})
    cols = []
    for pname in problem.parameters:
        val = spec.individual[pname].evaluate(env, np) if pname in spec.individual \
            else env[pname]
        cols.append(np.broadcast_to(np.asarray(val, float), (n_s, n)))
    return np.stack(cols, axis=2)


def population_predictions(problem, idata: az.InferenceData, *, seed: int = 0,
                           chunk: int = 64) -> np.ndarray:
    """Population predictive draws ``(chain, draw, obs)``: for each posterior draw, new etas
    from the population distribution, the structural prediction and a residual draw.

    This is the simulation behind a VPC (and NONMEM's ``$SIMULATION`` with new ETAs): it does
    not use the fitted patients' etas. Covariates and dosing are each patient's own.

    Parameters
    ----------
    problem
        The fit's ``pkpd.fit.problem.Problem`` (spec, data and the structural prediction).
    idata
        Posterior with the population parameters, ``omega_sd`` (and the ``corr_*`` or
        covariance entries of correlated blocks) and the residual-error parameters.
    seed
        Seed of the new etas and residual draws.
    chunk
        Posterior draws predicted per vectorised call.

    Returns
    -------
    numpy.ndarray
        Replicated observations in data order (units of the observations); non-finite where
        the prediction failed.
    """
    import jax
    import jax.numpy as jnp

    spec, post = problem.spec, idata.posterior
    rng = np.random.default_rng(seed)
    P = _population_parameters(problem, post, rng)
    roles = problem.residual_roles
    R = np.stack([_draws(post[spec.residual.names[r]]) for r in roles], axis=1)
    R = np.where([spec.residual.variance[r] for r in roles], np.sqrt(R), R)

    def one(p, r):
        f = problem.predict(p)
        sd = problem.resid_sd(f, {role: r[k] for k, role in enumerate(roles)})
        return problem.flat(f), problem.flat(sd)

    fn = jax.jit(jax.vmap(one))
    fs, sds = [], []
    for i in range(0, P.shape[0], chunk):
        j = min(i + chunk, P.shape[0])
        pad = np.r_[np.arange(i, j), np.full(chunk - (j - i), j - 1)]
        with np.errstate(all="ignore"):
            f, sd = fn(jnp.asarray(P[pad]), jnp.asarray(R[pad]))
        fs.append(np.asarray(f)[: j - i])
        sds.append(np.asarray(sd)[: j - i])
    f, sd = np.concatenate(fs), np.concatenate(sds)
    with np.errstate(all="ignore"):
        y = f + sd * rng.standard_normal(f.shape)
    return y.reshape((post.sizes["chain"], post.sizes["draw"], -1))


def add_population_predictive(problem, idata: az.InferenceData, *, seed: int = 0):
    """Add ``posterior_predictive["y_pop"]`` (:func:`population_predictions`) to ``idata``
    (in place; the group is created if missing) and return ``idata``. :func:`report` then
    checks the population (VPC) coverage besides the individual one."""
    y = population_predictions(problem, idata, seed=seed)
    da = xr.DataArray(y, dims=("chain", "draw", "obs"),
                      coords={"chain": idata.posterior.coords["chain"].values,
                              "draw": idata.posterior.coords["draw"].values,
                              "obs": np.arange(y.shape[2])})
    if "posterior_predictive" in idata.groups():
        idata.posterior_predictive["y_pop"] = da
    else:
        idata.add_groups({"posterior_predictive": xr.Dataset({"y_pop": da})})
    return idata


def vpc_table(
    idata: az.InferenceData,
    time: Sequence[float] | np.ndarray,
    bins: int | Sequence[float] = 10,
    *,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    ci: float = 0.90,
    var_name: str = "y",
) -> pd.DataFrame:
    """Visual predictive check table: observed vs simulated percentiles per time bin.

    Parameters
    ----------
    idata
        Fit result with ``observed_data`` and ``posterior_predictive`` ``var_name``.
    time
        Time of each observation (same order as ``obs``; units as in the dataset).
    bins
        Number of bins with equal counts of observations (time quantiles), or explicit bin edges.
    quantiles
        Percentiles to compare.
    ci
        Width of the interval across draws of each simulated percentile.

    Returns
    -------
    pandas.DataFrame
        One row per (bin, quantile): ``bin, time_lo, time_hi, time_median, n_obs, n_censored,
        quantile, observed`` (percentile of uncensored observations, NaN if none),
        ``sim_median, sim_lo, sim_hi`` (median and ``ci`` interval over draws of the percentile of
        all replicated observations in the bin). Censored observations are excluded from the
        observed percentile but not from the simulated ones, so in bins with censoring the
        observed low percentiles are biased upward.
    """
    obs, rep = _ppc_arrays(idata, var_name)
    t = np.asarray(time, dtype=float).ravel()
    if t.shape != obs.shape:
        raise DiagnosticsError(f"vpc_table: time has shape {t.shape}; expected {obs.shape}")
    cens = _censored_mask(idata, obs.size)
    if np.isscalar(bins):
        edges = np.unique(np.quantile(t, np.linspace(0, 1, int(bins) + 1)))
    else:
        edges = np.asarray(bins, dtype=float)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    q = np.asarray(quantiles, dtype=float)
    tail = (1 - ci) / 2
    rows = []
    for b in range(len(edges) - 1):
        in_bin = (idx == b) & (t >= edges[0]) & (t <= edges[-1])
        if not in_bin.any():
            continue
        sim_q = np.quantile(rep[:, in_bin], q, axis=1)  # (quantile, sample)
        ok = in_bin & ~cens
        obs_q = np.quantile(obs[ok], q) if ok.any() else np.full(q.size, np.nan)
        for k, level in enumerate(q):
            rows.append(
                {
                    "bin": b,
                    "time_lo": float(edges[b]),
                    "time_hi": float(edges[b + 1]),
                    "time_median": float(np.median(t[in_bin])),
                    "n_obs": int(in_bin.sum()),
                    "n_censored": int((in_bin & cens).sum()),
                    "quantile": float(level),
                    "observed": float(obs_q[k]),
                    "sim_median": float(np.median(sim_q[k])),
                    "sim_lo": float(np.quantile(sim_q[k], tail)),
                    "sim_hi": float(np.quantile(sim_q[k], 1 - tail)),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 7. report
# --------------------------------------------------------------------------------------------


def report(
    idata: az.InferenceData,
    population: Sequence[str],
    *,
    r_hat_max: float = 1.01,
    ess_min: float = 400.0,
    bfmi_min: float = 0.3,
    pareto_k_max: float = 0.7,
    ppc_z_max: float = 4.0,
    loo_by: str = "subject",
    max_tree_depth: int = 10,
) -> dict:
    """All diagnostics in one JSON-serialisable dict, with a list of human-readable problems.

    Sections are computed when the groups they need exist; otherwise the section is None and the
    reason is listed under ``skipped``. Non-finite floats are written as None (valid JSON).

    Problems flagged (thresholds are keyword arguments):

    - ``r_hat > r_hat_max`` (1.01) or ``ess_bulk``/``ess_tail < ess_min`` (400) per parameter;
    - any divergent transition;
    - ``BFMI < bfmi_min`` (0.3) per chain;
    - draws that hit the maximum tree depth;
    - population predictive (VPC) coverage, from ``posterior_predictive["y_pop"]`` (new etas;
      see :func:`add_population_predictive`), more than ``ppc_z_max`` (4) SEs from its target,
      either way; the SE treats patients as clusters (``_subject_se``);
    - individual predictive coverage (``posterior_predictive["y"]``, each patient's own etas)
      more than ``ppc_z_max`` SEs *below* its target. Above the target is expected of a correct
      model and is not flagged: the etas were fitted to the same observations.

    Listed under ``notes``, not problems: eta-shrinkage above 0.3, prior-dominated parameters,
    and PSIS-LOO units with Pareto ``k-hat > pareto_k_max`` (0.7). A high k-hat says that the
    importance-sampling approximation of that unit's leave-out posterior is unreliable, not
    that the model misfits (Vehtari, Gelman & Gabry 2017): leaving out a whole patient removes
    all the data on its etas, so with a few observations per patient it is the rule in
    hierarchical models. Compare such models by k-fold / leave-one-patient-out refits.

    Returns
    -------
    dict
        ``convergence`` (list of row dicts), ``sampler``, ``shrinkage``,
        ``prior_posterior`` (list of row dicts), ``loo``, ``ppc`` (individual, without the
        per-observation ``pit``; ``kind`` "individual"), ``ppc_population`` (None without
        ``y_pop``; ``kind`` "population"), ``problems``, ``notes``, ``skipped``,
        ``thresholds``.
    """
    problems: list[str] = []
    notes: list[str] = []
    skipped: dict[str, str] = {}
    out: dict = {
        "thresholds": {
            "r_hat_max": r_hat_max,
            "ess_min": ess_min,
            "bfmi_min": bfmi_min,
            "pareto_k_max": pareto_k_max,
            "ppc_z_max": ppc_z_max,
        }
    }
    out["convergence"] = _report_convergence(idata, population, r_hat_max, ess_min, problems)
    out["sampler"] = _report_sampler(idata, max_tree_depth, bfmi_min, problems, skipped)
    out["shrinkage"] = _report_shrinkage(idata, notes, skipped)
    out["prior_posterior"] = _report_prior_posterior(idata, population, notes, skipped)
    out["loo"] = _report_loo(idata, loo_by, pareto_k_max, notes, skipped)
    out["ppc"] = _report_ppc(idata, ppc_z_max, problems, skipped)
    out["ppc_population"] = _report_ppc_population(idata, ppc_z_max, problems)
    out["problems"] = problems
    out["notes"] = notes
    out["skipped"] = skipped
    return _to_python(out)


def _report_convergence(
    idata: az.InferenceData,
    population: Sequence[str],
    r_hat_max: float,
    ess_min: float,
    problems: list[str],
) -> pd.DataFrame:
    """`report` section: the convergence table; R-hat and ESS problems are appended."""
    conv = convergence(idata, population)
    for row in conv.itertuples(index=False):
        if not np.isfinite(row.r_hat) or row.r_hat > r_hat_max:
            problems.append(f"r_hat {row.r_hat:.3f} > {r_hat_max} for {row.parameter}")
        for col in ("ess_bulk", "ess_tail"):
            value = getattr(row, col)
            if not np.isfinite(value) or value < ess_min:
                problems.append(f"{col} {value:.0f} < {ess_min:.0f} for {row.parameter}")
    return conv


def _report_sampler(
    idata: az.InferenceData,
    max_tree_depth: int,
    bfmi_min: float,
    problems: list[str],
    skipped: dict[str, str],
) -> dict | None:
    """`report` section: sampler statistics; divergences, low BFMI and tree-depth hits are
    problems. None (and a ``skipped`` entry) without ``sample_stats.diverging``."""
    if not ("sample_stats" in idata.groups() and "diverging" in idata.sample_stats.data_vars):
        skipped["sampler"] = "no sample_stats.diverging"
        return None
    ss = sampler_stats(idata, max_tree_depth=max_tree_depth)
    if ss["n_divergent"] > 0:
        per = ", ".join(f"chain {c}: {n}" for c, n in enumerate(ss["n_divergent_per_chain"]))
        problems.append(
            f"{ss['n_divergent']} divergent transitions "
            f"({100 * ss['divergent_fraction']:.2f}% of draws; {per})"
        )
    for c, value in enumerate(ss["bfmi_per_chain"] or []):
        if value < bfmi_min:
            problems.append(f"BFMI {value:.2f} < {bfmi_min} in chain {c}")
    if ss["n_max_tree_depth"]:
        problems.append(
            f"{ss['n_max_tree_depth']} draws hit the maximum tree depth ({max_tree_depth})"
        )
    return ss


def _report_shrinkage(
    idata: az.InferenceData, notes: list[str], skipped: dict[str, str]
) -> dict | None:
    """`report` section: eta-shrinkage (above 30% is noted); None without eta / omega_sd."""
    post = idata.posterior
    if not ("eta" in post.data_vars and "omega_sd" in post.data_vars):
        skipped["shrinkage"] = "no posterior eta / omega_sd"
        return None
    shr = shrinkage(idata)
    for name, value in shr.items():
        if np.isfinite(value) and value > 0.3:
            notes.append(
                f"eta-shrinkage {100 * value:.0f}% > 30% for {name}: individual estimates "
                "are pulled to the population; EBE-based plots are unreliable"
            )
    return shr


def _report_prior_posterior(
    idata: az.InferenceData,
    population: Sequence[str],
    notes: list[str],
    skipped: dict[str, str],
) -> pd.DataFrame | None:
    """`report` section: prior/posterior overlap (prior-dominated parameters are noted); None
    without a prior group holding every population parameter."""
    if not ("prior" in idata.groups() and all(p in idata.prior.data_vars for p in population)):
        skipped["prior_posterior"] = "no prior group with all population parameters"
        return None
    ppo = prior_posterior_overlap(idata, population)
    weak = [r.parameter for r in ppo.itertuples(index=False) if not r.informed]
    if weak:
        notes.append(f"prior-dominated (not informed by the data): {', '.join(weak)}")
    return ppo


def _report_loo(
    idata: az.InferenceData,
    loo_by: str,
    pareto_k_max: float,
    notes: list[str],
    skipped: dict[str, str],
) -> dict | None:
    """`report` section: PSIS-LOO; None without the log-likelihood (or, by subject, without
    ``constant_data.obs_subject``). Units with high Pareto k-hat are a note, not a problem: the
    PSIS estimate of their elpd is unreliable, which says nothing about the model's fit."""
    has_ll = "log_likelihood" in idata.groups() and "y" in idata.log_likelihood.data_vars
    has_subj = "constant_data" in idata.groups() and "obs_subject" in idata.constant_data
    if not (has_ll and (loo_by == "obs" or has_subj)):
        skipped["loo"] = "no log_likelihood.y" if not has_ll else "no constant_data.obs_subject"
        return None
    lo = loo(idata, by=loo_by, k_threshold=pareto_k_max)
    n_high = lo["n_pareto_k_above_0.7"]
    lo["reliable"] = n_high == 0
    if n_high:
        notes.append(loo_note(n_high, lo["n_units"], loo_by, pareto_k_max))
    return lo


def loo_note(n_high: int, n_units: int, by: str, pareto_k_max: float = 0.7) -> str:
    """The report's sentence on PSIS-LOO units with Pareto k-hat above ``pareto_k_max``."""
    if by == "subject":
        what = (f"PSIS-LOO, leave one patient out: Pareto k-hat > {pareto_k_max} for {n_high} "
                f"of {n_units} patients, so this elpd_loo is not reliable. Expected in a "
                "hierarchical model with few observations per patient (leaving a patient out "
                "removes all the data on its etas); it diagnoses the importance-sampling "
                "approximation, not the model")
    else:
        what = (f"PSIS-LOO, leave one observation out: Pareto k-hat > {pareto_k_max} for "
                f"{n_high} of {n_units} observations, so this elpd_loo is not reliable. Common "
                "with few observations per patient (each one moves its patient's etas); it "
                "diagnoses the importance-sampling approximation, not the model")
    return what + ". Compare models by k-fold or leave-one-patient-out refits instead"


def _report_ppc(
    idata: az.InferenceData, ppc_z_max: float, problems: list[str], skipped: dict[str, str]
) -> dict | None:
    """`report` section: individual posterior predictive check (each patient's own etas),
    without ``pit``; under-coverage is a problem, over-coverage is expected. None without
    ``posterior_predictive.y`` and ``observed_data.y``."""
    has_pp = (
        "posterior_predictive" in idata.groups()
        and "observed_data" in idata.groups()
        and "y" in idata.posterior_predictive.data_vars
        and "y" in idata.observed_data.data_vars
    )
    if not has_pp:
        skipped["ppc"] = "no posterior_predictive.y / observed_data.y"
        return None
    pc = ppc(idata, return_pit=False)
    pc["kind"] = "individual"
    z = _coverage_z(pc)
    if np.isfinite(z) and z < -ppc_z_max:
        problems.append(coverage_problem(pc, z))
    return pc


def _report_ppc_population(
    idata: az.InferenceData, ppc_z_max: float, problems: list[str]
) -> dict | None:
    """`report` section: population (VPC) predictive check from ``posterior_predictive.y_pop``
    (new etas); coverage off target either way is a problem. None without ``y_pop``."""
    if not ("posterior_predictive" in idata.groups()
            and "y_pop" in idata.posterior_predictive.data_vars
            and "observed_data" in idata.groups()
            and "y" in idata.observed_data.data_vars):
        return None
    pc = ppc(idata, var_name="y_pop", observed="y", return_pit=False)
    pc["kind"] = "population"
    z = _coverage_z(pc)
    if np.isfinite(z) and abs(z) > ppc_z_max:
        problems.append(coverage_problem(pc, z))
    return pc


def _coverage_z(pc: dict) -> float:
    """The coverage z-score with patients as clusters when known, else the binomial one."""
    z = pc.get("coverage_z_subject")
    return float(z) if z is not None else float(pc["coverage_z"])


def coverage_problem(pc: dict, z: float) -> str:
    """The report's sentence for a predictive coverage off target (``pc`` from :func:`ppc`)."""
    kind = pc.get("kind", "individual")
    what = ("population (VPC, new etas)" if kind == "population"
            else "individual (own etas)")
    return (f"{100 * pc['target_coverage']:.0f}% {what} predictive interval covers "
            f"{100 * pc['coverage']:.1f}% of {pc['n_used']} observations ({z:+.1f} SE from "
            "target)")
