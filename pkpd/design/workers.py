"""Replicate fits in parallel worker processes (``pkpd design --workers N``).

Each worker is a fresh (spawned) Python process that fits one replicate trial at a time with
both chains in one thread (``[sampler] threads = 1``) and XLA limited to one thread, so N
workers keep N cores busy without contending for one interpreter lock. On the 2-core machine,
2 chains of the 120-patient triplet model in two threads of one process ran 1.5x as fast as in
one thread, not 2x (docs/fitting.md, ``[sampler]`` threads); two processes do not share that
lock. The draws do not depend on the threads, so a replicate's row is the same (wall times
aside) whichever way it was fitted.

Workers ignore Ctrl-C; the parent catches it, ends the workers and keeps every finished row.
Each worker memoises the regimens' driver signals for its lifetime (:func:`driver_cache`).
This module imports nothing heavy: it is what a worker process imports first.
"""

from __future__ import annotations

import os
import signal

__all__ = ["init_worker", "fit_one", "XLA_ONE_THREAD"]

#: XLA's CPU flags for one intra-op thread per process
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

_STATE: dict = {}


def init_worker() -> None:
    """Worker start-up, before JAX is imported: one XLA thread; Ctrl-C left to the parent."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fit_one(run_replicate, design, truth_index: int, replicate: int, work) -> dict:
    """One replicate's results row, fitted in this worker (chains in one thread).

    ``run_replicate`` is :func:`pkpd.design.run.run_replicate`, passed in (pickled by name) so
    that this module does not import the module that imports it."""
    if "cache" not in _STATE:
        from .drivers import driver_cache
        cm = driver_cache()
        cm.__enter__()                       # kept for the worker's lifetime
        _STATE["cache"] = cm
    try:
        return run_replicate(design, truth_index, replicate, work, threads=1)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if isinstance(exc, Exception):
            raise
        # a BaseException from an extension (pyo3's PanicException) cannot be pickled back to
        # the parent, which would see only a BrokenProcessPool: send its message instead
        raise RuntimeError(f"replicate {replicate + 1} of truth {truth_index + 1}: "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
