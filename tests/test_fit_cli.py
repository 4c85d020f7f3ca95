"""`pkpd fit` and `pkpd summary`: validation-only runs, one-line errors with exit status 2, and a
tiny end-to-end fit whose folder is checked file by file."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pkpd.cli import main
from pkpd.fit import load_spec

REPO = Path(__file__).resolve().parents[1]
FITS = REPO / "fits"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PHENO_CSV = SHARED / "pk_phenobarbital" / "pheno_pharmpy.csv"
pytestmark = [
    pytest.mark.skipif(not PHENO_CSV.exists(), reason="shared pheno data missing"),
    pytest.mark.filterwarnings("ignore::pkpd.dosing.events.PkpdDataWarning"),
]


def pheno_text(tmp_path: Path, edit=None) -> Path:
    """A copy of fits/phenobarbital.toml in tmp_path (absolute data path), optionally edited."""
    text = (FITS / "phenobarbital.toml").read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{PHENO_CSV.as_posix()}"', text)
    if edit:
        edited = edit(text)
        assert edited != text, "the edit did not apply"
        text = edited
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return p


def run_cli(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pkpd fit: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


def test_fit_check_reference_spec(capsys):
    rc, out, err = run_cli(["fit", str(FITS / "phenobarbital.toml"), "--check"], capsys)
    assert rc == 0, err
    assert "valid; 59 subjects, 155 observations" in out
    assert "population parameters: theta1, theta2, theta3, omega11, omega22, sigma" in out


def _insert_fixed(text: str) -> str:
    return text.replace("[theta]\n", "[fixed]\nV = 2.0\n\n[theta]\nV = \"LogNormal(0, 1)\"\n", 1)


@pytest.mark.parametrize("edit, needles", [
    (lambda t: t.replace('CL = "theta1', 'CLX = "theta1'), ["'CLX' is not a parameter"]),
    (_insert_fixed, ["prior on the fixed parameter 'V'"]),
    (lambda t: t.replace('model = "proportional"', 'model = "exponentialx"'),
     ["[residual]", "'exponentialx' is unknown"]),
    (lambda t: t.replace('model = "proportional"', 'model = "combined2"'),
     ["needs a prior for 'add'"]),
    (lambda t: t.replace('name = "nutpie"', 'name = "gibbs"'), ["sampler 'gibbs' is unknown"]),
    (lambda t: t.replace('CL = "theta1*WGT*exp(eta_CL)"', 'CL = "__import__(\'os\')"'),
     ["[individual.CL]", "is not allowed"]),
])
def test_fit_bad_spec_exits_2(tmp_path, capsys, edit, needles):
    spec = pheno_text(tmp_path, edit)
    rc, out, err = run_cli(["fit", str(spec), "--check"], capsys)
    assert_one_line_error(rc, err, *needles)
    assert out == ""


def test_fit_missing_column_exits_2(tmp_path, capsys):
    csv = tmp_path / "sld.csv"
    pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 42.0, 0.0], "SLD": [50.0, 40.0, 70.0]}).to_csv(
        csv, index=False)
    spec = tmp_path / "sf.toml"
    spec.write_text(f"""
