"""Control: ``engine.cancel``, ``pause``/``unpause`` and ``start(on_conflict="terminate_existing")``."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from durable import DurableError, Engine, RunCancelled, RunNotFound, Workflow, step
from durable import events as ev

pytestmark = pytest.mark.anyio


CALLS: Counter[str] = Counter()
GATE: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.clear()
    GATE.update(entered=anyio.Event(), release=anyio.Event())


@step
def first(x: int) -> int:
    CALLS["first"] += 1
    return x + 1


@step
async def held(x: int) -> int:
    """Runs until the test releases it (or cancels it at its await)."""
    CALLS["held"] += 1
    GATE["entered"].set()
    try:
        await GATE["release"].wait()
    except anyio.get_cancelled_exc_class():
        CALLS["held cancelled"] += 1
        raise
    CALLS["held finished"] += 1
    return x + 10


@step
def last(x: int) -> int:
    CALLS["last"] += 1
    return x * 2


flow = Workflow("flow").then(first).then(held).then(last)


async def entered() -> None:
    with anyio.fail_after(5):
        await GATE["entered"].wait()


async def parked(engine: Engine, run_id: str) -> None:
    with anyio.fail_after(5):
        while (await engine.state(run_id)).parked() is None:
            await anyio.sleep(0.01)


def types(history: list[ev.Event]) -> list[str]:
    return [e.type for e in history]


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_stops_a_running_async_step_at_its_await_and_the_run_ends_cancelled(db: Path) -> None:
    async with Engine(db) as engine:
        handle = await engine.start(flow, 1, run_id="r")
        await entered()
        await engine.cancel("r", reason="customer changed their mind")
        with pytest.raises(RunCancelled) as caught:
            await handle.result()
        history = await engine.history("r")
        info = await engine.journal.get_run("r")
    assert caught.value.run_id == "r"
    assert caught.value.reason == "customer changed their mind"
    assert CALLS == {"first": 1, "held": 1, "held cancelled": 1}
    assert types(history)[-2:] == ["step_started", "run_cancelled"]
    last_event = history[-1]
    assert isinstance(last_event, ev.RunCancelled) and last_event.reason == "customer changed their mind"
    assert info is not None and info.status == "cancelled"


async def test_a_cancelled_run_is_never_resumed(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(flow, 1, run_id="r")
        await entered()
        await engine.cancel("r")
    async with Engine(db) as engine:
        assert await engine.recover([flow]) == []
        handle = await engine.resume("r", flow)  # a finished handle: nothing runs
        with pytest.raises(RunCancelled):
            await handle.result()
        with pytest.raises(RunCancelled):
            await engine.run(flow, 1, run_id="r")
    assert CALLS["held"] == 1 and CALLS["last"] == 0


async def test_cancel_waits_for_a_sync_step_to_return_and_starts_nothing_after_it(db: Path) -> None:
    release = threading.Event()
    running = threading.Event()

    @step
    def blocking(x: int) -> int:
        running.set()
        release.wait(5)
        CALLS["blocking returned"] += 1
        return x

    wf = Workflow("sync").then(blocking).then(last)
    async with Engine(db) as engine:
        handle = await engine.start(wf, 1, run_id="r")
        with anyio.fail_after(5):
            while not running.is_set():
                await anyio.sleep(0.01)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.cancel, "r")
            await anyio.sleep(0.05)
            assert (await engine.state("r")).status == "running"  # a thread cannot be interrupted
            release.set()
        with pytest.raises(RunCancelled):
            await handle.result()
        history = await engine.history("r")
    assert CALLS == {"blocking returned": 1}  # 'last' never started
    # the step did run to its end: its completion is journaled, then the cancellation
    assert types(history)[-2:] == ["step_completed", "run_cancelled"]


async def test_cancel_a_parked_run(db: Path) -> None:
    sleeper = Workflow("sleeper").then(first).sleep(30).then(last)
    waiter = Workflow("waiter").then(first).wait_for("go").then(last)
    async with Engine(db) as engine:
        handles = [await engine.start(sleeper, 1, run_id="s"), await engine.start(waiter, 1, run_id="w")]
        await parked(engine, "s")
        await parked(engine, "w")
        with anyio.fail_after(5):
            await engine.cancel("s", reason="no need")
            await engine.cancel("w", reason="no need")
        for handle in handles:
            with pytest.raises(RunCancelled):
                await handle.result()
        for run_id in ("s", "w"):
            state = await engine.state(run_id)
            assert state.status == "cancelled"
            assert state.parked() is None
    assert CALLS["last"] == 0


async def test_cancel_a_run_that_no_engine_is_running_writes_it_to_the_journal(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(flow, 1, run_id="r")
        await entered()
    # another engine (as another process would) cancels the unfinished run in the journal
    async with Engine(db) as other:
        await other.cancel("r", reason="from the console")
    async with Engine(db) as engine:
        history = await engine.history("r")
        assert history[-1].type == "run_cancelled"
        assert await engine.recover([flow]) == []
        with pytest.raises(RunCancelled, match="from the console"):
            await engine.run(flow, run_id="r")


async def test_cancel_refuses_unknown_and_finished_runs(db: Path) -> None:
    async with Engine(db) as engine:
        with pytest.raises(RunNotFound):
            await engine.cancel("nobody")
        assert await engine.run(Workflow("quick").then(first), 1, run_id="done") == 2
        with pytest.raises(DurableError, match="has already completed"):
            await engine.cancel("done")
        with pytest.raises(DurableError, match="has already completed"):
            await engine.pause("done")


# -- pause and unpause ----------------------------------------------------------------------


async def test_pause_takes_effect_at_the_next_top_level_node(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(flow, 1, run_id="r")
        await entered()
        await engine.pause("r", reason="maintenance")
        GATE["release"].set()  # the node in progress finishes
        with anyio.fail_after(5):
            while not (await engine.state("r")).paused:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        state = await engine.state("r")
        history = await engine.history("r")
    assert state.status == "running"
    assert state.nodes["held"].status == "completed"
    assert state.nodes["last"].status == "not_started"  # the next node did not start
    assert types(history)[-2:] == ["step_completed", "run_paused"]
    paused = history[-1]
    assert isinstance(paused, ev.RunPaused) and paused.reason == "maintenance"
    assert CALLS["last"] == 0
    # the pause is in the journal: a restarted engine keeps the run paused until unpause
    async with Engine(db) as engine:
        handle = (await engine.recover([flow]))[0]
        await anyio.sleep(0.1)
        assert CALLS["last"] == 0
        await engine.unpause("r")
        with anyio.fail_after(5):
            assert await handle.result() == 24
        history = await engine.history("r")
    assert types(history).count("run_unpaused") == 1
    assert CALLS == {"first": 1, "held": 1, "held finished": 1, "last": 1}


async def test_pause_lets_the_rest_of_a_node_in_progress_finish(db: Path) -> None:
    @step
    def tail(x: int) -> int:
        CALLS["tail"] += 1
        return x

    wf = Workflow("routed").route(lambda x: "go").branch("go", held, tail).end().then(last)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        await entered()
        await engine.pause("r")
        GATE["release"].set()
        with anyio.fail_after(5):
            while not (await engine.state("r")).paused:
                await anyio.sleep(0.01)
        state = await engine.state("r")
    assert CALLS["tail"] == 1  # inside the route's branch: the route is one top-level node
    assert state.nodes["route-1"].status == "completed"
    assert CALLS["last"] == 0


async def test_a_sleeping_run_paused_stays_paused_after_its_time_until_unpaused(db: Path) -> None:
    wf = Workflow("nap").then(first).sleep(0.1).then(last)
    async with Engine(db) as engine:
        handle = await engine.start(wf, 1, run_id="r")
        await parked(engine, "r")
        await engine.pause("r", reason="hold on")
        await anyio.sleep(0.3)  # past the sleep's end
        assert CALLS["last"] == 0
        assert (await engine.state("r")).paused
        await engine.unpause("r")
        with anyio.fail_after(5):
            assert await handle.result() == 4
        history = await engine.history("r")
    assert types(history).count("run_paused") == 1
    assert types(history).count("run_unpaused") == 1


async def test_pause_and_unpause_of_a_run_no_engine_runs_go_to_the_journal(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(flow, 1, run_id="r")
        await entered()
    GATE["release"].set()
    async with Engine(db) as other:
        await other.pause("r", reason="later")
        await other.pause("r", reason="twice")  # already paused: nothing more is written
        assert (await other.state("r")).paused
    async with Engine(db) as engine:
        handle = (await engine.recover([flow]))[0]
        await anyio.sleep(0.1)
        assert CALLS["held"] == 1  # paused in the journal: it parked before running anything
        await engine.unpause("r")
        with anyio.fail_after(5):
            assert await handle.result() == 24
        history = await engine.history("r")
    assert types(history).count("run_paused") == 1


# -- on_conflict="terminate_existing" --------------------------------------------------------


async def test_terminate_existing_cancels_the_old_run_and_starts_id_tilde_n(db: Path) -> None:
    async with Engine(db) as engine:
        old = await engine.start(flow, 1, run_id="order")
        await entered()
        new = await engine.start(flow, 5, run_id="order", on_conflict="terminate_existing")
        assert new.run_id == "order~2"
        with pytest.raises(RunCancelled, match="superseded by 'order~2'"):
            await old.result()
        GATE["release"].set()
        assert await new.result() == 32
        third = await engine.start(flow, 7, run_id="order", on_conflict="terminate_existing")
        assert third.run_id == "order~3"
        assert await third.result() == 36
        statuses = {r.run_id: r.status for r in await engine.list_runs()}
    assert statuses == {"order": "cancelled", "order~2": "completed", "order~3": "completed"}


async def test_terminate_existing_cancels_the_latest_unfinished_successor(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(flow, 1, run_id="order")
        await entered()
        second = await engine.start(flow, 2, run_id="order", on_conflict="terminate_existing")
        with anyio.fail_after(5):
            while (await engine.state("order~2")).nodes["held"].status != "running":
                await anyio.sleep(0.01)
        third = await engine.start(flow, 3, run_id="order", on_conflict="terminate_existing")
        with pytest.raises(RunCancelled, match="superseded by 'order~3'"):
            await second.result()
        GATE["release"].set()
        assert await third.result() == 28
        statuses = {r.run_id: r.status for r in await engine.list_runs()}
    assert statuses == {"order": "cancelled", "order~2": "cancelled", "order~3": "completed"}


async def test_control_needs_a_known_run(db: Path) -> None:
    async with Engine(db) as engine:
        for action in (engine.pause, engine.unpause):
            with pytest.raises(RunNotFound):
                await action("nobody")
