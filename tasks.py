#!/usr/bin/env python3
"""The two set-up commands of pkpd (needs only Python 3.11):

    python3 tasks.py demo    # builds .venv if needed, then runs the main job (report in out/demo)
    python3 tasks.py test    # builds .venv if needed, then ruff + the test suite
    python3 tasks.py bench NAME [ARGS]   # also installs the baselines' extra, runs bench/NAME.py

Extra arguments after ``test`` go to pytest (e.g. ``python3 tasks.py test -m slow``); the
test run uses one pytest-xdist worker per core unless they pick tests or workers. After
``bench NAME`` they go to the benchmark (e.g. ``python3 tasks.py bench fit --quick``).
``python3 tasks.py bench`` lists the benchmarks.
The environment is (re)installed whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".pkpd-install-stamp"


def _run(cmd, **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def ensure_env(extras: str = "dev") -> None:
    if sys.version_info[:2] != (3, 11):
        print(f"pkpd needs Python 3.11 (got {sys.version.split()[0]}).", file=sys.stderr)
        sys.exit(2)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if extras == "dev":     # the stamp of the plain set-up keeps its old form
        want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = STAMP if extras == "dev" else VENV / f".pkpd-install-stamp-{extras.replace(',', '-')}"
    if PY.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    rc = _run([PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    rc = rc or _run([PY, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]"])
    if rc:
        print("installation failed; see the pip output above", file=sys.stderr)
        sys.exit(rc)
    stamp.write_text(want)


def bench(argv: list[str]) -> int:
    """``bench NAME [ARGS]``: the environment with the ``bench`` extra (the baselines: pystan),
    then ``bench/NAME.py ARGS``."""
    names = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))
    if not argv or argv[0] not in names:
        print(f"usage: python3 tasks.py bench NAME [ARGS]; NAME is one of {', '.join(names)}",
              file=sys.stderr)
        return 2
    ensure_env("dev,bench")
    env = dict(os.environ, MPLBACKEND="Agg")
    return _run([PY, ROOT / "bench" / f"{argv[0]}.py", *argv[1:]], env=env)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(__doc__)
        return 2
    if argv[0] == "bench":
        return bench(argv[1:])
    ensure_env()
    env = dict(os.environ, MPLBACKEND="Agg")
    if argv[0] == "demo":
        return _run([VENV / "bin" / "pkpd", "demo", "--out", "out/demo", *argv[1:]], env=env)
    rc = _run([VENV / "bin" / "ruff", "check", "."], env=env)
    if rc:
        return rc
    return _run([PY, "-m", "pytest", "-q", *_workers(argv[1:]), *argv[1:]], env=env)


def _workers(args: list[str]) -> list[str]:
    """pytest-xdist options for the default run: one worker process per core (at most 8; the
    2-core CI machine gets 2), whole test files per worker (``--dist loadfile``) so that a
    module's expensive fixtures (fits, compiled models) are built once. Nothing is added when the
    caller chose: ``-n``/``--numprocesses``, ``--dist``, ``-p no:xdist`` or ``-k``/a path (a
    selection small enough for one process)."""
    chose = any(a.startswith(("-n", "--numprocesses", "--dist", "-k")) or a == "no:xdist"
                or (ROOT / a.split("::")[0]).exists() for a in args)
    if chose:
        return []
    return ["-n", str(min(8, max(1, os.cpu_count() or 1))), "--dist", "loadfile"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
