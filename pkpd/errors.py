"""User-facing errors.

Every error pkpd raises for bad input says what it received, where (subject, row, column) and how
to fix it. The CLI prints these messages without a traceback.
"""

from __future__ import annotations

__all__ = [
    "PkpdError",
    "DataError",
    "RegimenError",
    "UnitError",
    "ModelError",
    "SolverError",
    "SpecError",
    "format_problem",
]


def format_problem(
    problem: str,
    *,
    row: int | None = None,
    subject: object | None = None,
    column: str | None = None,
    value: object | None = None,
    fix: str | None = None,
) -> str:
    """Build a message of the form ``row 12 (ID 3), column AMT: <problem>; got -5. Fix: ...``.

    ``row`` is the 1-based data row number as a user sees it in a spreadsheet (header excluded).
    """
    where = []
    if row is not None:
        where.append(f"row {row}")
    if subject is not None:
        where.append(f"ID {subject}" if row is None else f"(ID {subject})")
    if column is not None:
        where.append(f"column {column}")
    msg = (" ".join(where).replace(" (", " (") + ": " if where else "") + problem
    if value is not None:
        msg += f"; got {value!r}"
    if fix:
        msg += f". Fix: {fix}"
    return msg


class PkpdError(Exception):
    """Base class of errors caused by user input (data, regimen, units, model choice)."""


class DataError(PkpdError, ValueError):
    """A dataset (NONMEM-style event table, lesion table, ...) is malformed."""

    def __init__(self, problem: str, **where):
        self.row = where.get("row")
        self.subject = where.get("subject")
        self.column = where.get("column")
        self.value = where.get("value")
        super().__init__(format_problem(problem, **where))


class RegimenError(PkpdError, ValueError):
    """A dosing regimen (text or API) is invalid."""


class UnitError(PkpdError, ValueError):
    """A unit string is unknown or units are incompatible."""


class ModelError(PkpdError, ValueError):
    """A model card or model specification is invalid, or parameters are missing."""


class SolverError(PkpdError, RuntimeError):
    """A numerical solve failed (reported with the subject and the parameters involved)."""


class SpecError(ModelError):
    """A fit specification is invalid; raised before any sampling starts."""


class FitInterrupted(PkpdError):
    """A fit stopped by Ctrl-C (SIGINT). Nothing was written as a finished result; the completed
    chain batches are kept as checkpoints, and the message says how to resume. The CLI exits
    with ``exit_code`` (130 = 128 + SIGINT, the shell's convention)."""

    exit_code = 130


__all__ += ["FitInterrupted"]
