"""Clinical estimands of a hierarchical fit (pkpd.fit.estimands) on fake posteriors.

The posteriors are built with ``az.from_dict`` from known parameter sets, so every summary has an
exact reference: :func:`pkpd.tumour.combination.derived` for the same parameters on the real triplet
drivers (typical PK, BSA 1.8 m2, GFR 100 mL/min). Four subjects cover the regimes of the onset:
regrowth after a nadir (triplet; durvalumab + EP), still shrinking at the horizon (NaN onset,
``LAMBDA = 0``) and primary resistance (onset 0, fast growth). All fake posteriors have 20 draws
and 4 subjects and are evaluated in batches of 7 draws (7 + 7 + 6, the last one padded), so the
vmapped solver compiles once for the module.
"""

from __future__ import annotations

import json
import math

import arviz as az
import jax
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import pkpd
from pkpd.errors import DataError, ModelError
from pkpd.fit import estimands as est
from pkpd.tumour import combination as cm
from pkpd.tumour.simulate import patient_drivers

CARD = "sclc_triplet_tgi"
COV = {"BSA": 1.8, "GFR": 100.0}
TRIPLET = ["anlotinib: 12 mg PO QD D1-14 Q21D",
           "durvalumab: 1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W",
           "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4",
           "carboplatin: AUC 5 IV 60 min D1 Q21D x4"]
DAYS = 400
TYP = pkpd.load_card(CARD).typical_params()
SUBJECTS = ["S1", "S2", "S3", "S4"]
# per subject: parameter overrides of set A and set B (the spread test mixes them half/half)
SET_A = [{}, {}, {"LAMBDA": 0.0}, {"KG": 0.3}]
SET_B = [{"LAMBDA": 0.03}, {"LAMBDA": 0.03}, {}, {}]
N_CHAIN, N_DRAW = 2, 10
BATCH = 7
DERIVED = jax.jit(cm.derived)
QUANTITIES = ("resistance_onset_day", "time_to_nadir_day", "depth_pct", "nadir_mm",
              "progression_day")


def params(over: dict) -> dict:
    p = dict(TYP)
    p.update(over)
    return p


def param_vector(over: dict) -> np.ndarray:
    p = params(over)
    return np.array([p[k] for k in cm.PARAMETERS])


@pytest.fixture(scope="module")
def drivers():
    d = patient_drivers(CARD, TRIPLET, DAYS, covariates=COV)
    assert all(v.shape == (1, DAYS) for v in d.values())
    out = {k: np.repeat(v, len(SUBJECTS), axis=0) for k, v in d.items()}
    out["anlotinib"][1] = 0.0  # S2: durvalumab + EP (checks the subject/row alignment)
    return out


def reference(over: dict, drivers, i: int) -> dict:
    d = {k: v[i] for k, v in drivers.items()}
    return {k: float(v) for k, v in DERIVED(params(over), d).items()}


def make_idata(indiv: np.ndarray, **scalars) -> az.InferenceData:
    """``indiv`` (chain, draw, subject, param); scalars (chain, draw)."""
    return az.from_dict(posterior={"indiv": indiv, **scalars},
                        coords={"subject": SUBJECTS, "param": list(cm.PARAMETERS)},
                        dims={"indiv": ["subject", "param"]})


def constant_indiv(sets) -> np.ndarray:
    one = np.stack([param_vector(o) for o in sets])
    return np.broadcast_to(one, (N_CHAIN, N_DRAW) + one.shape).copy()


@pytest.fixture(scope="module")
def table_a(drivers):
    return est.patient_estimands(make_idata(constant_indiv(SET_A)), drivers, batch=BATCH)


# --------------------------------------------------------------------------------------------
# the reference regimes are what the tests assume
# --------------------------------------------------------------------------------------------

