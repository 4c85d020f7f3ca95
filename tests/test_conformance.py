"""NONMEM event-semantics conformance: small datasets against hand-derived closed forms.

Every case is a NONMEM-style dataset (ID, TIME, EVID, AMT, CMT, RATE, II, ADDL, SS, DV, MDV and
sometimes DUR) pushed through the public path ``read_nonmem -> predict`` and compared with
concentrations written down *in this file* from textbook formulas (CONVENTIONS.md §1 is the law):

* 1-compartment: bolus ``D/V e^{-ks}``; zero-order infusion ``R/(kV) (1 - e^{-ks})`` during and
  ``R/(kV) (1 - e^{-kT}) e^{-k(s-T)}`` after; first-order absorption (Bateman)
  ``D ka / (V (ka - k)) (e^{-ks} - e^{-ka s})``; all combined by superposition.
* Steady state (SS=1/2): the infinite train of past doses summed as geometric series, e.g. bolus
  ``D/V e^{-kt} / (1 - e^{-k tau})``, oral Bateman with the ``1/(1 - e^{-k tau})`` and
  ``1/(1 - e^{-ka tau})`` factors, infusion during and after. With a lag (or lag + duration > II)
  the first few past doses are summed explicitly and the rest as a geometric series.
* 2- and 3-compartment: macro-constants from the characteristic polynomial (``alpha``, ``beta``
  closed form; the cubic via ``numpy.roots``) and the residues of the transfer function
  ``A_c(s)/dose = prod(s + k_p0) / prod(s + lambda_i)`` (times ``ka/(s + ka)`` for oral input).

None of these use the engine's matrix exponential, so they are an independent oracle.

Tolerance: ``rtol = 1e-9``. Both sides are exact float64 evaluations of the same analytic solution
(the engine propagates with a Pade-13 ``expm`` accurate to a few ulp per step, the oracle sums a
handful of exponentials), so the only differences are rounding errors of order 1e-15 amplified by
at most a few dozen events and mild cancellation; 1e-9 leaves six orders of margin while still
catching any semantic error (a missing dose, a wrong duration, a wrong tie order all change the
value at the 1e-3 level or more). ``atol = 1e-12`` mg/L only matters where the exact answer is 0
(before the first dose, after a reset), where the engine gives exactly 0 as well.
"""

from __future__ import annotations

import math
import re
import warnings
from functools import partial

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.dosing.events import read_nonmem
from pkpd.pk.predict import predict

RTOL = 1e-9
ATOL = 1e-12

# --------------------------------------------------------------------------------------------
# dataset helpers
# --------------------------------------------------------------------------------------------


def dose(time, amt, cmt=1, *, rate=0.0, ii=0.0, addl=0, ss=0, evid=1, id=1, dur=None):
    r = dict(ID=id, TIME=float(time), EVID=evid, AMT=float(amt), CMT=cmt, RATE=float(rate),
             II=float(ii), ADDL=addl, SS=ss, DV=np.nan, MDV=1)
    if dur is not None:
        r["DUR"] = float(dur)
    return r


def obs(time, cmt=1, *, evid=0, id=1):
    return dict(ID=id, TIME=float(time), EVID=evid, AMT=0.0, CMT=cmt, RATE=0.0, II=0.0,
                ADDL=0, SS=0, DV=1.0 if evid == 0 else np.nan, MDV=0 if evid == 0 else 1)


def reset(time, cmt=1, *, id=1):
    return dict(ID=id, TIME=float(time), EVID=3, AMT=0.0, CMT=cmt, RATE=0.0, II=0.0, ADDL=0,
                SS=0, DV=np.nan, MDV=1)


def frame(rows):
    df = pd.DataFrame(rows)
    if "DUR" in df:
        df["DUR"] = df["DUR"].fillna(0.0)
    return df


# --------------------------------------------------------------------------------------------
# closed forms (independent of pkpd)
# --------------------------------------------------------------------------------------------

