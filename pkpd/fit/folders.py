"""The folders a fit writes, and the rule that pkpd replaces or removes only what it made.

For a result folder ``OUT`` (default ``<spec folder>/<name>``)::

    OUT/              the finished fit (the files in FIT_FILES). Replaced by a new run only when
                      its fit.json is a pkpd record and it holds nothing else.
    .OUT.partial/     checkpoints of completed chain batches (a MARKER file says pkpd made it)
    .OUT.writing/     the next result, assembled before it is swapped in (MARKER)
    .OUT.old/         the previous result, for the moment of the swap

Nothing is removed with ``rmtree``: a folder is emptied file by file, only of the names pkpd
writes there, after checking that pkpd made it; anything else is an error that names it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import PkpdError

__all__ = ["FitFolders", "FIT_FILES", "MARKER", "WRITTEN_BY", "is_pkpd_fit", "check_out",
           "remove_ours", "make_working"]

#: every file a finished fit folder may hold (see run._write)
FIT_FILES = frozenset({"posterior.nc", "summary.csv", "fit.json", "estimands.csv", "report.md",
                       "data_rows.csv", "data.csv", "truth_patients.csv", "spec.toml"})
#: the file that marks a hidden working folder (.NAME.partial, .NAME.writing) as pkpd's
MARKER = ".pkpd-fit"
#: fit.json's ``written_by``
WRITTEN_BY = "pkpd fit"
#: keys every fit.json pkpd has written holds (also those written before ``written_by``)
_RECORD_KEYS = {"spec_sha256", "data_sha256", "seeds", "sampler", "versions"}
#: what a checkpoint folder may hold: batches, their temporaries, the fingerprint, centring
_CHECKPOINT = re.compile(r"batch\d+(\.tmp)?\.(nc|json)|fingerprint\.txt|centring(\.tmp)?\.npz"
                         r"|\.(batch\d+\.json|fingerprint\.txt)\..+\.tmp")


@dataclass(frozen=True)
class FitFolders:
    """The result folder and its hidden siblings."""

    out: Path

    @classmethod
    def at(cls, out) -> FitFolders:
        path = Path(os.path.abspath(os.fspath(out)))
        if not path.name or path.name in (".", ".."):
            raise PkpdError(f"--out {str(out)!r} does not name a folder pkpd can create or "
                            "replace. Fix: give a new folder, e.g. --out fits/myfit")
        return cls(path)

    def sibling(self, kind: str) -> Path:
        return self.out.parent / f".{self.out.name}.{kind}"

    @property
    def partial(self) -> Path:
        return self.sibling("partial")

    @property
    def writing(self) -> Path:
        return self.sibling("writing")

    @property
    def old(self) -> Path:
        return self.sibling("old")


def is_pkpd_fit(folder: Path) -> bool:
    """True when ``folder/fit.json`` is a record that ``pkpd fit`` wrote."""
    f = Path(folder) / "fit.json"
    if not f.is_file():
        return False
    try:
        rec = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(rec, dict) and (rec.get("written_by") == WRITTEN_BY
                                      or _RECORD_KEYS <= set(rec))


def _listing(names, n: int = 6) -> str:
    names = sorted(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_out(out: Path) -> None:
    """Refuse a result folder pkpd may not replace: a file, or a non-empty folder that is not a
    pkpd fit or that holds anything a pkpd fit does not. Nothing is touched."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise PkpdError(f"results folder {out} exists and is not a folder. Fix: give a new "
                        "folder with --out, or set [fit] name")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    if not is_pkpd_fit(out):
        raise PkpdError(f"results folder {out} exists and does not hold a pkpd fit (no pkpd "
                        f"fit.json; it holds {_listing(names)}); pkpd replaces only a folder "
                        "that holds a fit it wrote, so nothing was touched. Fix: give a new or "
                        "empty folder with --out, or set [fit] name")
    extra = {n for n in names if n not in FIT_FILES or not (out / n).is_file()}
    if extra:
        raise PkpdError(f"results folder {out} holds a pkpd fit and also {_listing(extra)}, "
                        "which pkpd did not write; replacing the folder would delete them, so "
                        "nothing was touched. Fix: move them elsewhere, or give another folder "
                        "with --out")


def _foreign(folder: Path, kind: str) -> set[str]:
    """The entries of a working folder that show pkpd did not make it (empty: it is pkpd's)."""
    names = {p.name for p in folder.iterdir()}
    if kind == "partial":
        known = {n for n in names if n == MARKER or _CHECKPOINT.fullmatch(n)}
        marked = MARKER in names or "fingerprint.txt" in names
    else:          # "writing", "old": a result being assembled or being replaced
        known = {n for n in names if n == MARKER or n in FIT_FILES}
        marked = MARKER in names or is_pkpd_fit(folder)
    if names and not marked:
        return names
    return {n for n in names if n not in known or not (folder / n).is_file()}


def _check_ours(folder: Path, kind: str) -> None:
    if folder.is_symlink() or not folder.is_dir():
        raise PkpdError(f"{folder} exists and is not a folder pkpd made; pkpd does not remove "
                        "or reuse it. Fix: move it away, or give another --out / [fit] name")
    bad = _foreign(folder, kind)
    if bad:
        raise PkpdError(f"{folder} exists but was not made by pkpd fit (it holds "
                        f"{_listing(bad)}); pkpd does not remove or reuse it. Fix: move it "
                        "away, or give another --out / [fit] name")


def remove_ours(folder: Path, kind: str) -> None:
    """Remove a working folder (``kind``: "partial", "writing" or "old") that pkpd made, file by
    file; refuse one it did not make, touching nothing."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    _check_ours(folder, kind)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


def make_working(folder: Path, kind: str, note: str) -> None:
    """Create a hidden working folder, or reuse pkpd's own, and mark it as pkpd's."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        _check_ours(folder, kind)
    folder.mkdir(parents=True, exist_ok=True)
    m = folder / MARKER
    if not m.exists():
        m.write_text(f"made by pkpd fit: {note}\n")
