"""Drivers computed once per regimen for all the replicate trials of a design.

Every replicate fit of a design computes the typical-PK driver signals of each arm twice: once
to simulate the trial (:func:`pkpd.fit.recovery.simulate_data`) and once to build the
likelihood (``pkpd.fit.problem``). Replicates share the regimens, so the signals are the same
each time; only the horizon differs (the likelihood's grid ends after the trial's last scan).
The computation compiles a few dozen small XLA programs per call: about 7 s of a 37 s smoke
replicate, and 10-20 s of a 3 x 40-patient one, measured on the shared 2-core machine.

:func:`driver_cache` memoises :func:`pkpd.tumour.simulate.patient_drivers` for the duration of a
``with`` block, keyed by card, regimen text, covariates and grid step, and returns the first
``n_steps`` columns of the longest horizon computed so far. The signals are causal (a dose after
day ``d`` does not change them before ``d``), and the prefix of a longer computation equals the
shorter one bit for bit (tests/test_design.py checks it). Calls with explicit ``pk_params`` or
a protocol that is not a ``{drug: regimen text}`` table are passed through uncached.

The cache replaces the function's two module bindings (``pkpd.tumour.simulate`` and
``pkpd.fit.recovery``) inside the block and restores them afterwards. A ``drivers_cache``
argument of ``simulate_data`` and ``build_problem`` would do the same without that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np

__all__ = ["driver_cache"]


class _Cached:
    def __init__(self, fn):
        self.fn = fn
        self.store: dict = {}
        self.hits = 0
        self.misses = 0

    def _key(self, card, protocol, covariates, step_day):
        if isinstance(card, str) or not isinstance(protocol, Mapping):
            return None
        if not all(isinstance(v, str) for v in protocol.values()):
            return None
        step = float(step_day or card.structure.get("grid_step_day", 1.0))
        return (card.name, card.sha256, json.dumps(dict(protocol), sort_keys=True),
                json.dumps(dict(covariates or {}), sort_keys=True, default=str), step)

    def __call__(self, card, protocol, days, *, pk_params=None, covariates=None,
                 step_day=None):
        key = None if pk_params is not None else self._key(card, protocol, covariates,
                                                           step_day)
        if key is None:
            return self.fn(card, protocol, days, pk_params=pk_params, covariates=covariates,
                           step_day=step_day)
        n = int(math.ceil(days / key[-1]))
        have = self.store.get(key)
        if have is None or have[0] < n:
            self.misses += 1
            out = self.fn(card, protocol, days, covariates=covariates, step_day=step_day)
            have = (next(iter(out.values())).shape[1], out)
            self.store[key] = have
        else:
            self.hits += 1
        return {s: np.array(v[:, :n]) for s, v in have[1].items()}


@contextmanager
def driver_cache():
    """Memoise the driver signals inside the block (module docstring); yields the cache
    (``hits``, ``misses``)."""
    from ..fit import recovery
    from ..tumour import simulate
    original = simulate.patient_drivers
    cached = _Cached(original)
    rec_original = getattr(recovery, "patient_drivers", None)
    simulate.patient_drivers = cached
    if rec_original is original:
        recovery.patient_drivers = cached
    try:
        yield cached
    finally:
        simulate.patient_drivers = original
        if rec_original is original:
            recovery.patient_drivers = rec_original
