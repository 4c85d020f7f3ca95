"""Per-patient covariates in simulation: each virtual patient's own mg/m2, mg/kg and AUC doses
and PK covariate effects. The oracle is the shared-covariate path run patient by patient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.cards import load_card
from pkpd.dosing.regimen import cockcroft_gault_crcl, mosteller_bsa, parse_regimen
from pkpd.errors import ModelError, RegimenError
from pkpd.tumour.drivers import dose_amounts_per_patient, dose_inputs
from pkpd.tumour.simulate import simulate

TRIPLET = {
    "anlotinib": "12 mg PO QD D1-14 Q21D",
    "durvalumab": "1500 mg IV 60 min Q3W x4 then 1500 mg IV 60 min Q4W",
    "etoposide": "100 mg/m2 IV 60 min D1-3 Q21D x4",
    "carboplatin": "AUC 5 IV 60 min D1 Q21D x4",
}


def _table() -> pd.DataFrame:
    t = pd.DataFrame({"WT": [55.0, 70.0, 95.0], "HT": [160.0, 172.0, 185.0],
                      "AGE": [50.0, 63.0, 75.0], "SEX": [1, 0, 0], "SCR": [0.7, 1.0, 1.4]})
    t["BSA"] = [mosteller_bsa(w, h) for w, h in zip(t.WT, t.HT)]
    t["GFR"] = [cockcroft_gault_crcl(a, w, c, bool(x))
                for a, w, c, x in zip(t.AGE, t.WT, t.SCR, t.SEX)]
    return t


def test_doses_per_patient_equal_each_patients_own_doses():
    tab = _table()
    for text in ("100 mg/m2 IV 60 min D1-3 Q21D x4; reduce to 75 mg/m2 from D43",
                 "AUC 5 IV 60 min D1 Q21D x4", "10 mg/kg IV Q2W x3 then 500 mg IV Q4W x2",
                 "12 mg PO QD D1-14 Q21D; hold D22-28"):
        reg = parse_regimen(text)
        first, amounts = reg.doses_per_patient(tab, days=200)
        for i, row in enumerate(tab.to_dict("records")):
            own = reg.doses(row, days=200)
            np.testing.assert_array_equal(own.time_day, first.time_day)
            np.testing.assert_array_equal(amounts[i], own.amount_mg)
        assert len({tuple(a) for a in amounts}) == (1 if "mg PO" in text else 3)


def test_grid_amounts_per_patient_equal_dose_inputs_of_each_patient():
    tab = _table()
    card = load_card("etoposide")
    reg = parse_regimen(TRIPLET["etoposide"])
    doses, per = reg.doses_per_patient(tab, days=90)
    inputs, grid = dose_amounts_per_patient(card, doses, per, 90, 1.0)
    for i, row in enumerate(tab.to_dict("records")):
        own = dose_inputs(card, reg.doses(row, days=90), 90, 1.0)
        assert own.types == inputs.types
        np.testing.assert_array_equal(grid[i], own.amount)


def test_simulation_with_per_patient_covariates_equals_patient_by_patient():
    tab = _table()
    times = np.array([0.0, 42.0, 84.0, 126.0, 168.0, 252.0, 336.0])
    per = simulate("sclc_triplet_tgi", TRIPLET, 365, n=3, seed=4, times=times,
                   covariates=tab, progress=False)
    for i in range(3):
        one = simulate("sclc_triplet_tgi", TRIPLET, 365, n=3, seed=4, times=times,
                       covariates=tab.iloc[i].to_dict(), progress=False)
        a = per.trajectories.query("ID == @i + 1").IPRED.to_numpy()
        b = one.trajectories.query("ID == @i + 1").IPRED.to_numpy()
        # the same arithmetic on the same numbers: equal to the last bit
        np.testing.assert_array_equal(a, b)
    assert per.patients["BSA"].tolist() == tab["BSA"].tolist()
    assert per.meta["covariates"] == {"per_patient": list(tab.columns)}
    typical = simulate("sclc_triplet_tgi", TRIPLET, 365, seed=4, times=times, covariates=tab,
                       progress=False)
    assert typical.patients.shape[0] == 3 and typical.meta["typical"]


def test_per_patient_covariate_errors_name_the_patient():
    tab = _table()
    with pytest.raises(ModelError, match="n = 5 but the covariate table has 3 rows"):
        simulate("sclc_triplet_tgi", TRIPLET, 100, n=5, covariates=tab, progress=False)
    with pytest.raises(ModelError, match="no rows"):
        simulate("sclc_triplet_tgi", TRIPLET, 100, covariates=tab.iloc[:0], progress=False)
    no_bsa = tab.drop(columns=["BSA", "HT"])
    with pytest.raises(RegimenError, match=r"patient 1: .*needs body-surface area"):
        simulate("sclc_triplet_tgi", TRIPLET, 100, covariates=no_bsa, progress=False)
