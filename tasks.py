#!/usr/bin/env python3
"""The two set-up commands of pkpd (needs only Python 3.11):

    python3 tasks.py demo    # builds .venv if needed, then runs the main job (report in out/demo)
    python3 tasks.py test    # builds .venv if needed, then ruff + the test suite

Extra arguments after ``test`` go to pytest (e.g. ``python3 tasks.py test -m slow``).
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


def ensure_env() -> None:
    if sys.version_info[:2] != (3, 11):
        print(f"pkpd needs Python 3.11 (got {sys.version.split()[0]}).", file=sys.stderr)
        sys.exit(2)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    rc = _run([PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    rc = rc or _run([PY, "-m", "pip", "install", "--quiet", "-e", ".[dev]"])
    if rc:
        print("installation failed; see the pip output above", file=sys.stderr)
        sys.exit(rc)
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_env()
    env = dict(os.environ, MPLBACKEND="Agg")
    if argv[0] == "demo":
        return _run([VENV / "bin" / "pkpd", "demo", "--out", "out/demo", *argv[1:]], env=env)
    rc = _run([VENV / "bin" / "ruff", "check", "."], env=env)
    if rc:
        return rc
    return _run([PY, "-m", "pytest", "-q", *argv[1:]], env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
