"""Simulated trials with known truth, for parameter-recovery fits (``[data] format = "simulate"``).

The ``[simulate]`` section of a spec::

    [simulate]
    n = 120                     # patients, split over the arms in [simulate.arms] (counts)
    seed = 7
    days = 728                  # follow-up horizon (days)
    baseline_day = -7           # baseline scan before the first dose
    scan_every_days = 42        # every 6 weeks ...
    scan_switch_day = 168       # ... until week 24,
    scan_every_days_late = 63   # then every 9 weeks
    arms = { triplet = 40, durvalumab_ep = 40, anlotinib_ep = 40 }
    truth = { PSI = 0.5 }       # overrides of the card's typical values
    iiv = ["BASE", "KG", "KCHEMO", "KIO", "LAMBDA"]   # parameters with IIV (card omega2)
    omega = { KIO = 0.8 }       # overrides of the card's IIV, as SDs of the etas
    residual = { add_sd = 2.0, prop_sd = 0.1 }   # overrides of the card's residual error

Patients get the card's typical PK (the fit conditions on the same drivers, sequential PK/PD),
tumour parameters with log-normal (or additive) IIV from the card's variances, the card's
residual error (or the ``omega`` and ``residual`` overrides: simulation-based calibration
draws them from the fit's priors; a draw at or below 0 mm is reported as 0 and left-censored
at 0, M3, in the fit), and scans on the schedule until RECIST progression (+20%
and +5 mm over the nadir; the PD scan is kept, later ones are not taken). The truth
(population values, each patient's parameters, resistance onset, time to nadir, depth) is kept
in ``FitData.meta``.
"""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import SpecError
from ..tumour import combination as cm
from ..tumour.simulate import patient_drivers
from .data import FitData, progression_cut

__all__ = ["simulate_data", "scan_days", "SIMULATOR_VERSION"]

#: version of what :func:`simulate_data` makes from a spec and seed; part of a design's
#: fingerprint, so replicate results of two versions are never mixed. 1: a draw at or below
#: 0 mm became an exact 0 (until 2026-12-07); 2: it is left-censored at 0.
SIMULATOR_VERSION = 2

#: residual role of a fit spec -> the simulator's residual key (card [residual] and
#: ``data.meta["residual"]``); the roles a simulated trial can have
RESIDUAL_KEYS = {"add": "add_sd", "prop": "prop_sd"}


def scan_days(days: float, baseline_day: float = -7.0, every: float = 42.0,
              switch_day: float = 168.0, every_late: float = 63.0) -> np.ndarray:
    """Baseline, then every ``every`` days to ``switch_day``, then every ``every_late`` days."""
    early = np.arange(every, switch_day + 1e-9, every)
    late = np.arange(early[-1] + every_late if early.size else every_late, days + 1e-9,
                     every_late)
    return np.concatenate([[baseline_day], early, late])


