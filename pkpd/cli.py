"""The ``pkpd`` command line.

    pkpd exposure DRUG --regimen "TEXT" --days N [--cov NAME=VALUE ...] [--param NAME=VALUE]
                  [--window DAYS] [--json]
    pkpd predict --model CARD --data EVENTS.csv [--param NAME=VALUE ...] --out PRED.csv
                 [--rows ROWS.csv]
    pkpd simulate --model CARD --regimen "DRUG: TEXT" [--regimen ...] --n N --days D --seed S
                  --out FILE(.csv|.nc) [--times T,T,...] [--param NAME=VALUE] [--residual]
    pkpd recist LESIONS.csv|.xlsx|SDTM_FOLDER --out RESPONSES.csv [--visits VISITS.csv]
                [--rows ROWS.csv] [--subjects SUBJECTS.csv] [--irecist] [--confirm-days 28]
                [--sd-min-days 42] [--evaluator INVESTIGATOR] [--all-errors] [--errors E.csv]
    pkpd fit SPEC.toml [--out DIR] [--check] [--chains N --tune N --draws N --seed S] [--restart]
    pkpd summary FIT_FOLDER
    pkpd cards [NAME]
    pkpd demo [--out DIR]
    pkpd trial --scenario NAME [--n N] [--replicates R] [--seed S] [--json] [--dask ADDRESS]
               [--card CARD] [--posterior FIT_FOLDER] [--success RULE ...]
    pkpd compare SCENARIO SCENARIO... [--n N] [--replicates R] [--seed S] [--json]
                 [--plots PREFIX] [--card CARD] [--posterior FIT_FOLDER] [--success RULE ...]
    pkpd --version;  pkpd COMMAND --help;  pkpd --debug COMMAND ... (traceback of a bug)

Errors caused by input (data, regimen, units, cards, specs) are printed as one message naming the
row or subject, the value and the fix, with exit status 2 and no traceback. Ctrl-C exits with 130;
an unexpected error prints one line naming the action and exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PkpdError


def _pairs(items, what: str) -> dict[str, float]:
    """``NAME=VALUE`` options as a dict. Names are checked by the card (the parameters or
    covariates it knows); a covariate must be finite, a parameter is checked against its
    domain by the card."""
    import math

    example = {"--param": "CL=9.3", "--set": "PSI=0"}.get(what, "WT=70")
    out = {}
    for it in items or []:
        if "=" not in it:
            raise PkpdError(f"{what} {it!r} is not NAME=VALUE. Fix: e.g. {what} {example}")
        k, v = (x.strip() for x in it.split("=", 1))
        if not k:
            raise PkpdError(f"{what} {it!r} has no name. Fix: e.g. {what} {example}")
        if k in out:
            raise PkpdError(f"{what} {k} is given twice ({out[k]:g} and {v}). Fix: give each "
                            "name once")
        try:
            out[k] = float(v)
        except ValueError:
            raise PkpdError(f"{what} {it!r}: {v!r} is not a number. Fix: e.g. {what} "
                            f"{example}") from None
        if what != "--param" and not math.isfinite(out[k]):
            raise PkpdError(f"{what} {it!r}: {v!r} is not a finite number. Fix: e.g. {what} "
                            f"{example}")
    return out


def _cmd_exposure(a) -> int:
    from .cards.card import load_card
    from .dosing.regimen import parse_regimen
    from .pk.exposure import cycle_exposure

    card = load_card(a.drug)
    reg = parse_regimen(a.regimen)
    res = cycle_exposure(card, reg, a.days, covariates=_pairs(a.cov, "--cov") or None,
                         params=_pairs(a.param, "--param") or None, window_days=a.window)
    if a.json:
        d = res.to_dict()
        d["regimen"] = a.regimen
        print(json.dumps(d))
        return 0
    per = ("" if res.window_days is None else
           f", per {res.window_days:g}-day window" + ("" if a.window else
                                                      " (continuous dosing has no cycle)"))
    print(f"{card.name}: {a.regimen} over {a.days:g} days{per} "
          f"(typical values; concentration in {res.unit}, AUC in {res.auc_unit})")
    print(res.to_frame().to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    ss = res.steady_state
    if ss is not None:
        print(f"steady state of {ss.phase} (dosing interval {ss.dosing_interval_h:g} h): "
              f"Cmax,ss {ss.cmax:.4g} at {ss.tmax_h:.3g} h after the dose, Ctrough,ss "
              f"{ss.ctrough:.4g}, Cavg,ss {ss.cavg:.4g} {res.unit}; AUCtau,ss {ss.auc_tau:.4g}, "
              f"AUC per day {ss.auc_per_day:.4g} {res.auc_unit}; accumulation ratio (AUC) "
              f"{ss.accumulation_ratio:.3g}")
    return 0


def _cmd_predict(a) -> int:
    from .cards.card import load_card
    from .dosing.events import read_nonmem, row_account
    from .io import atomic_write_csv
    from .pk.predict import predict

    card = load_card(a.model)
    inputs = {Path(a.data).resolve(): "--data"}
    if card.path is not None:
        inputs[Path(card.path).resolve()] = "--model"
    for flag in ("out", "rows"):
        target = getattr(a, flag)
        if target and Path(target).resolve() in inputs:
            raise PkpdError(f"--{flag} {target} is the {inputs[Path(target).resolve()]} input "
                            "file; pkpd does not overwrite its inputs. Fix: give --"
                            f"{flag} another file name")
    model = card.model()
    table = read_nonmem(a.data, time_unit=a.time_unit, amt_unit=a.amt_unit, n_cmt=model.n_cmt)
    out = predict(table, card, params=_pairs(a.param, "--param") or None)
    atomic_write_csv(out, a.out)
    if a.rows:     # what became of every line of --data
        atomic_write_csv(row_account(table, predicted=True), a.rows)
    print(f"wrote {len(out)} predictions for {out['ID'].nunique()} subjects to {a.out} "
          f"(concentrations in {card.conc_unit})")
    return 0


def _cmd_simulate(a) -> int:
    import numpy as np

    from .tumour.simulate import simulate

    times = None
    if a.times:
        try:
            times = np.array([float(x) for x in a.times.split(",") if x.strip()])
        except ValueError:
            raise PkpdError(f"--times {a.times!r} is not a comma-separated list of days. "
                            "Fix: e.g. --times 0,42,84,126") from None
    sim = simulate(a.model, a.regimen, a.days, n=a.n, seed=a.seed, times=times,
                   covariates=_pairs(a.cov, "--cov") or None,
                   params=_pairs(a.param, "--param") or None, residual=a.residual,
                   progress=not a.quiet)
    paths = sim.write(a.out)
    pat = sim.patients
    n = len(pat)
    med = pat[["depth_pct", "time_to_nadir_day", "resistance_onset_day",
               "progression_day"]].median()
    print(f"{a.model}: {n} patient(s), {a.days:g} days; median depth {med['depth_pct']:.1f}%, "
          f"time to nadir {med['time_to_nadir_day']:.0f} d, resistance onset "
          f"{med['resistance_onset_day']:.0f} d, model progression {med['progression_day']:.0f} d")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


RESPONSE_COLUMNS = ["subject", "bor", "bor_confirmed", "pfs_days", "pfs_event",
                    "best_pct_change", "nadir_mm"]


def _cmd_recist(a) -> int:
    import dataclasses

    import pandas as pd

    from .clinical import (
        PROBLEM_COLUMNS,
        DataProblems,
        read_lesions,
        read_sdtm,
        read_subjects,
    )
    from .clinical.recist import RecistConfig, evaluate
    from .io import atomic_write_csv

    src = Path(a.lesions)
    if not src.exists():
        raise PkpdError(f"{src} does not exist. Fix: give a lesion-level .csv/.xlsx file or a "
                        "folder with SDTM TU/TR(/RS/DM) files")
    try:
        cfg = dataclasses.replace(RecistConfig(), irecist=a.irecist,
                                  confirm_min_days=a.confirm_days, sd_min_days=a.sd_min_days)
    except ValueError as exc:
        raise PkpdError(f"{exc} Fix: check --confirm-days / --sd-min-days") from None
    inputs = [src, *(sorted(src.iterdir()) if src.is_dir() else []),
              *([Path(a.subjects)] if a.subjects else [])]
    seen: dict[Path, str] = {p.resolve(): str(p) for p in inputs}
    for flag in ("out", "visits", "rows", "errors"):
        name = getattr(a, flag)
        if not name:
            continue
        key = Path(name).resolve()
        if key in seen:
            what = "an input file" if seen[key] in map(str, inputs) else f"also {seen[key]}"
            raise PkpdError(f"--{flag} {name} is {what}; pkpd does not overwrite its inputs "
                            f"or write two results to one file. Fix: give --{flag} another "
                            "file name")
        seen[key] = f"--{flag}"
    subjects = read_subjects(a.subjects) if a.subjects else None
    try:
        every = a.all_errors or bool(a.errors)
        data = (read_sdtm(src, evaluator=a.evaluator, all_errors=every) if src.is_dir()
                else read_lesions(src, all_errors=every))
    except DataProblems as exc:  # --all-errors: every problem row, no result
        if a.errors:
            atomic_write_csv(exc.to_frame()[list(PROBLEM_COLUMNS[:-1])], a.errors)
        print(f"pkpd recist: error: {exc.headline()}"
              + (f" (all listed in {a.errors})" if a.errors else "")
              + "; no result written. Fix: correct the rows below, then rerun", file=sys.stderr)
        for line in exc.lines(20):
            print(f"  {line}", file=sys.stderr)
        return 2
    if a.errors:
        atomic_write_csv(pd.DataFrame(columns=list(PROBLEM_COLUMNS[:-1])), a.errors)
    fmt = data.lesions.attrs.get("file_format", {})
    if fmt.get("separator") not in (None, "comma"):
        commas = fmt.get("decimal_comma_columns")
        print(f"note: {src.name} read as {fmt['separator']}-separated"
              + (f", with decimal commas in {', '.join(commas)}" if commas else ""))
    res = evaluate(data.lesions, subjects, cfg)
    subj = res.subjects
    cols = RESPONSE_COLUMNS + [c for c in subj.columns if c not in RESPONSE_COLUMNS]
    atomic_write_csv(subj[cols], a.out)
    written = [a.out]
    if a.visits:
        atomic_write_csv(res.visits, a.visits)
        written.append(a.visits)
    if a.rows:
        atomic_write_csv(data.report.to_frame(), a.rows)
        written.append(a.rows)
    rep = data.report
    print(f"read {rep.n_rows} rows: {rep.n_used} used, {rep.n_dropped} dropped"
          + (" (see --rows for the reasons)" if rep.n_dropped and not a.rows else ""))
    for line in res.log[:20]:
        print(f"note: {line}")
    if len(res.log) > 20:
        print(f"note: ... {len(res.log) - 20} more notes")
    counts = subj["bor_confirmed"].value_counts().to_dict()
    print(f"{len(subj)} subjects; confirmed BOR: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _cmd_cards(a) -> int:
    from .cards.card import list_cards, load_card

    if a.name:
        print(load_card(a.name).summary())
    else:
        for n in list_cards():
            c = load_card(n)
            print(f"{n:24s} {c.kind:6s} {c.raw['card'].get('description', '')[:64]}")
    return 0


def _cmd_demo(a) -> int:
    from .demo import run_demo

    if not 1 <= a.n <= 100_000:
        raise PkpdError(f"--n {a.n}: the demo needs 1 to 100000 virtual patients. "
                        "Fix: e.g. --n 500 (the default)")
    run_demo(Path(a.out), n_patients=a.n)
    return 0


def _cmd_trial(a) -> int:
    import json

    from .trial.run import run_trial

    res = run_trial(a.scenario, n=a.n, replicates=a.replicates, seed=a.seed,
                    progress=not (a.quiet or a.json), dask=a.dask, **_trial_sources(a))
    head = res.headline()
    if a.json:
        extra = {"success": res.success.to_dict("records")} if res.success is not None else {}
        print(json.dumps({"scenario": res.scenario.name, "n": res.meta["n"],
                          "replicates": res.meta["replicates"], "seed": res.meta["seed"],
                          "population_source": res.meta["population_source"], **head,
                          **extra}, allow_nan=True))
        return 0
    s = res.summary()
    print(f"{res.scenario.name}: {res.meta['n']} patients x {res.meta['replicates']} "
          f"replicate(s), seed {res.meta['seed']} (PFS: progression only, no death model)")
    for key, row in s.iterrows():
        iv = f"  [{row.lo:.3g}, {row.hi:.3g}]" if res.meta["replicates"] > 1 else ""
        print(f"  {key:32s} {row['mean']:.3g}{iv}")
    _print_success(res.success)
    return 0


def _trial_sources(a) -> dict:
    """run_trial/compare keywords of --card, --posterior, --prior, --set and --success."""
    out = {"success": a.success}
    if a.set_params:
        out["params"] = _pairs(a.set_params, "--set")
    out["card"], draws = _card_and_draws(a)
    if draws is not None:
        out["draws"] = draws
    return out


def _optimise_sources(a) -> dict:
    """optimise keywords of --card, --posterior, --prior and --set, meant as for pkpd trial;
    a posterior table gives --draws rows after a seeded shuffle (optimise.subsample_draws)."""
    from .errors import SpecError
    from .trial.optimise import subsample_draws

    if not 1 <= a.draws <= 1000:
        raise SpecError(f"draws = {a.draws} must be a whole number from 1 to 1,000. Fix: e.g. "
                        "--draws 20")
    card, draws = _card_and_draws(a, n_prior=a.draws,
                                  subsample=lambda d: subsample_draws(d, a.draws, a.seed))
    return {"card": card, "params": _pairs(a.set_params, "--set") if a.set_params else None,
            "draws_table": draws}


def _card_and_draws(a, *, n_prior: int | None = None, subsample=None):
    """The tumour card and the population draws of --card, --posterior and --prior: a
    calibration's own card unless --card is given; ``subsample`` thins a posterior table
    before --prior replaces columns; ``n_prior``: rows of a table drawn from the priors alone."""
    from .trial.sources import population_draws, prior_draws, with_prior

    card, draws = a.card, None
    if a.posterior:
        draws = population_draws(a.posterior, a.card)
        if card is None and "card" in draws.attrs:
            card = draws.attrs["card"]                 # a calibration's own card
        if subsample is not None:
            draws = subsample(draws)
    if a.prior:
        base = card or _scenario_card(a)
        draws = (with_prior(draws, base, a.prior, a.seed) if draws is not None
                 else prior_draws(base, a.prior, seed=a.seed,
                                  **({"n": n_prior} if n_prior else {})))
    return card, draws


def _scenario_card(a) -> str:
    from .trial.design import load_scenario

    first = a.scenario if hasattr(a, "scenario") else a.scenarios[0]
    return load_scenario(first).model


def _print_success(table) -> None:
    if table is None:
        return
    print("\nP(success) over replicates (90% Wilson interval):")
    for row in table.itertuples():
        print(f"  {row.arm:24s} {row.rule:32s} {row.p_success:.3f}  [{row.lo:.3f}, "
              f"{row.hi:.3f}]  ({row.met}/{row.replicates})")


def _cmd_optimise(a) -> int:
    import json

    from .errors import SpecError
    from .trial.optimise import optimise

    bounds = []
    for flag, text in (("--dose-bounds", a.dose_bounds), ("--day-bounds", a.day_bounds)):
        try:
            bounds.append(tuple(float(x) for x in text.split(",")))
        except ValueError:
            raise SpecError(f"{flag} {text!r} must be LO,HI (two numbers). Fix: e.g. "
                            f"{flag} {'4,16' if flag == '--dose-bounds' else '7,21'}") from None
    res = optimise(a.scenario, objective=a.objective, n=a.n, draws=a.draws, seed=a.seed,
                   dose_bounds_mg=bounds[0], on_days_bounds=bounds[1], **_optimise_sources(a))
    s = res.summary()
    if a.json:
        print(json.dumps(s))
        return 0
    st, op, imp, pr = s["start"], s["optimum"], s["improvement"], s["practical"]
    u = s["unit"]
    print(f"{s['scenario']}: objective {s['objective']} ({u}), {s['n']} patients x "
          f"{s['draws']} population draws, seed {s['seed']}")
    print(f"  card {s['card']}; population: {s['population_source']}"
          + "".join(f"; {k} = {v:g}" for k, v in s["params"].items()))
    print(f"  start    {st['dose_mg']:g} mg, {st['on_days']:g} on-days: {st['objective']:.4g}; "
          f"mean Cmax {st['cmax_ng_ml']:.4g} ng/mL (the limit)")
    print(f"  optimum  {op['dose_mg']:.3g} mg, {op['on_days']:.3g} on-days: "
          f"{op['objective']:.4g}; mean Cmax {op['cmax_ng_ml']:.4g} ng/mL "
          f"({'within' if op['constraint_ok'] else 'ABOVE'} the limit)")
    print(f"  optimum - start: {imp['mean']:+.3g} {u} [90% {imp['lo']:+.3g}, {imp['hi']:+.3g}], "
          f"P(improvement) {imp['p_improvement']:.2f}")
    print(f"  practical: {pr['regimen']}: {pr['objective']:.4g}; mean Cmax "
          f"{pr['cmax_ng_ml']:.4g} ng/mL ({'feasible' if pr['feasible'] else 'infeasible'})")
    return 0


def _cmd_compare(a) -> int:
    import json

    from .trial.comparison import compare

    c = compare(a.scenarios, n=a.n, replicates=a.replicates, seed=a.seed,
                progress=not (a.quiet or a.json), dask=a.dask, **_trial_sources(a))
    if a.plots:
        from .plots.trial import forest_plot, km_plot

        written = [forest_plot(c, f"{a.plots}_forest.png"), km_plot(c, f"{a.plots}_km_pfs.png")]
        if not a.json:
            print("wrote " + ", ".join(str(p) for p in written))
    if a.json:
        print(json.dumps({"table": c.table.to_dict("records"),
                          "pairwise": c.pairwise.to_dict("records"),
                          "hazard": c.hazard.to_dict("records"),
                          **({"success": c.success.to_dict("records")}
                             if c.success is not None else {})}, allow_nan=True))
        return 0
    wide = c.table.pivot(index="endpoint", columns="scenario", values="mean")
    print(f"{a.replicates} replicate(s), seed {a.seed}, the same virtual patients in every arm\n")
    print(wide[list(c.results)].round(3).to_string())
    print("\nP(A better than B), over paired replicates:")
    print(c.pairwise.pivot(index="endpoint", columns=["a", "b"], values="p_a_better")
          .round(2).to_string())
    print("\nPFS hazard ratio of A vs B (median over replicates, 90% interval):")
    print(c.hazard.round(3).to_string(index=False))
    _print_success(c.success)
    return 0


def _cmd_calibrate(a) -> int:
    import json

    from .trial.calibrate import calibrate

    rec = calibrate(a.spec, out=a.out, progress=not (a.quiet or a.json),
                    write_card=not a.no_card, particles=a.particles,
                    max_simulations=a.max_simulations, check_n=a.check_n,
                    check_replicates=a.check_replicates)
    if a.json:
        print(json.dumps({k: rec[k] for k in ("name", "stopped", "simulations", "failures",
                                              "final_tolerance", "values", "targets")}))
        return 0
    print(f"{rec['name']}: {rec['stopped']}; {rec['simulations']} simulated trials "
          f"({rec['failures']} failed), final tolerance {rec['final_tolerance']:.3f}")
    for label, t in rec["targets"].items():
        print(f"  {label:34s} published {t['value']:.3g}  calibrated {t['achieved']:.3g} "
              f"[{t['achieved_lo']:.3g}, {t['achieved_hi']:.3g}]"
              f"{'' if t['within_scale'] else '  (outside its scale)'}")
    for name, v in rec["values"].items():
        print(f"  {name:14s} {v:.4g}")
    return 0


def _cmd_fit(a) -> int:
    from .fit import fit, load_spec

    overrides = {}
    for k in ("chains", "tune", "draws", "seed"):
        v = getattr(a, k)
        if v is not None:
            overrides[k] = v
    if a.sampler:
        overrides["sampler"] = a.sampler
    if "sampler" in overrides:
        overrides["name"] = overrides.pop("sampler")
    spec = load_spec(a.spec, overrides=overrides or None)   # validated before any sampling
    if a.check:
        from .fit import prepare
        spec, data, _, _, _ = prepare(spec)
        print(f"{a.spec}: valid; {data.n_subjects} subjects, {data.n_obs} observations, "
              f"population parameters: {', '.join(spec.population_names)}")
        return 0
    from .errors import FitInterrupted
    try:
        res = fit(spec, out=a.out, resume=not a.restart, progress=not a.quiet)
    except FitInterrupted as exc:      # Ctrl-C: checkpoints kept, nothing finished; exit 130
        print(f"pkpd fit: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {res.path}")
    print(res.summary.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    probs = res.record["diagnostics"].get("problems", [])
    print("problems: " + ("; ".join(probs) if probs else "none"))
    return 0


def _cmd_summary(a) -> int:
    from .fit import load_fit

    res = load_fit(a.path)
    r = res.record
    print(f"fit {r['name']}: {r['n_subjects']} subjects, {r['n_obs']} observations; "
          f"sampler {r['sampler']['name']} {r['sampler']['chains']}x"
          f"({r['sampler']['tune']}+{r['sampler']['draws']}); "
          f"{r['timing']['total_s']:.0f} s")
    print(res.summary.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    d = r.get("diagnostics", {})
    st = d.get("sampler", {})
    print(f"divergences {st.get('n_divergent')}, BFMI min {st.get('bfmi_min')}, "
          f"failed solves {r.get('failures', {}).get('failed_evaluations')}")
    loo = d.get("loo_by_observation") or {}
    if loo.get("elpd_loo") is not None:
        print(f"elpd_loo {loo['elpd_loo']:.1f} (SE {loo['se']:.1f}, by observation)")
    sy = (r.get("estimands") or {}).get("synergy")
    if sy:
        print(f"PSI {sy['mean']:.3g} [{sy['q5']:.3g}, {sy['q95']:.3g}], "
              f"P(PSI > 0) = {sy['p_gt_0']:.3f}")
    probs = d.get("problems", [])
    print("problems: " + ("; ".join(probs) if probs else "none"))
    return 0


def _version() -> str:
    import platform

    from . import __version__
    return f"pkpd {__version__} (Python {platform.python_version()})"


class _Parser(argparse.ArgumentParser):
    """argparse with pkpd's one-line errors: ``pkpd CMD: error: ...  Fix: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}. Fix: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pkpd", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an unexpected error (any position)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p.set_defaults(_commands=sub.choices)
    _add_exposure(sub)
    _add_predict(sub)
    _add_simulate(sub)
    _add_recist(sub)
    _add_cards(sub)
    _add_fit(sub)
    _add_summary(sub)
    _add_demo(sub)
    _add_trial(sub)
    _add_compare(sub)
    _add_optimise(sub)
    _add_calibrate(sub)
    _add_compare_models(sub)
    _add_design(sub)
    return p


