"""Run benchmarks on a base git revision and on the working tree, interleaved, in one run.

    .venv/bin/python bench/compare.py --base main~3
    .venv/bin/python bench/compare.py --base v0.1.0 --bench pk_population "simulate --quick"

For each benchmark, the base tree (a temporary ``git worktree`` of ``--base``) and the working tree
run alternately ``--repeats`` times (base, new, base, new, ...), each in a fresh process with its
own copy of the package on ``PYTHONPATH``. The last JSON line of every run is parsed. For each
numeric key the script prints the median of each side, the ratio new/base, and the noise: the
largest relative spread between repeats of the same tree. A ratio outside ``1 +- noise`` is flagged.
The last line is one JSON object ``{bench: {key: ratio}}``. The temporary worktree is removed
at the end (it is the only thing this script creates).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["cli_startup", "pk_population", "simulate --quick"]


def _run(tree: Path, bench: str) -> dict:
    name, *args = shlex.split(bench)
    env = dict(os.environ, PYTHONPATH=str(tree), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(tree / "bench" / f"{name}.py"), *args], cwd=tree,
                       env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{bench} failed in {tree} (exit {r.returncode}):\n{r.stderr[-2000:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{bench} printed no JSON line in {tree}")
    return json.loads(lines[-1])


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int | float):
            out[prefix + k] = float(v)
        elif isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}."))
    return out


def _spread(values: list[float]) -> float:
    m = statistics.median(values)
    return (max(values) - min(values)) / abs(m) if m else 0.0


def compare(bench: str, base: Path, new: Path, repeats: int) -> dict[str, float]:
    runs = {"base": [], "new": []}
    for i in range(repeats):
        for side, tree in (("base", base), ("new", new)):
            print(f"[{bench}] {side} run {i + 1}/{repeats}", file=sys.stderr, flush=True)
            runs[side].append(_numbers(_run(tree, bench)))
    ratios = {}
    print(f"\n{bench}\n  {'key':44s} {'base':>12s} {'new':>12s} {'new/base':>9s} {'noise':>7s}")
    for key in runs["base"][0]:
        b = [r[key] for r in runs["base"] if key in r]
        n = [r[key] for r in runs["new"] if key in r]
        if not b or not n:
            continue
        mb, mn = statistics.median(b), statistics.median(n)
        ratio = mn / mb if mb else float("nan")
        noise = max(_spread(b), _spread(n))
        flag = "" if abs(ratio - 1) <= max(noise, 0.02) or mb == mn else "  <-- outside noise"
        ratios[key] = round(ratio, 4)
        print(f"  {key:44s} {mb:12.5g} {mn:12.5g} {ratio:9.3f} {noise:7.1%}{flag}")
    return ratios


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--bench", nargs="+", default=DEFAULT,
                    help="benchmarks (file name in bench/ and its arguments, quoted)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pkpd-bench-base-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base), a.base],
                       cwd=ROOT, check=True)
        try:
            out = {b: compare(b, base, ROOT, a.repeats) for b in a.bench}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
