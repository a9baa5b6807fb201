"""Every node kind of the language is part of the definition hash and shows in a run's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from durable import DefinitionMismatch, Engine, LoopResult, Workflow, again, done, step
from durable import events as ev
from durable.definition import definition_changes

pytestmark = pytest.mark.anyio


@step
def start(x: int) -> int:
    return x


@step
def spread(x: int) -> list[int]:
    return [x, x + 1]


@step
def inc(x: int) -> int:
    return x + 1


@step
def twice(x: int) -> int:
    return x * 2


@step
def count_up(x: int) -> LoopResult:
    return again(x + 1) if x < 2 else done(x)


@step
def total(xs: Any) -> int:
    return sum(xs) if isinstance(xs, list) else int(xs)


def parity(x: int) -> str:
    return "even" if x % 2 == 0 else "odd"


child = Workflow("child").then(inc)
BASE = Workflow("w").then(start)

# each variant adds one node kind (or changes one setting of it) to BASE
VARIANTS: dict[str, Workflow] = {
    "route": BASE.route(parity).branch("even", inc).default(),
    "route, another branch": BASE.route(parity).branch("even", inc).branch("odd", twice).default(),
    "route, no default": BASE.route(parity).branch("even", inc).branch("odd", twice).end(),
    "loop": BASE.loop(count_up, max_iterations=5),
    "loop, other bound": BASE.loop(count_up, max_iterations=6),
    "loop, on_max exit": BASE.loop(count_up, max_iterations=5, on_max="exit"),
    "map": BASE.then(spread).map(inc),
    "map, concurrency": BASE.then(spread).map(inc, concurrency=2),
    "child": BASE.then(child),
    "child, changed": BASE.then(Workflow("child").then(twice)),
    "sleep": BASE.sleep(0.01),
    "sleep, longer": BASE.sleep(0.02),
    "wait": BASE.wait_for("go"),
    "wait, timeout": BASE.wait_for("go", timeout=5),
    "wait, default": BASE.wait_for("go", timeout=5, default=0),
}


def test_every_node_kind_and_setting_changes_the_definition_hash() -> None:
    hashes = {name: wf.definition_hash for name, wf in VARIANTS.items()}
    hashes["base"] = BASE.definition_hash
    assert len(set(hashes.values())) == len(hashes), hashes


def test_the_hash_ignores_function_bodies_and_is_stable() -> None:
    def parity(x: int) -> str:  # the same name, another body
        return "odd"

    again_built = BASE.route(parity).branch("even", inc).default()
    assert again_built.definition_hash == VARIANTS["route"].definition_hash


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("loop", "loop, other bound", "node 'loop-1' changed: max_iterations 5 -> 6"),
        ("map", "map, concurrency", "node 'inc' changed: concurrency None -> 2"),
        ("sleep", "sleep, longer", "node 'sleep-1' changed: seconds 0.01 -> 0.02"),
        ("wait", "wait, timeout", "node 'go' changed: timeout None -> 5.0"),
        ("route", "route, another branch", "node 'twice' was added at branch 'odd' of 'route-1', position 1"),
    ],
)
def test_definition_changes_name_what_changed_in_the_new_kinds(old: str, new: str, expected: str) -> None:
    changes = definition_changes(VARIANTS[old].canonical(), VARIANTS[new].canonical())
    assert expected in changes, changes


async def test_resuming_under_a_changed_loop_bound_is_refused(tmp_path: Path) -> None:
    gate = {"block": True}
    entered = anyio.Event()

    @step
    async def slow_count(x: int) -> LoopResult:
        if gate["block"]:
            entered.set()
            await anyio.sleep_forever()
        return done(x)

    v1 = Workflow("bounded").loop(slow_count, max_iterations=3)
    v2 = Workflow("bounded").loop(slow_count, max_iterations=4)
    async with Engine(tmp_path / "d.db") as engine:
        await engine.start(v1, 1, run_id="r")
        with anyio.fail_after(5):
            await entered.wait()
    gate["block"] = False
    async with Engine(tmp_path / "d.db") as engine:
        with pytest.raises(DefinitionMismatch, match="max_iterations 3 -> 4"):
            await engine.resume("r", v2)
        assert await engine.run(v1, run_id="r") == 1


async def test_every_node_kind_appears_in_the_history(tmp_path: Path) -> None:
    wf = (
        Workflow("everything")
        .then(start)
        .route(parity)
        .branch("even", inc)
        .default()
        .loop(count_up, max_iterations=5)
        .then(spread)
        .map(twice, concurrency=2)
        .then(total)
        .then(child)
        .sleep(0.01)
        .wait_for("go", timeout=5, default=0)
        .then(inc, name="finish")
    )
    async with Engine(tmp_path / "all.db") as engine:
        handle = await engine.start(wf, 0, run_id="r")
        with anyio.fail_after(5):
            while "wait" not in {n.kind for n in [(await engine.state("r")).parked()] if n is not None}:
                await anyio.sleep(0.01)
        await engine.signal("r", "go", 100)
        with anyio.fail_after(5):
            assert await handle.result() == 101
        history = await engine.history("r")
    seen = {e.type for e in history}
    assert {
        "route_chosen",
        "loop_iterated",
        "map_started",
        "child_started",
        "sleep_started",
        "wait_started",
        "signal_received",
        "node_completed",
    } <= seen
    completed = [e.node for e in history if isinstance(e, ev.NodeCompleted)]
    assert completed == ["route-1", "loop-1", "twice", "child", "sleep-1", "go"]
    first = history[0]
    assert isinstance(first, ev.RunStarted)
    assert [n["kind"] for n in first.definition["nodes"]] == [
        "step",
        "route",
        "loop",
        "step",
        "map",
        "step",
        "child",
        "sleep",
        "wait",
        "step",
    ]
