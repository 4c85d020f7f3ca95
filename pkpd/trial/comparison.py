"""Compare trial arms (scenarios) with common random numbers.

    from pkpd.trial import compare
    cmp = compare(["triplet", "triplet_anlotinib_10mg", "durvalumab_ep"], n=500, replicates=20)
    cmp.table       # scenario x endpoint: mean and 90% interval over replicates
    cmp.pairwise    # for each pair and endpoint: P(A better than B)
    cmp.hazard      # for each pair: PFS hazard ratio of A vs B per replicate (median, interval)

Every arm is run with the same seed, so replicate ``r`` of every arm has the same virtual
patients (covariates and IIV draws); only the regimens differ. ``P(A better than B)`` for an
endpoint is the fraction of replicates in which A's value is better than B's (ties count one
half). These are paired comparisons, so regimen effects are not blurred by sampling different
patients. "Better" is higher for response rates, PFS and DoR, later for resistance onset, and
lower (deeper) for the median best % change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import SpecError
from ..survival.hazard import hazard_ratio
from .design import load_scenario
from .run import ENDPOINTS, TrialResult, run_trial

__all__ = ["compare", "Comparison", "HIGHER_IS_BETTER"]

#: per endpoint: True when a higher value is better
HIGHER_IS_BETTER = {k: k != "median_depth_pct" for k in ENDPOINTS}


@dataclass
class Comparison:
    """The arms' results and their comparison (see the module docstring)."""

    results: dict[str, TrialResult]
    table: pd.DataFrame
    pairwise: pd.DataFrame
    hazard: pd.DataFrame


def _p_better(a: np.ndarray, b: np.ndarray, higher: bool) -> float:
    """Fraction of paired replicates in which ``a`` beats ``b`` (ties count 1/2; a replicate
    where either value is NaN is left out; NaN when none is left)."""
    ok = ~(np.isnan(a) | np.isnan(b))
    if not ok.any():
        return float("nan")
    a, b = a[ok], b[ok]
    win = a > b if higher else a < b
    return float(np.mean(win + 0.5 * (a == b)))


def _table(results: dict[str, TrialResult], level: float) -> pd.DataFrame:
    rows = []
    for name, res in results.items():
        s = res.summary(level)
        for key in ENDPOINTS:
            rows.append({"scenario": name, "endpoint": key, "mean": s.loc[key, "mean"],
                         "lo": s.loc[key, "lo"], "hi": s.loc[key, "hi"]})
    return pd.DataFrame(rows)


def _pairwise(results: dict[str, TrialResult]) -> pd.DataFrame:
    names = list(results)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = results[a].endpoints, results[b].endpoints
            for key in ENDPOINTS:
                p = _p_better(ea[key].to_numpy(float), eb[key].to_numpy(float),
                              HIGHER_IS_BETTER[key])
                rows.append({"a": a, "b": b, "endpoint": key, "p_a_better": p})
    return pd.DataFrame(rows)


def _pfs_arrays(res: TrialResult) -> tuple[np.ndarray, np.ndarray]:
    p = res.patients.sort_values(["replicate", "ID"], kind="stable")
    r = res.meta["replicates"]
    return (p["pfs_days"].to_numpy(float).reshape(r, -1),
            p["pfs_event"].to_numpy(float).reshape(r, -1))


def _hazard(results: dict[str, TrialResult], level: float) -> pd.DataFrame:
    names = list(results)
    q = (1 - level) / 2
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            tb, eb = _pfs_arrays(results[b])
            ta, ea = _pfs_arrays(results[a])
            hr = np.atleast_1d(hazard_ratio(tb, eb, ta, ea).hazard_ratio)  # A vs B
            rows.append({"a": a, "b": b, "pfs_hr_median": float(np.nanmedian(hr)),
                         "pfs_hr_lo": float(np.nanquantile(hr, q)),
                         "pfs_hr_hi": float(np.nanquantile(hr, 1 - q)),
                         "p_hr_below_1": float(np.mean(hr < 1))})
    return pd.DataFrame(rows)


def compare(scenarios, *, n: int | None = None, replicates: int = 20, seed: int = 0,
            level: float = 0.90, progress: bool = False, dask=None) -> Comparison:
    """Run each scenario with the same seed (common random numbers) and compare them.

    ``n``: patients per arm and replicate (default: each scenario's own ``n``; give one value
    so that the arms share their patients). ``dask``: a ``distributed.Client`` or scheduler
    address to run the replicates on (same numbers as in this process)."""
    names = [str(s) for s in scenarios]
    if len(names) < 2:
        raise SpecError(f"compare needs at least two scenarios; got {names}. Fix: e.g. "
                        "pkpd compare triplet durvalumab_ep")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise SpecError(f"scenario {dup[0]!r} is listed twice. Fix: name each arm once")
    if not 0 < level < 1:
        raise SpecError(f"level = {level!r} must be between 0 and 1. Fix: e.g. 0.90")
    if n is None:
        sizes = {s: load_scenario(s).n for s in names}
        if len(set(sizes.values())) > 1:
            raise SpecError(f"the arms have different sizes {sizes}, so they cannot share "
                            "their patients. Fix: pass one n for all arms (--n)")
    results = {s: run_trial(s, n=n, replicates=replicates, seed=seed, progress=progress,
                            dask=dask) for s in names}
    return Comparison(results, _table(results, level), _pairwise(results),
                      _hazard(results, level))
