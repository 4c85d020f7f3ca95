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

from .._lazy import attach

_EXPORTS = {
    "tgi": (
        "Doses", "as_doses", "cycle_doses", "phi1", "TGIModel", "Exponential", "Logistic",
        "Gompertz", "VonBertalanffy", "SteinFojo", "Claret", "ClaretKPD", "BrunoKPD",
        "TwoPopulation", "TGI_MODELS", "get_model", "list_models", "BRUNO_2012",
        "BRUNO_2012_SOURCE", "bruno_2012_params", "bruno_2012_doses",
    ),
    "drivers": ("DoseInputs", "GridExposure", "dose_inputs", "grid_concentrations", "grid_means"),
    "combination": (),
    "simulate": ("Simulation", "as_protocol", "patient_drivers"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