def _add_design(sub) -> None:
    from .design.cli import add_parser  # light: argparse only
    add_parser(sub)


def _add_compare_models(sub) -> None:
    p = sub.add_parser("compare-models", help="compare fitted models by k-fold / leave-one-"
                       "patient-out cross-validation (refits each model k times)")
    p.add_argument("folders", nargs="+", help="fit folders (fits/NAME) or specs of the models")
    p.add_argument("--k", type=int, default=10, help="folds of patients (default 10; the "
                   "number of patients gives leave-one-patient-out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and new etas")
    p.add_argument("--draws", type=int, help="draws per chain of each refit")
    p.add_argument("--tune", type=int, help="tuning steps per chain of each refit")
    p.add_argument("--chains", type=int, help="chains of each refit")
    p.add_argument("--out", help="results folder (resumable: finished folds are kept)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_compare_models)


def _cmd_compare_models(a) -> int:
    from .fit.kfold import main_cli
    return main_cli(a)


def _add_exposure(sub) -> None:
    e = sub.add_parser("exposure", help="per-cycle Cmax, Ctrough and AUC of a regimen")
    e.add_argument("drug", help="model card name (e.g. anlotinib, durvalumab) or .toml path")
    e.add_argument("--regimen", required=True, help='e.g. "12 mg PO QD D1-14 Q21D"')
    e.add_argument("--days", type=float, required=True, help="simulation horizon (days)")
    e.add_argument("--cov", action="append", metavar="NAME=VALUE",
                   help="patient covariate (WT, HT, BSA, GFR, ...)")
    e.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="override a typical value (card units)")
    e.add_argument("--window", type=float, metavar="DAYS",
                   help="summarise per window of DAYS days instead of per cycle (continuous "
                        "dosing such as '12 mg PO QD': default 21)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_exposure)


def _add_predict(sub) -> None:
    q = sub.add_parser("predict", help="predict at every EVID 0/2 record of a NONMEM file")
    q.add_argument("--model", required=True, help="model card name or .toml path")
    q.add_argument("--data", required=True, help="NONMEM-style CSV")
    q.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="override a typical value (card units)")
    q.add_argument("--out", required=True, help="output CSV (ID, TIME, PRED[, IPRED])")
    q.add_argument("--time-unit", default="h", help="unit of TIME/II (default h)")
    q.add_argument("--amt-unit", default="mg", help="unit of AMT (default mg)")
    q.add_argument("--rows", metavar="ROWS.csv",
                   help="row account CSV: every line of --data (records, comments, C records, "
                        "blank lines) with what became of it")
    q.set_defaults(func=_cmd_predict)


