"""The public surface: durable.__all__, the error tree, and the step context outside a step."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

import durable
from durable import errors


def _names_bound_in_init() -> set[str]:
    """Every name durable/__init__.py binds at top level, read from its source."""
    tree = ast.parse(Path(durable.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def test_all_is_sorted() -> None:
    assert list(durable.__all__) == sorted(durable.__all__)
    assert len(set(durable.__all__)) == len(durable.__all__)


def test_all_lists_exactly_the_public_names() -> None:
    public_in_module = {
        name
        for name, value in vars(durable).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public_in_source = {
        n
        for n in _names_bound_in_init()
        if not n.startswith("_") and not isinstance(getattr(durable, n, None), types.ModuleType)
    }
    assert set(durable.__all__) == public_in_module
    assert set(durable.__all__) == public_in_source


def test_every_name_in_all_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from durable import *", namespace)  # what users get
    for name in durable.__all__:
        assert namespace[name] is getattr(durable, name)
        assert getattr(namespace[name], "__module__", "durable").startswith("durable")


def test_version_is_a_string() -> None:
    assert isinstance(durable.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", durable.__version__)


# -- errors ------------------------------------------------------------------------------------

ERROR_CLASSES = {
    name: obj for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, BaseException)
}


def _tree_from_docstring() -> dict[str, str | None]:
    """Class name -> parent class name, read from the tree drawn in errors.py's docstring."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column, name)
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^([\s│├└─]*?)([A-Z][A-Za-z]+)\s{2,}\S", line)
        if not match:
            continue  # prose, or a description's continuation line
        column = len(match.group(1))
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((column, match.group(2)))
    return parents


def test_errors_all_lists_every_error_class() -> None:
    assert sorted(errors.__all__) == sorted(ERROR_CLASSES)
    assert list(errors.__all__) == sorted(errors.__all__)


def test_the_docstring_tree_names_every_error_class() -> None:
    drawn = _tree_from_docstring()
    assert set(drawn) == set(ERROR_CLASSES)


def test_the_docstring_tree_matches_the_class_hierarchy() -> None:
    for name, parent in _tree_from_docstring().items():
        cls = ERROR_CLASSES[name]
        if parent is None:
            assert cls is errors.DurableError
        else:
            assert cls.__bases__ == (ERROR_CLASSES[parent],), f"{name} is drawn under {parent}"


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_every_error_derives_from_durable_error(name: str) -> None:
    cls = ERROR_CLASSES[name]
    assert issubclass(cls, errors.DurableError)
    assert issubclass(cls, Exception)  # user code may catch it; stop signals live elsewhere
    assert cls.__doc__, f"{name} says when it is raised"
    assert getattr(durable, name) is cls  # and it is exported


def test_errors_carry_their_identifiers() -> None:
    assert errors.RunNotFound("order-42").run_id == "order-42"
    assert "order-42" in str(errors.RunNotFound("order-42"))
    e = errors.SeqConflict("r", expected=5, actual=7)
    assert (e.run_id, e.expected, e.actual) == ("r", 5, 7)
    f = errors.RunFailed("r", "charge", "ValueError", "boom")
    assert (f.run_id, f.node, f.error_type, f.error_message) == ("r", "charge", "ValueError", "boom")
    assert "'charge'" in str(f) and "ValueError: boom" in str(f)
    t = errors.StepTimeout("charge", 1.5)
    assert (t.node, t.timeout) == ("charge", 1.5)
    assert "1.5s" in str(t)
    s = errors.SerializationError("no", node="n", type_name="set")
    assert (s.node, s.type_name) == ("n", "set")
    m = errors.DefinitionMismatch("r", "aa", "bb", ["step 'x' was added"], "msg")
    assert (m.run_id, m.old_hash, m.new_hash, m.changes) == ("r", "aa", "bb", ["step 'x' was added"])


def test_submodules_stay_importable_by_path() -> None:
    # Some submodules share their name with a function that __init__ re-exports (fold,
    # context); the modules themselves must still be reachable.
    for mod in (
        "fold",
        "context",
        "definition",
        "errors",
        "events",
        "retry",
        "journal",
        "journal.sqlite",
        "engine",
        "cli",
    ):
        assert isinstance(importlib.import_module(f"durable.{mod}"), types.ModuleType)
    assert callable(durable.fold)
    assert callable(durable.context)


# -- context -----------------------------------------------------------------------------------


def test_context_outside_a_step_is_an_error() -> None:
    with pytest.raises(durable.DurableError, match="outside a running step"):
        durable.context()


def test_idempotency_key_is_stable_per_run_and_node() -> None:
    a = durable.StepContext(run_id="order-42", workflow="checkout", node="charge", attempt=1)
    b = durable.StepContext(run_id="order-42", workflow="checkout", node="charge", attempt=3)
    assert a.idempotency_key == b.idempotency_key == "order-42/charge"
