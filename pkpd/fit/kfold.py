"""Model choice by k-fold and leave-one-patient-out (LOPO) cross-validation.

``pkpd compare-models fits/A fits/B ...`` refits each model k times, each time without one fold of
*patients* (never single observations), and scores every held-out patient by the log of their
population predictive density::

    elpd_i = log( 1/(N S) sum_s sum_m p(y_i | theta_s, eta_sm) ),   eta_sm ~ N(0, Omega_s)

over the N posterior draws ``theta_s`` of the fold's refit and S new etas per draw (Monte Carlo,
:func:`pkpd.fit.diagnostics._population_parameters`, the code behind the population VPC). The
held-out patient's own etas are never fitted: this is the predictive density of a new patient,
which is what PSIS-LOO per observation cannot give (it conditions on the patient's etas, and its
Pareto k-hat is > 0.7 for most patients with a few observations each).

Folds are stratified by arm when the data have arms and depend only on the subjects, arms, k and
seed, so every model fitted to the same data gets the same folds (paired comparison). With
``k`` equal to the number of subjects the result is LOPO.

Output folder (``out``)::

    LABEL/fold{j}.json   one finished fold: its held-out patients' elpd and how it was made
                         (written atomically when the fold is done; a rerun skips it)
    LABEL/elpd.csv       subject, fold, elpd, mc_se (all folds), when all are done
    compare.csv, compare.json, pointwise.csv   the comparison (compare_models)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FitInterrupted, PkpdError, SpecError
from ..io import atomic_write_csv, atomic_write_text
from .data import FitData

__all__ = ["kfold", "compare_models", "assign_folds", "holdout_elpd", "subset_data",
           "KfoldResult", "COMPARE_COLUMNS", "main_cli"]

#: columns of the comparison table (as arviz.compare, without weights)
COMPARE_COLUMNS = ["model", "rank", "elpd_kfold", "se", "elpd_diff", "dse", "n_subjects", "k"]
#: fold-file format; a fold file with another version is recomputed
_FOLD_VERSION = 1


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


# ---- folds ------------------------------------------------------------------------------------
def assign_folds(subjects, arms=None, k: int = 10, seed: int = 0) -> np.ndarray:
    """Fold (0 .. k-1) of each subject: a random partition, stratified by arm.

    Within each arm (sorted by name) the subjects are shuffled with ``seed``; the arms are then
    laid end to end and dealt round-robin into the folds, so that every fold holds
    ``n/k`` subjects (+- 1) and each arm's count differs by at most one between folds. The result
    depends only on the subject names, arms, ``k`` and ``seed``.

    Parameters
    ----------
    subjects : sequence of str
        Subject identifiers (unique).
    arms : sequence of str or None
        Arm of each subject, or None (one stratum).
    k : int
        Number of folds, 2 to the number of subjects (= leave one patient out).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    numpy.ndarray of int, one fold per subject (in the order of ``subjects``)
    """
    subjects = [str(s) for s in subjects]
    n = len(subjects)
    if len(set(subjects)) != n:
        raise PkpdError("assign_folds: subject identifiers are not unique. Fix: give each patient "
                        "one identifier")
    if not isinstance(k, (int, np.integer)) or not 2 <= k <= n:
        raise PkpdError(f"k = {k!r} folds for {n} patients: k must be an integer from 2 to {n} "
                        f"(k = {n} leaves one patient out). Fix: choose k in that range")
    arms = ["" for _ in subjects] if arms is None else [str(a) for a in arms]
    if len(arms) != n:
        raise PkpdError(f"assign_folds: {len(arms)} arms for {n} subjects. Fix: give one arm per "
                        "subject")
    rng = np.random.default_rng(seed)
    order = []
    for arm in sorted(set(arms)):
        idx = np.array([i for i, a in enumerate(arms) if a == arm])
        order.extend(idx[rng.permutation(idx.size)])
    fold = np.empty(n, int)
    fold[np.asarray(order, int)] = np.arange(n) % k
    return fold


def subset_data(data: FitData, keep) -> FitData:
    """The same data restricted to the subjects where ``keep`` (bool per subject) is True.

    Subjects keep their order; observations, covariates, arms, per-subject arrays in ``meta``,
    time-varying exposure records and (PK fits) the event records are filtered. The subset's
    ``sha256`` is that of the full data and the kept subjects.
    """
    keep = np.asarray(keep, bool)
    if keep.shape != (data.n_subjects,) or not keep.any():
        raise PkpdError("subset_data: keep must be one bool per subject, at least one True")
    new_index = np.cumsum(keep) - 1
    obs = keep[data.obs_subject]
    subjects = [s for s, kp in zip(data.subjects, keep, strict=True) if kp]
    events = data.events
    if events is not None:
        from ..dosing.events import EventTable
        df = events.df[events.df["ID"].astype(str).isin(subjects)].reset_index(drop=True)
        events = EventTable(df, time_unit=events.time_unit, amt_unit=events.amt_unit,
                            dv_unit=events.dv_unit)
    h = hashlib.sha256((data.sha256 + "\n" + "\n".join(subjects)).encode()).hexdigest()
    meta = {k: (np.asarray(v)[keep] if isinstance(v, np.ndarray) and v.shape[:1] == keep.shape
                else v) for k, v in data.meta.items() if k != "simulated"}
    extra = {}
    ex = getattr(data, "exposure", None)             # time-varying exposure records, if any
    if isinstance(ex, dict) and "subject" in ex:
        sel = keep[np.asarray(ex["subject"], int)]
        extra["exposure"] = {k: (new_index[np.asarray(v, int)[sel]] if k == "subject"
                                 else np.asarray(v)[sel]) for k, v in ex.items()}
    return replace(
        data, subjects=subjects, obs_subject=new_index[data.obs_subject[obs]],
        obs_time=data.obs_time[obs], y=data.y[obs], censored=data.censored[obs],
        covariates={c: np.asarray(v)[keep] for c, v in data.covariates.items()},
        arms=None if data.arms is None else [a for a, kp in zip(data.arms, keep, strict=True)
                                             if kp],
        rows=None, sha256=h, events=events,
        obs_row=None if data.obs_row is None else np.asarray(data.obs_row)[obs], meta=meta,
        **extra)


# ---- the held-out patients' predictive density ------------------------------------------------
def _tiled_posterior(post, idx: np.ndarray, n_mc: int):
    """The posterior draws ``idx`` (flat sample index), each repeated ``n_mc`` times, as one
    chain: the input of :func:`~pkpd.fit.diagnostics._population_parameters` for S new etas
    per draw. Only scalar-per-draw variables and ``omega_sd`` are kept."""
    import xarray as xr
    out = {}
    for name, da in post.data_vars.items():
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if extra and name != "omega_sd":
            continue
        da = da.transpose("chain", "draw", *extra)
        a = np.asarray(da.values, float).reshape((-1,) + da.shape[2:])[idx]
        a = np.repeat(a, n_mc, axis=0)[None]
        out[name] = xr.DataArray(a, dims=("chain", "draw", *extra),
                                 coords={d: da.coords[d].values for d in extra if d in da.coords})
    return xr.Dataset(out)


def _residual_sds(problem, post, idx: np.ndarray) -> np.ndarray:
    """Residual-error SDs ``(sample, role)`` of the posterior draws ``idx``."""
    spec = problem.spec
    roles = problem.residual_roles
    cols = []
    for r in roles:
        da = post[spec.residual.names[r]].transpose("chain", "draw")
        v = np.asarray(da.values, float).reshape(-1)[idx]
        cols.append(np.sqrt(v) if spec.residual.variance[r] else v)
    return np.stack(cols, axis=1)


@dataclass
class _Scorer:
    """Jitted per-subject log-likelihood of a held-out problem, padded to fixed batch sizes."""

    problem: object
    batch: int = 256

    def __post_init__(self):
        import jax
        problem = self.problem
        onehot = np.zeros((problem.data.n_obs, problem.data.n_subjects))
        onehot[np.arange(problem.data.n_obs), problem.data.obs_subject] = 1.0
        self.onehot = onehot

        def one(p, r):
            rd = {role: r[k] for k, role in enumerate(problem.residual_roles)}
            return problem.pointwise(p, rd)

        self.fn = jax.jit(jax.vmap(one))

    def __call__(self, P: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Per-subject log-likelihood ``(sample, subject)``; -inf where a prediction failed."""
        import jax.numpy as jnp
        out = []
        for i in range(0, P.shape[0], self.batch):
            j = min(i + self.batch, P.shape[0])
            pad = np.r_[np.arange(i, j), np.full(self.batch - (j - i), j - 1)]
            with np.errstate(all="ignore"):
                lp = np.asarray(self.fn(jnp.asarray(P[pad]), jnp.asarray(R[pad])))[: j - i]
            bad = ~np.isfinite(lp)
            lp = np.where(bad, 0.0, lp)
            ll = lp @ self.onehot
            ll[(bad.astype(float) @ self.onehot) > 0] = -np.inf
            out.append(ll)
        return np.concatenate(out)


