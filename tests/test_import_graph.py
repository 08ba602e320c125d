"""No import cycle among extproc's modules (generated code aside).

The graph is read from the source with `ast`, not by importing: an edge is a module-level
import of an extproc module, including those under `if TYPE_CHECKING:` (a cycle that only
type checking sees is still two modules that cannot be understood one without the other).
Imports inside functions do not count: they run later, and are how a module defers a heavy
or optional dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "extproc"
GENERATED = PACKAGE / "_gen"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports run at import time: the body's, and those in its if/try/with blocks (the
    `if TYPE_CHECKING:` block among them), not those in functions or classes."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            found += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level(node.body) + _module_level(node.orelse)
            found += _module_level(node.finalbody)
            for handler in node.handlers:
                found += _module_level(handler.body)
        elif isinstance(node, ast.With):
            found += _module_level(node.body)
    return found


def imported_modules(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The extproc modules `path` imports at module level. `from a.b import c` is the module
    a.b.c when that is a module, else a.b."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names]
            candidates = [c if c in modules else base for c in candidates]
        for candidate in candidates:
            # `import a.b.c` imports a, a.b and a.b.c; the deepest one we know is the edge.
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not candidate.startswith("extproc._gen"):
                targets.add(candidate)
    return targets


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if GENERATED not in p.parents]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in sorted(paths)}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each
    given as a path that returns to its start; `cycle_groups` has the whole components."""
    return [_cycle_within(component, graph) for component in cycle_groups(graph)]


def cycle_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_within(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in component {component}")


def test_the_reader_sees_the_imports_that_count(tmp_path: Path) -> None:
    """The graph reader itself: which imports make an edge."""
    package = tmp_path / "extproc"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__", "a", "b", "c", "d", "e", "sub/__init__", "sub/f"):
        (package / f"{name}.py").touch()
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import extproc.b\n"
        "from extproc import c\n"
        "from .sub import f\n"
        "if TYPE_CHECKING:\n"
        "    from extproc.d import Thing\n"
        "def later():\n"
        "    import extproc.e\n"
    )
    modules = {module_name(p, tmp_path) for p in package.rglob("*.py")}
    assert module_name(package / "sub" / "__init__.py", tmp_path) == "extproc.sub"
    found = imported_modules(package / "a.py", modules, tmp_path)
    assert found == {"extproc.b", "extproc.c", "extproc.sub.f", "extproc.d"}
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z", "x"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def describe(graph: dict[str, set[str]]) -> str:
    lines = []
    for group in cycle_groups(graph):
        lines.append(" -> ".join(_cycle_within(group, graph)))
        lines.append(f"    (all of {', '.join(group)} reach each other)")
    return "import cycles:\n" + "\n".join(lines)


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert not cycle_groups(graph), describe(graph)
