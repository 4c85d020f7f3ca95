"""Comparing trial arms (pkpd.trial.compare): common random numbers make an arm compared with
itself a perfect tie, P(A better than B) is the paired fraction of replicates, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.errors import SpecError
from pkpd.survival.hazard import hazard_ratio
from pkpd.trial import ENDPOINTS, HIGHER_IS_BETTER, compare, load_scenario


@pytest.fixture(scope="module")
def two_arms():
    return compare(["triplet", "ep"], n=40, replicates=3, seed=2)


def test_an_arm_against_its_copy_is_a_perfect_tie(tmp_path):
    """Same regimens + same seed = the same patients: every P is 1/2 and the HR is 1."""
    copy = tmp_path / "triplet_copy.toml"
    copy.write_text(load_scenario("triplet").path.read_text())
    c = compare(["triplet", str(copy)], n=30, replicates=2, seed=4)
    a, b = c.results.values()
    assert a.endpoints.equals(b.endpoints)
    assert (c.pairwise.p_a_better.dropna() == 0.5).all()
    assert c.hazard.pfs_hr_median.iloc[0] == pytest.approx(1.0, abs=1e-12)


def test_p_better_is_the_paired_fraction_of_replicates(two_arms):
    ea, eb = (r.endpoints for r in two_arms.results.values())
    for key in ENDPOINTS:
        a, b = ea[key].to_numpy(float), eb[key].to_numpy(float)
        ok = ~(np.isnan(a) | np.isnan(b))
        wins = sum((x > y if HIGHER_IS_BETTER[key] else x < y) + 0.5 * (x == y)
                   for x, y in zip(a[ok], b[ok]))
        got = two_arms.pairwise.query("endpoint == @key").p_a_better.iloc[0]
        assert got == pytest.approx(wins / ok.sum() if ok.any() else np.nan, nan_ok=True)


def test_hazard_ratio_is_arm_a_versus_arm_b_per_replicate(two_arms):
    tri, ep = two_arms.results.values()
    hrs = []
    for r in range(3):
        pa = tri.patients[tri.patients.replicate == r]
        pb = ep.patients[ep.patients.replicate == r]
        hrs.append(hazard_ratio(pb.pfs_days, pb.pfs_event, pa.pfs_days,
                                pa.pfs_event).hazard_ratio)
    assert two_arms.hazard.pfs_hr_median.iloc[0] == pytest.approx(np.median(hrs), rel=1e-12)


def test_arms_share_patients_and_the_table_has_every_endpoint(two_arms):
    tri, ep = two_arms.results.values()
    np.testing.assert_array_equal(tri.patients.WT, ep.patients.WT)
    assert set(two_arms.table.endpoint) == set(ENDPOINTS)
    assert set(two_arms.table.scenario) == {"triplet", "ep"}


@pytest.mark.parametrize("args,kw,match", [
    (["triplet"], {"n": 10}, "at least two scenarios"),
    (["triplet", "triplet"], {"n": 10}, "listed twice"),
    (["triplet", "ep"], {}, r"different sizes \{'triplet': 120, 'ep': 269\}"),
    (["triplet", "ep"], {"n": 10, "level": 1.5}, "level = 1.5 must be between 0 and 1"),
])
def test_bad_input(args, kw, match):
    with pytest.raises(SpecError, match=match):
        compare(args, **kw)


def test_cli_compare_json(capsys):
    import json

    from pkpd.cli import main

    rc = main(["compare", "triplet", "ep", "--n", "30", "--replicates", "2", "--seed", "2",
               "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    assert {r["endpoint"] for r in got["table"]} == set(ENDPOINTS)
    assert got["hazard"][0]["a"] == "triplet" and got["hazard"][0]["b"] == "ep"
    rc = main(["compare", "triplet"])
    _, err = capsys.readouterr()
    assert rc == 2 and "pkpd compare: error: compare needs at least two scenarios" in err


def test_cli_compare_writes_the_forest_and_km_plots(capsys, tmp_path):
    from pkpd.cli import main

    prefix = tmp_path / "out" / "cmp"
    rc = main(["compare", "triplet", "ep", "--n", "30", "--replicates", "2", "--quiet",
               "--plots", str(prefix)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    for name in ("cmp_forest.png", "cmp_km_pfs.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "wrote" in out and "cmp_km_pfs.png" in out


def test_plots_leave_pyplot_and_the_backend_alone(tmp_path):
    """Drawing on a Figure object: no pyplot figure stays open, the backend (e.g. inline in
    Jupyter) is not switched."""
    import matplotlib
    import matplotlib.pyplot as plt

    from pkpd.plots.trial import forest_plot, km_plot
    from pkpd.trial.comparison import compare

    backend = matplotlib.get_backend()
    before = plt.get_fignums()
    c = compare(["triplet", "ep"], n=20, replicates=2, seed=1)
    for p in (forest_plot(c, tmp_path / "f.png"), km_plot(c, tmp_path / "k.png")):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend and plt.get_fignums() == before
