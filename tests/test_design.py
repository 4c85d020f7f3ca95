"""pkpd.design: design specs, replicate seeds, the operating-characteristics summary (against
hand-computed binomial numbers), resume after an interruption, the CLI's errors, and one
end-to-end run of the smoke design."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pkpd.design import (
    compare_designs,
    driver_cache,
    fit_raw,
    load_design,
    replicate_seeds,
    run_design,
    summarise,
)
from pkpd.design import run as drun
from pkpd.design.cli import add_parser, main_cli
from pkpd.design.summary import RESULT_COLUMNS
from pkpd.errors import FitInterrupted, PkpdError, SpecError

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "fits" / "triplet_recovery.toml"
DESIGNS = ROOT / "fits" / "designs"

GOOD = f"""
base = "{BASE}"
[design]
name = "t"
arms = {{ triplet = 4, durvalumab_ep = 4, anlotinib_ep = 4 }}
truths = [{{ PSI = 0.0 }}, {{ PSI = 0.5 }}]
replicates = 3
seed = 7
[rule]
parameter = "PSI"
threshold = 0.0
probability = 0.9
[sampler]
chains = 2
tune = 20
draws = 20
"""


def _write(tmp_path, text, name="d.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- spec validation -----------------------------------------------------------------------------
def test_every_committed_design_loads():
    names = {p.stem: load_design(p) for p in DESIGNS.glob("*.toml")}
    assert set(names) == {"single_arm_120", "three_arm_40", "three_arm_240", "three_arm_480",
                          "maintenance", "smoke", "sbc_three_arm_40", "sbc_psi_three_arm_40"}
    assert sum(names["three_arm_480"].arms.values()) == 480
    assert sum(names["three_arm_240"].arms.values()) == 240
    assert names["single_arm_120"].arms == {"triplet": 120}
    assert names["smoke"].replicates == 5 and len(names["smoke"].truths) == 2
    assert names["sbc_psi_three_arm_40"].prior_only == ("PSI",)
    assert names["sbc_three_arm_40"].prior_only == ()


def test_identification_of_each_committed_design():
    """Only designs with arms on anlotinib without durvalumab and on durvalumab without
    anlotinib separate PSI from KAA and KIO (pkpd.fit.estimands.synergy_identification)."""
    status = {p.stem: load_design(p).identification()["status"]
              for p in DESIGNS.glob("*.toml")}
    assert status == {"single_arm_120": "confounded", "maintenance": "confounded",
                      "three_arm_40": "identified", "three_arm_240": "identified",
                      "three_arm_480": "identified", "smoke": "identified",
                      "sbc_three_arm_40": "identified", "sbc_psi_three_arm_40": "identified"}
    single = load_design(DESIGNS / "single_arm_120.toml").identification()
    assert single["groups"] == {"both": 120, "anlotinib_only": 0, "durvalumab_only": 0,
                                "neither": 0}
    assert "KAA only by their priors" in single["note"]
    maint = load_design(DESIGNS / "maintenance.toml").identification()
    assert maint["groups"]["both"] == maint["groups"]["durvalumab_only"] == 60


def test_maintenance_anlotinib_starts_at_cycle_5():
    """The grammar's '; start D85' puts the first anlotinib dose on study day 85 (t = 84 d),
    after 4 cycles of EP + durvalumab (4 x 21 days); both arms get the same EP and durvalumab."""
    from pkpd.dosing import parse_regimen
    d = load_design(DESIGNS / "maintenance.toml")
    raw = fit_raw(d, 0, 0)
    maint = raw["regimens"]["durvalumab_ep_anlotinib_maint"]
    t = parse_regimen(maint["anlotinib"]).doses({"WT": 70.0}, 200).time_day
    assert t[0] == 84.0 and np.all(t >= 84.0)
    ctrl = raw["regimens"]["durvalumab_ep"]
    for drug in ("durvalumab", "etoposide", "carboplatin"):
        assert maint[drug] == ctrl[drug]
    assert "anlotinib" not in ctrl


@pytest.mark.parametrize("patch, match", [
    (("[design]", "[design]\ncolour = 1"), "unknown key.*colour"),
    (("[sampler]", "[sampler]\nseed = 3"), "seed is derived"),
    (("[sampler]", "[sampler]\nthinning = 3"), "unknown key.*thinning"),
    (("[rule]", "[rule]\nalpha = 1"), "unknown key.*alpha"),
    (("[rule]", "[extra]\nx = 1\n[rule]"), "unknown key.*extra"),
    (("PSI = 0.5 }", "PSX = 0.5 }"), "truth 2: unknown parameter.*PSX"),
    (("{ PSI = 0.5 }", "{ KAA = 0.01 }"), "truth 2 does not set the rule's parameter PSI"),
    (("replicates = 3", "replicates = 0"), "replicates must be an integer >= 1"),
    (("replicates = 3", "replicates = 2.5"), "replicates must be an integer"),
    (("seed = 7", "seed = 7\nlevel = 1.5"), r"level must be a number in \(0.0, 1.0\)"),
    (("probability = 0.9", "probability = 1.0"), "probability must be"),
    (('parameter = "PSI"', 'parameter = "KE0C"'), "KE0C.* not a population parameter"),
    (("triplet = 4,", "triplet = 4, placebo = 4,"), "arm 'placebo' has no regimen"),
    (("triplet = 4,", "triplet = 0,"), "arm triplet must be an integer >= 1"),
    (("{ PSI = 0.0 }, { PSI = 0.5 }", "{ PSI = 0.5 }, { PSI = 0.5 }"), "truths repeat"),
    (("truths = [{ PSI = 0.0 }, { PSI = 0.5 }]", "truths = []"), "non-empty list"),
])
def test_bad_design_is_refused(tmp_path, patch, match):
    text = GOOD.replace(*patch, 1)
    assert text != GOOD
    with pytest.raises(SpecError, match=match):
        load_design(_write(tmp_path, text))


def test_base_must_simulate_and_exist(tmp_path):
    with pytest.raises(SpecError, match="does not simulate"):
        load_design(_write(tmp_path, GOOD.replace(str(BASE), str(ROOT / "fits" /
                                                                  "phenobarbital.toml"))))
    with pytest.raises(SpecError, match="does not exist"):
        load_design(_write(tmp_path, GOOD.replace(str(BASE), "nothere.toml")))


def test_driver_cache_gives_the_uncached_signals():
    """Inside driver_cache the simulated trial is the same to the byte (data sha256), a shorter
    horizon is the exact prefix of the cached longer one, and the bindings are restored."""
    from pkpd.fit import recovery
    from pkpd.fit.spec import load_spec
    from pkpd.tumour import simulate
    spec = load_spec(fit_raw(load_design(DESIGNS / "smoke.toml"), 0, 0))
    original = simulate.patient_drivers
    plain = recovery.simulate_data(spec)
    with driver_cache() as cache:
        assert simulate.patient_drivers is not original
        cached = recovery.simulate_data(spec)
        again = recovery.simulate_data(spec)
        reg = dict(spec.regimens["triplet"])
        short = simulate.patient_drivers(spec.card, reg, 120.0,
                                         covariates=spec.raw["covariates"], step_day=1.0)
    assert cache.misses == 3 and cache.hits == 4             # 3 arms, then all from the cache
    assert simulate.patient_drivers is original and recovery.patient_drivers is original
    assert plain.sha256 == cached.sha256 == again.sha256
    direct = original(spec.card, reg, 120.0, covariates=spec.raw["covariates"], step_day=1.0)
    for s in direct:
        assert short[s].shape == direct[s].shape == (1, 120)
        np.testing.assert_array_equal(short[s], direct[s])


# ---- seeds ---------------------------------------------------------------------------------------
def test_replicate_seeds_deterministic_and_distinct():
    seeds = [replicate_seeds(7, i, r) for i in range(3) for r in range(200)]
    assert seeds == [replicate_seeds(7, i, r) for i in range(3) for r in range(200)]
    flat = [s for pair in seeds for s in pair]
    assert len(set(flat)) == len(flat)                  # data and sampler seeds all different
    assert all(0 <= s < 2 ** 31 for s in flat)
    assert replicate_seeds(8, 0, 0) != replicate_seeds(7, 0, 0)


def test_fit_raw_replaces_simulate_and_sampler(tmp_path):
    d = load_design(_write(tmp_path, GOOD))
    a, b = fit_raw(d, 1, 2), fit_raw(d, 1, 3)
    assert a["simulate"]["arms"] == {"triplet": 4, "durvalumab_ep": 4, "anlotinib_ep": 4}
    assert a["simulate"]["truth"] == {"PSI": 0.5}
    assert a["simulate"]["seed"] == replicate_seeds(7, 1, 2)[0] != b["simulate"]["seed"]
    assert a["sampler"] == {"name": "nutpie", "chains": 2, "tune": 20, "draws": 20,
                            "seed": replicate_seeds(7, 1, 2)[1]}
    assert d.base_raw["simulate"]["seed"] == 20261124          # the base is not modified


# ---- summary against hand-computed binomial numbers ---------------------------------------------
def _rows(truth_index, truth, claims, covered, n=40):
    out = []
    for r in range(n):
        out.append({c: 0 for c in RESULT_COLUMNS} | {
            "design": "hand", "truth_index": truth_index, "replicate": r, "parameter": "PSI",
            "truth": truth, "p_gt": 0.5, "mean": truth, "lower": truth - 1.0,
            "upper": truth + 1.0, "level": 0.9, "covered": r < covered, "claim": r < claims,
            "max_r_hat": 1.0 + 0.001 * r, "min_ess_bulk": 100.0 + r, "divergences": r % 2,
            "failed_evaluations": 0, "onset_coverage": 0.8 if r % 2 else 0.9, "onset_n": 30,
            "wall_s": 10.0})
    return out


def test_summarise_hand_computed(tmp_path):
    df = pd.DataFrame(_rows(0, 0.0, 3, 36) + _rows(1, 0.5, 12, 32) + _rows(2, 1.0, 30, 38)
                      + _rows(3, -0.2, 6, 36) + _rows(4, 0.0001, 10, 36))
    s = summarise(df, out=tmp_path)
    t = {r["truth_index"]: r for r in s["truths"]}
    # truth 0: 3 of 40 claims; SE = sqrt(0.075 * 0.925 / 40) = sqrt(0.001734375)
    assert t[0]["kind"] == "false-positive rate" and t[0]["p_claim"] == 0.075
    assert t[0]["se_claim"] == pytest.approx(0.0416458, abs=1e-7)
    assert t[0]["coverage"] == 0.9 and t[0]["se_coverage"] == pytest.approx(0.0474342, abs=1e-7)
    assert t[0]["fpr_flag"] == "ok" and t[0]["coverage_flag"] == "ok"
    assert t[0]["mean_width"] == 2.0 and t[0]["onset_coverage"] == pytest.approx(0.85)
    assert t[0]["divergences"] == 20 and t[0]["n_r_hat_above_1_01"] == 29   # r_hat 1.011..
    # truth 0.5: power 12/40 = 0.3, SE sqrt(0.3 * 0.7 / 40) = 0.0724569; coverage 0.8: outside
    assert t[1]["kind"] == "power" and t[1]["se_claim"] == pytest.approx(0.0724569, abs=1e-7)
    assert t[1]["fpr_flag"] == "" and t[1]["coverage_flag"] == "outside"
    # truth 1: coverage 38/40 = 0.95 (inside 0.84-0.96)
    assert t[2]["p_claim"] == 0.75 and t[2]["coverage_flag"] == "ok"
    # truth -0.2 (no effect): FPR 0.15 <= 0.10 + 2 sqrt(0.09 / 40) = 0.19487: within MC error
    assert t[3]["kind"] == "false-positive rate" and t[3]["fpr_flag"] == "within MC error"
    # truth 1e-4 > threshold 0: power; had it been null, 0.25 > 0.19487 would be "too high"
    assert t[4]["kind"] == "power"
    s2 = summarise(df.assign(truth=np.where(df["truth_index"] == 4, 0.0, df["truth"])),
                   write=False)
    assert s2["truths"][4]["fpr_flag"] == "too high"
    assert any("0.150" in f and "within MC error" in f for f in s["flags"])
    assert any("coverage 0.800" in f for f in s["flags"])
    for f in ("summary.json", "summary.md", "oc.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["truths"][0]["n"] == 40
    assert "| hand | 0.5 | power | 0.300 ± 0.072 |" in (tmp_path / "summary.md").read_text()
    assert "Design (" not in (tmp_path / "summary.md").read_text()   # no design.json here


def test_summary_states_a_confounded_design(tmp_path):
    df = pd.DataFrame(_rows(0, 0.0, 2, 40))
    df.to_csv(tmp_path / "results.csv", index=False)
    ident = load_design(DESIGNS / "single_arm_120.toml").identification()
    (tmp_path / "design.json").write_text(json.dumps({"name": "hand", "identification": ident}))
    s = summarise(tmp_path)
    assert s["identification"]["status"] == "confounded"
    md = (tmp_path / "summary.md").read_text()
    assert "Design (confounded): no patient receives anlotinib without durvalumab (120" in md


def test_compare_designs(tmp_path):
    for name, claims in (("a", 2), ("b", 20)):
        f = tmp_path / name
        f.mkdir()
        rows = pd.DataFrame(_rows(0, 0.0, claims, 36) + _rows(1, 1.0, claims, 36))
        rows["design"] = name
        rows.to_csv(f / "results.csv", index=False)
    df = compare_designs([tmp_path / "a", tmp_path / "b"], out=tmp_path / "cmp")
    assert list(zip(df["design"], df["truth"], df["p_claim"])) == [
        ("a", 0.0, 0.05), ("a", 1.0, 0.05), ("b", 0.0, 0.5), ("b", 1.0, 0.5)]
    assert (tmp_path / "cmp" / "oc.png").stat().st_size > 0


# ---- resume --------------------------------------------------------------------------------------
def _fake_result(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.4, (2, 50))
    return SimpleNamespace(
        idata=SimpleNamespace(posterior={"PSI": SimpleNamespace(values=x)}),
        summary=pd.DataFrame({"parameter": ["PSI", "omega_KIO"], "r_hat": [1.0, 1.02],
                              "ess_bulk": [300.0, 90.0]}),
        record={"diagnostics": {"sampler": {"n_divergent": 1}},
                "failures": {"failed_evaluations": 2},
                "recovery": {"onset_coverage": {"coverage": 0.75, "n": 12}},
                "n_subjects": 12, "n_obs": 40, "timing": {"sampling_s": 1.0, "batches": []},
                "centring": {}})


def test_resume_skips_done_replicates(tmp_path, monkeypatch):
    design = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    calls = []

    def interrupted(spec, where):
        if len(calls) == 2:
            raise FitInterrupted("interrupted in the third replicate")
        calls.append(spec.raw["simulate"]["seed"])
        return _fake_result(spec.raw["sampler"]["seed"])

    monkeypatch.setattr(drun, "_fit", interrupted)
    with pytest.raises(FitInterrupted):
        run_design(design, out=out, progress=False)
    first = pd.read_csv(out / "results.csv")
    assert list(zip(first["truth_index"], first["replicate"])) == [(0, 0), (0, 1)]

    def counted(spec, where):
        calls.append(spec.raw["simulate"]["seed"])
        return _fake_result(spec.raw["sampler"]["seed"])

    monkeypatch.setattr(drun, "_fit", counted)
    s = run_design(design, out=out, progress=False)
    assert len(calls) == 6                              # 2 before, 4 after: none refitted
    assert len(set(calls)) == 6
    res = pd.read_csv(out / "results.csv")
    assert list(zip(res["truth_index"], res["replicate"])) == [(i, r) for i in (0, 1)
                                                               for r in range(3)]
    pd.testing.assert_frame_equal(res.iloc[:2].reset_index(drop=True), first, check_dtype=False)
    assert res["data_seed"].tolist() == [replicate_seeds(7, i, r)[0] for i in (0, 1)
                                         for r in range(3)]
    x = _fake_result(replicate_seeds(7, 0, 0)[1]).idata.posterior["PSI"].values.ravel()
    assert res.loc[0, "p_gt"] == pytest.approx(np.mean(x > 0), abs=1e-6)
    assert res.loc[0, "lower"] == pytest.approx(np.quantile(x, 0.05), rel=1e-5)
    assert res.loc[0, "claim"] == (np.mean(x > 0) > 0.9)
    assert res["min_ess_bulk"].eq(90.0).all() and res["max_r_hat"].eq(1.02).all()
    assert res["worst_parameter"].eq("omega_KIO").all()
    assert res["r_hat_rule"].eq(1.0).all() and res["ess_bulk_rule"].eq(300.0).all()
    assert [t["n"] for t in s["truths"]] == [3, 3]
    run_design(design, out=out, progress=False)         # all done: nothing refitted
    assert len(calls) == 6
    run_design(design, out=out, replicates=4, progress=False)     # one more per truth
    assert len(calls) == 8
    other = _write(tmp_path, GOOD.replace("seed = 7", "seed = 8"), "other.toml")
    with pytest.raises(PkpdError, match="another design"):
        run_design(other, out=out, progress=False)
    # results made by another version of the trial simulator are not mixed with new ones
    from pkpd.fit import recovery
    monkeypatch.setattr(recovery, "SIMULATOR_VERSION", recovery.SIMULATOR_VERSION + 1)
    with pytest.raises(PkpdError, match="trial simulator changed"):
        run_design(design, out=out, progress=False)


def test_a_failed_fit_is_recorded_flagged_and_not_retried(tmp_path, monkeypatch):
    """A replicate whose fit fails (here: the sampler cannot start) goes to failures.csv with
    its seeds and error; the others finish; the summary counts and flags it; a rerun does not
    refit it (the same seeds fail the same way)."""
    from pkpd.design.summary import FAILURE_COLUMNS
    from pkpd.errors import SolverError
    design = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    calls = []
    bad_seed = replicate_seeds(7, 1, 2)[0]

    def fit(spec, where):
        calls.append(spec.raw["simulate"]["seed"])
        if spec.raw["simulate"]["seed"] == bad_seed:
            raise SolverError("nutpie stopped: Invalid initial point")
        return _fake_result(spec.raw["sampler"]["seed"])

    monkeypatch.setattr(drun, "_fit", fit)
    s = run_design(design, out=out, progress=False)
    res = pd.read_csv(out / "results.csv")
    bad = pd.read_csv(out / "failures.csv")
    assert list(bad.columns) == FAILURE_COLUMNS
    assert list(zip(bad["truth_index"], bad["replicate"], bad["data_seed"])) == [(1, 2, bad_seed)]
    assert bad["truth"].tolist() == [0.5]
    assert bad["error"].iloc[0] == "SolverError: nutpie stopped: Invalid initial point"
    assert len(res) == 5 and (1, 2) not in set(zip(res["truth_index"], res["replicate"]))
    assert [t["n"] for t in s["truths"]] == [3, 2]
    assert [t["n_failed_fits"] for t in s["truths"]] == [0, 1]
    assert any(f.startswith("PSI = 0.5: 1 of 3 replicate fits failed") for f in s["flags"])
    assert "1 of 3 replicate fits failed" in (out / "summary.md").read_text()
    run_design(design, out=out, progress=False)
    assert len(calls) == 6                              # nothing refitted, the failure neither


def test_a_sampler_panic_becomes_a_solver_error(monkeypatch):
    """nutpie's Rust panic (a BaseException from pyo3) is converted into a SolverError that
    names what to check, and the sampler is cancelled."""
    import nutpie

    from pkpd.errors import SolverError
    from pkpd.fit import run as frun

    class PanicException(BaseException):               # as pyo3_runtime names it
        pass

    cancelled = []

    class Sampler:
        class _sampler:                                  # noqa: N801 - nutpie's attribute
            @staticmethod
            def wait(poll):
                raise PanicException("called `Result::unwrap()` on an `Err` value: Could not "
                                     "initialize state because of bad initial gradient: "
                                     "Invalid initial point\n\nStack backtrace:\n   0: <unknown>")

        def cancel(self):
            cancelled.append(True)
            raise PanicException("Poisond sampler state mutex")   # as nutpie after a panic

    monkeypatch.setattr(nutpie, "sample", lambda compiled, blocking, **kw: Sampler())
    with pytest.raises(SolverError, match="bad initial gradient: Invalid initial point. A "
                                          "chain's initial point") as err:
        frun._nutpie_run(object(), poll=0.01)
    assert "backtrace" not in str(err.value)
    assert cancelled == [True]


# ---- CLI -----------------------------------------------------------------------------------------
def _args(*argv):
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="cmd"))
    return p.parse_args(["design", *argv])


def test_cli_bad_spec_is_one_line_exit_2(tmp_path, capsys):
    bad = _write(tmp_path, GOOD.replace("replicates = 3", "replicates = 0"))
    assert main_cli(_args(str(bad))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "replicates must be an integer >= 1" in err


# ---- one end-to-end run -------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_design_end_to_end(tmp_path, capsys):
    """The smoke design, one replicate per truth, fitted for real; then resumed (no refit)."""
    out = tmp_path / "smoke"
    assert main_cli(_args(str(DESIGNS / "smoke.toml"), "--out", str(out), "--replicates", "1",
                          "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    res = pd.read_csv(out / "results.csv")
    assert len(res) == 2 and res["n_subjects"].eq(30).all()
    assert res["truth"].tolist() == [0.0, 1.0]
    assert res["p_gt"].between(0, 1).all() and (res["lower"] < res["upper"]).all()
    assert res["onset_coverage"].between(0, 1).all() and res["onset_n"].eq(30).all()
    assert res["data_seed"].nunique() == 2
    assert [t["n"] for t in summary["truths"]] == [1, 1]
    assert not (out / "work").exists()
    assert math.isfinite(res["wall_s"].sum())
    before = (out / "results.csv").read_text()
    assert main_cli(_args(str(DESIGNS / "smoke.toml"), "--out", str(out), "--replicates",
                          "1")) == 0
    assert (out / "results.csv").read_text() == before


def test_workers_must_be_positive(tmp_path, capsys):
    design = _write(tmp_path, GOOD)
    assert main_cli(_args(str(design), "--out", str(tmp_path / "o"), "--workers", "0")) == 2
    assert "workers = 0 must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_workers_give_the_same_rows(tmp_path):
    """Two worker processes (chains in one thread each) give the rows of the sequential run:
    the draws do not depend on threads or processes. Only the timings differ."""
    from pkpd.design import run_design
    run_design(DESIGNS / "smoke.toml", out=tmp_path / "seq", replicates=1, progress=False)
    run_design(DESIGNS / "smoke.toml", out=tmp_path / "par", replicates=1, progress=False,
               workers=2)
    a, b = (pd.read_csv(tmp_path / d / "results.csv") for d in ("seq", "par"))
    timing = ["wall_s", "sampling_s", "pilot_s", "compile_s"]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    assert not (tmp_path / "par" / "work").exists()
