"""Virtual trials: virtual populations, trial designs and scenarios, scan-based RECIST endpoints
(ORR, DCR, PFS, DoR) with posterior uncertainty, and schedule comparison.

Imports only lower layers (ground, dosing, cards, pk, tumour, clinical, survival, fit).
"""

from .._lazy import attach

_EXPORTS: dict[str, tuple[str, ...]] = {
    "design": ("Scenario", "ScanSchedule", "load_scenario", "list_scenarios", "scenarios_dir",
               "parse_scan_schedule"),
    "population": ("Population", "list_populations", "populations_dir", "COVARIATE_UNITS",
                   "BASE_COLUMNS", "PLAUSIBLE_RANGES", "UNIFORMS_PER_PATIENT"),
    "run": ("run_trial", "TrialResult", "ENDPOINTS", "HEADLINE", "draw_index"),
    "comparison": ("compare", "Comparison", "HIGHER_IS_BETTER", "control_stream"),
    "sources": ("posterior_draws", "check_draws", "card_for_draw", "OMEGA2_PREFIX"),
    "success": ("Rule", "parse_rule", "parse_rules", "wilson_interval", "COMPARATIVE",
                "success_rows", "success_frame", "SUCCESS_COLUMNS", "FRACTIONS"),
    "optimise": ("OptimisationResult", "build_problem", "Problem", "on_day_weights",
                 "OBJECTIVES", "CAPSULES_MG", "subsample_draws"),
    "abc": ("GaussianPrior", "AbcResult", "abc_smc"),
    "calibrate": ("CalibrationSpec", "Target", "load_calibration",
                  "simulate_targets", "check_card", "posterior_table", "posterior_summary"),
    "recist_scan": ("evaluate_scans", "ScanRecistResult", "SCAN_RESPONSE_CODES", "BOR_CODES"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
