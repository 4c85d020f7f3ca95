"""Tests for pkpd.dosing.regimen: text form, covariate resolution, holds/reductions, arrays,
tables."""

import dataclasses
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pkpd.dosing.regimen import (  # noqa: E402
    DOSE_UNITS,
    DOSES_PER_DAY,
    ROUTES,
    DoseArrays,
    Hold,
    Phase,
    Protocol,
    Reduce,
    Regimen,
    cockcroft_gault_crcl,
    mosteller_bsa,
    parse_protocol,
    parse_regimen,
    resolve_dose_mg,
    stack_arrays,
)
from pkpd.errors import RegimenError, UnitError  # noqa: E402

ANLOTINIB = "12 mg PO QD D1-14 Q21D"
DURVALUMAB = "1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W"
ETOPOSIDE = "100 mg/m2 IV 60 min D1-3 Q21D x4"
CARBOPLATIN = "AUC 5 IV 60 min D1 Q21D x4"

ANLO_PHASE = Phase(12, "mg", "PO", None, 1, tuple(range(1, 15)), 21, None)
DURVA_PHASES = (
    Phase(1500, "mg", "IV", 60, 1, (1,), 21, 4),
    Phase(1500, "mg", "IV", 60, 1, (1,), 28, None),
)
ETO_PHASE = Phase(100, "mg/m2", "IV", 60, 1, (1, 2, 3), 21, 4)
CARBO_PHASE = Phase(5, "AUC", "IV", 60, 1, (1,), 21, 4)
FULL_COVS = {"WT": 70.0, "HT": 170.0, "GFR": 90.0}


def _cases(text):
    """The text as written, lower case, upper case and with messy whitespace."""
    return [text, text.lower(), text.upper(), "  " + text.replace(" ", "   ") + "\t"]


# ------------------------------------------------------------------------------------------
# the four required texts: structure and doses
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", _cases(ANLOTINIB))
def test_anlotinib_text_structure(text):
    r = parse_regimen(text)
    assert r == Regimen((ANLO_PHASE,))
    assert r.phases[0].days == tuple(range(1, 15))
    assert r.phases[0].cycle_days == 21 and r.phases[0].n_cycles is None


def test_anlotinib_doses_42_days():
    d = parse_regimen(ANLOTINIB).doses(None, 42)
    expected = list(range(0, 14)) + list(range(21, 35))
    assert len(d) == 28
    np.testing.assert_array_equal(d.time_day, expected)
    np.testing.assert_array_equal(d.amount_mg, np.full(28, 12.0))
    np.testing.assert_array_equal(d.duration_day, np.zeros(28))
    assert set(d.route) == {"PO"}
    np.testing.assert_array_equal(d.cycle_index, [0] * 14 + [1] * 14)
    np.testing.assert_array_equal(d.cycle_start_day, [0.0] * 14 + [21.0] * 14)
    # the horizon is exclusive: days=10 gives the doses at t = 0..9
    np.testing.assert_array_equal(parse_regimen(ANLOTINIB).doses(None, 10).time_day, range(10))


@pytest.mark.parametrize("text", _cases(DURVALUMAB))
def test_durvalumab_text_structure(text):
    assert parse_regimen(text) == Regimen(DURVA_PHASES)


