"""Running a design: R simulated trials per truth, each fitted, one results row per trial.

Output folder (default ``<design folder>/<name>/``, e.g. ``fits/designs/three_arm_40/``)::

    design.json    the design's name, fingerprint, rule, truths and replicate seeds source
    results.csv    one row per finished replicate (RESULT_COLUMNS), rewritten atomically after
                   each replicate, so that an interrupted run loses at most the running one
    failures.csv   one row per replicate whose fit failed (FAILURE_COLUMNS: seeds, truth and
                   the error), counted and flagged by the summary, never retried on resume
                   (the same seeds fail the same way)
    summary.json   operating characteristics per truth (pkpd.design.summary.summarise)
    summary.md     the same as a Markdown table
    oc.png         P(claim) against the true value, with +/- 2 Monte Carlo SE bars
    work/          the running replicate's fit checkpoints (removed when it finishes)

Resume: a rerun with the same design (same fingerprint: base spec, arms, truths, seed, level,
rule, sampler, regimens, simulator version) skips every replicate already in results.csv or
failures.csv, keyed by ``(truth_index, replicate)``; a larger ``replicates`` adds replicates.
A Ctrl-C inside a replicate's fit keeps that fit's completed chain batches (pkpd.fit
checkpoints), which the rerun resumes. A folder holding another design's results is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FitInterrupted, PkpdError
from ..io import atomic_write_csv, atomic_write_text
from .drivers import driver_cache
from .spec import Design, fit_raw, load_design, replicate_seeds
from .summary import FAILURE_COLUMNS, RESULT_COLUMNS, read_failures, read_results, summarise

__all__ = ["run_design", "run_replicate", "replicate_row", "failure_row"]


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _fit(spec, out: Path):
    """The replicate fit (tests patch this). Writes nothing but checkpoints in ``out``'s
    hidden ``.partial`` sibling, which :func:`run_replicate` removes afterwards."""
    from ..fit.run import fit
    return fit(spec, out=out, write=False, progress=False)


def _by_parameter(summ):
    """The fit summary indexed by parameter name (its ``parameter`` column where it has one)."""
    return summ.set_index("parameter") if "parameter" in summ.columns else summ


def _stat(summ, parameter: str, column: str) -> float:
    """The summary's ``column`` for ``parameter`` as a float (NaN where it lacks it)."""
    try:
        return float(_by_parameter(summ).loc[parameter, column])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def replicate_row(design: Design, truth_index: int, replicate: int, result) -> dict:
    """One results row from a finished replicate fit (:class:`pkpd.fit.FitResult`)."""
    rule = design.rule
    x = np.asarray(result.idata.posterior[rule.parameter].values, float).ravel()
    a = (1.0 - design.level) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    truth = design.truth_value(truth_index)
    p_gt = float(np.mean(x > rule.threshold))
    summ = result.summary
    rec = result.record
    onset = (rec.get("recovery") or {}).get("onset_coverage") or {}
    timing = rec.get("timing", {})
    ds, ss = replicate_seeds(design.seed, truth_index, replicate)
    return {
        "design": design.name, "truth_index": truth_index, "replicate": replicate,
        "parameter": rule.parameter, "truth": truth, "data_seed": ds, "sampler_seed": ss,
        "p_gt": p_gt, "mean": float(x.mean()), "lower": float(lo), "upper": float(hi),
        "level": design.level, "covered": bool(lo <= truth <= hi),
        "claim": bool(p_gt > rule.probability),
        "max_r_hat": float(np.nanmax(summ["r_hat"].to_numpy(float))),
        "min_ess_bulk": float(np.nanmin(summ["ess_bulk"].to_numpy(float))),
        "worst_parameter": str(_by_parameter(summ)["r_hat"].astype(float).idxmax()),
        "r_hat_rule": _stat(summ, rule.parameter, "r_hat"),
        "ess_bulk_rule": _stat(summ, rule.parameter, "ess_bulk"),
        "divergences": int((rec.get("diagnostics", {}).get("sampler") or {})
                           .get("n_divergent") or 0),
        "failed_evaluations": int((rec.get("failures") or {}).get("failed_evaluations") or 0),
        "onset_coverage": float(onset.get("coverage", np.nan)),
        "onset_n": int(onset.get("n", 0)),
        "n_subjects": int(rec.get("n_subjects", 0)), "n_obs": int(rec.get("n_obs", 0)),
        "wall_s": np.nan,
        "sampling_s": float(timing.get("sampling_s", np.nan)),
        "pilot_s": float((rec.get("centring") or {}).get("pilot_s", 0.0)),
        "compile_s": float(sum(b.get("compile_s", 0.0) for b in timing.get("batches", []))),
    }


