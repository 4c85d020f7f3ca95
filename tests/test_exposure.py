"""Exposure acceptance: anlotinib against its closed form and LITERATURE §1.2, durvalumab troughs
against LITERATURE §2.2, per-cycle AUC against quadrature of the closed form."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import minimize_scalar

import pkpd
from pkpd.dosing.regimen import parse_regimen
from pkpd.pk.exposure import concentration_profile, cycle_exposure

ANLOTINIB = "12 mg PO QD D1-14 Q21D"
DURVALUMAB = "1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"


def anlotinib_closed_form(t_h, cl=9.26, v=2010.0, ka=0.64, dose=12.0, days=84):
    """1-cpt oral superposition (Bateman), ng/mL. Doses at 24 h steps on days 1-14 of 21."""
    k = cl / v
    td = np.array([24.0 * (21 * c + d) for c in range(days // 21 + 1) for d in range(14)])
    t = np.atleast_1d(np.asarray(t_h, float))[:, None]
    dt = t - td[None, :]
    term = np.where(dt >= 0, np.exp(-k * np.clip(dt, 0, None)) - np.exp(-ka * np.clip(
        dt, 0, None)), 0.0)
    return 1000.0 * dose * ka / (v * (ka - k)) * term.sum(axis=1)


@pytest.fixture(scope="module")
def anlo():
    return cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen(ANLOTINIB), 84)


def test_anlotinib_cycle3_matches_closed_form(anlo):
    # Cmax of cycle 3 lies after its last dose (day 55 = 1320 h) within the dosing day
    f = lambda t: -anlotinib_closed_form(t)[0]  # noqa: E731
    opt = minimize_scalar(f, bounds=(1320.0, 1344.0), method="bounded",
                          options={"xatol": 1e-9})
    cmax_ref = -opt.fun
    trough_ref = anlotinib_closed_form(63 * 24.0)[0]     # just before cycle 4 starts
    assert anlo.cycle_start_day[:4] == [0.0, 21.0, 42.0, 63.0]
    assert anlo.cmax[2] == pytest.approx(cmax_ref, rel=1e-6)
    assert anlo.ctrough[2] == pytest.approx(trough_ref, rel=1e-6)
    assert anlo.tmax_day[2] * 24 == pytest.approx(opt.x, abs=0.05)


def test_anlotinib_matches_literature(anlo):
    # LITERATURE §1.2 [D]: Cmax ~49 ng/mL from cycle 3 on (2 significant digits -> +-0.5),
    # day-21 trough ~20.7 ng/mL (3 significant digits -> +-0.05), C1 Cmax 44 (+-0.5).
    assert abs(anlo.cmax[2] - 49.0) <= 0.5
    assert abs(anlo.ctrough[2] - 20.7) <= 0.05
    assert abs(anlo.cmax[0] - 44.0) <= 0.5
    assert anlo.unit == "ng/mL"


def test_anlotinib_cycle_auc_is_exact(anlo):
    for c in range(3):
        # integrate day by day so that every dose kink is an interval end
        ref = sum(quad(lambda t: anlotinib_closed_form(t)[0], 504.0 * c + 24 * d,
                       504.0 * c + 24 * (d + 1), epsabs=1e-10, epsrel=1e-12)[0]
                  for d in range(21))
        assert anlo.auc[c] == pytest.approx(ref, rel=1e-7)
    assert anlo.auc_unit == "ng/mL*h"


def test_durvalumab_troughs_match_literature():
    # LITERATURE §2.2 [D], Abegesah typical male 69.4 kg, no chemotherapy: 85, 130, 156, 174
    res = cycle_exposure(pkpd.load_card("durvalumab"), parse_regimen(DURVALUMAB), 112)
    assert res.cycle_start_day == [0.0, 21.0, 42.0, 63.0, 84.0]
    for got, ref in zip(res.ctrough[:4], [85.0, 130.0, 156.0, 174.0]):
        assert got == pytest.approx(ref, rel=0.10)
    assert res.unit == "ug/mL"
    # peaks of 440-610 ug/mL (LITERATURE §2.2)
    assert 400 < res.cmax[0] < 650 and res.cmax[3] < 650


def test_durvalumab_chemo_lowers_clearance():
    reg = parse_regimen("1500 mg IV 60 min Q3W x2")
    card = pkpd.load_card("durvalumab")
    off = cycle_exposure(card, reg, 42)
    on = cycle_exposure(card, reg, 42, covariates={"CHEMO": 1})
    assert on.ctrough[0] > off.ctrough[0] * 1.05


def test_profile_population_shapes_and_typical_row():
    card = pkpd.load_card("anlotinib")
    reg = parse_regimen(ANLOTINIB)
    t = np.linspace(0, 42, 50)
    typ = concentration_profile(card, reg, t)
    assert typ.shape == (1, 50)
    np.testing.assert_allclose(typ[0], anlotinib_closed_form(t * 24, days=42), rtol=1e-9,
                               atol=1e-12)
    pars = card.sample_params(7, np.random.default_rng(0))
    pop = concentration_profile(card, reg, t, params=pars)
    assert pop.shape == (7, 50)
    for i in (0, 6):
        ref = anlotinib_closed_form(t * 24, cl=pars["CL"][i], v=pars["V"][i], ka=pars["KA"][i],
                                    days=42)
        np.testing.assert_allclose(pop[i], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gfr", [45.0, 100.0])
def test_carboplatin_cycle_auc_equals_calvert_target(gfr):
    # Calvert: dose = AUC x (GFR + 25) and CL = GFR + 25 mL/min, so the model AUC over a cycle
    # (washout complete in 21 days) is the target: 5 mg*min/mL = 5000/60 ug*h/mL.
    res = cycle_exposure(pkpd.load_card("carboplatin"), parse_regimen(
        "AUC 5 IV 60 min D1 Q21D x2"), 42, covariates={"GFR": gfr})
    assert res.auc == pytest.approx([5000 / 60] * 2, rel=1e-9)


# ---- issue 13: overrides, drug prefix, horizon and work bounds ------------------------------


def test_param_override_changes_the_result_and_matches_closed_form():
    card = pkpd.load_card("anlotinib")
    res = cycle_exposure(card, parse_regimen(ANLOTINIB), 42, params={"CL": 5.0})
    trough = anlotinib_closed_form(21 * 24.0, cl=5.0, days=42)[0]
    assert res.ctrough[0] == pytest.approx(trough, rel=1e-9)
    assert res.ctrough[0] > cycle_exposure(card, parse_regimen(ANLOTINIB), 42).ctrough[0] * 1.5


@pytest.mark.parametrize("prefix", ["anlotinib: ", "Anlotinib: ", "ANLOTINIB : ", ""])
def test_same_drug_prefix_is_accepted(prefix, anlo):
    res = cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen(prefix + ANLOTINIB), 84)
    assert res.cmax == anlo.cmax and res.ctrough == anlo.ctrough


def test_prefix_matching_the_cards_drug_field_is_accepted():
    card = pkpd.load_card("durvalumab_baverel2018")          # [card] drug = "durvalumab"
    res = cycle_exposure(card, parse_regimen("durvalumab: 1500 mg IV 60 min Q4W x1"), 28)
    assert len(res.cmax) == 1 and res.cmax[0] > 300


@pytest.mark.parametrize("call", ["cycle_exposure", "concentration_profile", "dose_records"])
def test_regimen_for_another_drug_is_refused(call):
    from pkpd.errors import RegimenError
    from pkpd.pk.exposure import dose_records

    card = pkpd.load_card("anlotinib")
    reg = parse_regimen("durvalumab: 1500 mg IV 60 min Q3W")
    run = {"cycle_exposure": lambda: cycle_exposure(card, reg, 42),
           "concentration_profile": lambda: concentration_profile(card, reg, [0.0, 1.0]),
           "dose_records": lambda: dose_records(card, reg.doses(None, 42))}[call]
    with pytest.raises(RegimenError) as err:
        run()
    msg = str(err.value)
    assert msg.startswith("this regimen is for durvalumab but the card is anlotinib. Fix: ")
    assert "pkpd exposure durvalumab" in msg and "'durvalumab:' prefix" in msg


@pytest.mark.parametrize("days", [0, -5, float("nan"), float("inf"), -float("inf"), "x", None,
                                  True])
def test_horizon_must_be_positive_and_finite(days):
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match="must be > 0 and finite.*Fix"):
        cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen(ANLOTINIB), days)


def test_huge_horizon_is_refused_quickly():
    import time

    from pkpd.errors import RegimenError

    t = time.perf_counter()
    with pytest.raises(RegimenError, match="expands to 6666688 doses.*at most 100000"):
        cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen(ANLOTINIB), 1e7)
    assert time.perf_counter() - t < 2.0


def test_grid_thins_to_the_budget_with_the_same_metrics(monkeypatch):
    """Past MAX_EXPOSURE_POINTS the default grid thins (here to 101 points per 1-day cycle);
    Cmax stays refined, troughs and AUC stay exact."""
    import pkpd.pk.exposure as ex

    # issue 15: continuous QD is summarised per window; 1-day windows keep 30 short periods
    card, reg = pkpd.load_card("anlotinib"), parse_regimen("12 mg PO QD")
    full = cycle_exposure(card, reg, 30, window_days=1)
    n_cycles, n_doses = reg.expansion(30)
    monkeypatch.setattr(ex, "MAX_EXPOSURE_POINTS", n_cycles * (ex._REFINE + 3 + 101)
                        + 2 * n_doses)
    assert ex._points_per_cycle(None, 2000, n_cycles, n_doses, 30) == 101
    thin = cycle_exposure(card, reg, 30, window_days=1)
    np.testing.assert_allclose(thin.cmax, full.cmax, rtol=1e-9)
    np.testing.assert_allclose(thin.tmax_day, full.tmax_day, atol=1e-4)    # 9 s
    # exact at any grid; the grids differ, so only float64 round-off differs (~1e-12)
    np.testing.assert_allclose(thin.ctrough, full.ctrough, rtol=1e-9)
    np.testing.assert_allclose(thin.auc, full.auc, rtol=1e-9)
    # below MIN_POINTS_PER_CYCLE the horizon is refused, naming the numbers
    monkeypatch.setattr(ex, "MAX_EXPOSURE_POINTS", n_cycles * (ex._REFINE + 3 + 10))
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match=r"over 30 days \(30 windows, 31 doses\).*shorter"):
        cycle_exposure(card, reg, 30, window_days=1)
    with pytest.raises(RegimenError, match="fewer points_per_cycle"):
        ex._points_per_cycle(5000, 2000, 31, 31, 30)


@pytest.mark.parametrize("times", [[], [float("nan")], [-1.0, 2.0], [[1.0, 2.0]], ["a"]])
def test_profile_times_are_checked(times):
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match="times .*Fix"):
        concentration_profile(pkpd.load_card("anlotinib"), parse_regimen(ANLOTINIB), times)


# ---- issue 15: continuous dosing (no cycle): windows and steady state -------------------------

CL, V, KA = 9.26, 2010.0, 0.64      # anlotinib card typical values (L/h, L, 1/h)


def _bateman_coef(dose, cl=CL, v=V, ka=KA):
    return 1000.0 * dose * ka / (v * (ka - cl / v))        # ng/mL (mg, L)


def continuous_conc(t_h, dose=12.0, tau_h=24.0, cl=CL, v=V, ka=KA):
    """Superposition of every dose at 0, tau, 2 tau, ... before t (1-cpt oral), ng/mL."""
    k = cl / v
    t = np.atleast_1d(np.asarray(t_h, float))
    td = np.arange(0.0, t.max() + tau_h, tau_h)
    dt = t[:, None] - td[None, :]
    dtc = np.clip(dt, 0, None)
    return _bateman_coef(dose, cl, v, ka) * np.where(
        dt > 0, np.exp(-k * dtc) - np.exp(-ka * dtc), 0.0).sum(axis=1)


def continuous_auc(a_h, b_h, dose=12.0, tau_h=24.0):
    """Exact integral of continuous_conc over [a, b] (antiderivative of each Bateman term)."""
    k = CL / V
    td = np.arange(0.0, b_h, tau_h)

    def prim(s):                      # integral of exp(-k s) - exp(-ka s) from 0 to s (s >= 0)
        s = np.clip(s, 0, None)
        return (1 - np.exp(-k * s)) / k - (1 - np.exp(-KA * s)) / KA

    return _bateman_coef(dose) * float(np.sum(prim(b_h - td) - prim(a_h - td)))


def steady_state_closed_form(dose, tau_h, cl=CL, v=V, ka=KA):
    """1-cpt oral steady state: C_ss(t) = B [e^-kt / (1 - e^-k tau) - e^-ka t / (1 - e^-ka tau)]
    (accumulation factors), its maximum at t* = ln(ka (1 - e^-k tau) / (k (1 - e^-ka tau))) /
    (ka - k), AUC_tau,ss = D / CL and the single-dose AUC over the first interval."""
    k = cl / v
    rk, rka = 1 - np.exp(-k * tau_h), 1 - np.exp(-ka * tau_h)
    b = _bateman_coef(dose, cl, v, ka)
    css = lambda t: b * (np.exp(-k * t) / rk - np.exp(-ka * t) / rka)  # noqa: E731
    tmax = np.log(ka * rk / (k * rka)) / (ka - k)
    auc_tau = 1000.0 * dose / cl
    auc_first = b * (rk / k - rka / ka)
    return dict(cmax=css(tmax), tmax_h=tmax, ctrough=css(tau_h), auc_tau=auc_tau,
                cavg=auc_tau / tau_h, auc_per_day=auc_tau * 24.0 / tau_h,
                accumulation_ratio=auc_tau / auc_first)


@pytest.fixture(scope="module")
def qd():
    return cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen("12 mg PO QD"), 84)


def test_continuous_qd_is_summarised_per_21_day_window(qd):
    from pkpd.pk.exposure import DEFAULT_WINDOW_DAYS

    assert DEFAULT_WINDOW_DAYS == 21.0
    assert qd.period == "window" and qd.window_days == 21.0
    assert qd.start_day == [0.0, 21.0, 42.0, 63.0] and qd.length_day == [21.0] * 4
    frame = qd.to_frame()
    assert list(frame.columns) == ["window", "window_start_day", "window_length_day", "cmax",
                                   "tmax_day", "ctrough", "auc"]
    d = qd.to_dict()
    assert d["period"] == "window" and d["window_start_day"] == [0.0, 21.0, 42.0, 63.0]
    assert "cycle_start_day" not in d and d["steady_state"]["dosing_interval_h"] == 24.0


def test_continuous_windows_match_closed_form(qd):
    for w, (s, e) in enumerate([(0, 21), (21, 42), (42, 63), (63, 84)]):
        # trough at the window end, before that day's dose; AUC exact over the window
        assert qd.ctrough[w] == pytest.approx(continuous_conc(e * 24.0)[0], rel=1e-9)
        assert qd.auc[w] == pytest.approx(continuous_auc(s * 24.0, e * 24.0), rel=1e-7)
        # Cmax after the last dose of the window (day e-1), at the closed form's maximum
        opt = minimize_scalar(lambda t: -continuous_conc(t)[0], bounds=((e - 1) * 24.0, e * 24.0),
                              method="bounded", options={"xatol": 1e-9})
        assert qd.cmax[w] == pytest.approx(-opt.fun, rel=1e-6)


def test_steady_state_matches_accumulation_closed_form(qd):
    ref = steady_state_closed_form(12.0, 24.0)
    ss = qd.steady_state
    assert ss.phase == "12 mg PO QD" and ss.dose_mg == 12.0 and ss.dosing_interval_h == 24.0
    for name in ("cmax", "ctrough", "auc_tau", "cavg", "auc_per_day", "accumulation_ratio"):
        assert getattr(ss, name) == pytest.approx(ref[name], rel=1e-6), name
    assert ss.tmax_h == pytest.approx(ref["tmax_h"], abs=1e-3)
    # window 4 starts on day 63, 10 half-lives (6.27 days) in: within 2^-10 of the steady state,
    # from below
    assert 0 < 1 - qd.cmax[3] / ss.cmax < 2.0 ** -10
    assert 0 < 1 - qd.auc[3] / (21 * ss.auc_tau) < 2.0 ** -10


def test_steady_state_bid_and_parameter_override():
    from pkpd.pk.exposure import steady_state

    card = pkpd.load_card("anlotinib")
    ss = steady_state(card, parse_regimen("6 mg PO BID").phases[0], params={"CL": 5.0})
    ref = steady_state_closed_form(6.0, 12.0, cl=5.0)
    assert ss.dosing_interval_h == 12.0
    for name in ("cmax", "ctrough", "auc_tau", "auc_per_day", "accumulation_ratio"):
        assert getattr(ss, name) == pytest.approx(ref[name], rel=1e-6), name
    assert ss.auc_per_day == pytest.approx(2 * ss.auc_tau, rel=1e-12)
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match="not continuous dosing.*Fix"):
        steady_state(card, parse_regimen(ANLOTINIB).phases[0])


@pytest.mark.parametrize("window, n", [(7, 12), (28, 3), (84, 1)])
def test_chosen_window_gives_days_over_window_rows(window, n):
    res = cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen("12 mg PO QD"), 84,
                         window_days=window)
    assert len(res.cmax) == len(res.auc) == n == 84 // window
    assert res.start_day == [float(window * i) for i in range(n)]
    assert res.length_day == [float(window)] * n
    # the windows tile the horizon: their AUCs add up to the AUC over 84 days
    assert sum(res.auc) == pytest.approx(continuous_auc(0.0, 84 * 24.0), rel=1e-7)


def test_last_window_cut_by_the_horizon_has_its_real_length():
    res = cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen("12 mg PO QD"), 30)
    assert res.start_day == [0.0, 21.0] and res.length_day == [21.0, 9.0]
    assert res.auc[1] == pytest.approx(continuous_auc(21 * 24.0, 30 * 24.0), rel=1e-7)


def test_window_on_a_cycled_regimen(anlo):
    res = cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen(ANLOTINIB), 84,
                         window_days=21)
    assert res.period == "window" and res.steady_state is None
    np.testing.assert_allclose(res.auc, anlo.auc, rtol=1e-9)          # same periods
    np.testing.assert_allclose(res.ctrough, anlo.ctrough, rtol=1e-9)


def test_cycled_regimens_keep_the_per_cycle_form(anlo):
    assert anlo.period == "cycle" and anlo.window_days is None and anlo.steady_state is None
    assert list(anlo.to_dict()) == ["drug", "unit", "auc_unit", "cycle_start_day",
                                    "cycle_length_day", "cmax", "tmax_day", "ctrough", "auc"]
    assert list(anlo.to_frame().columns) == ["cycle", "cycle_start_day", "cycle_length_day",
                                             "cmax", "tmax_day", "ctrough", "auc"]


def test_cycles_then_continuous_maintenance(anlo):
    res = cycle_exposure(pkpd.load_card("anlotinib"),
                         parse_regimen(ANLOTINIB + " x2 then 12 mg PO QD"), 84)
    assert res.period == "cycle"
    assert res.start_day == [0.0, 21.0, 42.0, 63.0] and res.length_day == [21.0] * 4
    # the first two cycles as in the cycled regimen (Cmax screened over several peaks here,
    # so it agrees to the refinement's precision only)
    assert res.cmax[:2] == pytest.approx(anlo.cmax[:2], rel=1e-8)
    assert res.auc[:2] == pytest.approx(anlo.auc[:2], rel=1e-9)
    assert res.steady_state.phase == "12 mg PO QD"
    # maintenance from day 42: the first maintenance window holds 21 daily doses
    ref = anlotinib_closed_form(42 * 24.0, days=21)[0]                 # after the 2 cycles
    assert res.ctrough[1] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("window", [0, -7, float("nan"), float("inf"), "x", True, 85])
def test_bad_window_is_refused(window):
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match="window.*Fix"):
        cycle_exposure(pkpd.load_card("anlotinib"), parse_regimen("12 mg PO QD"), 84,
                       window_days=window)


def test_cli_exposure_continuous(capsys):
    import json

    from pkpd.cli import main

    assert main(["exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "84"]) == 0
    out = capsys.readouterr().out
    assert "per 21-day window (continuous dosing has no cycle)" in out
    assert out.count("\n") == 7 and "steady state of 12 mg PO QD (dosing interval 24 h)" in out
    assert main(["exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "84",
                 "--window", "7", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["window_days"] == 7.0 and len(d["window_start_day"]) == 12
    assert d["steady_state"]["auc_tau"] == pytest.approx(1000 * 12 / CL, rel=1e-9)
    assert main(["exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "84",
                 "--window", "0"]) == 2
    assert "the window must be a number of days > 0" in capsys.readouterr().err