def test_durvalumab_doses_140_days():
    r = parse_regimen(DURVALUMAB)
    d = r.doses(None, 140)
    np.testing.assert_array_equal(d.time_day, [0, 21, 42, 63, 84, 112])
    np.testing.assert_array_equal(d.amount_mg, [1500.0] * 6)
    np.testing.assert_allclose(d.duration_day, [1 / 24] * 6, rtol=1e-15)
    np.testing.assert_array_equal(d.phase_index, [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(d.cycle_index, [0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(d.cycle_start_day, [0, 21, 42, 63, 84, 112])
    cyc = r.cycle_starts(140)
    np.testing.assert_array_equal(cyc.start_day, [0, 21, 42, 63, 84, 112])
    np.testing.assert_array_equal(cyc.length_day, [21, 21, 21, 21, 28, 28])
    # a horizon ending just after day 140 picks up the dose at 140
    np.testing.assert_array_equal(r.doses(None, 140.5).time_day[-1], 140)


@pytest.mark.parametrize("text", _cases(ETOPOSIDE) + ["100 mg/m² IV over 1 h D1-3 Q21D x4"])
def test_etoposide_text_structure(text):
    assert parse_regimen(text) == Regimen((ETO_PHASE,))


def test_etoposide_doses_bsa():
    r = parse_regimen(ETOPOSIDE)
    d = r.doses({"BSA": 1.8}, 365)
    expected = [c * 21 + k for c in range(4) for k in range(3)]
    np.testing.assert_array_equal(d.time_day, expected)
    np.testing.assert_allclose(d.amount_mg, np.full(12, 180.0), rtol=1e-15)
    assert len(r.doses({"BSA": 1.8})) == 12  # default horizon = end of the regimen (84 d)
    assert r.total_days == 84


def test_mosteller_hand_value():
    # sqrt(70 * 170 / 3600) = sqrt(3.305555...) = 1.818118686 (hand calculation)
    assert mosteller_bsa(70, 170) == pytest.approx(1.8181186858, abs=1e-9)
    d = parse_regimen(ETOPOSIDE).doses({"WT": 70, "HT": 170})
    np.testing.assert_allclose(d.amount_mg, 181.81186858, atol=1e-6)
    # BSA wins over WT/HT; covariate names are case-insensitive
    assert parse_regimen(ETOPOSIDE).doses({"bsa": 2.0, "wt": 70, "ht": 170}).amount_mg[0] == 200


@pytest.mark.parametrize(
    "text", _cases(CARBOPLATIN) + ["AUC5 IV 1 h D1 Q21D x4", "AUC=5 IV 60 min Q3W x4"]
)
def test_carboplatin_text_structure(text):
    assert parse_regimen(text) == Regimen((CARBO_PHASE,))


def test_carboplatin_calvert():
    r = parse_regimen(CARBOPLATIN)
    d = r.doses({"GFR": 100})
    np.testing.assert_array_equal(d.time_day, [0, 21, 42, 63])
    np.testing.assert_array_equal(d.amount_mg, [625.0] * 4)
    assert r.doses({"CRCL": 60}).amount_mg[0] == 5 * 85
    assert r.doses({"GFR": 100, "CRCL": 60}).amount_mg[0] == 625  # GFR wins over CRCL


def test_carboplatin_cockcroft_gault_and_cap():
    r = parse_regimen(CARBOPLATIN)
    # female, 60 y, 70 kg, SCr 1.0 mg/dL: (140-60)*70/(72*1.0)*0.85 = 66.1111 mL/min
    crcl = 80 * 70 / 72 * 0.85
    assert cockcroft_gault_crcl(60, 70, 1.0, True) == pytest.approx(crcl)
    for sex in (1, "F", "female"):
        cov = {"AGE": 60, "WT": 70, "SCR": 1.0, "SEX": sex}
        assert r.doses(cov).amount_mg[0] == pytest.approx(5 * (crcl + 25))
    male = {"AGE": 60, "WT": 70, "SCR": 1.0, "SEX": "M"}
    assert r.doses(male).amount_mg[0] == pytest.approx(5 * (80 * 70 / 72 + 25))
    # GFR capped at 125 mL/min by default (max dose AUC x 150); the cap can be switched off
    assert r.doses({"GFR": 150}).amount_mg[0] == 750
    assert r.doses({"GFR": 150}, gfr_cap=None).amount_mg[0] == 875
    assert resolve_dose_mg(5, "AUC", {"GFR": 150}, gfr_cap=140) == 5 * 165


def test_mg_per_kg_and_amount_units():
    r = parse_regimen("20 mg/kg IV 60 min Q4W")
    assert r.doses({"WT": 25}, 28).amount_mg.tolist() == [500.0]
    assert parse_regimen("1.5 g IV 60 min Q3W") == parse_regimen("1500 mg IV 60 min Q3W")
    assert Phase(1.5, "g", "IV") == Phase(1500, "mg", "IV")
    assert Phase(500, "ug/kg", "IV").amount_unit == "mg/kg"
    with pytest.raises(UnitError):
        Phase(5, "mmol", "IV")


# ------------------------------------------------------------------------------------------
# more of the grammar
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, phase",
    [
        ("5 mg PO BID", Phase(5, doses_per_day=2)),
        ("5 mg PO Q12H", Phase(5, doses_per_day=2)),
        ("5 mg PO TID D1-5 Q7D", Phase(5, doses_per_day=3, days=(1, 2, 3, 4, 5), cycle_days=7)),
        ("5 mg PO Q8H D1-5 QW", Phase(5, doses_per_day=3, days=(1, 2, 3, 4, 5), cycle_days=7)),
        ("5 mg PO QD", Phase(5)),
        ("5 mg PO", Phase(5)),
        ("5 mg PO Q24H x3", Phase(5, n_cycles=3)),
        ("5 mg PO QD x3", Phase(5, n_cycles=3)),
        ("5 mg PO Q1D 3 cycles", Phase(5, n_cycles=3)),
        ("5 mg IV Q2W", Phase(5, route="IV", cycle_days=14)),
        ("5 mg IV Q14D", Phase(5, route="IV", cycle_days=14)),
        ("5 mg IV QW", Phase(5, route="IV", cycle_days=7)),
        ("5 mg IV Q1W", Phase(5, route="IV", cycle_days=7)),
        ("5 mg IV Q48H", Phase(5, route="IV", cycle_days=2)),
        ("5 mg IV QOD", Phase(5, route="IV", cycle_days=2)),
        ("5 mg SC D1,8,15 Q28D", Phase(5, route="SC", days=(1, 8, 15), cycle_days=28)),
        ("5 mg sq D1-3,8 Q21D", Phase(5, route="SC", days=(1, 2, 3, 8), cycle_days=21)),
        ("5 mg SC days 1-3, 8 Q21D", Phase(5, route="SC", days=(1, 2, 3, 8), cycle_days=21)),
        ("5 mg IV 1.5 h Q3W", Phase(5, route="IV", infusion_min=90, cycle_days=21)),
        ("5 mg IV over 30 min Q3W", Phase(5, route="IV", infusion_min=30, cycle_days=21)),
        ("5 mg IV 30min D1 Q21D ×2", Phase(5, route="IV", infusion_min=30, cycle_days=21,
                                           n_cycles=2)),
        ("5mg oral qd d1–14 q21d", Phase(5, days=tuple(range(1, 15)), cycle_days=21)),
        ("5 mg/m2 IV Q21D x4", Phase(5, "mg/m2", "IV", cycle_days=21, n_cycles=4)),
        ("5 mg/m^2 IV Q21D", Phase(5, "mg/m2", "IV", cycle_days=21)),
    ],
)
def test_grammar_variants(text, phase):
    assert parse_regimen(text) == Regimen((phase,))


def test_clauses_and_drug_prefix():
    r = parse_regimen(
        "Anlotinib: 12 mg PO QD D1-14 Q21D; reduce to 8 mg from D85; hold D22-28; "
        "reduce to 10 from day 43; stop from D200; start D8;"
    )
    expected = (
        Regimen((ANLO_PHASE,), drug="Anlotinib", start_day=7)
        .hold(22, 28)
        .reduce(10, 43)
        .reduce(8, 85, "mg")
        .stop(200)
    )
    assert r == expected
    assert r.modifications == (Hold(22, 28), Reduce(10, 43), Reduce(8, 85, "mg"), Hold(200))
    assert parse_regimen(r.to_text()) == r
    assert parse_regimen("12 mg PO; hold from D5 to D9") == parse_regimen("12 mg PO; hold D5-9")
    assert parse_regimen("12 mg PO; hold from D5") == Regimen(Phase(12)).stop(5)
    assert parse_regimen("12 mg PO; hold D5") == Regimen(Phase(12)).hold(5, 5)
    assert parse_regimen("12 mg PO; delay 12 h").start_day == 0.5
    assert parse_regimen('"PF-06 x": 12 mg PO').drug == "PF-06 x"


# ------------------------------------------------------------------------------------------
# round trip (hypothesis)
# ------------------------------------------------------------------------------------------


@st.composite
def phases(draw, final=True):
    n = draw(st.sampled_from(DOSES_PER_DAY))
    cycle = draw(st.one_of(st.integers(1, 60).map(float),
                           st.floats(1, 60).map(lambda x: round(x, 2))))
    top = math.floor(cycle)
    days = draw(st.sets(st.integers(1, top), min_size=1, max_size=min(top, 8)))
    route = draw(st.sampled_from(ROUTES))
    infusion = None
    if route != "PO":
        infusion = draw(st.none() | st.floats(0.5, 1440 / n - 0.5))
    n_cycles = draw(st.none() | st.integers(1, 10)) if final else draw(st.integers(1, 10))
    return Phase(
        amount=draw(st.floats(1e-3, 1e5)),
        amount_unit=draw(st.sampled_from(DOSE_UNITS)),
        route=route,
        infusion_min=infusion,
        doses_per_day=n,
        days=tuple(sorted(days)),
        cycle_days=cycle,
        n_cycles=n_cycles,
    )


drug_names = st.none() | st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True) | \
    st.from_regex(r"[A-Za-z][A-Za-z0-9 \-]{0,8}[a-z]", fullmatch=True)


@st.composite
def regimens(draw, max_phases=3):
    k = draw(st.integers(1, max_phases))
    ph = [draw(phases(final=False)) for _ in range(k - 1)] + [draw(phases(final=True))]
    start = draw(st.just(0.0) | st.integers(0, 60).map(float) | st.floats(0, 60))
    r = Regimen(tuple(ph), drug=draw(drug_names), start_day=start)
    for _ in range(draw(st.integers(0, 4))):
        day = draw(st.integers(1, 200))
        if draw(st.booleans()):
            r = r.hold(day, draw(st.none() | st.integers(day, day + 30)))
        elif all(m.from_day != day for m in r.modifications if isinstance(m, Reduce)):
            unit = draw(st.none() | st.sampled_from(DOSE_UNITS))
            r = r.reduce(draw(st.floats(1e-3, 1e4)), day, unit)
    return r


@settings(max_examples=150, deadline=None)
@given(regimens())
def test_round_trip_object_text_object(r):
    text = r.to_text()
    again = parse_regimen(text)
    assert again == r
    assert again.to_text() == text
    # case-insensitive and whitespace tolerant (quoted drug names keep their case and spaces)
    if r.drug is None or " " not in r.drug:
        assert parse_regimen(text.replace(" ", "  ")) == r
    if r.drug is None:
        assert parse_regimen(text.lower()) == r
        assert parse_regimen(text.upper()) == r


@settings(max_examples=100, deadline=None)
@given(st.lists(regimens(max_phases=2), min_size=1, max_size=3))
def test_protocol_round_trip(rs):
    rs = [r.with_drug(f"drug{k}") for k, r in enumerate(rs)]
    p = Protocol.from_regimens(*rs)
    assert parse_protocol(p.to_text()) == p


# ------------------------------------------------------------------------------------------
# schedule properties against a brute-force oracle
# ------------------------------------------------------------------------------------------


def _oracle(reg, cov, horizon):
    """Independent loop implementation of the dosing rules."""
    out = []
    t0 = reg.start_day
    holds = [m for m in reg.modifications if isinstance(m, Hold)]
    reds = sorted((m for m in reg.modifications if isinstance(m, Reduce)),
                  key=lambda m: m.from_day)
    for p in reg.phases:
        c = 0
        while p.n_cycles is None or c < p.n_cycles:
            cs = t0 + c * p.cycle_days
            if cs >= horizon:
                break
            for d in p.days:
                for j in range(p.doses_per_day):
                    t = cs + (d - 1) + j / p.doses_per_day
                    day = math.floor(t + 1e-9) + 1
                    if t >= horizon or any(
                        h.from_day <= day and (h.to_day is None or day <= h.to_day) for h in holds
                    ):
                        continue
                    amount, unit = p.amount, p.amount_unit
                    for m in reds:
                        if m.from_day <= day:
                            amount, unit = m.amount, m.unit or p.amount_unit
                    out.append((t, resolve_dose_mg(amount, unit, cov), p.duration_day))
            c += 1
        if p.n_cycles is None:
            break
        t0 += p.n_cycles * p.cycle_days
    return sorted(out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regimens(), st.floats(0, 150), st.integers(0, 5))
def test_schedule_properties(r, horizon, extra):
    d = r.doses(FULL_COVS, horizon)
    t = d.time_day
    assert np.all(t >= 0) and np.all(t < horizon)
    assert np.all(np.diff(t) >= 0)
    assert np.all(d.amount_mg > 0)
    assert np.all(t >= d.cycle_start_day)
    expected = _oracle(r, FULL_COVS, horizon)
    assert len(d) == len(expected)
    if expected:
        e = np.array(expected)
        np.testing.assert_allclose(t, e[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(d.amount_mg, e[:, 1], rtol=1e-12)
        np.testing.assert_allclose(d.duration_day, e[:, 2], rtol=1e-12)
    arr = r.to_arrays(FULL_COVS, horizon, len(d) + extra)
    assert float(arr.mask.sum()) == len(d)
    assert arr.time.shape == (len(d) + extra,) and arr.time.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(arr.amount[len(d):]), 0.0)
    pad_time = t[-1] if len(d) else 0.0
    np.testing.assert_array_equal(np.asarray(arr.time[len(d):]), pad_time)
    assert np.all(np.isfinite(np.asarray(arr.time)))


# ------------------------------------------------------------------------------------------
# holds and reductions
# ------------------------------------------------------------------------------------------


def test_hold_removes_exactly_the_window():
    r = parse_regimen(ANLOTINIB)
    d = r.hold(22, 28).doses(None, 42)
    np.testing.assert_array_equal(d.time_day, list(range(0, 14)) + list(range(28, 35)))
    d = r.hold(5, 5).doses(None, 42)
    assert 4.0 not in d.time_day and len(d) == 27
    bid = parse_regimen("5 mg PO BID").hold(2, 3).doses(None, 5)
    np.testing.assert_array_equal(bid.time_day, [0, 0.5, 3, 3.5, 4, 4.5])


def test_stop_is_permanent():
    r = parse_regimen(ANLOTINIB).stop(43)
    d = r.doses(None, 200)
    assert d.time_day.max() == 34 and len(d) == 28
    assert r == parse_regimen(ANLOTINIB + "; stop from D43")
    # the cycle clock is unchanged by holds
    np.testing.assert_array_equal(r.cycle_starts(100).start_day, [0, 21, 42, 63, 84])


def test_stacked_reductions_12_10_8():
    base = parse_regimen(ANLOTINIB)
    r = base.reduce(10, 43).reduce(8, 85)
    assert r == base.reduce(8, 85).reduce(10, 43)  # order of the calls does not matter
    assert base.modifications == ()  # immutability: the original is unchanged
    d = r.doses(None, 126)
    expected = np.where(d.time_day < 42, 12.0, np.where(d.time_day < 84, 10.0, 8.0))
    np.testing.assert_array_equal(d.amount_mg, expected)
    assert set(d.amount_mg[d.time_day >= 84]) == {8.0}
    assert d.amount_mg[d.time_day == 42][0] == 10.0  # D43 = t 42 is already reduced
    assert r == parse_regimen(ANLOTINIB + "; reduce to 10 from D43; reduce to 8 from D85")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.start_day = 3


def test_reduction_units_and_phases():
    r = parse_regimen(ETOPOSIDE)
    d = r.reduce(75, 22).doses({"BSA": 1.8})
    np.testing.assert_allclose(d.amount_mg, [180.0] * 3 + [135.0] * 9)
    # a flat-mg reduction from D1 needs no BSA at all
    np.testing.assert_array_equal(r.reduce(150, 1, "mg").doses({}).amount_mg, [150.0] * 12)
    d = r.reduce(150, 43, "mg").doses({"BSA": 1.8})
    np.testing.assert_allclose(d.amount_mg, [180.0] * 6 + [150.0] * 6)
    # a reduction spans phases
    dv = parse_regimen(DURVALUMAB).reduce(1120, 64).doses(None, 140)
    np.testing.assert_array_equal(dv.amount_mg, [1500, 1500, 1500, 1120, 1120, 1120])
    with pytest.raises(RegimenError, match="same day"):
        r.reduce(75, 22).reduce(50, 22)


# ------------------------------------------------------------------------------------------
# arrays, stacking, event table
# ------------------------------------------------------------------------------------------


def test_to_arrays_and_stack_for_vmap():
    r = parse_regimen(CARBOPLATIN)
    a = r.to_arrays({"GFR": 100})
    assert isinstance(a, DoseArrays) and a.time.shape == (4,)
    with pytest.raises(RegimenError, match="max_doses"):
        r.to_arrays({"GFR": 100}, max_doses=3)
    pop = [r.to_arrays({"GFR": g}) for g in (50, 100)] + [
        r.reduce(4, 43).stop(50).to_arrays({"GFR": 100})
    ]
    s = stack_arrays(pop)
    assert s.time.shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(s.mask.sum(axis=1)), [4, 4, 3])
    totals = jax.vmap(lambda x: jnp.sum(x.amount * x.mask))(s)
    np.testing.assert_allclose(np.asarray(totals), [4 * 375, 4 * 625, 2 * 625 + 500])
    grad = jax.grad(lambda x: jnp.sum(jnp.exp(-x.time) * x.amount * x.mask))(s)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grad)
    assert stack_arrays(pop, max_doses=6).time.shape == (3, 6)


def test_event_table():
    r = parse_regimen(DURVALUMAB)
    df = r.to_event_table(days=140, cmt={"IV": 2}, id=7)
    assert list(df.columns) == ["ID", "TIME", "EVID", "AMT", "CMT", "RATE", "II", "ADDL",
                                "SS", "MDV"]
    np.testing.assert_array_equal(df.TIME, np.array([0, 21, 42, 63, 84, 112]) * 24.0)
    np.testing.assert_allclose(df.RATE, 1500.0)  # 1500 mg over 1 h
    assert set(df.EVID) == {1} and set(df.MDV) == {1} and set(df.CMT) == {2} and set(df.ID) == {7}
    assert set(df.II) == {0} and set(df.ADDL) == {0} and set(df.SS) == {0}
    assert df.attrs == {"time_unit": "h", "amt_unit": "mg"}
    days = r.to_event_table(days=140, time_unit="day")
    np.testing.assert_allclose(days.RATE, 1500 * 24.0)
    po = parse_regimen(ANLOTINIB).to_event_table(days=21, cmt={"PO": 1, "IV": 2})
    assert set(po.RATE) == {0.0} and len(po) == 14
    with pytest.raises(RegimenError, match="IV"):
        r.to_event_table(days=140, cmt={"PO": 1})


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, token, position",
    [
        ("1500 mg IV 60 min Q3X", "Q3X", 19),
        ("12 mgg PO QD", "mgg", 4),
        ("12 mg PX QD", "PX", 7),
        ("12 mg PO QD Dx Q21D", "Dx", 13),
        ("12 mg PO Q36H", "Q36H", 10),
        ("12 mg PO QD D14-1 Q21D", "D14", 13),
        ("12 mg PO QD D1-14 Q21D Q3W", "Q3W", 24),
        ("12 mg PO QD D1-14 Q21D foo", "foo", 24),
        ("12 mg PO QD D1-14 Q21D; hold X22", "X22", 30),
        ("12 mg PO QD D1-14 Q21D; snooze D3", "snooze", 25),
        ("1500 mg IV 60 min Q3W then 1500 mg IV Q4W", "then", 23),
        ("AUC five IV", "five", 5),
        ("mg 12 PO", "mg", 1),
        ("12 mg PO QD D1-14 Q21D @", "@", 24),
        ("12 mg PO D1-14", "D1", 10),
        ("-5 mg PO", "-", 1),
    ],
)
def test_unparseable_text(text, token, position):
    with pytest.raises(RegimenError) as err:
        parse_regimen(text)
    msg = str(err.value)
    assert repr(token) in msg
    assert f"character {position}" in msg
    assert "Fix" in msg


