"""The likelihood of a population fit as pure JAX functions of the individual parameters.

``Problem.predict(P)`` maps the ``(n_subjects, n_parameters)`` matrix of individual structural
parameters (natural scale) to the prediction at every observation; ``Problem.loglik`` adds the
residual-error model (with M3 censoring) and returns the total log-likelihood, ``-inf`` when any
prediction is not finite (a failed solve is a rejected proposal, never an exception). Both are
vmapped over subjects and differentiable, so the sampler's gradient costs one extra pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from ..errors import SpecError
from .data import FitData
from .spec import RESIDUAL_MODELS, Spec

__all__ = ["Problem", "build_problem", "residual_sd", "pointwise_loglik"]

_LOG2PI = float(np.log(2 * np.pi))


@dataclass
class Problem:
    """Structural predictions + residual likelihood for one spec and dataset.

    Observations are laid out padded, ``(n_subjects, n_max)`` with a mask, so that the vmapped
    solve and its gradient need no gather/scatter (slow on CPU); ``flat`` lists the padded
    position of each observation in data order.
    """

    spec: Spec
    data: FitData
    parameters: tuple[str, ...]              # columns of P (natural scale)
    predict: object                          # jitted P -> f (n_subjects, n_max), padded
    residual_roles: tuple[str, ...]
    layout: tuple                            # (ii, jj): padded position of each observation
    extra: dict = field(default_factory=dict)   # e.g. drivers for the combination model

    def __post_init__(self):
        ii, jj = self.layout
        shape = self.shape
        y = np.ones(shape)
        cens = np.zeros(shape, bool)
        mask = np.zeros(shape, bool)
        y[ii, jj] = self.data.y
        cens[ii, jj] = self.data.censored
        mask[ii, jj] = True
        self.y_pad, self.cens_pad, self.mask = jnp.asarray(y), jnp.asarray(cens), jnp.asarray(
            mask)
        self._unc = jnp.asarray(mask & ~cens)
        self._cens_idx = np.nonzero(mask & cens)

    @property
    def shape(self) -> tuple[int, int]:
        ii, jj = self.layout
        return (self.data.n_subjects, int(np.max(jj)) + 1 if len(jj) else 1)

    def resid_sd(self, f, r):
        return residual_sd(self.spec.residual.model, f, r)

    def flat(self, padded):
        """Padded ``(..., n_subjects, n_max)`` values -> ``(..., n_obs)`` in data order."""
        ii, jj = self.layout
        return padded[..., ii, jj]

    def pointwise(self, P, r):
        """Per-observation log-likelihood ``(n_obs,)`` (data order); ``r``: SDs by role."""
        f = self.predict(P)
        lp = pointwise_loglik(f, self.resid_sd(f, r), self.y_pad, self.cens_pad)
        return self.flat(lp)

    def loglik(self, P, r):
        """Total log-likelihood and the number of non-finite predictions (failed solves).

        The censored (M3) terms are evaluated only at the censored positions: the gradient of
        ``log_ndtr`` is costly, and most observations are not censored.
        """
        f = self.predict(P)
        f = jnp.where(self.mask, f, 1.0)
        sd = self.resid_sd(f, r)
        z = (self.y_pad - f) / sd
        dens = -0.5 * z ** 2 - jnp.log(sd) - 0.5 * _LOG2PI
        total = jnp.sum(jnp.where(self._unc, dens, 0.0))
        if self._cens_idx[0].size:
            ci, cj = self._cens_idx
            total = total + jnp.sum(log_ndtr(z[ci, cj]))
        n_bad = jnp.sum(~jnp.isfinite(f))
        return jnp.where((n_bad > 0) | ~jnp.isfinite(total), -jnp.inf, total), n_bad


def padded_layout(data: FitData) -> tuple[np.ndarray, np.ndarray]:
    """Position (subject, k) of each observation, k counting within the subject in data order."""
    count = np.zeros(data.n_subjects, int)
    jj = np.zeros(data.n_obs, int)
    for k, s in enumerate(data.obs_subject):
        jj[k] = count[s]
        count[s] += 1
    return np.asarray(data.obs_subject, int), jj


def padded(data: FitData, values, fill_last: bool = True) -> np.ndarray:
    """``values`` (n_obs,) in the padded layout; padding repeats each subject's last value."""
    ii, jj = padded_layout(data)
    n_max = int(jj.max()) + 1
    out = np.zeros((data.n_subjects, n_max))
    out[ii, jj] = values
    if fill_last:
        last = np.zeros(data.n_subjects)
        last[ii] = values                       # data order: the last one wins
        n = np.bincount(ii, minlength=data.n_subjects)
        for s in range(data.n_subjects):
            out[s, n[s]:] = last[s]
    return out


