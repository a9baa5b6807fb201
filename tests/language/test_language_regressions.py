"""Regression tests for the workflow language (each failed before its fix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from durable import DefinitionError, Engine, RunCancelled, Workflow, step

pytestmark = pytest.mark.anyio


@step
def inc(x: int) -> int:
    return x + 1


async def parked(engine: Engine, run_id: str) -> None:
    with anyio.fail_after(5):
        while (await engine.state(run_id)).parked() is None:
            await anyio.sleep(0.01)


# 1. engine.pause() while a step runs, then unpause(): the run pauses again at once
async def test_unpause_lets_a_run_go_on_that_was_paused_while_running(tmp_path: Path) -> None:
    release = anyio.Event()

    @step
    async def held(x: int) -> int:
        await release.wait()
        return x

    wf = Workflow("w").then(held).then(inc)
    async with Engine(tmp_path / "db") as engine:
        handle = await engine.start(wf, 1, run_id="r")
        await anyio.sleep(0.05)
        await engine.pause("r")
        release.set()
        with anyio.fail_after(5):
            while not (await engine.state("r")).paused:
                await anyio.sleep(0.01)
        await engine.unpause("r")
        with anyio.fail_after(2):  # hangs: run_paused, run_unpaused, run_paused
            assert await handle.result() == 2


# 3. wait_for(default=<a truthy non-dict>) crashes run_started's fold (and definition_changes)
async def test_a_wait_with_a_string_default_can_run(tmp_path: Path) -> None:
    wf = Workflow("w").wait_for("go", timeout=0.1, default="late")
    async with Engine(tmp_path / "db") as engine:
        assert await engine.run(wf, 1, run_id="r") == "late"  # AttributeError: 'str' object has no attribute 'get'


def test_definition_changes_of_a_wait_with_a_default() -> None:
    from durable.definition import definition_changes

    a = Workflow("w").wait_for("go", timeout=1, default={"x": 1}).canonical()
    b = Workflow("w").wait_for("go", timeout=2, default={"x": 1}).canonical()
    assert definition_changes(a, b)  # KeyError: 'name'


# 4. cancel from another engine (another process) while the run is live in this one
async def test_cancel_from_another_engine_ends_a_run_parked_on_a_signal(tmp_path: Path) -> None:
    wf = Workflow("w").then(inc).wait_for("go").then(inc, name="after")
    async with Engine(tmp_path / "db", signal_poll_interval=0.05) as first:
        handle = await first.start(wf, 1, run_id="r")
        await parked(first, "r")
        async with Engine(tmp_path / "db") as second:
            await second.cancel("r")
        with anyio.fail_after(2), pytest.raises(RunCancelled):  # hangs: the first engine never notices
            await handle.result()


async def test_cancel_from_another_engine_ends_a_running_run_with_run_cancelled(tmp_path: Path) -> None:
    @step
    async def slow(x: int) -> int:
        await anyio.sleep(0.3)
        return x

    wf = Workflow("w").then(slow).then(inc)
    async with Engine(tmp_path / "db") as first:
        handle = await first.start(wf, 1, run_id="r")
        await anyio.sleep(0.1)
        async with Engine(tmp_path / "db") as second:
            await second.cancel("r")
        with anyio.fail_after(2), pytest.raises(RunCancelled):  # actual: SeqConflict
            await handle.result()


async def test_pause_from_another_engine_pauses_a_running_run(tmp_path: Path) -> None:
    @step
    async def slow(x: int) -> int:
        await anyio.sleep(0.3)
        return x

    wf = Workflow("w").then(slow).then(inc)
    async with Engine(tmp_path / "db") as first:
        handle = await first.start(wf, 1, run_id="r")
        await anyio.sleep(0.1)
        async with Engine(tmp_path / "db") as second:
            await second.pause("r")
            await anyio.sleep(0.4)
            await second.unpause("r")
        with anyio.fail_after(3):  # actual: SeqConflict when 'slow' completes
            assert await handle.result() == 2


# 5. a signal committed while the run is between reading its inbox and parking is missed
async def test_a_signal_that_arrives_while_the_run_parks_is_not_missed(tmp_path: Path) -> None:
    wf = Workflow("w").then(inc).wait_for("go").then(inc, name="after")
    keeper = Workflow("k").wait_for("never")
    async with Engine(tmp_path / "db", signal_poll_interval=0.01) as a, Engine(tmp_path / "db") as b:
        await a.start(keeper, 0, run_id="keeper")  # a parked waiter keeps a's poll loop reading
        original = a.journal.read_signals

        async def slow_read(run_id: Any, **kw: Any) -> Any:
            out = await original(run_id, **kw)
            if run_id == "r":  # the run's own look at its inbox; the signal arrives just after it
                await b.signal("r", "go", 1)
                await anyio.sleep(0.05)  # a slow moment: the poll loop reads the signal first
            return out

        a.journal.read_signals = slow_read  # type: ignore[method-assign]
        handle = await a.start(wf, 1, run_id="r")
        with anyio.fail_after(2):  # hangs: the loop's cursor went past the signal before the run parked
            assert await handle.result() == 2


# 6. durations past datetime.max are accepted at definition time and break the run
def test_a_sleep_or_timeout_past_year_9999_is_refused_when_built() -> None:
    with pytest.raises(DefinitionError):
        Workflow("w").sleep("3000000d")  # accepted; the run then raises OverflowError and stays 'running'
    with pytest.raises(DefinitionError):
        Workflow("w").wait_for("go", timeout="3000000d")


# 7. cancelling a parent leaves its child running (Temporal's default is to terminate it)
async def test_cancelling_a_parent_cancels_its_running_child(tmp_path: Path) -> None:
    @step
    async def slow(x: int) -> int:
        await anyio.sleep(0.3)
        return x

    kid = Workflow("kid").then(slow)
    parent = Workflow("par").then(kid)
    async with Engine(tmp_path / "db") as engine:
        await engine.start(parent, 1, run_id="p")
        await anyio.sleep(0.1)
        await engine.cancel("p")
        await anyio.sleep(0.4)
        assert (await engine.state("p/kid")).status == "cancelled"  # actual: completed
