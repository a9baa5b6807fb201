"""Ownership inside one process: two engines on one file, a worker beside an engine, the inbox.

Two engines of one process behave as two processes would (each has its own owner name and
its own connections); the multi-process versions are in ``tests/chaos/test_ownership_processes.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import durable
from durable import Engine, InMemoryJournal, RunBusy, RunCancelled, Worker, Workflow, step
from durable.journal.base import Lease
from durable.testing import crash_at

pytestmark = pytest.mark.anyio

CALLS: Counter[str] = Counter()
GATE: dict[str, anyio.Event] = {}


@step
async def slow(x: int) -> int:
    CALLS[f"{durable.context().run_id}/slow"] += 1
    await anyio.sleep(0.3)
    return x + 1


@step
async def gated(x: int) -> int:
    CALLS[f"{durable.context().run_id}/gated"] += 1
    GATE["entered"].set()
    await GATE["release"].wait()
    return x * 10


@step
def done(x: int) -> int:
    return x


FLOW = Workflow("owned").then(slow).then(done)
GATED = Workflow("gated").then(gated)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.update(entered=anyio.Event(), release=anyio.Event())


async def test_a_run_started_by_an_engine_is_created_holding_its_lease(db: Path) -> None:
    async with Engine(db) as engine:
        handle = await engine.start(FLOW, 1, run_id="r")
        info = await engine.journal.get_run("r")
        assert info is not None
        assert (info.lease_owner, info.lease_token, info.lease_pid) == (engine.owner.name, 1, os.getpid())
        assert await handle.result() == 2
        info = await engine.journal.get_run("r")
        assert info is not None and info.lease_owner is None  # a finished run has no owner


async def test_resume_from_a_second_engine_raises_run_busy_naming_the_owner(db: Path) -> None:
    async with Engine(db) as first, Engine(db) as second:
        handle = await first.start(GATED, 1, run_id="r")
        await GATE["entered"].wait()
        with pytest.raises(RunBusy) as busy:
            await second.resume("r", GATED)
        err = busy.value
        assert (err.run_id, err.owner, err.pid) == ("r", first.owner.name, os.getpid())
        assert f"pid {os.getpid()} on {err.host}" in str(err) and "lease until" in str(err)
        GATE["release"].set()
        assert await handle.result() == 10
    assert CALLS["r/gated"] == 1


async def test_run_from_a_second_engine_waits_for_the_owners_result(db: Path) -> None:
    async with Engine(db) as first, Engine(db) as second:
        handle = await first.start(GATED, 2, run_id="r")
        await GATE["entered"].wait()
        async with anyio.create_task_group() as tg:
            results: list[int] = []

            async def wait_in_second() -> None:
                results.append(await second.run(GATED, 2, run_id="r"))

            tg.start_soon(wait_in_second)
            await anyio.sleep(0.2)
            assert results == []  # it waits; it does not run the step
            GATE["release"].set()
        assert results == [await handle.result()] == [20]
    assert CALLS["r/gated"] == 1


async def test_a_crashed_engine_of_this_process_is_taken_over_at_once(db: Path) -> None:
    with pytest.raises(BaseException, match="in_step"), crash_at("in_step"):
        async with Engine(db, lease_ttl=600) as doomed:  # a lease that would outlive the test
            await (await doomed.start(FLOW, 1, run_id="r")).result()
    async with Engine(db) as heir:
        with anyio.fail_after(5):
            assert await heir.run(FLOW, 1, run_id="r") == 2
        info = await heir.journal.get_run("r")
        assert info is not None and info.takeovers == 1
    assert CALLS["r/slow"] == 2  # in flight at the crash: at least once


async def test_recover_skips_runs_another_live_engine_owns(db: Path) -> None:
    async with Engine(db) as first, Engine(db) as second:
        handle = await first.start(GATED, 1, run_id="busy")
        await GATE["entered"].wait()
        report = await second.recover([GATED])
        assert list(report) == []
        [skipped] = report.skipped
        assert (skipped.run_id, skipped.reason) == ("busy", "owned")
        assert first.owner.name.split(":")[0] in skipped.detail or str(os.getpid()) in skipped.detail
        GATE["release"].set()
        assert await handle.result() == 10


async def test_an_unleased_append_into_a_running_run_is_refused(db: Path) -> None:
    async with Engine(db) as engine:
        handle = await engine.start(GATED, 1, run_id="r")
        await GATE["entered"].wait()
        info = await engine.journal.get_run("r")
        assert info is not None
        event = durable.events.StepScheduled(seq=info.last_seq + 1, ts=durable.events.utcnow(), node="x", attempt=1)
        with pytest.raises(RunBusy):
            await engine.journal.append("r", [event])
        with pytest.raises(durable.LeaseLost):
            await engine.journal.append("r", [event], lease=Lease("r", "somebody-else", info.lease_token))
        GATE["release"].set()
        assert await handle.result() == 10


async def test_a_cancel_during_the_last_step_ends_the_run_cancelled(db: Path) -> None:
    @step
    def last(x: int) -> int:  # a sync step: the cancel takes effect when its thread returns
        GATE["entered"].set()
        import time

        time.sleep(0.3)
        return x

    wf = Workflow("last").then(last)
    async with Engine(db) as engine:
        handle = await engine.start(wf, 1, run_id="r")
        await GATE["entered"].wait()
        await engine.cancel("r", reason="stop")
        with pytest.raises(RunCancelled):
            await handle.result()
        assert (await engine.state("r")).status == "cancelled"


async def test_a_cancel_from_another_engine_reaches_the_owner_and_frees_its_lease(db: Path) -> None:
    async with Engine(db) as owner, Engine(db) as other:
        handle = await owner.start(GATED, 1, run_id="r")
        await GATE["entered"].wait()
        with anyio.fail_after(5):
            await other.cancel("r", reason="from elsewhere")
        with pytest.raises(RunCancelled, match="from elsewhere"):
            await handle.result()
        info = await other.journal.get_run("r")
        assert info is not None and (info.status, info.lease_owner) == ("cancelled", None)
        last = (await other.history("r"))[-1]
        assert isinstance(last, durable.events.RunCancelled) and last.request is not None  # it applied the request


async def test_a_cancel_that_comes_after_the_end_is_reported_as_too_late(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(FLOW, 1, run_id="r") == 2
        with pytest.raises(durable.DurableError, match="already completed"):
            await engine.cancel("r")


async def test_a_cancelled_worker_run_gives_back_its_workflow_slot_at_once(db: Path) -> None:
    w = Worker(db, [GATED], poll_interval=0.02, workflow_concurrency={"gated": 1}, synchronous="NORMAL")
    async with Engine(db) as engine:
        first = await engine.submit(GATED, 1, run_id="first")
        second = await engine.submit(GATED, 2, run_id="second")
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            with anyio.fail_after(5):
                await GATE["entered"].wait()
                assert CALLS == Counter({"first/gated": 1})  # the cap holds the second back
                GATE["entered"] = anyio.Event()
                async with Engine(db) as other:
                    await other.cancel(first)
                await GATE["entered"].wait()  # the second is claimed as soon as the first is cancelled
                GATE["release"].set()
                assert await engine.wait(second) == 20
            w.stop()
        with pytest.raises(RunCancelled):
            await engine.wait(first)
    assert CALLS == Counter({"first/gated": 1, "second/gated": 1})


async def test_pause_and_unpause_from_another_engine_go_through_the_owner(db: Path) -> None:
    wf = Workflow("two").then(gated).then(done)
    async with Engine(db) as owner, Engine(db) as other:
        handle = await owner.start(wf, 1, run_id="r")
        await GATE["entered"].wait()
        await other.pause("r", reason="hold on")  # delivered to the owner's inbox; applied at its next node
        with anyio.fail_after(5):
            while owner._live["r"].pause_requested != "hold on":
                await anyio.sleep(0.01)
        GATE["release"].set()
        with anyio.fail_after(5):
            while not (await other.state("r")).paused:
                await anyio.sleep(0.01)
        nodes = (await other.state("r")).nodes
        assert "done" not in nodes or nodes["done"].status == "not_started"  # paused before its next node
        await other.unpause("r")
        with anyio.fail_after(5):
            assert await handle.result() == 10
        types = [e.type for e in await other.history("r")]
        assert types.count("run_paused") == types.count("run_unpaused") == 1


# -- regressions found by review ------------------------------------------------------------


class _SlowSleepCommit(InMemoryJournal):
    """Holds the commit of a sleep_started for a moment: a cancel lands while it is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.committing = anyio.Event()

    async def append(self, run_id: str, events: Any, **kwargs: Any) -> None:
        if any(isinstance(e, durable.events.SleepStarted) for e in events):
            self.committing.set()
            await anyio.sleep(0.2)
        await super().append(run_id, events, **kwargs)


