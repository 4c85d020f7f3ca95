"""Lazy re-exports for package ``__init__`` files (PEP 562), so that importing one module of a
subpackage (``pkpd.pk.engine``) does not import its siblings (``pkpd.pk.nca`` needs pandas).

    __getattr__, __dir__, __all__ = attach(__name__, {"engine": ("solve", ...), ...})

A name is imported from its module the first time it is used, then kept in the package.
"""

from __future__ import annotations

import importlib
import sys


def attach(package: str, exports: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__, __all__)`` for ``package``: ``exports`` maps each submodule to the
    names it gives the package (the submodules themselves are attributes too; private ones,
    ``_common``, are not listed in ``__all__``)."""
    where = {name: mod for mod, names in exports.items() for name in names}
    public = [*(m for m in exports if not m.startswith("_")), *where]

    def __getattr__(name: str):
        if name in exports:
            return importlib.import_module(f"{package}.{name}")
        mod = where.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__, public
