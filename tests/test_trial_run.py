"""Virtual trial arms (pkpd.trial.run): reproducibility, common random numbers, endpoints
recomputed independently from the patient table (lifelines for Kaplan-Meier), bad input."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from pkpd.errors import SpecError
from pkpd.survival.km import DAYS_PER_MONTH
from pkpd.trial.run import ENDPOINTS, HEADLINE, run_trial

N, R = 60, 2


@pytest.fixture(scope="module")
def triplet():
    return run_trial("triplet", n=N, replicates=R, seed=3)


def test_same_seed_same_trial_and_replicates_differ(triplet):
    again = run_trial("triplet", n=N, replicates=R, seed=3)
    assert again.endpoints.equals(triplet.endpoints)
    p = triplet.patients
    assert not np.array_equal(p.query("replicate == 0").WT, p.query("replicate == 1").WT)
    assert len(p) == N * R and list(triplet.endpoints.columns) == ["replicate", *ENDPOINTS]


def test_arms_share_their_virtual_patients(triplet):
    """Common random numbers: same seed, same covariates, whatever the regimens."""
    ep = run_trial("ep", n=N, replicates=R, seed=3)
    for col in ("WT", "HT", "AGE", "SEX", "GFR", "BSA"):
        np.testing.assert_array_equal(ep.patients[col], triplet.patients[col])


def test_endpoints_recomputed_from_the_patient_table(triplet):
    for r, rows in triplet.patients.groupby("replicate"):
        e = triplet.endpoints.set_index("replicate").loc[r]
        assert e.orr == pytest.approx(rows.bor.isin(["CR", "PR"]).mean(), abs=1e-15)
        assert e.orr_confirmed == pytest.approx(rows.bor_confirmed.isin(["CR", "PR"]).mean(),
                                                abs=1e-15)
        assert e.dcr == pytest.approx(rows.bor_confirmed.isin(["CR", "PR", "SD"]).mean(),
                                      abs=1e-15)
        km = KaplanMeierFitter().fit(rows.pfs_days, rows.pfs_event)
        assert e.median_pfs_months * DAYS_PER_MONTH == pytest.approx(km.median_survival_time_,
                                                                     rel=1e-12)
        at = np.array([6.0, 12.0]) * DAYS_PER_MONTH
        s6, s12 = km.survival_function_at_times(at).to_numpy()
        assert (e.pfs_6m, e.pfs_12m) == pytest.approx((s6, s12), abs=1e-12)


def test_headline_keys_and_intervals(triplet):
    h = triplet.headline()
    assert set(h) == {*HEADLINE, *(f"{k}_lo" for k in HEADLINE), *(f"{k}_hi" for k in HEADLINE)}
    for k in HEADLINE:
        if h[k] is not None:
            assert h[f"{k}_lo"] <= h[k] <= h[f"{k}_hi"]
    one = run_trial("triplet", n=20, seed=3).headline()
    assert set(one) == set(HEADLINE)


def test_scans_stop_at_dropout_and_cutoff(tmp_path):
    text = """
[scenario]
model = "sclc_triplet_tgi"
n = 40
days = 365
[regimens]
durvalumab = "1500 mg IV 60 min Q4W"
[scans]
schedule = "Q6W"
[censoring]
dropout_per_year = 0.9
cutoff_day = 200
"""
    p = tmp_path / "arm.toml"
    p.write_text(text)
    res = run_trial(p, seed=1)
    pat = res.patients
    assert (pat.pfs_day <= 200).all()  # nothing is seen after the cut-off
    assert (pat.pfs_event == 0).any()  # some patients leave before progressing


@pytest.mark.parametrize("kw,match", [
    ({"n": 0}, r"n = 0 must be a whole number from 1"),
    ({"n": -3}, r"n = -3 must be"),
    ({"replicates": 0}, r"replicates = 0 must be"),
    ({"seed": -1}, r"seed = -1 must be a whole number >= 0"),
])
def test_bad_input(kw, match):
    with pytest.raises(SpecError, match=match):
        run_trial("triplet", **kw)


def test_unknown_scenario():
    with pytest.raises(SpecError, match="unknown scenario 'tripplet'. Did you mean 'triplet'"):
        run_trial("tripplet")


# ---- pkpd trial --------------------------------------------------------------------------------

def _cli(capsys, *argv):
    from pkpd.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_is_the_api_headline(capsys):
    import json

    rc, out, err = _cli(capsys, "trial", "--scenario", "triplet", "--n", 40, "--replicates", 2,
                        "--seed", 5, "--json")
    assert rc == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    want = run_trial("triplet", n=40, replicates=2, seed=5).headline()
    assert {k: got[k] for k in want} == want
    assert (got["scenario"], got["n"], got["replicates"], got["seed"]) == ("triplet", 40, 2, 5)


@pytest.mark.parametrize("args,needle", [
    (["--scenario", "tripplet"], "unknown scenario 'tripplet'. Did you mean 'triplet'?"),
    (["--scenario", "triplet", "--n", "0"], "n = 0 must be a whole number from 1"),
    (["--scenario", "triplet", "--replicates", "-2"], "replicates = -2 must be"),
])
def test_cli_bad_input_is_one_line_with_exit_status_2(capsys, args, needle):
    rc, out, err = _cli(capsys, "trial", *args)
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pkpd trial: error:") and needle in lines[0]


def test_dask_and_in_process_give_identical_numbers():
    """Each replicate depends only on (seed, replicate), so a 2-worker LocalCluster gives the
    same patients and endpoints as this process, to the last bit."""
    import distributed  # the [dask] extra is part of dev
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = run_trial("triplet", n=40, replicates=3, seed=5, dask=client)
    here = run_trial("triplet", n=40, replicates=3, seed=5)
    assert on_dask.endpoints.equals(here.endpoints)
    assert on_dask.patients.equals(here.patients)


def test_unreachable_dask_scheduler_is_one_clear_error():
    with pytest.raises(SpecError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        run_trial("triplet", n=10, dask="tcp://127.0.0.1:9")


def test_a_tumour_that_grows_without_bound_is_capped_counted_and_warned():
    # (a fast but finite growth is kept as simulated: durvalumab_ep_anlotinib_maintenance with
    # seed 99 has patients above 1e5 mm at day 730, and no warning)
    # a negative synergy factor (1 + PSI*U < 0) with a large immune kill makes the model grow
    # at ~ KIO*|1 + PSI*U| per day: exp() overflows long before day 730
    with pytest.warns(RuntimeWarning, match=r"\d+ of 200 virtual patients had a simulated SLD "
                      r"that overflowed"):
        res = run_trial("triplet", n=200, seed=1, params={"PSI": -4.0, "KIO": 2.0})
    capped = res.patients["sld_capped"]
    assert res.meta["sld_capped_patients"] == capped.sum() > 0
    assert (res.patients.loc[capped, "pfs_event"] == 1).all()
    e = res.endpoints.iloc[0]
    assert e["orr_confirmed"] < 0.05          # immune "kill" turned into growth in nearly all
    # every patient progresses at the first scan (day 42 +/- 7, +1 by convention)
    assert e["median_pfs_months"] * 30.4375 <= 50.0