def residual_sd(model: str, f, r):
    """Residual SD at predictions ``f``; ``r`` maps role ("add", "prop") to an SD."""
    if model == "additive":
        return jnp.broadcast_to(r["add"], jnp.shape(f))
    if model == "proportional":
        return r["prop"] * jnp.abs(f)
    if model == "combined1":
        return r["add"] + r["prop"] * jnp.abs(f)
    if model == "combined2":
        return jnp.sqrt(r["add"] ** 2 + (r["prop"] * f) ** 2)
    raise SpecError(f"unknown residual model {model!r}; use one of {', '.join(RESIDUAL_MODELS)}")


def pointwise_loglik(f, sd, y, censored):
    """Normal log-density of ``y`` given ``f`` and ``sd``; M3 (``log Phi((y - f)/sd)``) where
    ``censored`` (then ``y`` is the limit)."""
    z = (y - f) / sd
    dens = -0.5 * z ** 2 - jnp.log(sd) - 0.5 * _LOG2PI
    return jnp.where(censored, log_ndtr(z), dens)


def build_problem(spec: Spec, data: FitData) -> Problem:
    kind = spec.model_kind
    params = tuple(spec.parameters)
    roles = RESIDUAL_MODELS[spec.residual.model][0]
    if kind == "tgi":
        return Problem(spec, data, params, _tgi_predict(spec, data), roles, padded_layout(data))
    if kind in ("pk_model", "pk_card"):
        pred, layout = _pk_predict(spec, data, params)
        return Problem(spec, data, params, pred, roles, layout)
    if kind == "tumour_card":
        pred, extra = _tumour_predict(spec, data)
        return Problem(spec, data, params, pred, roles, padded_layout(data), extra)
    raise SpecError(f"model kind {kind!r} cannot be fitted")


def _tgi_predict(spec, data):
    from ..tumour import tgi
    model = tgi.get_model(spec.model_ref)
    names = list(model.parameters)
    t_pad = padded(data, data.obs_time)
    t = jnp.asarray(t_pad)
    kw = {}
    ex = getattr(spec, "exposure", None)
    if ex is not None and ex.kind == "constant":   # constant exposure: the library's form
        kw["exposure"] = ex.value
    steps = None
    if ex is not None and ex.kind != "constant":   # LOCF steps: exact per-segment closed form
        from .exposure import exposure_steps, tgi_size_steps
        steps = exposure_steps(spec, data, t_pad)

    @jax.jit
    def predict(P):
        q = {n: P[:, i, None] for i, n in enumerate(names)}
        if steps is not None:
            return tgi_size_steps(model, t, q, steps)
        return model.size(t, q, **kw)

    return predict


def _superposition_ok(df, model) -> bool:
    """Datasets the closed-form superposition path handles exactly: linear 1-compartment IV
    models with bolus/zero-order infusions, no steady state, no resets, no lag/F parameters."""
    if type(model).__name__ != "OneCompartment" or getattr(model, "absorption", "iv") != "iv":
        return False
    if set(df["EVID"].unique()) - {0, 1, 2}:
        return False
    return not (df["SS"].fillna(0).ne(0).any())


