"""What ``pkpd calibrate`` writes, and the rule that it replaces only what it made.

A calibration run writes, for a spec ``fits/NAME.toml``:

- ``OUT/`` (default ``fits/NAME/``): ``calibration.json`` (the record: spec and card hashes,
  seeds, versions, settings, generations, stopping reason, failures, posterior summary, the
  targets and the values the calibrated card achieves), ``particles.csv``, ``generations.csv``,
  ``check.csv``, ``candidates.csv`` (the candidate values for the card and their distances),
  ``report.md`` and ``card.toml``. Each file is written atomically, and the
  folder is replaced only when its ``calibration.json`` says ``pkpd calibrate`` wrote it.
- ``.NAME.partial/``: ``state.json`` after every ABC-SMC generation. Ctrl-C leaves it; the same
  command resumes from it, with the same numbers, when the spec is unchanged.
- The spec's ``card_out`` (e.g. ``models/sclc_triplet_tgi_caspian.toml``): the calibrated card.
  It is the base card's text with the calibrated values, a new name and a ``[calibration]``
  table. An existing file there is replaced only if it is a card this command wrote.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np

from ..errors import PkpdError
from ..io import atomic_write_text

__all__ = ["WRITTEN_BY", "is_calibration", "OUT_FILES", "check_out", "read_state",
           "write_state", "load_state", "remove_partial", "card_text", "check_card_out"]

#: the ``written_by`` of every calibration record (calibration.json, the card's table)
WRITTEN_BY = "pkpd calibrate"
#: every file a finished calibration folder may hold
OUT_FILES = frozenset({"calibration.json", "particles.csv", "generations.csv", "check.csv",
                       "candidates.csv", "report.md", "card.toml"})
_MARK = 'written_by = "pkpd calibrate"'


def is_calibration(folder: Path) -> bool:
    """Whether ``folder`` is a finished ``pkpd calibrate`` result."""
    rec = Path(folder) / "calibration.json"
    if not rec.is_file():
        return False
    try:
        return json.loads(rec.read_text()).get("written_by") == WRITTEN_BY
    except (ValueError, OSError):
        return False


def check_out(out: Path, written_by: str) -> None:
    """``out`` may be created or replaced: it does not exist, or it holds only the files a
    calibration writes and its calibration.json says ``written_by``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise PkpdError(f"--out {out} is a file. Fix: give a folder, e.g. --out fits/mycal")
    names = {p.name for p in out.iterdir()}
    rec = out / "calibration.json"
    ours = False
    if rec.is_file():
        try:
            ours = json.loads(rec.read_text()).get("written_by") == written_by
        except (ValueError, OSError):
            ours = False
    foreign = sorted(names - OUT_FILES)
    if not ours or foreign:
        what = f"files pkpd did not write ({', '.join(foreign[:5])})" if foreign else \
            "no calibration.json written by pkpd calibrate"
        raise PkpdError(f"{out} exists and holds {what}; pkpd replaces only its own results. "
                        "Fix: give another --out, or move that folder away")


def _partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def read_state(out: Path, spec_sha256: str) -> dict | None:
    """The checkpoint of an interrupted run of the same spec, or None."""
    f = _partial(out) / "state.json"
    if not f.is_file():
        return None
    try:
        st = json.loads(f.read_text())
    except (ValueError, OSError):
        return None
    if st.get("written_by") != "pkpd calibrate" or st.get("spec_sha256") != spec_sha256:
        return None
    return st["state"]


def write_state(out: Path, spec_sha256: str, state: dict) -> None:
    """Write the checkpoint after a generation (atomically)."""
    part = _partial(out)
    part.mkdir(parents=True, exist_ok=True)
    plain = {k: (np.asarray(v).tolist() if k in ("z", "w", "d") else v) for k, v in state.items()}
    plain["d"] = [x if math.isfinite(x) else None for x in plain["d"]]
    atomic_write_text(part / "state.json", json.dumps(
        {"written_by": "pkpd calibrate", "spec_sha256": spec_sha256, "state": plain}))


