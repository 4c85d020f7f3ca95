"""pkpd: JAX-compiled PK/PD and tumour-dynamics modelling for oncology.

float64 is switched on before any JAX array exists: the tolerances of the exact PK solutions and
of the ODE paths need it. ``import pkpd`` itself is light (it does not import JAX, so that
``pkpd --help`` answers at once); JAX is configured here and imported by the submodules that use
it. If JAX was imported before pkpd, its configuration is updated now; otherwise the
``JAX_ENABLE_X64`` environment variable makes JAX start in float64 when it is first imported.

The public names below (``pkpd.load_card``, ``pkpd.OneCompartment``, ...) are loaded on first use.
"""

import os as _os
import sys as _sys

if "jax" in _sys.modules:
    _sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    _os.environ["JAX_ENABLE_X64"] = "1"

__version__ = "0.1.0"

#: public name -> submodule that defines it (imported lazily, PEP 562)
_LAZY = {
    "Card": "cards",
    "list_cards": "cards",
    "load_card": "cards",
    "SolverConfig": "engine",
    "DataError": "errors",
    "ModelError": "errors",
    "PkpdError": "errors",
    "RegimenError": "errors",
    "SolverError": "errors",
    "UnitError": "errors",
    "OneCompartment": "pk",
    "TwoCompartment": "pk",
    "ThreeCompartment": "pk",
    "NonlinearCompartment": "pk",
    "as_ode": "pk",
}

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