def test_unknown_unit_in_text_is_also_a_unit_error():
    with pytest.raises(UnitError, match="mgg"):
        parse_regimen("12 mgg PO")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("12 mg PO QD D1-22 Q21D", "day 22"),
        ("12 mg PO QD D0-3 Q21D", "day 0"),
        ("100 mg IV 25 h QD", "infusion"),
        ("100 mg IV 13 h BID D1 Q21D", "infusion"),
        ("100 mg IV 90 min Q24H", None),  # fine: 90 min < 24 h
        ("12 mg PO x0", "cycles"),
        ("12 mg PO 60 min", "oral"),
        ("12 mg", "route"),
        ("0 mg PO", "positive"),
    ],
)
def test_invalid_regimen_text(text, needle):
    if needle is None:
        parse_regimen(text)
        return
    with pytest.raises(RegimenError) as err:
        parse_regimen(text)
    assert needle in str(err.value) and "Fix" in str(err.value)


def test_invalid_api_values():
    cases = [
        (lambda: Phase(-5), "positive"),
        (lambda: Phase(0), "positive"),
        (lambda: Phase(float("nan")), "positive"),
        (lambda: Phase(5, days=(1, 22), cycle_days=21), "day 22"),
        (lambda: Phase(5, days=(1, 1), cycle_days=21), "twice"),
        (lambda: Phase(5, "mg", "IV", infusion_min=1440), "infusion"),
        (lambda: Phase(5, "mg", "IV", infusion_min=1800, days=(1, 2), cycle_days=21), "infusion"),
        (lambda: Phase(5, n_cycles=0), "cycles"),
        (lambda: Phase(5, doses_per_day=5), "divide 24"),
        (lambda: Phase(5, route="IM"), "route"),
        (lambda: Regimen((Phase(5), Phase(6))), "never ends"),
        (lambda: Regimen(()), "at least one phase"),
        (lambda: Regimen(Phase(5)).hold(10, 5), "before"),
        (lambda: Regimen(Phase(5)).reduce(-1, 5), "positive"),
        (lambda: Regimen(Phase(5)).hold(0), "day"),
        (lambda: Regimen(Phase(5)).doses(), "days="),
        (lambda: Regimen(Phase(5), start_day=-1), "start_day"),
    ]
    for make, needle in cases:
        with pytest.raises(RegimenError) as err:
            make()
        assert needle in str(err.value) and "Fix" in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "text, covs, needed",
    [
        ("20 mg/kg IV 60 min Q4W", {}, "WT"),
        (ETOPOSIDE, {"WT": 70}, "BSA"),
        (CARBOPLATIN, {"AGE": 60, "WT": 70}, "SCR"),
        (CARBOPLATIN, {"AGE": 60, "WT": 70, "SCR": 1.0}, "SEX"),
        (CARBOPLATIN, None, "GFR"),
        (CARBOPLATIN, {"GFR": float("nan")}, "GFR"),
    ],
)
def test_missing_covariate(text, covs, needed):
    with pytest.raises(RegimenError) as err:
        parse_regimen(text).doses(covs, 100)
    msg = str(err.value)
    assert needed in msg and "phase 1" in msg and "covariates=" in msg and "Fix" in msg


