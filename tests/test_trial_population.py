"""Virtual populations (pkpd.trial.population).

Oracles: the documented numbers of models/populations/es_sclc.toml read here with tomllib and
turned into distributions with scipy.stats (truncated normals, and for the correlated pairs the
exact marginal CDF and moments by quadrature over the first variable); the closed forms of the
regimen grammar (pkpd.dosing.regimen.mosteller_bsa, cockcroft_gault_crcl, calvert_dose_mg).
Monte-Carlo tolerances are 4 standard errors computed from n.
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats

from pkpd.dosing import parse_regimen
from pkpd.dosing.regimen import (
    GFR_CAP_ML_MIN,
    calvert_dose_mg,
    cockcroft_gault_crcl,
    mosteller_bsa,
)
from pkpd.errors import DataError, ModelError
from pkpd.trial.population import (
    BASE_COLUMNS,
    COVARIATE_UNITS,
    Population,
    list_populations,
    populations_dir,
)

N = 200_000
TOML = populations_dir() / "es_sclc.toml"


@pytest.fixture(scope="module")
def doc():
    return tomllib.loads(TOML.read_text())


@pytest.fixture(scope="module")
def big():
    return Population.load("es_sclc").draw(N, np.random.default_rng(20261206))


def _quantile_tol(p, n, pdf_at_q):
    """4 standard errors of the sample p-quantile: sqrt(p(1-p)/n) / f(q)."""
    return 4.0 * math.sqrt(p * (1 - p) / n) / pdf_at_q


def _check_quantiles(x, dist, ps=(0.1, 0.5, 0.9)):
    x = np.asarray(x)
    for p in ps:
        q = dist.ppf(p)
        assert abs(np.quantile(x, p) - q) < _quantile_tol(p, x.size, dist.pdf(q)), (p, q)


def _tn(mu, sd, lo, hi):
    return stats.truncnorm((lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd)


class _Pair:
    """Exact law of (X, Y): X = mx + sx*Zx, Zx truncated to [xlo, xhi]; Y | Zx normal with mean
    my + rho*sy*Zx and sd sy*sqrt(1-rho^2), truncated to [ylo, yhi] (the documented model)."""

    def __init__(self, mx, sx, xlo, xhi, my, sy, ylo, yhi, rho):
        self.zx = _tn(0.0, 1.0, (xlo - mx) / sx, (xhi - mx) / sx)
        self.mx, self.sx, self.my, self.sy, self.rho = mx, sx, my, sy, rho
        self.ylo, self.yhi = ylo, yhi
        self.csd = sy * math.sqrt(1 - rho**2)

    def _cond(self, z):
        cm = self.my + self.rho * self.sy * z
        return _tn(cm, self.csd, self.ylo, self.yhi)

    def _e(self, f):
        lo, hi = self.zx.support()
        return integrate.quad(lambda z: f(z) * self.zx.pdf(z), lo, hi, limit=200)[0]

    def y_cdf(self, y):
        return self._e(lambda z: self._cond(z).cdf(y))

    def y_pdf(self, y):
        return self._e(lambda z: self._cond(z).pdf(y))

    def y_quantile(self, p):
        return optimize.brentq(lambda y: self.y_cdf(y) - p, self.ylo + 1e-9, self.yhi - 1e-9)

    def corr(self):
        ex = self.mx + self.sx * self.zx.mean()
        vx = self.sx**2 * self.zx.var()
        ey = self._e(lambda z: self._cond(z).mean())
        ey2 = self._e(lambda z: self._cond(z).var() + self._cond(z).mean() ** 2)
        exy = self._e(lambda z: (self.mx + self.sx * z) * self._cond(z).mean())
        return (exy - ex * ey) / math.sqrt(vx * (ey2 - ey**2))


def _body_pair(doc, sex):
    b, lim = doc["body"][sex], doc["body"]["limits"]
    return _Pair(math.log(b["weight_median_kg"]), b["weight_sd_log"],
                 math.log(lim["weight_min_kg"]), math.log(lim["weight_max_kg"]),
                 math.log(b["height_median_cm"]), b["height_sd_log"],
                 math.log(lim["height_min_cm"]), math.log(lim["height_max_cm"]),
                 b["corr_log_weight_log_height"])


def _lab_pair(doc):
    a, ld = doc["albumin"], doc["ldh"]
    return _Pair(a["median_g_l"], a["sd_g_l"], a["min_g_l"], a["max_g_l"],
                 math.log(ld["median_u_l"]), ld["sd_log"], math.log(ld["min_u_l"]),
                 math.log(ld["max_u_l"]), doc["albumin_ldh"]["corr"])


def _corr_tol(r, n):
    return 4.0 * (1 - r**2) / math.sqrt(n)


# ------------------------------------------------------------------------------------------
# the documented file
# ------------------------------------------------------------------------------------------


def test_every_number_in_the_default_population_has_a_tagged_source(doc):
    def walk(table, path):
        numbers = {k for k, v in table.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for k in numbers:
            src = table.get("source", {}).get(k, "")
            assert any(t in src for t in ("[F]", "[F2]", "[D]", "[R]")), f"{path}.{k}"
        for k, v in table.items():
            if isinstance(v, dict) and k != "source":
                walk(v, f"{path}.{k}")

    walk(doc, "es_sclc")
    assert "es_sclc" in list_populations()


def test_frame_has_the_regimen_and_card_covariate_names_with_units(big):
    assert list(big.columns) == ["ID", "SEX", "AGE", "ECOG", "WT", "HT", "BSA", "SCR", "CRCL",
                                 "GFR", "ALB", "LDH"]
    assert big.attrs["units"]["WT"] == "kg" and big.attrs["units"]["CRCL"] == "mL/min"
    assert set(big.attrs["units"]) <= set(COVARIATE_UNITS)
    assert big["ID"].tolist()[:3] == [1, 2, 3] and big["ID"].is_unique
    assert set(np.unique(big["SEX"])) == {0.0, 1.0} and set(np.unique(big["ECOG"])) == {0.0, 1.0}
    assert all(big[c].dtype == np.float64 for c in big.columns if c != "ID")


# ------------------------------------------------------------------------------------------
# marginals, correlations, closed forms
# ------------------------------------------------------------------------------------------


def test_sex_and_ecog_proportions_match_within_monte_carlo_error(big, doc):
    for col, p in (("SEX", doc["sex"]["female_fraction"]), ("ECOG", doc["ecog"]["ps1_fraction"])):
        assert abs(big[col].mean() - p) < 4 * math.sqrt(p * (1 - p) / N), col


def test_age_albumin_quantiles_match_the_truncated_normals(big, doc):
    a = doc["age"]
    _check_quantiles(big["AGE"], _tn(a["median_years"], a["sd_years"], a["min_years"],
                                     a["max_years"]))
    al = doc["albumin"]
    _check_quantiles(big["ALB"], _tn(al["median_g_l"], al["sd_g_l"], al["min_g_l"],
                                     al["max_g_l"]))
    assert big["AGE"].between(a["min_years"], a["max_years"]).all()
    # the documented anchor: 19.4% of CASPIAN patients were >= 70 years
    assert abs((big["AGE"] >= 70).mean() - 0.194) < 0.005


def test_weight_and_height_quantiles_per_sex(big, doc):
    for code, sex in ((0.0, "male"), (1.0, "female")):
        sub = big[big["SEX"] == code]
        pair = _body_pair(doc, sex)
        log_wt = _tn(pair.mx, pair.sx, pair.mx + pair.sx * pair.zx.a, pair.mx + pair.sx * pair.zx.b)
        _check_quantiles(np.log(sub["WT"]), log_wt)
        for p in (0.1, 0.5, 0.9):
            q = pair.y_quantile(p)
            tol = _quantile_tol(p, len(sub), pair.y_pdf(q))
            assert abs(np.quantile(np.log(sub["HT"]), p) - q) < tol, (sex, p)
    # the documented anchor: pooled median weight ~ 69.4 kg (Abegesah 2025 reference)
    assert abs(big["WT"].median() - 69.4) < 0.5


def test_ldh_quantiles_match_the_exact_marginal(big, doc):
    pair = _lab_pair(doc)
    for p in (0.1, 0.5, 0.9):
        q = pair.y_quantile(p)
        tol = _quantile_tol(p, N, pair.y_pdf(q))
        assert abs(np.quantile(np.log(big["LDH"]), p) - q) < tol, p


def test_correlations_have_the_documented_sign_and_size(big, doc):
    pair = _lab_pair(doc)
    r = np.corrcoef(big["ALB"], np.log(big["LDH"]))[0, 1]
    r0 = pair.corr()
    assert r0 < 0 and abs(r - r0) < _corr_tol(r0, N)
    assert abs(r0 - doc["albumin_ldh"]["corr"]) < 0.01  # truncation attenuates only a little
    for code, sex in ((0.0, "male"), (1.0, "female")):
        sub = big[big["SEX"] == code]
        pair = _body_pair(doc, sex)
        r, r0 = np.corrcoef(np.log(sub["WT"]), np.log(sub["HT"]))[0, 1], pair.corr()
        assert r0 > 0 and abs(r - r0) < _corr_tol(r0, len(sub)), sex
    # women are lighter and shorter; creatinine rises with age; CrCL falls with age
    assert np.corrcoef(big["SEX"], big["WT"])[0, 1] < -0.2
    assert np.corrcoef(big["AGE"], np.log(big["SCR"]))[0, 1] > 0
    assert np.corrcoef(big["AGE"], big["CRCL"])[0, 1] < -0.2


def test_creatinine_depends_on_sex_and_age_as_documented(big, doc):
    c = doc["creatinine"]
    lo, hi = math.log(c["min_mg_dl"]), math.log(c["max_mg_dl"])
    for code, med in ((0.0, c["median_male_mg_dl"]), (1.0, c["median_female_mg_dl"])):
        for age in (53.0, 63.0, 73.0):
            sub = big[(big["SEX"] == code) & ((big["AGE"] - age).abs() < 1.0)]
            mu = math.log(med) + c["age_slope_log_per_year"] * (age - c["reference_age_years"])
            dist = _tn(mu, c["sd_log"], lo, hi)
            q = dist.ppf(0.5)
            # the +-1 year stratum smears mu by at most slope * 1 = 0.004 (symmetric)
            tol = _quantile_tol(0.5, len(sub), dist.pdf(q)) + c["age_slope_log_per_year"]
            assert abs(np.median(np.log(sub["SCR"])) - q) < tol, (code, age)


def test_bsa_and_crcl_equal_the_closed_forms_row_by_row(big):
    for _, row in big.head(500).iterrows():
        assert row["BSA"] == pytest.approx(mosteller_bsa(row["WT"], row["HT"]), rel=1e-13)
        crcl = cockcroft_gault_crcl(row["AGE"], row["WT"], row["SCR"], row["SEX"] == 1.0)
        assert row["CRCL"] == pytest.approx(crcl, rel=1e-13)
        assert row["GFR"] == row["CRCL"]


# ------------------------------------------------------------------------------------------
# reproducibility
# ------------------------------------------------------------------------------------------


def test_same_seed_same_patients_and_chunk_invariance():
    pop = Population.load("es_sclc")
    a = pop.draw(1000, np.random.default_rng(7))
    pd.testing.assert_frame_equal(a, pop.draw(1000, 7))
    g = np.random.default_rng(7)
    chunks = pd.concat([pop.draw(300, g), pop.draw(700, g, first_id=301)], ignore_index=True)
    pd.testing.assert_frame_equal(a, chunks, check_exact=True)
    assert not a.equals(pop.draw(1000, 8))


def test_load_from_a_toml_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(TOML.read_text().replace("female_fraction = 0.304",
                                             "female_fraction = 0.5"))
    pop = Population.load(path)
    assert pop.spec["sex.female_fraction"] == 0.5
    assert abs(pop.draw(20_000, 1)["SEX"].mean() - 0.5) < 4 * math.sqrt(0.25 / 20_000)


# ------------------------------------------------------------------------------------------
# per-patient dose resolution
# ------------------------------------------------------------------------------------------


def test_mg_m2_and_calvert_doses_resolve_per_patient_from_drawn_covariates():
    pts = Population.load("es_sclc").draw(300, np.random.default_rng(3))
    eto = parse_regimen("100 mg/m2 IV 60 min D1-3 Q21D x4")
    carbo = parse_regimen("AUC 5 IV 60 min D1 Q21D x4")
    capped = 0
    for _, row in pts.iterrows():
        cov = row.to_dict()
        bsa = math.sqrt(row["WT"] * row["HT"] / 3600.0)
        e = eto.doses(cov).amount_mg
        assert e.size == 12 and np.allclose(e, 100.0 * bsa, rtol=1e-12)
        gfr = min(row["GFR"], GFR_CAP_ML_MIN)
        capped += row["GFR"] > GFR_CAP_ML_MIN
        c = carbo.doses(cov).amount_mg
        assert c.size == 4 and np.allclose(c, 5.0 * (gfr + 25.0), rtol=1e-12)
        assert c[0] == pytest.approx(calvert_dose_mg(5, gfr), rel=1e-12)
    doses = pts.apply(lambda r: eto.doses(r.to_dict()).amount_mg[0], axis=1)
    assert doses.nunique() == len(pts)  # really per patient, not one 1.8 m2 patient
    assert 0 < capped < len(pts)  # the draw reaches the 125 mL/min cap for some patients


def test_drawn_covariates_plug_into_card_covariate_effects():
    from pkpd.cards import load_card

    card = load_card("durvalumab")
    row = Population.load("es_sclc").draw(1, 11).iloc[0].to_dict()
    typ = card.typical_params(row)
    ref = card.typical_params({})
    expect = ref["CL"] * (row["WT"] / 69.4) ** 0.338 * (row["ALB"] / 39.0) ** -0.589 \
        * (row["CRCL"] / 85.66) ** 0.136 * (row["LDH"] / 247.0) ** 0.0515
    if row["SEX"] == 1.0:
        expect *= 1 - 0.161
    if row["ECOG"] >= 1:
        expect *= 1 - 0.05
    assert typ["CL"] == pytest.approx(expect, rel=1e-6)


# ------------------------------------------------------------------------------------------
# user tables
# ------------------------------------------------------------------------------------------


def _user_table(m=10):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": np.arange(101, 101 + m), "sex": ["M", "F"] * (m // 2),
        "age": rng.uniform(40, 80, m).round(1), "wt": rng.uniform(45, 110, m).round(1),
        "ht": rng.uniform(150, 190, m).round(0), "scr": rng.uniform(0.6, 1.4, m).round(2),
        "alb": rng.uniform(28, 46, m).round(0), "ldh": rng.uniform(150, 900, m).round(0),
        "smoker": ["yes", "no"] * (m // 2),
    })


def test_a_user_table_is_resampled_row_wise_keeping_the_joint_structure(tmp_path):
    src = _user_table()
    pop = Population.from_table(src)
    n = 20_000
    out = pop.draw(n, np.random.default_rng(5))
    rows = out["SOURCE_ROW"].to_numpy() - 1
    for col in ("AGE", "WT", "HT", "SCR", "ALB", "LDH"):
        assert np.array_equal(out[col].to_numpy(), src[col.lower()].to_numpy()[rows]), col
    assert np.array_equal(out["SOURCE_ID"].to_numpy(), src["id"].to_numpy()[rows])
    assert np.array_equal(out["SMOKER"].to_numpy(), src["smoker"].to_numpy()[rows])
    assert np.array_equal(out["SEX"].to_numpy(), np.where(src["sex"] == "F", 1.0, 0.0)[rows])
    np.testing.assert_allclose(out["BSA"], np.sqrt(out["WT"] * out["HT"] / 3600), rtol=1e-13)
    counts = np.bincount(rows, minlength=len(src))
    p = 1 / len(src)
    assert np.all(np.abs(counts / n - p) < 4 * math.sqrt(p * (1 - p) / n))
    # the same table from a CSV file, same seed: the same patients
    path = tmp_path / "cov.csv"
    src.to_csv(path, index=False)
    again = Population.from_table(path).draw(n, np.random.default_rng(5))
    pd.testing.assert_frame_equal(out.drop(columns="SMOKER"), again.drop(columns="SMOKER"),
                                  check_dtype=False)


def test_a_table_with_its_own_bsa_and_crcl_keeps_them():
    src = _user_table().assign(bsa=1.9, crcl=77.0)
    out = Population.from_table(src).draw(50, 1)
    assert (out["BSA"] == 1.9).all() and (out["CRCL"] == 77.0).all() and (out["GFR"] == 77.0).all()


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.drop(columns="wt"), "no WT column"),
    (lambda d: d.assign(scr=d["scr"].astype(object).where(d.index != 2, "n/a")),
     "row 3 (ID 103) column SCR: SCR must be a number in mg/dL; got 'n/a'"),
    (lambda d: d.assign(scr=d["scr"].where(d.index != 0, 88.0)), "88.4"),
    (lambda d: d.assign(ht=d["ht"].where(d.index != 4, 1.72)), "metres"),
    (lambda d: d.assign(alb=d["alb"].where(d.index != 1, 3.9)), "g/dL"),
    (lambda d: d.assign(wt=d["wt"].where(d.index != 1, 350.0)), "lb"),
    (lambda d: d.assign(sex=["1", "2"] * 5), "row 2 (ID 102) column SEX"),
    (lambda d: d.assign(age=d["age"].where(d.index != 5, np.nan)), "row 6"),
    (lambda d: d.iloc[:0], "no rows"),
    (lambda d: d.assign(WT=d["wt"]), "same covariate"),
])
def test_bad_user_tables_are_refused_with_row_column_value_and_fix(mutate, needle):
    with pytest.raises(DataError) as e:
        Population.from_table(mutate(_user_table()))
    assert needle in str(e.value)
    assert "Fix:" in str(e.value)


def test_required_columns_can_be_relaxed():
    src = _user_table().drop(columns=["alb", "ldh"])
    out = Population.from_table(src, required=("SEX", "AGE", "WT", "HT", "SCR")).draw(10, 0)
    assert "ALB" not in out.columns and "CRCL" in out.columns
    assert set(BASE_COLUMNS) > {"SEX", "AGE"}


def test_bad_draw_arguments_and_bad_population_files(tmp_path):
    pop = Population.load("es_sclc")
    for n in (0, -5, 2.5, True):
        with pytest.raises(DataError, match="positive integer"):
            pop.draw(n, 1)
    with pytest.raises(DataError, match="Generator"):
        pop.draw(10, "seed")
    with pytest.raises(ModelError, match="unknown population 'nope'.*es_sclc"):
        Population.load("nope")
    with pytest.raises(DataError, match="does not exist"):
        Population.from_table(tmp_path / "missing.csv")
    text = TOML.read_text()
    cases = {
        "no_source": (text.replace('sd_years = "CASPIAN', 'sd_yearsX = "CASPIAN'),
                      r"\[age\] sd_years = 8.1 has no source"),
        "bad_fraction": (text.replace("female_fraction = 0.304", "female_fraction = 1.3"),
                         "must be a fraction"),
        "bad_corr": (text.replace("corr = -0.25", "corr = 1.0"), "correlation in"),
        "median_outside": (text.replace("median_g_l = 39.0", "median_g_l = 70.0"),
                           "strictly between"),
        "missing_table": (text.replace("[ldh]", "[ldhx]").replace("[ldh.", "[ldhx."),
                          r"missing \[ldh\] table"),
        "not_toml": ("this is = = not toml", "not valid TOML"),
    }
    for name, (body, pattern) in cases.items():
        p = tmp_path / f"{name}.toml"
        p.write_text(body)
        with pytest.raises(ModelError, match=pattern):
            Population.load(p)
