"""Predictions at the records of a NONMEM-style event table (population PRED and IPRED).

``predict`` is what ``pkpd predict`` runs: every subject is compiled once, the population is
``vmap``-ed through one jitted solve, and predictions come back in the file's row order.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..cards.card import Card
from ..dosing.events import EventTable, expand_addl
from ..errors import DataError, ModelError
from .engine import (
    Compiled,
    SolverConfig,
    compile_records,
    solve_population,
    ss_pending_needed,
    stack,
)
from .models import PKModel, check_domains, check_names, default_domain

__all__ = ["Prepared", "prepare", "predict"]


@dataclass(frozen=True)
class Prepared:
    """A dataset compiled for one model: arrays plus the bookkeeping to map results back."""

    compiled: Compiled
    ids: list
    obs_rows: list[np.ndarray]      # per subject: ROW of each prediction record, in order
    obs_time: list[np.ndarray]      # per subject: TIME (table unit) of each prediction record
    table: EventTable

    @property
    def n_subjects(self) -> int:
        return len(self.ids)


def prepare(table: EventTable, model: PKModel) -> Prepared:
    """Convert units to the model's, expand ADDL, compile every subject and stack them."""
    conv = table.with_units(time_unit=model.time_unit, amt_unit="mg")
    expanded = expand_addl(conv)
    df = expanded.df
    ids, subs, rows, times = [], [], [], []
    time_of_row = table.df.set_index("ROW")["TIME"]     # TIME in the table's own unit
    for sid, sdf in df.groupby("ID", sort=False):
        sdf = sdf.sort_values("SEQ", kind="stable")
        subs.append(compile_records(sdf, model, time_col="ATIME", subject=sid))
        ids.append(sid)
        obs_rows = sdf.loc[sdf["EVID"].isin([0, 2]), "ROW"].to_numpy()
        rows.append(obs_rows)
        times.append(time_of_row.loc[obs_rows].to_numpy())
    if not subs:
        raise DataError("the dataset has no subjects", fix="check the file")
    return Prepared(compiled=stack(subs), ids=ids, obs_rows=rows, obs_time=times, table=table)


def _subject_values(table: EventTable, names, ids) -> dict[str, np.ndarray] | None:
    """Per-subject baseline values of the columns ``names`` (first non-missing per subject)."""
    df = table.df
    cols = [c for c in names if c in df.columns]
    if not cols:
        return None
    out = {}
    for c in cols:
        vals = pd.Series(table.numeric(c), index=df.index)    # text or inf: DataError
        first = vals.groupby(df["ID"], sort=False).first()     # first non-missing
        varies = vals.groupby(df["ID"], sort=False).nunique() > 1
        for sid in ids:
            if sid not in first.index or pd.isna(first[sid]):
                raise DataError(f"column {c} has no value for this subject", subject=sid,
                                column=c, fix=f"fill {c} on at least one record per subject")
            if varies[sid]:
                warnings.warn(f"ID {sid}: column {c} varies within the subject; pkpd uses the "
                              f"first value ({first[sid]}) as a baseline value", stacklevel=3)
        out[c] = first.loc[ids].to_numpy(dtype=float)
    return out


