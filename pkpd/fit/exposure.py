"""Drug exposure of the exposure-driven TGI models (Claret, two-population) in a fit.

``[model] exposure`` of a fit spec takes one of three forms:

* a number: a constant exposure ``E`` from ``t = 0`` (the library's closed form);
* ``{ column = "CONC" }``: a per-record exposure column of the data. Each subject's exposure is
  piecewise constant, *last observation carried forward* (LOCF, as NONMEM/Monolix/nlmixr2 treat
  a time-varying covariate): the value on a record applies from that record's time until the
  subject's next record with a value; before the first record the first value applies
  (treatment starts at ``t = 0``, so only ``t >= 0`` matters);
* ``{ card = "PK card", regimen = "150 mg PO QD" }`` (or ``[regimens.ARM]`` with one entry per
  arm instead of ``regimen``): the typical concentration of the PK card under the regimen,
  averaged over each day (``step_day``), piecewise constant on that grid.

For a piecewise constant ``E`` the models stay closed form, exactly: the integral
``I_lam(t) = int_0^t E(s) exp(-lam*s) ds`` is the sum over the segments ``[s_k, e_k)`` of
``E_k * exp(-lam*s_k) * T_k * phi1(-lam*T_k)``, ``T_k = clip(t - s_k, 0, e_k - s_k)``, so that
Claret is ``y = y0*exp(KL*t - KD*I_lam(t))`` and the two-population model has
``S = (1-f)*y0*exp(gS*t - kS*I_0(t))``. Time in days, as the TGI library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..errors import DataError, SpecError

__all__ = ["ExposureSpec", "parse_exposure", "ExposureSteps", "exposure_steps",
           "step_integral", "tgi_size_steps", "STEP_MODELS"]

#: TGI models whose closed form this module extends to a piecewise constant exposure
STEP_MODELS = ("claret", "two_population")
_KEYS = {"column": {"column"}, "regimen": {"card", "regimen", "step_day"}}


@dataclass(frozen=True)
class ExposureSpec:
    """The parsed ``[model] exposure``: ``kind`` is "constant", "column" or "regimen"."""

    kind: str
    value: float | None = None          # constant
    column: str | None = None           # column
    card: object = None                 # regimen: the loaded PK card
    regimen: str | None = None          # regimen: text for every subject (else [regimens])
    step_day: float = 1.0


def parse_exposure(value, where: str, model_name: str, spec_path=None) -> ExposureSpec:
    """Validate ``[model] exposure`` for TGI model ``model_name`` (one-line SpecError)."""
    if isinstance(value, bool) or value is None:
        raise SpecError(f"{where}: exposure = {value!r}. Fix: a number (constant exposure), "
                        "{ column = 'CONC' } or { card = 'PK_CARD', regimen = '150 mg PO QD' }")
    if isinstance(value, int | float):
        if not np.isfinite(value) or value < 0:
            raise SpecError(f"{where}: exposure = {value!r} must be a finite number >= 0. Fix: "
                            "e.g. exposure = 1.0 (on) or the dose level")
        return ExposureSpec("constant", value=float(value))
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: exposure = {value!r}. Fix: a number, {{ column = 'CONC' }} "
                        "or { card = 'PK_CARD', regimen = '150 mg PO QD' }")
    kind = "column" if "column" in value else "regimen" if "card" in value else None
    if kind is None:
        raise SpecError(f"{where}: exposure table needs 'column' (an exposure column of the "
                        "data) or 'card' (a PK card, with regimen or [regimens.ARM]); got keys "
                        f"{', '.join(sorted(value)) or '(none)'}")
    extra = set(value) - _KEYS[kind]
    if extra:
        raise SpecError(f"{where}: exposure: unknown key(s) {', '.join(sorted(extra))} for the "
                        f"{kind} form. Fix: use {', '.join(sorted(_KEYS[kind]))}")
    if kind == "column":
        col = value["column"]
        if not isinstance(col, str) or not col.strip():
            raise SpecError(f"{where}: exposure column = {col!r}. Fix: the column name, quoted, "
                            "e.g. { column = 'CONC' }")
        return ExposureSpec("column", column=col)
    return _parse_regimen_form(value, where, spec_path)


def _parse_regimen_form(value, where, spec_path) -> ExposureSpec:
    from ..cards.card import load_card
    ref = str(value["card"])
    card_path = (Path(spec_path).parent / ref) if spec_path and ref.endswith(".toml") else ref
    try:
        card = load_card(card_path)
    except Exception as e:
        raise SpecError(f"{where}: exposure card {ref!r} cannot be loaded: {e}") from None
    if card.kind != "pk":
        raise SpecError(f"{where}: exposure card {ref!r} is a {card.kind!r} card. Fix: name a "
                        "PK card (its typical concentration is the exposure)")
    step = value.get("step_day", 1.0)
    if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
        raise SpecError(f"{where}: exposure step_day = {step!r}. Fix: a positive number of days, "
                        "e.g. step_day = 1.0")
    reg = value.get("regimen")
    if reg is not None:
        _regimen(str(reg), where)
    return ExposureSpec("regimen", card=card, regimen=None if reg is None else str(reg),
                        step_day=float(step))


def _regimen(text: str, where: str):
    from ..dosing.regimen import parse_regimen
    try:
        return parse_regimen(text)
    except Exception as e:
        raise SpecError(f"{where}: exposure regimen {text!r}: {e}") from None


@dataclass
class ExposureSteps:
    """Per-subject piecewise constant exposure, padded: arrays ``(n_subjects, n_segments)`` of
    segment starts ``start`` (days, >= 0), lengths ``length`` (days; the last real segment of
    each subject and padding have length 0 and are never summed whole), values ``value``; and for
    each padded observation its segment ``seg`` and time into it ``tau`` (days)."""

    start: np.ndarray
    length: np.ndarray
    value: np.ndarray
    seg: np.ndarray
    tau: np.ndarray


def _segments(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LOCF segments of one subject's (sorted) records, clipped to ``t >= 0``: starts (the first
    at 0) and values. Records before 0 collapse to zero-length segments."""
    s = np.maximum(times, 0.0)
    s[0] = 0.0
    return s, values


