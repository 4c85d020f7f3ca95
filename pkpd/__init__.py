"""pkpd: JAX-compiled PK/PD and tumour-dynamics modelling for oncology.

float64 is switched on before any JAX array exists: the tolerances of the exact PK solutions and
of the ODE paths need it. ``import pkpd`` itself is light (it does not import JAX, so that
``pkpd --help`` answers at once); JAX is configured here and imported by the submodules that use
it. If JAX was imported before pkpd, its configuration is updated now; otherwise the
``JAX_ENABLE_X64`` environment variable makes JAX start in float64 when it is first imported.

The public names below (``pkpd.load_card``, ``pkpd.OneCompartment``, ...) are loaded on first use.

The subpackages follow the data: :mod:`pkpd.dosing` -> :mod:`pkpd.cards` -> :mod:`pkpd.pk` ->
:mod:`pkpd.tumour` -> :mod:`pkpd.clinical` -> :mod:`pkpd.fit`; each imports only those before it
(docs/architecture.md). pkpd 0.1's flat module paths (``pkpd.regimen``, ...) still import, with a
DeprecationWarning naming the new path.
"""

import os as _os
import sys as _sys

if "jax" in _sys.modules:
    _sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    _os.environ["JAX_ENABLE_X64"] = "1"

__version__ = "0.1.0"

from ._moved import install as _install_moved  # noqa: E402
from .cards.registry import declare_provider as _declare_card_kind  # noqa: E402

#: public name -> submodule that defines it (imported lazily, PEP 562)
_LAZY = {
    "Card": "cards",
    "list_cards": "cards",
    "load_card": "cards",
    "SolverConfig": "pk.engine",
    "DataError": "errors",
    "ModelError": "errors",
    "PkpdError": "errors",
    "RegimenError": "errors",
    "SolverError": "errors",
    "UnitError": "errors",
    "OneCompartment": "pk.models",
    "TwoCompartment": "pk.models",
    "ThreeCompartment": "pk.models",
    "NonlinearCompartment": "pk.models",
    "as_ode": "pk.models",
    "parse_regimen": "dosing.regimen",
    "read_nonmem": "dosing.events",
}

# The built-in card kinds: the loader (pkpd.cards) imports nothing above it; the model that owns a
# kind registers it when imported, and is imported when a card of its kind is first loaded.
_declare_card_kind("pk", "pkpd.pk.models")
_declare_card_kind("tumor", "pkpd.tumour.combination")

# pkpd 0.1's flat module paths (pkpd.regimen, pkpd.simulate, ...) still import, with a warning
_install_moved()

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'pkpd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
