"""Running a population fit: sampling in checkpointed batches, post-processing, saving, loading.

Output folder (default: next to the spec, ``<spec folder>/NAME/``; for the specs in ``fits/``
that folder is git-ignored, and the committed reference results are in ``fits/reference/``)::

    posterior.nc    ArviZ InferenceData: posterior (population, eta, indiv), sample_stats, prior,
                    observed/constant data, log_likelihood summed by subject
    summary.csv     parameter, mean, sd, q5, q95, ess_bulk, r_hat (population parameters)
    fit.json        hashes (spec, data, cards), seeds, versions, sampler settings, wall times,
                    diagnostics (convergence, divergences, BFMI, shrinkage, prior/posterior
                    overlap, PPC, PSIS-LOO), failed-solve counts, estimands
    estimands.csv   per-patient resistance onset, time to nadir, depth (tumour-card fits)
    report.md       the same, for people
and, while a fit runs, its per-batch checkpoints in the sibling folder ``.NAME.partial/``
(removed when the fit completes).

The folder is assembled in a temporary sibling and swapped in at the end, so a reader never sees
a half-written fit. pkpd replaces an existing folder only when it holds a pkpd fit and nothing
else, and removes only working folders it made (:mod:`pkpd.fit.folders`).

Ctrl-C (SIGINT) stops a fit in any phase, within about a second with nutpie and PyMC (numpyro and
blackjax finish the running batch first, as one compiled JAX call): nothing is written as finished,
the completed batches stay in ``.NAME.partial/`` and :class:`~pkpd.errors.FitInterrupted` says
how to resume. A sampler result with missing or non-finite draws is never checkpointed or
written. An interrupted fit resumes from its completed batches (``resume=True``, the default)
when the spec, data and settings are unchanged, or restarts cleanly (``resume=False``).

Test hook: ``PKPD_FAULT_PAUSE=PHASE[:SECONDS]`` (PHASE ``sampling``, ``post-processing`` or
``writing``) makes the run print ``PKPD_FAULT_PAUSE: PHASE`` to stderr and sleep there (default
60 s), so that tests can interrupt or kill a phase that is otherwise too short to hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FitInterrupted, PkpdError, SolverError, SpecError
from ..io import atomic_write_text
from .data import FitData, read_fit_data
from .folders import (
    MARKER,
    WRITTEN_BY,
    FitFolders,
    check_out,
    is_pkpd_fit,
    make_working,
    remove_ours,
)
from .model import FAILURES, build_model
from .problem import Problem, build_problem
from .spec import Spec, load_spec

__all__ = ["fit", "load_fit", "FitResult", "prepare", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = ["parameter", "mean", "sd", "q5", "q95", "ess_bulk", "r_hat"]
_VERSIONS = ("pkpd", "numpy", "scipy", "jax", "jaxlib", "pymc", "pytensor", "nutpie", "numpyro",
             "arviz", "pandas", "xarray")


@dataclass
class FitResult:
    """A finished fit: the InferenceData, the summary table and the fit.json record."""

    idata: object
    summary: pd.DataFrame
    record: dict
    path: Path | None = None
    estimands: pd.DataFrame | None = None

    def __repr__(self) -> str:
        d = self.record.get("diagnostics", {})
        return (f"FitResult({self.record.get('name')!r}, {self.record.get('n_subjects')} subjects, "
                f"{self.record.get('n_obs')} observations, problems={d.get('problems', [])})")


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in _VERSIONS:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def prepare(spec: Spec | str | os.PathLike, data: FitData | None = None,
            centered: dict | None = None):
    """Spec, data, likelihood problem and PyMC model, all validated (nothing sampled)."""
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    if data is None:
        if spec.data.format == "simulate":
            from .recovery import simulate_data
            data = simulate_data(spec)
        else:
            data = read_fit_data(spec)
    problem = build_problem(spec, data)
    model, info = build_model(spec, problem, centered)
    return spec, data, problem, model, info


#: subjects whose pilot posterior SD of eta is below this fraction of omega are sampled centred
AUTO_CENTRE_RATIO = 0.5


def choose_centring(spec: Spec, model, info, progress: bool) -> tuple[dict, dict]:
    """Per-subject centring of ``centered = "auto"`` etas from a short pilot run.

    The pilot samples every subject centred (2 chains, 150 tuning + 100 draws, nutpie). A
    subject whose posterior SD of eta is below ``AUTO_CENTRE_RATIO`` x omega is informed by
    its data and stays centred; the others (prior-dominated) are sampled non-centred, which
    removes the funnel between omega and weakly informed subjects. The posterior is the same
    either way; only the sampler's geometry changes.
    """
    auto = [b.etas[0] for b in spec.omegas if b.kind == "diag" and b.centered == "auto"]
    if not auto:
        return {}, {}
    import nutpie
    _log(f"pilot run to choose centred/non-centred subjects for {', '.join(auto)}", progress)
    t = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, backend="jax", gradient_backend="jax",
                                         initial_points=info.initvals or None)
    pilot = _nutpie_run(compiled, chains=2, tune=150, draws=100, seed=int(spec.sampler.seed),
                        cores=2, progress_bar=False, save_warmup=False)
    eta = pilot.posterior["eta"]
    sd = eta.std(("chain", "draw")).values                   # subject x eta
    om = pilot.posterior["omega_sd"].mean(("chain", "draw")).values
    names = list(eta.coords["eta_name"].values)
    masks, rec = {}, {"pilot_s": time.perf_counter() - t, "ratio": AUTO_CENTRE_RATIO}
    for e in auto:
        k = names.index(e)
        masks[e] = sd[:, k] / om[k] < AUTO_CENTRE_RATIO
        rec[e] = {"centred": int(masks[e].sum()), "non_centred": int((~masks[e]).sum())}
    _log(f"pilot: {rec}", progress)
    return masks, rec


def _fingerprint(spec: Spec, data: FitData) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(spec.raw, sort_keys=True, default=str).encode())
    h.update(data.sha256.encode())
    return h.hexdigest()


# ---- interrupts, the fault hook and unfinished results -------------------------------------------
def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _sigint_seen():
    """Record a Ctrl-C while it is raised as usual, so that a sampler which catches
    KeyboardInterrupt and returns the draws so far (``pm.sample`` does) can be told from one that
    finished: ``seen["hit"]`` is then True and the caller raises KeyboardInterrupt itself."""
    seen = {"hit": False}
    prev = signal.getsignal(signal.SIGINT) if _in_main_thread() else None
    if prev is None or prev == signal.SIG_IGN:         # not ours to handle
        yield seen
        return

    def handler(signum, frame):
        seen["hit"] = True
        if callable(prev):
            prev(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, prev)


@contextmanager
def _sigint_deferred():
    """Hold a Ctrl-C back during the few renames that swap a finished result in; it is reported
    afterwards (``held["hit"]``) instead of leaving the folder half swapped."""
    held = {"hit": False}
    prev = signal.getsignal(signal.SIGINT) if _in_main_thread() else None
    if prev is None or prev == signal.SIG_IGN:
        yield held
        return
    signal.signal(signal.SIGINT, lambda signum, frame: held.update(hit=True))
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, prev)


def _fault_pause(phase: str) -> None:
    """The test hook ``PKPD_FAULT_PAUSE=PHASE[:SECONDS]`` (module docstring)."""
    want = os.environ.get("PKPD_FAULT_PAUSE", "")
    name, _, secs = want.partition(":")
    if name != phase:
        return
    print(f"PKPD_FAULT_PAUSE: {phase}", file=sys.stderr, flush=True)
    time.sleep(float(secs or 60))


def _unfinished(idata, chains: int, draws: int) -> str | None:
    """Why a sampler result is not a finished batch (missing or non-finite draws), or None."""
    if idata is None or "posterior" not in idata.groups():
        return "no posterior draws"
    post = idata.posterior
    got_c, got_d = post.sizes.get("chain", 0), post.sizes.get("draw", 0)
    if (got_c, got_d) != (chains, draws):
        return (f"{got_c} chain(s) x {got_d} draws where {chains} x {draws} were requested "
                "(sampling stopped early)")
    for name, v in post.data_vars.items():
        a = np.asarray(v.values)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad = ~np.isfinite(a).reshape(a.shape[0], a.shape[1], -1).all(axis=2)
            return (f"non-finite values (NaN or inf) in {name!r} in {int(bad.sum())} of "
                    f"{chains * draws} draws")
    return None


# ---- samplers -----------------------------------------------------------------------------------
def _nutpie_run(compiled, poll: float = 0.2, **kw):
    """``nutpie.sample`` in the background: the main thread polls, so Ctrl-C reaches it within
    ``poll`` seconds (the blocking call only notices it late and then returns the partial trace
    as if finished). On Ctrl-C or any error the sampler is cancelled."""
    import nutpie
    sampler = nutpie.sample(compiled, blocking=False, **kw)
    try:
        while True:
            try:       # nutpie 0.16: returns once sampling is done, TimeoutError until then
                sampler._sampler.wait(poll)
                break
            except TimeoutError:
                continue
        return sampler.wait()
    except BaseException as exc:
        try:
            sampler.cancel()
        except BaseException as again:   # after a panic the sampler's state is poisoned
            if not _is_panic(again):
                raise
        if _is_panic(exc):
            raise _sampler_panic(exc) from None
        raise


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def _sampler_panic(exc: BaseException) -> SolverError:
    """nutpie's Rust core panics (a ``pyo3_runtime.PanicException``, a BaseException that no
    ``except Exception`` catches and that cannot cross a process boundary) when a chain cannot
    start: the log density or its gradient is not finite at its initial point. That is a
    failed fit, not a crash: a :class:`SolverError` that says what to check."""
    msg = " ".join(str(exc).split()).split(" Stack backtrace")[0] or type(exc).__name__
    return SolverError(
        f"nutpie stopped: {msg}. A chain's initial point (the [theta]/[omega] init values, "
        "jittered) has a non-finite log density or gradient. Fix: give init values closer to "
        "the data, and check the data for implausible values (the largest observations)")


#: ``threads = "auto"``: a batch's chains share one thread when one log density with its
#: gradient costs less than this (ms). Measured (docs/fitting.md, "Performance notes"): at
#: 0.04 ms (the 8-patient pm.ode problem) 2 chains took 2.5 s in one thread and 6.7 s in two,
#: at 0.6 ms (the 120-patient triplet) 134 s in one and 91 s in two
AUTO_ONE_THREAD_MS = 0.2


def _compiled_nutpie(model, info, cache: dict):
    if "nutpie" not in cache:
        import nutpie
        t = time.perf_counter()
        cache["nutpie"] = nutpie.compile_pymc_model(model, backend="jax", gradient_backend="jax",
                                                    initial_points=info.initvals or None)
        cache["compile_s"] = time.perf_counter() - t
    return cache["nutpie"]


def logp_ms(compiled, n: int = 30) -> float:
    """Median milliseconds of one log density + gradient call of a compiled nutpie model, at
    small perturbations of the origin of the unconstrained space (after one warm-up call)."""
    f = compiled._make_logp_func()
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal((n + 1, compiled.n_dim))
    f(x[0])
    times = []
    for row in x[1:]:
        t = time.perf_counter()
        f(row)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def nutpie_threads(spec: Spec, compiled, chains: int, cache: dict) -> int:
    """Threads for a batch of ``chains`` nutpie chains (``[sampler] threads``); ``"auto"``: one
    when the log density is cheaper than :data:`AUTO_ONE_THREAD_MS` (the chains then lose more
    to contention for the interpreter than they gain), else one per chain up to the CPUs."""
    want = spec.sampler.threads
    if want != "auto":
        return int(min(want, chains))
    if "logp_ms" not in cache:
        cache["logp_ms"] = logp_ms(compiled)
    if cache["logp_ms"] < AUTO_ONE_THREAD_MS:
        return 1
    return int(max(1, min(chains, os.cpu_count() or 1)))


def _sample_batch(spec: Spec, model, info, chains: int, seed: int, progress: bool,
                  cache: dict):
    s = spec.sampler
    if s.name == "nutpie":
        compiled = _compiled_nutpie(model, info, cache)
        cache["threads"] = nutpie_threads(spec, compiled, chains, cache)
        return _nutpie_run(compiled, chains=chains, tune=s.tune,
                           draws=s.draws, seed=seed, cores=cache["threads"], progress_bar=progress,
                           target_accept=s.target_accept, maxdepth=s.max_treedepth,
                           save_warmup=False, low_rank_modified_mass_matrix=s.low_rank)
    import pymc as pm
    kw = dict(draws=s.draws, tune=s.tune, chains=chains, random_seed=seed,
              initvals=info.initvals or None,
              target_accept=s.target_accept, progressbar=progress,
              compute_convergence_checks=False, return_inferencedata=True)
    with _sigint_seen() as seen:
        if s.name == "pymc":
            with model:
                res = pm.sample(nuts_sampler="pymc", cores=1, max_treedepth=s.max_treedepth,
                                **kw)
        elif s.name == "numpyro":
            with model:
                res = pm.sample(nuts_sampler="numpyro", nuts_sampler_kwargs={
                    "chain_method": "vectorized",
                    "nuts_kwargs": {"max_tree_depth": s.max_treedepth}}, **kw)
        elif s.name == "blackjax":
            from .blackjax_nuts import sample_blackjax
            res = sample_blackjax(model, **kw, nuts_sampler_kwargs={
                "nuts_kwargs": {"max_num_doublings": s.max_treedepth}})
        else:
            raise SpecError(f"sampler {s.name!r} is unknown")
    # pm.sample catches Ctrl-C and returns the draws so far (pymc), or Ctrl-C waits for the end
    # of the compiled JAX run (numpyro, blackjax): the caller keeps a finished batch, then stops
    cache["interrupted"] = seen["hit"]
    return res


def _prior_draws(spec: Spec, model, n: int, seed: int):
    """Population parameters drawn from their priors (for prior/posterior overlap)."""
    import pymc as pm
    free = {v.name for v in model.free_RVs}
    names = [v for v in spec.population_names if v in free or v in model.named_vars]
    flat = [v.name for v in model.free_RVs if type(v.owner.op).__name__ == "FlatRV"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flat:       # inverse-Wishart blocks: Omega drawn directly from scipy
            keep = [v for v in names if v in free]
            pri = pm.sample_prior_predictive(draws=n, var_names=keep, model=model,
                                             random_seed=seed, return_inferencedata=True)
            post = pri.prior
            rng = np.random.default_rng(seed)
            from scipy.stats import invwishart
            for b in spec.omegas:
                if b.kind != "invwishart":
                    continue
                om = np.asarray(b.iw_omega)
                draws = invwishart(df=b.iw_df, scale=b.iw_df * om).rvs(n, random_state=rng)
                draws = draws.reshape(n, len(b.etas), len(b.etas))
                rr, cc = np.tril_indices(len(b.etas))
                for k, name in enumerate(b.names):
                    post[name] = (("chain", "draw"), draws[None, :, rr[k], cc[k]])
            return pri
        return pm.sample_prior_predictive(draws=n, var_names=names, model=model,
                                          random_seed=seed, return_inferencedata=True)


# ---- post-processing --------------------------------------------------------------------------
def _draws_of(idata, var):
    a = idata.posterior[var].values
    return a.reshape((-1,) + a.shape[2:])


def posterior_predictions(problem: Problem, idata, chunk: int = 64, seed: int = 0):
    """Pointwise log-likelihood and posterior-predictive draws ``(chain, draw, obs)``."""
    import jax
    import jax.numpy as jnp
    spec = problem.spec
    roles = problem.residual_roles
    P = _draws_of(idata, "indiv")
    R = np.stack([_draws_of(idata, spec.residual.names[r]) for r in roles], axis=1)
    R = np.where([spec.residual.variance[r] for r in roles], np.sqrt(R), R)

    def one(p, r):
        rd = {role: r[k] for k, role in enumerate(roles)}
        f = problem.predict(p)
        sd = problem.resid_sd(f, rd)
        lp = problem.pointwise(p, rd)
        return lp, problem.flat(f), problem.flat(sd)

    fn = jax.jit(jax.vmap(one))
    lps, fs, sds = [], [], []
    n = P.shape[0]
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        pad = chunk - (j - i)
        p = np.concatenate([P[i:j], np.repeat(P[j - 1:j], pad, 0)]) if pad else P[i:j]
        r = np.concatenate([R[i:j], np.repeat(R[j - 1:j], pad, 0)]) if pad else R[i:j]
        lp, f, sd = fn(jnp.asarray(p), jnp.asarray(r))
        lps.append(np.asarray(lp)[: j - i])
        fs.append(np.asarray(f)[: j - i])
        sds.append(np.asarray(sd)[: j - i])
    lp, f, sd = np.concatenate(lps), np.concatenate(fs), np.concatenate(sds)
    rng = np.random.default_rng(seed)
    yrep = f + sd * rng.standard_normal(f.shape)
    shape = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    return (lp.reshape(shape + lp.shape[1:]), yrep.reshape(shape + yrep.shape[1:]),
            f.reshape(shape + f.shape[1:]))


def _assemble(spec, data, problem, idata, prior, progress):
    import arviz as az
    import xarray as xr
    _log("post-processing: log-likelihood and posterior predictive draws", progress)
    lp, yrep, _ = posterior_predictions(problem, idata, seed=spec.sampler.seed)
    obs = np.arange(data.n_obs)
    idata.add_groups({
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), lp)},
                                     coords={"obs": obs}),
        "posterior_predictive": xr.Dataset({"y": (("chain", "draw", "obs"), yrep)},
                                           coords={"obs": obs}),
        "observed_data": xr.Dataset({"y": (("obs",), data.y)}, coords={"obs": obs}),
        "constant_data": xr.Dataset({
            "obs_subject": (("obs",), np.asarray(data.obs_subject)),
            "obs_time": (("obs",), data.obs_time),
            "censored": (("obs",), data.censored)}, coords={"obs": obs}),
    })
    if prior is not None:
        idata.add_groups({"prior": prior.prior})
    from . import diagnostics as dg

    _log("post-processing: population predictive draws (new etas)", progress)
    dg.add_population_predictive(problem, idata, seed=spec.sampler.seed + 1)
    del az
    return idata


def _diagnostics(spec, idata, population):
    from . import diagnostics as dg
    rep = dg.report(idata, population, max_tree_depth=spec.sampler.max_treedepth)
    try:
        rep["loo_by_observation"] = dg.loo(idata, by="obs")
    except Exception as e:       # noqa: BLE001 - reported, not fatal
        rep["loo_by_observation"] = {"error": str(e)}
    return rep


def _estimands(spec, problem, idata):
    if spec.model_kind != "tumour_card":
        return None, {}
    from . import estimands as es
    out = {}
    if "PSI" in idata.posterior:
        out["synergy"] = es.synergy(idata, "PSI")
        drivers = problem.extra["drivers"]
        if "anlotinib" in drivers and "durvalumab" in drivers:
            out["synergy"]["identification"] = es.synergy_identification(
                es.exposure_groups(drivers["anlotinib"], drivers["durvalumab"]))
    table = es.patient_estimands(idata, problem.extra["drivers"],
                                 step_day=problem.extra["step_day"], seed=spec.sampler.seed)
    out["population_onset"] = es.population_onset(table)
    return table, out


def _summary(idata, population) -> tuple[pd.DataFrame, pd.DataFrame]:
    from .diagnostics import convergence
    full = convergence(idata, population)
    return full[SUMMARY_COLUMNS].copy(), full


def _slim_posterior(idata):
    """What goes into posterior.nc: everything except the non-centred z's (recomputable)."""
    post = idata.posterior
    drop = [v for v in post.data_vars if v.startswith("z_")]
    out = idata.copy()
    out.posterior = post.drop_vars(drop)
    if "log_likelihood" in out.groups():
        ll = out.log_likelihood["y"]
        subj = out.constant_data["obs_subject"].values
        n_s = int(subj.max()) + 1
        summed = np.zeros(ll.shape[:2] + (n_s,))
        np.add.at(summed, (slice(None), slice(None), subj), ll.values)
        import xarray as xr
        out.log_likelihood = xr.Dataset({"y_subject": (("chain", "draw", "subject"), summed)},
                                        coords={"subject": post.coords["subject"].values})
    if "posterior_predictive" in out.groups():
        del out.posterior_predictive
    return out


