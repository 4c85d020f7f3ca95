"""Model cards: TOML files in ``models/`` holding parameter values, units, IIV, priors and the
literature source of every number.

* :mod:`pkpd.cards.card`: :class:`Card`, :func:`load_card`, :func:`list_cards`;
* :mod:`pkpd.cards.registry`: card kinds. Each model registers what its kind of card needs
  (:func:`register_kind`), so that the loader imports nothing above it.

Imports only the ground modules. Names are loaded on first use, so that ``import pkpd`` stays light.
"""

_EXPORTS = {
    "card": ("Card", "load_card", "list_cards", "models_dir"),
    "registry": ("CardKind", "card_kind", "declare_provider", "known_kinds", "register_kind"),
}
__all__ = ["card", "registry", *(n for names in _EXPORTS.values() for n in names)]


def __getattr__(name: str):
    # pkpd._lazy.attach, written out: ``import pkpd`` imports this package (card kinds) and must
    # not pay for more modules than it needs
    import importlib

    for mod, names in _EXPORTS.items():
        if name == mod or name in names:
            module = importlib.import_module(f"{__name__}.{mod}")
            value = module if name == mod else getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