# 1-compartment parameters: k = CL/V = 0.125 /h
CL, V, KA = 2.5, 20.0, 1.1
K = CL / V
IV1 = dict(CL=CL, V=V)
OR1 = dict(KA=KA, CL=CL, V=V)


def B(s, d):
    """1-cmt IV bolus of amount d, s after it entered."""
    return d / V * math.exp(-K * s) if s >= 0 else 0.0


def INF(s, r, T):
    """1-cmt zero-order infusion at rate r for duration T, s after its start."""
    if s < 0:
        return 0.0
    if s <= T:
        return r / (K * V) * (1.0 - math.exp(-K * s))
    return r / (K * V) * (1.0 - math.exp(-K * T)) * math.exp(-K * (s - T))


def ORAL(s, d):
    """1-cmt first-order absorption (Bateman), amount d in the depot, s after arrival."""
    if s < 0:
        return 0.0
    return d * KA / (V * (KA - K)) * (math.exp(-K * s) - math.exp(-KA * s))


def SS_B(t, d, tau):
    """Bolus steady state, t after the last dose (sum of all past doses, t >= 0)."""
    return d / V * math.exp(-K * t) / (1.0 - math.exp(-K * tau))


def SS_ORAL(t, d, tau):
    """Oral steady state (Bateman with geometric-series factors), t >= 0 after the last dose."""
    return d * KA / (V * (KA - K)) * (math.exp(-K * t) / (1.0 - math.exp(-K * tau))
                                      - math.exp(-KA * t) / (1.0 - math.exp(-KA * tau)))


def SS_INF(t, r, T, tau):
    """Infusion steady state (T < tau), t >= 0 after the start of the last infusion."""
    acc = 1.0 / (1.0 - math.exp(-K * tau))
    if t <= T:
        trough = r / (K * V) * (1.0 - math.exp(-K * T)) * math.exp(-K * (tau - T)) * acc
        return r / (K * V) * (1.0 - math.exp(-K * t)) + trough * math.exp(-K * t)
    return r / (K * V) * (1.0 - math.exp(-K * T)) * math.exp(-K * (t - T)) * acc


def train(u, tau, single, tail, t_del):
    """sum_{j>=0} single(u + j*tau): the dose train of a steady state, u = time since the
    arrival of the record's own dose (may be negative). ``single(s)`` is 0 for s < 0 and equals
    ``sum(c * exp(-lam * s))`` over ``tail`` for s >= t_del (delivery finished), so the terms
    with u + j*tau >= t_del are summed as geometric series."""
    j0 = 0
    while u + j0 * tau < t_del:
        j0 += 1
    head = sum(single(u + j * tau) for j in range(j0))
    s0 = u + j0 * tau
    return head + sum(c * math.exp(-lam * s0) / (1.0 - math.exp(-lam * tau)) for c, lam in tail)


def bolus_train(u, d, tau):
    return train(u, tau, partial(B, d=d), [(d / V, K)], 0.0)


def inf_train(u, r, T, tau):
    # after the end: r/(kV) (1 - e^{-kT}) e^{-k(s-T)} = r/(kV) (e^{kT} - 1) e^{-ks}
    return train(u, tau, partial(INF, r=r, T=T), [(r / (K * V) * math.expm1(K * T), K)], T)


def oral_train(u, d, tau):
    c = d * KA / (V * (KA - K))
    return train(u, tau, partial(ORAL, d=d), [(c, K), (-c, KA)], 0.0)


def impulse(gain, zeros, poles):
    """Residues of gain * prod(s + z) / prod(s + p) (distinct p): the inverse Laplace transform
    is sum_i c_i exp(-p_i t) with c_i = gain prod(z - p_i) / prod_{j != i}(p_j - p_i)."""
    out = []
    for i, p in enumerate(poles):
        num = np.prod([z - p for z in zeros]) if zeros else 1.0
        den = np.prod([q - p for j, q in enumerate(poles) if j != i])
        out.append((float(gain * num / den), float(p)))
    return out


