"""The ``pkpd design`` command: operating characteristics of a trial design.

    pkpd design fits/designs/three_arm_40.toml [--out FOLDER] [--replicates R] [--workers N]
                [--json] [--quiet]

Runs (or resumes) the design's replicate trials, writes results.csv, summary.json, summary.md and
oc.png in the results folder, and prints the summary table (``--json``: summary.json instead).
Bad input: one line on stderr, exit status 2; Ctrl-C: exit 130, finished replicates kept.
"""

from __future__ import annotations

import json
import sys

from ..errors import FitInterrupted, PkpdError

__all__ = ["add_parser", "main_cli"]


def add_parser(sub):
    """Add the ``design`` subcommand to an argparse subparsers object; returns its parser."""
    p = sub.add_parser("design", help="operating characteristics of a trial design: replicate "
                       "simulated trials, each fitted (fits/designs/*.toml)")
    p.add_argument("spec", help="design spec (TOML), e.g. fits/designs/three_arm_40.toml")
    p.add_argument("--out", help="results folder (default: next to the spec, named after the "
                   "design); a rerun resumes it, skipping finished replicates")
    p.add_argument("--replicates", type=int, help="replicate trials per truth (default: the "
                   "spec's [design] replicates)")
    p.add_argument("--workers", type=int, default=1, help="replicate fits at a time, each in "
                   "its own process with its chains in one thread (default 1; use the number "
                   "of free cores)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=main_cli)
    return p


def main_cli(args) -> int:
    """Run ``pkpd design`` for parsed ``args``; returns the exit status (0, 2 bad input, 130
    Ctrl-C)."""
    from .run import run_design
    from .summary import summary_markdown
    try:
        summary = run_design(args.spec, out=args.out, replicates=args.replicates,
                             progress=not getattr(args, "quiet", False),
                             workers=getattr(args, "workers", 1))
    except FitInterrupted as exc:
        print(f"pkpd design: interrupted; finished replicates are kept in results.csv and the "
              f"running fit's completed batches are checkpointed ({exc}); run the same command "
              "again to resume", file=sys.stderr)
        return exc.exit_code
    except PkpdError as exc:
        print(f"pkpd design: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.json:
        from .summary import _jsonable
        print(json.dumps(_jsonable(summary), indent=1))
    else:
        if summary.get("kind") == "sbc":
            from .sbc import sbc_markdown
            print(sbc_markdown(summary["design"], summary))
        else:
            print(summary_markdown(summary))
    return 0
