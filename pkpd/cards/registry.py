"""Card kinds: what each kind of model card must hold, and who checks and builds it.

The card loader (:func:`pkpd.cards.load_card`) checks what every card shares: tables, units,
parameters and their domains, IIV, covariates. What a kind needs beyond that (a PK structure, the
tumour model's parameters and drivers) belongs to the model that reads the card, so each model
registers its kind here::

    register_kind("tumor", structure=("model", "time_unit", "size_unit"),
                  example="models/sclc_triplet_tgi.toml", check=check_card)

The loader thus imports nothing above it. The package root names the module that registers each
built-in kind (:func:`declare_provider`); that module is imported the first time a card of its
kind is loaded.
"""

from __future__ import annotations

import importlib

__all__ = ["CardKind", "register_kind", "declare_provider", "card_kind", "known_kinds"]


class CardKind:
    """One kind of card (a plain class: this module is imported by ``import pkpd`` and must stay
    light).

    ``structure``: the ``[structure]`` keys a card of this kind must have. ``check(raw, where)``:
    the kind's own checks of a raw card (raise :class:`~pkpd.errors.ModelError`). ``model(card)``:
    builds the model object a :class:`~pkpd.cards.Card` of this kind describes (``None`` when the
    kind has no such object)."""

    __slots__ = ("name", "structure", "example", "check", "model")

    def __init__(self, name: str, structure=(), example: str = "", check=None, model=None):
        self.name = str(name).lower()
        self.structure = tuple(structure)
        self.example = example
        self.check = check
        self.model = model

    def __repr__(self) -> str:
        return f"CardKind({self.name!r}, structure={self.structure!r})"


_KINDS: dict[str, CardKind] = {}
_PROVIDERS: dict[str, str] = {}


def register_kind(name: str, *, structure=(), example: str = "", check=None,
                  model=None) -> CardKind:
    """Register (or replace) the card kind ``name``; returns it."""
    kind = CardKind(name, structure, example, check, model)
    _KINDS[kind.name] = kind
    return kind


def declare_provider(kind: str, module: str) -> None:
    """Name the module that registers ``kind`` (imported when a card of that kind is loaded)."""
    _PROVIDERS[str(kind).lower()] = module


def known_kinds() -> list[str]:
    return sorted(set(_KINDS) | set(_PROVIDERS))


def card_kind(name: str, where: str = "card") -> CardKind:
    """The registered kind ``name``, importing its provider if needed."""
    key = str(name).lower()
    if key not in _KINDS and key in _PROVIDERS:
        importlib.import_module(_PROVIDERS[key])
    if key not in _KINDS:
        from ..errors import ModelError

        kinds = " or ".join(repr(k) for k in known_kinds()) or "a registered kind"
        raise ModelError(f"{where}: [card] kind {key!r}. Fix: use {kinds}")
    return _KINDS[key]
