"""Operating characteristics of a design from its replicate results, with Monte Carlo SEs.

Per truth, over its R replicate trials:

* ``p_claim``: the fraction of trials in which the rule claims an effect. Under a truth at or
  below the rule's threshold (no effect) it is the false-positive rate, otherwise the power. Its
  Monte Carlo SE is the binomial ``sqrt(p (1 - p) / R)``.
* ``coverage``: the fraction of trials whose ``level`` posterior interval holds the truth, with
  the same binomial SE; ``mean_width`` the mean interval width.
* ``onset_coverage``: the mean over trials of the fraction of patients whose true resistance
  onset lies in their 90% posterior interval (``pkpd.fit.estimands.coverage``).

Flags: a false-positive rate above ``FPR_MAX`` = 0.10 is "within MC error" while it is at most
``0.10 + 2 sqrt(0.10 x 0.90 / R)`` (2 SEs of a rate of exactly 0.10: not distinguishable from
0.10 by R trials), and "too high" beyond; a coverage outside ``COVERAGE_RANGE`` = 0.84-0.96 is
flagged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PkpdError
from ..io import atomic_write_bytes, atomic_write_csv, atomic_write_text

__all__ = ["summarise", "compare_designs", "read_results", "read_failures", "binomial_se",
           "FPR_MAX", "COVERAGE_RANGE", "SUMMARY_COLUMNS", "RESULT_COLUMNS", "FAILURE_COLUMNS"]

FPR_MAX = 0.10
COVERAGE_RANGE = (0.84, 0.96)
#: one row per replicate trial; ``p_gt``: P(parameter > threshold | data); ``lower``/``upper``:
#: the equal-tailed ``level`` posterior interval; times in seconds
RESULT_COLUMNS = [
    "design", "truth_index", "replicate", "parameter", "truth", "data_seed", "sampler_seed",
    "p_gt", "mean", "lower", "upper", "level", "covered", "claim", "max_r_hat", "min_ess_bulk",
    "worst_parameter", "r_hat_rule", "ess_bulk_rule", "divergences", "failed_evaluations",
    "onset_coverage", "onset_n", "n_subjects", "n_obs", "wall_s", "sampling_s", "pilot_s",
    "compile_s",
]

#: one row per replicate whose fit failed (failures.csv): its seeds, truth and the error
FAILURE_COLUMNS = ["design", "truth_index", "replicate", "parameter", "truth", "data_seed",
                   "sampler_seed", "error", "wall_s"]

SUMMARY_COLUMNS = ["design", "truth_index", "truth", "kind", "n", "n_claim", "p_claim",
                   "se_claim", "coverage", "se_coverage", "mean_width", "onset_coverage",
                   "mean_p_gt", "max_r_hat", "n_r_hat_above_1_01", "min_ess_bulk",
                   "divergences", "failed_evaluations", "mean_wall_s", "fpr_flag",
                   "coverage_flag", "n_failed_fits"]


def binomial_se(p: float, n: int) -> float:
    """Monte Carlo SE of a proportion ``p`` estimated from ``n`` independent trials."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else float("nan")


def _read_table(f: Path, columns: list[str]) -> pd.DataFrame:
    """A design folder's CSV (an empty table with ``columns`` if the file does not exist)."""
    if not f.is_file():
        return pd.DataFrame(columns=columns)
    try:
        df = pd.read_csv(f)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PkpdError(f"{f} cannot be read as a table ({' '.join(str(exc).split())}). Fix: "
                        "move it away and run the design again") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PkpdError(f"{f} lacks columns {', '.join(missing)}: not a pkpd design result. "
                        "Fix: give another --out, or move the file away")
    return df


def read_results(out) -> pd.DataFrame:
    """results.csv of a design folder (an empty table with :data:`RESULT_COLUMNS` if none)."""
    return _read_table(Path(out) / "results.csv", RESULT_COLUMNS)


def read_failures(out) -> pd.DataFrame:
    """failures.csv of a design folder (an empty table with :data:`FAILURE_COLUMNS` if none)."""
    return _read_table(Path(out) / "failures.csv", FAILURE_COLUMNS)


def _failure_flags(failed: pd.DataFrame, done: pd.DataFrame, par: str, sbc: bool) -> list[str]:
    """One flag per truth with failed replicate fits: how many of how many, and the first
    error. Failed fits are excluded from every rate, so a reader must see them."""
    out = []
    for i, g in failed.groupby("truth_index", sort=True):
        n_ok = int((done["truth_index"] == i).sum())
        what = "SBC" if sbc else f"{par} = {float(g['truth'].iloc[0]):g}"
        out.append(f"{what}: {len(g)} of {len(g) + n_ok} replicate fits failed (failures.csv; "
                   f"first: {g['error'].iloc[0]}); the numbers above are over the {n_ok} "
                   "that finished")
    return out


def _fpr_flag(p: float, n: int) -> str:
    if p <= FPR_MAX:
        return "ok"
    return ("within MC error" if p <= FPR_MAX + 2.0 * binomial_se(FPR_MAX, n) else "too high")