# ---- main entry -------------------------------------------------------------------------------
def fit(spec: Spec | str | os.PathLike, out: str | os.PathLike | None = None, *,
        resume: bool = True, progress: bool = True, data: FitData | None = None,
        overrides: dict | None = None, write: bool = True) -> FitResult:
    """Run the fit a spec describes and write its folder (see module docstring).

    Parameters
    ----------
    spec : Spec or path of a TOML spec
    out : folder for the results (default: ``<spec folder>/<name>``). An existing folder is
        replaced only when it holds a pkpd fit and nothing else; otherwise PkpdError, before
        anything is sampled.
    resume : reuse completed chain batches of an interrupted run with the same spec and data;
        ``False`` deletes them and starts again
    overrides : sampler settings to change, e.g. ``{"draws": 200, "chains": 2}``
    write : False: return the result without writing the folder (the checkpoints are kept)

    Raises
    ------
    FitInterrupted : on Ctrl-C; the completed batches stay in ``.NAME.partial/``
    PkpdError : bad spec, data or output folder, or a sampler result with missing or
        non-finite draws (never written as finished)
    SolverError : the sampler could not start a chain (non-finite log density or gradient at
        its initial point; nutpie's panic converted)
    """
    t0 = time.perf_counter()
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides=overrides)
    elif overrides:
        spec = load_spec(spec.path or spec.raw, overrides=overrides)
    spec, data, problem, model, info = prepare(spec, data)
    dirs = FitFolders.at(out if out is not None else default_out(spec))
    if write:
        check_out(dirs.out)                  # before hours of sampling, and again before the swap
    _open_checkpoints(dirs.partial, _fingerprint(spec, data), resume, progress)
    s = spec.sampler
    _log(f"fit {spec.name}: {data.n_subjects} subjects, {data.n_obs} observations, "
         f"{len(spec.population_names)} population parameters, sampler {s.name} "
         f"({s.chains} chains x {s.tune} tune + {s.draws} draws)", progress)
    try:
        model, info, centring = _centring(spec, problem, model, info, dirs.partial, progress)
        batches, timings, seeds = _run_batches(spec, model, info, dirs.partial, progress)
        _fault_pause("post-processing")
        result, parts = _postprocess(spec, data, problem, model, batches, progress)
        result.path = dirs.out
        result.record = _record(spec, data, parts, timings, seeds, centring, t0)
        if (problem.extra or {}).get("kill_table"):
            result.record["model"]["kill_table"] = _jsonable(problem.extra["kill_table"])
        if data.meta.get("simulated"):
            from .recovery import recovery_check
            result.record["recovery"] = _jsonable(recovery_check(result, spec, data))
        if write:
            _write(result, dirs, spec, data, progress)
    except KeyboardInterrupt:
        raise FitInterrupted(_interrupted(spec, dirs, write)) from None
    _log(f"fit {spec.name}: done in {result.record['timing']['total_s']:.0f} s; "
         f"problems: {result.record['diagnostics'].get('problems') or 'none'}", progress)
    return result


