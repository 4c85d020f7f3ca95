"""Old module paths (pkpd 0.1 was flat) that still import, for one release, with a warning.

``import pkpd.regimen`` gives the module :mod:`pkpd.dosing.regimen` itself (the same object, so
attributes, monkeypatching and pickles agree) and warns once, naming the new path. Installed on
``sys.meta_path`` by ``pkpd/__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings

#: old module -> new module (pkpd.pk and pkpd.cards are now packages that re-export the old names)
MOVED = {
    "pkpd.regimen": "pkpd.dosing.regimen",
    "pkpd.events": "pkpd.dosing.events",
    "pkpd.engine": "pkpd.pk.engine",
    "pkpd.exposure": "pkpd.pk.exposure",
    "pkpd.nca": "pkpd.pk.nca",
    "pkpd.predict": "pkpd.pk.predict",
    "pkpd.tgi": "pkpd.tumour.tgi",
    "pkpd.combination": "pkpd.tumour.combination",
    "pkpd.drivers": "pkpd.tumour.drivers",
    "pkpd.simulate": "pkpd.tumour.simulate",
    "pkpd.tumourdata": "pkpd.clinical",
    "pkpd.recist": "pkpd.clinical.recist",
}

#: pkpd 0.2 removes the old paths
REMOVED_IN = "0.2"


class _MovedLoader:
    """Loader protocol (importlib.abc is not imported: it costs more than all of pkpd)."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        old = module.__name__
        warnings.warn(f"{old} has moved to {self.new}; import {self.new} instead ({old} is "
                      f"removed in pkpd {REMOVED_IN})", DeprecationWarning,
                      stacklevel=2)  # warnings skips importlib's frames
        # the import statement returns what sys.modules holds at the end: the new module itself
        sys.modules[old] = importlib.import_module(self.new)


class MovedFinder:
    """A ``sys.meta_path`` finder for the old paths."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
