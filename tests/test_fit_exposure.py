"""Exposure-driven TGI models fitted from a spec: ``[model] exposure`` (constant, data column,
PK card + regimen) and ``[data] time_zero``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from pkpd.errors import DataError, SpecError
from pkpd.fit.data import read_fit_data
from pkpd.fit.problem import build_problem
from pkpd.fit.spec import load_spec
from pkpd.tumour import tgi

THETA = {"y0": "LogNormal(4, 1)", "KL": "LogNormal(-5, 1)", "KD": "LogNormal(-4, 1)",
         "lam": "LogNormal(-4, 1)"}


def _spec(path, exposure=None, data=None, tgi_name="claret", theta=None):
    model = {"tgi": tgi_name}
    if exposure is not None:
        model["exposure"] = exposure
    return {"model": model,
            "data": {"path": str(path), "format": "long", "dv": "SLD", **(data or {})},
            "theta": theta or THETA,
            "residual": {"model": "proportional", "prop": "HalfNormal(0.3)"}}


def _csv(tmp_path, df, name="d.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


@pytest.fixture
def small(tmp_path):
    df = pd.DataFrame({"ID": [1, 1, 1, 2, 2], "TIME": [100.0, 142, 184, 5, 47],
                       "SLD": [50, 40, 45, 60, 55.0], "CONC": [1.0, 2.0, 0.5, 3.0, 1.0],
                       "T0": [100.0, None, None, 5.0, None]})
    return _csv(tmp_path, df)


# ---- spec ----------------------------------------------------------------------------------
def test_spec_forms_parse(small):
    assert load_spec(_spec(small, 2.0)).exposure.value == 2.0
    ex = load_spec(_spec(small, {"column": "CONC"})).exposure
    assert (ex.kind, ex.column) == ("column", "CONC")
    ex = load_spec(_spec(small, {"card": "anlotinib", "regimen": "12 mg PO QD"})).exposure
    assert (ex.kind, ex.card.name, ex.regimen, ex.step_day) == ("regimen", "anlotinib",
                                                                "12 mg PO QD", 1.0)
    assert load_spec(_spec(small, 1.0, {"time_zero": {"column": "T0"}})).data.time_zero == {
        "column": "T0"}


@pytest.mark.parametrize("exposure, data, tgi_name, needle", [
    ({"column": "CONC", "interpolation": "linear"}, None, "claret",
     "unknown key(s) interpolation for the column form"),
    ({"colum": "CONC"}, None, "claret", "needs 'column'"),
    (-1.0, None, "claret", "must be a finite number >= 0"),
    (None, None, "claret", "needs an exposure"),
    (1.0, None, "stein_fojo", "Fix: remove exposure"),
    ({"card": "sclc_triplet_tgi", "regimen": "12 mg PO QD"}, None, "claret", "name a PK card"),
    ({"card": "anlotinib", "regimen": "twelve mg"}, None, "claret", "exposure regimen"),
    (1.0, {"time_zero": "first_scan"}, "claret", "time_zero = 'first_scan' is unknown"),
    (1.0, {"time_zero": "first_dose"}, "claret", "needs dose records (format 'nonmem')"),
    (1.0, {"time_zero": {"col": "T0"}}, "claret", "Fix: time_zero = 'data'"),
])
def test_spec_rejects(small, exposure, data, tgi_name, needle):
    theta = None if tgi_name == "claret" else {"y0": "LogNormal(4, 1)", "d": "LogNormal(-4, 1)",
                                               "g": "LogNormal(-5, 1)"}
    with pytest.raises(SpecError) as e:
        load_spec(_spec(small, exposure, data, tgi_name, theta))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


# ---- prediction vs an ODE reference ---------------------------------------------------------
def _ode_reference(model, params, rec_t, rec_e, t_obs, rtol):
    """solve_ivp (DOP853, rtol, atol 1e-14) of ``model.rhs`` with the LOCF exposure, restarted
    at every record (the exposure jumps there); times before 0 are solved backwards from 0."""
    kw = {"method": "DOP853", "rtol": rtol, "atol": 1e-14}

    def rhs(e):
        return lambda t, s: np.asarray(model.rhs(t, s, params, exposure=e))

    y = np.asarray(model.initial_state(params), float)
    out = {}
    neg = np.sort(t_obs[t_obs < 0])[::-1]
    if neg.size:
        sol = solve_ivp(rhs(0.0), (0.0, neg[-1]), y, t_eval=neg, **kw)
        out.update({float(t): float(model.observe(v)) for t, v in zip(sol.t, sol.y.T,
                                                                      strict=True)})
    knots = np.unique(np.concatenate([[0.0], rec_t[rec_t > 0]]))
    ends = np.append(knots[1:], max(t_obs.max(), knots[-1]) + 1.0)
    for a, b in zip(knots, ends, strict=True):
        e = rec_e[max(int(np.searchsorted(rec_t, a, side="right")) - 1, 0)]
        ev = np.unique(np.append(t_obs[(t_obs >= a) & (t_obs <= b)], b))
        sol = solve_ivp(rhs(e), (a, b), y, t_eval=ev, **kw)
        for t, v in zip(sol.t, sol.y.T, strict=True):
            out.setdefault(float(t), float(model.observe(v)))
        y = sol.y[:, -1]
    return np.array([out[float(t)] for t in t_obs])


@pytest.mark.parametrize("name", ["claret", "two_population"])
def test_column_exposure_matches_solve_ivp(tmp_path, name):
    """Records at irregular times, one before t = 0, values changing at every record; the
    closed form per segment equals the ODE solution to the solver's precision (rtol 1e-11 ->
    relative error < 1e-8 allows accumulation over ~10 segments)."""
    rng = np.random.default_rng(3)
    model = tgi.get_model(name)
    rows, truth = [], []
    for i in range(3):
        rec_t = np.sort(np.concatenate([[-7.0], rng.uniform(1, 300, 8)]))
        rec_e = rng.uniform(0, 3, rec_t.size)
        obs = np.isin(np.arange(rec_t.size), [0, 2, 3, 5, 8])
        rows += [{"ID": i, "TIME": t, "CONC": e, "SLD": 50.0 if o else None}
                 for t, e, o in zip(rec_t, rec_e, obs, strict=True)]
        truth.append((rec_t, rec_e, rec_t[obs]))
    if name == "claret":
        P = np.array([[55.0, 0.004, 0.02, 0.006], [40.0, 0.01, 0.05, 0.0],
                      [70.0, 0.002, 0.01, 0.03]])
        theta = THETA
    else:
        P = np.array([[55.0, 0.1, 0.002, 0.01, 0.004], [40.0, 0.3, 0.004, 0.02, 0.001],
                      [70.0, 0.0, 0.001, 0.005, 0.003]])
        theta = {p: "LogNormal(0, 1)" for p in model.parameters}
    spec = load_spec(_spec(_csv(tmp_path, pd.DataFrame(rows)), {"column": "CONC"},
                           tgi_name=name, theta=theta))
    data = read_fit_data(spec)
    assert data.n_obs == 15 and data.exposure["value"].size == 27   # DV-less rows carry CONC
    prob = build_problem(spec, data)
    got = prob.flat(np.asarray(prob.predict(P)))
    ref = np.concatenate([
        _ode_reference(model, dict(zip(model.parameters, P[i], strict=True)), rt, re_, to, 1e-11)
        for i, (rt, re_, to) in enumerate(truth)])
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    # the constant form is the special case of one record
    one = load_spec(_spec(spec.data.path, 1.7, tgi_name=name, theta=theta))
    const = build_problem(one, read_fit_data(one)).predict(P)
    df = pd.DataFrame(rows).assign(CONC=1.7)
    col = load_spec(_spec(_csv(tmp_path, df, "c.csv"), {"column": "CONC"}, tgi_name=name,
                          theta=theta))
    np.testing.assert_allclose(build_problem(col, read_fit_data(col)).predict(P), const,
                               rtol=1e-12)


def test_gradient_is_finite_at_lam_zero(small):
    import jax
    spec = load_spec(_spec(small, {"column": "CONC"}))
    prob = build_problem(spec, read_fit_data(spec))
    P = np.array([[50.0, 0.01, 0.02, 0.0], [60.0, 0.01, 0.02, 1e-9]])
    g = jax.grad(lambda P: prob.predict(P).sum())(P)
    assert np.all(np.isfinite(np.asarray(g)))


def test_regimen_exposure_is_the_daily_mean_concentration(tmp_path):
    """The regimen form's steps are the daily means of the card's typical concentration: checked
    against the event engine's profile (``concentration_profile``) averaged by Simpson's rule on
    a 2.4-minute grid (measured difference 1.8e-10; the tolerance 1e-7 bounds the quadrature
    error at the dose kinks)."""
    from scipy.integrate import simpson

    from pkpd.cards.card import load_card
    from pkpd.dosing.regimen import parse_regimen
    from pkpd.fit.exposure import exposure_steps
    from pkpd.pk.exposure import concentration_profile
    df = pd.DataFrame({"ID": [1, 1, 1], "TIME": [0.0, 10, 20], "SLD": [50, 45, 40.0]})
    spec = load_spec(_spec(_csv(tmp_path, df), {"card": "anlotinib",
                                                "regimen": "12 mg PO QD D1-14 Q21D"}))
    data = read_fit_data(spec)
    steps = exposure_steps(spec, data, np.array([[0.0, 10, 20]]))
    card = load_card("anlotinib")
    fine = np.linspace(0, 21, 21 * 600 + 1)
    c = concentration_profile(card, parse_regimen("12 mg PO QD D1-14 Q21D"), fine)[0]
    means = [simpson(c[k * 600:(k + 1) * 600 + 1], x=fine[k * 600:(k + 1) * 600 + 1])
             for k in range(21)]
    np.testing.assert_allclose(steps.value[0, :21], means, rtol=1e-7)
    np.testing.assert_allclose(steps.start[0, :21], np.arange(21.0))


# ---- time_zero ------------------------------------------------------------------------------
def test_time_zero_first_observation_and_column(small):
    spec = load_spec(_spec(small, {"column": "CONC"}, {"time_zero": "first_observation"}))
    d = read_fit_data(spec)
    np.testing.assert_array_equal(d.obs_time, [0, 42, 84, 0, 42])
    np.testing.assert_array_equal(d.exposure["time"], [0, 42, 84, 0, 42])
    np.testing.assert_array_equal(d.meta["time_origin"], [100, 5])
    spec = load_spec(_spec(small, 1.0, {"time_zero": {"column": "T0"}, "time_unit": "week"}))
    d = read_fit_data(spec)                     # origin in the data's unit, then to days
    np.testing.assert_allclose(d.obs_time, np.array([0, 42, 84, 0, 42]) * 7.0)
    plain = read_fit_data(load_spec(_spec(small, 1.0)))
    np.testing.assert_array_equal(plain.obs_time, [100, 142, 184, 5, 47])


def test_time_zero_errors(tmp_path, small):
    with pytest.raises(DataError, match=r"column\(s\) T1 not found"):
        read_fit_data(load_spec(_spec(small, 1.0, {"time_zero": {"column": "T1"}})))
    df = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 5, 3], "SLD": [50, 40, 50.0],
                       "T0": [0.0, 0, None], "CONC": [1.0, 1, None]})
    p = _csv(tmp_path, df, "e.csv")
    with pytest.raises(DataError) as e:
        read_fit_data(load_spec(_spec(p, 1.0, {"time_zero": {"column": "T0"}})))
    assert "ID 2" in str(e.value) and "T0" in str(e.value) and "fill T0" in str(e.value)
    with pytest.raises(DataError) as e:
        read_fit_data(load_spec(_spec(p, {"column": "CONC"})))
    assert "no exposure value" in str(e.value) and "ID 2" in str(e.value)
    df = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 5, 3], "SLD": [50, 40, None]})
    with pytest.raises(DataError) as e:
        read_fit_data(load_spec(_spec(_csv(tmp_path, df, "f.csv"), 1.0,
                                      {"time_zero": "first_observation"})))
    assert "ID 2" in str(e.value) and "no observation" in str(e.value)


def test_time_zero_first_dose_nonmem(tmp_path):
    text = ("ID,TIME,AMT,EVID,MDV,DV,CONC\n"
            "1,0,0,0,0,50,.\n1,10,100,1,1,.,2\n1,52,0,0,0,45,1\n"
            "2,30,100,1,1,.,1\n2,72,0,0,0,60,3\n")
    p = tmp_path / "nm.csv"
    p.write_text(text)
    raw = _spec(p, {"column": "CONC"}, None)
    raw["data"] = {"path": str(p), "format": "nonmem", "time_zero": "first_dose"}
    d = read_fit_data(load_spec(raw))
    np.testing.assert_array_equal(d.obs_time, [-10, 42, 42])
    np.testing.assert_array_equal(d.exposure["time"], [0, 42, 0, 42])
    raw["data"]["time_zero"] = "first_observation"
    with pytest.raises(DataError, match="ID 2.*no observation record"):
        bad = text.replace("2,72,0,0,0,60,3\n", "")
        p.write_text(bad)
        read_fit_data(load_spec(raw))


# ---- a short fit ----------------------------------------------------------------------------
@pytest.mark.slow
def test_short_fit_on_simulated_claret(tmp_path):
    """2 chains x (100 + 100): 16 simulated subjects (Claret, KD = 0.03 per unit of CONC, a
    dose reduction halving CONC at week 12); the fit runs and KD's 90% interval covers 0.03."""
    from pkpd.fit import fit
    rng = np.random.default_rng(11)
    model = tgi.get_model("claret")
    rows = []
    times = np.arange(0, 337, 42.0)
    for i in range(16):
        conc = np.where(times < 84, 2.0, 1.0) * np.exp(rng.normal(0, 0.2))
        p = {"y0": 60 * np.exp(rng.normal(0, 0.3)), "KL": 0.004, "KD": 0.03, "lam": 0.01}
        from pkpd.fit.exposure import build_steps, tgi_size_steps
        st = build_steps([(times, conc)], times[None, :])
        y = np.asarray(tgi_size_steps(model, times[None, :], {k: np.array([[v]])
                                                              for k, v in p.items()}, st))[0]
        y = y * np.exp(rng.normal(0, 0.1, y.size))
        rows += [{"ID": i, "TIME": t + 500, "SLD": v, "CONC": c}
                 for t, v, c in zip(times, y, conc, strict=True)]
    raw = _spec(_csv(tmp_path, pd.DataFrame(rows)), {"column": "CONC"},
                {"time_zero": "first_observation"},
                theta={"mu_y0": "Normal(4, 1)", "KL": "LogNormal(-5, 1)",
                       "KD": "LogNormal(-3.5, 1)", "lam": "LogNormal(-4.5, 1)"})
    raw["individual"] = {"y0": "exp(mu_y0 + eta_y0)"}
    raw["omega"] = {"eta_y0": "HalfNormal(0.5)"}
    raw["sampler"] = {"chains": 2, "tune": 100, "draws": 100, "seed": 5, "max_treedepth": 6}
    res = fit(load_spec(raw), tmp_path / "out", progress=False)
    s = res.summary.set_index("parameter")
    assert np.isfinite(s["mean"]).all()
    assert s.loc["KD", "q5"] < 0.03 < s.loc["KD", "q95"]