def two_cmt_poles(CL, V1, Q, V2):  # noqa: N803
    k10, k12, k21 = CL / V1, Q / V1, Q / V2
    a = k10 + k12 + k21
    disc = math.sqrt(a * a - 4.0 * k10 * k21)
    return k21, [(a + disc) / 2.0, (a - disc) / 2.0]          # zero k21; alpha, beta


def three_cmt_poles(CL, V1, Q2, V2, Q3, V3):  # noqa: N803
    k10, k12, k21, k13, k31 = CL / V1, Q2 / V1, Q2 / V2, Q3 / V1, Q3 / V3
    a2 = k10 + k12 + k13 + k21 + k31
    a1 = k10 * k21 + k10 * k31 + k12 * k31 + k13 * k21 + k21 * k31
    a0 = k10 * k21 * k31
    lam = -np.roots([1.0, a2, a1, a0])
    assert np.all(np.abs(lam.imag) < 1e-14)
    return [k21, k31], sorted(lam.real.tolist(), reverse=True)


def mexp_bolus(s, d, coefs):
    return d * sum(c * math.exp(-p * s) for c, p in coefs) if s >= 0 else 0.0


def mexp_inf(s, r, T, coefs):
    if s < 0:
        return 0.0
    return r * sum(c / p * (math.exp(-p * max(s - T, 0.0)) - math.exp(-p * s)) for c, p in coefs)


P2 = dict(CL=3.0, V1=15.0, Q=5.0, V2=40.0)
P3 = dict(CL=4.0, V1=10.0, Q2=6.0, V2=30.0, Q3=1.5, V3=80.0)
KA_M = 0.9
Z2, L2 = two_cmt_poles(**P2)
Z3, L3 = three_cmt_poles(**P3)
H2_IV = impulse(1.0 / P2["V1"], [Z2], L2)
H2_OR = impulse(KA_M / P2["V1"], [Z2], [KA_M] + L2)
H3_IV = impulse(1.0 / P3["V1"], Z3, L3)
H3_OR = impulse(KA_M / P3["V1"], Z3, [KA_M] + L3)


def test_two_cmt_macro_constants_textbook():
    """The residues reproduce the textbook A = (alpha - k21)/(V1 (alpha - beta)) form."""
    (a_c, alpha), (b_c, beta) = H2_IV
    k21 = P2["Q"] / P2["V2"]
    assert alpha > beta > 0
    np.testing.assert_allclose(a_c, (alpha - k21) / (P2["V1"] * (alpha - beta)), rtol=1e-14)
    np.testing.assert_allclose(b_c, (k21 - beta) / (P2["V1"] * (alpha - beta)), rtol=1e-14)
    assert a_c + b_c == pytest.approx(1.0 / P2["V1"], rel=1e-14)  # C(0) = D/V1


# --------------------------------------------------------------------------------------------
# cases: (rows, model, params, expected[list], expect_implied_warning)
# --------------------------------------------------------------------------------------------

IV = pkpd.OneCompartment("iv")
ORAL_M = pkpd.OneCompartment("oral")
CASES = []


def case(id_, rows, model, params, expected, warns=False):
    CASES.append(pytest.param(rows, model, params, expected, warns, id=id_))


# ---- ADDL / II ----------------------------------------------------------------------------
T = [6, 18, 30, 42, 50]
case("addl_bolus", [dose(0, 100, ii=12, addl=3)] + [obs(t) for t in T], IV, IV1,
     [sum(B(t - 12 * j, 100) for j in range(4)) for t in T])

T = [5, 15, 21, 25, 30, 35, 40]
case("addl_nonmem_doc_example_doses_10_20_22_34",
     [obs(5), dose(10, 10, ii=12, addl=2), obs(15), dose(20, 10)] + [obs(t) for t in T[2:]],
     IV, IV1, [sum(B(t - d, 10) for d in (10, 20, 22, 34)) for t in T])