def _add_simulate(sub) -> None:
    s = sub.add_parser("simulate", help="tumour-size trajectories of virtual patients")
    s.add_argument("--model", required=True, help="tumour card (e.g. sclc_triplet_tgi)")
    s.add_argument("--regimen", action="append", required=True, metavar='"DRUG: TEXT"',
                   help='one per drug, e.g. "anlotinib: 12 mg PO QD D1-14 Q21D"')
    s.add_argument("--n", type=int, default=None,
                   help="virtual patients with IIV (default: one typical patient)")
    s.add_argument("--days", type=float, default=730.0, help="horizon in days (default 730)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--times", help="output days, comma-separated (default weekly)")
    s.add_argument("--cov", action="append", metavar="NAME=VALUE",
                   help="covariates for dosing and PK (BSA, GFR, WT, ...)")
    s.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="override a tumour parameter's typical value (e.g. PSI=0)")
    s.add_argument("--residual", action="store_true", help="add residual error (DV column)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--out", required=True,
                   help="FILE.csv (+ FILE_patients.csv, FILE_meta.json) or FILE.nc")
    s.set_defaults(func=_cmd_simulate)


def _add_recist(sub) -> None:
    r = sub.add_parser("recist", help="RECIST 1.1 responses, BOR and PFS from lesion data")
    r.add_argument("lesions", help="lesion-level .csv/.xlsx (subject, day, lesion_id, "
                   "lesion_type, organ, is_node, diameter_mm, state) or an SDTM folder")
    r.add_argument("--out", required=True, help="per-subject responses CSV")
    r.add_argument("--visits", help="per-visit target/non-target/new/overall responses CSV")
    r.add_argument("--rows", help="row accounting CSV (every input row: used or dropped, why)")
    r.add_argument("--subjects", help="CSV with subject, death_day, last_known_alive_day, "
                   "new_therapy_day")
    r.add_argument("--irecist", action="store_true", help="also apply iRECIST")
    r.add_argument("--confirm-days", type=float, default=28.0,
                   help="minimum days to confirm CR/PR (default 28)")
    r.add_argument("--sd-min-days", type=float, default=42.0,
                   help="minimum days from the first dose for SD to count (default 42)")
    r.add_argument("--evaluator", default="INVESTIGATOR", help="SDTM TREVAL/RSEVAL to use")
    r.add_argument("--all-errors", action="store_true",
                   help="check every row of a lesion file and list every problem (the first "
                   "20 here), instead of stopping at the first; nothing else is written")
    r.add_argument("--errors", metavar="ERRORS.csv",
                   help="write every problem row (source, row, subject, column, value, problem, "
                   "fix) to this CSV (header only when there is none); implies --all-errors")
    r.set_defaults(func=_cmd_recist)


