"""The house rules of docs/architecture.md, checked by reading the code.

* Layers: a module imports only modules of lower layers (or of its own subpackage). The imports are
  read from the source (every ``import``, function-local ones included), so a lazy import cannot
  hide an upward dependency.
* No import circle: the module graph (same reading) has no cycle, and every module imports alone
  in a fresh interpreter.
* No function is longer than :data:`MAX_FUNCTION_LINES`.
* The old flat module paths of pkpd 0.1 still import, give the moved module itself and warn,
  naming the new path; the documented top-level names resolve.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pkpd"

#: The layers in the order data flows (docs/architecture.md). A module may import modules of a
#: lower layer, and modules of its own subpackage (or, for the ground, other ground modules).
LAYERS = [
    ("ground", ["pkpd.errors", "pkpd.units", "pkpd.io", "pkpd.params", "pkpd._lazy"]),
    ("dosing", ["pkpd.dosing"]),
    ("cards", ["pkpd.cards"]),
    ("pk", ["pkpd.pk"]),
    ("tumour", ["pkpd.tumour"]),
    ("clinical", ["pkpd.clinical"]),
    ("survival", ["pkpd.survival"]),
    ("fit", ["pkpd.fit"]),
    ("design", ["pkpd.design"]),
    ("trial", ["pkpd.trial"]),
    ("plots", ["pkpd.plots"]),
    # later layers go here, each in its own subpackage: safety, report
    ("top", ["pkpd", "pkpd._moved", "pkpd.cli", "pkpd.demo"]),
]

#: The longest function allowed in pkpd/ (issue 14: about 120 lines; 150 at most).
MAX_FUNCTION_LINES = 150


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _layer(module: str) -> tuple[int, str]:
    """(layer index, room): the room is the subpackage (or the module itself at the ground/top)."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if module == pre or (module.startswith(pre + ".") and pre != "pkpd"):
                if best is None or len(pre) > len(best[1]):
                    best = (i, pre)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to "
                             "docs/architecture.md")
    return best


def _imports(module: str) -> set[str]:
    """pkpd modules imported anywhere in ``module`` (absolute names; ``from pkg import mod``
    resolves to the submodule when there is one)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "pkpd"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pkpd":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out |= set(subs) if len(subs) == len(node.names) else {target, *subs}
    out.discard(module)
    return {m for m in out if m in MODULES}


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_is_in_a_layer():
    for m in MODULES:
        _layer(m)


def test_modules_import_only_lower_layers():
    bad = []
    for m, deps in GRAPH.items():
        lm, room = _layer(m)
        for d in sorted(deps):
            ld, droom = _layer(d)
            same_room = droom == room and (LAYERS[lm][0] != "top" or m == "pkpd")
            ground = LAYERS[lm][0] == LAYERS[ld][0] == "ground"
            if ld > lm or (ld == lm and not (same_room or ground or LAYERS[lm][0] == "top")):
                bad.append(f"{m} ({LAYERS[lm][0]}) imports {d} ({LAYERS[ld][0]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_the_module_graph():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_circle():
    """The oracle of the test above: the old cards -> combination -> drivers -> cards circle."""
    old = {"cards": {"combination"}, "combination": {"drivers"}, "drivers": {"cards"}, "pk": set()}
    assert _cycles(old) == [["cards", "combination", "drivers"]]


def test_the_card_loader_imports_nothing_above_it():
    assert {d for m in MODULES if m.startswith("pkpd.cards") for d in GRAPH[m]} <= {
        "pkpd.errors", "pkpd.io", "pkpd.params", "pkpd.units", "pkpd._lazy", "pkpd.cards.card",
        "pkpd.cards.registry"}


def _import_alone(module: str) -> tuple[str, int, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning:pkpd", "-c",
                        f"import {module}"], cwd=ROOT, env=env, capture_output=True, text=True)
    return module, r.returncode, r.stderr.strip().splitlines()[-1:] and r.stderr.strip()[-400:]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [r for r in pool.map(_import_alone, sorted(MODULES)) if r[1] != 0]
    assert not failed, "\n".join(f"{m}: {err}" for m, _, err in failed)


def _function_lengths():
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}"


def test_no_function_is_longer_than_the_limit():
    long = sorted(((n, f) for n, f in _function_lengths() if n > MAX_FUNCTION_LINES), reverse=True)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"


# ---- the public API stays --------------------------------------------------------------------

def test_old_module_paths_warn_and_give_the_moved_module():
    from pkpd._moved import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=rf"{old} has moved to {new}; import {new}"):
            mod = importlib.import_module(old)
        assert mod is importlib.import_module(new)


def test_old_from_imports_still_work():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in ("pkpd.simulate", "pkpd.tumourdata", "pkpd.regimen"):
            sys.modules.pop(name, None)
        from pkpd.regimen import parse_regimen
        from pkpd.simulate import simulate
        from pkpd.tumourdata import read_lesions, read_sdtm

    from pkpd.clinical import read_lesions as rl
    from pkpd.clinical import read_sdtm as rs
    from pkpd.dosing import parse_regimen as pr
    from pkpd.tumour.simulate import simulate as sim

    assert (parse_regimen, simulate, read_lesions, read_sdtm) == (pr, sim, rl, rs)


def test_documented_top_level_and_subpackage_names_resolve():
    import pkpd

    for name in pkpd.__all__:
        assert getattr(pkpd, name) is not None
    for sub in ("dosing", "cards", "pk", "tumour", "clinical", "fit"):
        mod = importlib.import_module(f"pkpd.{sub}")
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"pkpd.{sub}.__all__ names missing: {missing}"
    # pkpd.pk and pkpd.cards were modules in 0.1; their old names are still there
    from pkpd.cards import Card, list_cards, load_card  # noqa: F401
    from pkpd.pk import PKModel, check_domains, default_domain, make_model  # noqa: F401


def test_subpackage_exports_come_from_their_modules():
    for sub in ("dosing", "cards", "pk", "tumour", "clinical", "survival", "trial", "plots"):
        pkg = importlib.import_module(f"pkpd.{sub}")
        for mod, names in pkg._EXPORTS.items():
            module = importlib.import_module(f"pkpd.{sub}.{mod}")
            assert set(names) <= set(module.__all__), (sub, mod)
            for name in names:
                assert getattr(pkg, name) is getattr(module, name)


def test_importing_one_module_does_not_import_its_siblings():
    """Subpackages re-export lazily: the engine alone does not pay for NCA, predict, exposure."""
    code = ("import sys, pkpd.pk.engine, pkpd.dosing.regimen; "
            "print(sorted(m for m in ('pkpd.pk.nca', 'pkpd.pk.predict', 'pkpd.pk.exposure', "
            "'pkpd.dosing.events', 'pkpd.tumour', 'pkpd.clinical') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