def test_reference_regimes(drivers):
    r = [reference(o, drivers, i) for i, o in enumerate(SET_A)]
    assert 50 < r[0]["resistance_onset_day"] < 150
    assert 50 < r[1]["resistance_onset_day"] < 150
    assert r[0]["resistance_onset_day"] != r[1]["resistance_onset_day"]
    assert math.isnan(r[2]["resistance_onset_day"])
    assert math.isnan(r[2]["progression_day"])
    assert r[3]["resistance_onset_day"] == 0.0


# --------------------------------------------------------------------------------------------
# patient_estimands
# --------------------------------------------------------------------------------------------

def test_identical_draws_give_derived_exactly(table_a, drivers):
    t = table_a
    assert list(t.columns[:2]) == ["subject", "n_draws"]
    assert list(t["subject"]) == SUBJECTS
    assert (t["n_draws"] == N_CHAIN * N_DRAW).all()
    for i, over in enumerate(SET_A):
        ref = reference(over, drivers, i)
        row = t.iloc[i]
        for q in QUANTITIES:
            want = ref[q] if not math.isnan(ref[q]) else math.inf  # NaN = beyond the horizon
            for stat in ("median", "q5", "q95"):
                got = row[f"{q}_{stat}"]
                if math.isinf(want):
                    assert got == math.inf, (SUBJECTS[i], q, stat)
                else:
                    np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=f"{i} {q} {stat}")
            assert row[f"{q}_q5"] == row[f"{q}_q95"]
    np.testing.assert_array_equal(t["p_no_regrowth"], [0, 0, 1, 0])
    np.testing.assert_array_equal(t["p_primary_resistance"], [0, 0, 0, 1])
    np.testing.assert_array_equal(t["p_no_progression"], [0, 0, 1, 0])
    # depth in percent of baseline, negative = shrinkage (the triplet shrinks ~60%)
    assert -80 < t["depth_pct_median"].iloc[0] < -40


def test_half_and_half_draws_bracket_the_two_sets(drivers):
    a = constant_indiv(SET_A)
    b = constant_indiv(SET_B)
    mixed = np.where((np.arange(N_DRAW) % 2 == 0)[None, :, None, None], a, b)
    t = est.patient_estimands(make_idata(mixed), drivers, batch=BATCH)
    for i in range(len(SUBJECTS)):
        ra, rb = reference(SET_A[i], drivers, i), reference(SET_B[i], drivers, i)
        for q in ("resistance_onset_day", "time_to_nadir_day", "depth_pct"):
            va, vb = (math.inf if math.isnan(r[q]) else r[q] for r in (ra, rb))
            lo, hi = min(va, vb), max(va, vb)
            assert lo < hi, (i, q)
            row = t.iloc[i]
            # 20 draws, 10 of each: type-7 q5/q95 sit on the two extreme order statistics and
            # the median halfway between the 10th and 11th
            np.testing.assert_allclose(row[f"{q}_q5"], lo, rtol=1e-10)
            if math.isinf(hi):
                assert row[f"{q}_q95"] == math.inf
                assert row[f"{q}_median"] == math.inf
            else:
                np.testing.assert_allclose(row[f"{q}_q95"], hi, rtol=1e-10)
                np.testing.assert_allclose(row[f"{q}_median"], 0.5 * (lo + hi), rtol=1e-10)
    np.testing.assert_array_equal(t["p_no_regrowth"], [0, 0, 0.5, 0])
    np.testing.assert_array_equal(t["p_primary_resistance"], [0, 0, 0, 0.5])
    # S4: half the draws at onset 0, half at the typical onset: median = half the typical onset
    np.testing.assert_allclose(t["resistance_onset_day_median"].iloc[3],
                               0.5 * reference({}, drivers, 3)["resistance_onset_day"],
                               rtol=1e-10)


