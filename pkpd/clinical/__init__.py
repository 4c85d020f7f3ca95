"""Clinical tumour data: the canonical lesion table, its readers and writers, and RECIST.

Imports only lower layers (ground, dosing).
"""

from . import recist, tumourdata
from .recist import BOR_VALUES, IBOR_VALUES, OVERALL_RESPONSES, RecistConfig, RecistResult, evaluate
from .tumourdata import *  # noqa: F403
from .tumourdata import __all__ as _data_all

__all__ = ["recist", "tumourdata", *_data_all, "RecistConfig", "RecistResult", "evaluate",
           "OVERALL_RESPONSES", "BOR_VALUES", "IBOR_VALUES"]
