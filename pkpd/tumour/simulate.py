"""Tumour-size simulation of one patient or a virtual population from a tumour card and a protocol.

>>> from pkpd.tumour.simulate import simulate
>>> sim = simulate("sclc_triplet_tgi", ["durvalumab: 1500 mg IV 60 min Q3W x4 then 1500 mg IV "
...                "60 min Q4W", "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4",
...                "carboplatin: AUC 5 IV 60 min D1 Q21D x4"], days=365, n=1000, seed=1)
>>> sim.patients[["time_to_nadir_day", "depth_pct", "resistance_onset_day"]].median()

Every drug of the protocol must be a driver of the card (``[drivers.DRUG]``); drugs of the card
that the protocol does not give have zero exposure. Each driver's PK card supplies the
individual PK parameters (IIV drawn from that card), the tumour card the tumour parameters. PK
runs exactly on the driver grid (:mod:`pkpd.tumour.drivers`) and the tumour model in closed form
(:mod:`pkpd.tumour.combination`); patients are processed in chunks (jit + vmap) with a progress bar.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..cards.card import Card, load_card
from ..dosing.regimen import Protocol, Regimen, parse_regimen
from ..errors import ModelError, RegimenError
from ..io import atomic_write_bytes, atomic_write_csv
from . import combination as cm
from .drivers import DoseInputs, dose_amounts_per_patient, dose_inputs, grid_means

__all__ = ["simulate", "Simulation", "as_protocol", "patient_drivers", "MAX_STEPS",
           "MAX_PATIENTS", "MAX_OUTPUT_ROWS", "MAX_CHUNK_CELLS"]

#: most driver-grid steps of one simulation (100 years at the default 1-day step)
MAX_STEPS = 36_525
#: most virtual patients of one simulation
MAX_PATIENTS = 1_000_000
#: most trajectory rows (patients x output times), about 0.6 GB of output
MAX_OUTPUT_ROWS = 20_000_000
#: most patient-steps per compiled batch (about 1.6 GB here); longer horizons get smaller
#: batches, which gives the same numbers
MAX_CHUNK_CELLS = 8_000_000

DERIVED = ("baseline_mm", "nadir_mm", "time_to_nadir_day", "depth_pct", "resistance_onset_day",
           "progression_day")


def as_protocol(protocol) -> Protocol:
    """A :class:`Protocol` from a Protocol, ``{drug: Regimen | text}``, a list of
    ``"drug: regimen"`` texts, or one such text."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, str):
        protocol = [protocol]
    if isinstance(protocol, Mapping):
        regs = {}
        for drug, r in protocol.items():
            regs[drug] = parse_regimen(r) if isinstance(r, str) else r
        return Protocol(regs)
    if isinstance(protocol, Sequence):
        regs = {}
        for i, r in enumerate(protocol):
            reg = parse_regimen(r) if isinstance(r, str) else r
            if not isinstance(reg, Regimen) or not reg.drug:
                raise RegimenError(
                    f"regimen {i + 1} ({r!r}) names no drug. Fix: prefix it with the drug, e.g. "
                    "'anlotinib: 12 mg PO QD D1-14 Q21D'")
            if reg.drug in regs:
                raise RegimenError(f"drug {reg.drug} has two regimens (number {i + 1}). Fix: "
                                   "give each drug once; use 'then' for sequential phases")
            regs[reg.drug] = reg
        return Protocol(regs)
    raise RegimenError(f"cannot read a protocol from {type(protocol).__name__}. Fix: pass "
                       "'drug: regimen' texts, a dict drug -> regimen, or a Protocol")


@dataclass(frozen=True)
class _Driver:
    drug: str
    card: Card
    signal: str
    scale: float


def _drivers_of(card: Card, protocol: Protocol) -> list[_Driver]:
    known = card.drivers
    unknown = [d for d in protocol if d not in known]
    if unknown:
        raise ModelError(
            f"the protocol gives {unknown}, which card {card.name} has no driver for. Fix: use "
            f"the card's drugs {sorted(known)} or add [drivers.{unknown[0]}] to the card")
    out = []
    for drug, d in known.items():
        if drug not in protocol:
            continue
        scale = 1.0 / float(d["reference_mean"]) if d["signal"] == "chemo" else 1.0
        out.append(_Driver(drug, load_card(d["card"]), d["signal"], scale))
    return out