def default_out(spec: Spec) -> Path:
    """``<spec folder>/<name>`` (``fits/<name>`` for a spec given as a dict)."""
    return (spec.path.parent if spec.path else Path("fits")) / spec.name


def _n_batches(spec: Spec) -> int:
    return -(-spec.sampler.chains // spec.sampler.chains_per_batch)


def _saved_batches(spec: Spec, partial: Path) -> int:
    return sum((partial / f"batch{b}.nc").is_file() and (partial / f"batch{b}.json").is_file()
               for b in range(_n_batches(spec)))


def _interrupted(spec: Spec, dirs: FitFolders, write: bool) -> str:
    """The message of a fit stopped by Ctrl-C; removes the half-assembled result, if any."""
    try:
        remove_ours(dirs.writing, "writing")
    except (PkpdError, OSError):
        pass
    n, saved = _n_batches(spec), _saved_batches(spec, dirs.partial)
    kept = ("the previous result in " + str(dirs.out) + " is unchanged; " if write
            and is_pkpd_fit(dirs.out) else "")
    todo = "resume" if saved < n else "finish: only post-processing remains"
    return (f"interrupted; {saved} of {n} batches saved in {dirs.partial}; no result written; "
            f"{kept}run the same command again to {todo} (--restart discards them)")


def _open_checkpoints(partial: Path, fp: str, resume: bool, progress: bool) -> None:
    """The checkpoint folder: discarded with ``resume=False`` or when it belongs to another
    spec/data version, then (re)created with the fingerprint of this one."""
    if partial.exists() and not resume:
        remove_ours(partial, "partial")
    stamp = partial / "fingerprint.txt"
    if partial.exists() and stamp.exists() and stamp.read_text() != fp:
        _log(f"{partial}: checkpoints belong to another spec/data version; starting again",
             progress)
        remove_ours(partial, "partial")
    make_working(partial, "partial", "checkpoints of the completed chain batches of a fit")
    atomic_write_text(stamp, fp)


def _centring(spec, problem, model, info, partial: Path, progress: bool):
    """Model rebuilt with the per-subject centring of ``centered = "auto"`` etas (the pilot's
    choice is checkpointed, so a resumed fit reuses it)."""
    if not any(b.centered == "auto" and b.kind == "diag" for b in spec.omegas):
        return model, info, {}
    masks_file = partial / "centring.npz"
    if _saved_batches(spec, partial) and masks_file.exists():
        z = np.load(masks_file)
        masks, centring = {k: z[k] for k in z.files}, {"resumed": True}
    else:
        masks, centring = choose_centring(spec, model, info, progress)
        tmpz = partial / "centring.tmp.npz"
        np.savez(tmpz, **masks)
        os.replace(tmpz, masks_file)
    model, info = build_model(spec, problem, masks)
    return model, info, centring


def _load_checkpoint(spec: Spec, partial: Path, b: int, k: int, progress: bool):
    """A completed batch saved by an earlier run, or None (missing, unreadable or unfinished:
    it is sampled again)."""
    import arviz as az
    ck, meta = partial / f"batch{b}.nc", partial / f"batch{b}.json"
    if not (ck.is_file() and meta.is_file()):
        return None
    try:
        res, rec = az.from_netcdf(ck), json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        _log(f"batch {b + 1}/{_n_batches(spec)}: {ck.name} is unreadable ({e}); sampling it "
             "again", progress)
        return None
    why = _unfinished(res, k, spec.sampler.draws)
    if why:
        _log(f"batch {b + 1}/{_n_batches(spec)}: {ck.name} is not a finished batch ({why}); "
             "sampling it again", progress)
        return None
    _log(f"batch {b + 1}/{_n_batches(spec)}: resumed from {ck.name}", progress)
    return res, rec


def _run_batches(spec: Spec, model, info, partial: Path, progress: bool):
    """Sample the chain batches that have no checkpoint yet, checkpointing each finished one."""
    s = spec.sampler
    n_batches = _n_batches(spec)
    FAILURES.reset()
    cache: dict = {}
    batches, seeds, timings = [], [], []
    for b in range(n_batches):
        k = min(s.chains_per_batch, s.chains - b * s.chains_per_batch)
        seed = int(s.seed) * 1000 + b
        seeds.append(seed)
        done = _load_checkpoint(spec, partial, b, k, progress)
        if done is not None:
            batches.append(done[0])
            timings.append(done[1])
            continue
        if s.name == "nutpie":
            _compiled_nutpie(model, info, cache)
        _log(f"batch {b + 1}/{n_batches}: sampling {k} chain(s), seed {seed}", progress)
        _fault_pause("sampling")
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            res = _sample_batch(spec, model, info, k, seed, progress, cache)
        dt = time.perf_counter() - t
        interrupted = cache.pop("interrupted", False)
        why = _unfinished(res, k, s.draws)
        if why and interrupted:
            raise KeyboardInterrupt
        if why:
            raise PkpdError(
                f"batch {b + 1}/{n_batches}: the sampler returned {why}; this batch is not "
                f"saved and no result is written ({_saved_batches(spec, partial)} completed "
                f"batch(es) kept in {partial}). Fix: check the priors and [individual] "
                "expressions for values that overflow, or run again (it resumes)")
        rec = {"batch": b, "chains": k, "seed": seed, "seconds": dt,
               "compile_s": cache.pop("compile_s", 0.0), **FAILURES.as_dict()}
        if "threads" in cache:
            rec.update(threads=cache["threads"], logp_ms=cache.get("logp_ms"))
        FAILURES.reset()
        ck = partial / f"batch{b}.nc"
        tmp = ck.with_suffix(".tmp.nc")
        res.to_netcdf(tmp)
        os.replace(tmp, ck)
        atomic_write_text(partial / f"batch{b}.json", json.dumps(rec))
        batches.append(res)
        timings.append(rec)
        _log(f"batch {b + 1}/{n_batches}: {dt:.0f} s", progress)
        if interrupted:
            raise KeyboardInterrupt
    return batches, timings, seeds


def _postprocess(spec, data, problem, model, batches, progress) -> tuple[FitResult, dict]:
    """All batches -> the result (summary, estimands) and the parts of its record."""
    s = spec.sampler
    idata = _concat(batches)
    why = _unfinished(idata, s.chains, s.draws)
    if why:
        raise PkpdError(f"the combined chains have {why}; no result is written")
    prior = _prior_draws(spec, model, 1000, s.seed)
    idata = _assemble(spec, data, problem, idata, prior, progress)
    pop = spec.population_names
    summary, full = _summary(idata, pop)
    bad = summary.loc[~np.isfinite(summary["mean"].to_numpy(float)), "parameter"].tolist()
    if bad:
        raise PkpdError(f"the posterior mean of {', '.join(bad)} is not finite; no result is "
                        "written")
    diag = _diagnostics(spec, idata, pop)
    est_table, est = _estimands(spec, problem, idata)
    return FitResult(idata, summary, {}, None, est_table), {"full": full, "diag": diag,
                                                            "est": est}


def _record(spec, data, parts, timings, seeds, centring, t0) -> dict:
    """fit.json's content."""
    s = spec.sampler
    failures = {"failed_evaluations": sum(t["failed_evaluations"] for t in timings),
                "failed_predictions": sum(t["failed_predictions"] for t in timings)}
    record = {
        "written_by": WRITTEN_BY,
        "name": spec.name, "description": spec.description,
        "spec": str(spec.path) if spec.path else None, "spec_sha256": spec.sha256(),
        "data": str(spec.data.path) if spec.data.path else "simulated",
        "data_sha256": data.sha256, "cards": _card_hashes(spec),
        "n_subjects": data.n_subjects, "n_obs": data.n_obs,
        "n_censored": int(np.sum(data.censored)),
        "data_rows": (data.rows["reason"].value_counts().to_dict()
                      if data.rows is not None else {}),
        "model": {"kind": spec.model_kind, "ref": spec.model_ref, "time_unit": spec.time_unit,
                  "individual": {k: v.text for k, v in spec.individual.items()},
                  "fixed": spec.fixed, "residual": spec.residual.model},
        "sampler": asdict(s), "seeds": {"master": s.seed, "batches": seeds},
        "versions": versions(), "platform": platform.platform(),
        "timing": {"total_s": time.perf_counter() - t0,
                   "sampling_s": sum(t["seconds"] for t in timings), "batches": timings},
        "failures": failures, "centring": centring,
        "diagnostics": parts["diag"], "convergence": parts["full"].to_dict(orient="records"),
        "estimands": parts["est"],
        "data_meta": {k: v for k, v in data.meta.items() if not isinstance(v, pd.DataFrame)},
    }
    return _jsonable(record)


def _card_hashes(spec):
    if spec.card is None:
        return {}
    out = {spec.card.name: spec.card.sha256}
    for d in spec.card.raw.get("drivers", {}).values():
        from ..cards.card import load_card
        c = load_card(d["card"])
        out[c.name] = c.sha256
    return out


def _concat(batches):
    import arviz as az
    if len(batches) == 1:
        return batches[0]
    fixed = []
    start = 0
    for b in batches:
        n = b.posterior.sizes["chain"]
        fixed.append(b.assign_coords(chain=np.arange(start, start + n), groups=[
            g for g in ("posterior", "sample_stats") if g in b.groups()]))
        start += n
    return az.concat(*fixed, dim="chain")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def _write(result: FitResult, dirs: FitFolders, spec, data, progress: bool) -> None:
    """Assemble the folder in ``.NAME.writing``, then swap it in for the previous result (if
    any, a pkpd fit: checked again here) and remove the checkpoints."""
    from .report import fit_report
    out, tmp = dirs.out, dirs.writing
    _log(f"writing {out}", progress)
    check_out(out)
    remove_ours(tmp, "writing")                     # left by a run that was killed here
    make_working(tmp, "writing", f"the next result of {out}, being assembled")
    _slim_posterior(result.idata).to_netcdf(tmp / "posterior.nc")
    result.summary.to_csv(tmp / "summary.csv", index=False, float_format="%.6g")
    (tmp / "fit.json").write_text(json.dumps(result.record, indent=1))
    if result.estimands is not None:
        result.estimands.to_csv(tmp / "estimands.csv", index=False, float_format="%.6g")
    if data.rows is not None:
        data.rows.to_csv(tmp / "data_rows.csv", index=False)
    if data.meta.get("simulated"):
        data.meta["frame"].to_csv(tmp / "data.csv", index=False, float_format="%.6g")
        data.meta["truth_patients"].to_csv(tmp / "truth_patients.csv", index=False,
                                           float_format="%.6g")
    if spec.path is not None:
        shutil.copy2(spec.path, tmp / "spec.toml")
    (tmp / "report.md").write_text(fit_report(result))
    _fault_pause("writing")
    with _sigint_deferred() as held:
        (tmp / MARKER).unlink()
        remove_ours(dirs.old, "old")               # left by a run that was killed here
        if out.exists():
            os.replace(out, dirs.old)
        os.replace(tmp, out)
        remove_ours(dirs.old, "old")
        remove_ours(dirs.partial, "partial")
    if held["hit"]:
        _log("Ctrl-C came while the finished result was being swapped in; the fit completed",
             True)


#: fit.json keys that every reader of a saved fit relies on
_RECORD_KEYS = ("name", "n_subjects", "n_obs", "sampler", "timing")


def _read_record(file: Path) -> dict:
    """fit.json of a saved fit, or a SpecError naming the file, the problem and the fix."""
    fix = "Fix: run the fit again to rewrite the folder"
    try:
        record = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{file} is not UTF-8 text, so not a fit.json pkpd wrote. {fix}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{file} is not valid JSON ({exc.msg} at line {exc.lineno}). "
                        f"{fix}") from None
    if not isinstance(record, dict):
        raise SpecError(f"{file} holds a JSON {type(record).__name__}, not the object a fit "
                        f"writes. {fix}")
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise SpecError(f"{file} lacks {', '.join(missing)}: not a complete fit record. {fix}")
    return record