def test_bad_covariate_values():
    r = parse_regimen(CARBOPLATIN)
    with pytest.raises(RegimenError, match="SEX"):
        r.doses({"AGE": 60, "WT": 70, "SCR": 1.0, "SEX": 2})  # 1/2 coding is ambiguous
    with pytest.raises(RegimenError, match="umol"):
        r.doses({"AGE": 60, "WT": 70, "SCR": 88, "SEX": "M"})
    with pytest.raises(RegimenError, match="WT"):
        parse_regimen("20 mg/kg IV Q4W").doses({"WT": -3}, 30)
    with pytest.raises(RegimenError, match="metres"):
        parse_regimen(ETOPOSIDE).doses({"WT": 70, "HT": 1.7})


def test_covariates_only_needed_inside_horizon():
    r = parse_regimen("1500 mg IV 60 min Q3W x4 then 20 mg/kg IV 60 min Q4W")
    assert len(r.doses(None, 84)) == 4
    with pytest.raises(RegimenError, match="phase 2"):
        r.doses(None, 85)


# ------------------------------------------------------------------------------------------
# protocol: anlotinib + durvalumab + EP on one clock
# ------------------------------------------------------------------------------------------


def _protocol():
    return Protocol({
        "durvalumab": parse_regimen(DURVALUMAB),
        "etoposide": parse_regimen(ETOPOSIDE),
        "carboplatin": parse_regimen(CARBOPLATIN),
        "anlotinib": parse_regimen(ANLOTINIB),
    })


