"""Hierarchical Bayesian population fitting: PyMC priors and hierarchy, JAX likelihoods.

    from pkpd.fit import fit, load_fit
    res = fit("fits/oak_stein_fojo.toml")      # writes fits/oak_stein_fojo/ (git-ignored)
    res.summary                                  # parameter, mean, sd, q5, q95, ess_bulk, r_hat

Ctrl-C raises :class:`pkpd.errors.FitInterrupted` (completed batches kept; run again to resume).
See docs/fitting.md for the spec format; the committed reference results are in fits/reference/.
"""

from .._lazy import attach

_EXPORTS: dict[str, tuple[str, ...]] = {
    "data": ("FitData", "read_fit_data"),
    "kfold": ("compare_models",),          # kfold() is pkpd.fit.kfold.kfold (its module's name)
    "model": ("FAILURES", "build_model"),
    "problem": ("Problem", "build_problem"),
    "run": ("SUMMARY_COLUMNS", "FitResult", "fit", "load_fit", "prepare"),
    "spec": ("RESIDUAL_MODELS", "SAMPLERS", "Spec", "load_spec"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
