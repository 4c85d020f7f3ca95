"""Running a design: R simulated trials per truth, each fitted, one results row per trial.

Output folder (default ``<design folder>/<name>/``, e.g. ``fits/designs/three_arm_40/``)::

    design.json    the design's name, fingerprint, rule, truths and replicate seeds source
    results.csv    one row per finished replicate (RESULT_COLUMNS), rewritten atomically after
                   each replicate, so that an interrupted run loses at most the running one
    summary.json   operating characteristics per truth (pkpd.design.summary.summarise)
    summary.md     the same as a Markdown table
    oc.png         P(claim) against the true value, with +/- 2 Monte Carlo SE bars
    work/          the running replicate's fit checkpoints (removed when it finishes)

Resume: a rerun with the same design (same fingerprint: base spec, arms, truths, seed, level,
rule, sampler, regimens) skips every replicate already in results.csv, keyed by
``(truth_index, replicate)``; a larger ``replicates`` adds replicates. A Ctrl-C inside a
replicate's fit keeps that fit's completed chain batches (pkpd.fit checkpoints), which the rerun
resumes. A folder holding another design's results is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PkpdError
from ..io import atomic_write_csv, atomic_write_text
from .drivers import driver_cache
from .spec import Design, fit_raw, load_design, replicate_seeds
from .summary import RESULT_COLUMNS, read_results, summarise

__all__ = ["run_design", "run_replicate", "replicate_row"]


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _fit(spec, out: Path):
    """The replicate fit (tests patch this). Writes nothing but checkpoints in ``out``'s
    hidden ``.partial`` sibling, which :func:`run_replicate` removes afterwards."""
    from ..fit.run import fit
    return fit(spec, out=out, write=False, progress=False)


def _stat(summ, parameter: str, column: str) -> float:
    """``summ.loc[parameter, column]`` as a float (NaN where the summary lacks it)."""
    try:
        return float(summ.loc[parameter, column])
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
        "worst_parameter": str(summ["r_hat"].astype(float).idxmax()),
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


def run_replicate(design: Design, truth_index: int, replicate: int, work: Path) -> dict:
    """Simulate and fit one replicate trial; its results row (wall time included)."""
    from ..fit.folders import FitFolders, remove_ours
    from ..fit.spec import load_spec
    t0 = time.perf_counter()
    spec = load_spec(fit_raw(design, truth_index, replicate))
    dirs = FitFolders.at(work / spec.name)
    result = _fit(spec, dirs.out)
    row = replicate_row(design, truth_index, replicate, result)
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
                            f"{design.name}: base spec, arms, truths, seed, rule, sampler or "
                            "regimens changed); pkpd does not mix them. Fix: give another "
                            "--out, or move that folder away to start again")
    elif (out / "results.csv").exists():
        raise PkpdError(f"{out} has a results.csv but no design.json; pkpd does not know which "
                        "design made it. Fix: give another --out")
    atomic_write_text(meta, json.dumps({
        "written_by": "pkpd design", "name": design.name, "fingerprint": fp,
        "spec": str(design.path) if design.path else None,
        "base": str(design.base_path) if design.base_path else None,
        "description": design.description, "arms": design.arms, "truths": list(design.truths),
        "seed": design.seed, "level": design.level, "rule": design.rule.__dict__,
        "rule_text": design.rule.text(), "sampler": design.sampler}, indent=1))
    return read_results(out)


def run_design(spec_or_path, out=None, replicates: int | None = None, progress: bool = True):
    """Estimate a design's operating characteristics: for each truth, ``replicates`` simulated
    trials (new patients, etas, residuals and sampler seeds), each fitted with the design's
    short sampler schedule; then :func:`pkpd.design.summary.summarise`.

    Parameters
    ----------
    spec_or_path : Design, dict or path of a design TOML (:func:`load_design`)
    out : results folder (default ``<design folder>/<name>``); rerunning resumes it
    replicates : replicates per truth (default: the design's ``replicates``)
    progress : print one line per replicate (truth, r/R, P(parameter > threshold), seconds)

    Returns
    -------
    dict : the summary (as written to summary.json)

    Raises
    ------
    FitInterrupted : Ctrl-C; finished replicates are in results.csv, the running one's
        completed chain batches are checkpointed; the same call resumes
    PkpdError : a bad design, or a folder holding another design's results
    """
    design = spec_or_path if isinstance(spec_or_path, Design) else load_design(spec_or_path)
    R = design.replicates if replicates is None else int(replicates)
    if R < 1:
        raise PkpdError(f"replicates = {replicates} must be >= 1. Fix: e.g. --replicates 5")
    if out is None:
        out = (design.path.parent if design.path else Path("fits") / "designs") / design.name
    out = Path(os.path.abspath(os.fspath(out)))
    df = _open_folder(design, out)
    done = {(int(a), int(b)) for a, b in zip(df["truth_index"], df["replicate"])}
    rows = [df] if len(df) else []
    p = design.rule.parameter
    with driver_cache():
        for i, truth in enumerate(design.truths):
            for r in range(R):
                if (i, r) in done:
                    continue
                row = run_replicate(design, i, r, out / "work")
                rows.append(pd.DataFrame([row], columns=RESULT_COLUMNS))
                df = pd.concat(rows, ignore_index=True).sort_values(["truth_index", "replicate"])
                rows = [df]
                atomic_write_csv(df, out / "results.csv", float_format="%.8g")
                _log(f"{design.name}: truth {i + 1}/{len(design.truths)} ({p} = {truth[p]:g}), "
                     f"replicate {r + 1}/{R}: P({p} > {design.rule.threshold:g}) = "
                     f"{row['p_gt']:.3f}, claim {'yes' if row['claim'] else 'no'}, "
                     f"{row['wall_s']:.0f} s", progress)
    work = out / "work"
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return summarise(out, replicates=R)
