"""Durable sleep: ``.sleep("10m")`` parks the run, never wakes it early, and survives restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest

from durable import DefinitionError, Engine, Workflow, step
from durable import events as ev

pytestmark = pytest.mark.anyio


CALLS: Counter[str] = Counter()
WOKE: list[datetime] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    WOKE.clear()


@step
def before(x: int) -> int:
    CALLS["before"] += 1
    return x + 1


@step
def after(x: int) -> str:
    CALLS["after"] += 1
    WOKE.append(ev.utcnow())
    return f"woke with {x}"


@step
def quick(x: int) -> int:
    return x * 2


def napper(seconds: float) -> Workflow:
    return Workflow("napper").then(before).sleep(seconds, name="nap").then(after)


def sleep_started(history: list[ev.Event]) -> ev.SleepStarted:
    found = [e for e in history if isinstance(e, ev.SleepStarted)]
    assert len(found) == 1, found  # exactly once: never re-armed
    return found[0]


def step_started(history: list[ev.Event], node: str) -> ev.StepStarted:
    return next(e for e in history if isinstance(e, ev.StepStarted) and e.node == node)


async def test_an_open_engine_wakes_a_sleeping_run_by_itself_never_early_and_once(db: Path) -> None:
    async with Engine(db) as engine:
        handle = await engine.start(napper(0.3), 1, run_id="r")
        with anyio.fail_after(5):
            assert await handle.result() == "woke with 2"
        history = await engine.history("r")
    nap = sleep_started(history)
    assert nap.node == "nap"
    assert abs(nap.until - nap.ts - timedelta(seconds=0.3)) < timedelta(seconds=0.05)
    # never early: the next step starts at or after the journaled wake-up time
    assert step_started(history, "after").ts >= nap.until
    assert WOKE[0] >= nap.until
    assert CALLS == {"before": 1, "after": 1}
    done = [e for e in history if isinstance(e, ev.NodeCompleted)]
    assert [(e.node, e.output) for e in done] == [("nap", 2)]  # it passes its input on


async def test_a_sleeping_run_holds_no_task_and_blocks_no_other_run(db: Path) -> None:
    async with Engine(db) as engine:
        sleeper = await engine.start(napper(0.6), 1, run_id="sleeper")
        with anyio.fail_after(5):
            while (await engine.state("sleeper")).parked() is None:
                await anyio.sleep(0.01)
        # parked: no task of its own (the engine names each run's task after the run)
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert "durable run sleeper" not in names
        # another run goes from start to end while the first sleeps
        assert await engine.run(Workflow("quick").then(quick), 21, run_id="other") == 42
        assert (await engine.state("sleeper")).status == "running"
        assert CALLS["after"] == 0
        with anyio.fail_after(5):
            assert await sleeper.result() == "woke with 2"


async def test_a_sleep_survives_a_restart_and_recover_wakes_it_on_time(db: Path) -> None:
    wf = napper(0.5)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        with anyio.fail_after(5):
            while (await engine.state("r")).parked() is None:
                await anyio.sleep(0.01)
    # the engine is gone; the wake-up time is in the journal
    async with Engine(db) as engine:
        state = await engine.state("r")
        parked = state.parked()
        assert parked is not None and parked.node == "nap" and parked.status == "sleeping"
        handles = await engine.recover([wf])
        assert [h.run_id for h in handles] == ["r"]
        with anyio.fail_after(5):
            assert await handles[0].result() == "woke with 2"
        history = await engine.history("r")
    nap = sleep_started(history)
    assert step_started(history, "after").ts >= nap.until
    assert CALLS == {"before": 1, "after": 1}


async def test_a_sleep_that_ended_while_no_engine_ran_goes_on_at_once_on_resume(db: Path) -> None:
    wf = napper(0.2)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        with anyio.fail_after(5):
            while (await engine.state("r")).parked() is None:
                await anyio.sleep(0.01)
    await anyio.sleep(0.3)
    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(wf, run_id="r") == "woke with 2"
        history = await engine.history("r")
    nap = sleep_started(history)
    assert step_started(history, "after").ts >= nap.until
    assert CALLS == {"before": 1, "after": 1}


async def test_a_resume_before_the_time_parks_again_without_re_arming_the_sleep(db: Path) -> None:
    wf = napper(0.6)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        with anyio.fail_after(5):
            while (await engine.state("r")).parked() is None:
                await anyio.sleep(0.01)
    async with Engine(db) as engine:
        await engine.resume("r", wf)
        await anyio.sleep(0.05)
        assert (await engine.state("r")).status == "running"
    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(wf, run_id="r") == "woke with 2"
        history = await engine.history("r")
    nap = sleep_started(history)  # one sleep_started in all: the wake-up time never moved
    assert step_started(history, "after").ts >= nap.until
    assert CALLS == {"before": 1, "after": 1}


async def test_several_sleeping_runs_wake_in_the_order_of_their_times(db: Path) -> None:
    async with Engine(db) as engine:
        handles = [await engine.start(napper(s), i, run_id=f"r{i}") for i, s in enumerate([0.4, 0.1, 0.25])]
        with anyio.fail_after(5):
            for h in handles:
                await h.result()
        woke = {}
        for i in range(3):
            history = await engine.history(f"r{i}")
            nap = sleep_started(history)
            woke[i] = step_started(history, "after").ts
            assert woke[i] >= nap.until
    assert woke[1] < woke[2] < woke[0]


def test_sleep_durations_are_checked_when_built() -> None:
    assert Workflow("w").sleep("10m").nodes[0].seconds == 600  # type: ignore[union-attr]
    assert Workflow("w").sleep(timedelta(hours=1)).nodes[0].seconds == 3600  # type: ignore[union-attr]
    with pytest.raises(DefinitionError, match="not a duration"):
        Workflow("w").sleep("soon")
    with pytest.raises(DefinitionError, match="not negative"):
        Workflow("w").sleep(-1)
    with pytest.raises(DefinitionError, match="already exists"):
        Workflow("w").sleep(1).sleep(2, name="sleep-1")
    assert [n.id for n in Workflow("w").sleep(1).sleep(2).nodes] == ["sleep-1", "sleep-2"]


async def test_a_workflow_may_begin_with_a_sleep_and_pass_the_runs_input_on(db: Path) -> None:
    wf = Workflow("starts-asleep").sleep(0.05).then(after)
    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(wf, 9, run_id="r") == "woke with 9"