def build_steps(per_subject: list[tuple[np.ndarray, np.ndarray]], t_pad: np.ndarray
                ) -> ExposureSteps:
    """Pad each subject's LOCF segments and locate each padded observation time in them."""
    n_s = len(per_subject)
    n_seg = max(len(t) for t, _ in per_subject)
    start = np.zeros((n_s, n_seg))
    length = np.zeros((n_s, n_seg))
    value = np.zeros((n_s, n_seg))
    seg = np.zeros(t_pad.shape, int)
    tau = np.zeros(t_pad.shape)
    for i, (t, v) in enumerate(per_subject):
        s, e = _segments(np.asarray(t, float), np.asarray(v, float))
        n = len(s)
        start[i, :n], value[i, :n] = s, e
        length[i, :n - 1] = np.diff(s)
        k = np.clip(np.searchsorted(s, t_pad[i], side="right") - 1, 0, n - 1)
        seg[i] = k
        tau[i] = np.clip(t_pad[i] - s[k], 0.0, np.where(k < n - 1, length[i, k], np.inf))
    return ExposureSteps(start, length, value, seg, tau)


def step_integral(steps: ExposureSteps, lam):
    """``I_lam(t) = int_0^t E(s)*exp(-lam*s) ds`` at the padded observation times, exact for
    the piecewise constant ``E``; ``lam`` is ``(n_subjects, 1)`` (1/day) or a scalar."""
    from ..tumour.tgi import phi1
    s, L, E = (jnp.asarray(a) for a in (steps.start, steps.length, steps.value))
    lam = jnp.broadcast_to(jnp.asarray(lam, float), (s.shape[0], 1))
    whole = E * jnp.exp(-lam * s) * L * phi1(-lam * L)
    before = jnp.cumsum(whole, axis=1) - whole           # sum over the segments before k
    k = jnp.asarray(steps.seg)
    tau = jnp.asarray(steps.tau)
    take = lambda a: jnp.take_along_axis(a, k, axis=1)  # noqa: E731
    return take(before) + take(E) * jnp.exp(-lam * take(s)) * tau * phi1(-lam * tau)