async def test_a_cancel_during_the_commit_before_parking_is_not_lost() -> None:
    journal = _SlowSleepCommit()
    async with Engine(journal) as engine:
        handle = await engine.start(Workflow("pc").then(done).sleep(3600), 1, run_id="r")
        await journal.committing.wait()
        with anyio.fail_after(5):
            await engine.cancel("r", reason="stop")
        with pytest.raises(RunCancelled):
            await handle.result()
        assert (await engine.state("r")).status == "cancelled"


async def test_a_cancel_found_in_the_inbox_on_resume_cancels_the_running_children_too() -> None:
    @step
    async def forever(x: int) -> int:
        GATE["entered"].set()
        await anyio.sleep(3600)
        return x

    child = Workflow("c").then(forever)
    parent = Workflow("p").then(child)
    journal = InMemoryJournal()
    async with Engine(journal) as first:
        await first.start(parent, 1, run_id="p")
        await GATE["entered"].wait()
        await journal.send_signal("p", "__control__", {"op": "cancel", "reason": "stop"})  # never applied
    async with Engine(journal) as second:
        report = await second.recover([parent, child])
        with pytest.raises(RunCancelled):
            await report[0].result()
        statuses = {r.run_id: r.status for r in await journal.list_runs()}
    assert statuses == {"p": "cancelled", "p/c": "cancelled"}