def _log_mean_exp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.mean(np.exp(a - m), axis=axis)) + np.squeeze(m, axis)


def holdout_elpd(problem, idata, *, n_mc: int = 100, seed: int = 0,
                 max_draws: int | None = None, chunk: int = 4096) -> pd.DataFrame:
    """Log population predictive density of each patient of ``problem`` (held out of the fit).

    For each posterior draw, ``n_mc`` new etas are drawn from N(0, Omega) (the population
    predictive draws of :mod:`pkpd.fit.diagnostics`), the patient's log-likelihood of all their
    observations (residual model and M3 censoring as in the fit) is computed, and

        elpd_i = log mean over draws and etas of exp(log-likelihood).

    Parameters
    ----------
    problem : pkpd.fit.problem.Problem
        Likelihood of the held-out patients (:func:`pkpd.fit.build_problem` on their data).
    idata : arviz.InferenceData
        Posterior of a fit *without* these patients (population parameters, ``omega_sd`` and
        correlation or covariance entries, residual parameters).
    n_mc : int
        New etas per posterior draw (S).
    seed : int
        Seed of the new etas.
    max_draws : int or None
        Use at most this many posterior draws (evenly thinned); None: all.
    chunk : int
        Posterior draws x etas evaluated per batch (memory).

    Returns
    -------
    pandas.DataFrame
        ``subject``, ``elpd`` (log density of the patient's observations in the data's unit,
        summed over them) and ``mc_se`` (delta-method Monte Carlo SE of ``elpd``), one row per
        patient. A patient whose every draw fails to predict gets ``elpd = -inf``.
    """
    from .diagnostics import _population_parameters
    post = idata.posterior
    n_post = int(post.sizes["chain"] * post.sizes["draw"])
    draws = np.arange(n_post)
    if max_draws is not None and max_draws < n_post:
        draws = np.unique(np.linspace(0, n_post - 1, max_draws).round().astype(int))
    rng = np.random.default_rng(seed)
    scorer = _Scorer(problem)
    per = max(1, chunk // n_mc)
    lik = []                                       # (posterior draw, subject): log mean_m
    sq = []                                        # log mean_m of the squared likelihood
    for i in range(0, draws.size, per):
        idx = draws[i:i + per]
        P = _population_parameters(problem, _tiled_posterior(post, idx, n_mc), rng)
        R = np.repeat(_residual_sds(problem, post, idx), n_mc, axis=0)
        ll = scorer(P, R).reshape(idx.size, n_mc, -1)
        lik.append(ll)
    ll = np.concatenate(lik).reshape(-1, problem.data.n_subjects)   # all draws x etas
    elpd = _log_mean_exp(ll, 0)
    sq = _log_mean_exp(2 * ll, 0)
    with np.errstate(invalid="ignore", over="ignore"):
        rel_var = np.expm1(sq - 2 * elpd) / ll.shape[0]             # var(L) / (n mean(L)^2)
    mc_se = np.sqrt(np.maximum(rel_var, 0.0))
    return pd.DataFrame({"subject": list(problem.data.subjects), "elpd": elpd, "mc_se": mc_se})


# ---- spec and data of a fit folder ------------------------------------------------------------
def _spec_and_data(source, overrides: dict | None):
    """Spec (with the refit overrides), the full data, and the label/record of ``source`` (a fit
    folder or a spec file)."""
    from .run import load_fit, prepare
    from .spec import load_spec
    src = Path(source)
    record = None
    if src.is_dir():
        record = load_fit(src).record
        cands = []
        if record.get("spec"):
            cands += [Path(record["spec"]), src.parent / Path(record["spec"]).name]
        cands.append(src / "spec.toml")
        tried = []
        for c in cands:
            if not c.is_file():
                tried.append(f"{c} (missing)")
                continue
            spec = load_spec(c, overrides=overrides)
            if record.get("spec_sha256") and spec.sha256() != record["spec_sha256"]:
                tried.append(f"{c} (changed since the fit)")
                continue
            try:
                spec, data, *_ = prepare(spec)
            except (PkpdError, OSError) as exc:
                tried.append(f"{c} ({' '.join(str(exc).split())[:120]})")
                continue
            break
        else:
            raise SpecError(f"{src}: cannot find the spec this fit was run from (tried "
                            f"{'; '.join(tried)}). Fix: give the spec TOML instead of the "
                            "folder, with its data where the spec says")
        label = src.name
    elif src.is_file():
        spec, data, *_ = prepare(load_spec(src, overrides=overrides))
        label = spec.name
    else:
        raise SpecError(f"{src} does not exist. Fix: give a fit folder (fits/NAME) or a spec "
                        "(fits/NAME.toml)")
    if record is not None and record.get("data_sha256") not in (None, "", data.sha256):
        raise PkpdError(f"{src}: the data now read (sha256 {data.sha256[:12]}) differ from the "
                        f"data of the fit (sha256 {record['data_sha256'][:12]}). Fix: restore "
                        "the fit's data file, or refit the model on the current data")
    return spec, data, label


# ---- k-fold -----------------------------------------------------------------------------------
@dataclass
class KfoldResult:
    """k-fold cross-validation of one model: per-patient elpd and the total with its SE."""

    label: str
    pointwise: pd.DataFrame          # subject, fold, elpd, mc_se
    k: int
    seed: int
    data_sha256: str

    @property
    def elpd(self) -> float:
        return float(self.pointwise["elpd"].sum())

    @property
    def se(self) -> float:
        e = self.pointwise["elpd"].to_numpy(float)
        return float(np.sqrt(e.size) * np.std(e, ddof=1)) if e.size > 1 else float("nan")

    def __repr__(self) -> str:
        return (f"KfoldResult({self.label!r}, k={self.k}, elpd={self.elpd:.2f}, "
                f"se={self.se:.2f}, {len(self.pointwise)} patients)")


def _fold_key(spec, data, k, seed, overrides, n_mc, max_draws) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec.raw, "data": data.sha256, "k": k, "seed": seed,
                         "overrides": overrides or {}, "n_mc": n_mc, "max_draws": max_draws,
                         "version": _FOLD_VERSION}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _read_fold(file: Path, key: str) -> pd.DataFrame | None:
    try:
        rec = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key or "patients" not in rec:
        return None
    df = pd.DataFrame(rec["patients"])
    df["elpd"] = pd.to_numeric(df["elpd"]).astype(float).fillna(-np.inf)
    return df


