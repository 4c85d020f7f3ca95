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
    "run": ("run_trial", "TrialResult", "ENDPOINTS", "HEADLINE"),
    "comparison": ("compare", "Comparison", "HIGHER_IS_BETTER"),
    "recist_scan": ("evaluate_scans", "ScanRecistResult", "SCAN_RESPONSE_CODES", "BOR_CODES"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