def _superposition_predict(spec, data, model, names):
    """1-compartment IV by superposition of closed-form bolus/infusion responses, evaluated at
    every observation in the padded layout. An observation at a dose time sees the dose when
    the dose record comes first (record order after ADDL expansion, as NONMEM)."""
    from ..dosing.events import expand_addl
    table = data.events.with_units(time_unit=model.time_unit, amt_unit="mg")
    df = expand_addl(table).df
    ii, jj = padded_layout(data)
    n_s, n_max = data.n_subjects, int(jj.max()) + 1
    pos = {s: i for i, s in enumerate(data.subjects)}
    seq_of_row = dict(zip(df["ROW"].to_numpy(), df["SEQ"].to_numpy(), strict=False))
    t_obs = np.zeros((n_s, n_max))
    q_obs = np.zeros((n_s, n_max))
    t_obs[ii, jj] = df.set_index("ROW").loc[data.obs_row, "ATIME"].to_numpy(float)
    q_obs[ii, jj] = [seq_of_row[r] for r in data.obs_row]
    doses = df[df["EVID"] == 1]
    per = doses.groupby(doses["ID"].astype(str), sort=False)
    n_d = max(int(per.size().max()), 1) if len(doses) else 1
    td = np.zeros((n_s, n_d))
    qd = np.full((n_s, n_d), np.inf)
    amt = np.zeros((n_s, n_d))
    dur = np.zeros((n_s, n_d))
    for sid, g in per:
        if sid not in pos:
            continue
        i = pos[sid]
        k = len(g)
        td[i, :k] = g["ATIME"].to_numpy(float)
        qd[i, :k] = g["SEQ"].to_numpy(float)
        amt[i, :k] = g["AMT"].to_numpy(float)
        rate = g["RATE"].fillna(0).to_numpy(float)
        d = np.where(rate > 0, g["AMT"].to_numpy(float) / np.where(rate > 0, rate, 1.0), 0.0)
        dur[i, :k] = np.where(g["DUR"].fillna(0).to_numpy(float) > 0,
                              g["DUR"].fillna(0).to_numpy(float), d)
    scale = float(model.conc_scale)
    t_o, q_o = jnp.asarray(t_obs)[:, :, None], jnp.asarray(q_obs)[:, :, None]
    td_, qd_ = jnp.asarray(td)[:, None, :], jnp.asarray(qd)[:, None, :]
    a_, d_ = jnp.asarray(amt)[:, None, :], jnp.asarray(dur)[:, None, :]
    after = (td_ < t_o) | ((td_ == t_o) & (qd_ < q_o))
    dt = jnp.where(after, t_o - td_, 0.0)
    is_inf = d_ > 0
    d_safe = jnp.where(is_inf, d_, 1.0)
    i_cl, i_v = names.index("CL"), names.index("V")

    @jax.jit
    def predict(P):
        cl, v = P[:, i_cl, None, None], P[:, i_v, None, None]
        k = cl / v
        bolus = a_ / v * jnp.exp(-k * dt)
        on = jnp.minimum(dt, d_safe)              # time infused so far
        inf = a_ / d_safe / cl * (-jnp.expm1(-k * on)) * jnp.exp(-k * (dt - on))
        c = jnp.where(is_inf, inf, bolus)
        return scale * jnp.sum(jnp.where(after, c, 0.0), axis=-1)

    return predict


def _pk_predict(spec, data, params):
    from ..pk.engine import _solve_pop
    from ..pk.predict import _sized, prepare
    table = data.events
    if spec.model_kind == "pk_card":
        model = spec.card.model()
    else:
        from ..pk.models import make_model
        m = spec.raw["model"]
        model = make_model(spec.model_ref, str(m.get("absorption", "iv")),
                           time_unit=str(m.get("time_unit", "h")))
    extra_params = [p for p in params if p not in ("CL", "V")]
    if _superposition_ok(table.df, model) and not extra_params:
        return (_superposition_predict(spec, data, model, list(params)),
                padded_layout(data))
    prep = prepare(table, model)
    # map each used observation (by ROW) to (subject, position)
    where = {}
    for i, rows in enumerate(prep.obs_rows):
        for j, r in enumerate(rows):
            where[int(r)] = (i, j)
    ij = np.array([where[int(r)] for r in data.obs_row])
    names = [p for p in params]
    typical = {n: np.ones(len(prep.ids)) for n in model.parameters}
    config = _sized(None, model, typical, prep.compiled)
    compiled = prep.compiled

    @jax.jit
    def predict(P):
        p = {n: P[:, k] for k, n in enumerate(names)}
        conc, _ = _solve_pop(model, p, compiled, config, False)
        return conc

    return predict, (ij[:, 0], ij[:, 1])


