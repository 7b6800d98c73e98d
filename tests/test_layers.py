"""The package's import graph: library modules import only downward and never a stage.

Every `import` of a crystalrl module counts, those inside functions too (a lazy import
still ties the modules together). A package's `__init__` and its own submodules count as
separate modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    modules = {_module_name(p): p for p in (SRC / "crystalrl").rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}".rstrip(".")
                # `from pkg import mod` imports the submodule; `from mod import name` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:  # `import crystalrl.x.y` -> the deepest module that exists
                    t = t.rpartition(".")[0]
                if t.startswith("crystalrl") and t != name:
                    g.add_edge(name, t)
    return g


def test_library_modules_never_import_a_stage():
    g = import_graph()
    bad = [(a, b) for a, b in g.edges if b.startswith("crystalrl.stages") and not a.startswith("crystalrl.stages")]
    assert not bad, f"library modules importing stages: {bad}"


def test_import_graph_has_no_cycle():
    g = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_sees_lazy_and_relative_imports():
    """The checks above can fail: the graph holds imports made inside functions and relative ones."""
    g = import_graph()
    assert g.has_edge("crystalrl.stages.ppo", "crystalrl.rl.ppo")
    assert g.has_edge("crystalrl.model.store", "crystalrl.model.transformer")
    assert any(a.startswith("crystalrl.mlip.") and b.startswith("crystalrl.mlip") for a, b in g.edges)
