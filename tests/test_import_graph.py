"""The import graph of ``src/diffcompose``: no circle, ``methods/`` and ``training/`` never import ``cli/``,
``training/`` imports no engine package.

The graph is read from the source with :mod:`ast`, nothing is imported, so an import inside a
function (the project's way to keep torch out of light modules) counts like one at the top.

How an import statement becomes edges (one per module it names):

* ``import a.b.c`` is an edge to ``a.b.c``; ``from a.b import c`` to ``a.b.c`` when that is a
  module of ours, else to ``a.b`` (``c`` is a name defined there). So ``from diffcompose.errors
  import InputError`` is an edge to ``diffcompose.errors``, and ``from diffcompose.training import
  config`` one to ``diffcompose.training.config``.
* A package's ``__init__`` is the module named by the package (``diffcompose.batch``). It is an
  edge target only when it is named itself (``from diffcompose.batch import read_manifest``), not
  for every import of one of its submodules, although Python runs it then too: otherwise every
  module would "import" ``diffcompose/__init__.py`` and the graph would be one circle that says
  nothing about the code. What an ``__init__`` itself imports is its own edges, as for any module.
* Relative imports (``from .x import y``, ``from .. import z``) are resolved against the module's
  package (a package's ``__init__`` is inside its own package).
* Imports of other projects are left out; so are dynamic ones (``importlib.import_module`` of a
  computed name, the registrations' ``"module:function"`` strings): they load engines on demand by
  design and are not edges a reader of the code follows.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "diffcompose"


def module_names(src: Path, root: str) -> dict[str, Path]:
    """Every module of package ``root`` under ``src``: dotted name -> file (a package is its ``__init__.py``)."""
    found = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _base(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"{path}: relative import goes above the top package")
    return ".".join(parts[:len(parts) - (level - 1)])


def imports_of(module: str, path: Path, modules: dict[str, Path], root: str) -> set[str]:
    """The modules of ours that ``module`` (in ``path``) imports anywhere in its body (see the module docstring)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _base(module, path, node.level) + (f".{base}" if base else "")
            named = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in named:
            if name != root and not name.startswith(root + "."):
                continue
            while name not in modules and "." in name:  # ``import a.b.c`` of a name that is not a module
                name = name.rpartition(".")[0]
            if name != module:
                out.add(name)
    return out


def import_graph(src: Path = SRC, root: str = ROOT) -> dict[str, set[str]]:
    modules = module_names(src, root)
    return {name: imports_of(name, path, modules, root) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search, in sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The modules of each circle: the strongly connected parts of ``graph`` with more than one module
    (Tarjan's algorithm). Modules that import each other through any path are in the same part."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while not part or part[-1] != node:
                part.append(stack.pop())
            if len(part) > 1:
                found.append(frozenset(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(graph: dict[str, set[str]], importers: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    """``"a -> b"`` for every edge from a module under one of ``importers`` to one under one of ``targets``."""
    return [f"{a} -> {b}" for a in sorted(graph) if any(_under(a, p) for p in importers)
            for b in sorted(graph[a]) if any(_under(b, t) for t in targets)]


# ----------------------------------------------------------------------------- the reader itself

def test_the_graph_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """On a made-up package: function-level and relative imports are edges, names are not modules,
    parent packages are not edges, and a circle through a function-level import is found."""
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from toy.base import thing\n",
        "base.py": "import os\nthing = 1\n",
        "sub/__init__.py": "from . import leaf\n",
        "sub/leaf.py": "from ..base import thing\nfrom toy import sub\n",
        "sub/other.py": "import toy.sub.leaf\ndef late():\n    from .back import x\n    import json\n",
        "sub/back.py": "x = 1\ndef f():\n    from toy.sub import other\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(tmp_path, "toy")
    assert graph == {
        "toy": {"toy.base"}, "toy.base": set(), "toy.sub": {"toy.sub.leaf"},
        "toy.sub.leaf": {"toy.base", "toy.sub"}, "toy.sub.other": {"toy.sub.leaf", "toy.sub.back"},
        "toy.sub.back": {"toy.sub.other"},
    }
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) in ({"toy.sub", "toy.sub.leaf"},
                                                                          {"toy.sub.back", "toy.sub.other"})
    assert sorted(map(sorted, circles(graph))) == [["toy.sub", "toy.sub.leaf"], ["toy.sub.back", "toy.sub.other"]]
    assert offenders(graph, ("toy.sub",), ("toy.base",)) == ["toy.sub.leaf -> toy.base"]
    graph["toy.sub"].clear()
    graph["toy.sub.back"].clear()
    assert find_cycle(graph) is None and circles(graph) == []


def test_the_graph_covers_the_package_and_its_function_level_imports() -> None:
    graph = import_graph()
    assert {"diffcompose", "diffcompose.cli.main", "diffcompose.training.loop",
            "diffcompose.methods.pbe.train"} <= set(graph)
    # an import inside train(): the data module is loaded only when training starts
    assert "diffcompose.methods.pbe.data" in graph["diffcompose.methods.pbe.train"]
    # ``from diffcompose.training import config as shared`` is an edge to the module, not to the package
    assert graph["diffcompose.methods.anydoor.config"] >= {"diffcompose.training.config"}
    assert "diffcompose.training" not in graph["diffcompose.methods.anydoor.config"]


# ----------------------------------------------------------------------------- the rules

def test_no_import_circle() -> None:
    graph = import_graph()
    new = circles(graph)
    shown = [" -> ".join(find_cycle({m: graph[m] & part for m in part}) or sorted(part)) for part in new]
    assert not new, "import circle(s): " + "; ".join(shown)


def test_methods_and_training_never_import_cli() -> None:
    bad = offenders(import_graph(), (f"{ROOT}.methods", f"{ROOT}.training"), (f"{ROOT}.cli",))
    assert not bad, "imports of cli/ from methods/ or training/: " + ", ".join(bad)


def test_training_imports_no_engine() -> None:
    from diffcompose.methods import ENGINE_PACKAGES

    engines = tuple(f"{ROOT}.methods.{name}" for name in ENGINE_PACKAGES)
    graph = import_graph()
    assert all(e in graph for e in engines), "ENGINE_PACKAGES names a package that is not in src/"
    bad = offenders(graph, (f"{ROOT}.training",), engines)
    assert not bad, "training/ imports engine packages: " + ", ".join(bad)