def _tumour_predict(spec, data):
    from ..tumour import combination as cm
    from ..tumour.simulate import patient_drivers
    step = float(spec.card.structure.get("grid_step_day", 1.0))
    t_max = float(np.max(data.obs_time))
    days = step * (np.ceil(max(t_max, step) / step) + 1)
    arms = data.arms or ["default"] * data.n_subjects
    regs = spec.regimens
    drivers = {s: np.zeros((data.n_subjects, int(round(days / step)))) for s in cm.DRIVERS}
    for arm in sorted(set(arms)):
        if arm not in regs:
            raise SpecError(f"[regimens]: no regimen for arm {arm!r}. Fix: add [regimens.{arm}] "
                            "with one 'drug = regimen text' per drug")
        r = dict(regs[arm])
        cov = r.pop("covariates", None) or spec.raw.get("covariates")
        dr = patient_drivers(spec.card, r, days, covariates=cov, step_day=step)
        idx = [i for i, a in enumerate(arms) if a == arm]
        for s in cm.DRIVERS:
            drivers[s][idx] = dr[s][0]
    names = list(spec.parameters)
    t_pad = padded(data, data.obs_time)
    # bucket subjects by the grid length their observations need (scans stop at progression,
    # so most patients need a fraction of the horizon); each bucket solves a shorter grid
    n_steps = drivers["chemo"].shape[1]
    need = np.minimum(np.ceil((np.max(t_pad, axis=1) + step) / step).astype(int), n_steps)
    buckets = _buckets(need, n_steps)
    order = np.concatenate([b for b, _ in buckets])
    inverse = np.argsort(order)
    parts = []
    for idx, length in buckets:
        dj = {k: jnp.asarray(v[idx, :length]) for k, v in drivers.items()}
        parts.append((jnp.asarray(idx), dj, jnp.asarray(t_pad[idx])))

    def one(p_row, drv, t):
        p = {n: p_row[k] for k, n in enumerate(names)}
        return cm.sld(p, drv, t, step)

    if all(k in spec.fixed for k in SIGNAL_PARAMETERS):
        # the VEGF, PD-L1 and chemotherapy signals depend only on fixed parameters: compute
        # them once; each evaluation then costs the exact per-interval increments and a cumsum
        fixed = {k: float(spec.fixed[k]) for k in SIGNAL_PARAMETERS}
        parts = [(idx, _fixed_signals(fixed, dj, step), tj) for idx, dj, tj in parts]

        def one(p_row, sig, t):                         # noqa: F811 - the fast variant
            p = {n: p_row[k] for k, n in enumerate(names)}
            return _sld_fixed_signals(p, sig, t, step)

    inv = jnp.asarray(inverse)

    def exact(P):
        outs = [jax.vmap(one)(P[idx], dj, tj) for idx, dj, tj in parts]
        return jnp.concatenate(outs, axis=0)[inv]

    extra = {"drivers": drivers, "step_day": step, "days": days,
             "buckets": [(len(b), int(n)) for b, n in buckets]}
    predict = exact
    if all(k in spec.fixed for k in SIGNAL_PARAMETERS) and _kill_table_wanted(spec):
        predict, extra["kill_table"] = _tabulated(spec, parts, names, step, t_pad, exact)
    return jax.jit(predict), extra


#: the parameters log SLD depends on through the table, in the order of its Jacobian columns
_TABLE_JAC_ORDER = ("BASE", "KG", "KCHEMO", "KAA", "KIO", "PSI", "LAMBDA")
#: the largest error in log y (kill rates up to 1/day) the tabulated likelihood may have
KILL_TABLE_TOLERANCE = 1e-8


def _kill_table_wanted(spec) -> bool:
    """``[model] kill_table`` (default true): tabulate the kill integrals when the signals are
    fixed (:mod:`pkpd.fit.kill_tables`); false keeps the closed form at every evaluation."""
    return bool(spec.raw.get("model", {}).get("kill_table", True))


def _tabulated(spec, parts, names, step, t_pad, exact):
    """The tabulated prediction (``lax.cond``: the closed form whenever a subject's LAMBDA is
    outside the table), and its record for fit.json."""
    from .kill_tables import build_kill_table
    fixed = {k: float(spec.fixed[k]) for k in SIGNAL_PARAMETERS}
    table = build_kill_table(parts, fixed["KE0C"], fixed["KV"], step, len(t_pad),
                             t_pad.shape[1])
    record = {"lambda_range_per_day": list(table.lam_range),
              "panels": table.n_panels, "degree": table.degree,
              "max_error_J_day": table.max_error, "max_error_logy": table.max_error_logy,
              "used": bool(table.max_error_logy <= KILL_TABLE_TOLERANCE)}
    if not record["used"]:
        return exact, record
    ix = {n: names.index(n) for n in ("BASE", "KG", "KCHEMO", "KAA", "KIO", "PSI", "LAMBDA")}
    cols = jnp.asarray([ix[n] for n in _TABLE_JAC_ORDER])
    tp = jnp.asarray(t_pad)

    def fast_with_jacobian(P):
        """SLD and the derivatives of log SLD in the parameters of ``_TABLE_JAC_ORDER``,
        ``(n_subjects, n_obs, 7)``, in closed form: log y is linear in every parameter but
        LAMBDA (module docstring of kill_tables). The signal parameters are constants of the
        table: their derivatives are not computed (the fit holds them fixed)."""
        lam = P[:, ix["LAMBDA"]]
        j, dj_dx = table.both(lam)
        kio, psi = P[:, ix["KIO"]], P[:, ix["PSI"]]
        k = jnp.stack([P[:, ix["KCHEMO"]], P[:, ix["KAA"]], kio, kio * psi], -1)
        ly = (jnp.log(P[:, ix["BASE"]])[:, None] + P[:, ix["KG"]][:, None] * tp
              - jnp.einsum("ijk,ik->ij", j, k))
        y = jnp.exp(ly)
        dly = jnp.stack([jnp.broadcast_to(1.0 / P[:, ix["BASE"], None], tp.shape), tp,
                         -j[..., 0], -j[..., 1], -j[..., 2] - psi[:, None] * j[..., 3],
                         -kio[:, None] * j[..., 3],
                         -jnp.einsum("ijk,ik->ij", dj_dx, k) / lam[:, None]], -1)
        return y, dly

    def exact_with_jacobian(P):
        # subject i's SLD depends on row i only: one forward pass per parameter column
        basis = jnp.eye(P.shape[1])[cols]
        y = exact(P)

        def column(e):
            return jax.jvp(exact, (P,), (jnp.broadcast_to(e, P.shape),))[1] / y

        return y, jnp.moveaxis(jax.vmap(column)(basis), 0, -1)

    @jax.custom_jvp
    def predict(P):
        ok = table.in_range(P[:, ix["LAMBDA"]])
        return jax.lax.cond(ok, lambda q: fast_with_jacobian(q)[0], exact, P)

    @predict.defjvp
    def _predict_jvp(primals, tangents):
        # the branch runs on primal values only, so reverse mode never joins the two
        # branches' residuals (the closed form's would be copied at every gradient)
        (P,), (dP,) = primals, tangents
        ok = table.in_range(P[:, ix["LAMBDA"]])
        y, dly = jax.lax.cond(ok, fast_with_jacobian, exact_with_jacobian, P)
        return y, y * jnp.einsum("ijk,ik->ij", dly, dP[:, cols])

    return predict, record


