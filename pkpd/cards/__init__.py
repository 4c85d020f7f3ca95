"""Model cards: TOML files in ``models/`` holding parameter values, units, IIV, priors and the
literature source of every number.

* :mod:`pkpd.cards.card`: :class:`Card`, :func:`load_card`, :func:`list_cards`;
* :mod:`pkpd.cards.registry`: card kinds. Each model registers what its kind of card needs
  (:func:`register_kind`), so that the loader imports nothing above it.

Imports only the ground modules. Names are loaded on first use, so that ``import pkpd`` stays light.
"""

from .._lazy import attach

_EXPORTS = {
    "card": ("Card", "load_card", "list_cards", "models_dir"),
    "registry": ("CardKind", "card_kind", "declare_provider", "known_kinds", "register_kind"),
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