def _run_fold(spec, data, folds, j, work: Path, seed, n_mc, max_draws) -> pd.DataFrame:
    """Refit without fold ``j`` and score its patients."""
    from .folders import FitFolders, remove_ours
    from .problem import build_problem
    from .run import fit
    test = folds == j
    res = fit(spec, out=work / f"fold{j}", data=subset_data(data, ~test), write=False,
              progress=False)
    held = subset_data(data, test)
    table = holdout_elpd(build_problem(spec, held), res.idata, n_mc=n_mc,
                         seed=seed * 7919 + j, max_draws=max_draws)
    table.insert(1, "fold", j)
    remove_ours(FitFolders.at(work / f"fold{j}").partial, "partial")
    return table


def kfold(fit_folder_or_spec, k: int = 10, seed: int = 0, overrides: dict | None = None,
          progress: bool = True, out=None, *, n_mc: int = 100,
          max_draws: int | None = None) -> KfoldResult:
    """k-fold (or leave-one-patient-out) cross-validated elpd of one model.

    Parameters
    ----------
    fit_folder_or_spec : path
        A fit folder written by :func:`pkpd.fit.fit` (its spec is found from ``fit.json``) or a
        spec TOML.
    k : int
        Folds of patients (stratified by arm); ``k`` = number of patients gives LOPO.
    seed : int
        Seed of the folds (the same for every model: paired comparisons) and of the new etas.
    overrides : dict or None
        Sampler settings for the refits, e.g. ``{"chains": 2, "tune": 300, "draws": 300}``.
    progress : bool
        One line per fold on stderr.
    out : path or None
        Folder for the fold files (``fold{j}.json``, resumable) and ``elpd.csv``; None: a
        temporary folder, removed afterwards.
    n_mc : int
        New etas per posterior draw (S).
    max_draws : int or None
        Posterior draws of each refit used for scoring (thinned); None: all.

    Returns
    -------
    KfoldResult
        ``pointwise`` (subject, fold, elpd, mc_se; elpd in log density units of the data), ``elpd``
        (sum) and ``se`` (sqrt(n) x SD of the per-patient elpd).
    """
    spec, data, label = _spec_and_data(fit_folder_or_spec, overrides)
    return _kfold(spec, data, label, k, seed, overrides, progress, out, n_mc, max_draws)


