"""Suite-wide fixtures.

One pytest process compiles thousands of JAX/XLA programs. On CPU each compiled executable holds
its own memory mappings, and a long run reaches the kernel's limit on mappings per process
(``vm.max_map_count``, 65,530 by default). LLVM then fails to map code and the process dies
with a segmentation fault inside the XLA compiler. Measured: one test module of trials adds
about 3,000 mappings. So after each test module the compiled programs are released.
"""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each module: drop JAX's compilation caches (and pkpd's caches of jitted functions),
    so the executables and their memory mappings are freed. Later tests recompile what they
    need, which changes no number."""
    yield
    import sys

    if "jax" not in sys.modules:
        return
    import jax

    for name in ("pkpd.tumour.simulate", "pkpd.tumour.drivers"):
        mod = sys.modules.get(name)
        for fn in vars(mod).values() if mod is not None else ():
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()
    jax.clear_caches()
    gc.collect()
