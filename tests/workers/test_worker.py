"""Workers in one process, on real SQLite files: submit and wait, claims, limits, leases, parking, stop.

Each Worker opens its own Engine (its own connections) on the file, as a worker process would.
What ran is read from the side-effect log that every step of ``tests/worker_workflows.py``
writes, and compared with the journal read through a connection of our own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from durable import Engine, InMemoryJournal, Journal, LeaseLost, RunFailed, RunNotFound, SQLiteJournal, Worker
from durable import events as ev

try:
    import worker_workflows as ww
finally:
    sys.path.pop(0)

TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "effects.log"
    monkeypatch.setenv(ww.LOG_ENV, str(log))
    ww.reset_probe()
    return log


def worker(db: Path | Journal, workflows: list[Any], **options: Any) -> Worker:
    options.setdefault("poll_interval", 0.02)
    if not isinstance(db, Journal):
        options.setdefault("synchronous", "NORMAL")  # the semantics are the same; the tests are faster
    return Worker(db, workflows, **options)


@asynccontextmanager
async def working(*workers: Worker) -> AsyncIterator[None]:
    """Run the workers for the duration of the block, then stop them (they drain)."""
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.run)
            try:
                yield
            finally:
                for w in workers:
                    w.stop()


async def submit_all(db: Path, workflow: Any, inputs: list[Any], prefix: str) -> list[str]:
    async with Engine(db, synchronous="NORMAL") as engine:
        return [await engine.submit(workflow, x, run_id=f"{prefix}-{i:02d}") for i, x in enumerate(inputs)]


async def wait_all(engine: Engine, run_ids: list[str]) -> list[Any]:
    return [await engine.wait(run_id, timeout=TIMEOUT) for run_id in run_ids]


async def until(predicate: Any, what: str, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.01)


def executions(effects: Path) -> list[tuple[str, str, int]]:
    return [(run_id, node, attempt) for run_id, node, attempt, _ in ww.read_log(effects)]


# -- submit and wait ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_then_a_worker_runs_it_and_wait_returns_the_decoded_result(db: Path, effects: Path) -> None:
    async with Engine(db) as engine:
        run_id = await engine.submit(ww.receipt, 21, run_id="order-21")
        assert run_id == "order-21"
        assert (await engine.state(run_id)).status == "running"
        assert executions(effects) == []  # submit runs nothing
        w = worker(db, [ww.receipt])
        async with working(w):
            result = await engine.wait(run_id, ww.receipt, timeout=TIMEOUT)
        assert result == ww.Receipt(order=21, total=42)
        assert await engine.wait(run_id) == {"order": 21, "total": 42}  # without the workflow: JSON
        generated = await engine.submit(ww.pipeline, 1)
        assert len(generated) == 32  # a fresh id when none is given
    assert executions(effects) == [("order-21", "make_receipt", 1)]
    assert (w.claimed, w.finished, w.given_up) == (1, 1, 0)


@pytest.mark.anyio
async def test_wait_for_an_unknown_run_raises_run_not_found(db: Path) -> None:
    async with Engine(db) as engine:
        with pytest.raises(RunNotFound):
            await engine.wait("nobody", timeout=1)


@pytest.mark.anyio
async def test_wait_gives_up_after_its_timeout(db: Path) -> None:
    async with Engine(db) as engine:
        run_id = await engine.submit(ww.pipeline, 1)
        started = anyio.current_time()
        with pytest.raises(TimeoutError):
            await engine.wait(run_id, timeout=0.3)
        assert 0.3 <= anyio.current_time() - started < 2
        assert (await engine.state(run_id)).status == "running"


@pytest.mark.anyio
async def test_wait_raises_the_stored_failure(db: Path) -> None:
    async with Engine(db) as engine:
        run_id = await engine.submit(ww.broken, 4)
        async with working(worker(db, [ww.broken])):
            with pytest.raises(RunFailed, match="card 5 declined") as failed:
                await engine.wait(run_id, timeout=TIMEOUT)
    assert failed.value.node == "unreliable"


@pytest.mark.anyio
async def test_a_worker_on_an_in_memory_journal(effects: Path) -> None:
    journal = InMemoryJournal()
    async with Engine(journal) as engine:
        run_ids = [await engine.submit(ww.pipeline, i) for i in range(3)]
        async with working(worker(journal, [ww.pipeline])):
            assert await wait_all(engine, run_ids) == [2, 4, 6]


# -- several workers --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_workers_run_every_run_exactly_once(db: Path, effects: Path) -> None:
    run_ids = await submit_all(db, ww.pipeline, list(range(30)), "p")
    a, b = worker(db, [ww.pipeline], concurrency=4), worker(db, [ww.pipeline], concurrency=4)
    async with Engine(db) as engine, working(a, b):
        results = await wait_all(engine, run_ids)
    assert results == [(i + 1) * 2 for i in range(30)]
    ran = executions(effects)
    assert sorted(ran) == sorted((r, node, 1) for r in run_ids for node in ("add_one", "double"))
    journal = ww.read_journal(db)
    assert ww.execution_problems(journal, ww.read_log(effects)) == []
    assert all(run["takeovers"] == 0 and run["lease_owner"] is None for run in journal.values())
    assert a.claimed + b.claimed == 30
    assert a.claimed > 0 and b.claimed > 0  # both took a share


@pytest.mark.anyio
async def test_claims_follow_creation_order(db: Path) -> None:
    run_ids = await submit_all(db, ww.held, list(range(8)), "one")
    async with Engine(db) as engine, working(worker(db, [ww.held], concurrency=1)):
        await wait_all(engine, run_ids)
    assert ww.probe["order"] == run_ids  # one worker, one at a time: strictly oldest first

    ww.reset_probe()
    run_ids = await submit_all(db, ww.held, list(range(10)), "two")
    a, b = worker(db, [ww.held], concurrency=1), worker(db, [ww.held], concurrency=1)
    async with Engine(db) as engine, working(a, b):
        await wait_all(engine, run_ids)
    # Claims are serialised in the journal, oldest first; two runs in flight may start in either order.
    order = ww.probe["order"]
    assert sorted(order) == run_ids
    assert all(abs(order.index(r) - i) <= 1 for i, r in enumerate(run_ids)), order


@pytest.mark.anyio
async def test_a_worker_runs_at_most_concurrency_runs_at_once(db: Path) -> None:
    run_ids = await submit_all(db, ww.held, list(range(9)), "c")
    async with Engine(db) as engine, working(worker(db, [ww.held], concurrency=3)):
        await wait_all(engine, run_ids)
    assert ww.probe["max"] == 3


@pytest.mark.anyio
async def test_workflow_concurrency_caps_live_runs_across_workers(db: Path, effects: Path) -> None:
    capped_ids = await submit_all(db, ww.capped, list(range(8)), "capped")
    free_ids = await submit_all(db, ww.free, list(range(8)), "free")
    caps = {"capped": 2}
    a = worker(db, [ww.capped, ww.free], concurrency=4, workflow_concurrency=caps)
    b = worker(db, [ww.capped, ww.free], concurrency=4, workflow_concurrency=caps)
    async with Engine(db) as engine, working(a, b):
        await wait_all(engine, capped_ids + free_ids)
    assert ww.probe["max"] == 2  # 8 slots across the two workers, but at most 2 'capped' runs at once
    assert sorted(r for r, *_ in executions(effects)) == sorted(capped_ids + free_ids)


@pytest.mark.anyio
async def test_a_worker_runs_only_the_definitions_it_knows(db: Path, effects: Path) -> None:
    [unknown] = await submit_all(db, ww.other, [5], "other")  # the oldest run: first in line
    known = await submit_all(db, ww.pipeline, list(range(4)), "known")
    async with Engine(db) as engine:
        async with working(worker(db, [ww.pipeline], concurrency=1)):
            assert await wait_all(engine, known) == [2, 4, 6, 8]
            await anyio.sleep(0.2)  # several more polls
            info = await engine.journal.get_run(unknown)
            assert info is not None and info.status == "running" and info.lease_owner is None
            assert info.takeovers == 0
        assert not any(r == unknown for r, *_ in executions(effects))
        async with working(worker(db, [ww.other])):  # a worker that has the code
            assert await engine.wait(unknown, timeout=TIMEOUT) == 10


@pytest.mark.anyio
async def test_old_and_new_definitions_side_by_side(db: Path) -> None:
    async with Engine(db) as engine:
        old = await engine.submit(ww.pricing_v1, 1, run_id="before-deploy")
        new = await engine.submit(ww.pricing_v2, 2, run_id="after-deploy")
        async with working(worker(db, [ww.pricing_v2])):  # the new code only
            assert await engine.wait(new, timeout=TIMEOUT) == "v2:2"
            await anyio.sleep(0.2)
            assert (await engine.state(old)).status == "running"
        async with working(worker(db, [ww.pricing_v1, ww.pricing_v2])):  # old code kept beside it
            assert await engine.wait(old, timeout=TIMEOUT) == "v1:1"


# -- leases and fencing -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "memory"])
def journal(request: pytest.FixtureRequest, db: Path) -> Journal:
    return SQLiteJournal(db, synchronous="NORMAL") if request.param == "sqlite" else InMemoryJournal()


async def claim(journal: Journal, owner: str, ttl: float = 10.0) -> list[Any]:
    return await journal.claim(owner, hashes=[ww.pipeline.definition_hash], limit=1, ttl=ttl)


def next_event(journal_events: list[ev.Event]) -> ev.Event:
    return ev.StepScheduled(seq=journal_events[-1].seq + 1, ts=ev.utcnow(), node="add_one", attempt=1)


@pytest.mark.anyio
async def test_a_stale_lease_holder_cannot_write(journal: Journal) -> None:
    async with Engine(journal) as engine:
        run_id = await engine.submit(ww.pipeline, 1, run_id="fenced")
        [first] = await claim(journal, "A", ttl=0.05)
        assert (first.lease.owner, first.takeovers) == ("A", 0)
        assert await claim(journal, "B") == []  # A's lease is live
        await anyio.sleep(0.1)  # A stalls past its lease ...
        [second] = await claim(journal, "B")  # ... and B takes the run over
        assert second.lease.token > first.lease.token
        assert second.takeovers == 1  # an expired lease counts a takeover
        before, info_before = await journal.read(run_id), await journal.get_run(run_id)

        with pytest.raises(LeaseLost) as lost:  # A comes back and tries to write
            await journal.append(run_id, [next_event(before)], lease=first.lease)
        assert lost.value.run_id == run_id and lost.value.owner == "A"
        assert await journal.read(run_id) == before  # nothing was written
        info = await journal.get_run(run_id)
        assert info is not None and info_before is not None
        assert (info.last_seq, info.lease_owner, info.lease_token) == (info_before.last_seq, "B", second.lease.token)

        await journal.append(run_id, [next_event(before)], lease=second.lease)  # the holder writes
        assert len(await journal.read(run_id)) == len(before) + 1

        assert await journal.renew([first.lease, second.lease], 10.0) == [run_id]  # A's lease is lost
        await journal.release(first.lease)  # a stale release is a no-op
        assert await claim(journal, "C") == []


@pytest.mark.anyio
async def test_release_lets_another_claim_at_once_without_a_takeover(journal: Journal) -> None:
    async with Engine(journal) as engine:
        run_id = await engine.submit(ww.pipeline, 1)
        [first] = await claim(journal, "A")
        await journal.release(first.lease)
        [second] = await claim(journal, "B")
        assert (second.lease.run_id, second.takeovers) == (run_id, 0)
        info = await journal.get_run(run_id)
        assert info is not None and info.takeovers == 0 and info.lease_owner == "B"


@pytest.mark.anyio
async def test_renew_keeps_a_lease_alive_past_its_first_expiry(journal: Journal) -> None:
    async with Engine(journal) as engine:
        await engine.submit(ww.pipeline, 1)
        [held] = await claim(journal, "A", ttl=0.2)
        for _ in range(4):
            await anyio.sleep(0.1)
            assert await journal.renew([held.lease], 0.2) == []
        assert await claim(journal, "B") == []  # 0.4 s later, still A's


# -- sleeping and waiting runs --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_sleeping_run_is_released_and_claimed_again_when_due(db: Path, effects: Path) -> None:
    a, b = worker(db, [ww.sleeper]), worker(db, [ww.sleeper])
    async with Engine(db) as engine, working(a, b):
        run_id = await engine.submit(ww.sleeper, 1)

        async def asleep_without_lease() -> bool:
            info = await engine.journal.get_run(run_id)
            return info is not None and info.wake_at is not None and info.lease_owner is None

        await until(asleep_without_lease, "the sleeping run gives its lease back")
        assert await engine.wait(run_id, timeout=TIMEOUT) == 2
    run = ww.read_journal(db)[run_id]
    events = run["events"]
    slept = next(e for e in events if isinstance(e, ev.SleepStarted))
    woke = next(e for e in events if isinstance(e, ev.StepStarted) and e.node == "after")
    assert woke.ts >= slept.until  # never early
    assert a.claimed + b.claimed == 2 and run["takeovers"] == 0
    assert executions(effects) == [(run_id, "before", 1), (run_id, "after", 1)]


@pytest.mark.anyio
async def test_a_waiting_run_is_claimed_when_another_engine_sends_its_signal(db: Path, effects: Path) -> None:
    w = worker(db, [ww.waiter])
    async with Engine(db) as engine, working(w):
        run_id = await engine.submit(ww.waiter, 1)

        async def waiting() -> bool:
            info = await engine.journal.get_run(run_id)
            return info is not None and info.waiting_for == "go" and info.lease_owner is None

        await until(waiting, "the run waits for its signal, without a lease")
        await anyio.sleep(0.2)
        assert w.claimed == 1  # nobody claims it again while no signal came
        async with Engine(db) as sender:  # another engine, another connection
            await sender.signal(run_id, "go", {"approved": True})
        assert await engine.wait(run_id, timeout=TIMEOUT) == {"approved": True}
    assert w.claimed == 2
    assert executions(effects) == [(run_id, "before", 1), (run_id, "after", 1)]


# -- stopping ------------------------------------------------------------------------------


async def started(engine: Engine, run_id: str) -> None:
    async def step_started() -> bool:
        return any(isinstance(e, ev.StepStarted) for e in await engine.journal.read(run_id))

    await until(step_started, f"run {run_id} starts its step")


@pytest.mark.anyio
async def test_stop_lets_the_runs_in_flight_finish(db: Path) -> None:
    w = worker(db, [ww.slow], drain_timeout=10)
    async with Engine(db) as engine:
        run_id = await engine.submit(ww.slow, 0.5)
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.run)
                await started(engine, run_id)
                queued = await engine.submit(ww.slow, 0.0)  # submitted after stop(): never claimed
                w.stop()
        assert (await engine.state(run_id)).result == "done on attempt 1"
        assert (await engine.state(queued)).status == "running"
        assert (w.claimed, w.finished) == (1, 1)


@pytest.mark.anyio
async def test_stop_after_the_drain_timeout_hands_the_run_to_another_worker_at_once(db: Path, effects: Path) -> None:
    first = worker(db, [ww.slow], drain_timeout=0.2, lease_ttl=60)  # a long lease: only a release frees it
    async with Engine(db) as engine:
        run_id = await engine.submit(ww.slow, 60)
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.run)
                await started(engine, run_id)
                first.stop()
        info = await engine.journal.get_run(run_id)
        assert info is not None and info.status == "running" and info.lease_owner is None
        second = worker(db, [ww.slow], lease_ttl=60)
        async with working(second):
            assert await engine.wait(run_id, timeout=5) == "done on attempt 2"
        info = await engine.journal.get_run(run_id)
        assert info is not None and info.takeovers == 0  # a release is not a takeover
    assert executions(effects) == [(run_id, "slow_first_attempt", 1), (run_id, "slow_first_attempt", 2)]


# ---- regressions: each of these failed before its fix ----------------------------------------

import sqlite3  # noqa: E402
import time  # noqa: E402

import durable  # noqa: E402
from durable import DurableError, Workflow, step  # noqa: E402


@step
async def child_step(x: int) -> int:
    ww.log_effect()
    await anyio.sleep(0.3)
    return x + 1


child = Workflow("child").then(child_step)
parent = Workflow("parent").then(child)


@pytest.mark.anyio
async def test_bug_a_child_run_is_not_claimed_while_its_parent_runs_it(db: Path, effects: Path) -> None:
    async with Engine(db) as engine:
        run_id = await engine.submit(parent, 1, run_id="p")
        async with working(worker(db, [parent, child])):  # the worker knows both definitions
            assert await engine.wait(run_id, timeout=TIMEOUT) == 2
        info = await engine.journal.get_run(run_id)
    assert executions(effects) == [("p/child", "child_step", 1)]  # got: attempts 1 and 2, concurrently
    assert info is not None and info.takeovers == 0  # got: 1 (and wait took lease_ttl = 10 s)


@pytest.mark.anyio
async def test_bug_pausing_a_busy_run_from_another_engine_is_not_a_takeover(db: Path, effects: Path) -> None:
    w = worker(db, [ww.held_twice], lease_ttl=0.3, max_takeovers=1)
    async with Engine(db) as engine, working(w):
        run_id = await engine.submit(ww.held_twice, 1)  # two async steps of 0.1 s

        async def in_step() -> bool:
            return (await engine.journal.read(run_id))[-1].type == "step_started"

        async def parked() -> bool:
            info = await engine.journal.get_run(run_id)
            return info is not None and info.paused and info.lease_owner is None

        await until(in_step, "the first step is in flight")
        async with Engine(db) as other:
            await other.pause(run_id)  # a request to the worker, which owns the run
        await until(parked, "the worker paused the run at its next step and handed it back")
        await anyio.sleep(0.6)  # twice the lease: nothing expires, nothing is taken over
        async with Engine(db) as other:
            await other.unpause(run_id)
        assert await engine.wait(run_id, timeout=5) == 1  # got: RunFailed TooManyTakeovers
        info = await engine.journal.get_run(run_id)
        assert info is not None and info.takeovers == 0
        types = [e.type for e in await engine.journal.read(run_id)]
        assert types.count("step_started") == 2 and "run_paused" in types and "run_unpaused" in types


@pytest.mark.anyio
async def test_bug_a_capped_backlog_does_not_starve_other_workflows(db: Path) -> None:
    await submit_all(db, ww.capped, list(range(60)), "capped")
    [free] = await submit_all(db, ww.free, [1], "free")  # the youngest run; a slot is idle all along
    w = worker(db, [ww.capped, ww.free], concurrency=2, workflow_concurrency={"capped": 1})
    async with Engine(db) as engine, working(w):
        assert await engine.wait(free, timeout=1) == 1  # got: TimeoutError (it waited ~4 s, until 20 were left)


@pytest.mark.anyio
async def test_bug_a_busy_database_does_not_stop_the_worker(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.submit(ww.pipeline, 1)
    w = worker(SQLiteJournal(db, busy_timeout=0.1), [ww.pipeline])
    async with working(w):
        await anyio.sleep(0.3)
        hog = sqlite3.connect(db, isolation_level=None)
        hog.execute("BEGIN IMMEDIATE")  # another process holds the write lock longer than busy_timeout
        await anyio.sleep(0.5)
        hog.execute("ROLLBACK")
        hog.close()
        async with Engine(db) as engine:
            await engine.submit(ww.pipeline, 2, run_id="after")
            assert await engine.wait("after", timeout=5) == 6  # got: worker.run() raised StorageError


@step
async def blocks_the_loop(x: int) -> int:
    ww.log_effect()
    if durable.context().attempt == 1:
        time.sleep(1.0)  # a blocking call in an async step: no heartbeat for longer than the lease
    return x


@step
async def then_wait(x: int) -> int:
    ww.log_effect()
    await anyio.sleep(1.0)
    return x


hogger = Workflow("hogger").then(blocks_the_loop).then(then_wait)


@pytest.mark.anyio
async def test_bug_a_worker_does_not_claim_a_run_it_is_still_running(db: Path, effects: Path) -> None:
    w = worker(db, [hogger], lease_ttl=0.3, concurrency=2)
    async with Engine(db) as engine, working(w):
        run_id = await engine.submit(hogger, 1)
        assert await engine.wait(run_id, timeout=TIMEOUT) == 1
    # got: then_wait attempts 1 and 2, run side by side in the same worker; claimed == 2
    assert [n for _, n, _ in executions(effects)] == ["blocks_the_loop", "then_wait"]


@pytest.mark.anyio
async def test_bug_a_stopped_run_is_not_counted_as_finished(db: Path) -> None:
    w = worker(db, [ww.slow], drain_timeout=0.1)
    async with Engine(db) as engine:
        run_id = await engine.submit(ww.slow, 30)
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.run)
                await started(engine, run_id)
                tg.cancel_scope.cancel()  # what a second SIGTERM does in `durable worker`
        assert (await engine.state(run_id)).status == "running"
    assert w.finished == 0  # got: 1 ("stopped: 1 claimed, 1 finished" for a run that is still running)


@pytest.mark.anyio
async def test_bug_submit_refuses_an_empty_run_id(db: Path) -> None:
    async with Engine(db) as engine:
        with pytest.raises(DurableError):
            await engine.submit(ww.pipeline, 1, run_id="")  # got: a run with id ''
