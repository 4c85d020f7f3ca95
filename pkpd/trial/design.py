"""Trial scenarios: one arm of a virtual trial as a TOML file.

A scenario names the tumour model card, the virtual population, the number of patients, the
regimen of each drug (the regimen grammar of :mod:`pkpd.dosing.regimen`), the scan schedule,
dropout and the data cut-off. The shipped scenarios are in ``scenarios/`` (``pkpd trial --scenario
NAME``); a path to a ``.toml`` file works too::

    [scenario]
    name = "durvalumab_ep"
    description = "CASPIAN experimental arm"
    source = "Paz-Ares L et al., Lancet 2019 (LITERATURE.md section 6)"
    model = "sclc_triplet_tgi"         # tumour card
    population = "es_sclc"             # models/populations/NAME.toml, or a path
    n = 268                            # patients
    days = 730                         # follow-up horizon (days from the first dose)

    [regimens]                         # drug = regimen text, one per drug
    durvalumab = "1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"
    etoposide = "100 mg/m2 IV 60 min D1-3 Q21D x4"
    carboplatin = "AUC 5 IV 60 min D1 Q21D x4"

    [scans]
    schedule = "Q6W to W48, then Q9W"  # or: days = [42, 84, ...]
    baseline_day = 0                   # the baseline scan (day <= 0)
    window_days = 7                    # visit window: each follow-up scan is done on its
                                       # planned day +/- up to 7 days (default 0: exactly)

    [censoring]
    dropout_per_year = 0.10            # exponential loss to follow-up
    cutoff_day = 730                   # administrative censoring (default: days)

Every error names the file, the key, the value and the fix; an unknown key is an error.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

import numpy as np

from ..dosing.regimen import Protocol, parse_regimen
from ..errors import RegimenError, SpecError
from ..io import read_text_file

__all__ = ["Scenario", "ScanSchedule", "load_scenario", "list_scenarios", "scenarios_dir",
           "parse_scan_schedule", "MAX_PATIENTS_PER_ARM"]

#: the largest arm a scenario may ask for (one replicate)
MAX_PATIENTS_PER_ARM = 1_000_000

_SECTIONS = {
    "scenario": {"name", "description", "source", "model", "population", "n", "days"},
    "regimens": None,  # drug names
    "scans": {"schedule", "days", "baseline_day", "window_days"},
    "censoring": {"dropout_per_year", "cutoff_day"},
}
_REQUIRED = ("model", "n", "days")


def scenarios_dir() -> Path:
    """Folder of the shipped scenarios (``$PKPD_SCENARIOS`` overrides)."""
    env = os.environ.get("PKPD_SCENARIOS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "scenarios"


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in scenarios_dir().glob("*.toml"))


@dataclass(frozen=True)
class ScanSchedule:
    """Tumour assessments: the baseline day and the follow-up scan days (days from the first
    dose, strictly increasing, all after the baseline)."""

    baseline_day: float
    days: tuple[float, ...]
    text: str = ""
    window_days: float = 0.0

    def all_days(self) -> np.ndarray:
        """Baseline then follow-up scan days (the planned days), as one float array."""
        return np.array([self.baseline_day, *self.days], dtype=float)

    def possible_days(self, horizon_days: float) -> np.ndarray:
        """Every day a scan can fall on (the planned days and their windows), up to
        ``horizon_days``: one fixed grid for all patients, so the simulation compiles once."""
        planned = self.all_days()
        w = int(self.window_days)
        follow = np.maximum(planned[1:, None] + np.arange(-w, w + 1)[None, :], 1.0)
        days = np.unique(np.r_[max(planned[0], 0.0), follow.ravel()])
        return days[days <= horizon_days]

    def patient_days(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, n_scans)`` actual scan days: each follow-up scan on its planned day shifted by
        a whole number of days drawn uniformly from ``[-window_days, +window_days]`` (and on
        day 1 at the earliest). The baseline stays on its day. The window is less than half the
        closest gap between planned scans (checked on loading), so the order never changes.
        Without a window every patient gets the planned days and ``rng`` is not used."""
        planned = self.all_days()
        out = np.broadcast_to(planned, (n, planned.size)).copy()
        w = int(self.window_days)
        if w > 0 and planned.size > 1:
            shift = rng.integers(-w, w + 1, size=(n, planned.size - 1))
            out[:, 1:] = np.maximum(planned[1:] + shift, 1.0)
        return out


@dataclass(frozen=True)
class Scenario:
    """One arm of a virtual trial (see the module docstring for the file format)."""

    name: str
    model: str
    n: int
    days: float
    regimens: dict[str, str]
    scans: ScanSchedule
    population: str = "es_sclc"
    dropout_per_year: float = 0.0
    cutoff_day: float | None = None
    description: str = ""
    source: str = ""
    path: Path | None = None

    def protocol(self) -> Protocol:
        """The drugs' regimens on one cycle clock."""
        return Protocol({d: parse_regimen(t) for d, t in self.regimens.items()})

    @property
    def cutoff(self) -> float:
        """Administrative censoring day (the data cut-off)."""
        return float(self.days if self.cutoff_day is None else self.cutoff_day)


