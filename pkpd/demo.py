"""The main job (``pkpd demo``): exposure of the motivating triplet regimen.

Durvalumab 1500 mg IV q3w with 4 cycles of etoposide + carboplatin, then 1500 mg q4w, plus
anlotinib 12 mg QD on days 1-14 of 21-day cycles, all on one cycle clock. For a reference patient
it writes per-cycle typical exposure (Cmax, Ctrough, AUC) per drug, 5-95% IIV bands from the
cards' IIV, and tumour-size trajectories of virtual patients on the triplet and on durvalumab + EP
(card ``sclc_triplet_tgi``), with figures and a Markdown report. Later issues extend this job with
the virtual trial (RECIST endpoints) and the fit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .cards.card import load_card
from .dosing.regimen import Protocol, parse_regimen
from .io import atomic_write_bytes, atomic_write_csv, atomic_write_text
from .pk.exposure import concentration_profile, cycle_exposure

TRIPLET = {
    "anlotinib": "12 mg PO QD D1-14 Q21D",
    "durvalumab": "1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W",
    "etoposide": "100 mg/m2 IV 60 min D1-3 Q21D x4",
    "carboplatin": "AUC 5 IV 60 min D1 Q21D x4",
}
# Reference patient: male, 70 kg, 170 cm, 60 y, serum creatinine 1.0 mg/dL (CrCL by
# Cockcroft-Gault 77.8 mL/min), albumin/LDH/CrCL at the durvalumab card's reference values.
PATIENT = {"WT": 70.0, "HT": 170.0, "AGE": 60.0, "SEX": 0, "SCR": 1.0}
HORIZON_DAYS = 168.0


#: marks a folder written by ``pkpd demo``: only such a folder (or an empty one) is written into
DEMO_MARKER = ".pkpd-demo"


def _claim_out(out: Path) -> None:
    """Make ``out`` the demo's folder, refusing a file or a non-empty folder pkpd did not make."""
    from .errors import PkpdError
    if out.exists() and not out.is_dir():
        raise PkpdError(f"--out {str(out)!r} is a file, not a folder. Fix: give a folder for "
                        "the demo's outputs (default out/demo)")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).exists():
        raise PkpdError(f"--out {str(out)!r} is a non-empty folder that pkpd demo did not "
                        "create; its files would be overwritten. Fix: give a new or empty "
                        "folder (default out/demo)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / DEMO_MARKER, "written by pkpd demo; its files are replaced by the "
                      "next `pkpd demo` run into this folder\n")


def run_demo(out: Path, *, n_patients: int = 500, seed: int = 20261123) -> dict:
    out = Path(out)
    _claim_out(out)
    t_start = time.time()
    protocol = Protocol.from_regimens(
        *[parse_regimen(txt).with_drug(drug) for drug, txt in TRIPLET.items()])
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, HORIZON_DAYS, 1345)
    summary, bands = {}, {}
    for i, (drug, reg) in enumerate(protocol.items(), 1):
        print(f"[{i}/{len(protocol)}] {drug}: {TRIPLET[drug]}", flush=True)
        card = load_card(drug)
        covs = {k: v for k, v in PATIENT.items()}
        res = cycle_exposure(card, reg, HORIZON_DAYS, covariates=covs)
        summary[drug] = res.to_dict() | {"regimen": TRIPLET[drug], "card_sha256": card.sha256}
        atomic_write_csv(res.to_frame(), out / f"exposure_{drug}.csv")
        if card.iiv_names:
            params = card.sample_params(n_patients, rng, covs)
        else:
            params = {k: np.array([v]) for k, v in card.typical_params(covs).items()}
        conc = concentration_profile(card, reg, times, covariates=covs, params=params)
        typ = concentration_profile(card, reg, times, covariates=covs)[0]
        q = np.nanpercentile(conc, [5, 50, 95], axis=0)
        bands[drug] = dict(unit=card.conc_unit, typical=typ, q05=q[0], q50=q[1], q95=q[2],
                           n=int(conc.shape[0]))
    _plot(out / "exposure.png", times, bands)
    print(f"[tumour] {n_patients} virtual patients per arm, 730 days", flush=True)
    tumour = _tumour(out, protocol, n_patients, seed)
    print("[fit] hierarchical Stein-Fojo fit of 80 embedded OAK patients (nutpie, 2 chains)",
          flush=True)
    fit_section = _fit(out / "fit")
    elapsed = time.time() - t_start
    meta = {"patient": PATIENT, "horizon_days": HORIZON_DAYS, "n_patients": n_patients,
            "seed": seed, "elapsed_s": round(elapsed, 1)}
    atomic_write_text(out / "exposure.json", json.dumps({"meta": meta, "drugs": summary},
                                                        indent=1))
    atomic_write_text(out / "tumour.json", json.dumps(tumour, indent=1))
    atomic_write_text(out / "report.md", _report(summary, meta) + _tumour_report(tumour)
                      + fit_section)
    print(f"wrote {out}/report.md, exposure.png, tumour.png, exposure.json, tumour.json, "
          f"fit/ ({elapsed:.0f} s)")
    return summary


