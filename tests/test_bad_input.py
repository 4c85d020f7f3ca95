"""The bad-input corpus (issue 13): every CLI, every input format, tried as a new user would.

Each case writes its inputs into a fresh tmp folder (the working directory of the run), runs the
CLI and checks that

* the exit status is 2 (a few cases must succeed: exit 0);
* there is no traceback, and stderr is ONE line ``pkpd CMD: error: ...`` that names the bad
  value, the row/subject where there is one, and says how to fix it ("Fix");
* nothing in the folder was deleted, changed or added: the inputs are byte-identical and no
  output was written.

Almost every case runs in-process (``pkpd.cli.main``); a case that raises instead of returning
fails with the exception. The cases that could exhaust memory or hang (ADDL = 1e9, --days 1e7)
and a few others run as real subprocesses (``python -m pkpd.cli``) under a memory cap and a
timeout, checking the real exit status and stderr.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from pkpd.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PHENO_CSV = SHARED / "pk_phenobarbital" / "pheno_pharmpy.csv"
MODELS = ROOT / "models"

pytestmark = pytest.mark.filterwarnings("ignore")

DIR = object()          # a files entry that is an (empty) folder
SUB_MEMORY_BYTES = 3 * 1024**3
SUB_TIMEOUT_S = 90


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    needles: tuple = ()                  # str, or a tuple of alternatives (any one suffices)
    files: dict = field(default_factory=dict)   # relative path -> str | bytes | DIR
    rc: int = 2
    fix: bool = True                     # the message must say "Fix"
    sub: bool = False                    # run as a real subprocess (memory cap, timeout)


CASES: dict[str, Case] = {}


def add(area: str, name: str, argv, needles=(), files=None, **kw) -> None:
    cid = f"{area}:{name}"
    assert cid not in CASES, cid
    CASES[cid] = Case(tuple(str(a) for a in argv), tuple(needles), dict(files or {}), **kw)


# ================================================================================================
# fixtures as text
# ================================================================================================
EV_HEADER = "ID,TIME,EVID,AMT,CMT,II,ADDL,DV"
EV_GOOD = ["1,0,1,12,1,0,0,.", "1,2,0,0,2,0,0,1.5", "1,24,0,0,2,0,0,0.8"]


def ev(*rows: str, header: str = EV_HEADER, sep: str = ",") -> str:
    lines = [header, *rows]
    return "\n".join(line.replace(",", sep) for line in lines) + "\n"


PRED = ("predict", "--model", "anlotinib", "--data", "ev.csv", "--out", "o.csv")
EXPO = ("exposure", "anlotinib", "--days", "42", "--regimen")
TRIPLET_DURVA = "durvalumab: 1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"
SIM = ("simulate", "--model", "sclc_triplet_tgi", "--regimen", TRIPLET_DURVA, "--days", "50",
       "--quiet", "--out", "s.csv")

LES_HEADER = "subject,day,lesion_id,lesion_type,organ,is_node,diameter_mm,state"
LES_GOOD = ["P1,-3,T1,target,lung,false,30,", "P1,-3,NT1,nontarget,bone,false,,present",
            "P1,42,T1,target,lung,false,18,", "P1,42,NT1,nontarget,bone,false,,present",
            "P1,84,T1,target,lung,false,15,", "P1,84,NT1,nontarget,bone,false,,present"]


def les(*rows: str, header: str = LES_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def les_bad(row: int, cell: int, value: str) -> str:
    """LES_GOOD with data row ``row`` (1-based), field ``cell`` (0-based) replaced."""
    rows = [r.split(",") for r in LES_GOOD]
    rows[row - 1][cell] = value
    return les(*(",".join(r) for r in rows))


REC = ("recist", "lesions.csv", "--out", "r.csv")

ANLO_CARD = (MODELS / "anlotinib.toml").read_text()


def card(old: str, new: str) -> str:
    assert old in ANLO_CARD, old
    return ANLO_CARD.replace(old, new, 1)


def pheno_rows(n_subjects: int = 4) -> list[list[str]]:
    """The first subjects of the phenobarbital data (NONMEM format), '.' as DV on dose rows."""
    with PHENO_CSV.open() as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if int(r[0]) <= n_subjects]
    i_amt, i_dv = header.index("AMT"), header.index("DV")
    for r in body:
        if float(r[i_amt]) > 0:
            r[i_dv] = "."
    return [header, *body]


PHENO = pheno_rows() if PHENO_CSV.exists() else [["ID"], ["1"]]
PHENO_TEXT = "\n".join(",".join(r) for r in PHENO) + "\n"
PHENO_COL = {c: i for i, c in enumerate(PHENO[0])}
# data rows (1-based, header excluded) of an observation and of a dose of subject 1
OBS_ROW = next(i for i, r in enumerate(PHENO[1:], 1) if r[PHENO_COL["DV"]] != ".")
DOSE_ROW = 3


def pheno_bad(row: int, column: str, value: str) -> str:
    rows = [list(r) for r in PHENO]
    rows[row][PHENO_COL[column]] = value
    return "\n".join(",".join(r) for r in rows) + "\n"


NM_SPEC = """[fit]
name = "pheno"

[model]
pk = "1cmt"
absorption = "iv"
time_unit = "h"

[data]
path = "pheno.csv"
format = "nonmem"
time_unit = "h"
covariates = ["WGT", "APGR"]

[theta]
theta1 = { prior = "LogNormal(log(0.005), 1)" }
theta2 = { prior = "LogNormal(log(1.0), 1)" }

[individual]
CL = "theta1*WGT*exp(eta_CL)"
V = "theta2*WGT*exp(eta_V)"

[omega]
eta_CL = { prior = "HalfNormal(0.3)", name = "omega11" }
eta_V = { prior = "HalfNormal(0.3)", name = "omega22" }

[residual]
model = "proportional"
prop = { prior = "HalfNormal(0.1)", name = "sigma" }

