"""Bad input in NONMEM event files and fit data files (issue 13, defects 3, 5, 6, 7 and 8).

Each bad file gives exit status 2 and one line naming the row, subject, column and value with a
fix (CLI), or the same DataError (API). Only a true blank, '.', NA/NaN or a declared code is a
missing value; text and inf are errors. Every input line is accounted for.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pkpd.cli import main
from pkpd.dosing.events import (
    MAX_DOSES_PER_RECORD,
    MAX_DOSES_TOTAL,
    EventTable,
    expand_addl,
    read_nonmem,
    row_account,
)
from pkpd.errors import DataError
from pkpd.fit import load_spec, read_fit_data

REPO = Path(__file__).resolve().parents[1]
PHENO_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "pk_phenobarbital" / \
    "pheno_pharmpy.csv"
needs_pheno = pytest.mark.skipif(not PHENO_CSV.exists(), reason="shared pheno data missing")
pytestmark = pytest.mark.filterwarnings("ignore::pkpd.dosing.events.PkpdDataWarning")

GOOD = "ID,TIME,EVID,AMT,II,ADDL,DV\n1,0,1,12,24,6,.\n1,23,0,.,.,.,12.5\n1,30,0,.,.,.,20\n"


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.err


def _one_line_error(capsys, *argv) -> str:
    rc, err = _run(capsys, *argv)
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("pkpd ")]
    assert len(lines) == 1, err
    assert "Fix:" in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# pkpd predict: values
# ------------------------------------------------------------------------------------------------
BAD_VALUES = [
    # (text replacing the DV 12.5 of row 2 or a TIME/AMT cell, expected fragments)
    ("1,23,0,.,.,.,abc", ["row 2 (ID 1) column DV", "'abc'"]),
    ("1,23,0,.,.,.,<LOQ", ["row 2 (ID 1) column DV", "'<LOQ'"]),
    ("1,23,0,.,.,.,inf", ["row 2 (ID 1) column DV", "finite", "inf"]),
    ("1,23,0,.,.,.,-inf", ["row 2 (ID 1) column DV", "finite", "-inf"]),
    ("1,23,0,.,.,.,1e999", ["row 2 (ID 1) column DV", "finite", "inf"]),
    ('1,23,0,.,.,.,"1,5"', ["row 2 (ID 1) column DV", "'1,5'", "write 1.5"]),
    ("1,abc,0,.,.,.,12.5", ["row 2 (ID 1) column TIME", "'abc'"]),
    ("1,inf,0,.,.,.,12.5", ["row 2 (ID 1) column TIME", "finite"]),
    ("1,23,0,x,.,.,12.5", ["row 2 (ID 1) column AMT", "'x'"]),
]


@pytest.mark.parametrize("line, parts", BAD_VALUES)
def test_predict_refuses_text_and_inf(tmp_path, capsys, line, parts):
    data = tmp_path / "ev.csv"
    data.write_text(GOOD.replace("1,23,0,.,.,.,12.5", line))
    msg = _one_line_error(capsys, "predict", "--model", "anlotinib", "--data", str(data),
                          "--out", str(tmp_path / "p.csv"))
    for part in parts:
        assert part in msg
    assert not (tmp_path / "p.csv").exists()


# ------------------------------------------------------------------------------------------------
# pkpd predict: unbounded ADDL
# ------------------------------------------------------------------------------------------------
def test_predict_refuses_a_billion_addl_doses_at_once(tmp_path, capsys):
    data = tmp_path / "ev.csv"
    data.write_text("ID,TIME,EVID,AMT,II,ADDL,DV\n1,0,0,.,.,.,.\n1,0,0,.,.,.,.\n"
                    "1,0,1,12,24,1000000000,.\n1,23,0,.,.,.,.\n")
    msg = _one_line_error(capsys, "predict", "--model", "anlotinib", "--data", str(data),
                          "--out", str(tmp_path / "p.csv"))
    assert ("row 3 (ID 1) column ADDL: ADDL=1000000000 expands to 1000000001 doses; at most "
            f"{MAX_DOSES_PER_RECORD} per record") in msg
    assert "SS=1" in msg and "shorter horizon" in msg


def test_addl_total_limit(tmp_path, capsys):
    n_rec = MAX_DOSES_TOTAL // MAX_DOSES_PER_RECORD + 1
    lines = [f"{i},0,1,12,1,{MAX_DOSES_PER_RECORD - 1},." for i in range(1, n_rec + 1)]
    data = tmp_path / "ev.csv"
    data.write_text("ID,TIME,EVID,AMT,II,ADDL,DV\n" + "\n".join(lines) + "\n")
    msg = _one_line_error(capsys, "predict", "--model", "anlotinib", "--data", str(data),
                          "--out", str(tmp_path / "p.csv"))
    assert f"expand to {n_rec * MAX_DOSES_PER_RECORD} doses in all; at most {MAX_DOSES_TOTAL}" \
        in msg


def test_addl_at_the_limit_is_accepted_and_expanded():
    df = pd.DataFrame({"ID": 1, "TIME": [0.0], "AMT": [1.0], "II": [1.0],
                       "ADDL": [MAX_DOSES_PER_RECORD - 1]})
    assert len(expand_addl(read_nonmem(df))) == MAX_DOSES_PER_RECORD


def test_expand_addl_checks_tables_not_built_by_read_nonmem():
    t = read_nonmem(pd.DataFrame({"ID": 7, "TIME": [0.0], "AMT": [1.0], "II": [1.0],
                                  "ADDL": [3]}))
    df = t.df.copy()
    df.loc[0, "ADDL"] = 10**9
    with pytest.raises(DataError, match=r"row 1 \(ID 7\) column ADDL: ADDL=1000000000 expands"):
        expand_addl(EventTable(df))


# ------------------------------------------------------------------------------------------------
# pkpd predict: files
# ------------------------------------------------------------------------------------------------
def _latin1(p: Path):
    p.write_bytes("ID,TIME,AMT,DV,SITE\n1,0,12,.,Zürich\n".encode("latin-1"))


BAD_FILES = {
    "empty": (lambda p: p.write_text(""), ["is empty (0 bytes)"]),
    "blank": (lambda p: p.write_text("\n  \n\n"), ["only blank lines"]),
    "latin1": (_latin1, ["not UTF-8", "line 2", "0xfc"]),
    "folder": (lambda p: p.mkdir(), ["is a folder"]),
    "header only": (lambda p: p.write_text("ID,TIME,AMT,DV\n"), ["header but no data records"]),
    "comments only": (lambda p: p.write_text("# a\n@ b\n"), ["no header line"]),
    "C records only": (lambda p: p.write_text("C,ID,TIME\nC,1,0\n"),
                       ["header but no data records", "1 other line"]),
    "semicolon fields": (lambda p: p.write_text("ID;TIME;AMT\n1;0;12\n1;24\n"),
                         ["row 2", "2 fields but the header has 3", "semicolon-separated"]),
    "tab fields": (lambda p: p.write_text("ID\tTIME\tAMT\n1\t0\t12\t5\t6\n"),
                   ["row 1", "tab-separated"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_predict_bad_files_one_line(tmp_path, capsys, case):
    make, parts = BAD_FILES[case]
    data = tmp_path / "ev.csv"
    make(data)
    msg = _one_line_error(capsys, "predict", "--model", "anlotinib", "--data", str(data),
                          "--out", str(tmp_path / "p.csv"))
    for part in parts:
        assert part in msg


@pytest.mark.parametrize("sep, decimal", [(";", ","), (";", "."), ("\t", "."), ("|", "."),
                                          (" ", ".")])
def test_other_separators_give_the_same_predictions(tmp_path, capsys, sep, decimal):
    ref = tmp_path / "ref.csv"
    ref.write_text(GOOD)
    other = tmp_path / "other.csv"
    other.write_text("\n".join(sep.join(f.replace(".", decimal) if f != "." else f
                                        for f in line.split(","))
                               for line in GOOD.splitlines()) + "\n")
    for src, out in ((ref, "p_ref.csv"), (other, "p_other.csv")):
        rc, err = _run(capsys, "predict", "--model", "anlotinib", "--data", str(src), "--out",
                       str(tmp_path / out))
        assert rc == 0, err
    a = pd.read_csv(tmp_path / "p_ref.csv")
    b = pd.read_csv(tmp_path / "p_other.csv")
    assert len(a) == 2
    pd.testing.assert_frame_equal(a, b)


def test_tab_file_keeps_empty_fields(tmp_path):
    p = tmp_path / "ev.tsv"
    p.write_text("ID\tTIME\tAMT\tDV\tWT\n1\t0\t12\t\t70\n1\t24\t\t3.5\t\n")
    t = read_nonmem(p)
    assert t.df["AMT"].tolist() == [12.0, 0.0]
    assert t.df["DV"].tolist()[1] == 3.5
    assert np.isnan(t.df["WT"].iloc[1])


def test_decimal_commas_read_exactly_in_semicolon_files(tmp_path):
    p = tmp_path / "ev.csv"
    p.write_text("ID;TIME;AMT;DV;WT\n1;0;12,5;.;70,25\n1;0,5;.;-0,25e-1;70,25\n")
    t = read_nonmem(p, time_unit="h")
    assert t.df["AMT"].tolist() == [12.5, 0.0]
    assert t.df["TIME"].tolist() == [0.0, 0.5]
    assert t.df["DV"].iloc[1] == -0.025
    assert t.numeric("WT").tolist() == [70.25, 70.25]


# ------------------------------------------------------------------------------------------------
# row account (defect 8)
# ------------------------------------------------------------------------------------------------
EVENTS = """# anlotinib, one subject
@ skipped by IGNORE=@
ID,TIME,EVID,AMT,II,ADDL,SS,DV
1,0,1,12,24,13,0,.
1,23,0,.,.,.,.,12.5
C,1,48,0,.,.,.,.,99