def failure_row(design: Design, truth_index: int, replicate: int, exc: BaseException,
                wall_s: float, spec) -> dict:
    """One failures.csv row (:data:`FAILURE_COLUMNS`): the replicate, its seeds and truth
    (for SBC the rule parameter's prior draw, from the replicate's ``spec``) and the one-line
    error."""
    ds, ss = replicate_seeds(design.seed, truth_index, replicate)
    truth = design.truth_value(truth_index)
    if design.sbc:
        from .sbc import prior_draw
        truth = prior_draw(spec, ds, only=design.prior_only)[1][design.rule.parameter]
    return {"design": design.name, "truth_index": truth_index, "replicate": replicate,
            "parameter": design.rule.parameter, "truth": float(truth), "data_seed": ds,
            "sampler_seed": ss, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "wall_s": wall_s}


def run_replicate(design: Design, truth_index: int, replicate: int, work: Path,
                  threads: int | None = None) -> dict:
    """Simulate and fit one replicate trial; its results row (wall time included), or its
    :func:`failure_row` (it has an ``error``) when the fit fails with a PkpdError.
    ``threads``: the fit's ``[sampler] threads`` (default: the design's, else "auto"); it
    changes the wall time, not the draws."""
    from ..fit.folders import FitFolders, remove_ours
    from ..fit.spec import load_spec
    t0 = time.perf_counter()
    raw = fit_raw(design, truth_index, replicate)
    if threads is not None:
        raw["sampler"]["threads"] = int(threads)
    spec = load_spec(raw)
    dirs = FitFolders.at(work / spec.name)
    try:
        result = _fit(spec, dirs.out)
    except FitInterrupted:
        raise
    except PkpdError as exc:             # a failed fit is a result of the design, not a crash
        remove_ours(dirs.partial, "partial")
        return failure_row(design, truth_index, replicate, exc, time.perf_counter() - t0,
                           spec)
    row = replicate_row(design, truth_index, replicate, result)
    if design.sbc:
        from .sbc import prior_draw, sbc_columns
        pop = prior_draw(spec, row["data_seed"], only=design.prior_only)[1]
        truth = pop[design.rule.parameter]
        row.update(truth=truth, covered=bool(row["lower"] <= truth <= row["upper"]),
                   **sbc_columns(result, pop, design.level))
    row["wall_s"] = time.perf_counter() - t0
    remove_ours(dirs.partial, "partial")
    return row


