"""Clinical tumour data: the canonical lesion table, one module per reader/writer, and RECIST.

* :mod:`pkpd.clinical.lesions`: the canonical lesion table (:data:`LESION_COLUMNS`),
  :func:`validate_lesions`, the lesion CSV/XLSX reader :func:`read_lesions`,
  :func:`read_subjects` and the SLD series :func:`sld_series`;
* :mod:`pkpd.clinical.sdtm`: :func:`read_sdtm` (TU/TR/RS/DM/EX domains);
* :mod:`pkpd.clinical.adam`: :func:`read_adam` (ADTR/ADRS/ADTTE/ADSL);
* :mod:`pkpd.clinical.laleh`: :func:`read_laleh_s1` (the Laleh et al. 2022 S1 workbook);
* :mod:`pkpd.clinical.nonmem_tumour`: :func:`write_nonmem_tumour`, :func:`read_nonmem_tumour`;
* :mod:`pkpd.clinical.recist`: the RECIST 1.1 / iRECIST engine (:func:`evaluate`).

Every reader returns a named tuple whose last field is a :class:`DataReport` accounting for every
input row; malformed input raises :class:`~pkpd.errors.DataError` (or :class:`DataProblems`, all
problems at once) naming the row, subject, column, value and a fix. Shared reading helpers live in
``_common`` (values, dates, files) and ``_cdisc`` (CDISC domains).

Imports only lower layers (ground, dosing).
"""

from .._lazy import attach

_EXPORTS = {
    "lesions": (
        "LESION_COLUMNS", "REQUIRED_LESION_COLUMNS", "LESION_TYPES", "LESION_STATES",
        "SLD_COLUMNS", "TOO_SMALL_MM", "LesionData", "validate_lesions", "read_lesions",
        "read_subjects", "SUBJECT_COLUMNS", "sld_series",
    ),
    "sdtm": ("SdtmData", "read_sdtm"),
    "adam": ("AdamData", "read_adam"),
    "laleh": (
        "LALEH_COLUMNS", "LALEH_RULES", "LalehData", "read_laleh_s1", "laleh_s1_default_path",
    ),
    "nonmem_tumour": ("NonmemTumourData", "write_nonmem_tumour", "read_nonmem_tumour"),
    "recist": (
        "RecistConfig", "RecistResult", "evaluate", "OVERALL_RESPONSES", "BOR_VALUES",
        "IBOR_VALUES",
    ),
    "_common": ("DataReport", "DataProblems", "PROBLEM_COLUMNS"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