T = [2, 26, 50, 100, 120]
case("addl_oral", [dose(0, 200, 1, ii=24, addl=4)] + [obs(t, 2) for t in T], ORAL_M, OR1,
     [sum(ORAL(t - 24 * j, 200) for j in range(5)) for t in T])

T = [1, 3, 13, 14.5, 25.5, 40]
case("addl_infusion_rate", [dose(0, 100, rate=50, ii=12, addl=2)] + [obs(t) for t in T], IV,
     IV1, [sum(INF(t - 12 * j, 50, 2) for j in range(3)) for t in T])

# ---- infusions -------------------------------------------------------------------------------
T = [1, 4, 6, 24]
case("infusion_rate_during_and_after", [dose(0, 100, rate=25)] + [obs(t) for t in T], IV, IV1,
     [INF(t, 25, 4) for t in T])

T = [1, 2.9, 3.5, 10]   # duration F*AMT/RATE = 0.6*100/20 = 3 h, rate stays 20
case("infusion_rate_F_shortens_duration", [dose(0, 100, rate=20)] + [obs(t) for t in T], IV,
     {**IV1, "F1": 0.6}, [INF(t, 20, 3) for t in T])

T = [2, 5, 7]           # DUR 5 h fixed: rate = F*AMT/DUR = 12
case("infusion_dur_F_changes_rate", [dose(0, 100, dur=5)] + [obs(t) for t in T], IV,
     {**IV1, "F1": 0.6}, [INF(t, 12, 5) for t in T])

T = [1, 3.5, 8]         # RATE=-1: rate R1 = 30, duration F*AMT/R1 = 90/30 = 3
case("infusion_rate_minus1_modelled_R1", [dose(0, 120, rate=-1)] + [obs(t) for t in T], IV,
     {**IV1, "R1": 30.0, "F1": 0.75}, [INF(t, 30, 3) for t in T])

T = [2, 6.5, 12]        # RATE=-2: duration D1 = 6, rate F*AMT/D1 = 90/6 = 15
case("infusion_rate_minus2_modelled_D1", [dose(0, 120, rate=-2)] + [obs(t) for t in T], IV,
     {**IV1, "D1": 6.0, "F1": 0.75}, [INF(t, 15, 6) for t in T])

T = [1, 9, 12, 17.5, 30]  # D1 kept on every ADDL copy: rate 60/3 = 20 at 0, 8, 16
case("infusion_rate_minus2_D1_on_addl_doses",
     [dose(0, 60, rate=-2, ii=8, addl=2)] + [obs(t) for t in T], IV, {**IV1, "D1": 3.0},
     [sum(INF(t - 8 * j, 20, 3) for j in range(3)) for t in T])

T = [3, 5, 8, 12, 20]
case("infusions_overlapping", [dose(0, 100, rate=10), obs(3), dose(4, 50, rate=25)]
     + [obs(t) for t in T[1:]], IV, IV1, [INF(t, 10, 10) + INF(t - 4, 25, 2) for t in T])

# ---- bioavailability and lag -----------------------------------------------------------------
T = [1, 5, 10]
case("F_bolus", [dose(0, 100)] + [obs(t) for t in T], IV, {**IV1, "F1": 0.7},
     [B(t, 70) for t in T])
case("F_oral", [dose(0, 100, 1)] + [obs(t, 2) for t in T], ORAL_M, {**OR1, "F1": 0.45},
     [ORAL(t, 45) for t in T])

T = [1, 3, 8]           # oral model, infusion into the central compartment (CMT 2) with F2
case("F2_infusion_into_central_of_oral_model", [dose(0, 100, 2, rate=25)]
     + [obs(t, 2) for t in T], ORAL_M, {**OR1, "F2": 0.5}, [INF(t, 25, 2) for t in T])

