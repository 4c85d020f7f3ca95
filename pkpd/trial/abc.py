"""ABC-SMC: approximate Bayesian computation by sequential Monte Carlo (population Monte Carlo).

The algorithm is ABC-PMC (Beaumont, Cornuet, Marin & Robert 2009, *Biometrika* 96:983) with the
adaptive tolerance schedule of Del Moral, Doucet & Jasra (2012, *Stat Comput* 22:1009) in its
usual quantile form:

1. Generation 0 draws ``particles`` parameter vectors from the prior and simulates each once.
2. Generation t sets the tolerance ``eps_t`` to the ``alpha`` quantile of the previous
   generation's distances. It then proposes by resampling a previous particle by weight and
   moving it with a Gaussian kernel of covariance twice the weighted particle covariance
   (Beaumont 2009's choice), and keeps a proposal whose simulated distance is ``<= eps_t``. It
   does this until it holds ``particles`` accepted ones.
3. The weights are ``w_i ∝ prior(z_i) / Σ_j w_j K(z_i | z_j)``.
4. It stops when ``eps_t <= tolerance``, when a generation's acceptance rate falls below
   ``min_acceptance``, or when ``max_generations`` or ``max_simulations`` is reached.

Everything runs in an unconstrained space ``z`` where the prior is Gaussian: a log-normal prior
is a normal prior on ``log θ``. A simulation that fails (it raises) is a rejected proposal; the
failures are counted and reported, never fatal. The random numbers depend only on ``seed``, so
a run is reproducible. It is also resumable: after each generation :func:`abc_smc` calls
``checkpoint(state)``, and ``resume=state`` continues from there with the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpecError

__all__ = ["GaussianPrior", "AbcResult", "abc_smc"]


@dataclass(frozen=True)
class GaussianPrior:
    """Independent normal priors on the unconstrained parameters ``z`` (``mean``, ``sd``)."""

    names: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean + self.sd * rng.standard_normal((n, len(self.names)))

    def logpdf(self, z: np.ndarray) -> np.ndarray:
        u = (z - self.mean) / self.sd
        return -0.5 * np.sum(u * u, axis=-1) - np.sum(np.log(self.sd))


@dataclass
class AbcResult:
    """The final generation: ``z`` (particles x parameters, unconstrained), normalised
    ``weights``, ``distances``; ``generations``: one dict per generation (eps, accepted,
    simulations, acceptance rate, failures); ``stopped``: why it stopped."""

    names: tuple[str, ...]
    z: np.ndarray
    weights: np.ndarray
    distances: np.ndarray
    generations: list[dict] = field(default_factory=list)
    stopped: str = ""
    simulations: int = 0
    failures: int = 0

    def ess(self) -> float:
        """Effective sample size of the weights (Kish)."""
        return float(1.0 / np.sum(self.weights ** 2))

    def weighted_quantile(self, q) -> np.ndarray:
        """``(len(q), n_params)`` weighted quantiles of ``z``."""
        q = np.atleast_1d(q)
        out = np.empty((q.size, self.z.shape[1]))
        for j in range(self.z.shape[1]):
            order = np.argsort(self.z[:, j])
            cw = np.cumsum(self.weights[order])
            cw = (cw - 0.5 * self.weights[order]) / cw[-1]
            out[:, j] = np.interp(q, cw, self.z[order, j])
        return out

    def mean(self) -> np.ndarray:
        return self.weights @ self.z


def _kernel_cov(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Twice the weighted covariance (Beaumont 2009), with a small ridge for a collapsed
    dimension."""
    c = np.atleast_2d(np.cov(z.T, aweights=w, ddof=0))
    return 2.0 * c + 1e-12 * np.eye(c.shape[0])


def _weights(z_new, z_old, w_old, cov, prior: GaussianPrior) -> np.ndarray:
    """``prior(z_i) / Σ_j w_j N(z_i; z_j, cov)`` on the log scale, normalised."""
    chol = np.linalg.cholesky(cov)
    diff = z_new[:, None, :] - z_old[None, :, :]
    sol = np.linalg.solve(chol, diff.reshape(-1, diff.shape[-1]).T).T
    quad = np.sum(sol ** 2, axis=-1).reshape(diff.shape[:2])
    logk = -0.5 * quad + np.log(w_old)[None, :]
    m = logk.max(axis=1, keepdims=True)
    log_den = (m[:, 0] + np.log(np.exp(logk - m).sum(axis=1)))
    logw = prior.logpdf(z_new) - log_den
    w = np.exp(logw - logw.max())
    return w / w.sum()


def _simulate_one(distance_of, z, counters) -> float:
    k = counters["simulations"]
    counters["simulations"] += 1
    try:
        d = float(distance_of(z, k))
    except Exception as exc:  # noqa: BLE001 - a failed simulation is a rejected proposal
        counters["failures"] += 1
        counters.setdefault("failure_examples", []).append(f"{type(exc).__name__}: {exc}"[:300])
        return math.inf
    if math.isnan(d):
        counters["failures"] += 1
        return math.inf
    return d


