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

from . import engine, exposure, models, nca, predict
from .engine import *  # noqa: F403
from .engine import __all__ as _engine_all
from .exposure import *  # noqa: F403
from .exposure import __all__ as _exposure_all
from .models import *  # noqa: F403
from .models import __all__ as _models_all
from .nca import __all__ as _nca_all
from .predict import Prepared, prepare

_nca_public = [n for n in _nca_all if n not in ("nca", "ROUTES")]
globals().update({n: getattr(nca, n) for n in _nca_public})

__all__ = ["engine", "exposure", "models", "nca", "predict", *_models_all, *_engine_all,
           *_exposure_all, *_nca_public, "Prepared", "prepare"]
