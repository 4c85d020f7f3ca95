"""Simulation-based calibration (pkpd.design.sbc): prior draws against the priors' CDFs (scipy),
the simulated trial carries the drawn IIV and residual SDs, the ECDF test accepts uniform PITs
and rejects shifted ones, and a design with ``truths = "prior"`` runs, resumes and summarises
(with a stand-in fit whose posterior is exact, so its PITs are uniform by construction)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pkpd.design import compare_designs, fit_raw, load_design, run_design
from pkpd.design import run as drun
from pkpd.design.sbc import SBC_DRAWS, ecdf_band, prior_draw, sbc_columns, summarise_sbc
from pkpd.errors import PkpdError, SpecError
from pkpd.fit.model import scipy_prior
from pkpd.fit.recovery import population_truth, simulate_data
from pkpd.fit.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SBC = ROOT / "fits" / "designs" / "sbc_three_arm_40.toml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(fit_raw(load_design(SBC), 0, 0))


def test_prior_draws_follow_each_prior(spec):
    """1000 draws per parameter against the prior's CDF (Kolmogorov-Smirnov, p > 0.001): the
    thetas, the omega SDs and the residual SDs; PSI against its normal prior truncated at -1
    (synergy = "kio_m")."""
    draws = pd.DataFrame([prior_draw(spec, s)[1] for s in range(1000)])
    assert list(draws.columns) == spec.population_names
    priors = {t.name: t.prior for t in spec.thetas.values()}
    priors.update({b.names[0]: b.sd_priors[0] for b in spec.omegas})
    priors.update({spec.residual.names[r]: p for r, p in spec.residual.priors.items()})
    for name, prior in priors.items():
        d = scipy_prior(prior)
        if name == "PSI":
            assert spec.synergy == "kio_m" and draws[name].min() > -1.0
            c = d.cdf(-1.0)
            cdf = lambda x, d=d, c=c: (d.cdf(x) - c) / (1 - c)  # noqa: E731
        else:
            cdf = d.cdf
        assert stats.kstest(draws[name], cdf).pvalue > 1e-3, name


def test_population_truth_reports_the_drawn_omegas_and_residuals(spec):
    """population_truth (what the recovery checks compare with) reads the simulated trial's
    omega and residual overrides, in the reported scale of each name."""
    sim, pop = prior_draw(spec, 11)
    typ = {k: float(v["value"]) for k, v in spec.card.raw["parameters"].items()}
    typ.update(sim["truth"])
    data = SimpleNamespace(meta={"truth_population": typ, "iiv": list(sim["omega"]),
                                 "omega_sd": sim["omega"], "residual": sim["residual"]})
    truth = population_truth(spec, data)
    assert set(truth) == set(pop)
    for k, v in pop.items():
        assert truth[k] == pytest.approx(v, rel=1e-12), k


@pytest.mark.slow
def test_replicate_simulates_with_its_drawn_truth(spec):
    """(slow: the trial's PK drivers compile, about a minute.) fit_raw puts the draw into
    [simulate]; the simulated trial's population truth (what the recovery checks compare with)
    equals the draw, omegas and residual SDs included; a new replicate draws anew."""
    d = load_design(SBC)
    raw = fit_raw(d, 0, 3)
    sim, pop = prior_draw(load_spec(raw), raw["simulate"]["seed"])
    assert raw["simulate"]["omega"] == sim["omega"]
    assert raw["simulate"]["residual"] == sim["residual"]
    raw["simulate"]["arms"] = {"triplet": 3}
    raw["simulate"]["days"] = 84
    small = load_spec(raw)
    data = simulate_data(small)
    assert data.meta["omega_sd"] == sim["omega"]
    truth = population_truth(small, data)
    assert set(truth) == set(pop)
    for k, v in pop.items():
        assert truth[k] == pytest.approx(v, rel=1e-12), k
    assert prior_draw(spec, fit_raw(d, 0, 4)["simulate"]["seed"])[1]["PSI"] != pop["PSI"]


def test_simulate_overrides_are_checked():
    raw = fit_raw(load_design(SBC), 0, 0)
    raw["simulate"]["omega"] = {"KAA": 0.3}
    with pytest.raises(SpecError, match="KAA.*not among the IIV parameters"):
        simulate_data(load_spec(raw))
    raw["simulate"]["omega"] = {"KG": -0.3}
    with pytest.raises(SpecError, match="KG = -0.3 must be an SD"):
        simulate_data(load_spec(raw))
    raw["simulate"]["omega"] = {}
    raw["simulate"]["residual"] = {"exp_sd": 0.1}
    with pytest.raises(SpecError, match="unknown key.*exp_sd"):
        simulate_data(load_spec(raw))


def test_sbc_summary_accepts_uniform_and_flags_shifted_pits():
    """60 uniform PITs stay in the simultaneous 95% band and give coverage within 2 SEs of
    0.9; PITs cubed (a posterior shifted up: the truth sits low in it) leave the band and
    are flagged. The simultaneous band is wider than the pointwise binomial one."""
    rng = np.random.default_rng(4)
    n = 60
    u = rng.uniform(size=n)
    rows = {}
    for name, pit in (("good", u), ("bad", u ** 3)):
        rows[f"pit_{name}"] = pit
        rows[f"rank_{name}"] = np.minimum((pit * (SBC_DRAWS + 1)).astype(int), SBC_DRAWS)
        rows[f"covered_{name}"] = (pit >= 0.05) & (pit <= 0.95)
    s = summarise_sbc(pd.DataFrame(rows), 0.9)
    by = {r["parameter"]: r for r in s["parameters"]}
    assert by["good"]["in_band"] and by["good"]["chi2_p"] > 1e-3
    assert abs(by["good"]["coverage"] - 0.9) < 2 * np.sqrt(0.09 / n)
    assert not by["bad"]["in_band"] and by["bad"]["chi2_p"] < 1e-3
    assert len(s["flags"]) >= 1 and all(f.startswith("bad:") for f in s["flags"])
    grid, lo, hi = ecdf_band(n)
    k = 25                                                  # at x = 0.5
    pw_lo, pw_hi = stats.binom(n, 0.5).ppf([0.025, 0.975]) / n
    assert lo[k] < pw_lo and hi[k] > pw_hi


def _exact_result(spec, pop, seed):
    """A stand-in fit whose 'posterior' draws make the truth's PIT uniform: each parameter's
    draws are the truth plus N(0, 1) noise shifted by a uniform quantile."""
    rng = np.random.default_rng(seed)
    post = {}
    for name in spec.population_names:
        shift = stats.norm.ppf(rng.uniform())
        post[name] = SimpleNamespace(values=pop[name] + shift + rng.normal(0, 1, (2, 200)))
    summ = pd.DataFrame({"parameter": spec.population_names, "r_hat": 1.0, "ess_bulk": 400.0})
    return SimpleNamespace(idata=SimpleNamespace(posterior=post), summary=summ,
                           record={"n_subjects": 9, "n_obs": 30,
                                   "timing": {"sampling_s": 0.1, "batches": []}})


def test_sbc_design_runs_resumes_and_summarises(tmp_path, monkeypatch):
    text = SBC.read_text().replace('base = "bases/oc.toml"',
                                   f'base = "{SBC.parent / "bases" / "oc.toml"}"')
    text = text.replace("triplet = 40, durvalumab_ep = 40, anlotinib_ep = 40",
                        "triplet = 3, durvalumab_ep = 3, anlotinib_ep = 3")
    design = tmp_path / "sbc.toml"
    design.write_text(text)
    calls = []

    def fake_fit(spec, where):
        calls.append(spec.raw["simulate"]["seed"])
        pop = prior_draw(spec, spec.raw["simulate"]["seed"])[1]
        return _exact_result(spec, pop, spec.raw["sampler"]["seed"])

    monkeypatch.setattr(drun, "_fit", fake_fit)
    out = tmp_path / "out"
    s = run_design(design, out=out, replicates=20, progress=False)
    res = pd.read_csv(out / "results.csv")
    assert len(res) == 20 and len(calls) == 20
    assert s["kind"] == "sbc" and s["n"] == 20
    assert [r["parameter"] for r in s["parameters"]] == load_spec(
        fit_raw(load_design(design), 0, 0)).population_names
    assert res["truth"].tolist() == pytest.approx(res["truth_PSI"].tolist())
    assert (res["covered"] == res["covered_PSI"]).all()
    assert res["rank_KG"].between(0, SBC_DRAWS).all()
    assert res["pit_KG"].nunique() > 15
    assert (out / "sbc.png").stat().st_size > 0
    assert "Simulation-based calibration" in (out / "summary.md").read_text()
    run_design(design, out=out, replicates=20, progress=False)       # resume: nothing refitted
    assert len(calls) == 20
    with pytest.raises(PkpdError, match="simulation-based calibration"):
        compare_designs([out])


def test_sbc_columns_rank_and_pit():
    post = {"A": SimpleNamespace(values=np.arange(1000.0).reshape(2, 500))}
    res = SimpleNamespace(idata=SimpleNamespace(posterior=post))
    c = sbc_columns(res, {"A": 250.5}, 0.9)
    assert c["pit_A"] == pytest.approx(251 / 1000)
    assert c["rank_A"] == int(np.sum(np.round(np.linspace(0, 999, SBC_DRAWS)) < 250.5))
    assert c["covered_A"] and not sbc_columns(res, {"A": 990.0}, 0.9)["covered_A"]


def _partial_design(tmp_path, truths: str, n: int = 3) -> Path:
    text = SBC.read_text().replace('base = "bases/oc.toml"',
                                   f'base = "{SBC.parent / "bases" / "oc.toml"}"')
    text = text.replace("triplet = 40, durvalumab_ep = 40, anlotinib_ep = 40",
                        f"triplet = {n}, durvalumab_ep = {n}, anlotinib_ep = {n}")
    text = text.replace('truths = "prior"', f"truths = {truths}")
    assert f"truths = {truths}" in text
    design = tmp_path / "partial.toml"
    design.write_text(text)
    return design


def test_partial_sbc_draws_only_the_named_thetas(tmp_path, spec):
    """truths = { prior = ["PSI"] }: each replicate draws PSI from its prior (the same draw as
    the full SBC of the same seed), the other parameters stay at the base's values (card IIV
    and residual: no [simulate] omega or residual override), and the fingerprint differs from
    the full SBC's."""
    d = load_design(_partial_design(tmp_path, '{ prior = ["PSI"] }'))
    assert d.sbc and d.prior_only == ("PSI",)
    assert d.fingerprint() != load_design(SBC).fingerprint()
    raw = fit_raw(d, 0, 5)
    full = prior_draw(spec, raw["simulate"]["seed"])
    sim, pop = prior_draw(load_spec(raw), raw["simulate"]["seed"], only=d.prior_only)
    assert list(pop) == ["PSI"] and pop["PSI"] == full[1]["PSI"]
    assert raw["simulate"]["truth"]["PSI"] == pop["PSI"]
    assert "omega" not in raw["simulate"] and "residual" not in raw["simulate"]
    base_truth = dict(load_design(SBC).base_raw["simulate"].get("truth", {}))
    base_truth.pop("PSI", None)
    assert {k: v for k, v in raw["simulate"]["truth"].items() if k != "PSI"} == base_truth


