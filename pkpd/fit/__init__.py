"""Hierarchical Bayesian population fitting: PyMC priors and hierarchy, JAX likelihoods.

    from pkpd.fit import fit, load_fit
    res = fit("fits/oak_stein_fojo.toml")      # writes fits/oak_stein_fojo/ (git-ignored)
    res.summary                                  # parameter, mean, sd, q5, q95, ess_bulk, r_hat

Ctrl-C raises :class:`pkpd.errors.FitInterrupted` (completed batches kept; run again to resume).
See docs/fitting.md for the spec format; the committed reference results are in fits/reference/.
"""

from .data import FitData, read_fit_data
from .kfold import compare_models  # kfold() is pkpd.fit.kfold.kfold (named like its module)
from .model import FAILURES, build_model
from .problem import Problem, build_problem
from .run import SUMMARY_COLUMNS, FitResult, fit, load_fit, prepare
from .spec import RESIDUAL_MODELS, SAMPLERS, Spec, load_spec

__all__ = ["fit", "load_fit", "prepare", "load_spec", "Spec", "FitResult", "FitData",
           "read_fit_data", "Problem", "build_problem", "build_model", "FAILURES",
           "SUMMARY_COLUMNS", "RESIDUAL_MODELS", "SAMPLERS"]
__all__ += ["compare_models"]
