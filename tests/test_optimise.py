"""Differentiable schedule optimisation (pkpd.trial.optimise, `pkpd optimise`)."""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from pkpd import load_card
from pkpd.cards.card import Card
from pkpd.dosing.regimen import parse_regimen
from pkpd.errors import PkpdError
from pkpd.trial.optimise import (
    _eta_draws,
    _pfs_days,
    build_problem,
    on_day_weights,
    optimise,
    subsample_draws,
)
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


# ---- population sources: per-draw IIV variances, card=, posterior folders -------------------

def test_per_draw_omega2_scales_the_shared_patient_draws():
    # oracle: eta = z * sqrt(omega2_d) with the same z in every draw (exp IIV on KG, LAMBDA)
    lam_card = float(np.diag(load_card("sclc_triplet_tgi").omega())[5])   # LAMBDA, 0.25
    tab = pd.DataFrame({"KG": [0.004, 0.005, 0.006, 0.004],
                        "omega2_KG": [0.0, 0.04, 0.16, 0.01],
                        "omega2_LAMBDA": [0.0, lam_card, lam_card, 4 * lam_card]})
    pr = build_problem("triplet", n=16, draws_table=tab, seed=5)
    kg, lam = pr.tumour_params["KG"], pr.tumour_params["LAMBDA"]
    assert kg.shape == lam.shape == (4, 16)
    # omega2 = 0: every patient of the draw has its typical value, exactly
    np.testing.assert_array_equal(kg[0], 0.004)
    np.testing.assert_array_equal(lam[0], 0.02)
    eta_kg = np.log(kg / tab["KG"].to_numpy()[:, None])
    z = eta_kg[1] / 0.2
    assert np.std(z) > 0.3                                   # patients differ
    np.testing.assert_allclose(eta_kg[2], 0.4 * z, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(eta_kg[3], 0.1 * z, rtol=1e-12, atol=1e-15)
    # LAMBDA: the card's variance twice gives identical patients; 4x variance doubles the etas
    np.testing.assert_array_equal(lam[1], lam[2])
    np.testing.assert_allclose(np.log(lam[3] / 0.02), 2 * np.log(lam[1] / 0.02), rtol=1e-12)
    # the columns a table leaves out take the card's values
    assert pr.draws["omega2_PSI"].tolist() == [0.09] * 4
    assert pr.draws["PSI"].tolist() == [load_card("sclc_triplet_tgi").typical_params()["PSI"]] * 4


def test_correlated_iiv_uses_each_draws_cholesky_factor():
    base = load_card("sclc_triplet_tgi")
    raw = copy.deepcopy(base.raw)
    raw["iiv_correlation"] = [{"a": "KG", "b": "LAMBDA", "corr": 0.6}]
    card = Card(name="corr", path=base.path, raw=raw, sha256="test")
    names = card.iiv_names
    i, j = names.index("KG"), names.index("LAMBDA")
    om2 = np.diag(base.omega()).copy()
    rows = []
    for a, b in ((0.04, 0.25), (0.16, 0.09)):
        om2[i], om2[j] = a, b
        rows.append({f"omega2_{n}": v for n, v in zip(names, om2, strict=True)})
    z = np.random.default_rng(1).standard_normal((50, len(names)))
    eta = _eta_draws(card, pd.DataFrame(rows), z)
    for d, (a, b) in enumerate(((0.04, 0.25), (0.16, 0.09))):
        # oracle: the 2x2 Cholesky factor in closed form, [[sa, 0], [r sb, sb sqrt(1 - r^2)]]
        sa, sb = np.sqrt(a), np.sqrt(b)
        np.testing.assert_allclose(eta[d, :, i], sa * z[:, i], rtol=1e-12)
        np.testing.assert_allclose(eta[d, :, j], 0.6 * sb * z[:, i] + sb * 0.8 * z[:, j],
                                   rtol=1e-12, atol=1e-15)
    rows[0]["omega2_KG"] = 0.0
    with pytest.raises(PkpdError, match="population draw 0: Omega .* not positive definite"):
        _eta_draws(card, pd.DataFrame(rows), z)


@pytest.mark.parametrize("table, match", [
    ({"kg": [0.004]}, "did you mean 'KG'"),
    ({"omega2_KV": [0.1]}, "not a parameter of card sclc_triplet_tgi nor omega2_NAME"),
    ({"omega2_KG": [-0.1]}, "row 0: omega2_KG = -0.1 is a variance"),
])
def test_bad_draws_tables(table, match):
    with pytest.raises(PkpdError, match=match):
        build_problem("triplet", n=4, draws_table=pd.DataFrame(table))


def test_card_replaces_the_scenario_card(small_problem):
    base = load_card("sclc_triplet_tgi")
    kg2 = 2 * base.typical_params()["KG"]
    fast = base.with_values(values={"KG": kg2})
    pr = build_problem("triplet", objective="pfs", n=24, draws=3, seed=3, card=fast)
    assert pr.card is fast and pr.draws["KG"].tolist() == [kg2] * 3
    # the same patients (etas) and PSI draws as the scenario's card: every patient's KG doubles
    np.testing.assert_allclose(pr.tumour_params["KG"], 2 * small_problem.tumour_params["KG"],
                               rtol=1e-14)
    np.testing.assert_array_equal(pr.draws["PSI"], small_problem.draws["PSI"])
    # faster growth: earlier progression in every draw
    assert np.all(pr.value(12.0, 14.0) < small_problem.value(12.0, 14.0) - 0.1)


def test_subsample_draws_is_a_seeded_shuffle():
    tab = pd.DataFrame({"PSI": np.arange(10.0)})
    tab.attrs["source"] = "calibration x"
    a, b = subsample_draws(tab, 4, seed=2), subsample_draws(tab, 4, seed=2)
    want = np.random.default_rng(np.random.SeedSequence([2, 11])).permutation(10)[:4]
    assert a["PSI"].tolist() == b["PSI"].tolist() == want.tolist() == a.attrs["rows"]
    assert a.attrs["source"] == "calibration x"
    assert sorted(subsample_draws(tab, 50, seed=0)["PSI"]) == list(range(10))


TINY = """
[calibration]
name = "tiny"
card = "sclc_triplet_tgi"
seed = 4
particles = 4
max_simulations = 8
max_generations = 1
check_n = 12
check_replicates = 2
card_out = "tiny_card.toml"

[parameters]
KIO = "card"
omega2_LAMBDA = { dist = "lognormal", median = 0.25, sd_log = 0.5 }

[[target]]
scenario = "durvalumab_ep"
endpoint = "orr_confirmed"
value = 0.68
scale = 0.06
n = 12

[[target]]
scenario = "ep"
endpoint = "median_pfs_months"
value = 5.4
scale = 0.8
n = 12
"""


@pytest.fixture(scope="module")
def tiny_calibration(tmp_path_factory):
    from pkpd.trial.calibrate import calibrate

    d = tmp_path_factory.mktemp("optcal")
    (d / "tiny.toml").write_text(TINY)
    calibrate(d / "tiny.toml", progress=False)
    return d / "tiny"


def test_cli_posterior_of_a_calibration_with_psi_from_the_prior(capsys, tiny_calibration):
    from pkpd.trial.sources import calibration_draws, with_prior

    folder = tiny_calibration
    rc, out, err = _cli(capsys, "optimise", "--posterior", folder, "--prior", "PSI", "--n", 8,
                        "--draws", 3, "--seed", 0, "--dose-bounds", "11,13", "--day-bounds",
                        "13,15", "--set", "KG=0.005", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["card_path"] == str(folder / "card.toml") and s["draws"] == 3
    assert s["population_source"] == f"calibration {folder}; PSI from the prior"
    # oracle: the documented meaning, built in Python from the folder's particles
    card = load_card(folder / "card.toml")
    table = with_prior(subsample_draws(calibration_draws(folder), 3, 0), card, ["PSI"], 0)
    assert s["source_rows"] == table.attrs["rows"] and s["params"] == {"KG": 0.005}
    table["KG"] = 0.005                                   # --set: after posterior and prior
    pr = build_problem("triplet", n=8, seed=0, draws_table=table, card=card)
    assert s["start"]["objective"] == pytest.approx(float(pr.value(12.0, 14.0).mean()),
                                                    rel=1e-12)
    # each draw's omega2_LAMBDA (a calibrated particle) reaches its patients
    parts = pd.read_csv(folder / "particles.csv")
    om = pr.draws["omega2_LAMBDA"].to_numpy()
    assert set(om) <= set(parts["omega2_LAMBDA"]) and np.all(pr.draws["PSI"].to_numpy() != 0)
    eta = np.log(pr.tumour_params["LAMBDA"] / pr.draws["LAMBDA"].to_numpy()[:, None])
    np.testing.assert_allclose(eta / np.sqrt(om)[:, None], np.broadcast_to(
        eta[0] / np.sqrt(om[0]), eta.shape), rtol=1e-10)


@pytest.mark.parametrize("argv, match", [
    (("--posterior", "no/such/folder"), "no/such/folder is not a pkpd fit: no such folder"),
    (("--prior", "NOPE"), "no normal or log-normal prior on 'NOPE'"),
    (("--set", "NOPE=1"), "'NOPE' is not a parameter of card sclc_triplet_tgi"),
    (("--card", "anlotinib"), "card anlotinib is not a tumour card"),
    (("--draws", "0", "--prior", "PSI"), "draws = 0 must be a whole number"),
])
def test_cli_bad_population_sources(capsys, argv, match):
    rc, out, err = _cli(capsys, "optimise", "--n", 4, *argv)
    assert rc == 2
    assert match in err and err.count("\n") == 1 and "Fix:" in err
