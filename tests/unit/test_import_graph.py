"""The package's import graph: no cycles, and every family keeps to its package.

Only module-level imports count: an import inside a function runs when it is called, which
is how a module reaches a heavier one on purpose (the CLI's demo, for instance).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "durable"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if not target.startswith("durable"):
        return []
    if node.module is None:  # from . import x, y: each is a module of the package
        return [f"{target}.{alias.name}" for alias in node.names]
    return [target]


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom):
                for target in _resolve(name, path.name == "__init__.py", node):
                    while target not in modules and "." in target:  # from .x import function
                        target = target.rsplit(".", 1)[0]
                    if target in modules and target != name:
                        edges.add(target)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules and a.name != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # A package's __init__ importing its own modules is how it re-exports them.
            if node != "durable" and nxt.startswith(node + ".") and (PACKAGE.parent / nxt.replace(".", "/")).exists():
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_never_imports_the_terminal_family() -> None:
    graph = import_graph()
    core = [m for m in graph if not m.startswith(("durable.cli", "durable.testing")) and m != "durable.__main__"]
    for module in core:
        assert not any(t.startswith("durable.cli") for t in graph[module]), f"{module} imports the CLI"


def test_the_journal_family_imports_nothing_of_the_engine() -> None:
    graph = import_graph()
    for module in (m for m in graph if m.startswith("durable.journal")):
        assert not graph[module] & {"durable.engine", "durable._runner", "durable._run", "durable.worker"}, module