def predict(table: EventTable, card: Card | None = None, *, model: PKModel | None = None,
            params: Mapping[str, float] | None = None, config: SolverConfig | None = None
            ) -> pd.DataFrame:
    """Predict at every EVID 0/2 record.

    Parameters
    ----------
    table : EventTable
    card : Card, optional
        Gives the model, the typical values and the covariate model. Subject covariates found as
        columns of the table (baseline value per subject) enter PRED.
    model : PKModel, optional
        Instead of a card: a model with ``params`` as the typical values.
    params : dict, optional
        Overrides of typical values (card units). Names must be parameters of the card (or
        model), or dose parameters ``F1``, ``ALAG1``, ...; values must lie in their domains.

    Returns
    -------
    DataFrame with ID, TIME (table units), PRED and, when the table carries per-subject
    parameter columns named like the model's parameters, IPRED. Concentrations are in the card's
    concentration unit. Rows come back in file order.
    """
    if card is None and model is None:
        raise ModelError("predict needs a card or a model")
    model = model or card.model()
    overrides = dict(params or {})
    domains = _check_overrides(overrides, card, model)
    prep = prepare(table, model)
    ids = prep.ids
    if card is not None:
        covs = _subject_values(table, card.reference_covariates.keys() | {
            c["covariate"] for c in card.raw.get("covariates", [])}, ids) or {}
        typical = []
        for i in range(len(ids)):
            typical.append(card.typical_params({k: v[i] for k, v in covs.items()}))
        pop = {k: np.array([t[k] for t in typical]) for k in typical[0]}
    else:
        pop = {}
    for k, v in overrides.items():
        pop[k] = np.full(len(ids), float(v))
    model.check_params(pop, domains, who="typical values")
    config = _sized(config, model, pop, prep.compiled)
    pred, nfail = solve_population(model, pop, prep.compiled, config=config)
    out = _assemble(prep, np.asarray(pred), "PRED")
    names = set(model.parameters) | set(model.dose_parameter_names()) | set(pop)
    indiv = _subject_values(table, sorted(names), ids)
    if indiv:
        _check_subject_params(indiv, ids, domains)
        ip = dict(pop)
        ip.update(indiv)
        model.check_params(ip, domains)
        config = _sized(config, model, ip, prep.compiled)
        ipred, nfail2 = solve_population(model, ip, prep.compiled, config=config)
        out["IPRED"] = _assemble(prep, np.asarray(ipred), "IPRED")["IPRED"].to_numpy()
        nfail = nfail + nfail2
    failed = int(np.sum(np.asarray(nfail)))
    if failed:
        warnings.warn(f"{failed} ODE segment(s) failed; their predictions are NaN", stacklevel=2)
    return out


def _check_overrides(overrides: dict, card: Card | None, model: PKModel) -> dict:
    """Refuse unknown override names and values outside their domains; return the domains."""
    if card is not None:
        if overrides:
            card.check_params(overrides, who="parameter override")
        return card.domains()
    check_names(list(overrides), model.parameters, owner=f"model {model!r}", n_cmt=model.n_cmt)
    check_domains(overrides, who="parameter override")
    return {}


def _check_subject_params(indiv: Mapping[str, np.ndarray], ids, domains: Mapping) -> None:
    """Per-subject parameter columns (for IPRED) must lie in the parameters' domains."""
    for col, values in indiv.items():
        dom = domains.get(col) or default_domain(col)
        bad = np.flatnonzero(~dom.contains(values))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{col} is a model parameter (used for IPRED) and must be {dom.describe()}",
                subject=ids[i], column=col, value=float(values[i]),
                fix=f"correct {col} for this subject" + (
                    f" ({bad.size} subjects are outside)" if bad.size > 1 else "")
                + f", or rename the column if it is not the parameter {col}")


def _sized(config, model, params, compiled) -> SolverConfig:
    """Raise ``ss_pending`` when lags/infusions at SS records need it (ALAG + dur > 4 II)."""
    config = config or SolverConfig()
    need = ss_pending_needed(model, params, compiled)
    if need > config.ss_pending:
        config = dataclasses.replace(config, ss_pending=need)
    return config


def _assemble(prep: Prepared, values: np.ndarray, name: str) -> pd.DataFrame:
    frames = []
    for i, sid in enumerate(prep.ids):
        n = len(prep.obs_rows[i])
        frames.append(pd.DataFrame({"ROW": prep.obs_rows[i], "ID": sid,
                                    "TIME": prep.obs_time[i], name: values[i, :n]}))
    out = pd.concat(frames, ignore_index=True).sort_values("ROW", kind="stable")
    return out.drop(columns="ROW").reset_index(drop=True)