[sampler]
name = "nutpie"
chains = 1
tune = 5
draws = 5
seed = 1
"""


def nm_spec(old: str = "", new: str = "") -> str:
    if not old:
        return NM_SPEC
    assert old in NM_SPEC, old
    return NM_SPEC.replace(old, new, 1)


LONG_DATA = "ID,TIME,SLD\n1,0,50\n1,42,40\n1,84,35\n2,0,70\n2,42,60\n"
LONG_SPEC = """[model]
tgi = "stein_fojo"
[data]
path = "sld.csv"
subject = "ID"
time = "TIME"
dv = "SLD"
[theta]
b = "Normal(4, 1)"
s = "Normal(-4, 1)"
g = "Normal(-5, 1)"
[individual]
y0 = "exp(b + eta_b)"
d = "exp(s)"
g = "exp(g)"
[omega]
eta_b = "HalfNormal(1)"
[residual]
model = "proportional"
prop = "HalfNormal(1)"
"""


def long_spec(old: str = "", new: str = "") -> str:
    if not old:
        return LONG_SPEC
    assert old in LONG_SPEC, old
    return LONG_SPEC.replace(old, new, 1)


def long_data(row: int, column: str, value: str) -> str:
    rows = [r.split(",") for r in LONG_DATA.strip().split("\n")]
    rows[row][rows[0].index(column)] = value
    return "\n".join(",".join(r) for r in rows) + "\n"


NM = {"pheno.csv": PHENO_TEXT}
FIT_CHECK = ("fit", "spec.toml", "--check")
TINY = ("--chains", "1", "--tune", "5", "--draws", "5", "--quiet")

LATIN1 = "ID,TIME,EVID,AMT,CMT,II,ADDL,DV,CENTRE\n1,0,1,12,1,0,0,.,Z\u00fcrich\n".encode("latin-1")

# a small SDTM folder (csv): one subject, one target and one non-target lesion, three visits
TU = ("DOMAIN,USUBJID,TULNKID,TUSTRESC,TULOC,TUEVAL\n"
      "TU,S1,T01,TARGET,LIVER,INVESTIGATOR\n"
      "TU,S1,NT01,NON-TARGET,LUNG,INVESTIGATOR\n")
TR_ROWS = ["TR,S1,T01,LDIAM,30,30,2021-01-05,1,INVESTIGATOR",
           "TR,S1,NT01,TUMSTATE,PRESENT,,2021-01-05,1,INVESTIGATOR",
           "TR,S1,T01,LDIAM,20,20,2021-02-21,2,INVESTIGATOR",
           "TR,S1,NT01,TUMSTATE,PRESENT,,2021-02-21,2,INVESTIGATOR"]
TR_HEADER = "DOMAIN,USUBJID,TRLNKID,TRTESTCD,TRORRES,TRSTRESN,TRDTC,VISITNUM,TREVAL"
DM = "DOMAIN,USUBJID,RFXSTDTC\nDM,S1,2021-01-10\n"


def tr(*rows: str, header: str = TR_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def tr_bad(row: int, cell: int, value: str) -> str:
    rows = [r.split(",") for r in TR_ROWS]
    rows[row - 1][cell] = value
    return tr(*(",".join(r) for r in rows))


def sdtm(tu: str = TU, trx: str | bytes | None = None, dm: str | None = DM) -> dict:
    files = {"sdtm/tu.csv": tu, "sdtm/tr.csv": tr(*TR_ROWS) if trx is None else trx}
    if dm is not None:
        files["sdtm/dm.csv"] = dm
    return files


SDTM = ("recist", "sdtm", "--out", "r.csv")


# ================================================================================================
# predict: NONMEM-style event files
# ================================================================================================
def _predict_cases() -> None:
    a = "predict"
    p = PRED
    add(a, "negative AMT", p, ["AMT", "-5", "row 1"], {"ev.csv": ev("1,0,1,-5,1,0,0,.")})
    add(a, "missing AMT on a dose", p, ["AMT", "row 1"], {"ev.csv": ev("1,0,1,.,1,0,0,.")})
    add(a, "non-numeric AMT", p, ["AMT", "twelve", "row 1"],
        {"ev.csv": ev("1,0,1,twelve,1,0,0,.", *EV_GOOD[1:])})
    add(a, "infinite AMT", p, ["AMT", "inf", "row 1"],
        {"ev.csv": ev("1,0,1,inf,1,0,0,.", *EV_GOOD[1:])})
    add(a, "time backwards within a subject", p, ["TIME", "row 3", "ID 1"],
        {"ev.csv": ev("1,5,1,12,1,0,0,.", "1,6,0,0,2,0,0,1", "1,2,0,0,2,0,0,1")})
    add(a, "non-numeric TIME", p, ["TIME", "2h", "row 2"],
        {"ev.csv": ev(EV_GOOD[0], "1,2h,0,0,2,0,0,1.5")})
    add(a, "nan TIME", p, ["TIME", "row 2"], {"ev.csv": ev(EV_GOOD[0], "1,nan,0,0,2,0,0,1.5")})
    add(a, "blank ID", p, ["ID", "row 2"], {"ev.csv": ev(EV_GOOD[0], ",2,0,0,2,0,0,1.5")})
    add(a, "unknown CMT", p, ["CMT", "7", "row 1"], {"ev.csv": ev("1,0,1,12,7,0,0,.",
                                                                    *EV_GOOD[1:])})
    add(a, "ADDL with II=0", p, ["ADDL", "II", "row 1"], {"ev.csv": ev("1,0,1,12,1,0,3,.",
                                                                          *EV_GOOD[1:])})
    add(a, "negative II", p, ["II", "-24", "row 1"], {"ev.csv": ev("1,0,1,12,1,-24,3,.",
                                                                     *EV_GOOD[1:])})
    add(a, "negative ADDL", p, ["ADDL", "-3", "row 1"], {"ev.csv": ev("1,0,1,12,1,24,-3,.",
                                                                        *EV_GOOD[1:])})
    add(a, "fractional ADDL", p, ["ADDL", "2.5", "row 1"], {"ev.csv": ev("1,0,1,12,1,24,2.5,.",
                                                                           *EV_GOOD[1:])})
    add(a, "ADDL=1000000000", p, ["row 1", "ADDL", "doses", "SS"],
        {"ev.csv": ev("1,0,1,12,1,24,1000000000,.", *EV_GOOD[1:])}, sub=True)
    add(a, "unknown EVID", p, ["EVID", "5", "row 1"], {"ev.csv": ev("1,0,5,12,1,0,0,.",
                                                                      *EV_GOOD[1:])})
    add(a, "non-numeric DV", p, ["DV", "abc", "row 2"],
        {"ev.csv": ev(EV_GOOD[0], "1,2,0,0,2,0,0,abc")})
    add(a, "infinite DV", p, ["DV", "inf", "row 2"],
        {"ev.csv": ev(EV_GOOD[0], "1,2,0,0,2,0,0,inf")})
    cols = "ID,TIME,EVID,AMT,CMT,II,ADDL,DV,RATE,SS"
    add(a, "negative RATE", p, ["RATE", "-3", "row 1"],
        {"ev.csv": ev("1,0,1,12,2,0,0,.,-3,0", "1,2,0,0,2,0,0,1,0,0", header=cols)})
    add(a, "SS=1 without II", p, ["SS", "II", "row 1"],
        {"ev.csv": ev("1,0,1,12,1,0,0,.,0,1", "1,2,0,0,2,0,0,1,0,0", header=cols)})
    add(a, "unknown SS", p, ["SS", "5", "row 1"],
        {"ev.csv": ev("1,0,1,12,1,24,0,.,0,5", "1,2,0,0,2,0,0,1,0,0", header=cols)})
    add(a, "AMT on an observation", p, ["AMT", "row 2"],
        {"ev.csv": ev(EV_GOOD[0], "1,2,0,12,2,0,0,1.5")})
    add(a, "missing ID column", p, ["ID"], {"ev.csv": "TIME,EVID,AMT,CMT,DV\n0,1,12,1,.\n"})
    add(a, "missing TIME column", p, ["TIME"], {"ev.csv": "ID,EVID,AMT,CMT,DV\n1,1,12,1,.\n"})
    add(a, "lower-case header", p, [("ID", "id")],
        {"ev.csv": ev(*EV_GOOD, header=EV_HEADER.lower().replace("id,", "idx,"))})
    add(a, "duplicate header column", p, ["TIME", ("duplicate", "twice", "more than once",
                                                    "both")],
        {"ev.csv": ev("1,0,0,1,12,1,0,0,.", "1,0,2,0,0,2,0,0,1",
                      header="ID,TIME,TIME,EVID,AMT,CMT,II,ADDL,DV")})
    add(a, "ragged row", p, ["row 2", ("field", "column", "value")],
        {"ev.csv": ev(EV_GOOD[0], "1,2,0,0,2,0,0,1.5,7,8")})
    add(a, "whitespace table with a short row", p, ["row 2"],
        {"ev.csv": ev(EV_GOOD[0], "1 2 0 0 2", *EV_GOOD[2:], sep=" ")})
    add(a, "non-UTF-8 file", p, ["ev.csv", "UTF-8"], {"ev.csv": LATIN1}, sub=True)
    add(a, "empty file", p, ["ev.csv", ("empty", "no header")], {"ev.csv": ""})
    add(a, "blank lines only", p, ["ev.csv", ("blank", "empty", "no header")],
        {"ev.csv": "\n\n  \n"})
    add(a, "header only", p, ["ev.csv", ("no data", "no rows", "no record", "empty")],
        {"ev.csv": EV_HEADER + "\n"})
    add(a, "a directory as the data file", p, ["ev.csv", "folder"], {"ev.csv": DIR})
    add(a, "missing data file", p, ["ev.csv", ("does not exist", "not found")])
    add(a, "an xlsx file for a CSV", p, ["ev.csv"], {"ev.csv": b"PK\x03\x04\x14\x00\x06\x00"
                                                                b"\x08\x00\x00\x00!\x00\xff"})
    add(a, "unknown time unit", (*p, "--time-unit", "fortnights"), ["fortnights", "h"],
        {"ev.csv": ev(*EV_GOOD)})
    add(a, "unknown amount unit", (*p, "--amt-unit", "mmol"), ["mmol", "mg"],
        {"ev.csv": ev(*EV_GOOD)})
    add(a, "concentration unit as amount unit", (*p, "--amt-unit", "mg/L"), ["mg/L"],
        {"ev.csv": ev(*EV_GOOD)})
    add(a, "unknown card", ("predict", "--model", "aspirin", "--data", "ev.csv", "--out",
                            "o.csv"), ["aspirin", "anlotinib"], {"ev.csv": ev(*EV_GOOD)})
    add(a, "tumour card", ("predict", "--model", "sclc_triplet_tgi", "--data", "ev.csv",
                           "--out", "o.csv"), ["sclc_triplet_tgi", ("PK", "tumour")],
        {"ev.csv": ev(*EV_GOOD)})
    add(a, "--out is the input file", ("predict", "--model", "anlotinib", "--data", "ev.csv",
                                       "--out", "ev.csv"), ["ev.csv", "--out"],
        {"ev.csv": ev(*EV_GOOD)})
    add(a, "--out is an existing folder", ("predict", "--model", "anlotinib", "--data",
                                           "ev.csv", "--out", "res"), ["res", "folder"],
        {"ev.csv": ev(*EV_GOOD), "res/keep.txt": "mine\n"})
    add(a, "--out under a file", ("predict", "--model", "anlotinib", "--data", "ev.csv",
                                  "--out", "ev.csv/o.csv"), ["ev.csv"],
        {"ev.csv": ev(*EV_GOOD)})
    add(a, "missing --out", ("predict", "--model", "anlotinib", "--data", "ev.csv"), ["--out"],
        {"ev.csv": ev(*EV_GOOD)})


# ================================================================================================
# --param / --cov pairs (predict and exposure), regimen text, units, cards as .toml paths
# ================================================================================================
def _param_cases() -> None:
    for cmd, base, files in (("predict", PRED, {"ev.csv": ev(*EV_GOOD)}),
                             ("exposure", (*EXPO, "12 mg PO QD D1-14 Q21D"), {})):
        a = f"{cmd}-param"
        add(a, "lower-case cl=5", (*base, "--param", "cl=5"), ["cl", "CL", "V", "KA"], files)
        add(a, "unknown FOO=1", (*base, "--param", "FOO=1"), ["FOO", "CL", "V", "KA"], files)
        add(a, "KA=-1", (*base, "--param", "KA=-1"), ["KA", "-1"], files)
        add(a, "CL=0", (*base, "--param", "CL=0"), ["CL", "0"], files)
        add(a, "CL=-5", (*base, "--param", "CL=-5"), ["CL", "-5"], files)
        add(a, "CL=nan", (*base, "--param", "CL=nan"), ["CL", "nan"], files)
        add(a, "V=inf", (*base, "--param", "V=inf"), ["V", "inf"], files)
        add(a, "slash in the name", (*base, "--param", "CL/F=5"), ["CL/F", "CL"], files)
        add(a, "no equals sign", (*base, "--param", "CL"), ["CL", "NAME=VALUE"], files)
        add(a, "non-numeric value", (*base, "--param", "CL=fast"), ["CL", "fast"], files)
        add(a, "empty name", (*base, "--param", "=5"), [("=5", "''")], files)
        add(a, "value with a unit", (*base, "--param", "CL=9 L/h"), ["9 L/h"], files)


def _exposure_cases() -> None:
    a = "exposure"
    e = EXPO
    add(a, "regimen for another drug", (*e, TRIPLET_DURVA), ["durvalumab", "anlotinib"])
    add(a, "--days 1e7", ("exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "1e7"),
        [("--days", "days"), ("1e+07", "10000000", "1e7"), "doses"], sub=True)
    add(a, "--days 0", ("exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "0"),
        ["--days", "0"])
    add(a, "--days negative", ("exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days",
                               "-5"), ["--days", "-5"])
    add(a, "--days nan", ("exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "nan"),
        ["--days", "nan"])
    add(a, "--days inf", ("exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "inf"),
        ["--days", "inf"])
    add(a, "--days not a number", ("exposure", "anlotinib", "--regimen", "12 mg PO QD",
                                   "--days", "six weeks"), ["--days", "six weeks"])
    add(a, "missing --regimen", ("exposure", "anlotinib", "--days", "42"), ["--regimen"])
    add(a, "misspelt option", ("exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days",
                               "42", "--jsn"), ["--jsn"])
    add(a, "unknown command", ("exposur", "anlotinib"), ["exposur"])
    add(a, "unknown card", ("exposure", "aspirin", "--regimen", "12 mg PO QD", "--days", "42"),
        ["aspirin", "anlotinib"])
    add(a, "odd card path", ("exposure", "/nonexistent/x.toml", "--regimen", "12 mg PO QD",
                             "--days", "42"), ["/nonexistent/x.toml"])
    add(a, "tumour card", ("exposure", "sclc_triplet_tgi", "--regimen", "12 mg PO QD",
                           "--days", "42"), ["sclc_triplet_tgi"])
    # regimen grammar
    bad = {
        "negative dose": ("-12 mg PO QD", ["-12"]),
        "unknown dose unit": ("12 mmol PO QD", ["mmol"]),
        "unknown route": ("12 mg XX QD D1", ["XX"]),
        "no route": ("12 mg QD D1-14 Q21D", ["route"]),
        "no amount": ("mg PO QD", ["mg"]),
        "words for numbers": ("twelve mg PO QD", ["twelve"]),
        "zero cycle length": ("12 mg PO QD D1 Q0D", ["Q0D"]),
        "negative interval": ("12 mg PO QD D1 Q-21D", ["-21"]),
        "Q5H does not divide a day": ("12 mg PO Q5H", ["Q5H"]),
        "reversed day range": ("12 mg PO QD D14-1 Q21D", ["14"]),
        "day zero": ("12 mg PO QD D0-13 Q21D", ["D0"]),
        "days beyond the cycle": ("12 mg PO QD D1-28 Q21D", ["28", "21"]),
        "day list without a cycle": ("12 mg PO QD D1-14", ["D1-14"]),
        "zero cycles": ("12 mg PO QD D1-14 Q21D x0", ["x0"]),
        "trailing then": ("12 mg PO QD x4 then", ["then"]),
        "repeated option": ("12 mg PO QD BID", [("QD", "BID")]),
        "reversed hold": ("12 mg PO QD; hold D30-20", ["30", "20"]),
        "unknown clause": ("12 mg PO QD; pause D10", ["pause"]),
        "empty regimen": ("", ["''"]),
        "only a drug name": ("anlotinib:", ["anlotinib"]),
        "infusion time on an oral dose": ("12 mg PO QD 60 min", ["min", "PO"]),
        "negative infusion time": ("1500 mg IV -60 min Q3W", ["-60"]),
        "unterminated quote": ('"anlotinib: 12 mg PO QD', ['"']),
        "garbage after the regimen": ("12 mg PO QD D1-14 Q21D @@@", ["@@@"]),
    }
    for name, (text, needles) in bad.items():
        add("regimen", name, (*e, text), needles)
    # covariate-dependent doses
    add("regimen", "mg/m2 without BSA", (*e, "12 mg/m2 PO QD D1-14 Q21D"), ["BSA", "--cov"])
    add("regimen", "mg/kg without WT", (*e, "0.2 mg/kg PO QD D1-14 Q21D"), ["WT", "--cov"])
    add("regimen", "Calvert without GFR",
        ("exposure", "carboplatin", "--days", "42", "--regimen", "AUC 5 IV 60 min D1 Q21D x2"),
        ["GFR", "--cov"])
    add("regimen", "negative BSA", (*e, "12 mg/m2 PO QD D1-14 Q21D", "--cov", "BSA=-1.8"),
        ["BSA", "-1.8"])
    add("regimen", "zero weight", (*e, "0.2 mg/kg PO QD D1-14 Q21D", "--cov", "WT=0"),
        ["WT", "0"])
    add("regimen", "negative GFR",
        ("exposure", "carboplatin", "--days", "42", "--regimen", "AUC 5 IV 60 min D1 Q21D x2",
         "--cov", "GFR=-10"), ["GFR", "-10"])
    add("regimen", "BSA not a number", (*e, "12 mg/m2 PO QD D1-14 Q21D", "--cov", "BSA=tall"),
        ["BSA", "tall"])
    add("regimen", "covariate without a value", (*e, "12 mg PO QD D1-14 Q21D", "--cov", "BSA"),
        ["BSA", "NAME=VALUE"])


def _card_cases() -> None:
    variants = {
        "negative CL in the card": (card("value = 9.26", "value = -9.26"), ["CL", "-9.26"]),
        "text CL in the card": (card("value = 9.26", 'value = "fast"'), ["CL", "fast"]),
        "negative omega2": (card("omega2 = 0.08182", "omega2 = -0.08"), ["omega2", "-0.08"]),
        "unknown structural model": (card('model = "1cmt"', 'model = "5cmt"'), ["5cmt"]),
        "unknown absorption": (card('absorption = "oral"', 'absorption = "nasal"'), ["nasal"]),
        "unknown time unit": (card('time_unit = "h"', 'time_unit = "fortnight"'),
                              ["fortnight"]),
        "unknown conc unit": (card('conc_unit = "ng/mL"', 'conc_unit = "furlongs"'),
                              ["furlongs"]),
        "misspelt section": (card("[structure]", "[structur]"), ["structur"]),
        "missing value": (card("value = 2010.0\n", ""), ["V", "value"]),
        "not TOML": ("[card\nname = anlotinib\n", [("TOML", "toml")]),
        "empty file": ("", ["card.toml", ("empty", "[card]")]),
        "non-UTF-8": ((ANLO_CARD.replace("Xu G", "X\u00fc G")).encode("latin-1"),
                      ["card.toml", "UTF-8"]),
    }
    for name, (text, needles) in variants.items():
        files = {"card.toml": text}
        add("cards", name, ("cards", "card.toml"), needles, files)
        if name in ("negative CL in the card", "unknown structural model", "not TOML",
                    "empty file"):
            add("exposure-card", name, ("exposure", "card.toml", "--days", "42", "--regimen",
                                        "12 mg PO QD"), needles, files)
    add("predict-card", "negative CL in the card",
        ("predict", "--model", "card.toml", "--data", "ev.csv", "--out", "o.csv"),
        ["CL", "-9.26"], {"card.toml": card("value = 9.26", "value = -9.26"),
                          "ev.csv": ev(*EV_GOOD)})
    add("cards", "unknown name", ("cards", "aspirin"), ["aspirin", "anlotinib"])
    add("cards", "missing .toml path", ("cards", "nope.toml"),
        ["nope.toml", ("does not exist", "not found", "no model card")])
    add("cards", "a folder", ("cards", "dir.toml"), ["dir.toml", "folder"], {"dir.toml": DIR})
    add("cards", "a folder without suffix", ("cards", "somedir"), ["somedir"],
        {"somedir": DIR})
    add("cards", "odd path", ("cards", "../../../etc/passwd"), ["passwd"])
    add("cards", "a CSV given as a card", ("cards", "ev.csv"), ["ev.csv"],
        {"ev.csv": ev(*EV_GOOD)})


# ================================================================================================
# simulate
# ================================================================================================
def _simulate_cases() -> None:
    a = "simulate"
    s = SIM
    add(a, "drug not in the model", ("simulate", "--model", "sclc_triplet_tgi", "--regimen",
                                     "nivolumab: 240 mg IV 30 min Q2W", "--days", "50",
                                     "--quiet", "--out", "s.csv"), ["nivolumab"])
    add(a, "regimen without a drug", ("simulate", "--model", "sclc_triplet_tgi", "--regimen",
                                      "1500 mg IV 60 min Q3W", "--days", "50", "--quiet",
                                      "--out", "s.csv"), ["drug"])
    add(a, "same drug twice", (*s, "--regimen", "durvalumab: 1120 mg IV 60 min Q3W"),
        ["durvalumab"])
    add(a, "--n 0", (*s, "--n", "0"), ["--n", "0"])
    add(a, "--n negative", (*s, "--n", "-3"), ["--n", "-3"])
    add(a, "--n not an integer", (*s, "--n", "2.5"), ["--n", "2.5"])
    add(a, "--days 0", (*s, "--days", "0"), [("--days", "days ="), "0"])
    add(a, "--days negative", (*s, "--days", "-50"), [("--days", "days ="), "-50"])
    add(a, "--days nan", (*s, "--days", "nan"), [("--days", "days ="), "nan"])
    add(a, "--days 1e7", ("simulate", "--model", "sclc_triplet_tgi", "--regimen", TRIPLET_DURVA,
                          "--days", "1e7", "--quiet", "--out", "s.csv"),
        ["--days", ("1e+07", "10000000", "1e7")], sub=True)
    add(a, "--times negative", (*s, "--times", "0,-7,14"), ["times", "-7"])
    add(a, "--times not numbers", (*s, "--times", "0,x"), ["--times", "x"])
    add(a, "--times beyond --days", (*s, "--times", "0,100"), ["times", "100", "50"])
    add(a, "--seed negative", (*s, "--seed", "-1"), ["--seed", "-1"])
    add(a, "--param PSI=nan", (*s, "--param", "PSI=nan"), ["PSI", "nan"])
    add(a, "--param unknown", (*s, "--param", "FOO=1"), ["FOO", "PSI"])
    add(a, "--param BASE=-5", (*s, "--param", "BASE=-5"), ["BASE", "-5"])
    add(a, "--out unknown extension", ("simulate", "--model", "sclc_triplet_tgi", "--regimen",
                                       TRIPLET_DURVA, "--days", "50", "--quiet", "--out",
                                       "s.xlsx"), ["s.xlsx", ".csv"])
    add(a, "--out an existing folder", ("simulate", "--model", "sclc_triplet_tgi", "--regimen",
                                        TRIPLET_DURVA, "--days", "50", "--quiet", "--out",
                                        "res.csv"), ["res.csv", "folder"], {"res.csv": DIR})
    add(a, "PK card", ("simulate", "--model", "anlotinib", "--regimen", TRIPLET_DURVA,
                       "--days", "50", "--quiet", "--out", "s.csv"), ["anlotinib", "tumour"])
    add(a, "mg/m2 etoposide without BSA", (*s, "--regimen",
                                           "etoposide: 100 mg/m2 IV 60 min D1-3 Q21D x4"),
        ["BSA", "etoposide"])


# ================================================================================================
# recist: lesion CSV / XLSX and SDTM folders
# ================================================================================================
def _xlsx(text: str) -> bytes:
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    buf = io.BytesIO()
    df.to_excel(buf, index=False)
    return buf.getvalue()


def _recist_cases() -> None:
    a = "recist"
    r = REC
    g = les(*LES_GOOD)
    add(a, "missing column is_node", r, ["is_node"],
        {"lesions.csv": "subject,day,lesion_id,lesion_type,organ,diameter_mm,state\n"
                        "P1,-3,T1,target,lung,30,\n"})
    add(a, "non-numeric diameter", r, ["abc", "row 3", "P1"], {"lesions.csv": les_bad(3, 6,
                                                                                      "abc")})
    add(a, "negative diameter", r, ["-18", "row 3", "P1"], {"lesions.csv": les_bad(3, 6, "-18")})
    add(a, "infinite diameter", r, ["inf", "row 3", "P1"], {"lesions.csv": les_bad(3, 6, "inf")})
    add(a, "unknown lesion type", r, ["targett", "row 3", "P1"],
        {"lesions.csv": les_bad(3, 3, "targett")})
    add(a, "unknown state", r, ["gone", "row 2", "P1"], {"lesions.csv": les_bad(2, 7, "gone")})
    add(a, "is_node not a boolean", r, ["maybe", "row 1", "P1"],
        {"lesions.csv": les_bad(1, 5, "maybe")})
    add(a, "non-numeric day", r, ["D42", "row 3", "P1"], {"lesions.csv": les_bad(3, 1, "D42")})
    add(a, "blank subject", r, ["subject", "row 3"], {"lesions.csv": les_bad(3, 0, "")})
    add(a, "duplicate lesion and visit", r, ["T1", "P1", "42"],
        {"lesions.csv": les(*LES_GOOD, "P1,42,T1,target,lung,false,21,")})
    add(a, "measured before baseline", r, ["P1", "before baseline"],
        {"lesions.csv": les("P1,-20,T1,target,lung,false,30,", "P1,-3,T1,target,lung,false,31,",
                            "P1,42,T1,target,lung,false,20,")})
    add(a, "no baseline", r, ["P1", "baseline"],
        {"lesions.csv": les("P1,42,T1,target,lung,false,18,", "P1,84,T1,target,lung,false,15,")})
    add(a, "more than 5 targets", r, ["P1", "5"], {"lesions.csv": les(*(
        f"P1,-3,T{i},target,organ{i},false,20," for i in range(1, 7)))})
    add(a, "duplicate header column", r, ["diameter_mm", ("duplicate", "twice",
                                                          "more than once")],
        {"lesions.csv": les("P1,-3,T1,target,lung,false,30,30,",
                            header=LES_HEADER.replace("state", "diameter_mm,state"))})
    add(a, "empty file", r, ["lesions.csv", ("empty", "no header")], {"lesions.csv": ""})
    add(a, "header only", r, ["lesions.csv", ("no data", "no rows", "no lesion", "empty")],
        {"lesions.csv": LES_HEADER + "\n"})
    add(a, "non-UTF-8", r, ["lesions.csv", "UTF-8"],
        {"lesions.csv": les("P1,-3,T1,target,f\u00e9mur,false,30,").encode("latin-1")})
    add(a, "missing file", r, ["lesions.csv", ("does not exist", "not found")])
    add(a, "unknown extension", ("recist", "lesions.json", "--out", "r.csv"),
        ["lesions.json", ".csv"], {"lesions.json": '{"subject": "P1"}\n'})
    add(a, "xlsx with a bad value", ("recist", "lesions.xlsx", "--out", "r.csv"),
        ["abc", "row 3", "P1"], {"lesions.xlsx": _xlsx(les_bad(3, 6, "abc"))})
    add(a, "xlsx that is not a workbook", ("recist", "lesions.xlsx", "--out", "r.csv"),
        ["lesions.xlsx", ("xlsx", "Excel", "workbook")], {"lesions.xlsx": g})
    add(a, "xlsx empty file", ("recist", "lesions.xlsx", "--out", "r.csv"),
        ["lesions.xlsx", "empty"], {"lesions.xlsx": b""})
    add(a, "--confirm-days negative", (*r, "--confirm-days", "-5"), ["--confirm-days", "-5"],
        {"lesions.csv": g})
    add(a, "--sd-min-days nan", (*r, "--sd-min-days", "nan"), ["--sd-min-days", "nan"],
        {"lesions.csv": g})
    add(a, "--subjects missing", (*r, "--subjects", "subj.csv"),
        ["subj.csv", ("does not exist", "not found")], {"lesions.csv": g})
    add(a, "--subjects bad death day", (*r, "--subjects", "subj.csv"), ["abc", "P1", "death_day"],
        {"lesions.csv": g, "subj.csv": "subject,death_day\nP1,abc\n"})
    add(a, "--subjects empty", (*r, "--subjects", "subj.csv"), ["subj.csv", "empty"],
        {"lesions.csv": g, "subj.csv": ""})
    add(a, "--subjects without a subject column", (*r, "--subjects", "subj.csv"),
        ["subj.csv", "subject"], {"lesions.csv": g, "subj.csv": "patient,death_day\nP1,100\n"})
    add(a, "--out is the input", ("recist", "lesions.csv", "--out", "lesions.csv"),
        ["lesions.csv", "--out"], {"lesions.csv": g})
    add(a, "--visits is the input", (*r, "--visits", "lesions.csv"),
        ["lesions.csv", "--visits"], {"lesions.csv": g})
    add(a, "--out an existing folder", ("recist", "lesions.csv", "--out", "res"),
        ["res", "folder"], {"lesions.csv": g, "res/keep.txt": "mine\n"})
    # SDTM folders
    s = SDTM
    add("sdtm", "empty folder", s, ["sdtm", "TU", "TR"], {"sdtm": DIR})
    add("sdtm", "TU without TR", s, ["TR"], {"sdtm/tu.csv": TU})
    add("sdtm", "non-numeric TRSTRESN", s, ["abc", "row 3", "S1"], sdtm(trx=tr_bad(3, 5, "abc")))
    add("sdtm", "negative TRSTRESN", s, ["-20", "row 3", "S1"], sdtm(trx=tr_bad(3, 5, "-20")))
    add("sdtm", "TR links to no TU lesion", s, ["T09", "row 3", "S1"],
        sdtm(trx=tr_bad(3, 2, "T09")))
    add("sdtm", "unknown lesion type", s, ["TARGETT", "row 1", "S1"],
        sdtm(tu=TU.replace("T01,TARGET", "T01,TARGETT")))
    add("sdtm", "impossible date", s, ["2021-13-45", "row 3", "S1"],
        sdtm(trx=tr_bad(3, 6, "2021-13-45")))
    add("sdtm", "no reference date", s, ["S1", ("reference", "RFXSTDTC", "DM")], sdtm(dm=None))
    add("sdtm", "TU without USUBJID", s, ["USUBJID"],
        sdtm(tu=TU.replace("USUBJID", "SUBJID")))
    add("sdtm", "empty TR file", s, ["tr.csv", "empty"], sdtm(trx=""))
    add("sdtm", "non-UTF-8 TR file", s, ["tr.csv", "UTF-8"],
        sdtm(trx=tr(*TR_ROWS).replace("INVESTIGATOR", "INVESTIGAT\u00d6R").encode("latin-1")))
    add("sdtm", "unknown evaluator", (*s, "--evaluator", "NOBODY"), ["NOBODY", "INVESTIGATOR"],
        sdtm())


# ================================================================================================
# fit: specs (TOML) and fit data (nonmem and long formats)
# ================================================================================================
def _fit_spec_cases() -> None:
    a = "fit-spec"
    f = FIT_CHECK
    spec = {
        "unknown section": (nm_spec("[theta]", "[thetas]"), ["thetas"]),
        "unknown key in [data]": (nm_spec('format = "nonmem"', 'format = "nonmem"\ncolums = 1'),
                                  ["colums"]),
        "unknown key in [fit]": (nm_spec('name = "pheno"', 'name = "pheno"\nauthor = "me"'),
                                 ["author"]),
        "unknown key in [sampler]": (nm_spec("seed = 1", "seed = 1\nwarmup = 100"),
                                     ["warmup"]),
        "chains as text": (nm_spec("chains = 1", 'chains = "four"'), ["chains", "four"]),
        "chains negative": (nm_spec("chains = 1", "chains = -1"), ["chains", "-1"]),
        "draws zero": (nm_spec("draws = 5", "draws = 0"), ["draws", "0"]),
        "tune fractional": (nm_spec("tune = 5", "tune = 1.5"), ["tune", "1.5"]),
        "target_accept too high": (nm_spec("seed = 1", "seed = 1\ntarget_accept = 1.5"),
                                   ["target_accept", "1.5"]),
        "seed as text": (nm_spec("seed = 1", 'seed = "abc"'), ["seed", "abc"]),
        "unknown sampler": (nm_spec('name = "nutpie"', 'name = "gibbs"'), ["gibbs", "nutpie"]),
        "unknown prior distribution": (nm_spec('"LogNormal(log(1.0), 1)"', '"Gamma2(1, 1)"'),
                                       ["Gamma2"]),
        "malformed prior": (nm_spec('"LogNormal(log(1.0), 1)"', '"LogNormal(0, "'),
                            ["LogNormal(0,"]),
        "negative prior scale": (nm_spec('"HalfNormal(0.1)"', '"HalfNormal(-1)"'),
                                 ["HalfNormal(-1)"]),
        "unknown theta in an expression": (nm_spec('"theta2*WGT*exp(eta_V)"',
                                                   '"theta2*theta9*WGT*exp(eta_V)"'),
                                           ["theta9"]),
        "unknown model parameter": (nm_spec('CL = "theta1', 'CLX = "theta1'), ["CLX"]),
        "slash in a parameter name": (nm_spec('CL = "theta1', '"C/L" = "theta1'), ["C/L"]),
        "expression injection": (nm_spec('"theta1*WGT*exp(eta_CL)"', '"__import__(\'os\')"'),
                                 ["__import__"]),
        "[fixed] overrides [individual]": (nm_spec("[theta]", "[fixed]\nV = 1.0\n\n[theta]"),
                                           ["V", "[fixed]", "[individual]"]),
        "omega for an unused eta": (nm_spec('eta_V = {', 'eta_Q = { prior = "HalfNormal(1)" }'
                                                         '\neta_V = {'), ["eta_Q"]),
        "unknown residual model": (nm_spec('model = "proportional"', 'model = "exponentialx"'),
                                   ["exponentialx"]),
        "residual prior allows negatives": (nm_spec('"HalfNormal(0.1)"', '"Normal(0, 1)"'),
                                            ["Normal(0, 1)"]),
        "unknown pk model": (nm_spec('pk = "1cmt"', 'pk = "4cmt"'), ["4cmt"]),
        "unknown absorption": (nm_spec('absorption = "iv"', 'absorption = "nasal"'), ["nasal"]),
        "unknown card": (nm_spec('pk = "1cmt"\nabsorption = "iv"\ntime_unit = "h"',
                                 'card = "aspirin"'), ["aspirin"]),
        "missing card file": (nm_spec('pk = "1cmt"\nabsorption = "iv"\ntime_unit = "h"',
                                      'card = "mycard.toml"'), ["mycard.toml"]),
        "unknown tgi model": (long_spec('tgi = "stein_fojo"', 'tgi = "stein_fojo2"'),
                              ["stein_fojo2"]),
        "unknown data format": (nm_spec('format = "nonmem"', 'format = "xml"'), ["xml"]),
        "unknown time unit": (nm_spec('time_unit = "h"\ncovariates', 'time_unit = "fortnight"'
                                                                     '\ncovariates'),
                              ["fortnight"]),
        "missing data file": (nm_spec('path = "pheno.csv"', 'path = "nope.csv"'), ["nope.csv"]),
        "no [data] path": (nm_spec('path = "pheno.csv"\n', ""), ["path"]),
        "covariates as a string": (nm_spec('covariates = ["WGT", "APGR"]', 'covariates = "WGT"'),
                                   ["covariates"]),
        "unknown covariate column": (nm_spec('covariates = ["WGT", "APGR"]',
                                             'covariates = ["WGT", "APGR", "AGE"]'), ["AGE"]),
        "not TOML": ("[fit\nname = pheno\n", [("TOML", "toml")]),
        "empty spec file": ("", ["spec.toml", ("empty", "[model]")]),
        "[fit] name with a slash": (nm_spec('name = "pheno"', 'name = "a/b"'), ["a/b", "name"]),
        "[fit] name ..": (nm_spec('name = "pheno"', 'name = ".."'), ["'..'", "name"]),
    }
    for name, (text, needles) in spec.items():
        files = {"spec.toml": text, **NM}
        if "tgi" in text:
            files = {"spec.toml": text, "sld.csv": LONG_DATA}
        add(a, name, f, needles, files)
    add(a, "non-UTF-8 spec", f, ["spec.toml", "UTF-8"],
        {"spec.toml": ("# Z\u00fcrich\n" + NM_SPEC).encode("latin-1"), **NM})
    add(a, "spec is a folder", f, ["spec.toml", "folder"], {"spec.toml": DIR})
    add(a, "missing spec", f, ["spec.toml", ("does not exist", "not found")])
    add(a, "data path is a folder", f, ["pheno.csv", "folder"],
        {"spec.toml": NM_SPEC, "pheno.csv": DIR})
    add(a, "--chains negative", (*f, "--chains", "-2"), ["chains", "-2"],
        {"spec.toml": NM_SPEC, **NM})
    add(a, "--draws zero", (*f, "--draws", "0"), ["draws", "0"], {"spec.toml": NM_SPEC, **NM})
    add(a, "--sampler unknown", (*f, "--sampler", "gibbs"), ["gibbs"],
        {"spec.toml": NM_SPEC, **NM})
    add(a, "--chains not an integer", (*f, "--chains", "four"), ["--chains", "four"],
        {"spec.toml": NM_SPEC, **NM})


def _fit_data_cases() -> None:
    a = "fit-data-nonmem"
    f = FIT_CHECK
    o = OBS_ROW
    bad = {
        "non-numeric observation": (pheno_bad(o, "DV", "abc"), ["abc", f"row {o}", "ID 1"]),
        "inf observation": (pheno_bad(o, "DV", "inf"), ["inf", f"row {o}", "ID 1"]),
        "-inf observation": (pheno_bad(o, "DV", "-inf"), ["-inf", f"row {o}", "ID 1"]),
        "decimal comma observation": (pheno_bad(o, "DV", '"17,3"'), ["17,3", f"row {o}"]),
        "non-numeric TIME": (pheno_bad(o, "TIME", "2h"), ["2h", f"row {o}", "TIME"]),
        "time backwards": (pheno_bad(DOSE_ROW, "TIME", "1.0"), [f"row {DOSE_ROW}", "TIME"]),
        "negative AMT": (pheno_bad(DOSE_ROW, "AMT", "-3.5"), ["-3.5", f"row {DOSE_ROW}", "AMT"]),
        "non-numeric AMT": (pheno_bad(DOSE_ROW, "AMT", "x"), ["'x'", f"row {DOSE_ROW}", "AMT"]),
        "non-numeric covariate": (pheno_bad(o, "WGT", "heavy"), ["heavy", f"row {o}", "WGT"]),
        "inf covariate": (pheno_bad(o, "WGT", "inf"), ["inf", f"row {o}", "WGT"]),
        "blank ID": (pheno_bad(o, "ID", ""), [f"row {o}", "ID"]),
        "missing ID column": (PHENO_TEXT.replace("ID,", "SUBJ,", 1), ["ID"]),
        "duplicate header": (PHENO_TEXT.replace("FA1,FA2", "DV,FA2", 1),
                             ["DV", ("duplicate", "twice", "more than once", "both")]),
        "European CSV (; and decimal comma)": (PHENO_TEXT.replace(",", ";").replace(".", ","),
                                               [("semicolon", "';'", "25,0", "decimal")]),
        "ADDL=1000000000": (PHENO_TEXT.replace("FA1,FA2", "FA1,FA2,II,ADDL", 1).replace(
            ",1,1\n", ",1,1,12,0\n").replace(",0,0\n", ",0,0,0,0\n").replace(
            ",1,1,12,0\n", ",1,1,12,1000000000\n", 1), ["ADDL", "row 1", "doses"]),
        "empty file": ("", ["pheno.csv", ("empty", "no header")]),
        "header only": (PHENO_TEXT.split("\n")[0] + "\n",
                        ["pheno.csv", ("no data", "no rows", "no observation", "empty")]),
        "non-UTF-8": (PHENO_TEXT.replace("FA2", "F\u00c42").encode("latin-1"),
                      ["pheno.csv", "UTF-8"]),
    }
    for name, (text, needles) in bad.items():
        add(a, name, f, needles, {"spec.toml": NM_SPEC, "pheno.csv": text},
            sub=(name == "ADDL=1000000000"))

    a = "fit-data-long"
    ls = {"spec.toml": LONG_SPEC}
    long_bad = {
        "dv column not found": (long_spec('dv = "SLD"', 'dv = "DV"'), LONG_DATA, ["DV", "SLD"]),
        "subject column not found": (long_spec('subject = "ID"', 'subject = "PATIENT"'),
                                     LONG_DATA, ["PATIENT", "ID"]),
        "time column not found": (long_spec('time = "TIME"', 'time = "DAY"'), LONG_DATA,
                                  ["DAY", "TIME"]),
        "non-numeric observation": (LONG_SPEC, long_data(2, "SLD", "abc"), ["abc", "row 2"]),
        "inf observation": (LONG_SPEC, long_data(2, "SLD", "inf"), ["inf", "row 2"]),
        "non-numeric time": (LONG_SPEC, long_data(2, "TIME", "week6"), ["week6", "row 2"]),
        "negative observation": (LONG_SPEC, long_data(2, "SLD", "-40"), ["-40", "row 2"]),
        "filter on an unknown column": (long_spec('dv = "SLD"', 'dv = "SLD"\nfilter = '
                                                  '{ study = 4 }'), LONG_DATA, ["study"]),
        "filter keeps nothing": (long_spec('dv = "SLD"', 'dv = "SLD"\nfilter = { ID = 9 }'),
                                 LONG_DATA, ["filter"]),
        "unknown zero rule": (long_spec('dv = "SLD"', 'dv = "SLD"\nzero = "maybe"'), LONG_DATA,
                              ["maybe"]),
        "unknown missing rule": (long_spec('dv = "SLD"', 'dv = "SLD"\nmissing = "ignore"'),
                                 LONG_DATA, ["ignore"]),
        "flag column not found": (long_spec('dv = "SLD"', 'dv = "SLD"\nflag = "FLAG"'),
                                  LONG_DATA, ["FLAG"]),
        "lloq negative": (long_spec('dv = "SLD"', 'dv = "SLD"\nlloq = -5.0'), LONG_DATA,
                          ["lloq", "-5"]),
        "subject as a number": (long_spec('subject = "ID"', "subject = 3"), LONG_DATA,
                                ["subject", "3"]),
        "empty file": (LONG_SPEC, "", ["sld.csv", ("empty", "no header")]),
        "header only": (LONG_SPEC, "ID,TIME,SLD\n",
                        ["sld.csv", ("no data", "no rows", "no observation", "empty")]),
    }
    for name, (text, data, needles) in long_bad.items():
        add(a, name, f, needles, {**ls, "spec.toml": text, "sld.csv": data})


def _fit_safety_cases() -> None:
    """Folder deletion: what pkpd did not create is never removed or replaced."""
    a = "fit-safety"
    proj = {"proj/pheno.csv": PHENO_TEXT,
            "other/notes.txt": "my notes\n", "existing/report.docx": b"\x00my report\x00"}
    for name, value, needles in ((".", '"."', ["name", ("'.'", '"."')]),
                                 ("../other", '"../other"', ["name", "../other"]),
                                 ("..", '".."', ["name", ("'..'", '".."')]),
                                 ("an absolute path", '"{tmp}/other"', ["name", "other"])):
        files = {**proj, "proj/spec.toml": nm_spec('name = "pheno"', f"name = {value}")}
        add(a, f"[fit] name = {name}", ("fit", "proj/spec.toml", *TINY), needles, files)
    add(a, "--out an existing folder that is not a fit",
        ("fit", "proj/spec.toml", "--out", "existing", *TINY), ["existing", "fit.json"],
        {**proj, "proj/spec.toml": NM_SPEC})
    add(a, "--out the spec's own folder", ("fit", "proj/spec.toml", "--out", "proj", *TINY),
        ["proj", "fit.json"], {**proj, "proj/spec.toml": NM_SPEC})
    add(a, "--out an existing file", ("fit", "proj/spec.toml", "--out", "other/notes.txt",
                                      *TINY), ["notes.txt"], {**proj, "proj/spec.toml": NM_SPEC})
    add(a, "--out the current folder", ("fit", "proj/spec.toml", "--out", ".", *TINY),
        ["fit.json"], {**proj, "proj/spec.toml": NM_SPEC})


# ================================================================================================
# summary and demo on missing or odd paths
# ================================================================================================
GOOD_RECORD = {"name": "x", "n_subjects": 1, "n_obs": 1,
               "sampler": {"name": "nutpie", "chains": 1, "tune": 1, "draws": 1},
               "timing": {"total_s": 1.0}, "diagnostics": {}}


def _summary_demo_cases() -> None:
    a = "summary"
    add(a, "missing folder", ("summary", "nofit"), ["nofit"])
    add(a, "empty folder", ("summary", "f"), ["f", "fit.json"], {"f": DIR})
    add(a, "a file, not a folder", ("summary", "spec.toml"), ["spec.toml"],
        {"spec.toml": NM_SPEC})
    add(a, "fit.json not JSON", ("summary", "f"), ["fit.json", "JSON"],
        {"f/fit.json": "{not json", "f/summary.csv": "parameter,mean\n"}, sub=True)
    add(a, "fit.json empty", ("summary", "f"), ["fit.json"],
        {"f/fit.json": "", "f/summary.csv": "parameter,mean\n"})
    add(a, "fit.json a folder", ("summary", "f"), ["fit.json"], {"f/fit.json": DIR})
    add(a, "fit.json without keys", ("summary", "f"), ["fit.json"],
        {"f/fit.json": "{}", "f/summary.csv": "parameter,mean\nCL,1\n"})
    add(a, "fit.json a list", ("summary", "f"), ["fit.json"],
        {"f/fit.json": "[1, 2]", "f/summary.csv": "parameter,mean\nCL,1\n"})
    add(a, "fit.json non-UTF-8", ("summary", "f"), ["fit.json", "UTF-8"],
        {"f/fit.json": b'{"name": "\xe9"}', "f/summary.csv": "parameter,mean\nCL,1\n"})
    add(a, "summary.csv missing", ("summary", "f"), ["summary.csv"],
        {"f/fit.json": json.dumps(GOOD_RECORD)})
    add(a, "summary.csv empty", ("summary", "f"), ["summary.csv"],
        {"f/fit.json": json.dumps(GOOD_RECORD), "f/summary.csv": ""})
    add(a, "posterior.nc corrupt", ("summary", "f"), ["posterior.nc"],
        {"f/fit.json": json.dumps(GOOD_RECORD), "f/summary.csv": "parameter,mean\nCL,1\n",
         "f/posterior.nc": b"not netcdf"})

    a = "demo"
    add(a, "--out an existing file", ("demo", "--out", "report.txt", "--n", "2"),
        ["report.txt"], {"report.txt": "mine\n"})
    add(a, "--out a non-empty folder", ("demo", "--out", "mine", "--n", "2"), ["mine"],
        {"mine/notes.txt": "mine\n"})
    add(a, "--out under a file", ("demo", "--out", "report.txt/demo", "--n", "2"),
        ["report.txt"], {"report.txt": "mine\n"})
    add(a, "--n 0", ("demo", "--out", "d", "--n", "0"), ["--n", "0"])
    add(a, "--n negative", ("demo", "--out", "d", "--n", "-5"), ["--n", "-5"])
    add(a, "--n not an integer", ("demo", "--out", "d", "--n", "many"), ["--n", "many"])


def _debug_cases() -> None:
    """--debug shows the traceback of a bug only: bad input stays one line with status 2."""
    a = "debug"
    add(a, "predict negative AMT", ("--debug", *PRED), ["AMT", "-5", "row 1"],
        {"ev.csv": ev("1,0,1,-5,1,0,0,.")})
    add(a, "predict non-UTF-8", (*PRED, "--debug"), ["ev.csv", "UTF-8"], {"ev.csv": LATIN1})
    add(a, "summary fit.json not JSON", ("--debug", "summary", "f"), ["fit.json", "JSON"],
        {"f/fit.json": "{not json", "f/summary.csv": "parameter,mean\n"})
    add(a, "fit empty long data", ("--debug", *FIT_CHECK), ["sld.csv", ("empty", "no header")],
        {"spec.toml": LONG_SPEC, "sld.csv": ""})
    add(a, "exposure CL=0", ("--debug", *EXPO, "12 mg PO QD", "--param", "CL=0"), ["CL", "0"])
    add(a, "recist non-numeric diameter", ("--debug", *REC), ["abc", "row 3", "P1"],
        {"lesions.csv": les_bad(3, 6, "abc")})


_predict_cases()
_debug_cases()
_param_cases()
_exposure_cases()
_card_cases()
_simulate_cases()
_recist_cases()
_fit_spec_cases()
_fit_data_cases()
_fit_safety_cases()
_summary_demo_cases()


# ================================================================================================
# running and checking
# ================================================================================================
def write_files(root: Path, files: dict) -> None:
    for rel, content in files.items():
        p = root / rel
        if content is DIR:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:   # "{tmp}" stands for the case's folder (absolute paths in specs)
            p.write_bytes(content.replace("{tmp}", str(root)).encode("utf-8"))


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under root."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def assert_untouched(before: dict, after: dict) -> None:
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not gone, f"deleted: {gone}"
    assert not changed, f"changed: {changed}"
    assert not new, f"written on error: {new}"


def run_inprocess(argv: list[str], capsys) -> tuple[int, str, str]:
    """``pkpd.cli.main(argv)``; argparse's SystemExit gives the status; anything else raised is a
    test failure that shows the exception."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # noqa: BLE001 - report what escaped the CLI
        out, err = capsys.readouterr()
        pytest.fail(f"main({argv}) raised {type(exc).__name__}: {exc}\n"
                    f"{traceback.format_exc()}\nstderr: {err}", pytrace=False)
    out, err = capsys.readouterr()
    return rc, out, err


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUB_MEMORY_BYTES, SUB_MEMORY_BYTES))