# ---- scan schedules ----------------------------------------------------------------------------
_UNIT_DAYS = {"D": 1.0, "W": 7.0, "M": 30.4375}
_SEGMENT = re.compile(
    r"^(?:Q|every\s+)(\d+(?:\.\d+)?)\s*(D|W|M|days?|weeks?|months?)"
    r"(?:\s+(?:to|until|through)\s+(D|W|M|day|week|month)\s*(\d+(?:\.\d+)?))?$",
    re.IGNORECASE)


def _unit(token: str) -> float:
    return _UNIT_DAYS[token[0].upper()]


def parse_scan_schedule(text: str, horizon_days: float, baseline_day: float = 0.0,
                        where: str = "scan schedule") -> ScanSchedule:
    """Scan days from text such as ``"Q6W to W24, then Q9W"``: every 6 weeks up to week 24, then
    every 9 weeks until ``horizon_days``. Segments are separated by ``,``, ``;`` or ``then``;
    each is ``Q<n><D|W|M>`` or ``every <n> weeks``, with an optional end ``to W<m>`` (``D``,
    ``W`` or ``M`` = 30.4375 days). Only the last segment may leave out its end."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{where}: empty schedule. Fix: e.g. \"Q6W to W24, then Q9W\"")
    parts = [p.strip() for p in re.split(r",|;|\bthen\b", text) if p.strip()]
    days, start = [], 0.0
    for k, part in enumerate(parts):
        m = _SEGMENT.match(part)
        if m is None:
            raise SpecError(f"{where}: cannot read {part!r} in {text!r}. Fix: write segments "
                            "like \"Q6W to W24\" or \"every 9 weeks\", separated by commas")
        step = float(m.group(1)) * _unit(m.group(2))
        end = horizon_days if m.group(3) is None else float(m.group(4)) * _unit(m.group(3))
        if m.group(3) is None and k < len(parts) - 1:
            raise SpecError(f"{where}: segment {part!r} has no end but is not the last. Fix: "
                            f"add 'to W<week>' to it")
        if step <= 0 or end <= start:
            raise SpecError(f"{where}: segment {part!r} must step forward and end after day "
                            f"{start:g}. Fix: give a positive interval and a later end")
        t = start + step
        while t <= min(end, horizon_days) + 1e-9:
            days.append(round(t, 9))
            t += step
        start = end
    return _schedule(days, baseline_day, where, text)


def _schedule(days, baseline_day: float, where: str, text: str = "") -> ScanSchedule:
    arr = np.asarray(days, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise SpecError(f"{where}: no follow-up scan before the horizon. Fix: scan earlier or "
                        "follow patients longer")
    if not np.all(np.isfinite(arr)):
        raise SpecError(f"{where}: scan days must be numbers; got {list(days)}")
    bad = np.flatnonzero(np.diff(arr) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise SpecError(f"{where}: scan days must increase; scan {i + 1} (day {arr[i]:g}) is not "
                        f"after scan {i} (day {arr[i - 1]:g}). Fix: list the days in "
                        "increasing order, each once")
    if not baseline_day <= 0 or not math.isfinite(baseline_day):
        raise SpecError(f"{where}: baseline_day = {baseline_day!r} must be <= 0 (on or before "
                        "the first dose). Fix: baseline_day = 0")
    if arr[0] <= baseline_day:
        raise SpecError(f"{where}: the first scan (day {arr[0]:g}) is not after the baseline "
                        f"(day {baseline_day:g}). Fix: follow-up scans come after day 0")
    return ScanSchedule(float(baseline_day), tuple(float(d) for d in arr), text)


# ---- loading -----------------------------------------------------------------------------------
def _find(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    cand = scenarios_dir() / f"{name_or_path}.toml"
    if not cand.exists():
        names = list_scenarios()
        near = get_close_matches(str(name_or_path), names, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise SpecError(f"unknown scenario {str(name_or_path)!r}.{hint} Fix: use one of "
                        f"{', '.join(names)} or a path to a .toml scenario")
    return cand


def _check_keys(raw: dict, where: str) -> None:
    for sec, body in raw.items():
        if sec not in _SECTIONS:
            near = get_close_matches(sec, list(_SECTIONS), n=1)
            hint = f" (did you mean [{near[0]}]?)" if near else ""
            raise SpecError(f"{where}: unknown table [{sec}]{hint}. Fix: use "
                            f"{', '.join('[' + s + ']' for s in _SECTIONS)}")
        if not isinstance(body, dict):
            raise SpecError(f"{where}: [{sec}] must be a table; got {body!r}")
        allowed = _SECTIONS[sec]
        for key in body if allowed is not None else ():
            if key not in allowed:
                near = get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise SpecError(f"{where}: unknown key [{sec}] {key!r}{hint}. Fix: use "
                                f"{', '.join(sorted(allowed))}")


def _number(value, key: str, where: str, *, positive: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0) or (not positive and value < 0):
        rule = "a positive number" if positive else "a number >= 0"
        raise SpecError(f"{where}: {key} = {value!r} must be {rule}. Fix: e.g. {key} = "
                        f"{'268' if key == 'n' else '730' if 'day' in key else '0.1'}")
    return float(value)


def _regimens(raw: dict, where: str) -> dict[str, str]:
    regs = raw.get("regimens", {})
    if not regs:
        raise SpecError(f"{where}: the arm has no regimen. Fix: add a [regimens] table with one "
                        "line per drug, e.g. durvalumab = \"1500 mg IV 60 min Q4W\"")
    out = {}
    for drug, text in regs.items():
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"{where}: [regimens] {drug} = {text!r} is not a regimen. Fix: "
                            "e.g. \"12 mg PO QD D1-14 Q21D\"")
        try:
            reg = parse_regimen(text)
        except RegimenError as e:
            raise SpecError(f"{where}: [regimens] {drug}: {e}") from None
        if reg.drug is not None and reg.drug != drug:
            raise SpecError(f"{where}: [regimens] {drug} = {text!r} names drug {reg.drug!r}. "
                            f"Fix: drop the 'drug:' prefix or use the key {reg.drug}")
        out[str(drug)] = text.strip()
    return out


def _scans(raw: dict, days: float, where: str) -> ScanSchedule:
    s = raw.get("scans", {})
    baseline = s.get("baseline_day", 0.0)
    if not isinstance(baseline, int | float) or isinstance(baseline, bool):
        raise SpecError(f"{where}: [scans] baseline_day = {baseline!r} must be a number <= 0")
    if ("schedule" in s) == ("days" in s):
        raise SpecError(f"{where}: [scans] needs exactly one of schedule or days. Fix: e.g. "
                        "schedule = \"Q6W to W48, then Q9W\"")
    window = s.get("window_days", 0.0)
    if (not isinstance(window, int | float) or isinstance(window, bool) or not 0 <= window
            or window != math.floor(window)):
        raise SpecError(f"{where}: [scans] window_days = {window!r} must be a whole number of "
                        "days >= 0. Fix: e.g. window_days = 7 (scans on their planned day "
                        "+/- 7 days), or 0 for exact days")
    if "schedule" in s:
        sched = parse_scan_schedule(s["schedule"], days, float(baseline), f"{where}: [scans]")
    else:
        listed = s["days"]
        if not isinstance(listed, list) or not all(
                isinstance(d, int | float) and not isinstance(d, bool) for d in listed):
            raise SpecError(f"{where}: [scans] days = {listed!r} must be a list of numbers")
        sched = _schedule(listed, float(baseline), f"{where}: [scans]")
    gaps = np.diff(np.r_[0.0, sched.days])
    if window and gaps.size and 2 * window >= gaps.min():
        raise SpecError(f"{where}: [scans] window_days = {window!r} lets neighbouring scans "
                        f"swap (the closest planned scans are {gaps.min():g} days apart). Fix: "
                        f"a window below {gaps.min() / 2:g} days")
    return ScanSchedule(sched.baseline_day, sched.days, sched.text, float(window))


def load_scenario(name_or_path: str | os.PathLike) -> Scenario:
    """Read and check a scenario (a shipped name, e.g. ``"triplet"``, or a ``.toml`` path)."""
    path = _find(name_or_path)
    where = f"scenario {path}"
    try:
        raw = tomllib.loads(read_text_file(path, what="scenario"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{where}: not valid TOML ({e}). Fix: check the line it names") from None
    _check_keys(raw, where)
    sc = raw.get("scenario", {})
    missing = [k for k in _REQUIRED if k not in sc]
    if missing:
        raise SpecError(f"{where}: [scenario] needs {', '.join(missing)}. Fix: see "
                        "scenarios/triplet.toml")
    n = sc["n"]
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_PATIENTS_PER_ARM:
        raise SpecError(f"{where}: n = {n!r} must be a whole number of patients from 1 to "
                        f"{MAX_PATIENTS_PER_ARM:,}. Fix: e.g. n = 120")
    days = _number(sc["days"], "days", where)
    cens = raw.get("censoring", {})
    cutoff = cens.get("cutoff_day")
    return Scenario(
        name=str(sc.get("name", path.stem)), model=str(sc["model"]), n=n, days=days,
        regimens=_regimens(raw, where), scans=_scans(raw, days, where),
        population=str(sc.get("population", "es_sclc")),
        dropout_per_year=_number(cens.get("dropout_per_year", 0.0), "dropout_per_year", where,
                                 positive=False),
        cutoff_day=None if cutoff is None else _number(cutoff, "cutoff_day", where),
        description=str(sc.get("description", "")), source=str(sc.get("source", "")),
        path=path.resolve(),
    )
