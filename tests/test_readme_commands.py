"""The README's commands, run as written in a fresh clone (with ../shared beside it), change no
tracked file: `git status` is clean afterwards (issue 13, defect 9).

Every `pkpd ...` line of the README's bash blocks is run. In the default run the one full fit
(`pkpd fit fits/phenobarbital.toml`, 4 x (1000 + 1000) draws) gets `--chains 2 --tune 50
--draws 50` appended so the suite stays quick; the `slow` test runs it exactly as written. The
set-up commands (`python3 tasks.py demo|test`) write only under the ignored out/ and .venv/,
which is checked with `git check-ignore`.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FULL_FIT = "pkpd fit fits/phenobarbital.toml"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip() if "#" in line else line.strip()
            if line.startswith("pkpd "):
                cmds.append(line)
    return cmds


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def _clone(tmp_path) -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the README's fit commands read ../shared/data")
    repo = tmp_path / "main"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    (tmp_path / "shared").symlink_to(SHARED)
    return repo


def _run_all(repo: Path, quick: bool) -> None:
    env = dict(os.environ, PYTHONPATH=str(repo), MPLBACKEND="Agg")
    cmds = readme_commands()
    assert len(cmds) >= 10 and FULL_FIT in cmds, cmds
    for cmd in cmds:
        argv = shlex.split(cmd)[1:]
        if quick and cmd == FULL_FIT:
            argv += ["--chains", "2", "--tune", "50", "--draws", "50", "--quiet"]
        p = subprocess.run([sys.executable, "-m", "pkpd.cli", *argv], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert _git(repo, "status", "--porcelain") == ""
    for made in ("out/demo/report.md", "fits/phenobarbital/fit.json", ".venv/bin/python"):
        assert _git(repo, "check-ignore", made).strip() == made


def test_readme_commands_leave_git_status_clean(tmp_path):
    repo = _clone(tmp_path)
    _run_all(repo, quick=True)
    assert (repo / "out" / "responses.csv").exists() and (repo / "out" / "sim.csv").exists()
    assert (repo / "fits" / "phenobarbital" / "fit.json").exists()


@pytest.mark.slow
def test_readme_commands_as_written_leave_git_status_clean(tmp_path):
    _run_all(_clone(tmp_path), quick=False)
