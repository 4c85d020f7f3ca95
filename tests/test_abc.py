"""ABC-SMC against closed-form posteriors (pkpd.trial.abc)."""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.errors import SpecError
from pkpd.trial.abc import GaussianPrior, abc_smc

XBAR, N_OBS = 1.3, 20      # data: the mean of 20 draws from N(mu, 1)


def _distance(z, k):
    """Simulate the mean of N_OBS unit-variance draws at mu = z[0] (seeded by k)."""
    rng = np.random.default_rng([7, k])
    return abs(rng.normal(z[0], 1 / np.sqrt(N_OBS)) - XBAR)


PRIOR = GaussianPrior(("mu",), np.array([0.0]), np.array([2.0]))


def test_normal_mean_matches_the_conjugate_posterior():
    # prior N(0, 2^2), likelihood of the sufficient mean -> posterior N(m, s^2)
    prec = 1 / 4 + N_OBS
    m, s = N_OBS * XBAR / prec, prec ** -0.5
    r = abc_smc(_distance, PRIOR, particles=1000, tolerance=0.005, max_simulations=60_000,
                seed=3)
    mean = float(r.mean()[0])
    sd = float(np.sqrt(r.weights @ (r.z[:, 0] - mean) ** 2))
    # Monte Carlo error of a weighted mean with ESS ~ 900: s / 30 = 0.0074; the final
    # tolerance (<= 0.01 in xbar) adds a bias of order tol^2 / s: a 3-SE band is 0.025
    assert r.ess() > 500
    assert mean == pytest.approx(m, abs=0.025)
    # the sd of the ABC posterior is inflated by the tolerance: sqrt(s^2 + eps^2/3) ~ s
    assert sd == pytest.approx(s, rel=0.08)
    assert r.weighted_quantile([0.5])[0, 0] == pytest.approx(m, abs=0.03)


def test_tolerances_decrease_and_the_run_is_reproducible():
    a = abc_smc(_distance, PRIOR, particles=200, tolerance=0.02, seed=5)
    b = abc_smc(_distance, PRIOR, particles=200, tolerance=0.02, seed=5)
    eps = [g["eps"] for g in a.generations[1:]]
    assert all(x > y for x, y in zip(eps, eps[1:]))
    assert a.stopped.startswith("tolerance reached")
    assert np.array_equal(a.z, b.z) and np.array_equal(a.weights, b.weights)
    assert a.weights.sum() == pytest.approx(1.0)


def test_resuming_from_a_checkpoint_gives_the_same_numbers():
    states = []

    def keep(st):
        states.append({k: (v.copy() if isinstance(v, np.ndarray) else
                           [dict(h) for h in v] if k == "history" else v)
                       for k, v in st.items()})

    full = abc_smc(_distance, PRIOR, particles=150, tolerance=0.02, seed=11, checkpoint=keep)
    mid = states[2]                       # as if Ctrl-C came after generation 2
    resumed = abc_smc(_distance, PRIOR, particles=150, tolerance=0.02, seed=11, resume=mid)
    assert np.array_equal(full.z, resumed.z)
    assert full.simulations == resumed.simulations


def test_a_failed_simulation_is_a_rejected_proposal_and_is_counted():
    def flaky(z, k):
        if z[0] > 2.5:
            raise FloatingPointError("solver diverged")
        return _distance(z, k)

    r = abc_smc(flaky, PRIOR, particles=200, tolerance=0.05, seed=2)
    assert r.failures > 0                 # P(mu > 2.5) under the prior is about 0.1
    assert (r.z[:, 0] <= 2.5).all()


def test_every_prior_draw_failing_is_one_clear_error():
    def broken(z, k):
        raise ValueError("no")

    with pytest.raises(SpecError, match=r"every one of the 20 prior draws failed"):
        abc_smc(broken, PRIOR, particles=20)


def test_the_simulation_budget_stops_the_run_with_the_last_complete_generation():
    r = abc_smc(_distance, PRIOR, particles=100, tolerance=0.0, max_simulations=600, seed=1)
    assert "simulation budget spent (600)" in r.stopped
    assert len(r.z) == 100 and r.simulations <= 600
