"""Plots of pkpd results (matplotlib, written as PNG files).

* :mod:`pkpd.plots.trial`: the forest plot of a trial comparison and overlaid Kaplan-Meier
  curves of PFS with numbers at risk.

Imports only lower layers (everything up to trial).
"""

from .._lazy import attach

_EXPORTS: dict[str, tuple[str, ...]] = {
    "trial": ("forest_plot", "km_plot"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