DEMO_FIT = {
    "fit": {"name": "demo_oak80", "description": "Stein-Fojo SLD model, 80 OAK patients "
            "(embedded pkpd/data/oak_sld_demo.csv), priors of fits/oak_stein_fojo.toml"},
    "model": {"tgi": "stein_fojo", "time_unit": "year"},
    "data": {"format": "long", "subject": "subject", "time": "treatment_day",
             "time_unit": "day", "dv": "sld_mm", "dv_unit": "mm"},
    "theta": {"mu_b": "Normal(log(65), 1)", "mu_s": "Normal(log(0.52), 1)",
              "mu_g": "Normal(log(1.04), 1)"},
    "individual": {"y0": "exp(mu_b + eta_b)", "d": "exp(mu_s + eta_s)",
                   "g": "exp(mu_g + eta_g)"},
    "omega": {"eta_b": {"prior": "HalfNormal(3)", "name": "omega_b", "mu": "mu_b",
                        "init": 0.5},
              "eta_s": {"prior": "HalfNormal(3)", "name": "omega_s", "init": 0.5, "mu": "mu_s",
                        "centered": "auto"},
              "eta_g": {"prior": "HalfNormal(3)", "name": "omega_g", "init": 0.5, "mu": "mu_g",
                        "centered": "auto"}},
    "residual": {"model": "proportional",
                 "prop": {"prior": "HalfNormal(3)", "name": "sigma", "init": 0.2}},
    "sampler": {"name": "nutpie", "chains": 2, "tune": 500, "draws": 500, "seed": 2022,
                "chains_per_batch": 2},
}


def _fit(out: Path) -> str:
    """Fit the embedded OAK subset; returns the report section."""
    from importlib import resources

    from .fit import fit, load_spec
    raw = dict(DEMO_FIT)
    data = resources.files("pkpd") / "data" / "oak_sld_demo.csv"
    raw["data"] = dict(raw["data"], path=str(data))
    res = fit(load_spec(raw), out=out, progress=False)
    rec, smp = res.record, DEMO_FIT["sampler"]
    st = rec["diagnostics"]["sampler"]
    loo = rec["diagnostics"].get("loo_by_observation") or {}
    lines = ["", "## Hierarchical fit on embedded data", "",
             f"Stein-Fojo model fitted to {rec['n_subjects']} OAK patients "
             f"({rec['n_obs']} SLD measurements; pkpd/data/oak_sld_demo.csv) with nutpie, "
             f"{smp['chains']} chains x ({smp['tune']} + {smp['draws']}), "
             f"in {rec['timing']['total_s']:.0f} s. Full results, "
             "diagnostics and the posterior are in `fit/` (`pkpd summary out/demo/fit`).", "",
             "| parameter | mean | sd | q5 | q95 | ess_bulk | r_hat |",
             "|---|---|---|---|---|---|---|"]
    for r in res.summary.itertuples(index=False):
        lines.append(f"| {r.parameter} | {r.mean:.4g} | {r.sd:.3g} | {r.q5:.4g} | {r.q95:.4g} "
                     f"| {r.ess_bulk:.0f} | {r.r_hat:.3f} |")
    lines += ["", f"Divergent transitions: {st.get('n_divergent')}; elpd_loo (by observation): "
              f"{loo.get('elpd_loo', float('nan')):.1f}. Problems flagged: "
              + ("; ".join(rec["diagnostics"].get("problems", [])) or "none") + "."]
    return "\n".join(lines) + "\n"


def _tumour(out: Path, protocol, n: int, seed: int) -> dict:
    from .tumour.simulate import simulate

    arms = {"durvalumab + EP": {d: r for d, r in protocol.items() if d != "anlotinib"},
            "durvalumab + anlotinib + EP": dict(protocol.items())}
    res = {}
    bands = {}
    for arm, prot in arms.items():
        sim = simulate("sclc_triplet_tgi", prot, 730, n=n, seed=seed, covariates=PATIENT,
                       progress=False)
        typ = simulate("sclc_triplet_tgi", prot, 730, covariates=PATIENT, progress=False)
        pat = sim.patients
        wide = sim.trajectories.pivot(index="ID", columns="TIME", values="IPRED")
        pct = 100 * (wide.to_numpy() / wide.to_numpy()[:, :1] - 1)
        bands[arm] = dict(t=wide.columns.to_numpy(), q=np.percentile(pct, [5, 25, 50, 75, 95],
                                                                      axis=0))
        t0 = typ.patients.iloc[0]
        res[arm] = {
            "regimens": {d: r.to_text() for d, r in prot.items()},
            "typical": {k: float(t0[k]) for k in ("depth_pct", "time_to_nadir_day",
                                                  "resistance_onset_day", "progression_day")},
            "n": int(n),
            "median_depth_pct": float(pat["depth_pct"].median()),
            "share_shrink_30pct": float((pat["depth_pct"] <= -30).mean()),
            "median_resistance_onset_day": float(pat["resistance_onset_day"].median()),
            "median_progression_day": float(pat["progression_day"].median()),
            "share_progressed_730d": float(pat["progression_day"].notna().mean()),
        }
    _plot_tumour(out / "tumour.png", bands)
    return res


