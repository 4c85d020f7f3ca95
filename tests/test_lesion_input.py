"""Lesion-level tumour input and `pkpd recist` (issue 13, defects 6 and 7).

* File-level failures of the lesion, subjects, SDTM, ADaM and Laleh readers (empty, header only,
  non-UTF-8, a folder, a damaged workbook or XPT, an unknown type, ...) are one-line DataErrors
  naming the file and the fix: `pkpd recist` exits with 2, prints one line and writes nothing.
* A `;`- or tab-separated file (European Excel) is read; a decimal comma is read in its numeric
  columns; a column that mixes `12,5` and `12.5` is refused.
* `--all-errors` / `--errors E.csv` list every problem row at once; without them the first
  problem says how many more there are.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pkpd.cli import main
from pkpd.clinical import (
    PROBLEM_COLUMNS,
    DataProblems,
    read_adam,
    read_laleh_s1,
    read_lesions,
    read_sdtm,
    read_subjects,
    validate_lesions,
)
from pkpd.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

HEADER = "subject,day,lesion_id,lesion_type,organ,is_node,diameter_mm,state"
ROWS = [
    "P01,-7,T1,target,lung,false,30,",
    "P01,-7,T2,target,liver,false,25,",
    "P01,-7,NT1,nontarget,bone,false,,present",
    "P01,42,T1,target,lung,false,20,",
    "P01,42,T2,target,liver,false,15,",
    "P01,42,NT1,nontarget,bone,false,,present",
    "P01,84,T1,target,lung,false,18.5,",
    "P01,84,T2,target,liver,false,12,",
    "P01,84,NT1,nontarget,bone,false,,present",
    "P02,-3,T1,target,lymph node,true,22,",
    "P02,45,T1,target,lymph node,true,24,",
    "P02,90,T1,target,lymph node,true,30,",
]
GOOD = HEADER + "\n" + "\n".join(ROWS) + "\n"


def _xlsx_not_workbook(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "a zip archive, but not a workbook")


def _write(path: Path, content) -> Path:
    if callable(content):
        content(path)
    elif content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _recist(argv, capsys):
    rc = main(["recist", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pkpd recist: error: ")
    assert "Fix:" in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# file-level failures of the lesion file: CLI and API
# ------------------------------------------------------------------------------------------------

LESION_FILE_CASES = {
    "empty": ("les.csv", b"", "is empty (0 bytes)"),
    "header only": ("les.csv", HEADER + "\n", "has a header but no data rows"),
    "header and blank rows": ("les.csv", HEADER + "\n,,,,,,,\n\n,,\n",
                              "no data rows (3 blank rows)"),
    "blank lines only": ("les.csv", "\n \n\n", "holds only blank lines"),
    "latin-1 organ": ("les.csv", (GOOD.replace("liver", "foie é", 1)).encode("latin-1"),
                      "is not UTF-8 text: byte 0xe9 on line 3"),
    "binary": ("les.csv", b"\x00\x01\xff\xfe" * 20, "is not UTF-8 text"),
    "xlsx that is not a zip": ("les.xlsx", b"subject,day\n", "is not an Excel workbook"),
    "xlsx zip without a workbook": ("les.xlsx", _xlsx_not_workbook,
                                    "cannot be read as an Excel workbook"),
    "old xls": ("les.xls", b"\xd0\xcf\x11\xe0" * 8, "old-style .xls workbook"),
    "unknown extension": ("les.json", "{}", "unsupported lesion file type '.json'"),
    "no extension": ("lesions", GOOD, "unsupported lesion file type '(no extension)'"),
    "row with extra fields": ("les.csv", GOOD + "P02,135,T1,target,lymph node,true,30,,99\n",
                              "line 14 has 9 fields but the header has 8"),
    "space separated": ("les.csv", HEADER.replace(",", " ") + "\nP01 -7 T1 target lung N 30 x\n",
                        "is missing the column(s) subject, day, lesion_id, lesion_type, organ, "
                        "is_node, diameter_mm, state (read as comma-separated; columns found: "
                        "'subject day lesion_id"),
    "sep line only": ("les.csv", "sep=;\n", "holds no header row"),
    "mixed decimal marks": (
        "les.csv",
        GOOD.replace(",", ";").replace(";30;", ";30,5;").replace(";25;", ";25.5;"),
        "column diameter_mm mixes decimal commas (row 1: '30,5') and decimal points (row 2: "
        "'25.5')"),
}


@pytest.mark.parametrize("case", LESION_FILE_CASES, ids=list(LESION_FILE_CASES))
def test_cli_lesion_file_failures_are_one_line(tmp_path, capsys, case):
    name, content, expected = LESION_FILE_CASES[case]
    path = _write(tmp_path / name, content)
    before = path.read_bytes()
    rc, _, err = _recist([path, "--out", tmp_path / "r.csv", "--rows", tmp_path / "rows.csv"],
                         capsys)
    line = _one_error_line(err)
    assert rc == 2
    assert expected in line
    assert name in line
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "rows.csv").exists()
    assert path.read_bytes() == before


@pytest.mark.parametrize("case", LESION_FILE_CASES, ids=list(LESION_FILE_CASES))
def test_read_lesions_file_failures_raise_data_error(tmp_path, case):
    name, content, expected = LESION_FILE_CASES[case]
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as e:
        read_lesions(path)
    assert expected in str(e.value) and name in str(e.value)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: p.mkdir() or p, "is a folder, not a file"),
    ],
    ids=["missing", "folder"],
)
def test_read_lesions_missing_file_or_folder(tmp_path, make, expected):
    path = make(tmp_path / "les.csv")
    with pytest.raises(DataError, match=expected):
        read_lesions(path)


def test_cli_missing_lesion_file(tmp_path, capsys):
    rc, _, err = _recist([tmp_path / "nope.csv", "--out", tmp_path / "r.csv"], capsys)
    assert rc == 2 and "nope.csv does not exist" in _one_error_line(err)


def test_cli_folder_without_tu_tr_names_it_and_its_files(tmp_path, capsys):
    folder = tmp_path / "lesions.csv"   # a folder where a file was meant
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    rc, _, err = _recist([folder, "--out", tmp_path / "r.csv"], capsys)
    line = _one_error_line(err)
    assert rc == 2
    assert "lacks the TU and TR domain(s) in folder" in line and "lesions.csv" in line
    assert "files there: notes.txt" in line and "lesion-level .csv/.xlsx file" in line


def test_read_lesions_unknown_sheet(tmp_path):
    path = tmp_path / "les.xlsx"
    frame = pd.read_csv(_write(tmp_path / "g.csv", GOOD), dtype=str, keep_default_na=False)
    frame.to_excel(path, index=False, sheet_name="Data")
    assert len(read_lesions(path, sheet="Data").lesions) == len(ROWS)
    with pytest.raises(DataError, match=r"has no worksheet 'Lesions' \(worksheets: Data\)"):
        read_lesions(path, sheet="Lesions")


# ------------------------------------------------------------------------------------------------
# separators and decimal commas
# ------------------------------------------------------------------------------------------------


def _european(text: str, sep: str = ";") -> str:
    """The file as European Excel writes it: `;` between fields, decimal commas."""
    return text.replace(",", sep).replace("18.5", "18,5")


@pytest.mark.parametrize(
    ("variant", "content", "note"),
    [
        ("semicolon", _european(GOOD), "semicolon-separated, with decimal commas in diameter_mm"),
        ("tab", _european(GOOD, "\t"), "tab-separated, with decimal commas in diameter_mm"),
        ("sep= line", "sep=;\n" + _european(GOOD), "semicolon-separated, with decimal commas"),
        ("semicolon, decimal points", GOOD.replace(",", ";"), "read as semicolon-separated\n"),
        ("utf-8 with BOM", "\ufeff" + GOOD, None),
    ],
)
def test_separators_give_the_comma_file_result(tmp_path, capsys, variant, content, note):
    ref = _write(tmp_path / "ref.csv", GOOD)
    path = _write(tmp_path / "les.csv", content)
    rc_ref, _, _ = _recist([ref, "--out", tmp_path / "ref_r.csv", "--visits",
                            tmp_path / "ref_v.csv"], capsys)
    rc, out, err = _recist([path, "--out", tmp_path / "r.csv", "--visits", tmp_path / "v.csv"],
                           capsys)
    assert rc_ref == 0 and rc == 0, err
    if note:
        assert note in out
    else:
        assert "separated" not in out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r.csv"),
                                  pd.read_csv(tmp_path / "ref_r.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "v.csv"),
                                  pd.read_csv(tmp_path / "ref_v.csv"))
    lesions = read_lesions(path).lesions
    assert lesions["diameter_mm"].iloc[6] == 18.5
    pd.testing.assert_frame_equal(lesions.drop(columns="source"),
                                  read_lesions(ref).lesions.drop(columns="source"))


def test_decimal_comma_day_and_quoted_comma_text(tmp_path):
    text = (
        "subject;day;lesion_id;lesion_type;organ;is_node;diameter_mm;state\n"
        'P1;-0,5;T1;target;"lung; left";N;12,5;\n'
        "P1;42;T1;target;lung, left;N;10;\n"
    )
    les = read_lesions(_write(tmp_path / "l.csv", text)).lesions
    assert les["day"].tolist() == [-0.5, 42.0]
    assert les["diameter_mm"].tolist() == [12.5, 10.0]
    assert les["organ"].tolist() == ["lung; left", "lung, left"]     # text is never converted
    assert les.attrs["file_format"] == {"separator": "semicolon",
                                        "decimal_comma_columns": ["day", "diameter_mm"]}


def test_decimal_comma_is_not_read_in_a_comma_file(tmp_path):
    text = HEADER + '\nP1,-1,T1,target,lung,N,"12,5",\n'
    with pytest.raises(DataError, match=r"row 1 \(ID P1\) column diameter_mm: non-numeric "
                                        r"diameter; got '12,5'"):
        read_lesions(_write(tmp_path / "l.csv", text))


def test_wrong_separator_says_how_the_file_was_read(tmp_path):
    text = "subject:day:lesion_id\nP1:1:T1\n"
    with pytest.raises(DataError, match=r"read as comma-separated; columns found: "
                                        r"'subject:day:lesion_id'"):
        read_lesions(_write(tmp_path / "l.csv", text))


# ------------------------------------------------------------------------------------------------
# --all-errors / --errors, and the count of further problems
# ------------------------------------------------------------------------------------------------


def _many_problems(n_bad_days: int) -> str:
    rows = [HEADER]
    for k in range(n_bad_days):
        rows.append(f"S{k:03d},week {k},T1,target,lung,N,20,")
    rows.append("S999,-1,T1,measurable,lung,maybe,-3,shrinking")   # 4 problems in one row
    rows.append("S998,-1,T1,target,lung,N,20,")
    rows.append("S998,-1,T1,target,lung,N,21,")                    # duplicate of the row above
    rows.append("S997,-1,T1,target,lung,N,20,")                    # a good row
    return "\n".join(rows) + "\n"


def test_first_error_says_how_many_more(tmp_path, capsys):
    path = _write(tmp_path / "many.csv", _many_problems(30))
    rc, _, err = _recist([path, "--out", tmp_path / "r.csv"], capsys)
    line = _one_error_line(err)
    assert rc == 2
    assert line.startswith("pkpd recist: error: row 1 (ID S000) column day: non-numeric day; "
                           "got 'week 0'. Fix:")
    assert "[34 more problems in lesion file many.csv; list them all with `pkpd recist " \
           "--all-errors`" in line
    assert not (tmp_path / "r.csv").exists()
    with pytest.raises(DataError) as e:
        read_lesions(path)
    assert e.value.n_more == 34 and e.value.row == 1 and e.value.column == "day"


def test_a_single_error_has_no_count(tmp_path):
    path = _write(tmp_path / "one.csv", GOOD.replace("P01,42,T1,target,lung,false,20,",
                                                     "P01,42,T1,target,lung,false,-20,"))
    with pytest.raises(DataError) as e:
        read_lesions(path)
    assert "more problem" not in str(e.value) and e.value.n_more == 0


@pytest.mark.parametrize("flags", [["--all-errors"], ["--errors", "E.csv"],
                                   ["--all-errors", "--errors", "E.csv"]])
def test_all_errors_lists_every_problem(tmp_path, capsys, flags):
    path = _write(tmp_path / "many.csv", _many_problems(30))
    flags = [str(tmp_path / f) if f.endswith(".csv") else f for f in flags]
    rc, out, err = _recist([path, "--out", tmp_path / "r.csv", "--visits", tmp_path / "v.csv",
                            *flags], capsys)
    assert rc == 2 and "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("pkpd recist: error: 35 problems in 32 rows of lesion file "
                               "many.csv")
    assert lines[0].endswith("no result written. Fix: correct the rows below, then rerun")
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 15 more"
    assert lines[1] == ("  row 1 (ID S000) column day: non-numeric day; got 'week 0'. Fix: "
                        "write the number of days since the first dose (or give date and "
                        "first_dose_date columns instead of day)")
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "v.csv").exists()
    if "--errors" in flags:
        assert f"(all listed in {tmp_path / 'E.csv'})" in lines[0]
        rep = pd.read_csv(tmp_path / "E.csv", dtype=str, keep_default_na=False)
        assert list(rep.columns) == list(PROBLEM_COLUMNS[:-1])
        assert len(rep) == 35
        assert rep["row"].astype(int).is_monotonic_increasing
        bad = rep[rep["subject"] == "S999"]
        assert bad["column"].tolist() == ["lesion_type", "is_node", "diameter_mm", "state"]
        assert bad["value"].tolist() == ["measurable", "maybe", "-3", "shrinking"]
        dup = rep[rep["subject"] == "S998"]
        assert dup["row"].tolist() == ["32"] and "also row(s) 33" in dup["problem"].iloc[0]
        assert set(rep["source"]) == {"many.csv"} and (rep["fix"] != "").all()


def test_errors_file_is_written_empty_when_the_file_is_clean(tmp_path, capsys):
    path = _write(tmp_path / "good.csv", GOOD)
    rc, _, err = _recist([path, "--out", tmp_path / "r.csv", "--errors", tmp_path / "E.csv"],
                         capsys)
    assert rc == 0, err
    rep = pd.read_csv(tmp_path / "E.csv")
    assert list(rep.columns) == list(PROBLEM_COLUMNS[:-1]) and len(rep) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == 2


def test_read_lesions_all_errors_api(tmp_path):
    path = _write(tmp_path / "many.csv", _many_problems(3))
    with pytest.raises(DataProblems) as e:
        read_lesions(path, all_errors=True)
    exc = e.value
    assert isinstance(exc, DataError)
    assert (exc.n_problems, exc.n_rows) == (8, 5)
    assert str(exc).startswith("8 problems in 5 rows of lesion file many.csv; the first: row 1")
    frame = exc.to_frame()
    assert frame["row"].tolist() == [1, 2, 3, 4, 4, 4, 4, 5]
    assert exc.lines(3)[-1] == "... and 5 more" and len(exc.lines(None)) == 8


def test_all_errors_with_dates(tmp_path):
    text = (
        "subject,date,first_dose_date,lesion_id,lesion_type,organ,is_node,diameter_mm,state\n"
        "A,2021-03-01,2021-03-05,T1,target,LIVER,N,20,\n"
        "A,16/04/2021,2021-03-05,T1,target,LIVER,N,15,\n"
        "A,2021-05-01,,T1,target,LIVER,N,15,\n"
        "B,2021-03-01,2021-03-02,T1,target,LIVER,N,x,\n"
        "B,2021-04-01,2021-03-09,T1,target,LIVER,N,12,\n"
    )
    with pytest.raises(DataProblems) as e:
        read_lesions(_write(tmp_path / "d.csv", text), all_errors=True)
    f = e.value.to_frame()
    assert list(zip(f["row"], f["column"])) == [
        (2, "date"), (3, "first_dose_date"), (4, "diameter_mm"), (5, "first_dose_date")]
    assert "unparseable date" in f["problem"].iloc[0]
    assert "first_dose_date differs" in f["problem"].iloc[3]
    # no cascade: a row whose date failed is not also reported as "day is missing"
    assert not f["problem"].str.contains("day is missing").any()


def test_validate_lesions_all_errors_and_first_error(tmp_path):
    df = pd.read_csv(_write(tmp_path / "g.csv", GOOD), dtype=str, keep_default_na=False)
    df.loc[1, "lesion_type"] = "bogus"
    df.loc[4, "state"] = "growing"
    with pytest.raises(DataProblems) as e:
        validate_lesions(df, all_errors=True)
    assert e.value.to_frame()["row"].tolist() == [2, 5]
    with pytest.raises(DataError, match=r"row 2 .*unknown lesion_type; got 'bogus'.*\[1 more "
                                        r"problem in the lesion table"):
        validate_lesions(df)


# ------------------------------------------------------------------------------------------------
# --subjects
# ------------------------------------------------------------------------------------------------

SUBJECT_CASES = {
    "missing": (None, "subjects file", "does not exist"),
    "empty": (b"", "subjects file", "is empty (0 bytes)"),
    "header only": ("subject,death_day\n", "subjects file", "has a header but no data rows"),
    "no subject column": ("id,death_day\nP01,100\n", "subjects file",
                          "has no subject column (read as comma-separated; columns found: 'id'"),
    "misspelt column": ("subject,death_dy\nP01,100\n", "subjects file",
                        "has unknown column(s) death_dy"),
    "latin-1": ("subject,death_day\nPé,100\n".encode("latin-1"), "subjects file",
                "is not UTF-8 text"),
    "non-numeric day": ("subject,death_day\nP01,soon\n", "row 1 (ID P01) column death_day",
                        "is not a finite number; got 'soon'"),
    "infinite day": ("subject,death_day\nP01,inf\n", "row 1 (ID P01) column death_day",
                     "is not a finite number; got 'inf'"),
    "subject missing": ("subject,death_day\n,100\n", "row 1 column subject",
                        "subject of s.csv is missing"),
    "subject twice": ("subject,death_day\nP01,100\nP01,120\n", "row 2 (ID P01)",
                      "subject appears twice"),
}


@pytest.mark.parametrize("case", SUBJECT_CASES, ids=list(SUBJECT_CASES))
def test_cli_subjects_file_failures(tmp_path, capsys, case):
    content, where, expected = SUBJECT_CASES[case]
    les = _write(tmp_path / "les.csv", GOOD)
    subj = tmp_path / "s.csv"
    if content is not None:
        _write(subj, content)
    rc, _, err = _recist([les, "--subjects", subj, "--out", tmp_path / "r.csv"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and where in line and expected in line
    assert not (tmp_path / "r.csv").exists()


def test_cli_subjects_folder(tmp_path, capsys):
    les = _write(tmp_path / "les.csv", GOOD)
    (tmp_path / "s").mkdir()
    rc, _, err = _recist([les, "--subjects", tmp_path / "s", "--out", tmp_path / "r.csv"], capsys)
    assert rc == 2 and "subjects file" in _one_error_line(err) and "is a folder" in err


def test_subjects_file_keeps_text_ids_and_reads_decimal_commas(tmp_path, capsys):
    """`001` stays `001` (pd.read_csv made it 1, so the death was silently ignored)."""
    les = _write(tmp_path / "les.csv", GOOD.replace("P01", "001"))
    subj = _write(tmp_path / "s.csv", "subject;death_day\n001;100,5\n\nP02;\n")
    df = read_subjects(subj)
    assert df["subject"].tolist() == ["001", "", "P02"]
    assert df["death_day"].tolist() == ["100.5", "", ""]
    rc, _, err = _recist([les, "--subjects", subj, "--out", tmp_path / "r.csv"], capsys)
    assert rc == 0, err
    res = pd.read_csv(tmp_path / "r.csv", dtype={"subject": str}).set_index("subject")
    # 001 has no PD (PR); its death on day 100.5 is the PFS event: 100.5 - 0 + 1 days
    assert res.loc["001", "pfs_event_type"] == "death" and res.loc["001", "pfs_event"] == 1
    assert res.loc["001", "pfs_days"] == 101.5
    # P02: PD at day 90 (22 -> 30 mm, +36% and +8 mm over the nadir); no death given
    assert res.loc["P02", "pfs_event_type"] == "PD" and res.loc["P02", "pfs_days"] == 91


# ------------------------------------------------------------------------------------------------
# SDTM, ADaM and Laleh readers: file-level failures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdtm_folders(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_tumourdata import _write_sdtm

    base = tmp_path_factory.mktemp("sdtm_src")
    return {"csv": _write_sdtm(base / "csv", "csv"), "xpt": _write_sdtm(base / "xpt", "xpt")}


def _header_only(p: Path) -> None:
    p.write_text(p.read_text().splitlines()[0] + "\n")


SDTM_CASES = {
    "corrupt tu.xpt": ("xpt", "tu.xpt", lambda p: p.write_bytes(b"not an xport file " * 10),
                       "TU file", "cannot be read as a SAS transport (XPT) file"),
    "empty tr.xpt": ("xpt", "tr.xpt", lambda p: p.write_bytes(b""), "TR file",
                     "is empty (0 bytes)"),
    "corrupt sas7bdat": ("csv", "tu.csv",
                         lambda p: (p.unlink(), p.with_suffix(".sas7bdat").write_bytes(b"x" * 99)),
                         "TU file", "cannot be read as a SAS7BDAT file"),
    "empty tr.csv": ("csv", "tr.csv", lambda p: p.write_bytes(b""), "TR file",
                     "is empty (0 bytes)"),
    "header-only tr.csv": ("csv", "tr.csv", _header_only, "the TR domain (tr.csv)",
                           "has no records"),
    "header-only tu.csv": ("csv", "tu.csv", _header_only, "the TU domain (tu.csv)",
                           "has no records"),
    "latin-1 tu.csv": ("csv", "tu.csv",
                       lambda p: p.write_bytes(p.read_text().replace("LIVER", "FOIE é")
                                               .encode("latin-1")),
                       "TU file", "is not UTF-8 text: byte 0xe9"),
    "folder named tu.csv": ("csv", "tu.csv", lambda p: (p.unlink(), p.mkdir()), "TU file",
                            "is a folder, not a file"),
    "no tr": ("csv", "tr.csv", lambda p: p.unlink(), "lacks the TR domain(s) in folder",
              "files there: dm.csv, ex.csv, rs.csv, tu.csv"),
}


@pytest.mark.parametrize("case", SDTM_CASES, ids=list(SDTM_CASES))
def test_sdtm_file_failures(tmp_path, capsys, sdtm_folders, case):
    fmt, name, damage, where, expected = SDTM_CASES[case]
    folder = tmp_path / "sdtm"
    shutil.copytree(sdtm_folders[fmt], folder)
    damage(folder / name)
    with pytest.raises(DataError) as e:
        read_sdtm(folder)
    assert where in str(e.value) and expected in str(e.value)
    rc, _, err = _recist([folder, "--out", tmp_path / "r.csv"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and where in line and expected in line
    assert not (tmp_path / "r.csv").exists()


def test_sdtm_semicolon_csv_reads_like_the_comma_csv(tmp_path, sdtm_folders):
    folder = tmp_path / "sdtm"
    shutil.copytree(sdtm_folders["csv"], folder)
    for f in folder.iterdir():
        f.write_text(f.read_text().replace(",", ";"))
    a, b = read_sdtm(folder), read_sdtm(sdtm_folders["csv"])
    pd.testing.assert_frame_equal(a.lesions, b.lesions)
    pd.testing.assert_frame_equal(a.responses, b.responses)


def test_read_sdtm_given_a_file(sdtm_folders):
    with pytest.raises(DataError, match=r"SDTM folder '.*tu\.csv' is a file, not a folder"):
        read_sdtm(sdtm_folders["csv"] / "tu.csv")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "nope.xpt", "ADTR file '.*nope.xpt' does not exist"),
        (lambda d: _write(d / "adtr.xpt", b"junk" * 40),
         r"ADTR file '.*adtr.xpt' cannot be read as a SAS transport \(XPT\) file"),
        (lambda d: _write(d / "adtr.csv", b""), r"ADTR file '.*adtr.csv' is empty \(0 bytes\)"),
        (lambda d: _write(d / "adtr.csv", b"USUBJID\n" + "é\n".encode("latin-1")),
         "ADTR file '.*adtr.csv' is not UTF-8 text"),
        (lambda d: _write(d / "adtr", None), "ADTR file '.*adtr' is a folder, not a file"),
    ],
    ids=["missing", "corrupt xpt", "empty csv", "latin-1", "folder"],
)
def test_read_adam_file_failures(tmp_path, make, expected):
    with pytest.raises(DataError, match=expected):
        read_adam(adtr=make(tmp_path))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "s1.xlsx", "Laleh S1 workbook not found"),
        (lambda d: _write(d / "s1.xlsx", b""), r"is empty \(0 bytes\)"),
        (lambda d: _write(d / "s1.xlsx", b"Patient_Anonmyized,Treatment_Day\n"),
         "is not an Excel workbook"),
        (lambda d: _write(d / "s1.xlsx", _xlsx_not_workbook),
         "cannot be read as an Excel workbook"),
        (lambda d: _write(d / "s1.xlsx", None), "is a folder, not a file"),
    ],
    ids=["missing", "empty", "csv text", "zip not workbook", "folder"],
)
def test_read_laleh_file_failures(tmp_path, make, expected):
    with pytest.raises(DataError, match=expected):
        read_laleh_s1(make(tmp_path))


# ------------------------------------------------------------------------------------------------
# SDTM values that were silently read as missing; outputs that would overwrite an input
# ------------------------------------------------------------------------------------------------


def _sdtm_tables():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_tumourdata import _dm, _ex, _tr, _tu

    return _tu(), _tr(), _dm(), _ex()


def test_sdtm_text_in_trstresn_is_an_error_not_a_missing_value():
    tu, tr, dm, ex = _sdtm_tables()
    tr["TRSTRESN"] = tr["TRSTRESN"].astype(object)
    tr.loc[6, ["TRSTRESN", "TRSTRESC"]] = ["abc", ""]   # S1 T01 at visit 2; TRSTRESC empty
    with pytest.raises(DataError, match=r"row 7 \(ID S1\) column TRSTRESN: non-numeric "
                                        r"diameter; got 'abc'"):
        read_sdtm({"TU": tu, "TR": tr, "DM": dm, "EX": ex})
    tr.loc[6, "TRSTRESC"] = "20"                        # the number is in TRSTRESC: used
    les = read_sdtm({"TU": tu, "TR": tr, "DM": dm, "EX": ex}).lesions
    assert les.loc[les["row"] == 7, "diameter_mm"].tolist() == [20.0]


def test_sdtm_unknown_evaluator_is_an_error(tmp_path, capsys, sdtm_folders):
    tu, tr, dm, ex = _sdtm_tables()
    with pytest.raises(DataError, match=r"TR \(tr\) has no records of evaluator 'NOBODY' "
                                        r"\(TREVAL found: INDEPENDENT ASSESSOR, INVESTIGATOR\)"):
        read_sdtm({"TU": tu, "TR": tr, "DM": dm, "EX": ex}, evaluator="NOBODY")
    rc, _, err = _recist([sdtm_folders["csv"], "--out", tmp_path / "r.csv", "--evaluator",
                          "NOBODY"], capsys)
    assert rc == 2 and "--evaluator" in _one_error_line(err)
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--out", "les.csv"], "--out les.csv is an input file"),
        (["--out", "r.csv", "--visits", "les.csv"], "--visits les.csv is an input file"),
        (["--out", "r.csv", "--rows", "s.csv", "--subjects", "s.csv"],
         "--rows s.csv is an input file"),
        (["--out", "r.csv", "--errors", "r.csv"], "--errors r.csv is also --out"),
        (["--out", "r.csv", "--visits", "./r.csv"], "--visits ./r.csv is also --out"),
    ],
    ids=["out", "visits", "rows is subjects", "errors is out", "visits is out"],
)
def test_outputs_never_overwrite_inputs(tmp_path, capsys, monkeypatch, flags, expected):
    monkeypatch.chdir(tmp_path)
    les = _write(tmp_path / "les.csv", GOOD)
    subj = _write(tmp_path / "s.csv", "subject,death_day\nP01,200\n")
    rc, _, err = _recist(["les.csv", *flags], capsys)
    line = _one_error_line(err)
    assert rc == 2 and expected in line
    assert les.read_text() == GOOD and subj.read_text() == "subject,death_day\nP01,200\n"
    assert not (tmp_path / "r.csv").exists()


def test_output_inside_the_sdtm_folder_is_refused(tmp_path, capsys, sdtm_folders):
    folder = tmp_path / "sdtm"
    shutil.copytree(sdtm_folders["csv"], folder)
    before = (folder / "tr.csv").read_bytes()
    rc, _, err = _recist([folder, "--out", folder / "tr.csv"], capsys)
    assert rc == 2 and "is an input file" in _one_error_line(err)
    assert (folder / "tr.csv").read_bytes() == before
