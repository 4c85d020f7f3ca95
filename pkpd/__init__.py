"""pkpd: JAX-compiled PK/PD and tumour-dynamics modelling for oncology.

float64 is switched on at import (before any array exists): tolerances of the exact PK solutions
and of the ODE paths need it.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .cards import Card as Card  # noqa: E402
from .cards import list_cards as list_cards
from .cards import load_card as load_card
from .engine import SolverConfig as SolverConfig  # noqa: E402
from .errors import (  # noqa: E402
    DataError as DataError,
)
from .errors import (
    ModelError as ModelError,
)
from .errors import (
    PkpdError as PkpdError,
)
from .errors import (
    RegimenError as RegimenError,
)
from .errors import (
    SolverError as SolverError,
)
from .errors import (
    UnitError as UnitError,
)
from .pk import (  # noqa: E402
    NonlinearCompartment as NonlinearCompartment,
)
from .pk import (
    OneCompartment as OneCompartment,
)
from .pk import (
    ThreeCompartment as ThreeCompartment,
)
from .pk import (
    TwoCompartment as TwoCompartment,
)
from .pk import (
    as_ode as as_ode,
)

__version__ = "0.1.0"

__all__ = [
    "Card",
    "list_cards",
    "load_card",
    "SolverConfig",
    "DataError",
    "ModelError",
    "PkpdError",
    "RegimenError",
    "SolverError",
    "UnitError",
    "OneCompartment",
    "TwoCompartment",
    "ThreeCompartment",
    "NonlinearCompartment",
    "as_ode",
    "__version__",
]
