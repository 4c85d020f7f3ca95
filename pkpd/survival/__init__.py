"""Survival endpoints: Kaplan-Meier estimates, medians and landmark rates, numbers at risk and
hazard ratios, vectorised over trial replicates (checked against lifelines).

Imports only lower layers (ground).
"""

from .._lazy import attach

_EXPORTS: dict[str, tuple[str, ...]] = {}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
