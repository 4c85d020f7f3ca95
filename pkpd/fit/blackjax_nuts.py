"""PyMC's blackjax NUTS path, with the known incompatibility worked around.

pymc 5.28.5 passes ``progress_bar`` through ``blackjax.window_adaptation(**adaptation_kwargs)``,
and blackjax 1.7.1 forwards unknown keywords to the NUTS kernel, which rejects them
(``kernel() got an unexpected keyword argument 'progress_bar'``; ../shared/docs/MEASUREMENTS.md),
and it calls ``blackjax.progress_bar.gen_scan_fn``, which blackjax 1.7.1 no longer has.
:func:`sample_blackjax` drops that keyword and supplies a plain ``jax.lax.scan`` for the
duration of the call (no progress bar on this path), and runs chains vectorised (``pmap`` needs
one device per chain).
"""

from __future__ import annotations

import contextlib

__all__ = ["sample_blackjax"]


@contextlib.contextmanager
def _patched_window_adaptation():
    import types

    import blackjax
    import jax
    original = blackjax.window_adaptation
    original_pb = blackjax.progress_bar

    def window_adaptation(*args, **kwargs):
        kwargs.pop("progress_bar", None)
        return original(*args, **kwargs)

    blackjax.window_adaptation = window_adaptation
    blackjax.progress_bar = types.SimpleNamespace(
        gen_scan_fn=lambda n, progress_bar=False: jax.lax.scan)
    try:
        yield
    finally:
        blackjax.window_adaptation = original
        blackjax.progress_bar = original_pb


def sample_blackjax(model, **kw):
    """``pm.sample(nuts_sampler="blackjax", ...)`` inside ``model``'s context, patched."""
    import pymc as pm
    with _patched_window_adaptation(), model:
        kw.setdefault("nuts_sampler_kwargs", {}).setdefault("chain_method", "vectorized")
        return pm.sample(nuts_sampler="blackjax", **kw)
