"""Success rules: strict parsing, P(success) over replicates with a Wilson interval (oracle: the
interval solved numerically from its definition), and HR rules on independent patients (an arm
against its own copy: HR exactly 1 with common random numbers, P(HR < 1) near 1/2 with an
independent control)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from pkpd.cli import main
from pkpd.errors import SpecError
from pkpd.survival.hazard import hazard_ratio
from pkpd.trial import ENDPOINTS, compare, load_scenario, run_trial
from pkpd.trial.success import parse_rule, wilson_interval


@pytest.mark.parametrize("text,arms,match", [
    ("orr_confirmed => 0.75", None, "operator '=>'"),
    ("orr_confirmed == 0.75", None, "operator '=='"),
    ("orr_confimred >= 0.75", None, "did you mean 'orr_confirmed'"),
    ("orr_confirmed >= high", None, "is not 'ENDPOINT OP NUMBER"),
    ("hr_pfs < 0.7", ["a", "ep"], "needs 'vs ARM'"),
    ("hr_pfs < 0.7 vs ep", None, "runs one arm"),
    ("hr_pfs < 0.7 vs epp", ["triplet", "ep"], "no arm 'epp'.*did you mean 'ep'"),
    ("orr >= 0.5 vs ep", ["triplet", "ep"], "drop 'vs ep'"),
    ("median_pfs_months > 50%", None, "not a fraction"),
])
def test_rule_parsing_errors(text, arms, match):
    with pytest.raises(SpecError, match=match):
        parse_rule(text, arms, endpoints=ENDPOINTS)


def test_rule_parsing():
    r = parse_rule(" orr_confirmed >= 75% ", endpoints=ENDPOINTS)
    assert (r.endpoint, r.op, r.threshold, r.control) == ("orr_confirmed", ">=", 0.75, None)
    r = parse_rule("hr_pfs < 0.7 vs ep", ["triplet", "ep"], endpoints=ENDPOINTS)
    assert (r.endpoint, r.op, r.threshold, r.control) == ("hr_pfs", "<", 0.7, "ep")
    assert r.met([0.5, 0.7, np.nan, 0.9]).tolist() == [True, False, False, False]


@pytest.mark.parametrize("k,n", [(0, 10), (7, 20), (10, 10), (37, 50)])
def test_wilson_interval_solves_its_definition(k, n):
    """The Wilson bounds are the p with |k/n - p| = z sqrt(p (1 - p) / n)."""
    z = 1.6448536269514722                      # 95th percentile of N(0, 1)
    ph = k / n

    def f(p):
        return (ph - p) ** 2 - z * z * p * (1 - p) / n

    lo = 0.0 if k == 0 else brentq(f, 1e-12, min(ph, 1 - 1e-9))
    hi = 1.0 if k == n else brentq(f, max(ph, 1e-9), 1 - 1e-12)
    got = wilson_interval(k, n, 0.90)
    assert got == pytest.approx((lo, hi), abs=1e-10)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_always_true_and_never_true_rules():
    res = run_trial("ep", n=20, replicates=3, seed=5,
                    success=["orr_confirmed >= 0", "median_depth_pct > 1000"])
    s = res.success.set_index("rule")
    assert s.loc["orr_confirmed >= 0", "p_success"] == 1.0
    assert s.loc["median_depth_pct > 1000", "p_success"] == 0.0
    assert s.loc["all", "p_success"] == 0.0
    assert s.loc["orr_confirmed >= 0", ["lo", "hi"]].tolist() == \
        pytest.approx(list(wilson_interval(3, 3)))
    assert (s.replicates == 3).all() and (s.arm == "ep").all()
    # the same endpoints as without rules
    plain = run_trial("ep", n=20, replicates=3, seed=5)
    assert plain.endpoints.equals(res.endpoints) and plain.success is None


def _arm(tmp_path, name):
    """The ep scenario under another name, scans exactly on their days (one compiled grid for
    every replicate keeps this test fast)."""
    text = load_scenario("ep").path.read_text().replace('name = "ep"', f'name = "{name}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("window_days = 7", "window_days = 0"))
    return str(path)


def test_hr_rule_against_itself_uses_independent_patients(tmp_path):
    ep, copy = _arm(tmp_path, "ctl"), _arm(tmp_path, "ep_copy")
    c = compare([ep, copy], n=20, replicates=24, seed=5,
                success=[f"hr_pfs < 1 vs {ep}", f"logrank_p < 0.05 vs {ep}"])
    # paired (common random numbers): the copy is the same trial, HR exactly 1
    assert c.hazard.pfs_hr_median.iloc[0] == pytest.approx(1.0, abs=1e-12)
    # the rule uses an independent control run: other patients, same draws
    ctrl, arm = c.controls[ep], c.results[copy]
    assert not np.array_equal(ctrl.patients.WT, c.results[ep].patients.WT)
    hr = [hazard_ratio(ctrl.patients.query("replicate == @r").pfs_days,
                       ctrl.patients.query("replicate == @r").pfs_event,
                       arm.patients.query("replicate == @r").pfs_days,
                       arm.patients.query("replicate == @r").pfs_event).hazard_ratio
          for r in range(24)]
    s = c.success.set_index("rule")
    assert list(c.success.arm.unique()) == [copy]          # the control is not tested
    assert s.loc[f"hr_pfs < 1 vs {ep}", "met"] == sum(h < 1 for h in hr)
    # same regimen: P(HR < 1) is 1/2 in truth; 24 replicates give sd 0.10
    assert 0.2 <= s.loc[f"hr_pfs < 1 vs {ep}", "p_success"] <= 0.8
    assert np.std(np.log(hr)) > 0.1               # a real sampling spread, not a tie
    # a log-rank test at 5% of identical arms rejects rarely
    assert s.loc[f"logrank_p < 0.05 vs {ep}", "p_success"] <= 0.25


def test_cli_success_json(capsys):
    assert main(["trial", "--scenario", "ep", "--n", "20", "--replicates", "3", "--seed", "5",
                 "--success", "orr_confirmed >= 0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["success"][0]["rule"] == "orr_confirmed >= 0"
    assert out["success"][0]["p_success"] == 1.0


@pytest.mark.parametrize("rule,needle", [("orr >== 1", "operator"),
                                         ("hr_pfs < 0.7 vs ep", "runs one arm")])
def test_cli_bad_rule_is_one_line_with_exit_status_2(capsys, rule, needle):
    assert main(["trial", "--scenario", "ep", "--n", "5", "--success", rule]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err