def _read_saved_csv(file: Path, *, required: bool):
    if not file.exists():
        if required:
            raise SpecError(f"{file} is missing: the fit folder is incomplete. Fix: run the fit "
                            "again to rewrite the folder")
        return None
    try:
        return pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SpecError(f"{file} cannot be read as a table ({' '.join(str(exc).split())}). "
                        "Fix: run the fit again to rewrite the folder") from None


def load_fit(path: str | os.PathLike) -> FitResult:
    """Load a fit folder written by :func:`fit` (posterior, summary, record, estimands)."""
    import arviz as az
    path = Path(path)
    if not (path / "fit.json").exists():
        partial = path.parent / f".{path.name}.partial"
        old = path.parent / f".{path.name}.old"
        hint = (f" An interrupted run left checkpoints in {partial}; run `pkpd fit SPEC` again "
                "to resume it." if partial.exists() else "")
        if old.is_dir() and is_pkpd_fit(old):
            hint += (f" The previous result is in {old} (a run was stopped while swapping the "
                     "new result in); run the fit again to finish it.")
        ref = path.parent / "reference" / path.name
        if is_pkpd_fit(ref):
            hint += f" The committed reference result is in {ref}."
        raise SpecError(f"{path} is not a finished fit (no fit.json).{hint} Fix: give the "
                        "folder a `pkpd fit` run wrote (it holds fit.json, summary.csv and "
                        "posterior.nc), or run the fit first")
    record = _read_record(path / "fit.json")
    summary = _read_saved_csv(path / "summary.csv", required=True)
    idata = None
    if (path / "posterior.nc").exists():
        try:
            idata = az.from_netcdf(path / "posterior.nc")
        except Exception as exc:  # noqa: BLE001 - any unreadable netCDF is the same user error
            raise SpecError(f"{path / 'posterior.nc'} cannot be read ({exc}). Fix: run the fit "
                            "again to rewrite it") from None
    est = _read_saved_csv(path / "estimands.csv", required=False)
    return FitResult(idata, summary, record, path, est)
