"""Figures of a trial comparison (:func:`pkpd.trial.compare`): a forest plot of the endpoints and
overlaid Kaplan-Meier curves of PFS with the numbers at risk under the axis."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes
from ..survival.km import DAYS_PER_MONTH, kaplan_meier, number_at_risk

__all__ = ["forest_plot", "km_plot"]

_LABELS = {"orr": "ORR", "orr_confirmed": "confirmed ORR", "dcr": "DCR",
           "median_pfs_months": "median PFS (months)", "pfs_6m": "PFS at 6 months",
           "pfs_12m": "PFS at 12 months", "median_dor_months": "median DoR (months)",
           "median_depth_pct": "median best change (%)",
           "median_resistance_onset_months": "median resistance onset (months)"}


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def forest_plot(comparison, path, endpoints=("orr_confirmed", "pfs_6m", "pfs_12m",
                                             "median_pfs_months")) -> Path:
    """One panel per endpoint: each scenario's mean with its interval over replicates."""
    from matplotlib.figure import Figure

    t = comparison.table
    names = list(comparison.results)
    fig = Figure(figsize=(3.2 * len(endpoints), 0.5 * len(names) + 1.4))
    axes = fig.subplots(1, len(endpoints), sharey=True, squeeze=False)
    y = np.arange(len(names))[::-1]
    for ax, key in zip(axes[0], endpoints):
        rows = t[t.endpoint == key].set_index("scenario").loc[names]
        ax.errorbar(rows["mean"], y, xerr=[rows["mean"] - rows["lo"], rows["hi"] - rows["mean"]],
                    fmt="o", color="k", capsize=3)
        ax.set_title(_LABELS.get(key, key), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, names, fontsize=8)
    level = comparison.results[names[0]].meta["replicates"]
    fig.suptitle(f"mean and 90% interval over {level} replicate(s)", fontsize=9, y=1.06)
    return _save(fig, path)


def km_plot(comparison, path, months: float = 24.0, ticks_months: float = 3.0) -> Path:
    """Kaplan-Meier curves of PFS, one per scenario (all replicates pooled), with the numbers
    at risk (per replicate, on average) every ``ticks_months`` under the axis."""
    from matplotlib.figure import Figure

    ticks = np.arange(0.0, months + 1e-9, ticks_months)
    fig = Figure(figsize=(7, 5.2))
    ax, tab = fig.subplots(2, 1, height_ratios=[4, 1.2], sharex=True)
    rows = []
    for name, res in comparison.results.items():
        p = res.patients
        km = kaplan_meier(p.pfs_days.to_numpy(float), p.pfs_event.to_numpy(float))
        ax.step(km.time_days / DAYS_PER_MONTH, km.survival, where="post", label=name)
        risk = number_at_risk(p.pfs_days.to_numpy(float), ticks * DAYS_PER_MONTH)
        rows.append((name, np.asarray(risk) / res.meta["replicates"]))
    ax.set_ylabel("progression-free")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, months)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    tab.set_axis_off()
    for i, (name, risk) in enumerate(rows):
        yy = 1 - (i + 1) / (len(rows) + 1)
        tab.text(-0.07, yy, name, ha="right", va="center", fontsize=7, transform=tab.transAxes)
        for t, r in zip(ticks, risk):
            tab.text(t, yy, f"{r:.0f}", ha="center", va="center", fontsize=7,
                     transform=tab.get_xaxis_transform())
    tab.set_title("number at risk (per replicate)", fontsize=8)
    tab.set_xlabel("months")
    ax.tick_params(labelbottom=True)
    ax.set_xlabel("months since the first dose")
    fig.subplots_adjust(hspace=0.55)
    return _save(fig, path)
