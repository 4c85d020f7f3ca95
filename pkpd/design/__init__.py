"""Operating characteristics of trial designs: replicate simulated trials, each fitted.

    from pkpd.design import run_design, summarise, compare_designs
    run_design("fits/designs/three_arm_40.toml")   # writes fits/designs/three_arm_40/

A design (``fits/designs/*.toml``, :mod:`pkpd.design.spec`) names a simulated-data fit spec,
the arms, the truths, the number of replicates and the rule ("claim synergy when
P(PSI > 0 | data) > 0.9"). :mod:`pkpd.design.run` fits every replicate and keeps one row per
trial (resumable); :mod:`pkpd.design.summary` gives the false-positive rate, power and interval
coverage with Monte Carlo SEs. See docs/design.md.

Layer: between fit and trial (imports ground to fit).
"""

from .._lazy import attach

_EXPORTS = {
    "spec": ("Design", "Rule", "load_design", "replicate_seeds", "fit_raw"),
    "run": ("run_design", "run_replicate", "replicate_row"),
    "summary": ("summarise", "compare_designs", "read_results", "binomial_se", "FPR_MAX",
                "COVERAGE_RANGE", "SUMMARY_COLUMNS", "RESULT_COLUMNS"),
    "drivers": ("driver_cache",),
    "cli": ("add_parser", "main_cli"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
