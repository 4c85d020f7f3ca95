"""Tumour data layer: lesion table, SDTM/ADaM/Laleh readers, SLD series, NONMEM tumour files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkpd.clinical import (
    LALEH_COLUMNS,
    LESION_COLUMNS,
    SLD_COLUMNS,
    DataReport,
    laleh_s1_default_path,
    read_adam,
    read_laleh_s1,
    read_lesions,
    read_nonmem_tumour,
    read_sdtm,
    sld_series,
    validate_lesions,
    write_nonmem_tumour,
)
from pkpd.errors import DataError

LALEH_DIR = laleh_s1_default_path().parent.parent
LALEH_LONG = LALEH_DIR / "laleh2022_s1_long.csv"
needs_laleh = pytest.mark.skipif(
    not laleh_s1_default_path().exists(), reason="shared Laleh S1 data not available"
)
CANON = [c for c in LESION_COLUMNS if c not in ("row", "source")]


# ------------------------------------------------------------------------------------------------
# Laleh et al. 2022 S1 acceptance
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def laleh():
    return read_laleh_s1()


@needs_laleh
def test_laleh_counts_and_every_row_accounted(laleh):
    sld, report = laleh
    assert list(sld.columns) == list(LALEH_COLUMNS)
    frame = report.to_frame()
    assert len(frame) == report.n_rows == 8560
    assert not frame.duplicated(["source", "row"]).any()
    per_sheet = frame.groupby("source")["row"].agg(["min", "max", "count"])
    assert (per_sheet["min"] == 1).all() and (per_sheet["max"] == per_sheet["count"]).all()
    assert set(frame["status"]) == {"used", "dropped"}
    assert (frame.loc[frame["status"] == "dropped", "reason"] != "").all()
    # every used row is in the table, every dropped row is not
    assert len(sld) == report.n_used
    assert frame.loc[frame["status"] == "used", "subject"].nunique() == 1472
    assert sld["subject"].nunique() == 1472
    assert sld.groupby(["study", "arm", "patient_id"]).ngroups == 1472
    assert sld["patient_id"].nunique() == 1463  # 9 ids occur in two arms
    assert sld["sld_mm"].dtype == float and sld["day"].dtype == float
    assert all(isinstance(p, str) for p in sld["patient_id"])
    text = report.summary()
    assert "8560 input rows" in text and "1472 subjects" in text


@needs_laleh
def test_laleh_flags_follow_documented_rules(laleh):
    sld, report = laleh
    frame = report.to_frame()
    by_rule = frame.groupby(["status", "rule"]).size().to_dict()
    assert by_rule[("used", "not_evaluable")] == 62
    assert by_rule[("used", "too_small")] == 54
    assert by_rule[("dropped", "missing_value")] == 7
    assert by_rule[("dropped", "missing_day")] == 1
    ne = sld[sld["flag"] == "NOT_EVALUABLE"]
    assert len(ne) == 62 and ne["sld_mm"].isna().all()
    ts = sld[sld["flag"] == "TOO_SMALL_TO_MEASURE"]
    assert len(ts) == 54 and (ts["sld_mm"] == 5.0).all()
    assert sld.loc[sld["flag"] == "", "sld_mm"].notna().all()
    for rule in ("not_evaluable", "too_small", "missing_value", "missing_day"):
        assert rule in report.rules and report.rules[rule] in report.summary()
    # the alternative 2 mm of the published Stan fit
    sld2, _ = read_laleh_s1(too_small_mm=2.0)
    assert (sld2.loc[sld2["flag"] == "TOO_SMALL_TO_MEASURE", "sld_mm"] == 2.0).all()


@needs_laleh
def test_laleh_matches_long_csv_row_by_row(laleh):
    """The long CSV stacks the five sheets in order: align it with the report row by row."""
    sld, report = laleh
    long = pd.read_csv(LALEH_LONG, dtype={"patient_id": str, "value_raw": str})
    assert long["patient_id"].nunique() == 1463
    assert long.groupby(["study_arm", "patient_id"]).ngroups == 1472
    frame = report.to_frame()
    assert len(frame) == len(long)
    assert (frame["subject"] == long["study_arm"] + ":" + long["patient_id"]).all()
    flag = long["flag"].fillna("")
    dropped = frame["status"] == "dropped"
    assert (frame.loc[flag == "MISSING_VALUE", "status"] == "dropped").all()
    assert (frame.loc[flag == "MISSING_DAY", "status"] == "dropped").all()
    # exact repeats are the only other rows dropped
    assert set(frame.loc[dropped & (flag == ""), "rule"]) <= {"duplicate"}
    src = "journal.pcbi.1009822.s006.xlsx:" + sld["sheet"]
    merged = frame.assign(value_mm=long["value_mm"], day_csv=long["treatment_day"]).merge(
        sld.assign(source=src)[["source", "row", "day", "sld_mm"]], on=["source", "row"]
    )
    assert len(merged) == len(sld)
    assert (merged["day"] == merged["day_csv"]).all()
    num = merged["value_mm"].notna() & merged["sld_mm"].notna()
    same = merged.loc[num, "value_mm"].to_numpy() == merged.loc[num, "sld_mm"].to_numpy()
    ts = merged["rule"] == "too_small"
    assert same.all() and not ts[num].any()


@needs_laleh
def test_laleh_to_nonmem_censors_too_small(tmp_path, laleh):
    sld, _ = laleh
    path = tmp_path / "laleh.csv"
    with pytest.warns(UserWarning, match="duplicate records"):  # the DUPLICATE_DAY pair
        write_nonmem_tumour(sld, path)
    back, dosing, report = read_nonmem_tumour(path)
    assert len(dosing) == 0
    assert len(back) == sld["sld_mm"].notna().sum()  # NE rows are not observations
    assert back["subject"].nunique() == 1472
    cens = back[back["cens"] == 1]
    assert len(cens) == 54
    assert (cens["sld_mm"] == 5.0).all() and (cens["limit_mm"] == 0.0).all()
    assert report.n_rows == len(back) and report.n_dropped == 0


# ------------------------------------------------------------------------------------------------
# lesion-level files and validation
# ------------------------------------------------------------------------------------------------


def _lesion_rows():
    return pd.DataFrame(
        {
            "subject": ["001", "001", "001", "001", "001", "001"],
            "day": ["-3", "-3", "-3", "42", "42", "42"],
            "lesion_id": ["T1", "T2", "NT1", "T1", "T2", "NT1"],
            "lesion_type": ["TARGET", "target", "NON-TARGET", "target", "target", "nontarget"],
            "organ": ["LIVER", "LYMPH NODE", "LUNG", "LIVER", "LYMPH NODE", "LUNG"],
            "is_node": ["N", "Y", "0", "false", "TRUE", "no"],
            "diameter_mm": ["30", "16", "", "", "9", ""],
            "state": ["present", "", "PRESENT", "TOO SMALL TO MEASURE", "", "absent"],
        }
    )


def test_read_lesions_csv_and_xlsx(tmp_path):
    df = _lesion_rows()
    csv = tmp_path / "les.csv"
    df.to_csv(csv, index=False)
    lesions, report = read_lesions(csv)
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert lesions["subject"].tolist()[0] == "001"  # ids stay text
    assert lesions["is_node"].tolist() == [False, True, False, False, True, False]
    assert lesions["lesion_type"].tolist()[2] == "nontarget"
    assert lesions["state"].tolist()[3] == "too_small"
    assert lesions["row"].tolist() == [1, 2, 3, 4, 5, 6]
    assert lesions.attrs["units"] == {"diameter_mm": "mm", "day": "day"}
    assert report.n_used == 6 and report.n_dropped == 0
    sld = sld_series(lesions)
    assert list(sld.columns) == list(SLD_COLUMNS)
    assert sld["sld_mm"].tolist() == [46.0, 14.0]  # 30 + 16; 5 (too small) + 9 (node)
    assert sld["n_too_small"].tolist() == [0, 1]
    assert sld["complete"].all()

    xlsx = tmp_path / "les.xlsx"
    upper = df.rename(columns=str.upper)  # headers are case-insensitive
    upper.to_excel(xlsx, index=False)
    lesions_x, _ = read_lesions(xlsx)
    pd.testing.assert_frame_equal(lesions_x[CANON], lesions[CANON])


def test_read_lesions_dates_and_blank_rows(tmp_path):
    text = (
        "Subject,Date,First_Dose_Date,Lesion_ID,Lesion_Type,Organ,Is_Node,Diameter_mm,State\n"
        "A,2021-03-01,2021-03-05,T1,target,LIVER,N,20,\n"
        ",,,,,,,,\n"
        "A,2021-04-16,2021-03-05,T1,target,LIVER,N,15,\n"
    )
    path = tmp_path / "dated.csv"
    path.write_text(text)
    lesions, report = read_lesions(path)
    assert lesions["day"].tolist() == [-4.0, 42.0]
    assert lesions["row"].tolist() == [1, 3]
    assert lesions.attrs["reference_dates"] == {"A": "2021-03-05"}
    dropped = report.dropped()
    assert dropped["row"].tolist() == [2] and dropped["reason"].tolist() == ["blank row"]


def test_missing_columns_error_lists_them_and_the_header(tmp_path):
    path = tmp_path / "bad.csv"
    _lesion_rows().drop(columns=["organ", "state"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing the column\(s\) organ, state") as e:
        read_lesions(path)
    assert "subject, day, lesion_id, lesion_type, organ, is_node, diameter_mm, state" in str(
        e.value
    )


def test_non_numeric_diameter_error(tmp_path):
    df = _lesion_rows()
    df.loc[4, "diameter_mm"] = "9mm"
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError) as e:
        read_lesions(path)
    msg = str(e.value)
    assert "row 5 (ID 001) column diameter_mm: non-numeric diameter; got '9mm'" in msg
    assert "Fix:" in msg and e.value.row == 5 and e.value.subject == "001"


def test_duplicate_lesion_and_visit_error():
    df = _lesion_rows()
    df.loc[5] = ["001", 42, "T1", "target", "LIVER", "N", "12", ""]
    with pytest.raises(DataError, match=r"lesion T1 is recorded more than once on day 42") as e:
        validate_lesions(df)
    assert e.value.row == 4 and "also row(s) 6" in str(e.value)
    # a second reader of the same scan is not a duplicate
    df["reader"] = ["R1"] * 5 + ["R2"]
    assert len(validate_lesions(df)) == 6


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("lesion_type", "measurable", "unknown lesion_type; got 'measurable'"),
        ("is_node", "maybe", "is_node must be true or false; got 'maybe'"),
        ("state", "shrinking", "unknown lesion state; got 'shrinking'"),
        ("diameter_mm", "-3", "diameter must be a finite number >= 0 mm; got -3"),
        ("day", "week 6", "non-numeric day; got 'week 6'"),
    ],
)
def test_bad_values_are_named(column, value, match):
    df = _lesion_rows()
    df.loc[2, column] = value
    with pytest.raises(DataError, match=match) as e:
        validate_lesions(df)
    assert e.value.row == 3 and e.value.column == column and "Fix:" in str(e.value)


def test_lesion_type_must_not_change():
    df = _lesion_rows()
    df.loc[3, "lesion_type"] = "new"
    with pytest.raises(DataError, match="lesion T1 changes lesion_type"):
        validate_lesions(df)


def test_unparseable_date_error(tmp_path):
    path = tmp_path / "dates.csv"
    path.write_text(
        "subject,date,first_dose_date,lesion_id,lesion_type,organ,is_node,diameter_mm,state\n"
        "A,2021-03-01,2021-03-05,T1,target,LIVER,N,20,\n"
        "A,16/04/2021,2021-03-05,T1,target,LIVER,N,15,\n"
    )
    with pytest.raises(DataError, match=r"row 2 \(ID A\) column date: unparseable date"):
        read_lesions(path)


def test_sld_series_rules():
    """Baseline over several pre-dose days, NE and missing lesions, absent non-node, nodes."""
    rows = [
        # subject, day, lesion, type, organ, node, diameter, state
        ("P", -10, "T1", "target", "LIVER", False, 40.0, ""),
        ("P", -2, "T2", "target", "NODE", True, 18.0, ""),
        ("P", -2, "N1", "nontarget", "BONE", False, np.nan, "present"),
        ("P", 42, "T1", "target", "LIVER", False, np.nan, "absent"),
        ("P", 42, "T2", "target", "NODE", True, 7.0, ""),
        ("P", 84, "T1", "target", "LIVER", False, np.nan, "not_evaluated"),
        ("P", 84, "T2", "target", "NODE", True, 8.0, ""),
        ("P", 126, "T2", "target", "NODE", True, np.nan, "absent"),  # 0 mm, as in RECIST
        ("P", 126, "NEW1", "new", "LIVER", False, np.nan, "unequivocal"),
        ("P", 168, "T1", "target", "LIVER", False, 3.0, "too_small"),  # number wins
        ("P", 168, "T2", "target", "NODE", True, np.nan, "too_small"),
        ("Q", 0, "N1", "nontarget", "BONE", False, np.nan, "present"),  # no target: left out
    ]
    cols = REQ = list(LESION_COLUMNS[:8])
    df = pd.DataFrame(rows, columns=REQ)
    assert cols == REQ
    s = sld_series(df)
    assert s["subject"].unique().tolist() == ["P"]
    assert s["day"].tolist() == [-2.0, 42.0, 84.0, 126.0, 168.0]
    np.testing.assert_array_equal(s["sld_mm"], [58.0, 7.0, np.nan, np.nan, 8.0])
    np.testing.assert_array_equal(s["sld_partial_mm"], [58.0, 7.0, 8.0, 0.0, 8.0])
    assert s["n_assessed"].tolist() == [2, 2, 1, 1, 2]
    assert s["complete"].tolist() == [True, True, False, False, True]
    assert s["n_too_small"].tolist() == [0, 0, 0, 0, 2]
    assert (s["n_target"] == 2).all()


def test_sld_series_several_readers_error():
    df = pd.DataFrame(
        [
            ("P", -1, "T1", "target", "LIVER", False, 10.0, "", "R1"),
            ("P", -1, "T1", "target", "LIVER", False, 11.0, "", "R2"),
        ],
        columns=list(LESION_COLUMNS[:9]),
    )
    with pytest.raises(DataError, match="several readers"):
        sld_series(df)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(list(range(11))))
def test_sld_series_ignores_row_order(order):
    rows = [
        ("P", -3, "T1", "target", "LIVER", False, 20.0, ""),
        ("P", -3, "T2", "target", "LUNG", False, 15.0, ""),
        ("P", -3, "N1", "nontarget", "BONE", False, np.nan, "present"),
        ("P", 40, "T1", "target", "LIVER", False, 12.0, ""),
        ("P", 40, "T2", "target", "LUNG", False, np.nan, "too_small"),
        ("P", 80, "T1", "target", "LIVER", False, np.nan, "absent"),
        ("P", 80, "T2", "target", "LUNG", False, 4.0, ""),
        ("Q", -1, "A", "target", "KIDNEY", False, 33.0, ""),
        ("Q", 50, "A", "target", "KIDNEY", False, 30.0, ""),
        ("Q", 100, "A", "target", "KIDNEY", False, np.nan, "not_evaluated"),
        ("Q", 100, "B", "new", "LIVER", False, np.nan, "equivocal"),
    ]
    df = pd.DataFrame(rows, columns=list(LESION_COLUMNS[:8]))
    ref = sld_series(df).sort_values(["subject", "day"]).reset_index(drop=True)
    got = sld_series(df.iloc[list(order)]).sort_values(["subject", "day"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref)


# ------------------------------------------------------------------------------------------------
# SDTM
# ------------------------------------------------------------------------------------------------


def _tu():
    r = [
        ("S1", "T01", "TARGET", "LIVER", "INVESTIGATOR"),
        ("S1", "T02", "TARGET", "LYMPH NODE", "INVESTIGATOR"),
        ("S1", "NT01", "NON-TARGET", "LUNG", "INVESTIGATOR"),
        ("S1", "NEW01", "NEW", "LIVER", "INVESTIGATOR"),
        ("S1", "T01", "TARGET", "LIVER", "INDEPENDENT ASSESSOR"),
        ("S2", "T01", "TARGET", "LUNG", "INVESTIGATOR"),
        ("S2", "T02", "TARGET", "LUNG", "INVESTIGATOR"),
        ("S3", "T01", "TARGET", "KIDNEY", "INVESTIGATOR"),
    ]
    df = pd.DataFrame(r, columns=["USUBJID", "TULNKID", "TUSTRESC", "TULOC", "TUEVAL"])
    df.insert(0, "DOMAIN", "TU")
    df["TUTESTCD"] = "TUMIDENT"
    df["TUORRES"] = df["TUSTRESC"]
    return df


def _tr():
    # USUBJID, TRLNKID, TRTESTCD, TRORRES, TRSTRESN, TRSTAT, TRDTC, VISITNUM, TREVAL
    inv = "INVESTIGATOR"
    r = [
        ("S1", "T01", "LDIAM", "30", 30.0, "", "2021-01-05", 1, inv),
        ("S1", "T02", "LPERP", "20", 20.0, "", "2021-01-05", 1, inv),
        ("S1", "T02", "LDIAM", "25", 25.0, "", "2021-01-05", 1, inv),  # long axis of a node
        ("S1", "NT01", "TUMSTATE", "PRESENT", np.nan, "", "2021-01-05", 1, inv),
        ("S1", "", "SUMDIAM", "50", 50.0, "", "2021-01-05", 1, inv),
        ("S1", "T01", "LDIAM", "31", 31.0, "", "2021-01-05", 1, "INDEPENDENT ASSESSOR"),
        ("S1", "T01", "LDIAM", "20", 20.0, "", "2021-02-21", 2, inv),
        ("S1", "T02", "LPERP", "12", 12.0, "", "2021-02-23", 2, inv),  # same visit, later scan
        ("S1", "NT01", "TUMSTATE", "PRESENT", np.nan, "", "2021-02-21", 2, inv),
        ("S1", "", "SUMDIAM", "33", 33.0, "", "2021-02-21", 2, inv),  # derived: 32
        ("S1", "T01", "LDIAM", "TOO SMALL TO MEASURE", 5.0, "", "2021-04-04", 3, inv),
        ("S1", "T02", "LPERP", "8", 8.0, "", "2021-04-04", 3, inv),
        ("S1", "NT01", "TUMSTATE", "ABSENT", np.nan, "", "2021-04-04", 3, inv),
        ("S1", "NEW01", "TUMSTATE", "UNEQUIVOCAL", np.nan, "", "2021-04-04", 3, inv),
        ("S1", "T01", "LDIAM", "", np.nan, "NOT DONE", "2021-05-16", 4, inv),
        ("S1", "T02", "LPERP", "9", 9.0, "", "2021-05-16", 4, inv),
        ("S2", "T01", "LDIAM", "40", 40.0, "", "2021-01-25", 1, inv),
        ("S2", "T02", "LDIAM", "15", 15.0, "", "2021-01-25", 1, inv),
        ("S2", "T01", "LDIAM", "0", 0.0, "", "2021-03-29", 2, inv),
        ("S2", "T02", "TUMSTATE", "ABSENT", np.nan, "", "2021-03-29", 2, inv),
        ("S3", "T01", "LDIAM", "22", 22.0, "", "2021-03-01", 1, inv),
        ("S3", "T01.1", "LDIAM", "10", 10.0, "", "2021-04-16", 2, inv),  # split lesion
        ("S3", "T01.2", "LDIAM", "8", 8.0, "", "2021-04-16", 2, inv),
        ("S3", "T01", "LDIAM", "12", 12.0, "", "2021-05", 3, inv),  # partial date
    ]
    df = pd.DataFrame(
        r,
        columns=[
            "USUBJID",
            "TRLNKID",
            "TRTESTCD",
            "TRORRES",
            "TRSTRESN",
            "TRSTAT",
            "TRDTC",
            "VISITNUM",
            "TREVAL",
        ],
    )
    df.insert(0, "DOMAIN", "TR")
    df["TRSTRESC"] = df["TRORRES"]
    df["VISITNUM"] = df["VISITNUM"].astype(float)
    df["TRDY"] = 999.0  # must not be used for time
    return df


def _rs():
    r = [
        ("S1", "OVRLRESP", "PR", "2021-02-21", "RECIST 1.1", "WEEK 6"),
        ("S1", "TRGRESP", "PR", "2021-02-21", "RECIST 1.1", "WEEK 6"),
        ("S1", "OVRLRESP", "PD", "2021-04-04", "RECIST 1.1", "WEEK 12"),
        ("S1", "OVRLRESP", "IUPD", "2021-04-04", "iRECIST", "WEEK 12"),
        ("S2", "OVRLRESP", "CR", "2021-03-29", "RECIST 1.1", "WEEK 8"),
    ]
    df = pd.DataFrame(r, columns=["USUBJID", "RSTESTCD", "RSSTRESC", "RSDTC", "RSCAT", "VISIT"])
    df.insert(0, "DOMAIN", "RS")
    df["RSEVAL"] = "INVESTIGATOR"
    return df


def _dm():
    return pd.DataFrame(
        {
            "DOMAIN": "DM",
            "USUBJID": ["S1", "S2", "S4"],
            "RFXSTDTC": ["2021-01-10", "", "2021-01-01"],
            "RFSTDTC": ["2021-01-08", "2021-02-01", "2021-01-01"],
        }
    )


def _ex():
    return pd.DataFrame(
        {
            "DOMAIN": "EX",
            "USUBJID": ["S1", "S1", "S3", "S3", "S2"],
            "EXTRT": "ATEZOLIZUMAB",
            "EXDOSE": [1200.0, 1200.0, 1200.0, 1200.0, np.nan],
            "EXDOSU": "mg",
            "EXSTDTC": ["2021-01-10", "2021-01-31", "2021-03-26", "2021-03-05", "2021-02-01"],
        }
    )


# the lesion-level equivalent, written by hand (days from the reference dates above)
EXPECTED_LESIONS = [
    ("S1", -5, "T01", "target", "LIVER", False, 30.0, ""),
    ("S1", -5, "T02", "target", "LYMPH NODE", True, 20.0, ""),
    ("S1", -5, "NT01", "nontarget", "LUNG", False, np.nan, "present"),
    ("S1", 42, "T01", "target", "LIVER", False, 20.0, ""),
    ("S1", 42, "T02", "target", "LYMPH NODE", True, 12.0, ""),
    ("S1", 42, "NT01", "nontarget", "LUNG", False, np.nan, "present"),
    ("S1", 84, "T01", "target", "LIVER", False, 5.0, "too_small"),
    ("S1", 84, "T02", "target", "LYMPH NODE", True, 8.0, ""),
    ("S1", 84, "NT01", "nontarget", "LUNG", False, np.nan, "absent"),
    ("S1", 84, "NEW01", "new", "LIVER", False, np.nan, "unequivocal"),
    ("S1", 126, "T01", "target", "LIVER", False, np.nan, "not_evaluated"),
    ("S1", 126, "T02", "target", "LYMPH NODE", True, 9.0, ""),
    ("S2", -7, "T01", "target", "LUNG", False, 40.0, ""),
    ("S2", -7, "T02", "target", "LUNG", False, 15.0, ""),
    ("S2", 56, "T01", "target", "LUNG", False, 0.0, ""),
    ("S2", 56, "T02", "target", "LUNG", False, np.nan, "absent"),
    ("S3", -4, "T01", "target", "KIDNEY", False, 22.0, ""),
    ("S3", 42, "T01", "target", "KIDNEY", False, 18.0, ""),
    ("S3", 57, "T01", "target", "KIDNEY", False, 12.0, ""),
]


def _write_sdtm(folder: Path, fmt: str) -> Path:
    import pyreadstat

    folder.mkdir()
    for name, df in {"tu": _tu(), "tr": _tr(), "rs": _rs(), "dm": _dm(), "ex": _ex()}.items():
        if fmt == "csv":
            df.to_csv(folder / f"{name}.csv", index=False)
        else:
            pyreadstat.write_xport(
                df, str(folder / f"{name}.xpt"), table_name=name.upper(), file_format_version=5
            )
    return folder


@pytest.fixture(scope="module")
def sdtm_pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("sdtm")
    return (
        read_sdtm(_write_sdtm(base / "csv", "csv")),
        read_sdtm(_write_sdtm(base / "xpt", "xpt")),
    )


def _sorted(df):
    return df[CANON].sort_values(["subject", "day", "lesion_id"]).reset_index(drop=True)


def test_sdtm_csv_and_xpt_give_the_same_tables(sdtm_pair):
    (les_c, resp_c, dose_c, rep_c), (les_x, resp_x, dose_x, rep_x) = sdtm_pair
    assert list(les_c.columns) == list(LESION_COLUMNS)
    pd.testing.assert_frame_equal(les_c.drop(columns="source"), les_x.drop(columns="source"))
    assert set(les_c["source"]) == {"tr.csv"} and set(les_x["source"]) == {"tr.xpt"}
    pd.testing.assert_frame_equal(resp_c.drop(columns="source"), resp_x.drop(columns="source"))
    pd.testing.assert_frame_equal(dose_c.drop(columns="source"), dose_x.drop(columns="source"))
    fc, fx = rep_c.to_frame(), rep_x.to_frame()
    assert (fc["status"] == fx["status"]).all() and (fc["reason"] == fx["reason"]).all()
    pd.testing.assert_frame_equal(sld_series(les_c), sld_series(les_x))


def test_sdtm_equals_the_lesion_level_csv(tmp_path, sdtm_pair):
    (lesions, responses, dosing, report), _ = sdtm_pair
    path = tmp_path / "lesions.csv"
    pd.DataFrame(EXPECTED_LESIONS, columns=list(LESION_COLUMNS[:8])).to_csv(path, index=False)
    from_csv, _ = read_lesions(path)
    pd.testing.assert_frame_equal(_sorted(lesions), _sorted(from_csv))
    s_sdtm, s_csv = sld_series(lesions), sld_series(from_csv)
    pd.testing.assert_frame_equal(s_sdtm, s_csv)
    np.testing.assert_array_equal(
        s_sdtm["sld_mm"], [50.0, 32.0, 13.0, np.nan, 55.0, 0.0, 22.0, 18.0, 12.0]
    )
    assert s_sdtm["sld_partial_mm"].tolist()[3] == 9.0
    assert s_sdtm["complete"].tolist() == [True] * 3 + [False] + [True] * 5
    assert lesions.attrs["reference_dates"] == {
        "S1": "2021-01-10",  # DM.RFXSTDTC
        "S2": "2021-02-01",  # DM.RFSTDTC (no RFXSTDTC)
        "S3": "2021-03-05",  # first EX.EXSTDTC (not in DM)
    }
    assert responses[["subject", "day", "response"]].values.tolist() == [
        ["S1", 42.0, "PR"],
        ["S1", 84.0, "PD"],
        ["S2", 56.0, "CR"],
    ]
    assert dosing[["subject", "day", "amt"]].values.tolist() == [
        ["S1", 0.0, 1200.0],
        ["S1", 21.0, 1200.0],
        ["S3", 21.0, 1200.0],
        ["S3", 0.0, 1200.0],
    ]


def test_sdtm_and_csv_give_the_same_recist_responses(tmp_path, sdtm_pair):
    """With the RECIST engine: same SLD and responses from SDTM and from the lesion CSV, and the
    RS overall responses of the sample are reproduced."""
    from pkpd.clinical import recist

    (lesions, responses, _, _), _ = sdtm_pair
    path = tmp_path / "lesions.csv"
    pd.DataFrame(EXPECTED_LESIONS, columns=list(LESION_COLUMNS[:8])).to_csv(path, index=False)
    from_csv, _ = read_lesions(path)
    a, b = recist.evaluate(lesions), recist.evaluate(from_csv)
    pd.testing.assert_frame_equal(a.visits, b.visits)
    pd.testing.assert_frame_equal(a.subjects, b.subjects)
    ours = sld_series(lesions)
    merged = a.visits.merge(ours, on=["subject", "day"], suffixes=("", "_ours"))
    assert len(merged) == len(ours)
    np.testing.assert_array_equal(merged["sld_mm"], merged["sld_mm_ours"])
    np.testing.assert_array_equal(merged["sld_partial_mm"], merged["sld_partial_mm_ours"])
    got = responses.merge(a.visits, on=["subject", "day"])
    assert got["response"].tolist() == got["overall_response"].tolist() == ["PR", "PD", "CR"]


def test_sdtm_report_accounts_for_every_row(sdtm_pair):
    (_, _, _, report), _ = sdtm_pair
    f = report.to_frame()
    sizes = {
        "tu.csv": len(_tu()),
        "tr.csv": len(_tr()),
        "rs.csv": len(_rs()),
        "dm.csv": len(_dm()),
        "ex.csv": len(_ex()),
    }
    assert f.groupby("source").size().to_dict() == sizes
    assert not f.duplicated(["source", "row"]).any()
    rule = dict(zip(zip(f["source"], f["row"]), f["rule"]))
    assert rule[("tu.csv", 5)] == "other_evaluator"
    assert rule[("tr.csv", 3)] == "other_axis"  # LDIAM of a node
    assert rule[("tr.csv", 6)] == "other_evaluator"
    assert rule[("tr.csv", 5)] == "sumdiam_ok"
    assert rule[("tr.csv", 10)] == "sumdiam_mismatch"
    assert rule[("rs.csv", 2)] == "rs_other_test"
    assert rule[("rs.csv", 4)] == "other_criteria"
    assert rule[("dm.csv", 3)] == "no_tumour_data"
    assert rule[("ex.csv", 5)] == "ex_incomplete"
    reason = dict(zip(zip(f["source"], f["row"]), f["reason"]))
    assert "imputed to the 1st" in reason[("tr.csv", 24)]
    assert "fragment of split lesion T01" in reason[("tr.csv", 22)]
    assert "earliest TRDTC 2021-02-21" in reason[("tr.csv", 8)]
    assert "SUMDIAM 33 mm differs from the derived SLD 32 mm" in report.summary()
    assert (f.loc[f["status"] == "dropped", "reason"] != "").all()


def test_sdtm_evaluator_and_record_dates(tmp_path):
    folder = _write_sdtm(tmp_path / "s", "csv")
    les, _, _, report = read_sdtm(folder, evaluator="INDEPENDENT ASSESSOR")
    assert les[["subject", "lesion_id", "day", "diameter_mm"]].values.tolist() == [
        ["S1", "T01", -5.0, 31.0]
    ]
    les_r, *_ = read_sdtm(sorted(folder.iterdir()), assessment_date="record")
    t02 = les_r[(les_r["subject"] == "S1") & (les_r["lesion_id"] == "T02")]
    assert t02["day"].tolist() == [-5.0, 44.0, 84.0, 126.0]


def test_sdtm_bad_input(tmp_path):
    tr = _tr()
    tr.loc[0, "TRDTC"] = "05/01/2021"
    with pytest.raises(DataError, match=r"row 1 \(ID S1\) column TRDTC: unparseable date"):
        read_sdtm({"TU": _tu(), "TR": tr, "DM": _dm(), "EX": _ex()})
    tr = _tr()
    tr.loc[1, "TRLNKID"] = "T09"
    with pytest.raises(DataError, match="links to lesion 'T09', which TU does not identify"):
        read_sdtm({"TU": _tu(), "TR": tr, "DM": _dm(), "EX": _ex()})
    with pytest.raises(DataError, match="lacks the TR domain"):
        read_sdtm({"TU": _tu()})
    with pytest.raises(DataError, match="no reference .first-dose. date"):
        read_sdtm({"TU": _tu(), "TR": _tr()})
    tr = _tr()
    tr.loc[7, "VISITNUM"] = 1.0  # S1 T02 measured twice at one visit
    tr.loc[7, "TRDTC"] = "2021-01-05"
    with pytest.raises(DataError, match="lesion T02 is measured twice on day -5"):
        read_sdtm({"TU": _tu(), "TR": tr, "DM": _dm(), "EX": _ex()})
    tr = _tr().drop(columns=["TRDTC"])
    with pytest.raises(DataError, match=r"missing the variable\(s\) TRDTC"):
        read_sdtm({"TU": _tu(), "TR": tr, "DM": _dm()})


# ------------------------------------------------------------------------------------------------
# ADaM
# ------------------------------------------------------------------------------------------------


def _adam():
    adtr = pd.DataFrame(
        {
            "USUBJID": ["S1"] * 5 + ["S2"] * 2,
            "PARAMCD": ["SDIAM", "SDIAM", "SDIAM", "LDIAM1", "SDIAM", "SUMDIAM", "SUMDIAM"],
            "PARCAT2": ["Investigator"] * 4 + ["IRF"] + ["Investigator"] * 2,
            "AVAL": [50, 32, 14, 30, 49, 55, 0],
            "BASE": [50, 50, 50, 30, 49, 55, 55],
            "PCHG": [0, -36, -72, 0, 0, 0, -100],
            "NADIR": ["", 50, 32, "", "", "", 55],
            "ANL01FL": ["Y", "Y", "", "Y", "Y", "Y", "Y"],
            "ADT": [
                "2021-01-05",
                "2021-02-21",
                "2021-05-16",
                "2021-01-05",
                "2021-01-05",
                "25JAN2021",
                "2021-03-29",
            ],
            "ADY": [-4, 43, 127, -4, -4, -6, 57],
            "TRTSDT": ["2021-01-10"] * 5 + [""] * 2,
            "AVISIT": [
                "BASELINE",
                "WEEK 6",
                "WEEK 18",
                "BASELINE",
                "BASELINE",
                "BASELINE",
                "WEEK 8",
            ],
        }
    )
    adrs = pd.DataFrame(
        {
            "USUBJID": ["S1", "S1", "S1", "S1", "S2", "S1"],
            "PARAMCD": ["OVR", "OVR", "BOR", "CBOR", "BOR", "RSP"],
            "PARCAT2": ["Investigator"] * 6,
            "PARCAT3": ["RECIST 1.1"] * 6,
            "AVALC": ["PR", "PD", "PR", "SD", "CR", "Y"],
            "ADT": ["2021-02-21", "2021-04-04", "2021-02-21", "2021-02-21", "2021-03-29", ""],
            "ANL01FL": ["Y", "Y", "Y", "Y", "Y", "Y"],
            "TRTSDT": ["2021-01-10"] * 4 + [""] + ["2021-01-10"],
        }
    )
    adtte = pd.DataFrame(
        {
            "USUBJID": ["S1", "S1", "S2"],
            "PARAMCD": ["PFS", "OS", "PFS"],
            "AVAL": [85, 300, 120],
            "CNSR": [0, 1, 1],
            "EVNTDESC": ["PD", "", ""],
            "CNSDTDSC": ["", "ALIVE", "LAST ADEQUATE ASSESSMENT"],
            "ADT": ["2021-04-04", "2021-11-05", "2021-05-31"],
            "TRTSDT": ["2021-01-10", "2021-01-10", ""],
        }
    )
    adsl = pd.DataFrame({"USUBJID": ["S1", "S2"], "TRTSDT": ["2021-01-10", "2021-02-01"]})
    return adtr, adrs, adtte, adsl


def test_read_adam(tmp_path):
    adtr, adrs, adtte, adsl = _adam()
    paths = {}
    for name, df in {"adtr": adtr, "adrs": adrs, "adtte": adtte, "adsl": adsl}.items():
        paths[name] = tmp_path / f"{name}.csv"
        df.to_csv(paths[name], index=False)
    sld, resp, pfs, report = read_adam(**paths)
    assert sld[["subject", "day", "sld_mm", "complete"]].values.tolist() == [
        ["S1", -5.0, 50.0, True],
        ["S1", 42.0, 32.0, True],
        ["S2", -7.0, 55.0, True],
        ["S2", 56.0, 0.0, True],
    ]  # days from ADT - TRTSDT, not ADY
    assert sld["paramcd"].tolist() == ["SDIAM", "SDIAM", "SUMDIAM", "SUMDIAM"]
    assert resp[["subject", "paramcd", "day", "response"]].values.tolist() == [
        ["S1", "OVR", 42.0, "PR"],
        ["S1", "OVR", 84.0, "PD"],
        ["S1", "BOR", 42.0, "PR"],
        ["S1", "CBOR", 42.0, "SD"],
        ["S2", "BOR", 56.0, "CR"],
    ]
    assert pfs[["subject", "aval_days", "cnsr", "event"]].values.tolist() == [
        ["S1", 85.0, 0, 1],
        ["S2", 120.0, 1, 0],
    ]
    f = report.to_frame()
    rules = f.groupby("rule").size().to_dict()
    assert rules["incomplete"] == 1 and rules["other_evaluator"] == 1
    assert rules["other_param"] == 3  # LDIAM1, RSP, OS
    assert len(f) == len(adtr) + len(adrs) + len(adtte) + len(adsl)
    sld_all, *_ = read_adam(adtr=adtr, adsl=adsl, keep_incomplete=True)
    assert sld_all["complete"].tolist() == [True, True, False, True, True]

    # XPT with SAS date numbers
    import pyreadstat

    x = adtr.assign(
        ADT=pd.to_datetime(adtr["ADT"], format="mixed").dt.date,
        TRTSDT=["2021-01-10"] * 5 + ["2021-02-01"] * 2,
    )
    x["TRTSDT"] = pd.to_datetime(x["TRTSDT"]).dt.date
    for c in ("NADIR",):
        x[c] = pd.to_numeric(x[c])
    pyreadstat.write_xport(
        x,
        str(tmp_path / "adtr.xpt"),
        table_name="ADTR",
        variable_format={"ADT": "DATE9", "TRTSDT": "DATE9"},
    )
    sld_x, *_ = read_adam(adtr=tmp_path / "adtr.xpt")
    assert sld_x["day"].tolist() == sld["day"].tolist()


def test_read_adam_needs_first_dose_date():
    adtr, *_ = _adam()
    with pytest.raises(DataError, match=r"row 6 \(ID S2\) column TRTSDT: no first-dose date"):
        read_adam(adtr=adtr)
    with pytest.raises(DataError, match="two SLD records on day -5"):
        read_adam(adtr=adtr.assign(PARCAT2="Investigator"), adsl=_adam()[3])


# ------------------------------------------------------------------------------------------------
# NONMEM tumour files and the report
# ------------------------------------------------------------------------------------------------


def test_nonmem_round_trip_with_cens(tmp_path, sdtm_pair):
    (lesions, _, dosing, _), _ = sdtm_pair
    sld = sld_series(lesions)
    path = tmp_path / "tumour.csv"
    write_nonmem_tumour(sld, path, dosing=dosing)
    text = path.read_text().splitlines()
    assert text[0] == "ID,TIME,EVID,AMT,CMT,RATE,II,ADDL,SS,DV,MDV,CENS,LIMIT,SUBJECT"
    back, dose_back, report = read_nonmem_tumour(path)
    kept = sld[sld["complete"] & sld["sld_mm"].notna()].reset_index(drop=True)
    got = back.sort_values(["subject", "day"], kind="stable").reset_index(drop=True)
    assert got["subject"].tolist() == kept["subject"].tolist()
    assert got["day"].tolist() == kept["day"].tolist()
    assert got["sld_mm"].tolist() == kept["sld_mm"].tolist()
    # S1 day 84: one lesion too small (5 mm) -> interval (8, 13)
    ts = got[got["cens"] == 1]
    assert ts[["subject", "day", "sld_mm", "limit_mm"]].values.tolist() == [["S1", 84.0, 13.0, 8.0]]
    assert (got.loc[got["cens"] == 0, "limit_mm"].isna()).all()
    assert dose_back[["subject", "day", "amt"]].values.tolist() == [
        ["S1", 0.0, 1200.0],
        ["S1", 21.0, 1200.0],
        ["S3", 0.0, 1200.0],
        ["S3", 21.0, 1200.0],
    ]
    assert report.n_rows == len(back) + len(dose_back)
    # baseline scans come before the first dose in the file
    raw = pd.read_csv(path)
    s1 = raw[raw["SUBJECT"] == "S1"]
    assert s1["EVID"].tolist()[:2] == [0, 1]

    # a limit below which SLDs are censored (M4: LIMIT=0), and incomplete rows kept as MDV=1
    path2 = tmp_path / "tumour_lloq.csv"
    write_nonmem_tumour(sld, path2, lloq_mm=10.0, incomplete="mdv")
    back2, _, _ = read_nonmem_tumour(path2)
    low = back2[back2["cens"] == 1].sort_values(["subject", "day"])
    assert low[["subject", "day", "sld_mm", "limit_mm"]].values.tolist() == [
        ["S1", 84.0, 13.0, 8.0],
        ["S1", 126.0, 10.0, 0.0],
        ["S2", 56.0, 10.0, 0.0],
    ]
    assert back2.loc[back2["day"] == 126.0, "mdv"].tolist() == [1]


def test_nonmem_writer_keeps_text_subject_ids(tmp_path):
    sld = pd.DataFrame(
        {"subject": ["007", "007", "010"], "day": [-1.0, 40.0, 0.0], "sld_mm": [20.0, 18.0, 33.0]}
    )
    path = tmp_path / "t.csv"
    write_nonmem_tumour(sld, path)
    back, _, _ = read_nonmem_tumour(path)
    assert back["subject"].tolist() == ["007", "007", "010"]
    assert pd.read_csv(path)["ID"].tolist() == [1, 1, 2]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic write


def test_data_report_api():
    r = DataReport("demo", {"blank": "blank rows are dropped"})
    r.add("b.csv", [2, 1], ["X", "X"], "used")
    r.add("a.csv", 1, "Y", "dropped", rule="blank", reason="blank row")
    f = r.to_frame()
    assert list(f.columns) == ["source", "row", "subject", "status", "rule", "reason"]
    assert f[["source", "row"]].values.tolist() == [["b.csv", 1], ["b.csv", 2], ["a.csv", 1]]
    assert (r.n_rows, r.n_used, r.n_dropped) == (3, 2, 1)
    assert "blank rows are dropped" in r.summary()
    assert r.dropped()["subject"].tolist() == ["Y"]
    with pytest.raises(ValueError):
        r.add("a.csv", 2, "Y", "maybe")
    assert not math.isnan(r.counts()["n"].sum())


def test_cli_recist_sdtm_folder_equals_lesion_csv(tmp_path):
    """`pkpd recist` on an SDTM folder (XPT) and on the equivalent lesion-level CSV."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    folder = _write_sdtm(tmp_path / "sdtm", "xpt")
    csv = tmp_path / "lesions.csv"
    pd.DataFrame(EXPECTED_LESIONS, columns=list(LESION_COLUMNS[:8])).to_csv(csv, index=False)
    env = dict(os.environ, PYTHONPATH=str(root))
    outs = []
    for src, name in ((folder, "a"), (csv, "b")):
        out = tmp_path / f"{name}.csv"
        p = subprocess.run([sys.executable, "-m", "pkpd.cli", "recist", str(src), "--out",
                            str(out), "--visits", str(tmp_path / f"{name}_v.csv")], cwd=root,
                           env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        outs.append((pd.read_csv(out), pd.read_csv(tmp_path / f"{name}_v.csv")))
    pd.testing.assert_frame_equal(outs[0][0], outs[1][0])
    pd.testing.assert_frame_equal(outs[0][1], outs[1][1])
    assert list(outs[0][0].columns[:7]) == ["subject", "bor", "bor_confirmed", "pfs_days",
                                            "pfs_event", "best_pct_change", "nadir_mm"]