@functools.lru_cache(maxsize=32)
def _chunk_fn(structure, n_steps, step_day, n_times, per_patient_amounts=False):
    """Jitted ``(pk_params_per_driver, amounts, tumour_params, times) -> (sld, derived)``;
    ``amounts`` are shared by all patients, or per patient with ``per_patient_amounts``."""
    def one(pk_params, amounts, tp, times):
        signals = {s: jnp.zeros(n_steps) for s in cm.DRIVERS}
        for (_drug, model, types, active, signal, scale), p, u in zip(structure, pk_params,
                                                                       amounts):
            shell = DoseInputs(step_day, n_steps, types, np.zeros((n_steps, len(types))))
            mean, _ = grid_means(model, p, shell, u, active)
            signals[signal] = signals[signal] + mean * scale
        return cm.trajectory(tp, signals, times, step_day)

    return jax.jit(jax.vmap(one, in_axes=(0, 0 if per_patient_amounts else None, 0, None)))


def patient_drivers(card: Card | str, protocol, days: float, *, pk_params=None,
                    covariates: Mapping[str, float] | None = None,
                    step_day: float | None = None) -> dict[str, np.ndarray]:
    """Driver signals ``{"anlotinib", "durvalumab", "chemo"}``, each ``(n_patients, n_steps)``,
    for given (default: typical) PK parameters ``{drug: {name: array}}``. These are the data a
    tumour fit conditions on when PK is fixed (sequential PK/PD)."""
    card = load_card(card) if isinstance(card, str) else card
    protocol = as_protocol(protocol)
    step = float(step_day or card.structure.get("grid_step_day", 1.0))
    n_steps = int(np.ceil(days / step))
    drivers = _drivers_of(card, protocol)
    out = None
    for d in drivers:
        inputs = dose_inputs(d.card, protocol[d.drug].doses(covariates, n_steps * step), n_steps,
                             step)
        p = (pk_params or {}).get(d.drug)
        if p is None:
            p = {k: np.array([v]) for k, v in d.card.typical_params(covariates).items()}
        p = {k: jnp.atleast_1d(jnp.asarray(v, float)) for k, v in p.items()}
        model = d.card.model()
        mean = jax.vmap(lambda q, model=model, inputs=inputs: grid_means(model, q, inputs)[0])(p)
        if out is None:
            out = {s: np.zeros((mean.shape[0], n_steps)) for s in cm.DRIVERS}
        out[d.signal] = out[d.signal] + np.asarray(mean) * d.scale
    if out is None:
        out = {s: np.zeros((1, n_steps)) for s in cm.DRIVERS}
    return out


