"""The import contract of src/vidsearch: no import cycles, and imports point down the layers only.

Every module is parsed (no import runs); every ``vidsearch`` import counts, at the top of a module,
inside a function (lazy imports) or under ``if TYPE_CHECKING:`` alike. Layers, lowest first; a module
may import modules of its own layer or of a lower one (docs and GUIDE.md: entry points ->
search.Engine -> store, index, encode, compress, search algorithms -> decode -> errors, config):

    L0  errors, config, atomic, encode.registry (the encoder table config validates against)
    L1  decode
    L2  store, index, encode, compress, search (its algorithms: vote, rerank, align, results, ...)
    L3  search.engine, collection, train (build-time: reads store and encode, imported by none of L2)
    L4  cli, serve, distributed, evaluate, and the package itself (vidsearch/__init__.py)

A module is placed by the longest rule naming it or a package above it. A module no rule names fails
the test: add it to LAYERS.

KNOWN_VIOLATIONS lists the breaches that existed when this test was written, each with its reason.
The test fails on any breach not listed, and on a listed one that is gone (delete its line): the
list only shrinks.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "vidsearch"

LAYERS: dict[str, int] = {
    # L0: no vidsearch dependency but each other
    "vidsearch.errors": 0,
    "vidsearch.config": 0,
    "vidsearch.atomic": 0,
    "vidsearch.encode.registry": 0,
    # L1
    "vidsearch.decode": 1,
    # L2: the stages and the search algorithms
    "vidsearch.store": 2,
    "vidsearch.index": 2,
    "vidsearch.encode": 2,
    "vidsearch.compress": 2,
    "vidsearch.search": 2,
    # L3: the engine every entry point searches through, and the collection writer
    "vidsearch.search.engine": 3,
    "vidsearch.collection": 3,
    # build-time training (PyTorch) over stored frame vectors: above store and encode, which it reads, so
    # nothing in store, index, encode or search can import it (their run time needs no torch)
    "vidsearch.train": 3,
    # L4: entry points
    "vidsearch.cli": 4,
    "vidsearch.serve": 4,
    "vidsearch.distributed": 4,
    "vidsearch.evaluate": 4,
    "vidsearch": 4,  # the package __init__ only (its exact name); not a default for new modules
}

# Breaches present when this list was last updated: ("layer" | "cycle", detail) -> reason.
# layer: (importer, imported); cycle: the modules of one strongly connected component, sorted.
KNOWN_VIOLATIONS: dict[tuple[str, tuple[str, ...]], str] = {
}


# ----------------------------------------------------------------------------- the checker


def module_name(path: Path, root: Path) -> str:
    """``root/vidsearch/encode/frame.py`` -> ``vidsearch.encode.frame``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` (a ``src`` folder), by dotted name."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (its ``from`` part), relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(modules: Mapping[str, Path], package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """For each module, the modules of ``package`` it imports anywhere in its body: {imported: first line}.

    ``from vidsearch.x import y`` counts as importing ``vidsearch.x.y`` when that is a module, else
    ``vidsearch.x``. A module importing itself (or its own package from its ``__init__``) is ignored.
    """
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        found: dict[str, int] = {}

        def add(target: str, line: int) -> None:
            if (target == package or target.startswith(package + ".")) and target != name:
                found.setdefault(target, line)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if sub in modules else base, node.lineno)
        graph[name] = found
    return graph


def layer_of(module: str, layers: Mapping[str, int] = LAYERS, package: str = PACKAGE) -> int | None:
    """The layer of the longest rule equal to ``module`` or to a package above it (the root only exactly)."""
    best: tuple[int, int] | None = None
    for rule, layer in layers.items():
        if module == rule or (rule != package and module.startswith(rule + ".")):
            if best is None or len(rule) > best[0]:
                best = (len(rule), layer)
    return None if best is None else best[1]


def layer_violations(graph: Mapping[str, Mapping[str, int]], layers: Mapping[str, int] = LAYERS,
                     package: str = PACKAGE) -> dict[tuple[str, str], str]:
    """{(importer, imported): "importer (Ln) imports imported (Lm) at line k"} for every upward import."""
    out = {}
    for importer, targets in graph.items():
        low = layer_of(importer, layers, package)
        for target, line in targets.items():
            high = layer_of(target, layers, package)
            if low is not None and high is not None and high > low:
                out[(importer, target)] = f"{importer} (L{low}) imports {target} (L{high}) at line {line}"
    return out


def unplaced(modules: Iterable[str], layers: Mapping[str, int] = LAYERS, package: str = PACKAGE) -> list[str]:
    return sorted(m for m in modules if layer_of(m, layers, package) is None)


def import_cycles(graph: Mapping[str, Mapping[str, int]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[tuple[str, ...]] = set()
    counter = 0

    def visit(v: str) -> None:  # recursion depth <= number of modules (a few dozen)
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue  # an import of a module that does not exist: not this test's business
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_path(graph: Mapping[str, Mapping[str, int]], component: tuple[str, ...]) -> str:
    """One closed path through a cycle's modules, with line numbers, for the failure message."""
    members = set(component)
    start = component[0]
    path, seen, v = [start], {start}, start
    while True:
        nxt = sorted(w for w in graph[v] if w in members)
        w = next((w for w in nxt if w == start and len(path) > 1), None) or next((w for w in nxt if w not in seen), nxt[0])
        path.append(f"{w} (line {graph[v][w]} of {v})")
        if w == start or w in seen:
            return " -> ".join(path)
        seen.add(w)
        v = w


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def eager_imports(path: Path, package: str = PACKAGE) -> list[str]:
    """The ``package`` imports that run when the module is imported: module level and class bodies,
    not function bodies nor ``if TYPE_CHECKING:`` blocks."""
    out: list[str] = []

    def walk(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                out.extend(a.name for a in node.names if a.name == package or a.name.startswith(package + "."))
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == package):
                out.append("." * node.level + (node.module or ""))
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, (ast.Try, ast.With, ast.ClassDef)):
                for field in ("body", "orelse", "finalbody"):
                    walk(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    walk(handler.body)

    walk(ast.parse(path.read_text(encoding="utf-8")).body)
    return out


def heavy_parents(modules: Mapping[str, Path], layers: Mapping[str, int] = LAYERS,
                  package: str = PACKAGE) -> list[str]:
    """A module placed below its package's layer (``encode.registry`` in L0, ``encode`` in L2) is
    imported through that package's ``__init__``, which Python runs first: it must import nothing of
    ``package`` when it runs (lazy ``__getattr__`` instead), or the low module drags the package in."""
    out = []
    for name in modules:
        parent = name.rpartition(".")[0]
        if parent in (package, "") or parent not in modules:
            continue
        own, above = layer_of(name, layers, package), layer_of(parent, layers, package)
        if own is not None and above is not None and own < above and (eager := eager_imports(modules[parent], package)):
            out.append(f"{name} (L{own}) is imported through {parent} (L{above}), whose __init__ imports {eager} "
                       f"when it runs; load those names lazily (module __getattr__)")
    return out


def check(root: Path, known: Mapping[tuple[str, tuple[str, ...]], str], layers: Mapping[str, int] = LAYERS,
          package: str = PACKAGE) -> list[str]:
    """Every problem of the tree under ``root`` against the contract: unplaced modules, new breaches,
    listed breaches that are gone. Empty when the contract holds."""
    modules = find_modules(root, package)
    graph = imports_of(modules, package)
    problems = [f"{m} is in no layer: add it (or its package) to LAYERS in tests/test_layers.py"
                for m in unplaced(modules, layers, package)]
    problems += heavy_parents(modules, layers, package)
    found: dict[tuple[str, tuple[str, ...]], str] = {}
    for (importer, target), text in layer_violations(graph, layers, package).items():
        found[("layer", (importer, target))] = text
    for component in import_cycles(graph):
        found[("cycle", component)] = "import cycle: " + cycle_path(graph, component)
    for key in sorted(set(found) - set(known)):
        problems.append(f"new {key[0]} breach: {found[key]}; import downwards (move the shared piece to the lower "
                        f"layer, or pass it in), or import lazily from a higher layer's caller instead")
    for key in sorted(set(known) - set(found)):
        problems.append(f"fixed, delete it from KNOWN_VIOLATIONS: {key} ({known[key]})")
    return problems


# ----------------------------------------------------------------------------- the contract


def test_import_contract_of_vidsearch() -> None:
    problems = check(SRC, KNOWN_VIOLATIONS)
    assert not problems, "\n".join(problems)


def test_every_known_violation_has_a_reason() -> None:
    for key, reason in KNOWN_VIOLATIONS.items():
        assert key[0] in ("layer", "cycle") and len(reason.split()) >= 3, key


# ----------------------------------------------------------------------------- the checker can fail


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture()
def synthetic(tmp_path: Path) -> Path:
    """A tiny vidsearch: errors imports cli inside a function (L0 -> L4); index.a and index.b import each
    other (one of them relatively, one under TYPE_CHECKING); decode imports errors (fine)."""
    return _tree(tmp_path, {
        "vidsearch/__init__.py": "from vidsearch.errors import VidsearchError\n",
        "vidsearch/errors.py": """
            class VidsearchError(Exception):
                def hint(self):
                    from vidsearch import cli
                    return cli.NAME
            """,
        "vidsearch/cli.py": "NAME = 'vidsearch'\nimport vidsearch.index.a\n",
        "vidsearch/decode/__init__.py": "from vidsearch.errors import VidsearchError\n",
        "vidsearch/index/__init__.py": "",
        "vidsearch/index/a.py": "from .b import B\nA = 1\n",
        "vidsearch/index/b.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from vidsearch.index.a import A
            B = 2
            """,
    })


def test_checker_finds_a_layer_violation_and_a_cycle(synthetic: Path) -> None:
    modules = find_modules(synthetic)
    assert set(modules) == {"vidsearch", "vidsearch.errors", "vidsearch.cli", "vidsearch.decode",
                            "vidsearch.index", "vidsearch.index.a", "vidsearch.index.b"}
    graph = imports_of(modules)
    assert graph["vidsearch.errors"] == {"vidsearch.cli": 4}  # `from vidsearch import cli`, inside a function
    assert graph["vidsearch.index.a"] == {"vidsearch.index.b": 1}  # relative import resolved
    assert layer_violations(graph) == {("vidsearch.errors", "vidsearch.cli"):
                                       "vidsearch.errors (L0) imports vidsearch.cli (L4) at line 4"}
    assert import_cycles(graph) == {("vidsearch.index.a", "vidsearch.index.b")}
    problems = check(synthetic, {})
    assert len(problems) == 2
    assert any("new layer breach: vidsearch.errors (L0) imports vidsearch.cli (L4)" in p for p in problems)
    assert any("new cycle breach: import cycle: vidsearch.index.a -> vidsearch.index.b" in p for p in problems)


def test_checker_accepts_listed_breaches_and_flags_fixed_ones(synthetic: Path) -> None:
    known = {("layer", ("vidsearch.errors", "vidsearch.cli")): "the hint needs the program name",
             ("cycle", ("vidsearch.index.a", "vidsearch.index.b")): "a and b share constants"}
    assert check(synthetic, known) == []
    (synthetic / "vidsearch/index/b.py").write_text("B = 2\n")  # the cycle is fixed
    assert check(synthetic, known) == [
        "fixed, delete it from KNOWN_VIOLATIONS: ('cycle', ('vidsearch.index.a', 'vidsearch.index.b')) "
        "(a and b share constants)"]


def test_checker_flags_a_low_module_behind_an_eager_package(synthetic: Path) -> None:
    """encode.registry (L0) lives in encode (L2): encode/__init__ may not import the encoders when it runs."""
    _tree(synthetic, {
        "vidsearch/encode/__init__.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from vidsearch.encode.frame import load  # fine: never runs
            def __getattr__(name):
                from vidsearch.encode import frame  # fine: runs on first use
                return getattr(frame, name)
            """,
        "vidsearch/encode/registry.py": "from vidsearch.errors import VidsearchError\n",
        "vidsearch/encode/frame.py": "from vidsearch.encode.registry import VidsearchError\n",
    })
    known = {("layer", ("vidsearch.errors", "vidsearch.cli")): "listed", ("cycle", ("vidsearch.index.a", "vidsearch.index.b")): "listed"}
    assert check(synthetic, known) == []
    (synthetic / "vidsearch/encode/__init__.py").write_text("from vidsearch.encode.frame import load\n")
    assert check(synthetic, known) == [
        "vidsearch.encode.registry (L0) is imported through vidsearch.encode (L2), whose __init__ imports "
        "['vidsearch.encode.frame'] when it runs; load those names lazily (module __getattr__)"]


def test_checker_flags_a_module_in_no_layer(synthetic: Path) -> None:
    (synthetic / "vidsearch/plugins.py").write_text("")
    assert check(synthetic, {}, layers={k: v for k, v in LAYERS.items()})[0].startswith(
        "vidsearch.plugins is in no layer")
