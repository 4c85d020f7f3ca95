"""Independent scipy reference for the sclc_triplet_tgi combination model (used by simulate.py).

Written from the card structures and the equations of the ``pkpd.tumour.combination`` docstring
only: no
call into ``pkpd.tumour.drivers`` or ``pkpd.tumour.combination``. Per patient:

1. PK of each drug as an ODE in days (hour-based cards converted: CL, KA x 24), infusions as
   constant-rate inputs, oral doses as boluses into the depot, plus an AUC state (in the card's
   concentration unit x day, reset at every day boundary). ``solve_ivp`` (DOP853, rtol 1e-10)
   runs segment by segment between all dose, infusion-end and day-boundary times; the interval
   mean over day ``k`` is the AUC gathered over ``[k, k + 1]`` divided by 1 day.
2. Tumour ODE with state ``(V, B, log y)``, drivers constant within each day, integrated day by
   day (DOP853, rtol 1e-10, atol 1e-12).

Durvalumab's time-varying clearance ``CL(t) = CL exp(TMAX t^HILL / (TC50^HILL + t^HILL))`` (t in
days since the first dose) is evaluated continuously in the right-hand side.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import solve_ivp

RTOL = 1e-10
ATOL = 1e-12
_EPS_T = 1e-9          # times closer than this (day) are the same event time


def _pk_system(drug: str, p: dict):
    """``(rhs(t, y, rate), n_states, dose_state_of_route)``; the last state is the AUC in the
    card's concentration unit x day. ``rate`` is the vector of zero-order inputs (mg/day)."""
    if drug == "anlotinib":                      # 1-cmt oral, card in hours and ng/mL
        ka = p["KA"] * 24.0
        k = p["CL"] * 24.0 / p["V"]
        inv_v = 1000.0 / p["V"]                 # mg/L -> ng/mL

        def rhs(t, y, r):
            return [r[0] - ka * y[0], r[1] + ka * y[0] - k * y[1], y[1] * inv_v]
        return rhs, 3, {"PO": 0, "IV": 1}
    if drug == "durvalumab":                     # 2-cmt IV, card in days and ug/mL, CL(t)
        cl, v1, q, v2 = p["CL"], p["V1"], p["Q"], p["V2"]
        tmax, tc50, hill = p["TMAX"], p["TC50"], p.get("HILL", 1.0)
        tch = tc50 ** hill

        def rhs(t, y, r):
            th = t ** hill if t > 0 else 0.0
            cl_t = cl * math.exp(tmax * th / (tch + th))
            a1, a2 = y[0], y[1]
            return [r[0] - cl_t / v1 * a1 - q / v1 * a1 + q / v2 * a2,
                    q / v1 * a1 - q / v2 * a2, a1 / v1]
        return rhs, 3, {"IV": 0}
    if drug in ("etoposide", "carboplatin"):      # 1-cmt IV, cards in hours and ug/mL
        k = p["CL"] * 24.0 / p["V"]
        inv_v = 1.0 / p["V"]

        def rhs(t, y, r):
            return [r[0] - k * y[0], y[0] * inv_v]
        return rhs, 2, {"IV": 0}
    raise ValueError(f"no reference PK system for {drug}")