T = [1, 2, 10]
case("ALAG_bolus", [dose(0, 100)] + [obs(t) for t in T], IV, {**IV1, "ALAG1": 1.5},
     [B(t - 1.5, 100) for t in T])

T = [0.5, 1, 12.5, 13, 30]
case("ALAG_oral_with_addl", [dose(0, 100, 1, ii=12, addl=2)] + [obs(t, 2) for t in T], ORAL_M,
     {**OR1, "ALAG1": 0.75}, [sum(ORAL(t - 0.75 - 12 * j, 100) for j in range(3)) for t in T])

T = [1, 3, 6.5, 12]
case("ALAG_infusion", [dose(0, 100, rate=25)] + [obs(t) for t in T], IV, {**IV1, "ALAG1": 2.0},
     [INF(t - 2, 25, 4) for t in T])

T = [1, 2, 6]
case("ALAG_and_F_oral", [dose(0, 100, 1)] + [obs(t, 2) for t in T], ORAL_M,
     {**OR1, "ALAG1": 1.25, "F1": 0.8}, [ORAL(t - 1.25, 80) for t in T])

T = [0.5, 3, 5.5, 10]   # starts at 1, duration 0.8*100/20 = 4
case("ALAG_and_F_infusion", [dose(0, 100, rate=20)] + [obs(t) for t in T], IV,
     {**IV1, "ALAG1": 1.0, "F1": 0.8}, [INF(t - 1, 20, 4) for t in T])

# ---- steady state ----------------------------------------------------------------------------
T = [0, 3, 11.9, 30]
case("ss1_bolus", [dose(0, 100, ii=12, ss=1)] + [obs(t) for t in T], IV, IV1,
     [SS_B(t, 100, 12) for t in T])

# an observation before the SS record (same time, file order) still sees the old state
case("ss1_bolus_obs_before_record_sees_previous_state",
     [dose(0, 50), obs(10), obs(10), dose(10, 100, ii=12, ss=1), obs(10), obs(15)], IV, IV1,
     [B(10, 50), B(10, 50), SS_B(0, 100, 12), SS_B(5, 100, 12)])

T = [0, 1, 6, 20]
case("ss1_oral", [dose(0, 100, 1, ii=12, ss=1)] + [obs(t, 2) for t in T], ORAL_M, OR1,
     [SS_ORAL(t, 100, 12) for t in T])

T = [0, 2, 4, 8, 20]
case("ss1_infusion", [dose(0, 100, rate=25, ii=12, ss=1)] + [obs(t) for t in T], IV, IV1,
     [SS_INF(t, 25, 4, 12) for t in T])

T = [0, 1, 5, 13]
case("ss1_oral_lag", [dose(0, 100, 1, ii=12, ss=1)] + [obs(t, 2) for t in T], ORAL_M,
     {**OR1, "ALAG1": 2.0}, [oral_train(t - 2, 100, 12) for t in T])

T = [0, 6, 23]
case("ss1_bolus_F", [dose(0, 100, ii=24, ss=1)] + [obs(t) for t in T], IV,
     {**IV1, "F1": 0.6}, [SS_B(t, 60, 24) for t in T])

T = [0, 0.5, 3, 5.5, 11]  # arrival 1, duration 0.8*100/20 = 4
case("ss1_infusion_lag_F", [dose(0, 100, rate=20, ii=12, ss=1)] + [obs(t) for t in T], IV,
     {**IV1, "ALAG1": 1.0, "F1": 0.8}, [inf_train(t - 1, 20, 4, 12) for t in T])

T = [0, 1, 4, 8, 16, 30]  # ALAG 5 + duration 10 > II 12: the previous infusion is still running
case("ss1_infusion_lag_plus_duration_exceeds_II",
     [dose(0, 100, rate=10, ii=12, ss=1)] + [obs(t) for t in T], IV, {**IV1, "ALAG1": 5.0},
     [inf_train(t - 5, 10, 10, 12) for t in T])