def test_protocol_shared_clock():
    p = _protocol()
    assert list(p) == ["durvalumab", "etoposide", "carboplatin", "anlotinib"]
    assert p["anlotinib"].drug == "anlotinib"
    covs = {"WT": 70, "HT": 170, "GFR": 100}
    d = p.doses(covs, 126)
    np.testing.assert_array_equal(d["durvalumab"].time_day, [0, 21, 42, 63, 84, 112])
    np.testing.assert_array_equal(d["carboplatin"].time_day, [0, 21, 42, 63])
    np.testing.assert_array_equal(d["carboplatin"].amount_mg, [625.0] * 4)
    np.testing.assert_array_equal(d["etoposide"].time_day,
                                  [c * 21 + k for c in range(4) for k in range(3)])
    anlo = [c * 21 + k for c in range(6) for k in range(14)]
    np.testing.assert_array_equal(d["anlotinib"].time_day, anlo)
    # cycle 1 day 1 is time 0 for every drug
    assert all(x.time_day[0] == 0 for x in d.values())

    table = p.to_event_table(covs, 126, cmt={"durvalumab": 1, "etoposide": 2, "carboplatin": 3,
                                             "anlotinib": {"PO": 4}})
    assert len(table) == sum(len(x) for x in d.values())
    assert np.all(np.diff(table.TIME) >= 0)
    assert set(table.CMT[table.TIME == 0]) == {1, 2, 3, 4}
    with pytest.raises(RegimenError, match="compartment"):
        p.to_event_table(covs, 126, cmt=1)

    arrays = p.to_arrays(covs, 126)
    assert arrays["anlotinib"].time.shape == (84,)
    assert parse_protocol(p.to_text()) == p
    maintenance = p.with_regimen("anlotinib", parse_regimen(ANLOTINIB).start_on(85))
    assert maintenance.doses(covs, 126)["anlotinib"].time_day[0] == 84