def _add_cards(sub) -> None:
    c = sub.add_parser("cards", help="list model cards, or show one")
    c.add_argument("name", nargs="?")
    c.set_defaults(func=_cmd_cards)


def _add_fit(sub) -> None:
    f = sub.add_parser("fit", help="hierarchical Bayesian fit of a spec (fits/*.toml)")
    f.add_argument("spec", help="fit specification (TOML)")
    f.add_argument("--out", help="results folder (default: next to the spec, named after its "
                   "[fit] name); an existing folder is replaced only if it holds a pkpd fit")
    f.add_argument("--sampler", choices=["nutpie", "numpyro", "pymc", "blackjax"])
    f.add_argument("--chains", type=int)
    f.add_argument("--tune", type=int)
    f.add_argument("--draws", type=int)
    f.add_argument("--seed", type=int)
    f.add_argument("--restart", action="store_true",
                   help="discard checkpoints of an interrupted run (Ctrl-C, exit 130) instead "
                   "of resuming it")
    f.add_argument("--check", action="store_true",
                   help="validate the spec and data and build the model; do not sample")
    f.add_argument("--quiet", action="store_true", help="no progress output")
    f.set_defaults(func=_cmd_fit)


def _add_summary(sub) -> None:
    m = sub.add_parser("summary", help="print a saved fit's summary and diagnostics")
    m.add_argument("path", help="fit folder (fits/NAME)")
    m.set_defaults(func=_cmd_summary)


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="the main job: triplet-regimen exposure report")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--n", type=int, default=500, help="virtual patients for the IIV bands")
    d.set_defaults(func=_cmd_demo)