1,72,2,.,.,.,.,.
1,100,3,.,.,.,.,.
1,0,4,12,24,0,1,.
ID,TIME,EVID,AMT,II,ADDL,SS,DV
1,30,0,.,.,.,.,.
"""


def test_predict_rows_lists_every_line(tmp_path, capsys):
    data = tmp_path / "ev.csv"
    data.write_text(EVENTS)
    rc, err = _run(capsys, "predict", "--model", "anlotinib", "--data", str(data), "--out",
                   str(tmp_path / "p.csv"), "--rows", str(tmp_path / "rows.csv"))
    assert rc == 0, err
    acc = pd.read_csv(tmp_path / "rows.csv", keep_default_na=False)
    n_lines = len(EVENTS.splitlines())
    assert len(acc) == n_lines - 1                           # every line but the header
    assert acc["line"].tolist() == [1, 2] + list(range(4, n_lines + 1))
    reason = acc.set_index("line")["reason"]
    assert reason[6] == "comment record (first field 'C', NONMEM IGNORE=C)"
    assert reason[1].startswith("comment line ('#'") and reason[2].startswith("skipped line ('@'")
    assert reason[7] == "blank line"
    assert reason[11] == "repeated header line (NONMEM $TABLE output)"
    assert reason[4] == "dose and 13 additional doses every 24 h (ADDL)"
    assert reason[5] == "observation; predicted"
    assert reason[8] == "other event (EVID 2); predicted"
    assert reason[9] == "reset (EVID 3)"
    assert reason[10] == "reset and dose (EVID 4) at steady state (SS=1)"
    assert reason[12] == "observation record without a value (MDV=1); predicted"
    used = acc["used"].astype(str) == "True"
    assert used.sum() == 6 and (~used).sum() == 5
    # the records are the predictions' rows
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == acc["reason"].str.endswith("predicted").sum() == 3


def test_row_account_survives_units_and_expansion(tmp_path):
    p = tmp_path / "ev.csv"
    p.write_text(EVENTS)
    t = read_nonmem(p)
    acc = row_account(t)
    assert acc.equals(row_account(expand_addl(t.with_units(time_unit="day"))))
    assert acc["row"].isna().sum() == 2                         # the lines before the header
    assert acc.loc[acc["used"], "row"].tolist() == t.df["ROW"].tolist()


def test_row_account_of_a_dataframe_and_of_a_bare_table():
    df = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 1.0, 0.0], "AMT": [5.0, 0.0, 5.0],
                       "DV": [None, 2.0, None]})
    t = read_nonmem(df)
    acc = row_account(t)
    assert acc["line"].tolist() == [1, 2, 3] and acc["used"].all()
    assert acc["reason"].tolist() == ["dose", "observation", "dose"]
    bare = EventTable(t.df)
    assert row_account(bare).drop(columns="line").equals(acc.drop(columns="line"))


def test_classic_switch_off_record_is_accounted_for():
    df = pd.DataFrame({"ID": 1, "TIME": [0.0, 2.0, 3.0], "EVID": [10101, 10101, 0],
                       "AMT": [5.0, -5.0, 0.0], "DV": [None, None, 1.0]})
    acc = row_account(read_nonmem(df))
    assert len(acc) == 3
    assert acc["used"].tolist() == [True, False, True]
    assert acc["reason"].iloc[1].startswith("classic rxode2 switch-off record")


# ------------------------------------------------------------------------------------------------
# user columns (covariates, per-subject parameters)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, fragment", [("abc", "'abc'"), ("<LOQ", "'<LOQ'"),
                                             ("inf", "finite"), ("1e999", "finite"),
                                             ('"70,5"', "write 70.5")])
def test_numeric_user_column_is_strict(tmp_path, value, fragment):
    p = tmp_path / "ev.csv"
    p.write_text(f"ID,TIME,AMT,DV,WT\n1,0,12,.,70\n2,0,12,.,{value}\n")
    t = read_nonmem(p)
    with pytest.raises(DataError, match=r"row 2 \(ID 2\) column WT") as exc:
        t.numeric("WT")
    assert fragment in str(exc.value)


def test_numeric_user_column_missing_tokens():
    t = read_nonmem(pd.DataFrame({"ID": [1, 2, 3, 4], "TIME": 0.0,
                                  "WT": ["70", ".", "", "NA"]}))
    x = t.numeric("WT")
    assert x[0] == 70.0 and np.isnan(x[1:]).all()
    with pytest.raises(DataError, match="column HT not found"):
        t.numeric("HT")


# ------------------------------------------------------------------------------------------------
# pkpd fit --check, NONMEM format (phenobarbital)
# ------------------------------------------------------------------------------------------------
def _pheno_spec(tmp_path: Path, edit=None, data_name: str = "data.csv") -> Path:
    lines = PHENO_CSV.read_text().splitlines()
    if edit is not None:
        edit(lines)
    data = tmp_path / data_name
    if data_name != "folder":
        data.write_text("\n".join(lines) + "\n")
    spec = tmp_path / "spec.toml"
    text = (REPO / "fits" / "phenobarbital.toml").read_text()
    raw = tomllib.loads(text)
    old = raw["data"]["path"]
    spec.write_text(text.replace(f'path = "{old}"', f'path = "{data_name}"'))
    return spec


def _cell(row: int, col: int, value: str):
    """Edit: put ``value`` into data row ``row`` (1-based), field ``col`` (0-based)."""
    def edit(lines):
        f = lines[row].split(",")
        f[col] = value
        lines[row] = ",".join(f)
    return edit


PHENO_BAD = [  # header: ID,TIME,AMT,WGT,APGR,DV,FA1,FA2; data row 2 is an observation
    (_cell(2, 5, "abc"), ["row 2 (ID 1) column DV", "'abc'"]),
    (_cell(2, 5, "<LOQ"), ["row 2 (ID 1) column DV", "'<LOQ'"]),
    (_cell(2, 5, "inf"), ["row 2 (ID 1) column DV", "finite"]),
    (_cell(2, 5, "1e999"), ["row 2 (ID 1) column DV", "finite"]),
    (_cell(2, 5, '"17,3"'), ["row 2 (ID 1) column DV", "write 17.3"]),
    (_cell(2, 1, "2h"), ["row 2 (ID 1) column TIME", "'2h'"]),
    (_cell(2, 3, "abc"), ["row 2 (ID 1) column WGT", "'abc'"]),
    (_cell(3, 3, "inf"), ["row 3 (ID 1) column WGT", "finite"]),
    (_cell(3, 4, "seven"), ["row 3 (ID 1) column APGR", "'seven'"]),
    (_cell(3, 2, '"3,5x"'), ["row 3 (ID 1) column AMT", "'3,5x'"]),
]


@needs_pheno
@pytest.mark.parametrize("edit, parts", PHENO_BAD)
def test_fit_check_refuses_bad_values(tmp_path, capsys, edit, parts):
    spec = _pheno_spec(tmp_path, edit)
    msg = _one_line_error(capsys, "fit", str(spec), "--check")
    for part in parts:
        assert part in msg


@needs_pheno
@pytest.mark.parametrize("case", ["empty", "latin1", "folder", "header only"])
def test_fit_check_bad_nonmem_files(tmp_path, capsys, case):
    name = "folder" if case == "folder" else "data.csv"
    spec = _pheno_spec(tmp_path, data_name=name)
    data = tmp_path / name
    if case == "folder":
        data.mkdir()
    elif case == "empty":
        data.write_text("")
    elif case == "latin1":
        data.write_bytes(data.read_bytes().replace(b"ID", "ÏD".encode("latin-1"), 1))
    else:
        data.write_text(data.read_text().splitlines()[0] + "\n")
    msg = _one_line_error(capsys, "fit", str(spec), "--check")
    expected = {"empty": "is empty (0 bytes)", "latin1": "not UTF-8",
                "folder": "is a folder", "header only": "header but no data records"}[case]
    assert expected in msg


@needs_pheno
@pytest.mark.parametrize("sep, decimal", [(";", ","), ("\t", ".")])
def test_fit_data_semicolon_and_tab_files_read_the_same(tmp_path, sep, decimal):
    ref = read_fit_data(load_spec(_pheno_spec(tmp_path)))

    def to_other(lines):
        lines[:] = [sep.join(f.replace(".", decimal) for f in ln.split(",")) for ln in lines]
    other = tmp_path / "other"
    other.mkdir()
    d = read_fit_data(load_spec(_pheno_spec(other, to_other)))
    np.testing.assert_array_equal(d.y, ref.y)
    np.testing.assert_array_equal(d.obs_time, ref.obs_time)
    for k in ref.covariates:
        np.testing.assert_array_equal(d.covariates[k], ref.covariates[k])


@needs_pheno
def test_fit_data_rows_cover_every_line_of_a_nonmem_file(tmp_path):
    def comments(lines):
        lines.insert(3, "C," + lines[3])                   # a C record (data row 3)
        lines.insert(5, "# a comment")
        lines.insert(6, "")
        lines.insert(0, "# study 1985")                    # before the header

    spec = _pheno_spec(tmp_path, comments)
    d = read_fit_data(load_spec(spec))
    text = (tmp_path / "data.csv").read_text().splitlines()
    rows = d.rows
    assert len(rows) == len(text) - 1                       # every line but the header
    assert rows["line"].tolist() == [1] + list(range(3, len(text) + 1))
    c_row = rows[rows["row"] == 3]
    assert c_row["reason"].tolist() == ["comment record (first field 'C', NONMEM IGNORE=C)"]
    assert not c_row["used"].any()
    counts = rows["reason"].value_counts()
    assert counts["used"] == d.n_obs == 155
    assert counts["dose"] == 589
    assert counts.sum() == len(text) - 1
    assert set(rows.loc[rows["used"], "reason"]) == {"used", "dose"}
    np.testing.assert_array_equal(rows.loc[rows["reason"] == "used", "row"], d.obs_row)


def test_fit_data_nonmem_mdv_and_other_records_are_not_used(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("ID,TIME,EVID,AMT,DV,WT\n1,0,1,10,.,70\n1,1,0,.,5,70\n1,2,0,.,.,70\n"
                 "1,3,2,.,.,70\n")
    raw = {"model": {"pk": "1cmt", "absorption": "iv", "time_unit": "h"},
           "data": {"path": str(p), "format": "nonmem", "time_unit": "h"},
           "theta": {"tcl": "LogNormal(0, 1)", "tv": "LogNormal(0, 1)"},
           "individual": {"CL": "tcl*exp(eta_CL)", "V": "tv"},
           "residual": {"model": "proportional", "prop": "HalfNormal(0.1)"}}
    d = read_fit_data(load_spec(raw))
    assert d.rows["reason"].tolist() == ["dose", "used", "MDV=1: not an observation",
                                         "other event (EVID 2)"]
    assert d.rows["used"].tolist() == [True, True, False, False]


# ------------------------------------------------------------------------------------------------
# pkpd fit --check, long format
# ------------------------------------------------------------------------------------------------
LONG_SPEC = """[model]
tgi = "stein_fojo"
time_unit = "day"
[data]
path = "d.csv"
format = "long"
subject = "ID"
time = "TIME"
dv = "DV"
{extra}
[theta]
mu_b = "Normal(log(60), 1)"
mu_s = "Normal(log(0.01), 1)"
mu_g = "Normal(log(0.003), 1)"
[individual]
y0 = "exp(mu_b + eta_b)"
d = "exp(mu_s + eta_s)"
g = "exp(mu_g)"
[residual]
model = "proportional"
prop = "HalfNormal(1)"
"""
LONG = "ID,TIME,DV,WT,ST\n1,0,50,70,4\n1,30,45,70,4\n2,0,40,80,4\n2,30,35,80,4\n"


def _long(tmp_path: Path, data: str, extra: str = "") -> Path:
    (tmp_path / "d.csv").write_text(data)
    spec = tmp_path / "spec.toml"
    spec.write_text(LONG_SPEC.format(extra=extra))
    return spec


LONG_BAD = [
    ("2,30,35,", "2,30,abc,", ["row 4 (ID 2) column DV", "'abc'", "flag_values"]),
    ("2,30,35,", "2,30,<LOQ,", ["row 4 (ID 2) column DV", "'<LOQ'", "flag = 'DV'"]),
    ("2,30,35,", "2,30,inf,", ["row 4 (ID 2) column DV", "infinite", "inf"]),
    ("2,30,35,", "2,30,-inf,", ["row 4 (ID 2) column DV", "infinite"]),
    ("2,30,35,", "2,30,1e999,", ["row 4 (ID 2) column DV", "infinite", "'1e999'"]),
    ("2,30,35,", '2,30,"3,5",', ["row 4 (ID 2) column DV", "write 3.5"]),
    ("2,30,35,", "2,NA?,35,", ["row 4 (ID 2) column TIME", "'NA?'"]),
    ("2,30,35,", "2,inf,35,", ["row 4 (ID 2) column TIME", "infinite"]),
    ("2,30,35,80", "2,30,35,eighty", ["row 4 (ID 2) column WT", "'eighty'"]),
    ("2,30,35,80", "2,30,35,N/A", ["row 4 (ID 2) column WT", "'N/A'"]),
]


@pytest.mark.parametrize("old, new, parts", LONG_BAD)
def test_long_fit_check_refuses_bad_values(tmp_path, capsys, old, new, parts):
    spec = _long(tmp_path, LONG.replace(old, new), 'covariates = ["WT"]')
    msg = _one_line_error(capsys, "fit", str(spec), "--check")
    for part in parts:
        assert part in msg


def test_long_missing_tokens_are_missing_and_accounted(tmp_path):
    data = LONG.replace("1,30,45,", "1,30,,").replace("2,30,35,", "2,30,.,") + "\n3,0,NA,90,4\n"
    spec = load_spec(_long(tmp_path, data))
    d = read_fit_data(spec)
    assert d.n_obs == 2
    reason = d.rows.set_index("row")["reason"]
    assert reason[2].startswith("missing value") and reason[4].startswith("missing value")
    assert reason[5] == "blank line" and reason[6].startswith("missing value")
    assert len(d.rows) == len(data.splitlines()) - 1
    assert d.rows["line"].tolist() == list(range(2, len(data.splitlines()) + 1))


def test_long_declared_code_is_read(tmp_path):
    data = LONG.replace("2,30,35,", "2,30,<LOQ,")
    spec = load_spec(_long(tmp_path, data,
                           'flag = "DV"\nflag_values = { "<LOQ" = "censor" }\nlloq = 5.0'))
    d = read_fit_data(spec)
    assert d.y.tolist() == [50.0, 45.0, 40.0, 5.0]
    assert d.censored.tolist() == [False, False, False, True]


def test_long_rows_outside_the_filter_are_not_checked(tmp_path):
    data = LONG + "9,x,y,z,3\n"
    spec = load_spec(_long(tmp_path, data, 'filter = { ST = 4 }\ncovariates = ["WT"]'))
    d = read_fit_data(spec)
    assert d.n_obs == 4 and d.rows["reason"].iloc[-1].startswith("filter ST")


def test_long_semicolon_decimal_commas(tmp_path):
    ref = read_fit_data(load_spec(_long(tmp_path, LONG.replace("45", "45.5"))))
    other = tmp_path / "o"
    other.mkdir()
    semi = LONG.replace("45", "45,5").replace(",", ";").replace("45;5", "45,5")
    d = read_fit_data(load_spec(_long(other, semi)))
    np.testing.assert_array_equal(d.y, ref.y)
    assert 45.5 in d.y.tolist()


@pytest.mark.parametrize("case, expected", [
    ("empty", "is empty (0 bytes)"), ("latin1", "not UTF-8"), ("folder", "is a folder"),
    ("header only", "has a header but no data rows"), ("blank", "only blank lines")])
def test_long_bad_files(tmp_path, capsys, case, expected):
    spec = _long(tmp_path, LONG)
    data = tmp_path / "d.csv"
    if case == "folder":
        data.unlink()
        data.mkdir()
    elif case == "empty":
        data.write_text("")
    elif case == "blank":
        data.write_text("\n\n")
    elif case == "latin1":
        data.write_bytes("ID,TIME,DV,SITE\n1,0,50,Zürich\n".encode("latin-1"))
    else:
        data.write_text("ID,TIME,DV\n")
    msg = _one_line_error(capsys, "fit", str(spec), "--check")
    assert expected in msg and "fit data file" in msg



def test_semicolon_file_with_a_stray_comma_says_how_it_was_read(tmp_path, capsys):
    data = tmp_path / "ev.csv"
    data.write_text("ID;TIME;AMT;DV\n1;0;12;.\n1;23;.;1,2,3\n")
    msg = _one_line_error(capsys, "predict", "--model", "anlotinib", "--data", str(data),
                          "--out", str(tmp_path / "p.csv"))
    assert "row 2 (ID 1) column DV" in msg and "'1,2,3'" in msg
    assert "semicolon-separated, with decimal commas" in msg
    long_spec = _long(tmp_path, "ID;TIME;DV\n1;0;50\n1;30;4,5,1\n")
    msg = _one_line_error(capsys, "fit", str(long_spec), "--check")
    assert "row 2 (ID 1) column DV" in msg and "semicolon-separated" in msg