def test_protocol_hold_and_errors():
    p = _protocol()
    covs = {"BSA": 1.8, "GFR": 100}
    held = p.hold(22, 28).doses(covs, 126)
    for x in held.values():
        assert not np.any((x.time_day >= 21) & (x.time_day < 28))
    only = p.hold(22, 28, drugs="anlotinib").doses(covs, 126)
    assert 21.0 in only["durvalumab"].time_day
    with pytest.raises(RegimenError, match="stored under"):
        Protocol({"x": parse_regimen("y: 5 mg PO")})
    with pytest.raises(RegimenError, match="names no drug"):
        parse_protocol("anlotinib: 12 mg PO\n5 mg PO")
    with pytest.raises(RegimenError, match="line 2"):
        parse_protocol("anlotinib: 12 mg PO\ndurvalumab: 1500 mg IV Q3X")


def test_immutable_values():
    r = parse_regimen(DURVALUMAB)
    assert r.hold(22, 28) is not r and r.modifications == ()
    assert hash(r) == hash(parse_regimen(DURVALUMAB))
    d = r.doses(None, 140)
    with pytest.raises(ValueError):
        d.time_day[0] = 5.0


# ------------------------------------------------------------------------------------------
# numbers in scientific notation (issue 13, defect 7)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, same_as",
    [
        ("1.2e1 mg PO QD D1-14 Q21D", ANLOTINIB),
        ("1.2E1 mg PO QD D1-14 Q21D", ANLOTINIB),
        ("1.2e+1 mg PO QD D1-14 Q21D", ANLOTINIB),
        ("120e-1 mg PO QD D1-14 Q21D", ANLOTINIB),
        ("1.2e1mg PO QD D1-14 Q21D", ANLOTINIB),
        ("1.5e3 mg IV 6e1 min Q3W x4 then 1.5e3 mg IV 1e0 h Q4W", DURVALUMAB),
        ("1e2 mg/m2 IV 60 min D1-3 Q21D x4", ETOPOSIDE),
        ("AUC 5e0 IV 60 min D1 Q21D x4", CARBOPLATIN),
        ("AUC5e0 IV 60 min D1 Q21D x4", CARBOPLATIN),
        ("12 mg PO QD D1-14 Q21D; reduce to 1e1 mg from D43",
         ANLOTINIB + "; reduce to 10 mg from D43"),
        ("12 mg PO QD D1-14 Q21D; delay 1.2e1 h", ANLOTINIB + "; delay 0.5 d"),
        ("12 mg PO QD x 1e1", "12 mg PO QD x10"),
        ("12 mg PO QD D 1e0-1.4e1 Q21D", ANLOTINIB),
    ],
)
def test_scientific_notation(text, same_as):
    assert parse_regimen(text) == parse_regimen(same_as)