def run_subprocess(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """The real command, ``python -m pkpd.cli``, under a memory cap and a timeout: a case that
    would exhaust the machine's memory or hang fails instead."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    try:
        p = subprocess.run([sys.executable, "-m", "pkpd.cli", *argv], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=SUB_TIMEOUT_S,
                           preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pkpd {' '.join(argv)} did not finish in {SUB_TIMEOUT_S} s (hang or "
                    "unbounded work)", pytrace=False)
    return p.returncode, p.stdout, p.stderr


COMMANDS = ("exposure", "predict", "simulate", "recist", "cards", "fit", "summary", "demo")


def command_of(argv) -> str:
    return next(a for a in argv if not a.startswith("-"))


def assert_one_line_error(case: Case, rc: int, err: str) -> None:
    cmd = command_of(case.argv)
    assert rc == case.rc, f"exit status {rc}, expected {case.rc}; stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    prefix = f"pkpd {cmd}: error: " if cmd in COMMANDS else "pkpd: error: "
    assert lines[0].startswith(prefix), err
    if case.fix:
        assert "Fix" in err, f"no fix in: {err!r}"
    for needle in case.needles:
        alternatives = needle if isinstance(needle, tuple) else (needle,)
        assert any(n in err for n in alternatives), f"{needle!r} not in: {err!r}"


@pytest.mark.parametrize("cid", list(CASES))
def test_bad_input(cid, tmp_path, capsys, monkeypatch):
    case = CASES[cid]
    if not PHENO_CSV.exists() and "pheno" in str(case.files):
        pytest.fail(f"shared data missing: {PHENO_CSV}")
    write_files(tmp_path, case.files)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = list(case.argv)
    if case.sub:
        rc, out, err = run_subprocess(argv, tmp_path)
    else:
        rc, out, err = run_inprocess(argv, capsys)
    assert_one_line_error(case, rc, err)
    assert_untouched(before, snapshot(tmp_path))


def test_corpus_size():
    assert len(CASES) >= 150
    assert {command_of(c.argv) for c in CASES.values()} >= set(COMMANDS)


# ================================================================================================
# cases with their own checks
# ================================================================================================
def test_scientific_notation_dose_is_accepted(capsys):
    """``1.2e1 mg`` is 12 mg (issue 13: it was refused as "unknown unit 'e1'")."""
    rc, out, err = run_inprocess(["exposure", "anlotinib", "--regimen",
                                  "1.2e1 mg PO QD D1-14 Q21D", "--days", "42", "--json"], capsys)
    assert rc == 0, err
    sci = json.loads(out)
    rc, out, err = run_inprocess(["exposure", "anlotinib", "--regimen", "12 mg PO QD D1-14 Q21D",
                                  "--days", "42", "--json"], capsys)
    assert rc == 0, err
    ref = json.loads(out)
    assert sci["cmax"] == ref["cmax"] and sci["auc"] == ref["auc"]


def _same_as_comma_or_named(cmd_argv, files_sep, files_comma, out_name, tmp_path, capsys,
                            monkeypatch, name):
    """A file with another separator is either read as the comma version (same output) or
    refused with a message that names the separator; never "missing ID"."""
    sep_dir, comma_dir = tmp_path / "sep", tmp_path / "comma"
    write_files(sep_dir, files_sep)
    write_files(comma_dir, files_comma)
    before = snapshot(sep_dir)
    monkeypatch.chdir(sep_dir)
    rc, out, err = run_inprocess(list(cmd_argv), capsys)
    if rc == 0:
        monkeypatch.chdir(comma_dir)
        rc_c, _, err_c = run_inprocess(list(cmd_argv), capsys)
        assert rc_c == 0, err_c
        if out_name:
            assert (sep_dir / out_name).read_bytes() == (comma_dir / out_name).read_bytes()
        return
    case = Case(tuple(cmd_argv), ((name, repr(SEPS[name])),))
    assert_one_line_error(case, rc, err)
    assert_untouched(before, snapshot(sep_dir))


SEPS = {"semicolon": ";", "tab": "\t", "pipe": "|"}


@pytest.mark.parametrize("name", ["semicolon", "tab", "pipe"])
def test_predict_other_separator(name, tmp_path, capsys, monkeypatch):
    sep = SEPS[name]
    _same_as_comma_or_named(PRED, {"ev.csv": ev(*EV_GOOD, sep=sep)}, {"ev.csv": ev(*EV_GOOD)},
                            "o.csv", tmp_path, capsys, monkeypatch, name)


def test_recist_semicolon_separator(tmp_path, capsys, monkeypatch):
    good = les(*LES_GOOD)
    _same_as_comma_or_named(REC, {"lesions.csv": good.replace(",", ";")},
                            {"lesions.csv": good}, "r.csv", tmp_path, capsys, monkeypatch,
                            "semicolon")


@pytest.mark.parametrize("fmt", ["nonmem", "long"])
def test_fit_data_semicolon_separator(fmt, tmp_path, capsys, monkeypatch):
    spec, name, text = ((NM_SPEC, "pheno.csv", PHENO_TEXT) if fmt == "nonmem" else
                        (LONG_SPEC, "sld.csv", LONG_DATA))
    _same_as_comma_or_named(FIT_CHECK, {"spec.toml": spec, name: text.replace(",", ";")},
                            {"spec.toml": spec, name: text}, None, tmp_path, capsys,
                            monkeypatch, "semicolon")


# ================================================================================================
# controls: the unedited fixtures are accepted, so each case fails for its own edit
# ================================================================================================
CONTROLS = {
    "predict": (PRED, {"ev.csv": ev(*EV_GOOD)}),
    "predict whitespace table": (PRED, {"ev.csv": ev(*EV_GOOD, sep=" ")}),
    "exposure": ((*EXPO, "12 mg PO QD D1-14 Q21D"), {}),
    "exposure card path": (("exposure", "card.toml", "--days", "42", "--regimen",
                            "12 mg PO QD"), {"card.toml": ANLO_CARD}),
    "cards card path": (("cards", "card.toml"), {"card.toml": ANLO_CARD}),
    "recist csv": (REC, {"lesions.csv": les(*LES_GOOD)}),
    "recist xlsx": (("recist", "lesions.xlsx", "--out", "r.csv"),
                    {"lesions.xlsx": _xlsx(les(*LES_GOOD))}),
    "recist sdtm": (SDTM, sdtm()),
    "recist subjects": ((*REC, "--subjects", "subj.csv"),
                        {"lesions.csv": les(*LES_GOOD), "subj.csv": "subject,death_day\nP1,300\n"}),
    "fit nonmem": (FIT_CHECK, {"spec.toml": NM_SPEC, **NM}),
    "fit long": (FIT_CHECK, {"spec.toml": LONG_SPEC, "sld.csv": LONG_DATA}),
    "simulate": (SIM, {}),
}


def test_control_fit_writes_and_replaces_its_own_folder(tmp_path, capsys, monkeypatch):
    """The fit-safety cases are not vacuous: the same tiny fit runs, and replaces a folder that
    holds a pkpd fit, touching nothing else."""
    write_files(tmp_path, {"proj/spec.toml": NM_SPEC, "proj/pheno.csv": PHENO_TEXT,
                           "other/notes.txt": "my notes\n"})
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("newfit")}
        rc, out, err = run_inprocess(["fit", "proj/spec.toml", "--out", "newfit", *TINY], capsys)
        assert rc == 0, err
        assert (tmp_path / "newfit" / "fit.json").is_file()
        after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("newfit")}
        assert_untouched(before, after)


@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_is_accepted(name, tmp_path, capsys, monkeypatch):
    argv, files = CONTROLS[name]
    write_files(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_inprocess(list(argv), capsys)
    assert rc == 0, err


def test_recist_all_errors_lists_every_bad_row(tmp_path, capsys, monkeypatch):
    """Real sponsor data have hundreds of bad rows: ``--all-errors`` names every one at once."""
    rows = [r.split(",") for r in LES_GOOD]
    rows[0][6], rows[2][6], rows[4][3] = "abc", "-7", "targett"
    write_files(tmp_path, {"lesions.csv": les(*(",".join(r) for r in rows))})
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_inprocess([*REC, "--all-errors"], capsys)
    assert rc == 2, err
    assert err.startswith("pkpd recist: error: ") and "Traceback" not in err
    for needle in ("row 1", "abc", "row 3", "-7", "row 5", "targett"):
        assert needle in err, (needle, err)
    assert_untouched(before, snapshot(tmp_path))


def test_debug_guard_real_command(tmp_path):
    """The real entry point on an input that a user gets wrong: status 2, one line, and the
    same message with --debug (input errors are not bugs: no traceback either way)."""
    (tmp_path / "ev.csv").write_text(ev("1,0,1,-5,1,0,0,."))
    for extra in ([], ["--debug"]):
        rc, out, err = run_subprocess([*extra, *PRED], tmp_path)
        assert rc == 2 and "Traceback" not in err, err
        assert err.strip().count("\n") == 0 and err.startswith("pkpd predict: error: ")
        assert "-5" in err and "row 1" in err
    assert not (tmp_path / "o.csv").exists()