@pytest.mark.parametrize("truths, match", [
    ('{ prior = ["KAA"] }', "does not draw the rule's parameter PSI"),
    ('{ prior = ["PSI", "omega_KIO"] }', "omega_KIO not among the fit's thetas"),
    ('{ prior = ["PSI"], seed = 3 }', "must be \\{ prior = \\[names\\] \\}"),
    ('{ prior = [] }', "must be \\{ prior = \\[names\\] \\}"),
])
def test_partial_sbc_spec_errors(tmp_path, truths, match):
    with pytest.raises(SpecError, match=match):
        load_design(_partial_design(tmp_path, truths))


def test_partial_sbc_design_summarises_the_drawn_theta(tmp_path, monkeypatch):
    """A partial SBC run (stand-in exact fit) has PIT columns for PSI only, and its summary
    says that only PSI was drawn."""
    design = _partial_design(tmp_path, '{ prior = ["PSI"] }')
    only = load_design(design).prior_only

    def fake_fit(spec, where):
        pop = prior_draw(spec, spec.raw["simulate"]["seed"], only=only)[1]
        return _exact_result(spec, {**dict.fromkeys(spec.population_names, 0.0), **pop},
                             spec.raw["sampler"]["seed"])

    monkeypatch.setattr(drun, "_fit", fake_fit)
    out = tmp_path / "out"
    s = run_design(design, out=out, replicates=6, progress=False)
    res = pd.read_csv(out / "results.csv")
    assert [c for c in res.columns if c.startswith("pit_")] == ["pit_PSI"]
    assert [r["parameter"] for r in s["parameters"]] == ["PSI"]
    assert s["prior_only"] == ["PSI"]
    assert "PSI drawn from the fit's prior" in (out / "summary.md").read_text()
    assert json.loads((out / "design.json").read_text())["prior_only"] == ["PSI"]


def test_a_pit_of_exactly_zero_does_not_leave_the_band_by_itself():
    """A truth below every posterior draw gives a PIT of exactly 0, which a finite-draw PIT
    does with positive probability; 40 evenly spread PITs with one of them 0 stay in the band
    (the band is evaluated at interior points, where it has width), while 6 of 40 at 0 leave
    it."""
    n = 40
    even = (np.arange(n) + 0.5) / n
    one = even.copy()
    one[0] = 0.0
    rows = lambda p: pd.DataFrame({"pit_A": p, "rank_A": (p * SBC_DRAWS).astype(int),  # noqa: E731
                                   "covered_A": (p >= 0.05) & (p <= 0.95)})
    assert summarise_sbc(rows(one), 0.9)["parameters"][0]["in_band"]
    many = even.copy()
    many[:6] = 0.0
    assert not summarise_sbc(rows(many), 0.9)["parameters"][0]["in_band"]
    grid = ecdf_band(n)[0]
    assert grid[0] > 0.0 and grid[-1] < 1.0