@pytest.mark.parametrize(
    "text, token, problem",
    [
        ("1e400 mg PO QD", "1e400", "too large"),
        ("12 mg PO QD x 1.5e0", "1.5e0", "whole number"),
        ("12 mg PO QD D1-1e400 Q21D", "1e400", "too large"),
        ("2e mg PO QD", "e", "unknown dose unit"),
    ],
)
def test_bad_numbers_are_clear(text, token, problem):
    with pytest.raises(RegimenError) as err:
        parse_regimen(text)
    msg = str(err.value)
    assert repr(token) in msg and problem in msg and "Fix" in msg


# ------------------------------------------------------------------------------------------
# expansion bounds (issue 13, defect 5)
# ------------------------------------------------------------------------------------------


def test_ten_years_of_daily_dosing_is_within_the_limits():
    from pkpd.dosing.regimen import MAX_CYCLES, MAX_DOSES

    r = parse_regimen("12 mg PO QD")
    n_cycles, n_doses = r.expansion(3653)
    assert (n_cycles, n_doses) == (3654, 3654)      # upper bounds: one more than the doses
    assert len(r.doses(None, 3653)) == 3653
    assert n_doses < MAX_DOSES and n_cycles < MAX_CYCLES
    # exactly at the limit: 100000 daily doses (cycle starts 0..99999) are allowed
    assert len(parse_regimen("1 mg PO QD").doses(None, 99_999)) == 99_999


