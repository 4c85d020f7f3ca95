"""Population sources of a virtual trial: a real (tiny) pkpd fit's posterior mapped onto the
tumour card (oracle: the posterior.nc read with xarray), the draw reaching the simulation,
common draws across arms, determinism, Card.with_values, and bad input.

The tests on a real posterior run a small fit first (about 25 s alone, more on a busy machine)
and are marked slow; the same machinery is checked fast with a hand-made draws table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pkpd.cards import load_card
from pkpd.cli import main
from pkpd.errors import ModelError, SpecError
from pkpd.trial import compare, run_trial
from pkpd.trial.run import draw_index
from pkpd.trial.sources import card_for_draw, posterior_draws

EP = {"durvalumab": "1500 mg IV 60 min Q3W x4", "etoposide": "100 mg/m2 IV 60 min D1-3 Q21D x4",
      "carboplatin": "AUC 5 IV 60 min D1 Q21D x4"}
TINY_FIT = {
    "fit": {"name": "tiny_triplet", "description": "6 simulated patients, a few draws"},
    "model": {"card": "sclc_triplet_tgi"},
    "data": {"format": "simulate", "stop_at_progression": True},
    "simulate": {"seed": 3, "days": 200, "baseline_day": -7, "scan_every_days": 42,
                 "arms": {"durvalumab_ep": 6}, "iiv": ["BASE", "KG"]},
    "covariates": {"WT": 70.0, "HT": 170.0, "AGE": 60.0, "SEX": 0, "SCR": 1.0},
    "regimens": {"durvalumab_ep": EP},
    "fixed": {"KE0C": 0.1, "KV": 0.0433, "IC50A": 2.0, "HILLA": 1.54, "KAA": 0.006,
              "PSI": 0.5, "KCHEMO": 0.08, "LAMBDA": 0.02},
    "individual": {"KIO": "KIO"},
    "theta": {"KIO": {"dist": "lognormal", "median": 0.01, "sd_log": 1.0}},
    "omega": {"eta_BASE": {"prior": "HalfNormal(1)", "name": "omega_BASE"},
              "eta_KG": {"prior": "HalfNormal(1)", "name": "omega_KG"}},
    "sampler": {"name": "nutpie", "chains": 2, "tune": 30, "draws": 10, "seed": 1,
                "chains_per_batch": 2},
}


def _ep_copy(tmp_path):
    from pkpd.trial import load_scenario

    copy = tmp_path / "ep_copy.toml"
    copy.write_text(load_scenario("ep").path.read_text().replace('name = "ep"',
                                                                   'name = "ep_copy"'))
    return str(copy)


@pytest.fixture(scope="module")
def fit_dir(tmp_path_factory):
    """A real fit folder written by pkpd fit (about 25 s)."""
    from pkpd.fit import fit, load_spec

    out = tmp_path_factory.mktemp("fits") / "tiny_triplet"
    fit(load_spec(TINY_FIT), out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def draws(fit_dir):
    return posterior_draws(fit_dir)


@pytest.mark.slow
def test_posterior_maps_onto_the_card_names(fit_dir, draws):
    post = xr.open_dataset(fit_dir / "posterior.nc", group="posterior")
    n = post.sizes["chain"] * post.sizes["draw"]
    assert len(draws) == n == 20
    for par in ("BASE", "KG", "KIO"):             # typical value = the theta (eta = 0)
        np.testing.assert_array_equal(draws[par].to_numpy(), post[par].values.reshape(n))
    for par in ("BASE", "KG"):                    # omega2 = omega_sd ** 2 of the eta
        sd = post["omega_sd"].sel(eta_name=f"eta_{par}").values.reshape(n)
        np.testing.assert_allclose(draws[f"omega2_{par}"].to_numpy(), sd ** 2, rtol=1e-15)
    # the fit's fixed values; no omega for parameters the fit gave no eta
    assert (draws["KCHEMO"] == 0.08).all() and (draws["PSI"] == 0.5).all()
    assert "omega2_KIO" not in draws and "omega2_PSI" not in draws
    assert draws.index.names == ["chain", "draw"]
    assert draws.attrs["card"] == "sclc_triplet_tgi"


@pytest.mark.slow
def test_each_replicate_simulates_its_own_draw_and_arms_share_it(draws, tmp_path):
    c = compare(["ep", _ep_copy(tmp_path)], n=20, replicates=3, seed=5, draws=draws)
    res, other = c.results.values()
    assert res.meta["draw_index"] == other.meta["draw_index"]
    assert res.meta["population_source"].startswith("posterior ")
    idx = [int(np.random.default_rng(np.random.SeedSequence([5, r]).spawn(5)[4])
               .integers(len(draws))) for r in range(3)]
    assert res.meta["draw_index"] == idx == res.endpoints["draw"].tolist()
    assert idx == [draw_index(5, r, len(draws)) for r in range(3)]
    # replicate 2 is the simulation of the card with draw idx[2]'s values
    card = card_for_draw(load_card("sclc_triplet_tgi"), draws.iloc[idx[2]])
    assert card.typical_params()["KG"] == draws["KG"].iloc[idx[2]]
    alone = run_trial("ep", n=20, replicates=3, seed=5, card=card)
    pd.testing.assert_frame_equal(alone.endpoints.iloc[[2]].drop(columns="replicate"),
                                  res.endpoints.iloc[[2]].drop(columns=["replicate", "draw"]))
    # same seed, same numbers
    again = run_trial("ep", n=20, replicates=3, seed=5, draws=draws)
    pd.testing.assert_frame_equal(res.endpoints, again.endpoints)


def test_a_draw_with_fast_growth_progresses_at_the_first_scan(tmp_path):
    """Oracle: KG = 0.05/day without chemo kill grows the SLD 8-fold by day 42. Both arms of a
    comparison use the same draw in each replicate."""
    table = pd.DataFrame({"KG": [0.05, 0.004], "KCHEMO": [0.0, 0.08],
                          "omega2_KG": [0.0, 0.25]})
    c = compare(["ep", _ep_copy(tmp_path)], n=20, replicates=3, seed=5, draws=table)
    res, other = c.results.values()
    assert res.meta["draw_index"] == other.meta["draw_index"]
    assert res.meta["population_source"] == "draws table"
    for r, d in enumerate(res.endpoints["draw"]):
        bor = res.patients.loc[res.patients.replicate == r, "bor_confirmed"]
        if d == 0:
            assert (bor == "PD").all()
        else:
            assert (bor == "PD").mean() < 0.3
    assert set(res.endpoints["draw"]) == {0, 1}


def test_card_with_values():
    card = load_card("sclc_triplet_tgi")
    new = card.with_values(values={"KG": 0.01}, omega2={"KG": 0.3})
    assert new.typical_params()["KG"] == 0.01 and card.typical_params()["KG"] == 0.004
    assert new.omega()[new.iiv_names.index("KG")].max() == 0.3
    assert new.sha256 != card.sha256
    assert card.with_values(values={"KG": 0.004}).sha256 == \
        card.with_values(values={"KG": 0.004}).sha256
    with pytest.raises(ModelError, match="no parameter 'KGG'"):
        card.with_values(values={"KGG": 1.0})
    with pytest.raises(ModelError, match="no IIV 'KE0C'"):
        card.with_values(omega2={"KE0C": 0.1})
    with pytest.raises(ModelError, match="BASE = -1"):
        card.with_values(values={"BASE": -1.0})


def test_bad_draws_table():
    with pytest.raises(SpecError, match="did you mean 'KG'"):
        run_trial("ep", n=5, draws=pd.DataFrame({"Kg": [0.004]}))
    with pytest.raises(SpecError, match="row 1"):
        run_trial("ep", n=5, draws=pd.DataFrame({"KG": [0.004, np.nan]}))


@pytest.mark.parametrize("cmd", ["trial", "compare"])
def test_cli_posterior_folder_that_is_not_a_fit(tmp_path, capsys, cmd):
    args = (["trial", "--scenario", "ep"] if cmd == "trial" else ["compare", "ep", "triplet"])
    assert main([*args, "--n", "5", "--posterior", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not a pkpd fit" in err and "Fix: run pkpd fit" in err


@pytest.mark.slow
def test_a_fit_that_is_not_of_a_tumour_card(fit_dir, tmp_path, capsys):
    other = tmp_path / "tgi_fit"
    shutil.copytree(fit_dir, other)
    rec = json.loads((other / "fit.json").read_text())
    rec["model"]["kind"] = "tgi"
    (other / "fit.json").write_text(json.dumps(rec))
    with pytest.raises(SpecError, match="not of a tumour card"):
        posterior_draws(other)
    assert main(["trial", "--scenario", "ep", "--n", "5", "--posterior", str(other)]) == 2


@pytest.mark.slow
def test_cli_posterior_json(fit_dir, capsys):
    assert main(["trial", "--scenario", "ep", "--n", "10", "--replicates", "2", "--seed", "3",
                 "--posterior", str(fit_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["population_source"] == f"posterior {fit_dir}"