def _generation(t, state, prior, distance_of, particles, alpha, rng, counters, budget):
    """One generation; returns the new (z, w, d, info) or None when the budget ran out."""
    z_old, w_old, d_old = state["z"], state["w"], state["d"]
    eps = float(np.quantile(d_old[np.isfinite(d_old)], alpha))
    cov = _kernel_cov(z_old, w_old)
    chol = np.linalg.cholesky(cov)
    zs, ds, tried, start = [], [], 0, counters["simulations"]
    while len(zs) < particles:
        if counters["simulations"] >= budget:
            return None, eps
        j = rng.choice(len(w_old), p=w_old)
        prop = z_old[j] + chol @ rng.standard_normal(z_old.shape[1])
        tried += 1
        d = _simulate_one(distance_of, prop, counters)
        if d <= eps:
            zs.append(prop)
            ds.append(d)
    z = np.array(zs)
    w = _weights(z, z_old, w_old, cov, prior)
    info = dict(generation=t, eps=eps, accepted=particles, proposed=tried,
                simulations=counters["simulations"] - start, acceptance=particles / tried,
                ess=float(1.0 / np.sum(w ** 2)))
    return (z, w, np.array(ds), info), eps


def _first_generation(prior, distance_of, particles, rng, counters):
    z = prior.sample(particles, rng)
    d = np.array([_simulate_one(distance_of, zi, counters) for zi in z])
    if not np.isfinite(d).any():
        examples = "; ".join(counters.get("failure_examples", [])[:3])
        raise SpecError(f"every one of the {particles} prior draws failed to simulate "
                        f"({examples}). Fix: narrow the priors or check the card")
    w = np.full(particles, 1.0 / particles)
    info = dict(generation=0, eps=math.inf, accepted=particles, proposed=particles,
                simulations=particles, acceptance=1.0, ess=float(particles))
    return z, w, d, info


def abc_smc(distance_of: Callable[[np.ndarray, int], float], prior: GaussianPrior, *,
            particles: int = 200, alpha: float = 0.5, tolerance: float = 0.0,
            min_acceptance: float = 0.02, max_generations: int = 20,
            max_simulations: int = 100_000, seed: int = 0,
            checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None,
            progress: Callable[[dict], None] | None = None) -> AbcResult:
    """Run ABC-SMC (see the module docstring).

    Parameters
    ----------
    distance_of
        ``(z, k) -> distance`` (>= 0): simulate at the unconstrained parameters ``z`` and
        measure the distance of the simulated summaries to the targets; ``k`` is the number of
        the simulation (0, 1, ...), to seed it reproducibly. It may raise; that proposal is
        rejected and counted as a failure.
    prior
        The Gaussian prior on ``z``.
    particles, alpha, tolerance, min_acceptance, max_generations, max_simulations
        The population size; the quantile of the previous distances that sets each tolerance;
        the stopping rules.
    seed
        Generation ``t`` draws from ``numpy.random.SeedSequence([seed, t])``.
    checkpoint, resume
        ``checkpoint(state)`` after each generation; ``resume=state`` continues from it.
    progress
        ``progress(info)`` after each generation.
    """
    if particles < 2 or not 0 < alpha < 1:
        raise SpecError(f"particles = {particles} and alpha = {alpha} must be >= 2 and in "
                        "(0, 1). Fix: e.g. particles = 200, alpha = 0.5")
    counters = {"simulations": 0, "failures": 0}
    if resume is not None:
        state = {k: (np.asarray(v) if k in ("z", "w", "d") else v) for k, v in resume.items()}
        counters.update(simulations=state["simulations"], failures=state["failures"])
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        z, w, d, info = _first_generation(prior, distance_of, particles, rng, counters)
        state = dict(z=z, w=w, d=d, t=0, history=[info], stopped="", **_counts(counters))
        _report(state, info, checkpoint, progress)
    while not state["stopped"]:
        state["stopped"] = _next(state, prior, distance_of, particles, alpha, tolerance,
                                 min_acceptance, max_generations, max_simulations, seed,
                                 counters)
        state.update(_counts(counters))
        _report(state, state["history"][-1], checkpoint, progress)
    return AbcResult(prior.names, state["z"], state["w"], state["d"], state["history"],
                     state["stopped"], state["simulations"], state["failures"])


def _counts(counters) -> dict:
    return {"simulations": counters["simulations"], "failures": counters["failures"]}


def _report(state, info, checkpoint, progress) -> None:
    if checkpoint is not None:
        checkpoint(state)
    if progress is not None:
        progress(info)


def _next(state, prior, distance_of, particles, alpha, tolerance, min_acceptance,
          max_generations, max_simulations, seed, counters) -> str:
    """Advance one generation in ``state``; returns why to stop ("" to go on)."""
    last = state["history"][-1]
    if last["generation"] > 0 and last["eps"] <= tolerance:
        return f"tolerance reached (eps {last['eps']:.4g} <= {tolerance:g})"
    if last["acceptance"] < min_acceptance:
        return f"acceptance rate {last['acceptance']:.3g} < {min_acceptance:g}"
    if last["generation"] >= max_generations:
        return f"{max_generations} generations"
    t = last["generation"] + 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, t]))
    out, eps = _generation(t, state, prior, distance_of, particles, alpha, rng, counters,
                           max_simulations)
    if out is None:
        return (f"simulation budget spent ({max_simulations}) during generation {t}; the "
                f"result is generation {t - 1}")
    state["z"], state["w"], state["d"], info = out
    state["history"].append(info)
    state["t"] = t
    return ""