@pytest.mark.parametrize(
    "text, days, needle",
    [
        ("12 mg PO QD", 1e7, "10000001 doses"),
        ("12 mg PO QD D1-14 Q21D", 1e7, "6666688 doses"),
        ("12 mg PO Q1H", 5000, "120024 doses"),
        ("12 mg PO QD x1000000000", None, "1000000000 doses"),
        ("12 mg PO QD D1 Q1D", 2e5, "200001 doses"),
    ],
)
def test_huge_expansion_is_refused_before_allocating(text, days, needle):
    import tracemalloc

    r = parse_regimen(text)
    tracemalloc.start()
    try:
        for call in (r.expansion, r.cycle_starts, r.doses, r.to_arrays, r.to_event_table):
            with pytest.raises(RegimenError) as err:
                call(days=days)
            msg = str(err.value)
            assert needle in msg and "at most 100000" in msg and "shorter horizon" in msg
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000       # nothing of the expansion's size was allocated


def test_huge_day_list_is_refused():
    with pytest.raises(RegimenError, match="more than 100000 days"):
        parse_regimen("12 mg PO QD D1-1000000000 Q1000000000D")


def test_protocol_expansion_is_bounded_per_drug():
    p = parse_protocol("anlotinib: 12 mg PO QD\ndurvalumab: 1500 mg IV 60 min Q4W")
    with pytest.raises(RegimenError, match="anlotinib regimen"):
        p.doses({}, 2e5)
    assert len(p.doses({}, 3653)["durvalumab"]) == 131