@pytest.fixture(scope="module")
def spread_idata():
    # 4 chains x 10 draws, LAMBDA different in every draw
    lam = np.linspace(0.01, 0.04, 40).reshape(4, 10)
    one = np.stack([param_vector(o) for o in SET_B])
    indiv = np.broadcast_to(one, (4, 10) + one.shape).copy()
    indiv[..., cm.PARAMETERS.index("LAMBDA")] = lam[:, :, None]
    return make_idata(indiv), lam.ravel()


def test_thinning_reproducible_and_uses_the_selected_draws(spread_idata, drivers):
    idata, lam = spread_idata
    t0 = est.patient_estimands(idata, drivers, max_draws=20, seed=0, batch=BATCH)
    again = est.patient_estimands(idata, drivers, max_draws=20, seed=0, batch=BATCH)
    other = est.patient_estimands(idata, drivers, max_draws=20, seed=1, batch=BATCH)
    pd.testing.assert_frame_equal(t0, again)
    assert (t0["n_draws"] == 20).all()
    draws, subjects, sel = est.derived_draws(idata, drivers, max_draws=20, seed=0, batch=BATCH)
    _, _, sel1 = est.derived_draws(idata, drivers, max_draws=20, seed=1, batch=BATCH)
    assert set(sel) != set(sel1) and not t0.equals(other)
    assert subjects == SUBJECTS and len(sel) == 20 and len(set(sel)) == 20
    onsets = [reference({**SET_B[0], "LAMBDA": float(lam[j])}, drivers, 0)["resistance_onset_day"]
              for j in sel]
    # per-draw values in the selected order, across the three batches (the last one padded)
    np.testing.assert_allclose(draws["resistance_onset_day"][:, 0], onsets, rtol=1e-10)
    np.testing.assert_allclose(t0["resistance_onset_day_median"].iloc[0], np.median(onsets),
                               rtol=1e-10)


def test_default_batch_size():
    # about 2**21 grid cells per batch, at least one draw
    assert est.default_batch(120, 730) == 2 ** 21 // (120 * 730) == 23
    assert est.default_batch(4, 400) == 1310
    assert est.default_batch(10_000, 10_000) == 1


def test_level_changes_interval_columns(spread_idata, drivers):
    idata, _ = spread_idata
    t = est.patient_estimands(idata, drivers, max_draws=20, level=0.5, batch=BATCH)
    assert {"resistance_onset_day_q25", "resistance_onset_day_q75"} <= set(t.columns)
    assert est.interval_columns(level=0.95) == ("resistance_onset_day_q2.5",
                                                "resistance_onset_day_q97.5")


def test_patient_estimands_errors(drivers):  # all raise before anything is compiled
    idata = make_idata(constant_indiv(SET_A))
    with pytest.raises(ModelError, match=r"no variable 'theta'.*available.*indiv"):
        est.patient_estimands(idata, drivers, var="theta")
    short = {k: v[:3] for k, v in drivers.items()}
    with pytest.raises(ModelError, match=r"4 subjects.*Fix"):
        est.patient_estimands(idata, short)
    with pytest.raises(ModelError, match=r"lack \['chemo'\]"):
        est.patient_estimands(idata, {k: v for k, v in drivers.items() if k != "chemo"})
    bad = constant_indiv(SET_A)
    bad[0, 3, 1, cm.PARAMETERS.index("BASE")] = -1.0
    with pytest.raises(ModelError, match=r"BASE.*must be > 0"):
        est.patient_estimands(make_idata(bad), drivers)
    part = az.from_dict(posterior={"indiv": constant_indiv(SET_A)[..., :5]},
                        coords={"subject": SUBJECTS, "param": list(cm.PARAMETERS[:5])},
                        dims={"indiv": ["subject", "param"]})
    with pytest.raises(ModelError, match=r"lacks parameters.*LAMBDA"):
        est.patient_estimands(part, drivers)


# --------------------------------------------------------------------------------------------
# quantiles with NaN = +inf
# --------------------------------------------------------------------------------------------