def _plot_tumour(path: Path, bands) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for (arm, b), col in zip(bands.items(), ("tab:blue", "tab:red")):
        t, q = b["t"], b["q"]
        ax.fill_between(t, q[0], q[4], color=col, alpha=0.12, lw=0)
        ax.fill_between(t, q[1], q[3], color=col, alpha=0.25, lw=0)
        ax.plot(t, q[2], color=col, label=f"{arm}: median, 25-75%, 5-95%")
    ax.axhline(-30, color="grey", ls=":", lw=0.8)
    ax.axhline(20, color="grey", ls=":", lw=0.8)
    ax.set_ylim(-100, 150)
    ax.set_xlabel("time since first dose (days)")
    ax.set_ylabel("SLD change from baseline (%)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _tumour_report(tumour: dict) -> str:
    lines = ["## Tumour dynamics (card `sclc_triplet_tgi`, virtual patients with IIV)", "",
             "![tumour](tumour.png)", "",
             "| arm | typical depth % | typical nadir day | typical resistance onset day | "
             "typical model PD day | median depth % | ≥30% shrinkage | median onset day | "
             "median model PD day |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, r in tumour.items():
        t = r["typical"]
        lines.append(
            f"| {arm} | {t['depth_pct']:.0f} | {t['time_to_nadir_day']:.0f} | "
            f"{t['resistance_onset_day']:.0f} | {t['progression_day']:.0f} | "
            f"{r['median_depth_pct']:.0f} | {100 * r['share_shrink_30pct']:.0f}% | "
            f"{r['median_resistance_onset_day']:.0f} | {r['median_progression_day']:.0f} |")
    lines += ["", "Model PD = first day the true SLD is ≥20% and ≥5 mm above its running minimum "
              "(no scans); scan-based RECIST ORR/PFS come with the virtual-trial step. The card's "
              "values are starting values (see models/sclc_triplet_tgi.toml), not a calibration.",
              ""]
    return "\n".join(lines)


def _plot(path: Path, times, bands) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(bands), 1, figsize=(9, 2.4 * len(bands)), sharex=True)
    for ax, (drug, b) in zip(np.atleast_1d(axes), bands.items()):
        if b["n"] > 1:
            ax.fill_between(times, b["q05"], b["q95"], alpha=0.25, lw=0,
                            label=f"5-95% of {b['n']} virtual patients (card IIV)")
        ax.plot(times, b["typical"], lw=1.0, label="typical patient")
        ax.set_ylabel(f"{drug}\n({b['unit']})")
        ax.set_yscale("log" if drug in ("etoposide", "carboplatin") else "linear")
        if drug in ("etoposide", "carboplatin"):
            top = float(np.nanmax(b["typical"]))
            ax.set_ylim(top * 1e-4, top * 3)
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    np.atleast_1d(axes)[-1].set_xlabel("time since first dose (days)")
    fig.suptitle("Durvalumab + anlotinib + EP: plasma exposure", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _report(summary: dict, meta: dict) -> str:
    lines = ["# pkpd demo: triplet regimen exposure", "",
             f"Reference patient: {meta['patient']}; horizon {meta['horizon_days']:g} days; "
             f"IIV bands from {meta['n_patients']} virtual patients (seed {meta['seed']}).", "",
             "![exposure](exposure.png)", ""]
    for drug, s in summary.items():
        lines += [f"## {drug}: `{s['regimen']}`", "",
                  f"Concentration in {s['unit']}, AUC in {s['auc_unit']} (typical values).", "",
                  "| cycle | start day | Cmax | Tmax day | Ctrough | AUC |",
                  "|---|---|---|---|---|---|"]
        for k in range(len(s["cycle_start_day"])):
            lines.append(
                f"| {k + 1} | {s['cycle_start_day'][k]:g} | {s['cmax'][k]:.4g} | "
                f"{s['tmax_day'][k]:.2f} | {s['ctrough'][k]:.4g} | {s['auc'][k]:.4g} |")
        lines.append("")
    lines += ["Durvalumab is simulated without the chemotherapy effect on CL (time-varying "
              "covariates are not supported yet; the effect on the saturated PD-L1 engagement "
              "of the tumour model is about 1e-3).", ""]
    return "\n".join(lines)
