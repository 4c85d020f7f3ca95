"""Markdown report of a finished fit (``report.md`` in the fit folder)."""

from __future__ import annotations

import pandas as pd

__all__ = ["fit_report"]


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loo_lines(d: dict) -> list[str]:
    """PSIS-LOO lines, each with its unit and whether the estimate is reliable (no unit with
    Pareto k-hat above 0.7); an unreliable one is not a misfit (see docs/fitting.md)."""
    lines = []
    for key, unit, label in (("loo", None, None),
                             ("loo_by_observation", "obs", "leave one observation out")):
        lo = d.get(key) or {}
        if lo.get("elpd_loo") is None:
            continue
        by = lo.get("by", unit or "subject")
        label = label or ("leave one patient out" if by == "subject"
                          else "leave one observation out")
        units = "patients" if by == "subject" else "observations"
        n_high = lo.get("n_pareto_k_above_0.7")
        text = (f"- PSIS-LOO ({label}): elpd_loo {lo['elpd_loo']:.1f} "
                f"(SE {lo.get('se') or float('nan'):.1f}), p_loo {lo.get('p_loo') or 0:.1f}")
        if n_high:
            text += (f"; not reliable: Pareto k-hat > 0.7 for {n_high} of {lo.get('n_units')} "
                     f"{units} (expected with few observations per patient; compare models "
                     "by k-fold or leave-one-patient-out refits)")
        elif n_high == 0:
            text += "; reliable (all Pareto k-hat <= 0.7)"
        lines.append(text)
    return lines


def _coverage_lines(d: dict) -> list[str]:
    """Predictive coverage lines: population (VPC, new etas; the check) and individual (own
    etas; above the target is expected)."""
    lines = []
    pop = d.get("ppc_population") or {}
    if pop.get("coverage") is not None:
        lines.append(f"- Population predictive (VPC, new etas) {pop['target_coverage']:.0%} "
                     f"interval coverage: {pop['coverage']:.1%} of {pop['n_used']} "
                     "observations (a correct model is close to the target)")
    ind = d.get("ppc") or {}
    if ind.get("coverage") is not None:
        lines.append(f"- Individual predictive (each patient's own etas) "
                     f"{ind['target_coverage']:.0%} interval coverage: {ind['coverage']:.1%} "
                     "(above the target is expected: the etas were fitted to these "
                     "observations; only under-coverage is flagged)")
    return lines


def fit_report(result) -> str:
    """Human-readable summary: data, settings, estimates, diagnostics, estimands."""
    r = result.record
    d = r.get("diagnostics", {})
    s = r["sampler"]
    t = r["timing"]
    out = [f"# Fit {r['name']}", "", r.get("description") or "", "",
           f"- Data: {r['data']} (sha256 {str(r['data_sha256'])[:12]}...), "
           f"{r['n_subjects']} subjects, {r['n_obs']} observations "
           f"({r['n_censored']} censored)",
           f"- Model: {r['model']['kind']} `{r['model']['ref']}`, residual "
           f"{r['model']['residual']}",
           f"- Sampler: {s['name']}, {s['chains']} chains x ({s['tune']} tune + {s['draws']} "
           f"draws), seed {s['seed']}, target_accept {s['target_accept']}",
           f"- Wall time: {t['total_s']:.0f} s (sampling {t['sampling_s']:.0f} s)",
           f"- Failed solves during sampling: {r['failures']['failed_evaluations']} "
           "log-density evaluations (each a rejected proposal)", "",
           "## Population parameters", "", _table(result.summary), ""]
    st = d.get("sampler", {})
    out += ["## Diagnostics", "",
            f"- Divergent transitions: {st.get('n_divergent')}",
            f"- BFMI (min over chains): {st.get('bfmi_min')}",
            f"- Problems: {'; '.join(d.get('problems', [])) or 'none'}",
            f"- Notes: {'; '.join(d.get('notes', [])) or 'none'}"]
    out += _loo_lines(d)
    sh = d.get("shrinkage") or {}
    if sh:
        out.append("- eta-shrinkage: " + ", ".join(
            f"{k} {v:.0%}" for k, v in sh.items() if v is not None))
    out += _coverage_lines(d)
    est = r.get("estimands") or {}
    if est.get("synergy"):
        sy = est["synergy"]
        out += ["", "## Synergy", "",
                f"PSI posterior mean {sy['mean']:.3g} (90% interval {sy['q5']:.3g} to "
                f"{sy['q95']:.3g}); P(PSI > 0) = {sy['p_gt_0']:.3f}"]
        note = (sy.get("identification") or {}).get("note")
        if note:
            out += ["", f"Design: {note}."]
    if est.get("population_onset"):
        po = est["population_onset"]
        out += ["", "## Resistance onset", "",
                "Population distribution of the per-patient posterior median onset (days): "
                + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in po.items())]
    rec = r.get("recovery")
    if rec:
        out += ["", "## Recovery (simulated truth)", "",
                f"Population truths inside the 90% intervals: {rec.get('coverage'):.0%} of "
                f"{rec.get('n_parameters')}"]
        for row in rec.get("population", []):
            out.append(f"- {row['parameter']}: truth {row['truth']:.4g}, 90% interval "
                       f"[{row['q5']:.4g}, {row['q95']:.4g}]" + ("" if row["covered"]
                                                                 else "  (missed)"))
        if rec.get("p_psi_gt_0") is not None:
            out.append(f"- PSI truth {rec['psi_truth']:.3g}: P(PSI > 0) = "
                       f"{rec['p_psi_gt_0']:.3f}")
        oc = rec.get("onset_coverage") or {}
        if oc.get("coverage") is not None:
            out.append(f"- Per-patient resistance onset: {oc['coverage']:.0%} of {oc['n']} "
                       "true onsets inside their 90% intervals")
    return "\n".join(out) + "\n"
