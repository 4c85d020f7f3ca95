"""Trial scenarios (pkpd.trial.design): the shipped files, the scan-schedule grammar, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.errors import SpecError
from pkpd.trial.design import (
    MAX_PATIENTS_PER_ARM,
    list_scenarios,
    load_scenario,
    parse_scan_schedule,
)

#: the scenario names issue 15 asks for
NAMES = ["anlotinib_ep", "durvalumab_ep", "durvalumab_ep_anlotinib_maintenance", "ep", "triplet",
         "triplet_anlotinib_10mg", "triplet_anlotinib_continuous",
         "triplet_durvalumab_q3w_maintenance"]


def test_the_shipped_scenarios_are_the_named_ones():
    assert list_scenarios() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shipped_scenario_loads_and_its_regimens_parse(name):
    s = load_scenario(name)
    assert s.name == name and s.model == "sclc_triplet_tgi" and s.n > 0
    assert np.all(np.diff(s.scans.all_days()) > 0)
    doses = s.protocol().doses({"BSA": 1.8, "GFR": 100.0}, days=s.days)
    assert set(doses) == set(s.regimens)
    assert all(d.amount_mg.size > 0 for d in doses.values())


def test_scenarios_answer_the_trial_questions():
    """Each variant differs from the triplet in exactly the regimen its question is about."""
    base = load_scenario("triplet").regimens
    for name, drug in [("triplet_anlotinib_10mg", "anlotinib"),
                       ("triplet_anlotinib_continuous", "anlotinib"),
                       ("durvalumab_ep_anlotinib_maintenance", "anlotinib"),
                       ("triplet_durvalumab_q3w_maintenance", "durvalumab")]:
        other = load_scenario(name).regimens
        assert {d for d in base if base[d] != other[d]} == {drug}, name
    maint = load_scenario("durvalumab_ep_anlotinib_maintenance").protocol()
    first = maint.doses({"BSA": 1.8, "GFR": 100.0}, days=200)["anlotinib"].time_day.min()
    assert first == pytest.approx(84.0)  # cycle 5 starts on day 85 = 84 days after day 1
    ep = load_scenario("ep").protocol().doses({"BSA": 1.8, "GFR": 100.0}, days=730)
    assert ep["carboplatin"].amount_mg.size == 6  # EP up to 6 cycles
    assert "anlotinib" not in load_scenario("durvalumab_ep").regimens


def test_scan_schedule_grammar_against_hand_counted_days():
    s = parse_scan_schedule("Q6W to W24, then Q9W", horizon_days=365)
    assert s.days == (42, 84, 126, 168, 231, 294, 357)
    assert parse_scan_schedule("every 8 weeks", 120).days == (56, 112)
    assert parse_scan_schedule("Q2M", 130).days == pytest.approx((60.875, 121.75))
    assert parse_scan_schedule("Q6W to W48; Q8W", 400).days[8:] == (392.0,)


@pytest.mark.parametrize("text,match", [
    ("Q6W, then Q9W", "has no end but is not the last"),
    ("every fortnight", "cannot read 'every fortnight'"),
    ("Q6W to W0", "must step forward"),
    ("", "empty schedule"),
])
def test_bad_scan_schedules(text, match):
    with pytest.raises(SpecError, match=match):
        parse_scan_schedule(text, horizon_days=365)


def _write(tmp_path, body: str, name="arm.toml"):
    p = tmp_path / name
    p.write_text(body)
    return p


GOOD = """
[scenario]
model = "sclc_triplet_tgi"
n = 10
days = 365
[regimens]
durvalumab = "1500 mg IV 60 min Q4W"
[scans]
schedule = "Q6W"
"""


def test_a_user_file_loads(tmp_path):
    s = load_scenario(_write(tmp_path, GOOD))
    assert (s.name, s.n, s.days, s.population, s.cutoff) == ("arm", 10, 365.0, "es_sclc", 365.0)
    assert s.scans.days[:2] == (42.0, 84.0)


@pytest.mark.parametrize("edit,match", [
    (("n = 10", "n = 0"), r"n = 0 must be a whole number of patients from 1"),
    (("n = 10", "n = -5"), r"n = -5 must be"),
    (("n = 10", "n = 2.5"), r"n = 2.5 must be"),
    (("n = 10", f"n = {MAX_PATIENTS_PER_ARM + 1}"), "must be a whole number"),
    (('durvalumab = "1500 mg IV 60 min Q4W"', ""), "the arm has no regimen"),
    (('schedule = "Q6W"', "days = [42, 84, 84, 126]"),
     r"scan days must increase; scan 3 \(day 84\) is not after scan 2"),
    (('schedule = "Q6W"', "days = [84, 42]"), "scan days must increase"),
    (("days = 365", "dayz = 365"), r"unknown key \[scenario\] 'dayz' \(did you mean 'days'\?\)"),
    (("[scans]", "[scan]"), r"unknown table \[scan\] \(did you mean \[scans\]\?\)"),
    (('"1500 mg IV 60 min Q4W"', '"anlotinib: 12 mg PO QD"'), "names drug 'anlotinib'"),
    (('"1500 mg IV 60 min Q4W"', '"1500 kg IV Q4W"'), r"\[regimens\] durvalumab"),
    (('model = "sclc_triplet_tgi"', ""), r"\[scenario\] needs model"),
    (('schedule = "Q6W"', 'schedule = "Q6W"\ndays = [42]'), "exactly one of schedule or days"),
    (('schedule = "Q6W"', 'schedule = "Q6W"\nwindow_days = 21'),
     r"window_days = 21 lets neighbouring scans swap \(the closest planned scans are 42 days"),
    (('schedule = "Q6W"', 'schedule = "Q6W"\nwindow_days = -1'), r"window_days = -1 must be"),
    (('schedule = "Q6W"', 'schedule = "Q6W"\nwindow_days = 2.5'), r"window_days = 2.5 must be"),
])
def test_bad_scenarios_name_the_key_the_value_and_the_fix(tmp_path, edit, match):
    p = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(SpecError, match=match) as e:
        load_scenario(p)
    assert "Fix" in str(e.value) or "must" in str(e.value)


def test_visit_window_shifts_each_scan_within_the_window_and_keeps_the_order(tmp_path):
    s = load_scenario(_write(tmp_path, GOOD.replace('schedule = "Q6W"',
                                                    'schedule = "Q6W"\nwindow_days = 7')))
    planned = s.scans.all_days()
    d = s.scans.patient_days(20_000, np.random.default_rng(3))
    assert d.shape == (20_000, planned.size)
    assert (d[:, 0] == planned[0]).all()                      # the baseline does not move
    shift = d[:, 1:] - planned[1:]
    assert shift.min() == -7 and shift.max() == 7             # whole days, both ends reached
    assert (shift == np.round(shift)).all()
    assert np.allclose(np.bincount((shift + 7).astype(int).ravel()) / shift.size, 1 / 15,
                       atol=0.003)                            # uniform: 15 values, SE ~0.0004
    assert (np.diff(d, axis=1) > 0).all()
    again = s.scans.patient_days(20_000, np.random.default_rng(3))
    assert (again == d).all()
    # no window: every patient on the planned days, whatever the generator
    s0 = load_scenario(_write(tmp_path, GOOD, "exact.toml"))
    assert (s0.scans.patient_days(5, np.random.default_rng(1)) == s0.scans.all_days()).all()


def test_unknown_scenario_suggests_the_nearest():
    with pytest.raises(SpecError, match=r"unknown scenario 'triplett'. Did you mean 'triplet'"):
        load_scenario("triplett")
