"""Survival endpoints: Kaplan-Meier estimates, medians and landmark rates, numbers at risk and
hazard ratios, vectorised over trial replicates (checked against lifelines).

Imports only lower layers (ground).
"""

from .._lazy import attach

_EXPORTS: dict[str, tuple[str, ...]] = {
    "km": (
        "DAYS_PER_MONTH", "KaplanMeier", "MedianSurvival", "days_to_months", "months_to_days",
        "kaplan_meier", "km_median", "km_rate", "number_at_risk", "survival_table",
    ),
    "hazard": ("HazardRatio", "LogRank", "hazard_ratio", "logrank_test"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