T = [0, 1, 4, 14, 20, 40]  # ALAG 15 > II 12: the previous dose arrives at 3
case("ss1_bolus_lag_exceeds_II", [dose(0, 100, ii=12, ss=1)] + [obs(t) for t in T], IV,
     {**IV1, "ALAG1": 15.0}, [bolus_train(t - 15, 100, 12) for t in T])

T = [5, 8, 20]          # C = RATE/CL at the record, then washout (infusion ends at the record)
case("ss1_constant_infusion",
     [obs(2), obs(5), dose(5, 0, rate=10, ss=1)] + [obs(t) for t in T], IV, IV1,
     [0.0, 0.0] + [10 / CL * math.exp(-K * (t - 5)) for t in T])
case("ss1_constant_infusion_F_not_applied",
     [dose(5, 0, rate=10, ss=1)] + [obs(t) for t in T], IV, {**IV1, "F1": 0.5},
     [10 / CL * math.exp(-K * (t - 5)) for t in T])

T = [5, 8, 20]
case("ss1_constant_infusion_rate_minus1_R1",
     [dose(5, 0, rate=-1, ss=1)] + [obs(t) for t in T], IV, {**IV1, "R1": 10.0},
     [10 / CL * math.exp(-K * (t - 5)) for t in T])

T = [0, 2, 3.5, 11]     # RATE=-2 at SS: duration D1 = 3, rate 0.9*100/3 = 30
case("ss1_infusion_modelled_D1", [dose(0, 100, rate=-2, ii=12, ss=1)] + [obs(t) for t in T],
     IV, {**IV1, "D1": 3.0, "F1": 0.9}, [SS_INF(t, 30, 3, 12) for t in T])

T = [0, 5, 12, 20]      # duration = II: a constant R/CL, then washout after the last infusion
case("ss1_infusion_duration_equals_II",
     [dose(0, 120, rate=10, ii=12, ss=1)] + [obs(t) for t in T], IV, IV1,
     [10 / CL * math.exp(-K * max(t - 12, 0.0)) for t in T])

T = [4, 7, 9, 15, 30]   # SS=2 infusion added on top of a running (non-SS) infusion
case("ss2_infusion_added_to_running_infusion",
     [dose(0, 100, rate=10), obs(4), dose(6, 50, rate=25, ii=12, ss=2)]
     + [obs(t) for t in T[1:]], IV, IV1,
     [INF(t, 10, 10) + (inf_train(t - 6, 25, 2, 12) if t >= 6 else 0.0) for t in T])

# ALAG 50 > 4 II: four earlier doses are still pending at the record. Well defined by
# superposition; fails while the engine handles at most
# N_SS_PENDING = 3 pending past doses and silently returns NaN beyond that.
T = [0, 1, 10, 25, 40, 60]
case("ss1_bolus_lag_exceeds_four_II", [dose(0, 100, ii=12, ss=1)] + [obs(t) for t in T], IV,
     {**IV1, "ALAG1": 50.0}, [bolus_train(t - 50, 100, 12) for t in T])

T = [10, 22, 30, 40]    # 100 mg every 24 h at 08:00 (SS=1) plus 50 mg at 20:00 (SS=2)
case("ss2_added_to_ss1_am_pm_unequal",
     [dose(8, 100, ii=24, ss=1), obs(10), dose(20, 50, ii=24, ss=2)] + [obs(t) for t in T[1:]],
     IV, IV1, [SS_B(10 - 8, 100, 24)]
     + [SS_B(t - 8, 100, 24) + SS_B(t - 20, 50, 24) for t in T[1:]])

T = [31, 40, 50, 70]    # SS=1 at 30 cancels ADDL doses 36..60 and the infusion running 28-33
case("ss1_cancels_addl_and_running_infusion",
     [dose(0, 100, ii=12, addl=5), dose(28, 50, rate=10), obs(29), dose(30, 80, ii=24, ss=1)]
     + [obs(t) for t in T], IV, IV1,
     [sum(B(29 - 12 * j, 100) for j in range(3)) + INF(1, 10, 5)]
     + [SS_B(t - 30, 80, 24) for t in T])

