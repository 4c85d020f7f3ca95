"""The ``pkpd`` command line.

    pkpd exposure DRUG --regimen "TEXT" --days N [--cov NAME=VALUE ...] [--json]
    pkpd predict --model CARD --data EVENTS.csv [--param NAME=VALUE ...] --out PRED.csv
    pkpd cards [NAME]
    pkpd demo [--out DIR]

Errors caused by input (data, regimen, units, cards) are printed as one message naming the row or
subject, the value and the fix, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PkpdError


def _pairs(items, what: str) -> dict[str, float]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise PkpdError(f"{what} {it!r} is not NAME=VALUE. Fix: e.g. {what} CL=9.3")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise PkpdError(f"{what} {it!r}: {v!r} is not a number") from None
    return out


def _cmd_exposure(a) -> int:
    from .cards import load_card
    from .exposure import cycle_exposure
    from .regimen import parse_regimen

    card = load_card(a.drug)
    reg = parse_regimen(a.regimen)
    res = cycle_exposure(card, reg, a.days, covariates=_pairs(a.cov, "--cov") or None,
                         params=_pairs(a.param, "--param") or None)
    if a.json:
        d = res.to_dict()
        d["regimen"] = a.regimen
        print(json.dumps(d))
    else:
        print(f"{card.name}: {a.regimen} over {a.days:g} days "
              f"(typical values; concentration in {res.unit}, AUC in {res.auc_unit})")
        print(res.to_frame().to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


def _cmd_predict(a) -> int:
    from .cards import load_card
    from .events import read_nonmem
    from .io import atomic_write_csv
    from .predict import predict

    card = load_card(a.model)
    model = card.model()
    table = read_nonmem(a.data, time_unit=a.time_unit, amt_unit=a.amt_unit, n_cmt=model.n_cmt)
    out = predict(table, card, params=_pairs(a.param, "--param") or None)
    atomic_write_csv(out, a.out)
    print(f"wrote {len(out)} predictions for {out['ID'].nunique()} subjects to {a.out} "
          f"(concentrations in {card.conc_unit})")
    return 0


def _cmd_cards(a) -> int:
    from .cards import list_cards, load_card

    if a.name:
        print(load_card(a.name).summary())
    else:
        for n in list_cards():
            c = load_card(n)
            print(f"{n:28s} {c.raw['card'].get('description', '')[:70]}")
    return 0


def _cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(Path(a.out), n_patients=a.n)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pkpd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("exposure", help="per-cycle Cmax, Ctrough and AUC of a regimen")
    e.add_argument("drug", help="model card name (e.g. anlotinib, durvalumab) or .toml path")
    e.add_argument("--regimen", required=True, help='e.g. "12 mg PO QD D1-14 Q21D"')
    e.add_argument("--days", type=float, required=True, help="simulation horizon (days)")
    e.add_argument("--cov", action="append", metavar="NAME=VALUE",
                   help="patient covariate (WT, HT, BSA, GFR, ...)")
    e.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="override a typical value (card units)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_exposure)

    q = sub.add_parser("predict", help="predict at every EVID 0/2 record of a NONMEM file")
    q.add_argument("--model", required=True, help="model card name or .toml path")
    q.add_argument("--data", required=True, help="NONMEM-style CSV")
    q.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="override a typical value (card units)")
    q.add_argument("--out", required=True, help="output CSV (ID, TIME, PRED[, IPRED])")
    q.add_argument("--time-unit", default="h", help="unit of TIME/II (default h)")
    q.add_argument("--amt-unit", default="mg", help="unit of AMT (default mg)")
    q.set_defaults(func=_cmd_predict)

    c = sub.add_parser("cards", help="list model cards, or show one")
    c.add_argument("name", nargs="?")
    c.set_defaults(func=_cmd_cards)

    d = sub.add_parser("demo", help="the main job: triplet-regimen exposure report")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--n", type=int, default=500, help="virtual patients for the IIV bands")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PkpdError as exc:
        print(f"pkpd {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"pkpd {args.cmd}: error: file not found: {exc.filename}. Fix: check the path",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
