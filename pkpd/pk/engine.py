"""The event engine: NONMEM-style records -> fixed-shape arrays -> exact (or ODE) solution.

Two stages:

1. :func:`compile_records` (host, numpy) turns one subject's processed records (ADDL already
   expanded, in processing order) into fixed-shape arrays: dose inputs, resets, observations.
   Each dose carries an *epoch*: the number of resets (EVID 3/4, SS=1) before it in record order.
   A reset cancels everything of an older epoch (pending ADDL doses, lagged doses not yet arrived,
   infusions in progress), exactly as NONMEM's SS/EVID documentation says.
   :func:`stack` pads several subjects to common shapes so that a population can be ``vmap``-ed.
2. :func:`solve` (JAX) turns the arrays and a parameter dict into the timeline of events,
   sorted by (time, record order, sub-order) — times can depend on parameters (ALAG, modelled
   durations), so sorting happens inside the traced function — and scans over it:

   * linear time-invariant models advance exactly with the matrix exponential of the augmented
     matrix ``[[K, r], [0, 0]]`` (amounts plus constant infusion rates);
   * nonlinear models integrate ``rhs`` with diffrax over each inter-event segment, so the solver
     never steps across a dose discontinuity.

Steady state (SS=1/2) is exact for linear models: the state at the SS record is the sum over the
infinite train of implied past doses, with lag, bioavailability and infusion duration applied to
each of them (NONMEM: "steady state is computed as if there were no ALAG, and then there is an
advance to the point II-ALAG in the cycle"). Past doses whose lag or infusion has not finished at
the record time (ALAG + duration > II) are carried as pending inputs, so SS with
ALAG >= II is defined too. A constant-infusion SS record (AMT=0, RATE>0, II=0) sets the system to
``-K^-1 r`` and the infusion terminates at the record time (NONMEM SS dose record).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import expm

from ..errors import DataError, ModelError
from .models import PKModel

__all__ = [
    "SubjectRecords", "Compiled", "SolverConfig", "compile_records", "stack", "solve",
    "solve_population", "ss_pending_needed",
]

# Event types in the scan
OBS, START, END, RESET, SET = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SubjectRecords:
    """Host-side arrays for one subject (processing order). All times in the model time unit."""

    id: object
    # dose inputs
    d_time: np.ndarray      # record time
    d_amt: np.ndarray       # AMT (amount unit)
    d_cmt: np.ndarray       # 0-based compartment
    d_rate: np.ndarray      # RATE column (0, >0, -1, -2)
    d_dur: np.ndarray       # DUR column (0 = not given)
    d_ii: np.ndarray        # II (for SS)
    d_ss: np.ndarray        # 0/1/2 (3 is treated as 1)
    d_epoch: np.ndarray     # epoch of the dose
    d_key: np.ndarray       # processing-order index of the record
    # resets (EVID 3/4 and SS=1)
    r_time: np.ndarray
    r_epoch: np.ndarray
    r_key: np.ndarray
    # observations / prediction records (EVID 0 and 2)
    o_time: np.ndarray
    o_key: np.ndarray
    t0: float

    @property
    def n_obs(self) -> int:
        return len(self.o_time)


class Compiled(eqx.Module):
    """Fixed-shape arrays for one subject or (after :func:`stack`) a population."""

    d_time: jax.Array
    d_amt: jax.Array
    d_cmt: jax.Array
    d_rate: jax.Array
    d_dur: jax.Array
    d_ii: jax.Array
    d_ss: jax.Array
    d_ssinf: jax.Array
    d_epoch: jax.Array
    d_key: jax.Array
    i_idx: jax.Array        # indices of the doses that are infusions (they need an END event)
    i_valid: jax.Array
    s_idx: jax.Array        # indices of the steady-state dose records (SS=1/2)
    s_valid: jax.Array
    r_time: jax.Array
    r_epoch: jax.Array
    r_key: jax.Array
    o_time: jax.Array
    o_key: jax.Array
    o_valid: jax.Array
    t0: jax.Array
    has_ss: bool = eqx.field(static=True, default=True)


@dataclass(frozen=True)
class SolverConfig:
    """Settings of the ODE path (nonlinear models). The linear path is exact and ignores them."""

    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int = 4096
    solver: str = "tsit5"
    adjoint: str = "reverse"
    """``"reverse"`` (RecursiveCheckpointAdjoint: ``jax.grad``/``jax.vjp``) or ``"forward"``
    (diffrax.ForwardMode: ``jax.jacfwd``/``jax.jvp``, the cheaper choice for per-subject
    Jacobians with few parameters). Each mode supports only its own kind of differentiation."""
    ss_pending: int = 3
    """Implied past doses handled one by one at an SS record (the rest is a geometric series).
    SS is exact whenever ALAG + infusion duration <= (ss_pending + 1) * II; beyond that the
    state is NaN and counted as a failure. :func:`pkpd.pk.predict.predict` sizes it from the
    parameters (:func:`ss_pending_needed`)."""
    ss_intervals: int = 60
    """Nonlinear models: SS=1 is reached by this many dosing intervals from zero (NONMEM
    integrates until convergence; a fixed count keeps the solve differentiable)."""

    def make_adjoint(self):
        mode = self.adjoint.lower()
        if mode == "reverse":
            return diffrax.RecursiveCheckpointAdjoint()
        if mode == "forward":
            return diffrax.ForwardMode()
        raise ModelError(f"unknown adjoint {self.adjoint!r}. Fix: use 'reverse' or 'forward'")

    def make_solver(self):
        return {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8,
                "kvaerno5": diffrax.Kvaerno5}[self.solver.lower()]()


def compile_records(
    df,
    model: PKModel,
    *,
    time_col: str = "ATIME",
    subject=None,
) -> SubjectRecords:
    """Compile one subject's records (ADDL-expanded, processing order) for :func:`solve`.

    ``df`` needs columns EVID, AMT, CMT, RATE, DUR, II, SS, ADDL_SRC, ROW and ``time_col``,
    already in the model's time and amount units.
    """
    n = len(df)
    evid = df["EVID"].to_numpy(dtype=int)
    time = df[time_col].to_numpy(dtype=float)
    amt = np.nan_to_num(df["AMT"].to_numpy(dtype=float))
    cmt = df["CMT"].to_numpy(dtype=float)
    rate = np.nan_to_num(df["RATE"].to_numpy(dtype=float))
    dur = np.nan_to_num(df["DUR"].to_numpy(dtype=float))
    ii = np.nan_to_num(df["II"].to_numpy(dtype=float))
    ss = np.nan_to_num(df["SS"].to_numpy(dtype=float)).astype(int)
    ss = np.where(ss == 3, 1, ss)
    src = df["ADDL_SRC"].to_numpy(dtype=int) if "ADDL_SRC" in df else np.zeros(n, int)
    rows = df["ROW"].to_numpy() if "ROW" in df else np.arange(1, n + 1)

    dose_rows = np.flatnonzero((evid == 1) | (evid == 4))
    # CMT 0 (or absent) on a dose is NONMEM's default dose compartment: compartment 1
    cmt = np.where(((evid == 1) | (evid == 4)) & (np.nan_to_num(cmt) == 0), 1.0, cmt)
    for i in dose_rows:
        c = cmt[i]
        if not np.isfinite(c) or c != int(c) or c < 1 or c > model.n_cmt:
            raise DataError(
                f"CMT {c!r} is not a compartment of {model!r} (1..{model.n_cmt}: "
                f"{', '.join(f'{k + 1}={nm}' for k, nm in enumerate(model.compartments))})",
                row=int(rows[i]), subject=subject, column="CMT", value=cmt[i],
                fix="dose into one of the model's compartments",
            )
        if ss[i] == 2 and not model.linear:
            raise ModelError(
                f"row {int(rows[i])} (ID {subject}): SS=2 adds steady-state amounts to the "
                f"current ones, which needs linear kinetics (superposition), but {model!r} is "
                "nonlinear. Fix: use SS=1, or give the doses explicitly (ADDL)"
            )
        if ss[i] in (1, 2) and not model.linear and amt[i] == 0:
            raise ModelError(
                f"row {int(rows[i])} (ID {subject}): a steady-state constant infusion "
                f"(AMT=0, SS={ss[i]}) is only available for linear models; {model!r} is "
                "nonlinear. Fix: start the infusion explicitly well before the first sample"
            )

    # epochs: count resets in processing order; ADDL copies inherit their source's epoch.
    epoch = np.zeros(n, dtype=int)
    e = 0
    src_epoch: dict[object, int] = {}
    for i in range(n):
        resets = evid[i] in (3, 4) or (evid[i] in (1, 4) and ss[i] == 1)
        if src[i] > 0:
            epoch[i] = src_epoch.get(rows[i], e)
            continue
        if resets:
            e += 1
        epoch[i] = e
        src_epoch[rows[i]] = e
    key = np.arange(n)

    reset_rows = np.flatnonzero(
        (evid == 3) | (evid == 4) | (((evid == 1) | (evid == 4)) & (ss == 1) & (src == 0))
    )
    obs_rows = np.flatnonzero((evid == 0) | (evid == 2))
    d = dose_rows
    return SubjectRecords(
        id=subject,
        d_time=time[d], d_amt=amt[d], d_cmt=(cmt[d] - 1).astype(int), d_rate=rate[d],
        d_dur=dur[d], d_ii=ii[d], d_ss=np.where(src[d] > 0, 0, ss[d]), d_epoch=epoch[d],
        d_key=key[d],
        r_time=time[reset_rows], r_epoch=epoch[reset_rows], r_key=key[reset_rows],
        o_time=time[obs_rows], o_key=key[obs_rows],
        t0=float(np.min(time)) if n else 0.0,
    )


def _bucket(n: int) -> int:
    """Padded length: small sizes exact, larger ones rounded up (1/8 octave steps) so that
    datasets of similar size share one compilation."""
    if n <= 16:
        return n
    step = 2 ** max(int(np.floor(np.log2(n))) - 3, 0)
    return int(-(-n // step) * step)


def stack(subjects: Sequence[SubjectRecords], *, n_dose=None, n_reset=None, n_obs=None
          ) -> Compiled:
    """Pad subjects to common shapes and stack them (leading axis = subject).

    A single subject gives arrays with a leading axis of length 1; use ``compiled[0]``-style
    indexing via ``jax.tree.map(lambda a: a[0], c)`` or call :func:`solve` through ``vmap``.
    """
    nd = _bucket(max([len(s.d_time) for s in subjects] + [n_dose or 0, 1]))
    nr = _bucket(max([len(s.r_time) for s in subjects] + [n_reset or 0, 1]))
    infs = [np.flatnonzero((s.d_rate != 0) | (s.d_dur > 0)) for s in subjects]
    ni = _bucket(max([len(i) for i in infs] + [1]))
    sss = [np.flatnonzero(s.d_ss > 0) for s in subjects]
    ns = _bucket(max([len(i) for i in sss] + [1]))
    no = _bucket(max([len(s.o_time) for s in subjects] + [n_obs or 0, 1]))

    def pad(a, size, fill, dtype=float):
        out = np.full(size, fill, dtype=dtype)
        out[: len(a)] = a
        return out

    cols = {k: [] for k in Compiled.__annotations__}
    for s, inf, ssi in zip(subjects, infs, sss):
        ssinf = (s.d_ss > 0) & (s.d_amt == 0) & (s.d_ii == 0)
        cols["s_idx"].append(pad(ssi, ns, 0, int))
        cols["s_valid"].append(pad(np.ones(len(ssi), bool), ns, False, bool))
        cols["i_idx"].append(pad(inf, ni, 0, int))
        cols["i_valid"].append(pad(np.ones(len(inf), bool), ni, False, bool))
        cols["d_time"].append(pad(s.d_time, nd, s.t0))
        cols["d_amt"].append(pad(s.d_amt, nd, 0.0))
        cols["d_cmt"].append(pad(s.d_cmt, nd, 0, int))
        cols["d_rate"].append(pad(s.d_rate, nd, 0.0))
        cols["d_dur"].append(pad(s.d_dur, nd, 0.0))
        cols["d_ii"].append(pad(s.d_ii, nd, 0.0))
        cols["d_ss"].append(pad(s.d_ss, nd, 0, int))
        cols["d_ssinf"].append(pad(ssinf, nd, False, bool))
        cols["d_epoch"].append(pad(s.d_epoch, nd, -1, int))
        cols["d_key"].append(pad(s.d_key, nd, -1, int))
        cols["r_time"].append(pad(s.r_time, nr, s.t0))
        cols["r_epoch"].append(pad(s.r_epoch, nr, -1, int))
        cols["r_key"].append(pad(s.r_key, nr, -1, int))
        cols["o_time"].append(pad(s.o_time, no, s.t0))
        cols["o_key"].append(pad(s.o_key, no, -1, int))
        cols["o_valid"].append(pad(np.ones(len(s.o_time), bool), no, False, bool))
        cols["t0"].append(np.asarray(s.t0))
    cols.pop("has_ss")
    has_ss = any(bool(np.any(s.d_ss > 0)) for s in subjects)
    return Compiled(**{k: jnp.asarray(np.stack(v)) for k, v in cols.items()}, has_ss=has_ss)


# --------------------------------------------------------------------------------------------
# JAX side
# --------------------------------------------------------------------------------------------

def _safe_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def _propagator(k, r, dt):
    """Exact advance over ``dt`` of ``dA/dt = K A + r``: returns ``(E, g)`` with
    ``A(dt) = E A(0) + g``."""
    n = k.shape[0]
    m = jnp.zeros((n + 1, n + 1), dtype=k.dtype)
    m = m.at[:n, :n].set(k * dt).at[:n, n].set(r * dt)
    em = expm(m)
    return em[:n, :n], em[:n, n]


def _advance_linear(k, a, r, dt):
    e, g = _propagator(k, r, dt)
    return e @ a + g


def _unit(n, c, dtype):
    return jnp.zeros(n, dtype=dtype).at[c].set(1.0)


def _dose_inputs(model: PKModel, p, cd: Compiled):
    """Per-dose arrival time, duration, bolus amount and infusion rate (vectors over doses)."""
    f = model.dose_param(p, "F", 1.0)[cd.d_cmt]
    lag = model.dose_param(p, "ALAG", 0.0)[cd.d_cmt]
    rmod = model.dose_param(p, "R", 0.0)[cd.d_cmt]
    dmod = model.dose_param(p, "D", 0.0)[cd.d_cmt]
    fa = f * cd.d_amt
    rate_col = cd.d_rate
    dur = jnp.where(
        rate_col > 0, _safe_div(fa, rate_col),
        jnp.where(rate_col == -1, _safe_div(fa, rmod),
                  jnp.where(rate_col == -2, dmod, cd.d_dur)),
    )
    is_inf = (rate_col != 0) | (cd.d_dur > 0)
    rate = jnp.where(is_inf, _safe_div(fa, dur), 0.0)
    bolus = jnp.where(is_inf, 0.0, fa)
    # SS constant infusion: nothing is given after the record (the infusion ends there)
    bolus = jnp.where(cd.d_ssinf, 0.0, bolus)
    rate = jnp.where(cd.d_ssinf, 0.0, rate)
    dur = jnp.where(cd.d_ssinf, 0.0, dur)
    return cd.d_time + lag, dur, bolus, rate, fa, lag, rmod, is_inf


def _ss_terms(model: PKModel, p, cd: Compiled, dur, bolus, rate, lag, rmod, is_inf,
              n_pending: int):
    """Steady-state state vectors and pending inputs for every dose record (masked by d_ss)."""
    n = model.n_cmt
    k = model.rate_matrix(p)
    dtype = k.dtype

    def one(c, tau, ln, d, b, rt, isinf, rate_col, rmod_c, ssinf):
        e_c = _unit(n, c, dtype)
        tau_s = jnp.where(tau > 0, tau, 1.0)
        # constant-infusion SS: A = -K^-1 r
        r_const = jnp.where(rate_col == -1, rmod_c, rate_col)
        a_inf = -jnp.linalg.solve(k, e_c * r_const)
        # state at the end of delivery of one dose given at 0 (time T = lag + duration)
        _, psi_d = _propagator(k, e_c * rt, d)
        a_t = jnp.where(isinf, psi_d, b * e_c)
        t_end = ln + d
        # tail of the train: doses k >= N+1 are fully delivered at the record time
        first = (n_pending + 1) * tau_s - t_end
        e_first, _ = _propagator(k, jnp.zeros(n, dtype), jnp.maximum(first, 0.0))
        e_tau, _ = _propagator(k, jnp.zeros(n, dtype), tau_s)
        tail = e_first @ jnp.linalg.solve(jnp.eye(n, dtype=dtype) - e_tau, a_t)
        tail = jnp.where(first >= 0, tail, jnp.nan)   # ALAG + duration > (N+1)·II: undefined

        def past(kk):
            s = kk * tau_s - ln                      # time since the past dose arrived
            u = jnp.clip(s, 0.0, d)
            _, psi_u = _propagator(k, e_c * rt, u)
            inf_part = psi_u
            bol_part = jnp.where(s >= 0, b, 0.0) * e_c
            x = jnp.where(isinf, inf_part, bol_part)
            e_rest, _ = _propagator(k, jnp.zeros(n, dtype), jnp.maximum(s - jnp.where(
                isinf, d, 0.0), 0.0))
            x = e_rest @ x
            # pending part of this past dose, relative to the record time
            start_rel = jnp.maximum(-s, 0.0)         # arrival still in the future
            rem = jnp.where(isinf, jnp.maximum(d - jnp.maximum(s, 0.0), 0.0), 0.0)
            p_bolus = jnp.where(isinf, 0.0, jnp.where(s < 0, b, 0.0))
            p_rate = jnp.where(isinf & (rem > 0), rt, 0.0)
            return x, start_rel, rem, p_bolus, p_rate

        ks = jnp.arange(1, n_pending + 1, dtype=dtype)
        xs, start_rel, rem, p_bolus, p_rate = jax.vmap(past)(ks)
        state = tail + xs.sum(axis=0)
        state = jnp.where(ssinf, a_inf, state)
        zero = jnp.zeros_like(start_rel)
        p_bolus = jnp.where(ssinf, zero, p_bolus)
        p_rate = jnp.where(ssinf, zero, p_rate)
        return state, start_rel, rem, p_bolus, p_rate

    j = cd.s_idx
    return jax.vmap(one)(cd.d_cmt[j], cd.d_ii[j], lag[j], dur[j], bolus[j], rate[j],
                         is_inf[j], cd.d_rate[j], rmod[j], cd.d_ssinf[j])


def _ss_runin(model: PKModel, p, cd: Compiled, lag, dur, bolus, rate, is_inf, advance,
              n_intervals: int):
    """Nonlinear SS=1: state at the record time after ``n_intervals`` implied doses from zero.

    Each interval: lag (no input), the dose (bolus, or infusion over its duration), washout to
    the end of the interval. Needs ALAG + duration <= II (else NaN)."""
    n = model.n_cmt
    j = cd.s_idx

    def one(c, tau, t_rec, ln, d, b, rt, isinf):
        dtype = jnp.result_type(float)
        e_c = _unit(n, c, dtype)
        tau_s = jnp.where(tau > 0, tau, 1.0)
        zero = jnp.zeros(n, dtype)

        def interval(k, carry):
            a, _ = carry
            t0 = t_rec - (n_intervals - k) * tau_s
            a1, _ = advance(t0, t0 + ln, a, zero)
            a1 = a1 + jnp.where(isinf, 0.0, b) * e_c
            a2, _ = advance(t0 + ln, t0 + ln + d, a1, jnp.where(isinf, rt, 0.0) * e_c)
            a3, _ = advance(t0 + ln + d, t0 + tau_s, a2, zero)
            return a3, a

        a, a_prev = jax.lax.fori_loop(0, n_intervals, interval, (zero, zero))
        # not converged (last interval still changes the state) -> NaN, counted as a failure
        conv = jnp.all(jnp.abs(a - a_prev) <= 1e-7 * jnp.abs(a) + 1e-12 * jnp.max(jnp.abs(a)))
        return jnp.where((ln + d <= tau_s) & conv, a, jnp.nan)

    state = jax.vmap(one)(cd.d_cmt[j], cd.d_ii[j], cd.d_time[j], lag[j], dur[j], bolus[j],
                          rate[j], is_inf[j])
    z = jnp.zeros((j.shape[0], 1))
    return state, z, z, z, z


def ss_pending_needed(model: PKModel, params: Mapping, compiled: Compiled) -> int:
    """Smallest ``SolverConfig.ss_pending`` that makes every SS record of ``compiled`` (a
    :func:`stack` result, ``params`` values per subject) exact: max ceil((ALAG + dur)/II) - 1."""
    if not compiled.has_ss or not model.linear:
        return 0
    n = compiled.d_time.shape[0]
    p = {k: jnp.broadcast_to(jnp.asarray(v, float), (n,)) for k, v in params.items()}

    def one(pi, cd):
        _, dur, _, _, _, lag, _, _ = _dose_inputs(model, pi, cd)
        j = cd.s_idx
        tau = jnp.where(cd.d_ii[j] > 0, cd.d_ii[j], 1.0)
        need = jnp.ceil((lag[j] + dur[j]) / tau) - 1
        return jnp.max(jnp.where(cd.s_valid, need, 0))

    return int(np.nanmax(np.asarray(jax.vmap(one)(p, compiled))))


def _timeline(model: PKModel, p, cd: Compiled, config: SolverConfig):
    """All events of one subject as flat arrays, sorted."""
    arrive, dur, bolus, rate, fa, lag, rmod, is_inf = _dose_inputs(model, p, cd)
    nd = cd.d_time.shape[0]
    nobs = cd.o_time.shape[0]
    lagged = (lag > 0) | (cd.d_key < 0)
    # lagged arrivals sort before any explicit record at the same time, like implied doses
    # (NONMEM gives implied doses before the record, CONVENTIONS 1.3)
    start_key = jnp.where(lagged, -1, 3 * cd.d_key + 2)
    # dose starts, and ends for the doses that are infusions
    j = cd.i_idx
    ni = j.shape[0]
    times = [arrive, arrive[j] + dur[j]]
    keys = [start_key, jnp.full(ni, -1)]
    types = [jnp.full(nd, START), jnp.full(ni, END)]
    cmts = [cd.d_cmt, cd.d_cmt[j]]
    boluses = [bolus, jnp.zeros(ni)]
    rates = [rate, rate[j]]
    epochs = [cd.d_epoch, jnp.where(cd.i_valid, cd.d_epoch[j], -1)]
    vidx = [jnp.full(nd, -1), jnp.full(ni, -1)]
    oidx = [jnp.full(nd, nobs), jnp.full(ni, nobs)]
    ss_vec = None
    if cd.has_ss:
        if model.linear:
            state, start_rel, rem, p_bolus, p_rate = _ss_terms(
                model, p, cd, dur, bolus, rate, lag, rmod, is_inf, config.ss_pending)
        else:
            state, start_rel, rem, p_bolus, p_rate = _ss_runin(
                model, p, cd, lag, dur, bolus, rate, is_inf,
                _make_advance(model, p, config, False), config.ss_intervals)
        j = cd.s_idx
        ns = j.shape[0]
        ok = cd.s_valid
        ss_vec = jnp.where(ok[:, None], state, 0.0)
        # SET events (after the reset of the same record, before its dose)
        times.append(cd.d_time[j])
        keys.append(3 * cd.d_key[j] + 1)
        types.append(jnp.where(ok, SET, -1))
        cmts.append(cd.d_cmt[j])
        boluses.append(jnp.zeros(ns))
        rates.append(jnp.zeros(ns))
        epochs.append(jnp.where(ok, cd.d_epoch[j], -1))
        vidx.append(jnp.arange(ns))
        oidx.append(jnp.full(ns, nobs))
        # pending inputs of implied past doses (still arriving or infusing at the record)
        npd = start_rel.shape[1]
        st = jnp.repeat(cd.d_time[j], npd) + start_rel.reshape(-1)
        okr = jnp.repeat(ok, npd)
        pr = jnp.where(okr, p_rate.reshape(-1), 0.0)
        pb = jnp.where(okr, p_bolus.reshape(-1), 0.0)
        m = ns * npd
        times += [st, st + rem.reshape(-1)]
        keys += [jnp.repeat(3 * cd.d_key[j] + 2, npd), jnp.full(m, -1)]
        types += [jnp.full(m, START), jnp.full(m, END)]
        cm = jnp.repeat(cd.d_cmt[j], npd)
        cmts += [cm, cm]
        boluses += [pb, jnp.zeros(m)]
        rates += [pr, pr]
        ep = jnp.where(okr, jnp.repeat(cd.d_epoch[j], npd), -1)
        epochs += [ep, ep]
        vidx += [jnp.full(m, -1)] * 2
        oidx += [jnp.full(m, nobs)] * 2
    # resets
    nr = cd.r_time.shape[0]
    times.append(cd.r_time)
    keys.append(3 * cd.r_key)
    types.append(jnp.where(cd.r_epoch >= 0, RESET, -1))
    cmts.append(jnp.zeros(nr, int))
    boluses.append(jnp.zeros(nr))
    rates.append(jnp.zeros(nr))
    epochs.append(cd.r_epoch)
    vidx.append(jnp.full(nr, -1))
    oidx.append(jnp.full(nr, nobs))
    # observations
    times.append(cd.o_time)
    keys.append(3 * cd.o_key + 2)
    types.append(jnp.where(cd.o_valid, OBS, -1))
    cmts.append(jnp.zeros(nobs, int))
    boluses.append(jnp.zeros(nobs))
    rates.append(jnp.zeros(nobs))
    epochs.append(jnp.full(nobs, -1))
    vidx.append(jnp.full(nobs, -1))
    oidx.append(jnp.where(cd.o_valid, jnp.arange(nobs), nobs))

    ev = dict(
        time=jnp.concatenate(times), key=jnp.concatenate(keys), type=jnp.concatenate(types),
        cmt=jnp.concatenate(cmts), bolus=jnp.concatenate(boluses),
        rate=jnp.concatenate(rates), epoch=jnp.concatenate(epochs),
        vidx=jnp.concatenate(vidx), oidx=jnp.concatenate(oidx),
    )
    # padding / disabled events keep their place but do nothing; sort by (time, key)
    order = jnp.lexsort((ev["key"], jax.lax.stop_gradient(ev["time"])))
    ev = {k: v[order] for k, v in ev.items()}
    return ev, ss_vec


def _make_advance(model: PKModel, p, config: SolverConfig, with_auc: bool):
    n = model.n_cmt
    v = model.volume(p)
    scale = model.conc_scale

    if model.linear:
        k = model.rate_matrix(p)
        if with_auc:
            # extra state: integral of the central concentration (output units x time)
            ka = jnp.zeros((n + 1, n + 1), dtype=k.dtype).at[:n, :n].set(k)
            ka = ka.at[n, model.central].set(scale / v)
        else:
            ka = k

        def advance(t0, t1, a, r):
            ra = jnp.concatenate([r, jnp.zeros(1, r.dtype)]) if with_auc else r
            return _advance_linear(ka, a, ra, t1 - t0), jnp.array(0)

        return advance

    solver = config.make_solver()

    def field(t, y, args):
        r = args
        a = y[:n]
        da = model.rhs(t, a, p) + r
        if with_auc:
            da = jnp.concatenate([da, (a[model.central] / v * scale)[None]])
        return da

    term = diffrax.ODETerm(field)
    controller = diffrax.PIDController(rtol=config.rtol, atol=config.atol)

    def advance(t0, t1, a, r):
        sol = diffrax.diffeqsolve(
            term, solver, t0, t1, None, a, args=r, stepsize_controller=controller,
            max_steps=config.max_steps, throw=False, adjoint=config.make_adjoint(),
            saveat=diffrax.SaveAt(t1=True),
        )
        failed = ~diffrax.is_successful(sol.result)
        y = jnp.where(failed, jnp.nan, sol.ys[-1])
        return y, failed.astype(int)

    return advance


def solve(model: PKModel, params: Mapping, compiled: Compiled, *,
          config: SolverConfig | None = None, with_auc: bool = False):
    """Predicted central concentrations at one subject's observation records.

    Parameters
    ----------
    model : PKModel
    params : dict of str -> scalar
        Individual parameters (model time/amount units, volumes in L).
    compiled : Compiled
        One subject's arrays (no leading subject axis); ``vmap`` over the subject axis of a
        :func:`stack` result for populations.
    with_auc : bool
        Also return the cumulative AUC of the central concentration at each observation.

    Returns
    -------
    conc : array (n_obs,)
        Concentrations in the model's output unit. NaN where the ODE solve failed.
    auc : array (n_obs,), only with ``with_auc``
    n_failed : int array
        Number of failed ODE segments (always 0 on the exact path).
    """
    config = config or SolverConfig()
    p = {k: jnp.asarray(v, dtype=float) for k, v in params.items()}
    ev, ss_vec = _timeline(model, p, compiled, config)
    n = model.n_cmt
    nobs = compiled.o_time.shape[0]
    advance = _make_advance(model, p, config, with_auc)
    na = n + 1 if with_auc else n
    dtype = jnp.result_type(float)
    v = model.volume(p)

    def step(carry, e):
        t, a, r, epoch, nfail = carry
        tn = jnp.maximum(e["time"], t)          # disabled events never move time backwards
        a_new, failed = advance(t, tn, a, r)
        active = e["epoch"] == epoch
        typ = e["type"]
        c = e["cmt"]
        # START: bolus + infusion rate; END: rate off
        add_b = jnp.where((typ == START) & active, e["bolus"], 0.0)
        d_rate = jnp.where((typ == START) & active, e["rate"], 0.0) - jnp.where(
            (typ == END) & active, e["rate"], 0.0)
        a_new = a_new.at[c].add(add_b)
        r_new = r.at[c].add(d_rate)
        # RESET: all amounts and rates to zero (AUC kept), new epoch
        is_reset = typ == RESET
        a_reset = a_new.at[:n].set(0.0) if with_auc else jnp.zeros_like(a_new)
        a_new = jnp.where(is_reset, a_reset, a_new)
        r_new = jnp.where(is_reset, 0.0, r_new)
        epoch = jnp.where(is_reset, e["epoch"], epoch)
        if ss_vec is not None:
            is_set = (typ == SET) & (e["epoch"] == epoch)
            sv = ss_vec[jnp.maximum(e["vidx"], 0)]
            a_new = a_new.at[:n].add(jnp.where(is_set, sv, 0.0))
        out_c = a_new[model.central] / v * model.conc_scale
        out_auc = a_new[n] if with_auc else jnp.zeros((), dtype)
        return (tn, a_new, r_new, epoch, nfail + failed), (out_c, out_auc)

    # time starts at the earliest event (padding sits at t0)
    # a steady state that could not be computed (run-in not converged, ALAG + duration too
    # long) counts as a failure
    nfail0 = (jnp.sum(~jnp.all(jnp.isfinite(ss_vec), axis=1)) if ss_vec is not None
              else jnp.array(0))
    init = (jnp.minimum(compiled.t0, ev["time"][0]).astype(dtype), jnp.zeros(na, dtype),
            jnp.zeros(n, dtype), jnp.array(0), nfail0.astype(int))
    (_, _, _, _, nfail), (cs, aucs) = jax.lax.scan(step, init, ev)
    idx = ev["oidx"]
    conc = jnp.full(nobs, jnp.nan, dtype).at[idx].set(cs, mode="drop")
    if with_auc:
        auc = jnp.full(nobs, jnp.nan, dtype).at[idx].set(aucs, mode="drop")
        return conc, auc, nfail
    return conc, nfail


@partial(jax.jit, static_argnums=(0, 3, 4))
def _solve_pop(model, params, compiled, config, with_auc):
    return jax.vmap(lambda p, c: solve(model, p, c, config=config, with_auc=with_auc))(
        params, compiled)


def solve_population(model: PKModel, params: Mapping, compiled: Compiled, *,
                     config: SolverConfig | None = None, with_auc: bool = False):
    """``vmap`` of :func:`pkpd.pk.engine.solve` over subjects; ``params`` values are (n_subj,)."""
    n = compiled.d_time.shape[0]
    p = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)) for k, v in params.items()}
    return _solve_pop(model, p, compiled, config or SolverConfig(), with_auc)