T = [6, 18, 30, 40]
case("ss1_with_addl_continues_pattern", [dose(0, 100, ii=12, addl=2, ss=1)]
     + [obs(t) for t in T], IV, IV1, [SS_B(t, 100, 12) + B(t - 12, 100) + B(t - 24, 100)
                                      for t in T])

# ---- resets ----------------------------------------------------------------------------------
# NONMEM TIME help: "exceptions are the event times of reset and reset-and-dose events, where
# the time may be any number" -- the reset record itself carries the restarted time.
case("evid3_reset_time_restarts_on_reset_record",
     [dose(0, 100), obs(6), reset(0), dose(0, 50), obs(2), obs(10)], IV, IV1,
     [B(6, 100), B(2, 50), B(10, 50)])

case("evid4_time_restarts_on_reset_and_dose_record",
     [dose(0, 100), obs(6), dose(0, 40, evid=4), obs(3)], IV, IV1, [B(6, 100), B(3, 40)])

case("evid4_reset_and_dose_cancels_addl",
     [dose(0, 100, ii=12, addl=3), obs(20), dose(30, 80, evid=4), obs(31), obs(40)], IV, IV1,
     [B(20, 100) + B(8, 100), B(1, 80), B(10, 80)])

T = [15, 25, 40]
case("evid4_with_addl_only_first_dose_resets",
     [dose(0, 200), obs(5), dose(10, 100, ii=12, addl=2, evid=4)] + [obs(t) for t in T], IV,
     IV1, [B(5, 200)] + [sum(B(t - d, 100) for d in (10, 22, 34)) for t in T])

case("evid3_cancels_running_infusion_and_pending_addl",
     [dose(0, 100, rate=10, ii=24, addl=3), obs(4), reset(5), obs(6), obs(30), dose(40, 50),
      obs(45), obs(50)], IV, IV1, [INF(4, 10, 10), 0.0, 0.0, B(5, 50), B(10, 50)])

case("evid3_cancels_pending_lagged_dose",
     [dose(0, 100, 1), reset(1, 2), obs(2, 2), obs(5, 2), dose(6, 100, 1), obs(10, 2)], ORAL_M,
     {**OR1, "ALAG1": 3.0}, [0.0, 0.0, ORAL(1, 100)])

# ---- ties and EVID 2 -------------------------------------------------------------------------
case("tie_explicit_obs_before_dose_sees_predose_after_sees_postdose",
     [dose(0, 100), obs(12), dose(12, 100), obs(12), obs(14)], IV, IV1,
     [B(12, 100), B(12, 100) + 100 / V, B(14, 100) + B(2, 100)])

T = [12, 24, 30]
case("tie_implied_addl_dose_before_obs_nonmem_parity",
     [dose(0, 100, ii=12, addl=2)] + [obs(t) for t in T], IV, IV1,
     [B(12, 100) + B(0, 100), sum(B(24 - d, 100) for d in (0, 12, 24)),
      sum(B(30 - d, 100) for d in (0, 12, 24))], warns=True)

case("evid2_records_are_predicted",
     [dose(0, 100), obs(3, evid=2), obs(5), obs(8, evid=2)], IV, IV1,
     [B(3, 100), B(5, 100), B(8, 100)])

# ---- 2 and 3 compartments --------------------------------------------------------------------
T = [0.5, 2, 8, 24, 72]
case("two_cmt_iv_bolus", [dose(0, 100)] + [obs(t) for t in T], pkpd.TwoCompartment("iv"), P2,
     [mexp_bolus(t, 100, H2_IV) for t in T])