[model]
tgi = "stein_fojo"
[data]
path = "{csv.name}"
subject = "ID"
time = "TIME"
dv = "DV"
[theta]
b = "Normal(4, 1)"
s = "Normal(-4, 1)"
g = "Normal(-5, 1)"
[individual]
y0 = "exp(b + eta_b)"
d = "exp(s)"
g = "exp(g)"
[residual]
model = "proportional"
prop = "HalfNormal(1)"
""")
    rc, out, err = run_cli(["fit", str(spec), "--check"], capsys)
    assert_one_line_error(rc, err, "column(s) DV not found", "SLD")
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(["fit", str(spec), "--out", str(out_dir), "--quiet"], capsys)
    assert_one_line_error(rc, err, "column(s) DV not found")
    assert not out_dir.exists()                              # stopped before sampling


def test_fit_missing_spec_file_exits_2(tmp_path, capsys):
    rc, out, err = run_cli(["fit", str(tmp_path / "nope.toml"), "--check"], capsys)
    assert_one_line_error(rc, err, "nope.toml does not exist")


def test_no_traceback_from_the_real_command(tmp_path):
    """The installed entry point: python -m pkpd.cli, stderr one line, exit status 2."""
    spec = pheno_text(tmp_path, lambda t: t.replace("[theta]\n", "[theta]\ntheta9 = "
                                                    "\"Normal(0, 1)\"\n", 1))
    p = subprocess.run([sys.executable, "-W", "ignore", "-m", "pkpd.cli", "fit", str(spec),
                        "--check"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert p.stderr.startswith("pkpd fit: error: ") and "'theta9' is not used" in p.stderr
    assert "Traceback" not in p.stderr


def test_summary_without_fit_json_exits_2(tmp_path, capsys):
    rc, out, err = run_cli(["summary", str(tmp_path)], capsys)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pkpd summary: error: ")
    assert "is not a finished fit (no fit.json)" in lines[0]
    # an interrupted run's checkpoints are pointed to
    (tmp_path.parent / f".{tmp_path.name}.partial").mkdir()
    rc, out, err = run_cli(["summary", str(tmp_path)], capsys)
    assert rc == 2 and "resume" in err


def test_end_to_end_tiny_fit(tmp_path, capsys):
    """2 chains x (60 tune + 60 draws). max_treedepth = 6 bounds the cost of the barely adapted
    chains (with the default 10 this run takes over a minute on a busy 2-core machine)."""
    spec = pheno_text(tmp_path, lambda t: t.replace("seed = 1985", "seed = 1985\n"
                                                    "max_treedepth = 6"))
    out_dir = tmp_path / "fit"
    rc, out, err = run_cli(["fit", str(spec), "--chains", "2", "--tune", "60", "--draws", "60",
                            "--out", str(out_dir), "--quiet"], capsys)
    assert rc == 0, err
    assert f"wrote {out_dir}" in out
    for f in ("posterior.nc", "summary.csv", "fit.json", "report.md", "data_rows.csv"):
        assert (out_dir / f).is_file(), f
    assert not (tmp_path / ".fit.partial").exists() and not (tmp_path / ".fit.writing").exists()
    summary = pd.read_csv(out_dir / "summary.csv")
    assert list(summary.columns) == ["parameter", "mean", "sd", "q5", "q95", "ess_bulk",
                                     "r_hat"]
    assert list(summary["parameter"]) == ["theta1", "theta2", "theta3", "omega11", "omega22",
                                          "sigma"]
    assert (summary["sd"] > 0).all() and (summary["q5"] < summary["q95"]).all()
    # a broad sanity range for CL/kg (NONMEM: 0.0047 L/h/kg), even from 60 draws
    assert 0.002 < summary.set_index("parameter").loc["theta1", "mean"] < 0.01
    rec = json.loads((out_dir / "fit.json").read_text())
    for k in ("data_sha256", "spec_sha256", "seeds", "versions", "sampler", "timing",
              "diagnostics"):
        assert k in rec, k
    assert rec["data_sha256"] == hashlib.sha256(PHENO_CSV.read_bytes()).hexdigest()
    assert rec["spec_sha256"] == hashlib.sha256(spec.read_bytes()).hexdigest()
    assert rec["sampler"]["chains"] == 2 and rec["sampler"]["draws"] == 60
    assert rec["sampler"]["max_treedepth"] == 6
    assert rec["seeds"]["master"] == 1985 and len(rec["seeds"]["batches"]) == 1
    assert rec["n_subjects"] == 59 and rec["n_obs"] == 155
    import arviz as az
    idata = az.from_netcdf(out_dir / "posterior.nc")
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 60
    assert idata.log_likelihood["y_subject"].shape == (2, 60, 59)

    rc, out, err = run_cli(["summary", str(out_dir)], capsys)
    assert rc == 0, err
    assert "fit phenobarbital: 59 subjects, 155 observations; sampler nutpie 2x(60+60)" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("parameter"))
    assert header.split() == ["parameter", "mean", "sd", "q5", "q95", "ess_bulk", "r_hat"]
    for name in summary["parameter"]:
        assert re.search(rf"(?m)^\s*{name}\s+\S+", out), name


def _git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="not a git checkout")
@pytest.mark.parametrize("name", ["phenobarbital", "oak_stein_fojo", "bauer2019_nuts",
                                  "triplet_recovery", "triplet_recovery_psi0"])
def test_readme_fit_writes_only_ignored_files(name):
    """`pkpd fit fits/NAME.toml` (the README's command) writes fits/NAME/ and its hidden
    siblings, which git ignores; the committed reference result is in fits/reference/NAME/,
    where a run does not write."""
    from pkpd.fit.folders import FIT_FILES, FitFolders
    from pkpd.fit.run import default_out

    spec = load_spec(FITS / f"{name}.toml")
    dirs = FitFolders.at(default_out(spec))
    assert dirs.out == FITS / name
    written = [dirs.out / f for f in sorted(FIT_FILES)] + [
        dirs.partial / "batch0.nc", dirs.writing / "fit.json", dirs.old / "fit.json"]
    rel = [str(p.relative_to(REPO)) for p in written]
    ignored = _git("check-ignore", "--no-index", *rel)
    assert sorted(ignored.stdout.split()) == sorted(rel), ignored.stdout + ignored.stderr
    assert _git("ls-files", f"fits/{name}/").stdout == ""          # nothing tracked there
    tracked = _git("ls-files", f"fits/reference/{name}/").stdout.split()
    assert f"fits/reference/{name}/summary.csv" in tracked
    assert f"fits/reference/{name}/fit.json" in tracked
    ref = _git("check-ignore", "--no-index", f"fits/reference/{name}/summary.csv")
    assert ref.returncode == 1                                     # not ignored


def test_summary_of_an_unrun_fit_points_to_the_reference(tmp_path, capsys):
    """`pkpd summary fits/NAME` before any run: the reference result is in fits/reference/."""
    shutil.copytree(FITS / "reference" / "phenobarbital", tmp_path / "reference" / "pheno")
    rc, out, err = run_cli(["summary", str(tmp_path / "pheno")], capsys)
    assert rc == 2 and out == ""
    assert f"The committed reference result is in {tmp_path / 'reference' / 'pheno'}" in err
    rc, out, err = run_cli(["summary", str(tmp_path / "reference" / "pheno")], capsys)
    assert rc == 0 and "fit phenobarbital: 59 subjects" in out