#: per command: what it does, and the argument that names its main input (for unexpected errors)
def _add_trial(sub) -> None:
    t = sub.add_parser("trial", help="simulate a virtual trial arm: ORR, DCR, PFS per replicate")
    t.add_argument("--scenario", required=True,
                   help="scenario name (scenarios/*.toml, e.g. triplet) or a .toml path")
    t.add_argument("--n", type=int, help="patients per replicate (default: the scenario's)")
    t.add_argument("--replicates", type=int, default=1,
                   help="trial replicates; with more than one, each endpoint gets KEY_lo/KEY_hi "
                   "(90%% interval)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true",
                   help="print one JSON object: orr, orr_confirmed, dcr, median_pfs_months, "
                   "pfs_6m, pfs_12m")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--dask", metavar="ADDRESS",
                   help="run the replicates on a Dask scheduler (e.g. tcp://host:8786)")
    _add_sources(t)
    t.set_defaults(func=_cmd_trial)


def _add_sources(p) -> None:
    p.add_argument("--card", metavar="NAME_OR_PATH",
                   help="tumour card in place of the scenario's (e.g. a calibrated card)")
    p.add_argument("--posterior", metavar="FOLDER",
                   help="population source: each replicate draws its population parameters "
                   "from this fit's posterior (fits/NAME, written by pkpd fit) or this "
                   "calibration's ABC posterior (written by pkpd calibrate; its card.toml is "
                   "the card unless --card is given)")
    p.add_argument("--set", metavar="NAME=VALUE", action="append", dest="set_params",
                   help="fix a tumour-card typical value in every replicate (repeatable), e.g. "
                   "--set PSI=0 (no synergy); applied after --posterior and --prior")
    p.add_argument("--prior", metavar="PARAMETER", action="append",
                   help="draw this card parameter from its prior in each replicate "
                   "(repeatable), e.g. --prior PSI for the synergy no CASPIAN arm informs")
    p.add_argument("--success", metavar="RULE", action="append",
                   help="success rule, repeatable: 'orr_confirmed >= 0.75', "
                   "'median_pfs_months > 6', 'hr_pfs < 0.7 vs ep' (compare); P(success) with a "
                   "90%% interval")


