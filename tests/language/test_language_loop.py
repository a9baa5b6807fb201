"""Loops: ``.loop(body, max_iterations=, on_max=)`` with ``again()`` / ``done()``, on real SQLite files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import DefinitionError, Engine, LoopExhausted, LoopResult, RunFailed, Workflow, again, done, step
from durable import events as ev
from durable.testing import SimulatedCrash, crash_at

pytestmark = pytest.mark.anyio


CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def _count() -> None:
    CALLS[durable.context().node] += 1


@step
def count_to_five(x: int) -> LoopResult:
    _count()
    return again(x + 1) if x + 1 < 5 else done(x + 1)


@step
def forever(x: int) -> LoopResult:
    _count()
    return again(x + 1)


@step
def halve(x: int) -> int:
    _count()
    return x // 2


@step
def keep_halving(x: int) -> LoopResult:
    _count()
    return again(x) if x > 1 else done(x)


@step
def describe(x: int) -> str:
    return f"loop gave {x}"


# -- running ---------------------------------------------------------------------------------


async def test_again_runs_another_iteration_and_done_ends_the_loop_with_its_value(db: Path) -> None:
    wf = Workflow("count").loop(count_to_five, max_iterations=10).then(describe)
    async with Engine(db) as engine:
        assert await engine.run(wf, 0, run_id="r") == "loop gave 5"
        history = await engine.history("r")
    assert CALLS == {f"count_to_five#{i}": 1 for i in range(1, 6)}
    iterated = [e for e in history if isinstance(e, ev.LoopIterated)]
    assert [(e.node, e.iteration, e.again, e.value) for e in iterated] == [
        ("loop-1", 1, True, 1),
        ("loop-1", 2, True, 2),
        ("loop-1", 3, True, 3),
        ("loop-1", 4, True, 4),
        ("loop-1", 5, False, 5),
    ]
    done_events = [e for e in history if isinstance(e, ev.NodeCompleted)]
    assert [(e.node, e.output) for e in done_events] == [("loop-1", 5)]
    # each iteration's step is journaled under its own name
    assert [e.node for e in history if isinstance(e, ev.StepCompleted)][:5] == [
        f"count_to_five#{i}" for i in range(1, 6)
    ]


async def test_a_body_of_several_steps_runs_them_in_order_in_every_iteration(db: Path) -> None:
    wf = Workflow("halving").loop(halve, keep_halving, max_iterations=20, name="halving")
    async with Engine(db) as engine:
        assert await engine.run(wf, 100, run_id="r") == 1
        history = await engine.history("r")
    # 100 -> 50 -> 25 -> 12 -> 6 -> 3 -> 1
    started = [e.node for e in history if isinstance(e, ev.StepStarted)]
    assert started == [n for i in range(1, 7) for n in (f"halve#{i}", f"keep_halving#{i}")]
    assert [e.value for e in history if isinstance(e, ev.LoopIterated)] == [50, 25, 12, 6, 3, 1]


async def test_max_iterations_with_on_max_fail_fails_the_run_with_loop_exhausted(db: Path) -> None:
    wf = Workflow("bounded").loop(forever, max_iterations=3)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, 0, run_id="r")
        history = await engine.history("r")
    assert caught.value.error_type == "LoopExhausted"
    assert caught.value.node == "loop-1"
    assert isinstance(caught.value.__cause__, LoopExhausted)
    assert caught.value.__cause__.max_iterations == 3
    assert "on_max='exit'" in str(caught.value)
    assert CALLS == {"forever#1": 1, "forever#2": 1, "forever#3": 1}
    assert history[-1].type == "run_failed"


async def test_max_iterations_with_on_max_exit_goes_on_with_the_last_value(db: Path) -> None:
    wf = Workflow("bounded-exit").loop(forever, max_iterations=3, on_max="exit").then(describe)
    async with Engine(db) as engine:
        assert await engine.run(wf, 10, run_id="r") == "loop gave 13"
    assert CALLS == {"forever#1": 1, "forever#2": 1, "forever#3": 1}


async def test_a_body_that_does_not_return_again_or_done_fails_the_run_with_a_clear_error(db: Path) -> None:
    @step
    def forgetful(x: int) -> int:
        return x + 1

    wf = Workflow("forgetful").loop(forgetful, max_iterations=5)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, 1, run_id="r")
    message = str(caught.value)
    assert caught.value.node == "loop-1"
    assert "returned 2" in message
    assert "durable.again(value)" in message and "durable.done(value)" in message


def test_loop_definitions_are_checked_when_built() -> None:
    with pytest.raises(DefinitionError, match="needs a body"):
        Workflow("w").loop(max_iterations=3)
    with pytest.raises(DefinitionError, match="max_iterations must be 1 or more"):
        Workflow("w").loop(forever, max_iterations=0)
    with pytest.raises(DefinitionError, match="max_iterations must be 1 or more"):
        Workflow("w").loop(forever, max_iterations=True)
    with pytest.raises(DefinitionError, match="on_max must be 'fail' or 'exit'"):
        Workflow("w").loop(forever, max_iterations=3, on_max="stop")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="already exists"):
        Workflow("w").loop(forever, max_iterations=3).loop(forever, max_iterations=3)


def test_again_and_done_build_loop_results() -> None:
    assert again(3) == LoopResult(again=True, value=3)
    assert done() == LoopResult(again=False, value=None)


# -- crash and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
async def test_a_crash_in_iteration_k_resumes_at_iteration_k(db: Path, k: int) -> None:
    wf = Workflow("count").loop(count_to_five, max_iterations=10)
    # "in_step": the k-th step returned, and the process died before its completion was recorded
    with crash_at("in_step", k), pytest.raises(SimulatedCrash):
        async with Engine(db) as engine:
            await engine.run(wf, 0, run_id="r")
    assert CALLS == {f"count_to_five#{i}": 1 for i in range(1, k + 1)}
    async with Engine(db) as engine:
        state = await engine.state("r")
        assert state.nodes["loop-1"].iteration == k - 1  # iterations finished before the crash
        assert await engine.run(wf, run_id="r") == 5
        history = await engine.history("r")
    # earlier iterations were not run again; iteration k ran twice (the crash hit it in flight)
    expected: dict[str, Any] = {f"count_to_five#{i}": 1 for i in range(1, 6)}
    expected[f"count_to_five#{k}"] = 2
    assert CALLS == expected
    assert [e.iteration for e in history if isinstance(e, ev.LoopIterated)] == [1, 2, 3, 4, 5]


async def test_a_crash_between_the_steps_of_an_iteration_keeps_the_completed_ones(db: Path) -> None:
    wf = Workflow("halving").loop(halve, keep_halving, max_iterations=20, name="halving")
    # step arrivals: halve#1, keep_halving#1, halve#2, keep_halving#2 <- crash here
    with crash_at("in_step", 4), pytest.raises(SimulatedCrash):
        async with Engine(db) as engine:
            await engine.run(wf, 100, run_id="r")
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="r") == 1
    assert CALLS["halve#1"] == CALLS["keep_halving#1"] == CALLS["halve#2"] == 1
    assert CALLS["keep_halving#2"] == 2
    assert all(CALLS[f"{n}#{i}"] == 1 for i in range(3, 7) for n in ("halve", "keep_halving"))


async def test_a_completed_loop_is_not_run_again_after_a_crash_later_in_the_run(db: Path) -> None:
    wf = Workflow("count").loop(count_to_five, max_iterations=10).then(describe)
    # arrivals: five loop iterations, then describe <- crash here
    with crash_at("in_step", 6), pytest.raises(SimulatedCrash):
        async with Engine(db) as engine:
            await engine.run(wf, 0, run_id="r")
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="r") == "loop gave 5"
    assert CALLS == {f"count_to_five#{i}": 1 for i in range(1, 6)}