def _truth_row(name: str, i: int, g: pd.DataFrame, threshold: float, n_failed: int = 0) -> dict:
    n = len(g)
    truth = float(g["truth"].iloc[0])
    claims = int(g["claim"].astype(bool).sum())
    p = claims / n
    cov = float(g["covered"].astype(bool).mean())
    null = truth <= threshold
    rhat = g["max_r_hat"].to_numpy(float)
    return {
        "design": name, "truth_index": int(i), "truth": truth,
        "kind": "false-positive rate" if null else "power", "n": n, "n_claim": claims,
        "p_claim": p, "se_claim": binomial_se(p, n), "coverage": cov,
        "se_coverage": binomial_se(cov, n),
        "mean_width": float((g["upper"] - g["lower"]).mean()),
        "onset_coverage": float(np.nanmean(g["onset_coverage"].to_numpy(float)))
        if g["onset_coverage"].notna().any() else float("nan"),
        "mean_p_gt": float(g["p_gt"].mean()), "max_r_hat": float(np.nanmax(rhat)),
        "n_r_hat_above_1_01": int(np.sum(rhat > 1.01)),
        "min_ess_bulk": float(g["min_ess_bulk"].min()),
        "divergences": int(g["divergences"].sum()),
        "failed_evaluations": int(g["failed_evaluations"].sum()),
        "mean_wall_s": float(g["wall_s"].mean()),
        "fpr_flag": _fpr_flag(p, n) if null else "",
        "coverage_flag": "ok" if COVERAGE_RANGE[0] <= cov <= COVERAGE_RANGE[1] else "outside",
        "n_failed_fits": int(n_failed),
    }


def _load(results):
    """(results table, design.json dict) from a folder, a results.csv path or a DataFrame."""
    if isinstance(results, pd.DataFrame):
        return results, {}, None, pd.DataFrame(columns=FAILURE_COLUMNS)
    folder = Path(results)
    if folder.is_file():
        folder = folder.parent
    if not (folder / "results.csv").is_file():
        raise PkpdError(f"{folder} has no results.csv. Fix: give the folder `pkpd design` "
                        "wrote, or run the design first")
    meta = {}
    if (folder / "design.json").is_file():
        meta = json.loads((folder / "design.json").read_text())
    return read_results(folder), meta, folder, read_failures(folder)


def summarise(results, out=None, *, write: bool = True, threshold: float | None = None,
              replicates: int | None = None) -> dict:
    """Operating characteristics per truth (module docstring), with Monte Carlo SEs.

    Parameters
    ----------
    results : folder written by :func:`pkpd.design.run_design` (or its results.csv), or a
        DataFrame with :data:`pkpd.design.run.RESULT_COLUMNS`
    out : folder for summary.json, summary.md and oc.png (default: the results folder; nothing
        is written for a DataFrame without ``out``, or with ``write=False``)
    threshold : the rule's threshold (default: design.json's, else 0): truths at or below it
        count as "no effect" (false-positive rate)
    replicates : summarise only replicates ``0 .. replicates - 1`` of each truth (default: all)

    Returns
    -------
    dict : ``design``, ``rule``, ``level``, ``truths`` (one dict per truth, SUMMARY_COLUMNS),
        ``flags`` (plain-English lines; empty when every check passes)
    """
    df, meta, folder, failed = _load(results)
    if replicates is not None:
        df = df[df["replicate"] < int(replicates)]
        failed = failed[failed["replicate"] < int(replicates)]
    if df.empty:
        raise PkpdError("no finished replicates to summarise. Fix: run the design first")
    name = str(meta.get("name") or df["design"].iloc[0])
    if any(c.startswith("pit_") for c in df.columns):
        return _summarise_sbc(df, name, meta, Path(out) if out is not None else folder, write,
                              failed)
    rule = meta.get("rule", {})
    thr = float(threshold if threshold is not None else rule.get("threshold", 0.0))
    n_failed = {int(k): int(v) for k, v in failed.groupby("truth_index").size().items()}
    rows = [_truth_row(name, i, g, thr, n_failed.get(int(i), 0))
            for i, g in df.groupby("truth_index", sort=True)]
    par = str(df["parameter"].iloc[0])
    flags = []
    for r in rows:
        if r["fpr_flag"] and r["fpr_flag"] != "ok":
            flags.append(f"{par} = {r['truth']:g}: false-positive rate {r['p_claim']:.3f} "
                         f"(SE {r['se_claim']:.3f}) is above {FPR_MAX} ({r['fpr_flag']})")
        if r["coverage_flag"] != "ok":
            flags.append(f"{par} = {r['truth']:g}: {100 * float(df['level'].iloc[0]):g}% "
                         f"interval coverage {r['coverage']:.3f} (SE {r['se_coverage']:.3f}) is "
                         f"outside {COVERAGE_RANGE[0]}-{COVERAGE_RANGE[1]}")
    flags += _failure_flags(failed, df, par, sbc=False)
    summary = {"design": name, "parameter": par, "rule": meta.get("rule_text", ""),
               "threshold": thr, "level": float(df["level"].iloc[0]), "truths": rows,
               "flags": flags, "identification": meta.get("identification")}
    target = Path(out) if out is not None else folder
    if write and target is not None:
        atomic_write_text(target / "summary.json", json.dumps(_jsonable(summary), indent=1))
        atomic_write_text(target / "summary.md", summary_markdown(summary))
        plot_oc({name: rows}, target / "oc.png", par)
    return summary