def load_state(raw: dict) -> dict:
    """A checkpoint read by :func:`read_state` as :func:`~pkpd.trial.abc.abc_smc` resumes it."""
    st = dict(raw)
    st["d"] = [math.inf if x is None else x for x in st["d"]]
    return st


def remove_partial(out: Path) -> None:
    """Remove the checkpoint this command wrote (only its own file)."""
    part = _partial(out)
    f = part / "state.json"
    if f.is_file():
        f.unlink()
    if part.is_dir() and not any(part.iterdir()):
        part.rmdir()


def check_card_out(path: Path) -> None:
    """``path`` may be written: it does not exist, or it is a card pkpd calibrate wrote."""
    if path.exists() and _MARK not in path.read_text(errors="replace"):
        raise PkpdError(f"{path} exists and was not written by pkpd calibrate; pkpd does not "
                        "overwrite it. Fix: set card_out to a new file name in the spec")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float) and not isinstance(v, bool):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def _set_in_section(text: str, section: str, key: str, value, note: str) -> str:
    """Replace ``key = ...`` inside ``[section]`` (up to the next table header)."""
    head = re.search(rf"^\[{re.escape(section)}\]\s*$", text, re.M)
    if head is None:
        raise PkpdError(f"the base card has no [{section}] table to calibrate")
    nxt = re.search(r"^\[", text[head.end():], re.M)
    end = head.end() + (nxt.start() if nxt else len(text) - head.end())
    body = text[head.end():end]
    shown = json.dumps(value) if isinstance(value, str) else repr(value)
    new, count = re.subn(rf"^{key}\s*=.*$", lambda _m: f"{key} = {shown}  # {note}", body,
                         count=1, flags=re.M)
    if count != 1:
        raise PkpdError(f"the base card's [{section}] has no {key} line to calibrate")
    return text[:head.end()] + new + text[end:]


def card_text(base_text: str, base_name: str, new_name: str, values: dict[str, float],
              record: dict, residual: dict | None = None) -> str:
    """The calibrated card: ``base_text`` with ``values`` (card names and ``omega2_NAME``), the
    name ``new_name`` and a ``[calibration]`` table holding ``record`` (flat keys, plus
    ``[calibration.targets.*]`` and ``[calibration.posterior.*]`` tables)."""
    text = base_text
    raw = tomllib.loads(base_text)
    for name, v in values.items():
        if name.startswith("omega2_"):
            section, key = f"iiv.{name[7:]}", "omega2"
            was = raw["iiv"][name[7:]]["omega2"]
        else:
            section, key = f"parameters.{name}", "value"
            was = raw["parameters"][name]["value"]
        text = _set_in_section(text, section, key, float(v),
                               f"calibrated ({record['name']}); {base_name}: {was:g}")
    for key, v in (residual or {}).items():
        if key == "source":
            text = _set_in_section(text, "residual", "source", v, f"replaces {base_name}'s")
        else:
            text = _set_in_section(text, "residual", key, float(v),
                                   f"scan error of the calibration; {base_name} differs")
    text = re.sub(r'^name\s*=\s*".*"$', f'name = "{new_name}"', text, count=1, flags=re.M)
    text = re.sub(r'^description\s*=\s*"', lambda _m: 'description = "Calibrated by pkpd '
                  f'calibrate ({record["name"]}; see [calibration] at the end) from '
                  f'{base_name}: ', text, count=1, flags=re.M)
    return text.rstrip() + "\n\n" + _record_toml(record) + "\n"


def _record_toml(record: dict) -> str:
    lines = ["# Written by pkpd calibrate: the calibration of this card (see calibration.json",
             "# of the calibration run for the generations and particles).", "[calibration]",
             _MARK]
    tables = {}
    for k, v in record.items():
        if isinstance(v, dict):
            tables[k] = v
        elif k != "written_by":
            lines.append(f"{k} = {_toml_value(v)}")
    for k, sub in tables.items():
        for name, row in sub.items():
            lines.append(f"\n[calibration.{k}.{_key(name)}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in row.items()
                      if vv is not None and not (isinstance(vv, float) and math.isnan(vv))]
    return "\n".join(lines)


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