@dataclass
class Simulation:
    """Result of :func:`simulate`.

    ``trajectories``: one row per patient and time, columns ``ID, TIME`` (day), ``IPRED`` (SLD,
    mm) and, with residual error, ``DV``. ``patients``: one row per patient with the individual
    parameters and the derived quantities ``baseline_mm, nadir_mm, time_to_nadir_day,
    depth_pct, resistance_onset_day, progression_day`` (NaN = not reached within the horizon).
    """

    trajectories: pd.DataFrame
    patients: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims ``(id, time)`` and per-patient variables on ``id``."""
        import xarray as xr

        tr = self.trajectories.set_index(["ID", "TIME"])
        ds = xr.Dataset.from_dataframe(tr).rename({"ID": "id", "TIME": "time"})
        pat = self.patients.set_index("ID")
        for col in pat.columns:
            ds[col] = ("id", pat[col].to_numpy())
        ds["time"].attrs["units"] = "day"
        for v in ("IPRED", "DV", "baseline_mm", "nadir_mm"):
            if v in ds:
                ds[v].attrs["units"] = "mm"
        ds.attrs.update({k: json.dumps(v) if not isinstance(v, str) else v
                         for k, v in self.meta.items()})
        return ds

    def write(self, path: str | Path) -> list[Path]:
        """Write atomically: ``.csv`` gives ``PATH`` (trajectories) and ``PATH_patients.csv``;
        ``.nc`` gives one netCDF file. Returns the paths written."""
        path = Path(path)
        if path.suffix == ".nc":
            atomic_write_bytes(path, self.to_xarray().to_netcdf())
            return [path]
        if path.suffix != ".csv":
            raise ModelError(f"output {path}: unknown format. Fix: end the name in .csv or .nc")
        side = path.with_name(path.stem + "_patients.csv")
        atomic_write_csv(self.trajectories, path)
        atomic_write_csv(self.patients, side)
        meta = path.with_name(path.stem + "_meta.json")
        atomic_write_bytes(meta, json.dumps(self.meta, indent=2).encode())
        return [path, side, meta]


def simulate(card: Card | str, protocol, days: float = 730.0, *, n: int | None = None,
             seed: int = 0, times=None,
             covariates: Mapping[str, float] | pd.DataFrame | None = None,
             params: Mapping[str, float] | None = None, residual: bool = False,
             chunk: int = 10_000, progress: bool = True,
             step_day: float | None = None) -> Simulation:
    """Simulate tumour size under ``protocol`` for ``days`` days.

    Parameters
    ----------
    card : tumour card (name or :class:`Card`), e.g. ``"sclc_triplet_tgi"``.
    protocol : a :class:`~pkpd.dosing.regimen.Protocol`, ``{drug: regimen}``, or ``"drug: regimen"``
        texts (see :func:`as_protocol`).
    n : number of virtual patients with IIV (PK and tumour) drawn from the cards; ``None`` gives
        one typical patient without IIV.
    times : output times in days (default: weekly from 0 to ``days``).
    covariates : shared covariates ``{"BSA": 1.8, "GFR": 100}``, or a pandas DataFrame with one
        row per virtual patient (e.g. :meth:`pkpd.trial.Population.draw`): each patient's
        mg/kg, mg/m2 and AUC doses and PK covariate effects then use its own row (``n`` must be
        left out, for typical patients, or equal the number of rows).
    params : overrides of the tumour card's typical values (e.g. ``{"PSI": 0.0}``).
    residual : add the card's residual error as a ``DV`` column (clipped at 0 mm).
    chunk : patients per compiled batch.
    """
    card, protocol, days, step, n_steps, times, chunk = _check_inputs(
        card, protocol, days, n=n, seed=seed, times=times, chunk=chunk, step_day=step_day)
    rng = np.random.default_rng(seed)
    drivers = _drivers_of(card, protocol)
    table = _covariate_table(covariates, n)
    n_pat = len(table) if table is not None else 1 if n is None else int(n)

    # tumour parameters
    typ = card.typical_params()
    if params:
        card.check_params(params, who="parameter override")
    typ.update({k: float(v) for k, v in (params or {}).items()})
    if n is None:
        tp = {k: np.full(n_pat, v) for k, v in typ.items()}
    else:
        names = card.iiv_names
        etas = rng.multivariate_normal(np.zeros(len(names)), card.omega(), size=n_pat)
        tp = card.apply_eta({k: np.full(n_pat, v) for k, v in typ.items()},
                            {nm: etas[:, i] for i, nm in enumerate(names)})
    cm.check_params(tp, f"card {card.name}")

    # PK parameters and dose inputs per driver
    structure, pk_params, amounts, inputs_meta = [], [], [], {}
    for d in drivers:
        if table is None:
            doses = protocol[d.drug].doses(covariates, n_steps * step)
            inputs = dose_inputs(d.card, doses, n_steps, step)
            amounts.append(jnp.asarray(inputs.amount))
            p = _pk_params(d.card, n, n_pat, rng, covariates)
        else:
            doses, per = protocol[d.drug].doses_per_patient(table, n_steps * step)
            inputs, grid = dose_amounts_per_patient(d.card, doses, per, n_steps, step)
            amounts.append(grid)
            p = _pk_params(d.card, n, n_pat, rng, _numeric_columns(table))
        structure.append((d.drug, d.card.model(), inputs.types, inputs.active, d.signal,
                          d.scale))
        pk_params.append(p)
        inputs_meta[d.drug] = dict(card=d.card.name, card_sha256=d.card.sha256,
                                   n_doses=int(len(doses.time_day)),
                                   regimen=protocol[d.drug].to_text())
    fn = _chunk_fn(tuple(structure), n_steps, step, len(times), table is not None)

    size = min(chunk, n_pat)
    sld_out = np.empty((n_pat, len(times)))
    der_out = {k: np.empty(n_pat) for k in DERIVED}
    bar = None
    if progress and n_pat > size:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_pat, desc="simulate", unit="patient")
    for start in range(0, n_pat, size):
        stop = min(start + size, n_pat)
        idx = np.minimum(np.arange(start, start + size), n_pat - 1)  # pad the last chunk
        pk_chunk = tuple({k: jnp.asarray(v[idx]) for k, v in p.items()} for p in pk_params)
        tp_chunk = {k: jnp.asarray(v[idx]) for k, v in tp.items()}
        am_chunk = tuple(amounts) if table is None else tuple(jnp.asarray(a[idx]) for a in amounts)
        y, der = fn(pk_chunk, am_chunk, tp_chunk, jnp.asarray(times))
        sld_out[start:stop] = np.asarray(y)[: stop - start]
        for k in DERIVED:
            der_out[k][start:stop] = np.asarray(der[k])[: stop - start]
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()

    ids = np.arange(1, n_pat + 1)
    traj = _trajectories(card, times, ids, sld_out, residual, rng)
    pat = _patients(typ, tp, drivers, pk_params, der_out, n, ids)
    if table is not None:
        extra = [c for c in table.columns if c not in pat.columns]
        pat = pd.concat([pat, table[extra].reset_index(drop=True)], axis=1)
    meta = dict(card=card.name, card_sha256=card.sha256, days=float(days), step_day=step,
                n=n_pat, typical=n is None, seed=int(seed), residual=bool(residual),
                covariates=(dict(covariates or {}) if table is None
                            else {"per_patient": [str(c) for c in table.columns]}),
                params=dict(params or {}), drivers=inputs_meta,
                pkpd_version=_version())
    return Simulation(trajectories=traj, patients=pat, meta=meta)


def _covariate_table(covariates, n) -> pd.DataFrame | None:
    """The per-patient covariate table (one row per patient), or None for shared covariates."""
    if not isinstance(covariates, pd.DataFrame):
        return None
    rows = len(covariates)
    if rows == 0:
        raise ModelError("the covariate table has no rows. Fix: one row per virtual patient")
    if n is not None and int(n) != rows:
        raise ModelError(f"n = {n} but the covariate table has {rows} rows (one per patient). "
                         "Fix: leave n out (typical patients) or pass n = the number of rows")
    return covariates.reset_index(drop=True)


def _numeric_columns(table: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): table[c].to_numpy(dtype=float) for c in table.columns
            if pd.api.types.is_numeric_dtype(table[c])}


def _pk_params(card: Card, n, n_pat: int, rng: np.random.Generator, covariates) -> dict:
    """PK parameters of ``n_pat`` patients: typical (``n`` None) or with IIV; covariates may be
    shared (scalars) or per patient (arrays)."""
    if n is not None:
        return card.sample_params(n_pat, rng, covariates)
    return {k: np.broadcast_to(np.asarray(v, dtype=float), (n_pat,)).copy()
            for k, v in card.typical_params(covariates).items()}


class _Inputs(NamedTuple):
    """The checked inputs of :func:`simulate`."""

    card: Card
    protocol: Protocol
    days: float
    step: float
    n_steps: int
    times: np.ndarray
    chunk: int


def _check_inputs(card, protocol, days, *, n, seed, times, chunk, step_day) -> _Inputs:
    """The checked inputs of :func:`simulate` (in this order): the tumour card, the grid step,
    the horizon and its number of steps, n, seed, the protocol, the output times (and the number
    of trajectory rows), and the batch size bounded by MAX_CHUNK_CELLS."""
    card = load_card(card) if isinstance(card, str) else card
    if card.kind != "tumor":
        raise ModelError(f"card {card.name} is a {card.kind} card. Fix: use a tumour card such "
                         "as sclc_triplet_tgi (pkpd cards lists them)")
    step = float(step_day or card.structure.get("grid_step_day", 1.0))
    days, n_steps = _check_horizon(days, step)
    _check_n(n)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelError(f"seed = {seed!r} must be a whole number >= 0. Fix: e.g. --seed 1")
    protocol = as_protocol(protocol)
    times = _check_times(times, days, n_steps * step)
    n_rows = (1 if n is None else int(n)) * len(times)
    if n_rows > MAX_OUTPUT_ROWS:
        raise ModelError(
            f"{n or 1} patient(s) x {len(times)} output times = {n_rows} trajectory rows; "
            f"at most {MAX_OUTPUT_ROWS}. Fix: fewer patients (--n) or output times (--times)")
    chunk = max(1, min(int(chunk), MAX_CHUNK_CELLS // n_steps))
    return _Inputs(card, protocol, days, step, n_steps, times, chunk)


def _trajectories(card: Card, times: np.ndarray, ids: np.ndarray, sld_out: np.ndarray,
                  residual: bool, rng: np.random.Generator) -> pd.DataFrame:
    """The ``trajectories`` table: ``ID, TIME, IPRED`` and, with residual error, ``DV`` (drawn
    from ``rng``, clipped at 0 mm)."""
    n_pat = len(ids)
    traj = pd.DataFrame({"ID": np.repeat(ids, len(times)), "TIME": np.tile(times, n_pat),
                         "IPRED": sld_out.ravel()})
    if residual:
        res = card.residual
        sd = np.sqrt(float(res.get("add_sd", 0.0)) ** 2
                     + (float(res.get("prop_sd", 0.0)) * traj["IPRED"].to_numpy()) ** 2)
        traj["DV"] = np.maximum(traj["IPRED"].to_numpy() + sd * rng.standard_normal(len(traj)),
                                0.0)
    return traj


def _patients(typ: dict, tp: dict, drivers: list[_Driver], pk_params: list, der_out: dict,
              n: int | None, ids: np.ndarray) -> pd.DataFrame:
    """The ``patients`` table: ``ID``, the tumour parameters, the PK parameters with IIV
    (``DRUG.NAME``, with ``n`` only) and the derived quantities."""
    pat = pd.DataFrame({"ID": ids})
    for k in typ:
        pat[k] = tp[k]
    for drug_i, d in enumerate(drivers):
        for k, v in pk_params[drug_i].items():
            if n is not None and k in d.card.iiv_names:
                pat[f"{d.drug}.{k}"] = v
    for k in DERIVED:
        pat[k] = der_out[k]
    return pat


def _check_horizon(days, step: float) -> tuple[float, int]:
    """The horizon as a float and the number of grid steps, both bounded."""
    try:
        d = float(days)
    except (TypeError, ValueError):
        d = float("nan")
    if isinstance(days, bool) or not (np.isfinite(d) and d > 0):
        raise ModelError(f"days = {days!r} must be > 0 and finite (a number of days). Fix: "
                         "e.g. --days 730 (days=730)")
    if not (np.isfinite(step) and step > 0):
        raise ModelError(f"step_day = {step!r} must be > 0. Fix: e.g. step_day=1.0")
    n_steps = int(np.ceil(d / step))
    if n_steps > MAX_STEPS:
        raise ModelError(
            f"days = {d:g} needs {n_steps} grid steps of {step:g} day(s); at most {MAX_STEPS} "
            f"({MAX_STEPS * step:g} days). Fix: use a shorter horizon (--days)")
    return d, n_steps


def _check_n(n) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer, float)) or int(n) != n \
            or n < 1:
        raise ModelError(f"n = {n!r} must be a positive integer (or None for the typical "
                         "patient). Fix: e.g. --n 1000")
    if n > MAX_PATIENTS:
        raise ModelError(f"n = {int(n)} virtual patients; at most {MAX_PATIENTS}. Fix: simulate "
                         "fewer patients (--n), or several runs with different seeds")


def _check_times(times, days: float, end: float) -> np.ndarray:
    if times is None:
        return np.arange(0.0, days + 1e-9, 7.0)
    try:
        t = np.asarray(times, dtype=float)
    except (TypeError, ValueError):
        raise ModelError(f"times must be numbers of days; got {times!r}. Fix: e.g. "
                         "--times 0,42,84") from None
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ModelError(f"times must be a non-empty list of finite days >= 0; got "
                         f"{_short(t)}. Fix: e.g. --times 0,42,84")
    if np.any(np.diff(t) < 0) or np.any(t > end):
        raise ModelError(f"times must be increasing and within 0..{end:g} days; got {_short(t)}. "
                         "Fix: sort them or raise days")
    return t


def _short(a: np.ndarray) -> str:
    a = np.ravel(a)
    text = ", ".join(f"{x:g}" for x in a[:8])
    return f"[{text}{', ...' if a.size > 8 else ''}] ({a.size} values)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pkpd")
    except PackageNotFoundError:
        return "unknown"