def tgi_size_steps(model, t, q: Mapping, steps: ExposureSteps):
    """SLD (mm) of the exposure-driven TGI ``model`` at padded times ``t`` (days) under the
    piecewise constant exposure ``steps``; ``q`` maps parameter names to ``(n_subjects, 1)``."""
    t = jnp.asarray(t)
    if model.name == "claret":
        return q["y0"] * jnp.exp(q["KL"] * t - q["KD"] * step_integral(steps, q["lam"]))
    if model.name == "two_population":
        sens = (1.0 - q["f"]) * q["y0"] * jnp.exp(q["gS"] * t - q["kS"] * step_integral(steps,
                                                                                       0.0))
        return sens + q["f"] * q["y0"] * jnp.exp(q["gR"] * t)
    raise SpecError(f"[model] tgi = {model.name!r}: a time-varying exposure is available for "
                    f"{', '.join(STEP_MODELS)}. Fix: use a constant exposure = E")


def exposure_steps(spec, data, t_pad: np.ndarray) -> ExposureSteps:
    """The spec's column or regimen exposure as :class:`ExposureSteps` for ``data``."""
    ex = spec.exposure
    if ex.kind == "column":
        rec = data.exposure
        per = []
        for i in range(data.n_subjects):
            m = rec["subject"] == i
            per.append((rec["time"][m], rec["value"][m]))
        return build_steps(per, t_pad)
    return build_steps(_regimen_steps(spec, data, ex, t_pad), t_pad)


def _regimen_steps(spec, data, ex: ExposureSpec, t_pad) -> list:
    """Each subject's daily-mean typical concentration of its arm's regimen."""
    from ..tumour.drivers import dose_inputs, grid_means
    step = ex.step_day
    n_steps = int(np.ceil(max(float(np.max(t_pad)), step) / step)) + 1
    arms = data.arms or ["default"] * data.n_subjects
    card = ex.card
    model = card.model()
    params = {k: jnp.asarray(float(v)) for k, v in card.typical_params().items()}
    grid = np.arange(n_steps) * step
    by_arm = {}
    for arm in sorted(set(arms)):
        text = ex.regimen if ex.regimen is not None else _arm_regimen(spec, arm)
        reg = _regimen(text, "[model] exposure")
        inputs = dose_inputs(card, reg.doses(None, n_steps * step), n_steps, step)
        by_arm[arm] = (grid, np.asarray(grid_means(model, params, inputs)[0], float))
    return [by_arm[a] for a in arms]


def _arm_regimen(spec, arm: str) -> str:
    r = spec.regimens.get(arm)
    if r is None:
        raise SpecError(f"[regimens]: no regimen for arm {arm!r}. Fix: add [regimens.{arm}] "
                        "with one 'drug = regimen text', or give exposure = { card = ..., "
                        "regimen = '...' } for every subject")
    texts = [v for k, v in r.items() if k != "covariates"]
    if len(texts) != 1:
        raise SpecError(f"[regimens.{arm}]: the exposure card takes one regimen; got "
                        f"{len(texts)}. Fix: one 'drug = regimen text' entry")
    return str(texts[0])


def check_records(subject_names, sidx, time, value, column: str, rows=None) -> None:
    """Exposure records: values >= 0, and every subject has one (DataError naming it)."""
    bad = value < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError("negative exposure", row=None if rows is None else int(rows[i]),
                        subject=subject_names[sidx[i]], column=column, value=float(value[i]),
                        fix="exposures are concentrations or dose levels, >= 0")
    have = np.zeros(len(subject_names), bool)
    have[sidx] = True
    if not have.all():
        s = subject_names[int(np.flatnonzero(~have)[0])]
        raise DataError("no exposure value for this subject", subject=s, column=column,
                        fix=f"fill {column} on at least one of the subject's records (the "
                            "value is carried forward from its record time)")
