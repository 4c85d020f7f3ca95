"""Dosing: what is given, when. The first layer of the pipeline.

* :mod:`pkpd.dosing.regimen`: the regimen grammar (``"12 mg PO QD D1-14 Q21D"``), protocols,
  holds and reductions, body-size and renal dosing; :func:`parse_regimen` gives a
  :class:`Regimen` whose :meth:`~Regimen.doses` are the dose records.
* :mod:`pkpd.dosing.events`: NONMEM-style event tables (EVID/MDV/CMT/AMT/RATE/ADDL/II/SS),
  :func:`read_nonmem`, :func:`write_nonmem`, :func:`expand_addl`.

Imports only the ground modules (:mod:`pkpd.errors`, :mod:`pkpd.units`, :mod:`pkpd.io`).
"""

from . import events, regimen
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .regimen import *  # noqa: F403
from .regimen import __all__ as _regimen_all

__all__ = ["events", "regimen", *_regimen_all, *_events_all]