def _kfold(spec, data, label, k, seed, overrides, progress, out, n_mc, max_draws):
    folds = assign_folds(data.subjects, data.arms, k, seed)
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="pkpd-kfold-")
        work = Path(tmp.name)
    else:
        work = Path(out)
        work.mkdir(parents=True, exist_ok=True)
    key = _fold_key(spec, data, k, seed, overrides, n_mc, max_draws)
    try:
        parts = []
        for j in range(k):
            file = work / f"fold{j}.json"
            done = _read_fold(file, key) if file.exists() else None
            if done is not None:
                _log(f"kfold {label}: fold {j + 1}/{k} done before (resumed from {file})",
                     progress)
                parts.append(done)
                continue
            t = time.perf_counter()
            try:
                table = _run_fold(spec, data, folds, j, work, seed, n_mc, max_draws)
            except FitInterrupted:
                raise FitInterrupted(f"kfold {label}: interrupted in fold {j + 1}/{k}; "
                                     f"{len(parts)} finished fold(s) kept in {work}; run the "
                                     "same command again to resume") from None
            dt = time.perf_counter() - t
            rec = {"key": key, "label": label, "fold": j, "k": k, "seed": seed,
                   "seconds": dt, "data_sha256": data.sha256,
                   "patients": [{"subject": s, "fold": j, "elpd": _num(e), "mc_se": _num(m)}
                                for s, e, m in zip(table["subject"], table["elpd"],
                                                   table["mc_se"], strict=True)]}
            if out is not None:
                atomic_write_text(file, json.dumps(rec, indent=1))
            parts.append(table)
            _log(f"kfold {label}: fold {j + 1}/{k}: {int((folds == j).sum())} held-out "
                 f"patient(s), elpd {table['elpd'].sum():.2f}, {dt:.0f} s", progress)
    finally:
        if tmp is not None:
            tmp.cleanup()
    order = {s: i for i, s in enumerate(data.subjects)}
    pw = pd.concat(parts, ignore_index=True)
    pw = pw.iloc[np.argsort([order[s] for s in pw["subject"]])].reset_index(drop=True)
    result = KfoldResult(label, pw[["subject", "fold", "elpd", "mc_se"]], k, seed, data.sha256)
    if out is not None:
        atomic_write_csv(result.pointwise, work / "elpd.csv", float_format="%.6g")
    return result


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


