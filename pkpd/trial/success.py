"""Success rules of a virtual trial and the probability that a trial meets them.

A rule is ``ENDPOINT OP THRESHOLD`` or, against a control arm in :func:`~pkpd.trial.compare`,
``ENDPOINT OP THRESHOLD vs ARM``::

    orr_confirmed >= 0.75          # or 75%
    median_pfs_months > 6
    hr_pfs < 0.7 vs ep             # PFS hazard ratio of each other arm vs arm ep (Cox, Efron)
    logrank_p < 0.05 vs ep         # two-sided log-rank p-value of each other arm vs ep

``OP`` is one of ``<``, ``<=``, ``>``, ``>=``. Per-arm endpoints are those of
:data:`pkpd.trial.run.ENDPOINTS` (passed in by the callers; fractions 0-1, times in
months); ``hr_pfs`` and ``logrank_p`` need ``vs ARM``. Each rule is evaluated in every
replicate; a replicate where the endpoint is undefined (NaN, e.g. a median PFS not reached)
does not meet the rule and is counted in ``n_undefined``. ``P(success)`` is the fraction of
replicates that meet it, with a Wilson score interval (:func:`wilson_interval`) for the Monte
Carlo error of that fraction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from difflib import get_close_matches
from statistics import NormalDist

import numpy as np
import pandas as pd

from ..errors import SpecError

__all__ = ["Rule", "parse_rule", "parse_rules", "wilson_interval", "COMPARATIVE",
           "success_rows", "success_frame", "SUCCESS_COLUMNS", "FRACTIONS"]

#: endpoints of one arm against a control arm (``vs ARM``)
COMPARATIVE = ("hr_pfs", "logrank_p")

#: endpoints that are fractions (a threshold may be given in %)
FRACTIONS = ("orr", "orr_confirmed", "dcr", "pfs_6m", "pfs_12m")

#: columns of a success table
SUCCESS_COLUMNS = ["rule", "arm", "replicates", "met", "n_undefined", "p_success", "lo", "hi"]

_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
_RULE = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>[<>=!]+)\s*"
                   r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<pct>%)?"
                   r"(?:\s+vs\s+(?P<arm>\S+))?\s*$")
_EXAMPLE = "e.g. --success 'orr_confirmed >= 0.75' or --success 'hr_pfs < 0.7 vs ep'"


@dataclass(frozen=True)
class Rule:
    """One parsed success rule."""

    text: str
    endpoint: str
    op: str
    threshold: float
    control: str | None = None

    def met(self, values) -> np.ndarray:
        """Per replicate: True where the value meets the rule (NaN never does)."""
        v = np.asarray(values, float)
        with np.errstate(invalid="ignore"):
            return _OPS[self.op](v, self.threshold) & ~np.isnan(v)


def parse_rule(text: str, arms=None, *, endpoints) -> Rule:
    """Parse ``text`` strictly. ``arms``: the arm names a ``vs ARM`` may name (``None``: a single
    arm, where ``vs`` is refused); ``endpoints``: the per-arm endpoints
    (:data:`pkpd.trial.run.ENDPOINTS`)."""
    m = _RULE.match(str(text))
    if m is None:
        raise SpecError(f"success rule {text!r} is not 'ENDPOINT OP NUMBER [vs ARM]'. "
                        f"Fix: {_EXAMPLE}")
    key, op, arm = m["key"], m["op"], m["arm"]
    if op not in _OPS:
        raise SpecError(f"success rule {text!r}: operator {op!r} is not one of <, <=, >, >=. "
                        f"Fix: e.g. 'orr_confirmed >= 0.75'")
    known = (*endpoints, *COMPARATIVE)
    if key not in known:
        near = get_close_matches(key, known, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise SpecError(f"success rule {text!r}: unknown endpoint {key!r}. Fix: {hint}use one "
                        f"of {', '.join(known)}")
    value = float(m["num"])
    if m["pct"]:
        if key not in FRACTIONS:
            raise SpecError(f"success rule {text!r}: {key} is not a fraction, so '%' does not "
                            "apply. Fix: give the number in the endpoint's unit")
        value /= 100.0
    if key in COMPARATIVE and arm is None:
        raise SpecError(f"success rule {text!r}: {key} compares two arms and needs 'vs ARM'. "
                        f"Fix: e.g. '{key} {op} {m['num']} vs ep' in pkpd compare")
    if key not in COMPARATIVE and arm is not None:
        raise SpecError(f"success rule {text!r}: {key} is an endpoint of one arm; 'vs ARM' "
                        f"applies to {' and '.join(COMPARATIVE)}. Fix: drop 'vs {arm}'")
    if arm is not None:
        if arms is None:
            raise SpecError(f"success rule {text!r} compares with arm {arm!r}, but pkpd trial "
                            "runs one arm. Fix: use pkpd compare ARM... --success")
        if arm not in arms:
            near = get_close_matches(arm, list(arms), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise SpecError(f"success rule {text!r}: no arm {arm!r} in this comparison. Fix: "
                            f"{hint}name one of {', '.join(arms)}")
    return Rule(str(text).strip(), key, op, value, arm)


def parse_rules(texts, arms=None, *, endpoints) -> list[Rule]:
    """Parse every rule of ``texts`` (a string or a list of strings); ``[]`` for none."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    return [t if isinstance(t, Rule) else parse_rule(t, arms, endpoints=endpoints) for t in texts]


def wilson_interval(met: int, n: int, level: float = 0.90) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``met / n`` (NaN, NaN for ``n = 0``)."""
    if n <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = met / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z / d * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def success_rows(arm: str, rules_met: dict[str, tuple[np.ndarray, np.ndarray]],
                 level: float = 0.90) -> list[dict]:
    """Table rows for one arm: ``rules_met`` maps a rule's text to ``(met, undefined)`` boolean
    arrays over replicates. With more than one rule, a row ``all`` (every rule met in the same
    replicate) follows."""
    rows = []
    for text, (met, undefined) in rules_met.items():
        rows.append(_row(text, arm, met, undefined, level))
    if len(rules_met) > 1:
        allmet = np.logical_and.reduce([m for m, _ in rules_met.values()])
        anyundef = np.logical_or.reduce([u for _, u in rules_met.values()])
        rows.append(_row("all", arm, allmet, anyundef, level))
    return rows


def _row(text, arm, met, undefined, level) -> dict:
    n, k = int(met.size), int(np.sum(met))
    lo, hi = wilson_interval(k, n, level)
    return {"rule": text, "arm": arm, "replicates": n, "met": k,
            "n_undefined": int(np.sum(undefined)), "p_success": k / n if n else math.nan,
            "lo": lo, "hi": hi}


def success_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table with :data:`SUCCESS_COLUMNS`."""
    return pd.DataFrame(rows, columns=SUCCESS_COLUMNS)