#: parameters the tumour model's drug signals depend on (the rest act on the tumour only)
SIGNAL_PARAMETERS = ("KV", "KE0C", "IC50A", "HILLA", "IMAXA", "EC50D")


def _fixed_signals(fixed: dict, drivers: dict, step: float) -> dict:
    """Per-interval signals S, O, E and the recurrences U, B of :func:`solve_grid`, for fixed
    signal parameters (arrays ``(n_subjects, n_steps)``)."""
    from ..tumour import combination as cm

    def one(drv):
        S, O, E = cm.signals(fixed, drv)
        U = cm._shifted_recurrence(jnp.exp(-fixed["KV"] * step), S)
        B = cm._shifted_recurrence(jnp.exp(-fixed["KE0C"] * step), E)
        return {"S": S, "O": O, "E": E, "U": U, "B": B}

    return jax.jit(jax.vmap(one))(drivers)


def _sld_fixed_signals(p, sig, times, step: float):
    """:func:`pkpd.tumour.combination.sld` given precomputed signals (same formulas, exact)."""
    from ..tumour import combination as cm
    n = sig["S"].shape[-1]
    t = jnp.arange(n) * step
    c0, c1, c2 = cm._coefs(p, sig["S"], sig["O"], sig["E"], sig["U"], sig["B"])
    inc = cm._increment(p, t, c0, c1, c2, step)
    logb = jnp.log(p["BASE"])
    ly = jnp.concatenate([logb[None], logb + jnp.cumsum(inc)[:-1]])
    k = jnp.clip(jnp.floor(times / step).astype(int), 0, n - 1)
    tau = jnp.clip(times - k * step, 0.0, None)
    ly_t = ly[k] + cm._increment(p, t[k], c0[k], c1[k], c2[k], tau)
    pre = logb + p["KG"] * jnp.minimum(times, 0.0)
    return jnp.exp(jnp.where(times < 0, pre, ly_t))


def _buckets(need: np.ndarray, n_steps: int, max_buckets: int = 4) -> list:
    """Split subjects into at most ``max_buckets`` groups by required grid length, each group
    solved to its longest member (rounded up to 28 steps); cuts are chosen greedily to minimise
    the total number of solved grid steps."""
    order = np.argsort(need, kind="stable")
    lens = np.minimum(-(-need[order] // 28) * 28, n_steps)
    n = len(lens)
    cuts = [n]
    for _ in range(max_buckets - 1):
        best, best_cost = None, None
        for c in range(1, n):
            if c in cuts:
                continue
            trial = sorted([*cuts, c])
            cost, start = 0, 0
            for e in trial:
                cost += (e - start) * lens[e - 1]
                start = e
            if best_cost is None or cost < best_cost:
                best, best_cost = c, cost
        if best is None:
            break
        cuts = sorted([*cuts, best])
    out, start = [], 0
    for e in cuts:
        out.append((order[start:e], int(lens[e - 1])))
        start = e
    return out