# ---- comparing models -------------------------------------------------------------------------
def _labels(sources) -> list[str]:
    names = [Path(s).stem if Path(s).is_file() else Path(s).name for s in sources]
    out = []
    for i, n in enumerate(names):
        out.append(n if names.count(n) == 1 else f"{n}#{i + 1}")
    return out


def _check_same_data(sources) -> None:
    """All fits used the same data file (``data_sha256`` of fit.json) and the same patients."""
    from .run import load_fit
    seen = None
    for src in sources:
        if not Path(src).is_dir():
            continue
        sha = load_fit(src).record.get("data_sha256", "")
        if seen is None:
            seen = (src, sha)
        elif sha != seen[1]:
            raise PkpdError(
                f"{src} was fitted to other data than {seen[0]} (data sha256 {sha[:12]} vs "
                f"{seen[1][:12]}): cross-validated elpds of different data cannot be compared. "
                "Fix: fit every model to the same data file, or compare only the fits that "
                "share it")


def compare_models(folders, k: int = 10, seed: int = 0, overrides: dict | None = None,
                   progress: bool = True, out=None, *, n_mc: int = 100,
                   max_draws: int | None = None) -> pd.DataFrame:
    """Rank models fitted to the same data by k-fold (or LOPO) cross-validated elpd.

    Parameters
    ----------
    folders : sequence of paths
        Fit folders (or spec files) of two or more models of the same data.
    k, seed, overrides, n_mc, max_draws
        As :func:`kfold`; every model gets the same folds (paired).
    progress : bool
        One line per fold on stderr.
    out : path or None
        Results folder: one subfolder per model (resumable fold files), ``compare.csv``,
        ``compare.json`` and ``pointwise.csv`` (subject, fold, one elpd column per model).

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARE_COLUMNS`, best model first: ``elpd_kfold`` (sum of the held-out patients'
        log predictive densities), ``se`` (sqrt(n) x SD of the per-patient elpd), ``elpd_diff``
        (this model minus the best, <= 0) and ``dse`` (SE of that difference from the paired
        per-patient differences, sqrt(n) x SD). No weights.

    Raises
    ------
    PkpdError
        When the fits used different data (both sha256 named) or different patients.
    """
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise PkpdError("compare-models needs two or more fits. Fix: give the fit folders of the "
                        "models to compare, e.g. fits/A fits/B")
    labels = _labels(folders)
    _check_same_data(folders)
    loaded = [_spec_and_data(f, overrides) for f in folders]
    first = loaded[0][1]
    for f, (_, data, _) in zip(folders[1:], loaded[1:], strict=True):
        if data.sha256 != first.sha256 or list(data.subjects) != list(first.subjects):
            raise PkpdError(
                f"{f} and {folders[0]} have different data or patients after their data rules "
                f"(data sha256 {data.sha256[:12]} vs {first.sha256[:12]}): elpds are not "
                "paired. Fix: fit every model to the same data file with the same [data] rules")
    results = []
    for (spec, data, _), lab in zip(loaded, labels, strict=True):
        sub = None if out is None else Path(out) / lab
        results.append(_kfold(spec, data, lab, k, seed, overrides, progress, sub, n_mc,
                              max_draws))
    table, pointwise = _table(results, labels, k)
    if out is not None:
        atomic_write_csv(table, Path(out) / "compare.csv", float_format="%.6g")
        atomic_write_csv(pointwise, Path(out) / "pointwise.csv", float_format="%.6g")
        atomic_write_text(Path(out) / "compare.json", json.dumps({
            "k": k, "seed": seed, "overrides": overrides or {}, "n_mc": n_mc,
            "max_draws": max_draws, "data_sha256": results[0].data_sha256,
            "models": {lab: str(f) for lab, f in zip(labels, folders, strict=True)},
            "table": [{c: (_num(v) if isinstance(v, float) else v) for c, v in row.items()}
                      for row in table.to_dict(orient="records")]}, indent=1))
    return table


