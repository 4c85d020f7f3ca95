"""Differentiable schedule optimisation (pkpd.trial.optimise, `pkpd optimise`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkpd import load_card
from pkpd.dosing.regimen import parse_regimen
from pkpd.trial.optimise import _pfs_days, build_problem, on_day_weights, optimise
from pkpd.tumour import combination as cm
from pkpd.tumour.drivers import dose_inputs
from pkpd.tumour.simulate import patient_drivers

DAYS = 730


def _grammar_grid(text: str) -> np.ndarray:
    """Daily anlotinib amounts (mg) of a regimen text, from the regimen grammar's expansion."""
    doses = parse_regimen(text).doses(None, DAYS)
    return dose_inputs(load_card("anlotinib"), doses, DAYS, 1.0).amount[:, 0]


def test_relaxation_at_large_steepness_is_the_grammar_grid():
    # oracle: the regimen grammar's own expansion of the D1-k Q21D regimens
    for k in (7, 14, 21):
        text = f"12 mg PO QD D1-{k} Q21D" if k < 21 else "12 mg PO QD"
        exact = _grammar_grid(text)
        assert np.array_equal(12.0 * np.asarray(on_day_weights(k, DAYS, 21, 0.0)), exact)
        # tau = 0.02: the nearest off-day weighs sigmoid(-0.5 / 0.02) = 1.4e-11
        soft = 12.0 * np.asarray(on_day_weights(float(k), DAYS, 21, 0.02))
        np.testing.assert_allclose(soft, exact, rtol=0, atol=12 * 2e-11)
    # the relaxed grid gives k mg-days per cycle of 1 mg/day at any tau used (sum of a logistic
    # staircase): 13.5 on-days = 13.5 mg per cycle within the sigmoid tail at the cycle ends
    w = np.asarray(on_day_weights(13.5, 21, 21, 0.3))
    assert abs(w.sum() - 13.5) < 2e-2


def test_pfs_surrogate_hard_limit_is_the_engine_progression_day():
    # oracle: combination.derived (first grid day with +20% and +5 mm over the running nadir)
    card = load_card("sclc_triplet_tgi")
    drv = patient_drivers(card, ["anlotinib: 12 mg PO QD D1-14 Q21D",
                                 "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4",
                                 "carboplatin: AUC 5 IV 60 min D1 Q21D x4"], DAYS,
                          covariates={"BSA": 1.8, "GFR": 100.0})
    drv = {k: jnp.asarray(v[0]) for k, v in drv.items()}
    typ = card.typical_params()

    @jax.jit
    def both(lam, kg):
        p = {**typ, "LAMBDA": lam, "KG": kg}
        sol = cm.solve_grid(p, drv, 1.0)
        logy = jnp.concatenate([sol["logy"], sol["logy_end"][-1:]])
        return (_pfs_days(logy, 1.0, rate=1e6, eps_log=1e-9, eps_mm=1e-9),
                cm.derived_from(p, sol)["progression_day"])

    checked = 0
    for lam in (0.01, 0.02, 0.04, 0.08):
        for kg in (0.002, 0.004, 0.008):
            hard, pd_day = (float(v) for v in both(lam, kg))
            expect = DAYS if np.isnan(pd_day) else min(pd_day, DAYS)
            assert hard == pytest.approx(expect, abs=1e-6)
            checked += not np.isnan(pd_day)
    assert checked >= 6  # most of the grid progresses within the horizon


@pytest.fixture(scope="module")
def small_problem():
    return build_problem("triplet", objective="pfs", n=24, draws=3, seed=3)


def test_gradient_matches_central_differences(small_problem):
    f = small_problem.mean_value_fn()
    x0 = jnp.array([12.0, 14.0])
    g = np.asarray(jax.grad(f)(x0))
    fd, fd2 = np.zeros(2), np.zeros(2)
    for i in range(2):
        for h, out in ((1e-3, fd), (2e-3, fd2)):
            e = np.zeros(2)
            e[i] = h
            out[i] = (float(f(x0 + e)) - float(f(x0 - e))) / (2 * h)
    # central differences err by (h^2/6) f'''; FD(2h) - FD(h) = 3 times that, so
    # |FD(h) - grad| <= |FD(2h) - FD(h)| bounds it with margin; the roundoff of the difference
    # quotient is about 1e-15 * |f| / h = 1e-11 months per mg (or day)
    bound = np.abs(fd2 - fd) + 1e-9
    assert np.all(np.abs(fd - g) <= bound), (g, fd, fd2)
    assert np.all(np.abs(fd - g) <= 1e-4 * np.abs(g))
    assert np.all(g != 0)


@pytest.mark.slow
def test_optimiser_improves_and_respects_cmax():
    res = optimise("triplet", objective="pfs", n=40, draws=4, seed=1, max_iter=20)
    st, op = res.start, res.optimum
    assert op["objective"] > st["objective"]
    assert op["constraint_ok"] and op["cmax_ng_ml"] <= op["cmax_limit_ng_ml"]
    assert res.improvement()["mean"] == pytest.approx(op["objective"] - st["objective"],
                                                      rel=1e-9)
    best = res.best_practical()
    assert best["feasible"] and best["cmax_ng_ml"] <= st["cmax_exact_grid_ng_ml"]


def test_optimiser_depth_small():
    res = optimise("triplet", objective="depth", n=12, draws=2, seed=2, max_iter=8)
    op, st = res.optimum, res.start
    assert op["objective"] >= st["objective"]
    assert op["cmax_ng_ml"] <= op["cmax_limit_ng_ml"]
    assert 0 < st["objective"] < 100  # % shrinkage


def _cli(capsys, *argv):
    from pkpd.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, match", [
    (("--objective", "orr"), "objective 'orr' is unknown"),
    (("--scenario", "ep"), "gives no anlotinib"),
    (("--dose-bounds", "4,50"), "dose bounds (4, 50) mg must satisfy"),
    (("--day-bounds", "15,21"), "lies outside the bounds"),
    (("--dose-bounds", "x"), "--dose-bounds 'x' must be LO,HI"),
    (("--n", "0"), "n = 0 must be a whole number"),
])
def test_cli_bad_input(capsys, argv, match):
    rc, out, err = _cli(capsys, "optimise", *argv)
    assert rc == 2
    assert match in err and err.count("\n") == 1 and "Fix:" in err
