"""Tumour dynamics: from exposure to tumour size.

* :mod:`pkpd.tumour.tgi`: the library of tumour-growth-inhibition models (exponential, logistic,
  Gompertz, Stein-Fojo, Claret, KPD, two-population, ...);
* :mod:`pkpd.tumour.drivers`: PK exposure -> the model's drivers (interval means of
  concentrations, :func:`dose_inputs`, :func:`grid_means`);
* :mod:`pkpd.tumour.combination`: the SCLC combination model (VEGF signalling, PD-L1 engagement,
  chemotherapy kill, synergy and resistance onset); used as a module, ``cm.sld(...)``;
* :mod:`pkpd.tumour.simulate`: virtual-patient simulation (``pkpd.tumour.simulate.simulate``).

Imports only lower layers (ground, dosing, cards, pk).
"""

from . import combination, drivers, simulate, tgi
from .drivers import DoseInputs, GridExposure, dose_inputs, grid_concentrations, grid_means
from .simulate import Simulation, as_protocol, patient_drivers
from .tgi import *  # noqa: F403
from .tgi import __all__ as _tgi_all

__all__ = ["combination", "drivers", "simulate", "tgi", *_tgi_all, "DoseInputs", "GridExposure",
           "dose_inputs", "grid_concentrations", "grid_means", "Simulation", "as_protocol",
           "patient_drivers"]