def test_quantile_inf_matches_numpy_on_finite_data():
    x = np.random.default_rng(0).normal(size=(37, 5))
    q = [0.05, 0.25, 0.5, 0.9, 1.0]
    np.testing.assert_allclose(est.quantile_inf(x, q), np.quantile(x, q, axis=0), rtol=1e-13)


def test_quantile_inf_nan_is_beyond_everything():
    x = np.array([3.0, np.nan, 1.0, 2.0, np.nan])  # sorted: 1 2 3 inf inf
    got = est.quantile_inf(x, [0.0, 0.25, 0.5, 0.55, 0.75, 1.0])
    np.testing.assert_array_equal(got, [1.0, 2.0, 3.0, np.inf, np.inf, np.inf])
    # dropping the NaN would have given a median of 2: the censored draws are not lost
    assert est.quantile_inf([np.nan] * 3, 0.5) == np.inf


# --------------------------------------------------------------------------------------------
# synergy
# --------------------------------------------------------------------------------------------

def test_synergy_normal_draws():
    rng = np.random.default_rng(42)
    psi = rng.normal(0.5, 0.1, size=(4, 1000))
    idata = az.from_dict(posterior={"PSI": psi, "OMEGA": np.abs(psi)})
    s = est.synergy(idata)
    json.dumps(s)
    assert s["n_draws"] == 4000 and s["name"] == "PSI"
    # 4000 draws of N(0.5, 0.1): P(PSI <= 0) = Phi(-5) ~ 2.9e-7 per draw
    assert s["p_gt_0"] == 1.0 and s["p_lt_0"] == 0.0
    assert abs(s["p_gt_0"] - (1 - norm.cdf(-5))) < 1e-6
    assert abs(s["mean"] - 0.5) < 4 * 0.1 / math.sqrt(4000)
    assert abs(s["sd"] - 0.1) < 0.005
    assert abs(s["q5"] - (0.5 + 0.1 * norm.ppf(0.05))) < 0.01
    assert abs(s["q95"] - (0.5 + 0.1 * norm.ppf(0.95))) < 0.01
    assert s["q5"] < s["median"] < s["q95"]
    centred = est.synergy(az.from_dict(posterior={"PSI": psi - 0.5}))
    assert abs(centred["p_gt_0"] - 0.5) < 0.03
    assert centred["p_gt_0"] + centred["p_lt_0"] == 1.0


def test_synergy_exact_fractions_and_errors():
    idata = make_idata(constant_indiv(SET_A)[:, :2],
                       PSI=np.array([[-1.0, 0.0], [1.0, 2.0]]))
    s = est.synergy(idata)
    assert (s["p_gt_0"], s["p_lt_0"], s["mean"], s["median"]) == (0.5, 0.25, 0.5, 0.5)
    assert all(isinstance(v, float) for k, v in s.items() if k not in ("name", "n_draws"))
    with pytest.raises(ModelError, match=r"no variable 'SYN'.*\['PSI', 'indiv'\]"):
        est.synergy(idata, "SYN")
    with pytest.raises(ModelError, match=r"not a population scalar"):
        est.synergy(idata, "indiv")


# --------------------------------------------------------------------------------------------
# population_onset
# --------------------------------------------------------------------------------------------

def test_population_onset_known_table():
    t = pd.DataFrame({"subject": list("abcde"),
                      "resistance_onset_day_median": [0.0, 10.0, 20.0, 30.0, np.nan],
                      "p_primary_resistance": [0.8, 0.1, 0.0, 0.0, 0.0],
                      "p_no_regrowth": [0.0, 0.0, 0.1, 0.2, 0.7]})
    p = est.population_onset(t)
    json.dumps(p)
    # sorted medians 0 10 20 30 inf (type 7): q5 at index 0.2, q95 at index 3.8 (-> inf)
    assert p == dict(n_subjects=5, median=20.0, q5=2.0, q25=10.0, q75=30.0, q95=math.inf,
                     frac_primary_resistance=0.2, frac_no_regrowth=0.2,
                     mean_p_primary_resistance=pytest.approx(0.18),
                     mean_p_no_regrowth=pytest.approx(0.2))