T = [1, 3, 13, 20]
case("two_cmt_iv_infusion_addl", [dose(0, 100, rate=50, ii=12, addl=1)] + [obs(t) for t in T],
     pkpd.TwoCompartment("iv"), P2,
     [mexp_inf(t, 50, 2, H2_IV) + mexp_inf(t - 12, 50, 2, H2_IV) for t in T])

T = [0.5, 3, 10, 48]
case("two_cmt_oral", [dose(0, 100, 1)] + [obs(t, 2) for t in T], pkpd.TwoCompartment("oral"),
     {**P2, "KA": KA_M}, [mexp_bolus(t, 100, H2_OR) for t in T])

T = [0, 2, 11]
case("two_cmt_iv_ss1_bolus", [dose(0, 100, ii=12, ss=1)] + [obs(t) for t in T],
     pkpd.TwoCompartment("iv"), P2,
     [sum(100 * c * math.exp(-p * t) / (1 - math.exp(-p * 12)) for c, p in H2_IV) for t in T])

T = [0.25, 2, 8, 24, 96]
case("three_cmt_iv_bolus", [dose(0, 100)] + [obs(t) for t in T], pkpd.ThreeCompartment("iv"),
     P3, [mexp_bolus(t, 100, H3_IV) for t in T])

T = [0.5, 1.5, 5, 30]
case("three_cmt_iv_infusion", [dose(0, 100, rate=100)] + [obs(t) for t in T],
     pkpd.ThreeCompartment("iv"), P3, [mexp_inf(t, 100, 1, H3_IV) for t in T])

T = [0, 1, 6, 23]
case("three_cmt_oral_ss1", [dose(0, 100, 1, ii=24, ss=1)] + [obs(t, 2) for t in T],
     pkpd.ThreeCompartment("oral"), {**P3, "KA": KA_M},
     [sum(100 * c * math.exp(-p * t) / (1 - math.exp(-p * 24)) for c, p in H3_OR) for t in T])

# ---- several subjects (vmap path, padding) ---------------------------------------------------
case("multi_subject_different_regimens",
     [dose(0, 100, 1, ii=12, addl=1, id=1), obs(2, 2, id=1), obs(14, 2, id=1),
      dose(0, 50, 2, ii=8, ss=1, id=2), obs(1, 2, id=2), obs(4, 2, id=2), obs(7, 2, id=2),
      obs(20, 2, id=2),
      dose(0, 60, 2, rate=20, id=3), obs(1, 2, id=3), dose(5, 60, 2, id=3), obs(6, 2, id=3)],
     ORAL_M, OR1,
     [ORAL(2, 100), ORAL(14, 100) + ORAL(2, 100),
      SS_B(1, 50, 8), SS_B(4, 50, 8), SS_B(7, 50, 8), SS_B(20, 50, 8),
      INF(1, 20, 3), INF(6, 20, 3) + B(1, 60)])


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------


def _implied_warning(ws):
    return [w for w in ws if re.search(r"implied", str(w.message), re.IGNORECASE)]


@pytest.mark.parametrize("rows, model, params, expected, warns", CASES)
def test_conformance(rows, model, params, expected, warns):
    df = frame(rows)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        table = read_nonmem(df)
        out = predict(table, model=model, params=params)
    implied = _implied_warning(ws)
    if warns:
        assert implied, "an observation at an implied ADDL dose time must warn (CONVENTIONS 1.3)"
    else:
        assert not implied, [str(w.message) for w in implied]
    pred_rows = df[df["EVID"].isin([0, 2])]
    assert list(out.columns[:3]) == ["ID", "TIME", "PRED"]
    np.testing.assert_array_equal(out["ID"].to_numpy(), pred_rows["ID"].to_numpy())
    np.testing.assert_array_equal(out["TIME"].to_numpy(), pred_rows["TIME"].to_numpy())
    np.testing.assert_allclose(out["PRED"].to_numpy(), np.asarray(expected, dtype=float),
                               rtol=RTOL, atol=ATOL)


def test_case_count():
    assert len(CASES) >= 36