async def test_an_old_request_is_not_applied_again_after_direct_controls() -> None:
    wf = Workflow("st").then(done).then(done, name="again")
    journal = InMemoryJournal()
    async with Engine(journal) as engine:
        await engine.submit(wf, 1, run_id="r")
        await journal.send_signal("r", "__control__", {"op": "pause", "reason": "old"})  # its owner died first
        await engine.pause("r", reason="direct")  # nobody owns it: applied at once
        await engine.unpause("r")
        with anyio.fail_after(5):
            assert await (await engine.resume("r", wf)).result() == 1  # not paused again by the old request


async def test_an_owner_name_given_twice_does_not_take_runs_from_a_live_process() -> None:
    from durable._ownership import HOST, Leases
    from durable.journal.base import Owner

    journal = InMemoryJournal()
    elsewhere = Owner("replica-1", HOST, 1)  # the same name, in another live process of this host (pid 1)
    first = durable.events.RunStarted(
        seq=1, ts=durable.events.utcnow(), workflow="w", version="1", definition_hash="h", definition={}, input=None
    )
    await journal.append("x", [first], lease=Lease("x", "replica-1", 1), owner=elsewhere, ttl=60)
    here = Leases(journal, Owner("replica-1", HOST, os.getpid()), 10.0, {}, lambda run: None)
    with pytest.raises(RunBusy):  # the name alone does not make the lease ours
        await here.acquire("x")