def _summarise_sbc(df, name, meta, target, write, failed) -> dict:
    """A simulation-based calibration design (``truths = "prior"``): per-parameter calibration
    (:func:`pkpd.design.sbc.summarise_sbc`) instead of per-truth operating characteristics;
    writes summary.json, summary.md and sbc.png."""
    from .sbc import plot_sbc, sbc_markdown, summarise_sbc
    level = float(df["level"].iloc[0])
    s = summarise_sbc(df, level)
    s["flags"] = s["flags"] + _failure_flags(failed, df, str(df["parameter"].iloc[0]), sbc=True)
    s["n_failed_fits"] = len(failed)
    summary = {"design": name, "kind": "sbc", "parameter": str(df["parameter"].iloc[0]),
               "rule": meta.get("rule_text", ""), "level": level,
               "prior_only": list(meta.get("prior_only") or []), **s,
               "max_r_hat": float(np.nanmax(df["max_r_hat"].to_numpy(float))),
               "divergences": int(df["divergences"].sum()),
               "n_divergent_fits": int((df["divergences"] > 0).sum()),
               "mean_wall_s": float(df["wall_s"].mean())}
    if write and target is not None:
        atomic_write_text(target / "summary.json", json.dumps(_jsonable(summary), indent=1))
        atomic_write_text(target / "summary.md", sbc_markdown(name, summary))
        plot_sbc(df, target / "sbc.png")
    return summary


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v, spec=".3f") -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _table(rows, par: str) -> str:
    head = (f"| design | {par} | rule fires: | P(claim) ± SE | coverage ± SE | mean width | "
            "onset coverage | R | max R-hat | divergences |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['design']} | {r['truth']:g} | {r['kind']} | {_fmt(r['p_claim'])} ± "
            f"{_fmt(r['se_claim'])} | {_fmt(r['coverage'])} ± {_fmt(r['se_coverage'])} | "
            f"{_fmt(r['mean_width'])} | {_fmt(r['onset_coverage'])} | {r['n']} | "
            f"{_fmt(r['max_r_hat'])} | {r['divergences']} |")
    return "\n".join(lines) + "\n"


def summary_markdown(summary: dict) -> str:
    """summary.md: the rule, the per-truth table and the flags."""
    par = summary["parameter"]
    text = [f"# Operating characteristics: {summary['design']}", "",
            f"Rule: claim when {summary['rule'] or par + ' > threshold'}. Interval: "
            f"{100 * summary['level']:g}% equal-tailed. Monte Carlo SEs are binomial, "
            "sqrt(p(1-p)/R).", "", _table(summary["truths"], par)]
    text.append("Flags: " + ("; ".join(summary["flags"]) if summary["flags"] else "none") + "\n")
    ident = summary.get("identification") or {}
    if ident.get("note"):
        text.append(f"Design ({ident['status']}): {ident['note']}.\n")
    return "\n".join(text)


def plot_oc(tables: dict, path, parameter: str = "PSI") -> Path:
    """oc.png: P(claim) against the true value, one line per design, +/- 2 SE bars."""
    import matplotlib
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for k, (name, rows) in enumerate(tables.items()):
        x = np.array([r["truth"] for r in rows]) + 0.01 * (k - (len(tables) - 1) / 2)
        y = np.array([r["p_claim"] for r in rows])
        e = 2 * np.array([r["se_claim"] for r in rows])
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
    ax.axhline(FPR_MAX, color="grey", ls=":", lw=1, label=f"{FPR_MAX} (false positives)")
    ax.set_xlabel(f"true {parameter}")
    ax.set_ylabel("P(claim)  (± 2 Monte Carlo SE)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def compare_designs(folders, out=None) -> pd.DataFrame:
    """One table across designs (rows design x truth, :data:`SUMMARY_COLUMNS`).

    ``out``: a folder for comparison.csv, comparison.md and oc.png (all designs in one plot).
    """
    tables, par = {}, "PSI"
    for f in folders:
        s = summarise(f, write=False)
        if s.get("kind") == "sbc":
            raise PkpdError(f"{f} holds a simulation-based calibration (truths = \"prior\"), "
                            "not operating characteristics at fixed truths. Fix: read its "
                            "summary.md; compare OC designs only")
        if s["design"] in tables:
            raise PkpdError(f"design {s['design']} is given twice ({f}). Fix: give each once")
        tables[s["design"]] = s["truths"]
        par = s["parameter"]
    rows = [r for t in tables.values() for r in t]
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if out is not None:
        out = Path(out)
        atomic_write_csv(df, out / "comparison.csv", float_format="%.6g")
        atomic_write_text(out / "comparison.md", _table(rows, par))
        plot_oc(tables, out / "oc.png", par)
    return df
