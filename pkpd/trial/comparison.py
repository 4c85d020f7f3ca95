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

Success rules (``success=``, :mod:`pkpd.trial.success`) are different: the probability that a
real trial meets ``hr_pfs < 0.7 vs ep`` depends on the sampling variance of the hazard ratio
between two groups of DIFFERENT patients. Pairing the arms' identical patients would understate
that variance. So for each control arm named in a ``vs ARM`` rule, the control is run once more
with its own patient stream (``run_trial(stream=...)``, derived from the arm's name): its
patients are independent of every other arm's, while the population draw of each replicate
(``draws=``) stays shared. The rule's HR and log-rank p of each arm are computed against that
independent control run (one control group shared by all arms, as in a multi-arm trial).
``table``, ``pairwise`` and ``hazard`` stay paired.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import SpecError
from ..survival.hazard import hazard_ratio, logrank_test
from .design import load_scenario
from .run import ENDPOINTS, TrialResult, run_trial

__all__ = ["compare", "Comparison", "HIGHER_IS_BETTER", "control_stream"]

#: per endpoint: True when a higher value is better
HIGHER_IS_BETTER = {k: k != "median_depth_pct" for k in ENDPOINTS}


@dataclass
class Comparison:
    """The arms' results and their comparison (see the module docstring)."""

    results: dict[str, TrialResult]
    table: pd.DataFrame
    pairwise: pd.DataFrame
    hazard: pd.DataFrame
    #: P(success) per rule and arm (:mod:`pkpd.trial.success`), when rules were given
    success: pd.DataFrame | None = None
    #: the independent control runs of ``vs ARM`` rules, by arm
    controls: dict[str, TrialResult] | None = None


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


def control_stream(arm: str) -> int:
    """The patient stream of the independent run of control arm ``arm`` (from its name)."""
    return zlib.crc32(f"control:{arm}".encode())


def _comparative(rule, arm: TrialResult, control: TrialResult) -> np.ndarray:
    """Per replicate: the HR (arm vs control) or the log-rank p of ``rule``'s endpoint."""
    tc, ec = _pfs_arrays(control)
    ta, ea = _pfs_arrays(arm)
    if rule.endpoint == "hr_pfs":
        return np.atleast_1d(hazard_ratio(tc, ec, ta, ea).hazard_ratio).astype(float)
    return np.atleast_1d(logrank_test(tc, ec, ta, ea).p_value).astype(float)


def _success(results, rules, level, run_control) -> tuple[pd.DataFrame | None, dict]:
    """The success table and the independent control runs (``run_control(name)``)."""
    from .success import success_frame, success_rows

    if not rules:
        return None, {}
    controls = {c: run_control(c) for c in dict.fromkeys(r.control for r in rules if r.control)}
    rows = []
    for name, res in results.items():
        met = {}
        for ru in rules:
            if ru.control == name:
                continue
            v = (_comparative(ru, res, controls[ru.control]) if ru.control
                 else res.endpoints[ru.endpoint].to_numpy(float))
            met[ru.text] = (ru.met(v), np.isnan(v))
        rows += success_rows(name, met, level) if met else []
    return success_frame(rows), controls


def compare(scenarios, *, n: int | None = None, replicates: int = 20, seed: int = 0,
            level: float = 0.90, card=None, draws: pd.DataFrame | None = None, success=None,
            params: dict | None = None, progress: bool = False, dask=None) -> Comparison:
    """Run each scenario with the same seed (common random numbers) and compare them.

    ``n``: patients per arm and replicate (default: each scenario's own ``n``; give one value
    so that the arms share their patients). ``card``: a tumour card in place of the scenarios'
    (e.g. a calibrated card); ``draws``: population draws (e.g.
    :func:`pkpd.trial.sources.posterior_draws`), replicate ``r`` of every arm uses the same row.
    ``success``: rules such as ``"orr_confirmed >= 0.75"`` or ``"hr_pfs < 0.7 vs ep"``
    (independent patients for ``vs`` rules, see the module docstring); the table is in
    ``.success``. ``params``: typical values fixed in every arm and replicate (e.g.
    ``{"PSI": 0.0}``), applied after ``draws``. ``dask``: a ``distributed.Client`` or
    scheduler address to run the replicates on (same numbers as in this process)."""
    from .success import parse_rules

    names = [str(s) for s in scenarios]
    if len(names) < 2:
        raise SpecError(f"compare needs at least two scenarios; got {names}. Fix: e.g. "
                        "pkpd compare triplet durvalumab_ep")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise SpecError(f"scenario {dup[0]!r} is listed twice. Fix: name each arm once")
    if not 0 < level < 1:
        raise SpecError(f"level = {level!r} must be between 0 and 1. Fix: e.g. 0.90")
    rules = parse_rules(success, arms=names, endpoints=ENDPOINTS)
    if n is None:
        sizes = {s: load_scenario(s).n for s in names}
        if len(set(sizes.values())) > 1:
            raise SpecError(f"the arms have different sizes {sizes}, so they cannot share "
                            "their patients. Fix: pass one n for all arms (--n)")
    kw = dict(n=n, replicates=replicates, seed=seed, card=card, draws=draws, params=params,
              progress=progress, dask=dask)
    results = {s: run_trial(s, **kw) for s in names}
    table, succ = _success(results, rules, level,
                           lambda c: run_trial(c, stream=control_stream(c), **kw))
    return Comparison(results, _table(results, level), _pairwise(results),
                      _hazard(results, level), table, succ)