def test_population_onset_from_estimands(table_a):
    p = est.population_onset(table_a)
    assert p["n_subjects"] == 4
    assert p["frac_primary_resistance"] == 0.25 and p["frac_no_regrowth"] == 0.25
    assert p["q95"] == math.inf and p["q5"] < p["median"]
    with pytest.raises(DataError, match=r"resistance_onset_day_median"):
        est.population_onset(table_a.drop(columns="resistance_onset_day_median"))


# --------------------------------------------------------------------------------------------
# coverage
# --------------------------------------------------------------------------------------------

def test_coverage_known_case():
    t = pd.DataFrame({"subject": list("abcdefg"),
                      "resistance_onset_day_q5": [10, 10, 10, 10, 0, 50, 1],
                      "resistance_onset_day_q95": [20, 20, np.inf, 30, 5, np.inf, 2]})
    truth = {"a": 15.0, "b": 25.0, "c": np.nan, "d": np.nan, "e": 0.0, "f": np.inf}  # g: none
    c = est.coverage(t, truth)
    json.dumps(c)
    assert c == dict(coverage=4 / 6, n=6, n_covered=4, level=0.9, n_true_no_regrowth=3,
                     missed=["b", "d"])
    with pytest.raises(DataError, match=r"not in the table.*\['zz'\]"):
        est.coverage(t, {**truth, "zz": 1.0})
    with pytest.raises(DataError, match=r"resistance_onset_day_q10.*level=0.8"):
        est.coverage(t, truth, level=0.8)
    assert math.isnan(est.coverage(t, {})["coverage"])


def test_coverage_of_the_true_parameters(table_a, drivers):
    truth = {s: reference(o, drivers, i)["resistance_onset_day"]
             for i, (s, o) in enumerate(zip(SUBJECTS, SET_A))}
    assert est.coverage(table_a, truth)["coverage"] == 1.0
    # the intervals have zero width: shifting the finite truths leaves only the NaN one covered
    shifted = {s: v + 1.0 for s, v in truth.items()}
    c = est.coverage(table_a, shifted)
    assert (c["n_covered"], c["missed"]) == (1, ["S1", "S2", "S4"])


# ---- can the design identify PSI? -------------------------------------------------------------
def test_exposure_groups_from_flags_and_drivers():
    from pkpd.fit.estimands import exposure_groups
    a = np.array([1, 1, 0, 0, 1], bool)
    d = np.array([1, 0, 1, 0, 1], bool)
    assert exposure_groups(a, d) == {"both": 2, "anlotinib_only": 1, "durvalumab_only": 1,
                                     "neither": 1}
    # driver arrays: exposed where any step is positive
    A = np.zeros((5, 4))
    A[a, 2] = 0.3
    D = np.zeros((5, 4))
    D[d, 0] = 0.9
    assert exposure_groups(A, D) == exposure_groups(a, d)
    with pytest.raises(DataError, match="4 anlotinib flags against 5 durvalumab"):
        exposure_groups(a[:4], d)


@pytest.mark.parametrize("groups, status, phrase", [
    ({"both": 120}, "confounded", "KAA only by their priors"),
    ({"both": 60, "durvalumab_only": 60}, "confounded", "anlotinib without durvalumab identif"),
    ({"both": 40, "anlotinib_only": 40}, "weak", "on/off course of VEGF"),
    ({"both": 40, "anlotinib_only": 40, "durvalumab_only": 40}, "identified", None),
    ({"anlotinib_only": 40, "durvalumab_only": 40}, "absent", "posterior is its prior"),
])
def test_synergy_identification(groups, status, phrase):
    from pkpd.fit.estimands import synergy_identification
    out = synergy_identification(groups)
    assert out["status"] == status
    assert (out["note"] is None) if phrase is None else (phrase in out["note"])