def simulate_data(spec) -> FitData:
    sim = dict(spec.raw.get("simulate", {}))
    if spec.card is None or spec.model_kind != "tumour_card":
        raise SpecError("[simulate] needs a tumour card in [model] (e.g. card = "
                        "'sclc_triplet_tgi')")
    card = spec.card
    known = {"n", "seed", "days", "baseline_day", "scan_every_days", "scan_switch_day",
             "scan_every_days_late", "arms", "truth", "iiv", "covariates", "omega",
             "residual"}
    extra = set(sim) - known
    if extra:
        raise SpecError(f"[simulate]: unknown setting(s) {', '.join(sorted(extra))}. Fix: use "
                        f"{', '.join(sorted(known))}")
    seed = int(sim.get("seed", 1))
    days = float(sim.get("days", 728))
    arms = dict(sim.get("arms", {"default": int(sim.get("n", 120))}))
    n = int(sum(arms.values()))
    if "n" in sim and int(sim["n"]) != n:
        raise SpecError(f"[simulate]: n = {sim['n']} but the arms add up to {n}")
    for a in arms:
        if a not in spec.regimens:
            raise SpecError(f"[simulate] arm {a!r} has no regimen. Fix: add [regimens.{a}]")
    rng = np.random.default_rng(seed)
    typ = {k: float(v["value"]) for k, v in card.raw["parameters"].items()}
    truth = {k: float(v) for k, v in dict(sim.get("truth", {})).items()}
    bad = [k for k in truth if k not in typ]
    if bad:
        raise SpecError(f"[simulate] truth: unknown parameter(s) {bad}. Fix: use {list(typ)}")
    typ.update(truth)
    iiv = list(sim.get("iiv", card.iiv_names))
    card_iiv = card.raw.get("iiv", {})
    for k in iiv:
        if k not in card_iiv:
            raise SpecError(f"[simulate] iiv: {k} has no IIV variance in card {card.name}")
    omega_sd = _omega_sd(sim, iiv, card_iiv)
    resid = _residual(sim, card.residual)
    arm_of = np.repeat(list(arms), list(arms.values()))
    params = {k: np.full(n, v) for k, v in typ.items()}
    for k in iiv:
        eta = rng.normal(0.0, omega_sd[k], n)
        if card_iiv[k].get("type", "exp") == "add":
            params[k] = params[k] + eta
        else:
            params[k] = params[k] * np.exp(eta)
    cm.check_params(params, "[simulate] truth")
    step = float(card.structure.get("grid_step_day", 1.0))
    horizon = step * (np.ceil(days / step) + 1)
    drivers = {s: np.zeros((n, int(round(horizon / step)))) for s in cm.DRIVERS}
    cov = sim.get("covariates") or spec.raw.get("covariates")
    for a in arms:
        r = dict(spec.regimens[a])
        r.pop("covariates", None)
        dr = patient_drivers(card, r, horizon, covariates=cov, step_day=step)
        for s in cm.DRIVERS:
            drivers[s][arm_of == a] = dr[s][0]
    times = scan_days(days, float(sim.get("baseline_day", -7.0)),
                      float(sim.get("scan_every_days", 42.0)),
                      float(sim.get("scan_switch_day", 168.0)),
                      float(sim.get("scan_every_days_late", 63.0)))
    P = {k: jnp.asarray(v) for k, v in params.items()}
    dj = {k: jnp.asarray(v) for k, v in drivers.items()}

    def one(p, d):
        return cm.trajectory(p, d, jnp.asarray(times), step)

    ipred, der = jax.jit(jax.vmap(one))(P, dj)
    ipred = np.asarray(ipred)
    sd = np.sqrt(resid.get("add_sd", 0.0) ** 2 + (resid.get("prop_sd", 0.0) * ipred) ** 2)
    raw = ipred + sd * rng.standard_normal(ipred.shape)
    # a measurement cannot be negative: a draw at or below 0 is reported as 0 and is
    # left-censored at 0 (M3), which is exactly how it was made; treated as an exact 0 it would
    # pull the additive SD down (the SBC result in docs/design.md)
    cens = (raw <= 0.0).ravel()
    subj = np.repeat(np.arange(n), len(times))
    t = np.tile(times, n)
    y = np.where(cens, 0.0, raw.ravel())
    keep = progression_cut(subj, t, y)
    ids = [f"P{i + 1:03d}" for i in range(n)]
    patients = pd.DataFrame({"subject": ids, "arm": arm_of, **{k: np.asarray(v) for k, v in
                                                                 params.items()}})
    for k, v in der.items():
        patients[f"true_{k}"] = np.asarray(v)
    frame = pd.DataFrame({"subject": np.asarray(ids)[subj[keep]], "time_day": t[keep],
                          "sld_mm": y[keep], "censored": cens[keep].astype(int),
                          "arm": arm_of[subj[keep]], "ipred_mm": ipred.ravel()[keep]})
    sha = hashlib.sha256(frame.to_csv(index=False).encode()
                         + json.dumps(sim, sort_keys=True).encode()).hexdigest()
    rows = pd.DataFrame({"row": np.arange(1, len(y) + 1), "used": keep,
                         "reason": np.where(keep, "used", "after the first progression "
                                                          "(scans stop at PD)"),
                         "subject": np.asarray(ids)[subj]})
    return FitData(subjects=ids, obs_subject=subj[keep], obs_time=t[keep], y=y[keep],
                   censored=cens[keep], arms=list(arm_of), rows=rows,
                   sha256=sha, obs_row=np.flatnonzero(keep) + 1,
                   meta={"simulated": True, "truth_population": typ, "iiv": iiv,
                         "omega_sd": omega_sd, "residual": resid,
                         "truth_patients": patients, "frame": frame, "seed": seed,
                         "scan_days": times.tolist()})


def _omega_sd(sim: dict, iiv: list, card_iiv: dict) -> dict:
    """SD of each simulated eta: ``[simulate] omega`` where given, else the card's omega2."""
    given = dict(sim.get("omega", {}))
    bad = [k for k in given if k not in iiv]
    if bad:
        raise SpecError(f"[simulate] omega: {bad} not among the IIV parameters {iiv}. Fix: add "
                        "them to [simulate] iiv, or remove them")
    out = {}
    for k in iiv:
        v = float(given[k]) if k in given else float(np.sqrt(float(card_iiv[k]["omega2"])))
        if not np.isfinite(v) or v < 0:
            raise SpecError(f"[simulate] omega: {k} = {v} must be an SD >= 0")
        out[k] = v
    return out


def _residual(sim: dict, card_res: dict) -> dict:
    """Residual SDs ``add_sd`` (mm) and ``prop_sd``: ``[simulate] residual`` over the card's."""
    given = dict(sim.get("residual", {}))
    bad = sorted(set(given) - {"add_sd", "prop_sd"})
    if bad:
        raise SpecError(f"[simulate] residual: unknown key(s) {bad}. Fix: use add_sd, prop_sd")
    out = {k: float(card_res[k]) for k in ("add_sd", "prop_sd") if k in card_res}
    for k, v in given.items():
        if not np.isfinite(float(v)) or float(v) < 0:
            raise SpecError(f"[simulate] residual: {k} = {v} must be an SD >= 0")
        out[k] = float(v)
    return out


