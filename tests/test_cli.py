"""The command line: the acceptance forms of `pkpd exposure` and `pkpd predict`, and bad input
reported as one clear message (row/subject, value, fix) with exit status 2 and no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, "-m", "pkpd.cli", *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def test_exposure_json_anlotinib():
    p = run("exposure", "anlotinib", "--regimen", "12 mg PO QD D1-14 Q21D", "--days", 84,
            "--json")
    d = json.loads(p.stdout)
    assert d["unit"] == "ng/mL"
    assert d["cycle_start_day"] == [0.0, 21.0, 42.0, 63.0]
    assert len(d["cmax"]) == len(d["ctrough"]) == len(d["auc"]) == 4
    assert abs(d["cmax"][2] - 49.0) <= 0.5 and abs(d["ctrough"][2] - 20.7) <= 0.05


def write_events(path, rows, cols=("ID", "TIME", "EVID", "AMT", "CMT", "II", "ADDL", "DV")):
    pd.DataFrame(rows, columns=list(cols)).to_csv(path, index=False)
    return path


def test_predict_pred_and_ipred(tmp_path):
    # 1-cpt oral anlotinib card: 12 mg into the depot (CMT 1), samples in central (CMT 2)
    rows = []
    for sid, cl in ((1, 9.26), (2, 12.0)):
        rows.append((sid, 0, 1, 12, 1, 24, 2, ".", cl))
        for t in (2, 6, 24, 50):
            rows.append((sid, t, 0, 0, 2, 0, 0, 1.0, cl))
    f = write_events(tmp_path / "ev.csv", rows,
                     ("ID", "TIME", "EVID", "AMT", "CMT", "II", "ADDL", "DV", "CL"))
    out = tmp_path / "pred.csv"
    run("predict", "--model", "anlotinib", "--data", f, "--out", out)
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["ID", "TIME", "PRED", "IPRED"]
    assert len(pred) == 8

    def bateman(t, cl, v=2010.0, ka=0.64):
        k = cl / v
        return sum(1000 * 12 * ka / (v * (ka - k)) * (np.exp(-k * (t - d)) - np.exp(-ka * (t - d)))
                   for d in (0, 24, 48) if t >= d)

    for _, r in pred.iterrows():
        assert r.PRED == pytest.approx(bateman(r.TIME, 9.26), rel=1e-9)
        assert r.IPRED == pytest.approx(bateman(r.TIME, 9.26 if r.ID == 1 else 12.0), rel=1e-9)


def test_predict_units_and_param_override(tmp_path):
    rows = [(1, 0, 1, 12000, 1, 0, 0, "."), (1, 0.25, 0, 0, 2, 0, 0, 1.0)]   # 12000 ug, 0.25 d
    f = write_events(tmp_path / "ev.csv", rows)
    out = tmp_path / "p.csv"
    run("predict", "--model", "anlotinib", "--data", f, "--out", out, "--time-unit", "day",
        "--amt-unit", "ug", "--param", "KA=1.0")
    pred = pd.read_csv(out)
    k, ka, t = 9.26 / 2010, 1.0, 6.0
    ref = 1000 * 12 * ka / (2010 * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
    assert pred.TIME.tolist() == [0.25]
    assert pred.PRED[0] == pytest.approx(ref, rel=1e-9)


BAD = {
    "negative AMT": ([(1, 0, 1, -5, 1, 0, 0, "."), (1, 1, 0, 0, 2, 0, 0, 1)], ["AMT", "-5"]),
    "missing AMT": ([(1, 0, 1, ".", 1, 0, 0, "."), (1, 1, 0, 0, 2, 0, 0, 1)], ["AMT", "row 1"]),
    "time backwards": ([(1, 5, 1, 12, 1, 0, 0, "."), (1, 2, 0, 0, 2, 0, 0, 1)],
                       ["TIME", "row 2", "ID 1"]),
    "unknown CMT": ([(1, 0, 1, 12, 7, 0, 0, "."), (1, 1, 0, 0, 2, 0, 0, 1)], ["CMT", "7"]),
    "II=0 with ADDL": ([(1, 0, 1, 12, 1, 0, 3, "."), (1, 1, 0, 0, 2, 0, 0, 1)],
                       ["ADDL", "II", "row 1"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_predict_bad_input_is_clear(tmp_path, case):
    rows, needles = BAD[case]
    f = write_events(tmp_path / "ev.csv", rows)
    p = run("predict", "--model", "anlotinib", "--data", f, "--out", tmp_path / "o.csv",
            check=False)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "Fix" in p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    assert not (tmp_path / "o.csv").exists()


def test_unknown_unit_is_clear(tmp_path):
    f = write_events(tmp_path / "ev.csv", [(1, 0, 1, 12, 1, 0, 0, "."),
                                           (1, 1, 0, 0, 2, 0, 0, 1)])
    p = run("predict", "--model", "anlotinib", "--data", f, "--out", tmp_path / "o.csv",
            "--time-unit", "fortnights", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "fortnights" in p.stderr and "Fix" in p.stderr


@pytest.mark.parametrize("text", ["12 mg PO QD D1-14 Q3X", "twelve mg PO QD", "12 mg XX QD D1"])
def test_regimen_that_does_not_parse_is_clear(text):
    p = run("exposure", "anlotinib", "--regimen", text, "--days", 42, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "Fix" in p.stderr


def test_unknown_card_is_clear():
    p = run("exposure", "aspirin", "--regimen", "12 mg PO QD D1-14 Q21D", "--days", 42,
            check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "anlotinib" in p.stderr


EP = ["--regimen", "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4",
      "--regimen", "carboplatin: AUC 5 IV 60 min D1 Q21D x4",
      "--cov", "BSA=1.8", "--cov", "GFR=100"]
DURVA = ["--regimen", "durvalumab: 1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"]


def test_simulate_writes_trajectories_and_derived(tmp_path):
    out = tmp_path / "sim.csv"
    p = run("simulate", "--model", "sclc_triplet_tgi", *DURVA, *EP, "--n", 20, "--days", 200,
            "--seed", 4, "--times", "0,42,84,126", "--residual", "--quiet", "--out", out)
    traj = pd.read_csv(out)
    pat = pd.read_csv(tmp_path / "sim_patients.csv")
    meta = json.loads((tmp_path / "sim_meta.json").read_text())
    assert list(traj.columns) == ["ID", "TIME", "IPRED", "DV"]
    assert len(traj) == 20 * 4 and sorted(traj["TIME"].unique()) == [0, 42, 84, 126]
    assert (traj["DV"] >= 0).all() and (traj["IPRED"] > 0).all()
    for col in ("nadir_mm", "time_to_nadir_day", "depth_pct", "resistance_onset_day",
                "progression_day", "KIO", "PSI", "durvalumab.CL"):
        assert col in pat.columns
    assert meta["seed"] == 4 and meta["n"] == 20 and "durvalumab" in meta["drivers"]
    assert "median depth" in p.stdout
    # the baseline column is the SLD at time 0
    first = traj[traj["TIME"] == 0].set_index("ID")["IPRED"]
    np.testing.assert_allclose(first.to_numpy(), pat.set_index("ID")["BASE"].to_numpy())


@pytest.mark.parametrize("args,needle", [
    (["--regimen", "nivolumab: 240 mg IV 30 min Q2W"], "nivolumab"),
    (["--regimen", "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4"], "BSA"),
    (["--regimen", "12 mg PO QD D1-14 Q21D"], "names no drug"),
    ([*DURVA, "--param", "BASE=-5"], "BASE"),
    ([*DURVA, "--n", "0"], "positive integer"),
    ([*DURVA, "--times", "0,x"], "--times"),
])
def test_simulate_bad_input_is_clear(tmp_path, args, needle):
    p = run("simulate", "--model", "sclc_triplet_tgi", *args, "--days", 50, "--quiet",
            "--out", tmp_path / "s.csv", check=False)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_simulate_rejects_a_pk_card(tmp_path):
    p = run("simulate", "--model", "anlotinib", *DURVA, "--out", tmp_path / "s.csv", check=False)
    assert p.returncode == 2 and "tumour card" in p.stderr


LESION_HEADER = "subject,day,lesion_id,lesion_type,organ,is_node,diameter_mm,state\n"
GOOD_LESIONS = LESION_HEADER + """P1,-3,T1,target,lung,false,30,
P1,-3,T2,target,liver,false,20,
P1,-3,NT1,nontarget,bone,false,,present
P1,42,T1,target,lung,false,18,
P1,42,T2,target,liver,false,12,
P1,42,NT1,nontarget,bone,false,,present
P1,84,T1,target,lung,false,15,
P1,84,T2,target,liver,false,10,
P1,84,NT1,nontarget,bone,false,,present
P1,126,T1,target,lung,false,25,
P1,126,T2,target,liver,false,15,
P1,126,NT1,nontarget,bone,false,,present
P2,-1,T1,target,lymph node,true,20,
P2,42,T1,target,lymph node,true,8,
P2,84,T1,target,lymph node,true,7,
"""


def test_recist_responses_and_visits(tmp_path):
    src = tmp_path / "lesions.csv"
    src.write_text(GOOD_LESIONS)
    out, visits, rows = tmp_path / "resp.csv", tmp_path / "visits.csv", tmp_path / "rows.csv"
    p = run("recist", src, "--out", out, "--visits", visits, "--rows", rows)
    resp = pd.read_csv(out).set_index("subject")
    # P1: 50 -> 30 mm (-40%, PR), 25 (PR, confirmed 42 d later), 40 (+60% and +15 mm over the
    # nadir: PD at day 126 -> PFS = 126 - 0 + 1 days, event)
    assert resp.loc["P1", "bor"] == "PR" and resp.loc["P1", "bor_confirmed"] == "PR"
    assert resp.loc["P1", "pfs_days"] == 127 and resp.loc["P1", "pfs_event"] == 1
    assert resp.loc["P1", "nadir_mm"] == 25 and resp.loc["P1", "best_pct_change"] == -50
    # P2: a node of 20 mm falls to 8 then 7 mm short axis: CR although the SLD is above 0
    assert resp.loc["P2", "bor_confirmed"] == "CR" and resp.loc["P2", "pfs_event"] == 0
    v = pd.read_csv(visits)
    assert {"target_response", "nontarget_response", "new_lesions",
            "overall_response"} <= set(v.columns)
    assert len(pd.read_csv(rows)) == 15 and "15 used" in p.stdout


BAD_LESIONS = {
    "missing column": ("subject,day,lesion_id,lesion_type,organ,diameter_mm,state\n"
                       "P1,-3,T1,target,lung,30,\n", "is_node"),
    "non-numeric diameter": (LESION_HEADER + "P1,-3,T1,target,lung,false,30,\n"
                             "P1,42,T1,target,lung,false,abc,\n", "abc"),
    "duplicate lesion and visit": (LESION_HEADER + "P1,-3,T1,target,lung,false,30,\n"
                                   "P1,42,T1,target,lung,false,20,\n"
                                   "P1,42,T1,target,lung,false,21,\n", "T1"),
    "measured before baseline": (LESION_HEADER + "P1,-20,T1,target,lung,false,30,\n"
                                 "P1,-3,T1,target,lung,false,31,\n"
                                 "P1,42,T1,target,lung,false,20,\n", "before baseline"),
    "more than 5 targets": (LESION_HEADER + "".join(
        f"P1,-3,T{i},target,organ{i},false,20,\n" for i in range(1, 7)), "5"),
}


@pytest.mark.parametrize("case", sorted(BAD_LESIONS))
def test_recist_bad_input_is_clear(tmp_path, case):
    text, needle = BAD_LESIONS[case]
    src = tmp_path / "lesions.csv"
    src.write_text(text)
    p = run("recist", src, "--out", tmp_path / "r.csv", check=False)
    assert p.returncode == 2, (case, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and needle in p.stderr, p.stderr
    assert "P1" in p.stderr or case == "missing column"
    assert "Fix" in p.stderr or "fix" in p.stderr
    assert not (tmp_path / "r.csv").exists()
