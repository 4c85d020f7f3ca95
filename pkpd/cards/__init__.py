"""Model cards: TOML files in ``models/`` holding parameter values, units, IIV, priors and the
literature source of every number.

* :mod:`pkpd.cards.card`: :class:`Card`, :func:`load_card`, :func:`list_cards`;
* :mod:`pkpd.cards.registry`: card kinds. Each model registers what its kind of card needs
  (:func:`register_kind`), so that the loader imports nothing above it.

Imports only the ground modules. ``Card`` and the loader are loaded on first use, so that
``import pkpd`` stays light.
"""

from .registry import CardKind, card_kind, declare_provider, known_kinds, register_kind

_LAZY = ("Card", "load_card", "list_cards", "models_dir")

__all__ = [*_LAZY, "CardKind", "card_kind", "declare_provider", "known_kinds", "register_kind"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pkpd.cards' has no attribute {name!r}")
    from . import card

    value = getattr(card, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