def _open_folder(design: Design, out: Path) -> pd.DataFrame:
    """Create or reuse the output folder; refuse one that holds another design's results."""
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "design.json"
    fp = design.fingerprint()
    if meta.is_file():
        try:
            old = json.loads(meta.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("fingerprint") != fp:
            raise PkpdError(f"{out} holds results of another design (or another version of "
                            f"{design.name}: base spec, arms, truths, seed, rule, sampler, "
                            "regimens or pkpd's trial simulator changed); pkpd does not mix "
                            "them. Fix: give another --out, or move that folder away to start "
                            "again")
    elif (out / "results.csv").exists():
        raise PkpdError(f"{out} has a results.csv but no design.json; pkpd does not know which "
                        "design made it. Fix: give another --out")
    from ..fit.recovery import SIMULATOR_VERSION
    atomic_write_text(meta, json.dumps({
        "written_by": "pkpd design", "name": design.name, "fingerprint": fp,
        "spec": str(design.path) if design.path else None,
        "base": str(design.base_path) if design.base_path else None,
        "description": design.description, "arms": design.arms, "truths": list(design.truths),
        "seed": design.seed, "level": design.level, "rule": design.rule.__dict__,
        "rule_text": design.rule.text(), "sampler": design.sampler,
        "simulator_version": SIMULATOR_VERSION, "prior_only": list(design.prior_only),
        "identification": design.identification()}, indent=1))
    return read_results(out)


def run_design(spec_or_path, out=None, replicates: int | None = None, progress: bool = True,
               workers: int = 1):
    """Estimate a design's operating characteristics: for each truth, ``replicates`` simulated
    trials (new patients, etas, residuals and sampler seeds), each fitted with the design's
    short sampler schedule; then :func:`pkpd.design.summary.summarise`.

    Parameters
    ----------
    spec_or_path : Design, dict or path of a design TOML (:func:`load_design`)
    out : results folder (default ``<design folder>/<name>``); rerunning resumes it
    replicates : replicates per truth (default: the design's ``replicates``)
    progress : print one line per replicate (truth, r/R, P(parameter > threshold), seconds)
    workers : replicate fits at a time, each in its own process with its chains in one thread
        (:mod:`pkpd.design.workers`); 1 (default) fits them one by one in this process. The
        rows are the same either way (wall times aside).

    Returns
    -------
    dict : the summary (as written to summary.json)

    Raises
    ------
    FitInterrupted : Ctrl-C; finished replicates are in results.csv (with ``workers = 1`` the
        running one's completed chain batches are checkpointed); the same call resumes
    PkpdError : a bad design, or a folder holding another design's results
    """
    design = spec_or_path if isinstance(spec_or_path, Design) else load_design(spec_or_path)
    R = design.replicates if replicates is None else int(replicates)
    if R < 1:
        raise PkpdError(f"replicates = {replicates} must be >= 1. Fix: e.g. --replicates 5")
    if int(workers) < 1:
        raise PkpdError(f"workers = {workers} must be >= 1. Fix: e.g. --workers 2 (one per "
                        "free core)")
    if out is None:
        out = (design.path.parent if design.path else Path("fits") / "designs") / design.name
    out = Path(os.path.abspath(os.fspath(out)))
    df = _open_folder(design, out)
    failed = read_failures(out)
    done = {(int(a), int(b)) for a, b in zip(df["truth_index"], df["replicate"])}
    done |= {(int(a), int(b)) for a, b in zip(failed["truth_index"], failed["replicate"])}
    todo = [(i, r) for i in range(len(design.truths)) for r in range(R) if (i, r) not in done]
    table = _Results(design, out, df, R, progress, failed)
    ident = design.identification()
    if ident and ident["note"]:
        _log(f"{design.name}: {ident['status']}: {ident['note']}", progress)
    if int(workers) == 1:
        with driver_cache():
            for i, r in todo:
                table.add(run_replicate(design, i, r, out / "work"))
    else:
        _run_parallel(design, todo, out, int(workers), table)
    work = out / "work"
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return summarise(out, replicates=R)


class _Results:
    """results.csv (and failures.csv), rewritten atomically (sorted) after each replicate."""

    def __init__(self, design: Design, out: Path, df: pd.DataFrame, R: int, progress: bool,
                 failed: pd.DataFrame | None = None):
        self.design, self.out, self.R, self.progress = design, out, R, progress
        self.df = df
        self.failed = failed if failed is not None else pd.DataFrame(columns=FAILURE_COLUMNS)

    def add(self, row: dict) -> None:
        if "error" in row:
            self._add_failure(row)
            return
        # SBC rows carry truth_/pit_/rank_/covered_ columns per parameter after the standard ones
        new = pd.DataFrame([row], columns=RESULT_COLUMNS + [k for k in row
                                                            if k not in RESULT_COLUMNS])
        parts = [self.df, new] if len(self.df) else [new]
        self.df = pd.concat(parts, ignore_index=True).sort_values(["truth_index", "replicate"])
        atomic_write_csv(self.df, self.out / "results.csv", float_format="%.8g")
        d, p = self.design, self.design.rule.parameter
        i, r = int(row["truth_index"]), int(row["replicate"])
        _log(f"{d.name}: truth {i + 1}/{len(d.truths)} ({p} = {row['truth']:.3g}), "
             f"replicate {r + 1}/{self.R}: P({p} > {d.rule.threshold:g}) = "
             f"{row['p_gt']:.3f}, claim {'yes' if row['claim'] else 'no'}, "
             f"{row['wall_s']:.0f} s", self.progress)

    def _add_failure(self, row: dict) -> None:
        new = pd.DataFrame([row], columns=FAILURE_COLUMNS)
        parts = [self.failed, new] if len(self.failed) else [new]
        self.failed = pd.concat(parts, ignore_index=True).sort_values(["truth_index",
                                                                        "replicate"])
        atomic_write_csv(self.failed, self.out / "failures.csv", float_format="%.8g")
        d = self.design
        _log(f"{d.name}: truth {int(row['truth_index']) + 1}/{len(d.truths)}, replicate "
             f"{int(row['replicate']) + 1}/{self.R}: fit FAILED ({row['error']}); recorded in "
             "failures.csv", self.progress)


def _run_parallel(design: Design, todo: list, out: Path, workers: int, table: _Results) -> None:
    """Fit ``todo``'s replicates in ``workers`` spawned processes, writing each row as it
    finishes (a failed fit is a failures.csv row). Ctrl-C or an unexpected error ends the
    workers; finished rows stay."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from .workers import fit_one, init_worker
    if not todo:
        return
    _log(f"{design.name}: {len(todo)} replicate fit(s) in {workers} worker processes",
         table.progress)
    ex = ProcessPoolExecutor(max_workers=workers, initializer=init_worker,
                             mp_context=multiprocessing.get_context("spawn"))
    try:
        futs = [ex.submit(fit_one, run_replicate, design, i, r, out / "work") for i, r in todo]
        for fut in as_completed(futs):
            table.add(fut.result())
    except KeyboardInterrupt:
        _stop(ex)
        raise FitInterrupted(f"{len(table.df)} replicate(s) finished in {out / 'results.csv'}; "
                             "the running ones start again on resume") from None
    except BaseException:
        _stop(ex)
        raise
    ex.shutdown(wait=True)


def _stop(ex) -> None:
    """End a process pool now: cancel what has not started and terminate the workers."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