def population_truth(spec, data: FitData) -> dict:
    """True value of each reported population parameter that has one (simulated data)."""
    typ = data.meta["truth_population"]
    iiv = data.meta["iiv"]
    card_iiv = spec.card.raw.get("iiv", {})
    res = spec.card.residual
    out = {}
    for name in spec.thetas:
        if name in typ:
            out[name] = float(typ[name])
    for b in spec.omegas:
        for e, name in zip(b.etas, b.names, strict=False):
            par = e.removeprefix("eta_")
            if par in iiv:
                sd = data.meta.get("omega_sd", {}).get(par)
                v = float(card_iiv[par]["omega2"]) if sd is None else float(sd) ** 2
                out[name] = v if b.report == "variance" else float(np.sqrt(v))
    res = {**res, **data.meta.get("residual", {})}
    for role, key in RESIDUAL_KEYS.items():
        if role in spec.residual.names and key in res:
            v = float(res[key])
            out[spec.residual.names[role]] = v ** 2 if spec.residual.variance[role] else v
    return out


def coverage_count(covered, level: float = 0.90) -> dict:
    """How many of n truths the ``level`` intervals cover, judged against Binomial(n, level), the
    count a calibrated posterior gives: ``p_binomial`` = P(X <= n_covered) and ``lower_5pct``,
    the smallest k with P(X <= k) >= 0.05 (a count below it is evidence of miscalibration)."""
    from scipy.stats import binom
    covered = [bool(c) for c in covered]
    n, k = len(covered), int(sum(covered))
    return {"n": n, "n_covered": k, "p_binomial": float(binom.cdf(k, n, level)),
            "lower_5pct": int(binom.ppf(0.05, n, level))}


def recovery_check(result, spec, data: FitData, level: float = 0.90) -> dict:
    """Coverage of the population truths by the posterior intervals (q5-q95), the synergy
    decision, and per-patient resistance-onset coverage."""
    truth = population_truth(spec, data)
    summ = result.summary.set_index("parameter")
    rows = []
    for name, v in truth.items():
        lo, hi = float(summ.loc[name, "q5"]), float(summ.loc[name, "q95"])
        rows.append({"parameter": name, "truth": v, "q5": lo, "q95": hi,
                     "mean": float(summ.loc[name, "mean"]), "covered": bool(lo <= v <= hi)})
    # the same against the values realised in the simulated sample (geometric mean and SD of
    # log of each log-normal parameter): a 120-patient sample's dispersion differs from omega
    tp = data.meta["truth_patients"]
    for r in rows:
        par = r["parameter"]
        b = next((b for b in spec.omegas if par in b.names), None)
        if par in tp.columns and par in data.meta["iiv"] and np.all(tp[par] > 0):
            r["realised"] = float(np.exp(np.mean(np.log(tp[par]))))
        elif b is not None and b.etas[0].removeprefix("eta_") in tp.columns:
            v = np.log(tp[b.etas[0].removeprefix("eta_")].to_numpy())
            r["realised"] = float(np.std(v, ddof=1))
        else:
            r["realised"] = r["truth"]
        r["covered_realised"] = bool(r["q5"] <= r["realised"] <= r["q95"])
    out = {"population": rows,
           "coverage": float(np.mean([r["covered"] for r in rows])) if rows else None,
           "coverage_realised": float(np.mean([r["covered_realised"] for r in rows]))
           if rows else None,
           "n_parameters": len(rows)}
    # with n independent 90% intervals the number covered is Binomial(n, 0.9) even for a
    # perfectly calibrated posterior (P(all 14 covered) = 0.23): report the count, the
    # binomial probability of a count this low, and the 5% acceptance bound
    if rows:
        for key, flag in (("", "covered"), ("_realised", "covered_realised")):
            c = coverage_count([r[flag] for r in rows], level)
            out[f"n_covered{key}"] = c["n_covered"]
            out[f"p_binomial{key}"] = c["p_binomial"]
            out["n_covered_lower_5pct"] = c["lower_5pct"]   # depends on n and level only
    est = result.record.get("estimands") or {}
    if est.get("synergy"):
        out["psi_truth"] = float(data.meta["truth_population"].get("PSI", np.nan))
        out["p_psi_gt_0"] = est["synergy"]["p_gt_0"]
    if result.estimands is not None:
        from .estimands import coverage
        tp = data.meta["truth_patients"].set_index("subject")
        t = {s: float(tp.loc[s, "true_resistance_onset_day"]) for s in tp.index}
        out["onset_coverage"] = coverage(result.estimands, t, level=level)
    return out
