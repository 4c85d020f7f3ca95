"""Dosing: what is given, when. The first layer of the pipeline.

* :mod:`pkpd.dosing.regimen`: the regimen grammar (``"12 mg PO QD D1-14 Q21D"``), protocols,
  holds and reductions, body-size and renal dosing; :func:`parse_regimen` gives a
  :class:`Regimen` whose :meth:`~Regimen.doses` are the dose records.
* :mod:`pkpd.dosing.events`: NONMEM-style event tables (EVID/MDV/CMT/AMT/RATE/ADDL/II/SS),
  :func:`read_nonmem`, :func:`write_nonmem`, :func:`expand_addl`.

Imports only the ground modules (:mod:`pkpd.errors`, :mod:`pkpd.units`, :mod:`pkpd.io`).
"""

from .._lazy import attach

_EXPORTS = {
    "regimen": (
        "ROUTES", "DOSE_UNITS", "DOSES_PER_DAY", "GFR_CAP_ML_MIN", "MAX_DOSES", "MAX_CYCLES",
        "RegimenUnitError", "Phase", "Hold", "Reduce", "Regimen", "Protocol", "Doses", "Cycles",
        "DoseArrays", "parse_regimen", "parse_protocol", "stack_arrays", "mosteller_bsa",
        "cockcroft_gault_crcl", "calvert_dose_mg", "resolve_dose_mg",
    ),
    "events": (
        "EventTable", "PkpdDataWarning", "read_nonmem", "write_nonmem", "expand_addl",
        "row_account", "MAX_DOSES_PER_RECORD", "MAX_DOSES_TOTAL", "NONMEM_COLUMNS",
        "EXTRA_COLUMNS", "CANONICAL_COLUMNS", "DERIVED_COLUMNS",
    ),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
