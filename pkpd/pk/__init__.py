"""Pharmacokinetics: from dose records to concentrations.

* :mod:`pkpd.pk.models`: compartmental models (:class:`OneCompartment`, ...,
  :class:`NonlinearCompartment`) and the ``"pk"`` card kind;
* :mod:`pkpd.pk.engine`: the JAX event engine (exact matrix exponential, diffrax for nonlinear
  models), :func:`compile_records`, :func:`solve_population`;
* :mod:`pkpd.pk.exposure`: regimen -> exposure (:func:`cycle_exposure`,
  :func:`concentration_profile`);
* :mod:`pkpd.pk.predict`: event table + card -> predictions (``pkpd.pk.predict.predict``);
* :mod:`pkpd.pk.nca`: non-compartmental analysis (``pkpd.pk.nca.nca``).

A function named like its module (``predict``, ``nca``) is reached through the module, so that
``pkpd.pk.nca`` stays the module. Imports only lower layers (ground, dosing, cards).
"""

from .._lazy import attach

_EXPORTS = {
    "models": (
        "PKModel", "OneCompartment", "TwoCompartment", "ThreeCompartment",
        "NonlinearCompartment", "make_model", "ODEView", "as_ode", "Domain", "parse_domain",
        "default_domain", "check_domains", "check_names", "PARAM_NAME_RE",
    ),
    "engine": (
        "SubjectRecords", "Compiled", "SolverConfig", "compile_records", "stack", "solve",
        "solve_population", "ss_pending_needed",
    ),
    "exposure": (
        "CycleExposure", "SteadyState", "cycle_exposure", "steady_state", "is_continuous",
        "concentration_profile", "dose_records", "check_regimen_drug", "MAX_EXPOSURE_POINTS",
        "MIN_POINTS_PER_CYCLE", "MAX_PROFILE_VALUES", "DEFAULT_WINDOW_DAYS",
    ),
    "nca": (
        "AUC_METHODS", "IMPUTE_METHODS", "DEFAULT_BLQ", "CDISC_PPTESTCD", "LambdaZResult",
        "auc_segments", "aumc_segments", "auc", "aumc", "lambda_z", "accumulation", "to_cdisc",
    ),
    "predict": ("Prepared", "prepare"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