def _table(results, labels, k) -> tuple[pd.DataFrame, pd.DataFrame]:
    E = np.stack([r.pointwise["elpd"].to_numpy(float) for r in results], axis=1)
    n = E.shape[0]
    tot = E.sum(axis=0)
    best = int(np.argmax(tot))
    with np.errstate(invalid="ignore"):
        se = np.sqrt(n) * E.std(axis=0, ddof=1)
        diff = E - E[:, [best]]
        dse = np.sqrt(n) * diff.std(axis=0, ddof=1)
    table = pd.DataFrame({"model": labels, "elpd_kfold": tot, "se": se,
                          "elpd_diff": tot - tot[best], "dse": dse,
                          "n_subjects": n, "k": k})
    table.loc[best, "dse"] = 0.0
    table = table.sort_values("elpd_kfold", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(1, "rank", np.arange(len(table)))
    pointwise = results[0].pointwise[["subject", "fold"]].copy()
    for lab, r in zip(labels, results, strict=True):
        pointwise[lab] = r.pointwise["elpd"].to_numpy(float)
    return table[COMPARE_COLUMNS], pointwise


# ---- command line -----------------------------------------------------------------------------
def main_cli(args) -> int:
    """Run ``pkpd compare-models`` (arguments: :func:`pkpd.cli.build_parser`); prints the
    table. Errors: one line on stderr, exit 2 (130 on Ctrl-C, with the finished folds kept)."""
    cmd = getattr(args, "cmd", None) or "compare-models"
    overrides = {n: getattr(args, n) for n in ("chains", "tune", "draws")
                 if getattr(args, n, None) is not None}
    try:
        table = compare_models(args.folders, k=args.k, seed=args.seed,
                               overrides=overrides or None,
                               progress=not getattr(args, "quiet", False), out=args.out)
    except PkpdError as exc:
        print(f"pkpd {cmd}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    if args.json:
        print(json.dumps([{c: (_num(v) if isinstance(v, float) else v) for c, v in r.items()}
                          for r in table.to_dict(orient="records")], indent=1))
    else:
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        if args.out:
            print(f"wrote {Path(args.out) / 'compare.csv'}")
    return 0
