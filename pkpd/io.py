"""Atomic file writing: results appear whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_csv", "check_input_file",
           "read_text_file", "detect_separator", "SEPARATORS"]


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_csv(df, path, **kw) -> Path:
    return atomic_write_text(path, df.to_csv(index=False, **kw))


# ---- reading user files: one place for the checks every reader needs ---------------------------
def check_input_file(path, what: str = "data file") -> Path:
    """The path of an existing, non-empty regular file, or a :class:`DataError` saying why not.

    ``what`` names the file in the message (``"lesion file"``, ``"fit data file"``, ...).
    """
    from .errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {str(path)!r} does not exist", fix="check the path")
    if path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a folder, not a file",
                        fix="give the path of the file itself")
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} is not a regular file", fix="give a file")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {str(path)!r} is empty (0 bytes)",
                        fix="give a file with a header row and data rows")
    return path


def read_text_file(path, what: str = "data file") -> str:
    """The text of a UTF-8 file (a byte-order mark is allowed), checked as
    :func:`check_input_file` does; other encodings are refused with the line and byte."""
    from .errors import DataError

    path = check_input_file(path, what)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
            f"cannot be decoded",
            fix="save the file as UTF-8 (e.g. 'CSV UTF-8' in Excel, or "
                "`iconv -f latin1 -t utf-8`)") from None
    if not text.strip():
        raise DataError(f"{what} {str(path)!r} holds only blank lines",
                        fix="give a file with a header row and data rows")
    return text


#: separators recognised in a delimited header line, in order of preference
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def detect_separator(header_line: str) -> str | None:
    """The field separator of a delimited header line (``,``, ``;``, tab or ``|``), or None
    when the line holds none of them (a whitespace-separated NONMEM table)."""
    counts = {s: header_line.count(s) for s in SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > 0 else None
