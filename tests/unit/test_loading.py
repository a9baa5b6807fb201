"""Loading workflows from ``pkg.module:attr`` references (``durable check``, ``durable fork --definition``)."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable import DurableError, Workflow
from durable._loading import load_workflows, parse_ref

MODULE = """
from durable import Workflow, step

@step
def one(x: int) -> int:
    return x + 1

@step
def two(x: int) -> int:
    return x * 2

FIRST = Workflow("first").then(one)
SECOND = Workflow("second").then(one).then(two)
AS_LIST = [FIRST, SECOND]
AS_TUPLE = (SECOND,)
AS_DICT = {"a": FIRST, "b": SECOND}
EMPTY = []
MIXED = [FIRST, "second"]
OPEN_FORK = Workflow("open").then(one).fork().branch(two)
NUMBER = 42

class Registry:
    checkout = SECOND

def factory():
    return FIRST
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh current directory holding the module ``<name>.py``; returns the name.

    The directory is not on ``sys.path`` (neither is ``''``): the loader must add it, as
    ``python -m`` does. ``sys.path`` and ``sys.modules`` are restored afterwards.
    """
    name = "flows_" + tmp_path.name.replace("-", "_")
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    before = set(sys.modules)
    yield name
    for module in set(sys.modules) - before:
        del sys.modules[module]


def names(workflows: list[Workflow]) -> list[str]:
    return [w.name for w in workflows]


def test_the_current_directory_is_importable(here: str) -> None:
    assert str(Path.cwd()) not in sys.path
    assert names(load_workflows([f"{here}:FIRST"])) == ["first"]
    assert sys.path[0] == str(Path.cwd())


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("FIRST", ["first"]),
        ("AS_LIST", ["first", "second"]),
        ("AS_TUPLE", ["second"]),
        ("AS_DICT", ["first", "second"]),
        ("Registry.checkout", ["second"]),
    ],
)
def test_a_workflow_or_a_collection_of_them(here: str, attr: str, expected: list[str]) -> None:
    assert names(load_workflows([f"{here}:{attr}"])) == expected


def test_several_references_in_order(here: str) -> None:
    assert names(load_workflows([f"{here}:SECOND", f"{here}:AS_LIST"])) == ["second", "first", "second"]


def test_a_module_in_a_package(here: str, tmp_path: Path) -> None:
    package = tmp_path / f"pkg_{here}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(f"from {here} import SECOND as checkout\n")
    assert names(load_workflows([f"pkg_{here}.flows:checkout"])) == ["second"]


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("NOPE", "{m}:NOPE: '{m}' has no attribute 'NOPE'"),
        ("Registry.nope", "{m}:Registry.nope: '{m}:Registry' has no attribute 'nope'"),
        ("NUMBER", "{m}:NUMBER is an int, not a Workflow; point it at a Workflow, or a list, tuple or dict of them"),
        ("factory", "{m}:factory is the callable factory, not a Workflow"),
        ("Registry", "{m}:Registry is the class Registry, not a Workflow"),
        ("one", "{m}:one is the step 'one' (make it a workflow: Workflow('name').then(step)), not a Workflow"),
        ("EMPTY", "{m}:EMPTY is an empty list; it names no workflow"),
        ("MIXED", "{m}:MIXED[1] is a str, not a Workflow"),
        ("OPEN_FORK", "{m}:OPEN_FORK is a workflow whose fork is still open (close it with .join(step))"),
    ],
)
def test_what_is_not_a_workflow_is_named(here: str, attr: str, message: str) -> None:
    with pytest.raises(DurableError) as caught:
        load_workflows([f"{here}:{attr}"])
    assert message.format(m=here) in str(caught.value)


def test_a_missing_module(here: str) -> None:
    with pytest.raises(DurableError) as caught:
        load_workflows(["no_such_flows:X"])
    message = str(caught.value)
    assert "no_such_flows:X: no module named 'no_such_flows'" in message
    assert str(Path.cwd()) in message and "PYTHONPATH" in message


def test_a_missing_module_in_a_package(here: str) -> None:
    with pytest.raises(DurableError, match=r"no module named 'durable\.nope'"):
        load_workflows(["durable.nope:X"])


def test_a_module_whose_own_import_fails_is_told_apart(here: str, tmp_path: Path) -> None:
    (tmp_path / f"needs_{here}.py").write_text("import not_installed_anywhere\n")
    with pytest.raises(DurableError) as caught:
        load_workflows([f"needs_{here}:X"])
    message = str(caught.value)
    assert f"importing 'needs_{here}' failed: ModuleNotFoundError" in message
    assert "not_installed_anywhere" in message


def test_a_module_that_raises_while_importing(here: str, tmp_path: Path) -> None:
    (tmp_path / f"broken_{here}.py").write_text("raise RuntimeError('config file missing')\n")
    with pytest.raises(DurableError, match=r"importing 'broken_\w+' failed: RuntimeError: config file missing"):
        load_workflows([f"broken_{here}:X"])


@pytest.mark.parametrize(
    "ref", ["shop", "shop:", ":checkout", "shop.py:checkout", "a/shop:checkout", "my-shop:checkout", "shop:a b"]
)
def test_a_malformed_reference(ref: str) -> None:
    with pytest.raises(DurableError, match=r"pkg\.module:attr"):
        parse_ref(ref)


def test_a_file_name_is_refused_with_the_module_name_to_use() -> None:
    with pytest.raises(DurableError, match=r"names a file; name the module instead \('shop:checkout'"):
        parse_ref("docs/examples/shop.py:checkout")


def test_parse_ref() -> None:
    assert parse_ref("app.flows:registry.checkout") == ("app.flows", "registry.checkout")
    assert parse_ref(" shop:checkout ") == ("shop", "checkout")