def _add_compare(sub) -> None:
    c = sub.add_parser("compare", help="compare trial arms with the same virtual patients")
    c.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                   help="two or more scenario names (scenarios/*.toml) or .toml paths")
    c.add_argument("--n", type=int,
                   help="patients per arm and replicate (needed when the arms' N differ)")
    c.add_argument("--replicates", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true",
                   help="print one JSON object: table, pairwise, hazard")
    c.add_argument("--plots", metavar="PREFIX",
                   help="write PREFIX_forest.png and PREFIX_km_pfs.png (KM with numbers at risk)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--dask", metavar="ADDRESS",
                   help="run the replicates on a Dask scheduler (e.g. tcp://host:8786)")
    _add_sources(c)
    c.set_defaults(func=_cmd_compare)


def _add_optimise(sub) -> None:
    o = sub.add_parser("optimise", help="anlotinib dose and on-days that maximise PFS or depth "
                       "under a Cmax constraint (gradients through the simulator)")
    o.add_argument("--scenario", default="triplet",
                   help="scenario with anlotinib (default triplet: 12 mg PO QD D1-14 Q21D)")
    o.add_argument("--objective", default="pfs",
                   help="pfs (restricted mean PFS, months) or depth (mean shrinkage, %%)")
    o.add_argument("--n", type=int, default=200, help="virtual patients (fixed, shared)")
    o.add_argument("--draws", type=int, default=20,
                   help="population draws (default: the card's typical values, PSI from its "
                   "prior); with --posterior the first N rows of the posterior after a shuffle "
                   "seeded by --seed")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--dose-bounds", default="4,16", metavar="LO,HI",
                   help="daily dose bounds (mg)")
    o.add_argument("--day-bounds", default="7,21", metavar="LO,HI",
                   help="on-days per cycle bounds")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.add_argument("--card", metavar="NAME_OR_PATH",
                   help="tumour card in place of the scenario's (e.g. a calibrated card)")
    o.add_argument("--posterior", metavar="FOLDER",
                   help="population draws from this fit's posterior (pkpd fit) or "
                   "calibration's ABC posterior (pkpd calibrate; its card.toml is the card "
                   "unless --card is given), IIV variances included")
    o.add_argument("--prior", metavar="PARAMETER", action="append",
                   help="draw this card parameter from its prior in each draw (repeatable), "
                   "e.g. --prior PSI")
    o.add_argument("--set", metavar="NAME=VALUE", action="append", dest="set_params",
                   help="fix a tumour-card typical value in every draw (repeatable), e.g. "
                   "--set PSI=0; applied after --posterior and --prior")
    o.set_defaults(func=_cmd_optimise)


