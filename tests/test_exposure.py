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

    card, reg = pkpd.load_card("anlotinib"), parse_regimen("12 mg PO QD")
    full = cycle_exposure(card, reg, 30)
    n_cycles, n_doses = reg.expansion(30)
    monkeypatch.setattr(ex, "MAX_EXPOSURE_POINTS", n_cycles * (ex._REFINE + 3 + 101)
                        + 2 * n_doses)
    assert ex._points_per_cycle(None, 2000, n_cycles, n_doses, 30) == 101
    thin = cycle_exposure(card, reg, 30)
    np.testing.assert_allclose(thin.cmax, full.cmax, rtol=1e-9)
    np.testing.assert_allclose(thin.tmax_day, full.tmax_day, atol=1e-4)    # 9 s
    # exact at any grid; the grids differ, so only float64 round-off differs (~1e-12)
    np.testing.assert_allclose(thin.ctrough, full.ctrough, rtol=1e-9)
    np.testing.assert_allclose(thin.auc, full.auc, rtol=1e-9)
    # below MIN_POINTS_PER_CYCLE the horizon is refused, naming the numbers
    monkeypatch.setattr(ex, "MAX_EXPOSURE_POINTS", n_cycles * (ex._REFINE + 3 + 10))
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match=r"over 30 days \(31 cycles, 31 doses\).*shorter"):
        cycle_exposure(card, reg, 30)
    with pytest.raises(RegimenError, match="fewer points_per_cycle"):
        ex._points_per_cycle(5000, 2000, 31, 31, 30)


@pytest.mark.parametrize("times", [[], [float("nan")], [-1.0, 2.0], [[1.0, 2.0]], ["a"]])
def test_profile_times_are_checked(times):
    from pkpd.errors import RegimenError

    with pytest.raises(RegimenError, match="times .*Fix"):
        concentration_profile(pkpd.load_card("anlotinib"), parse_regimen(ANLOTINIB), times)