def daily_means(drug: str, params: dict, doses, days: int) -> np.ndarray:
    """Interval-mean concentration over each day ``[k, k + 1)``, ``k = 0 .. days - 1``."""
    rhs, n, cmt_of = _pk_system(drug, params)
    bolus, infusions = [], []
    for t, amt, dur, route in zip(doses.time_day, doses.amount_mg, doses.duration_day,
                                  doses.route):
        cmt = cmt_of[str(route).upper()]
        if t >= days:
            continue
        if dur > 0:
            infusions.append((float(t), float(t + dur), cmt, float(amt) / float(dur)))
        else:
            bolus.append((float(t), cmt, float(amt)))
    pts = sorted({float(k) for k in range(days + 1)}
                 | {b[0] for b in bolus} | {i[0] for i in infusions}
                 | {min(i[1], float(days)) for i in infusions})
    bounds = [pts[0]]
    for x in pts[1:]:
        if x - bounds[-1] > _EPS_T:
            bounds.append(x)
    y = np.zeros(n)
    out = np.zeros(days)
    for a, b in zip(bounds[:-1], bounds[1:]):
        for tb, cmt, amt in bolus:
            if abs(tb - a) <= _EPS_T:
                y[cmt] += amt
        mid = 0.5 * (a + b)
        r = [0.0] * (n - 1)
        for t0, t1, cmt, rate in infusions:
            if t0 <= mid < t1:
                r[cmt] += rate
        if any(r) or np.any(y[:-1]):             # else nothing in the body: stays zero
            sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=RTOL, atol=ATOL, args=(r,))
            if not sol.success:
                raise RuntimeError(f"{drug}: solve_ivp failed on [{a}, {b}]: {sol.message}")
            y = sol.y[:, -1].copy()
            # amounts below 1e-100 mg (long-decayed chemotherapy) are set to 0: DOP853's squared
            # error norm underflows to 0/0 on such states; the effect on any mean is < 1e-98
            y[:-1][np.abs(y[:-1]) < 1e-100] = 0.0
        k_end = round(b)
        if abs(b - k_end) <= _EPS_T:             # a day boundary: close day k_end - 1
            out[k_end - 1] = y[-1]
            y[-1] = 0.0
    return out


def tumour_sld(tp: dict, ca, cd, ec, days: int) -> np.ndarray:
    """SLD (mm) at the day boundaries 0 .. days for drivers constant within each day.

    dV/dt = KV (1 - I_A) - KV V, I_A = IMAXA C_A^H / (IC50A^H + C_A^H), U = 1 - V
    dB/dt = KE0C (E_C - B)
    d log y/dt = KG - exp(-LAMBDA t) [KCHEMO B + KAA U + KIO O (1 + PSI U)], O = C_D/(EC50D+C_D)
    """
    kv, ke0, kg, lam = tp["KV"], tp["KE0C"], tp["KG"], tp["LAMBDA"]
    kc, kaa, kio, psi = tp["KCHEMO"], tp["KAA"], tp["KIO"], tp["PSI"]
    imax, ic50, hill, ec50 = tp["IMAXA"], tp["IC50A"], tp["HILLA"], tp["EC50D"]

    def rhs(t, s, inh, eng, e):
        u = 1.0 - s[0]
        kill = kc * s[1] + kaa * u + kio * eng * (1.0 + psi * u)
        return [kv * (1.0 - inh) - kv * s[0], ke0 * (e - s[1]), kg - math.exp(-lam * t) * kill]

    s = np.array([1.0, 0.0, math.log(tp["BASE"])])
    out = np.empty(days + 1)
    out[0] = s[2]
    for k in range(days):
        c = max(float(ca[k]), 0.0)
        inh = imax * c ** hill / (ic50 ** hill + c ** hill) if c > 0 else 0.0
        d = max(float(cd[k]), 0.0)
        eng = d / (ec50 + d)
        e = max(float(ec[k]), 0.0)
        sol = solve_ivp(rhs, (float(k), float(k + 1)), s, method="DOP853", rtol=RTOL,
                        atol=ATOL, args=(inh, eng, e))
        if not sol.success:
            raise RuntimeError(f"tumour: solve_ivp failed on day {k}: {sol.message}")
        s = sol.y[:, -1].copy()
        out[k + 1] = s[2]
    return np.exp(out)


def patient(pk: dict, doses: dict, chemo_ref: dict, tp: dict, days: int):
    """One patient: ``(sld at day boundaries 0..days, drivers dict)``.

    ``pk``: ``{drug: params}`` (card units), ``doses``: ``{drug: Doses}``, ``chemo_ref``:
    ``{drug: reference_mean}`` for the chemotherapy drugs, ``tp``: tumour parameters.
    """
    zero = np.zeros(days)
    drv = {"anlotinib": zero, "durvalumab": zero, "chemo": zero}
    for drug, d in doses.items():
        mean = daily_means(drug, pk[drug], d, days)
        if drug in chemo_ref:
            drv["chemo"] = drv["chemo"] + mean / chemo_ref[drug]
        else:
            drv[drug] = mean
    return tumour_sld(tp, drv["anlotinib"], drv["durvalumab"], drv["chemo"], days), drv