def _add_calibrate(sub) -> None:
    c = sub.add_parser("calibrate", help="calibrate a tumour card to published trial endpoints "
                       "(ABC-SMC)")
    c.add_argument("spec", help="calibration spec, e.g. fits/calibrate_caspian.toml")
    c.add_argument("--out", help="results folder (default: next to the spec, named after it)")
    c.add_argument("--particles", type=int, help="ABC-SMC particles (default: the spec's)")
    c.add_argument("--max-simulations", type=int, help="simulated trials at most")
    c.add_argument("--check-n", type=int, help="patients per arm in the check of the card")
    c.add_argument("--check-replicates", type=int, help="replicates in the check of the card")
    c.add_argument("--no-card", action="store_true",
                   help="do not write the spec's card_out (the card stays in the results folder)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.set_defaults(func=_cmd_calibrate)


_ACTIONS = {
    "exposure": ("computing exposure for card", "drug"),
    "predict": ("predicting from", "data"),
    "simulate": ("simulating card", "model"),
    "recist": ("applying RECIST to", "lesions"),
    "cards": ("reading card", "name"),
    "fit": ("fitting spec", "spec"),
    "summary": ("reading fit", "path"),
    "demo": ("running the demo into", "out"),
    "trial": ("simulating scenario", "scenario"),
    "compare": ("comparing scenarios", "scenarios"),
    "calibrate": ("calibrating with spec", "spec"),
    "optimise": ("optimising scenario", "scenario"),
}


def _action(args) -> str:
    what, attr = _ACTIONS.get(args.cmd, ("running", None))
    target = getattr(args, attr, None) if attr else None
    return f"{what} {target}" if target else what


#: libraries whose log notices a CLI user cannot act on (shown again with --debug)
_FOREIGN_LOGGERS = ("arviz", "pymc", "pytensor", "jax", "numpyro", "nutpie")


def _quiet_foreign_warnings() -> None:
    """Warnings from other libraries (ArviZ, PyMC, JAX, ...) that a user of the CLI cannot act on
    are not printed; pkpd's own warnings still are."""
    import warnings

    for cat in (FutureWarning, DeprecationWarning, PendingDeprecationWarning, UserWarning,
                RuntimeWarning):
        warnings.filterwarnings("ignore", category=cat)
    warnings.filterwarnings("default", module=r"pkpd(\..*)?$")


def _fail(args, message: str, code: int) -> int:
    print(f"pkpd {args.cmd}: error: {message}", file=sys.stderr)
    return code


def _dispatch(args) -> int:
    """Run a command; every failure becomes one line on stderr and an exit status:
    2 for bad input (pkpd's errors, missing files, unwritable outputs), 130 for Ctrl-C, 1 for
    an unexpected error (a bug or an unchecked input; ``--debug`` shows the traceback)."""
    try:
        return args.func(args)
    except PkpdError as exc:
        return _fail(args, str(exc), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"pkpd {args.cmd}: interrupted (Ctrl-C); nothing was written as finished",
              file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        return _fail(args, f"file not found: {exc.filename}. Fix: check the path", 2)
    except IsADirectoryError as exc:
        return _fail(args, f"{exc.filename} is a folder, not a file. Fix: give a file path", 2)
    except PermissionError as exc:
        return _fail(args, f"permission denied: {exc.filename}. Fix: check the path and its "
                     "permissions", 2)
    except MemoryError:
        return _fail(args, f"out of memory while {_action(args)}. Fix: reduce the problem "
                     "(fewer patients, a shorter horizon or fewer output times)", 2)
    except OSError as exc:
        return _fail(args, f"{exc.strerror or exc} ({exc.filename or _action(args)}). "
                     "Fix: check the path, free disk space and permissions", 2)
    except Exception as exc:  # noqa: BLE001 - the guard: one line, never a traceback
        if args.debug:
            raise
        return _fail(args, f"unexpected {type(exc).__name__} while {_action(args)}: "
                     f"{_one_line(exc)}. This is a pkpd bug or an input pkpd does not check "
                     "yet; rerun with --debug for the traceback and report it", 1)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:2000] + " ..."


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args, extra = build_parser().parse_known_args(argv)
    if extra:       # reported by the command's own parser: "pkpd CMD: error: ..."
        args._commands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    args.debug = debug
    import logging
    import warnings

    loggers = {n: logging.getLogger(n) for n in _FOREIGN_LOGGERS}
    levels = {n: lg.level for n, lg in loggers.items()}
    with warnings.catch_warnings():       # the caller's filters come back afterwards
        if not debug:
            _quiet_foreign_warnings()
            for lg in loggers.values():   # e.g. ArviZ's "Shape validation failed" notices
                lg.setLevel(logging.ERROR)
        try:
            return _dispatch(args)
        finally:
            for n, lg in loggers.items():
                lg.setLevel(levels[n])


if __name__ == "__main__":
    sys.exit(main())
