"""Benchmark: wall time of `pkpd --help` (and of each command's --help) from a cold process.

Issue 13 asks for `pkpd --help` in under 1 s of wall time on the development machine (2 cores).
Measured in the same run, each the median of REPS fresh processes:
  * baseline: `python -c pass` (the interpreter's own start-up);
  * `python -m pkpd.cli --help` and `python -m pkpd.cli COMMAND --help` for every command;
  * `python -c "import pkpd"`, and `import pkpd.pk.engine` (what a command that computes pays for
    JAX) for scale.
Ratios are against the baseline. The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPS = 7
COMMANDS = ("exposure", "predict", "simulate", "recist", "fit", "summary", "cards", "demo")


def wall(args: list[str], reps: int = REPS) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    base = wall(["-c", "pass"])
    print(f"baseline `python -c pass`: {base * 1e3:.0f} ms")
    top = wall(["-m", "pkpd.cli", "--help"])
    print(f"pkpd --help: {top * 1e3:.0f} ms ({top / base:.1f}x baseline)")
    sub = {c: wall(["-m", "pkpd.cli", c, "--help"]) for c in COMMANDS}
    for c, t in sub.items():
        print(f"pkpd {c} --help: {t * 1e3:.0f} ms ({t / base:.1f}x baseline)")
    imp = wall(["-c", "import pkpd"])
    eng = wall(["-c", "import pkpd.pk.engine"], reps=3)
    print(f"import pkpd: {imp * 1e3:.0f} ms; import pkpd.pk.engine (JAX): {eng * 1e3:.0f} ms")
    print(json.dumps({
        "help_s": round(top, 3), "help_ratio_vs_python": round(top / base, 2),
        "slowest_command_help_s": round(max(sub.values()), 3),
        "import_pkpd_s": round(imp, 3), "import_engine_s": round(eng, 3),
        "under_1s": bool(top < 1.0 and max(sub.values()) < 1.0),
    }))


if __name__ == "__main__":
    main()
