"""Execution semantics of the engine (docs/semantics.md), each on a real SQLite file.

Crashes are made two ways without touching engine internals: leaving ``async with Engine``
while a step is blocked (documented to stop the run as a crash would), or writing the
events a dead process would have left straight into the journal (``engine.journal``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import durable
from durable import (
    DefinitionMismatch,
    DurableError,
    Engine,
    RetryPolicy,
    RunAlreadyExists,
    RunFailed,
    RunNotFound,
    SeqOutOfRange,
    StepContext,
    StepError,
    StepTimeout,
    Workflow,
    fold,
    step,
)
from durable import events as ev

pytestmark = pytest.mark.anyio


# -- helpers ---------------------------------------------------------------------------------


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection of our own: it sees exactly what is committed."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        yield conn


def committed(db: Path, run_id: str) -> list[tuple[int, str, str | None, int | None]]:
    with raw(db) as conn:
        return conn.execute(
            "SELECT seq, type, node, attempt FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()


def integrity_ok(db: Path) -> bool:
    with raw(db) as conn:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


def of(history: list[ev.Event], node: str) -> list[tuple[str, int]]:
    """(type, attempt) of one node's step events."""
    return [(e.type, e.attempt) for e in history if getattr(e, "node", None) == node and hasattr(e, "attempt")]


def first(history: list[ev.Event], type_: str, node: str | None = None, attempt: int | None = None) -> Any:
    for e in history:
        if e.type == type_ and (node is None or e.node == node) and (attempt is None or e.attempt == attempt):
            return e
    raise AssertionError(f"no {type_} for {node} attempt {attempt} in {[x.type for x in history]}")


def run_started(wf: Workflow, input: Any = None) -> ev.RunStarted:
    return ev.RunStarted(
        seq=1,
        ts=ev.utcnow(),
        workflow=wf.name,
        version=wf.version,
        definition_hash=wf.definition_hash,
        definition=wf.canonical(),
        input=input,
    )


def now_plus(seconds: float = 0.0) -> Any:
    return ev.utcnow() + timedelta(seconds=seconds)


# -- sequential runs and values --------------------------------------------------------------


async def test_sequential_run_returns_the_last_steps_output(db: Path) -> None:
    def add_one(x: int) -> int:
        return x + 1

    async def double(x: int) -> int:
        return x * 2

    def describe(x: int) -> str:
        return f"got {x}"

    wf = Workflow("seq").then(add_one).then(double).then(describe)
    async with Engine(db) as engine:
        assert await engine.run(wf, 4, run_id="r") == "got 10"
        history = await engine.history("r")
    assert [e.type for e in history] == [
        "run_started",
        *["step_scheduled", "step_started", "step_completed"] * 3,
        "run_completed",
    ]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [e.node for e in history if e.type == "step_started"] == ["add_one", "double", "describe"]
    assert history[-1].result == "got 10"


async def test_a_step_without_parameter_is_called_with_none(db: Path) -> None:
    def constant() -> int:
        return 7

    wf = Workflow("noarg").then(constant).then(lambda_free_inc)
    async with Engine(db) as engine:
        assert await engine.run(wf, {"ignored": True}) == 8


def lambda_free_inc(x: int) -> int:
    return x + 1


class Order(BaseModel):
    id: str
    items: list[str]
    total: float


async def test_a_pydantic_model_arrives_as_that_model_live_and_after_resume(db: Path) -> None:
    made: list[int] = []
    seen: list[Any] = []
    block = {"on": True}
    entered = anyio.Event()

    def make(n: int) -> Order:
        made.append(n)
        return Order(id=f"o-{n}", items=["a"] * n, total=n * 1.5)

    def passthrough(o: Order) -> Order:
        seen.append(o)
        return o

    async def check(o: Order) -> str:
        seen.append(o)
        if block["on"]:
            entered.set()
            await anyio.sleep_forever()
        return f"{o.id}:{len(o.items)}:{o.total}"

    wf = Workflow("models").then(make).then(passthrough).then(check)
    async with Engine(db) as engine:
        await engine.start(wf, 2, run_id="r")
        with anyio.fail_after(5):
            await entered.wait()
    # the engine stopped as a crash would: check's attempt 1 never completed
    block["on"] = False
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="r") == "o-2:2:3.0"
        history = await engine.history("r")
    assert made == [2]  # completed steps are not run again
    assert len(seen) == 3
    assert all(type(o) is Order for o in seen)
    assert seen[0] == seen[1] == seen[2] == Order(id="o-2", items=["a", "a"], total=3.0)
    assert of(history, "check") == [
        ("step_scheduled", 1),
        ("step_started", 1),
        ("step_started", 2),
        ("step_completed", 2),
    ]


# -- fork and join ---------------------------------------------------------------------------


async def test_async_branches_run_concurrently(db: Path) -> None:
    left_here, right_here = anyio.Event(), anyio.Event()

    async def left(x: int) -> int:
        left_here.set()
        await right_here.wait()  # deadlocks unless right runs meanwhile
        return x + 1

    async def right(x: int) -> int:
        right_here.set()
        await left_here.wait()
        return x + 2

    def total(d: dict[str, int]) -> int:
        return sum(d.values())

    wf = Workflow("conc").fork().branch(left).branch(right).join(total)
    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(wf, 10) == 23


async def test_sync_branches_run_concurrently_in_threads(db: Path) -> None:
    barrier = threading.Barrier(2, timeout=5)

    def left(x: int) -> int:
        barrier.wait()  # breaks (BrokenBarrierError) unless the other thread arrives meanwhile
        return x + 1

    def right(x: int) -> int:
        barrier.wait()
        return x + 2

    def total(d: dict[str, int]) -> int:
        return sum(d.values())

    wf = Workflow("conc-sync").fork().branch(left).branch(right).join(total)
    async with Engine(db) as engine:
        assert await engine.run(wf, 10) == 23


async def test_join_receives_outputs_by_branch_name_defaulting_to_the_first_step(db: Path) -> None:
    joined: list[Any] = []

    def start(x: int) -> int:
        return x

    def a1(x: int) -> int:
        return x + 1

    def a2(x: int) -> list[int]:
        return [x, x]

    async def b1(x: int) -> str:
        return f"b{x}"

    def c1(x: int) -> dict[str, int]:
        return {"c": x}

    def gather(d: dict[str, Any]) -> dict[str, Any]:
        joined.append(d)
        return d

    wf = Workflow("join").then(start).fork().branch(a1, a2).branch(b1, name="bee").branch(c1).join(gather)
    async with Engine(db) as engine:
        result = await engine.run(wf, 5, run_id="r")
        history = await engine.history("r")
    expected = {"a1": [6, 6], "bee": "b5", "c1": {"c": 5}}
    assert joined == [expected]
    assert result == expected
    assert first(history, "fork_started").branches == ["a1", "bee", "c1"]
    assert sorted(e.branch for e in history if e.type == "branch_completed") == ["a1", "bee", "c1"]
    joined_at = first(history, "fork_joined").seq
    assert first(history, "step_started", "gather").seq > joined_at
    assert all(e.seq < joined_at for e in history if e.type == "branch_completed")


async def test_after_a_crash_only_unfinished_branches_run_again(db: Path) -> None:
    calls: list[tuple[str, int]] = []

    def fast(x: int) -> int:
        calls.append(("fast", durable.context().attempt))
        return x + 1

    def slow(x: int) -> int:
        calls.append(("slow", durable.context().attempt))
        return x + 2

    def both(d: dict[str, int]) -> dict[str, int]:
        return d

    wf = Workflow("resume-fork").fork().branch(fast).branch(slow).join(both)
    t = ev.utcnow
    async with Engine(db) as engine:
        # what a process killed while 'slow' ran leaves behind
        await engine.journal.append(
            "r",
            [
                run_started(wf, 1),
                ev.ForkStarted(seq=2, ts=t(), node="fork-1", branches=["fast", "slow"]),
                ev.StepScheduled(seq=3, ts=t(), node="fast", attempt=1),
                ev.StepStarted(seq=4, ts=t(), node="fast", attempt=1),
                ev.StepScheduled(seq=5, ts=t(), node="slow", attempt=1),
                ev.StepStarted(seq=6, ts=t(), node="slow", attempt=1),
                ev.StepCompleted(seq=7, ts=t(), node="fast", attempt=1, output=100),
                ev.BranchCompleted(seq=8, ts=t(), node="fork-1", branch="fast"),
            ],
        )
        assert await engine.run(wf, run_id="r") == {"fast": 100, "slow": 3}
        history = await engine.history("r")
    assert calls == [("slow", 2)]
    assert [e.type for e in history].count("fork_started") == 1
    assert [e.branch for e in history if e.type == "branch_completed"] == ["fast", "slow"]


# -- finished runs, conflicts, definitions ---------------------------------------------------


async def test_run_on_a_finished_run_returns_the_stored_result_without_running_anything(db: Path) -> None:
    calls: list[str] = []

    def one(x: int) -> int:
        calls.append("one")
        return x + 1

    def two(x: int) -> Order:
        calls.append("two")
        return Order(id=str(x), items=[], total=0.0)

    wf = Workflow("finished").then(one).then(two)
    async with Engine(db) as engine:
        first_result = await engine.run(wf, 1, run_id="r")
        assert calls == ["one", "two"]
        length = len(await engine.history("r"))
        assert await engine.run(wf, 1, run_id="r") == first_result
        handle = await engine.start(wf, 1, run_id="r", on_conflict="use_existing")
        assert await handle.result() == first_result
    async with Engine(db) as engine:  # another engine, as after a restart
        again = await engine.run(wf, 1, run_id="r")
        assert len(await engine.history("r")) == length
    assert again == first_result == Order(id="2", items=[], total=0.0)
    assert isinstance(again, Order)
    assert calls == ["one", "two"]


async def test_start_with_a_taken_id_fails_or_attaches(db: Path) -> None:
    calls: list[int] = []
    release = anyio.Event()

    async def wait(x: int) -> int:
        calls.append(x)
        await release.wait()
        return x * 3

    wf = Workflow("conflict").then(wait)
    async with Engine(db) as engine:
        handle = await engine.start(wf, 2, run_id="r")
        with pytest.raises(RunAlreadyExists) as caught:
            await engine.start(wf, 2, run_id="r")
        assert caught.value.run_id == "r"
        attached = await engine.start(wf, 99, run_id="r", on_conflict="use_existing")
        release.set()
        assert await handle.result() == await attached.result() == 6
        with pytest.raises(RunAlreadyExists):  # finished runs keep their id too
            await engine.start(wf, 2, run_id="r")
        history = await engine.history("r")
    async with Engine(db) as engine:  # another engine sees the id as taken
        with pytest.raises(RunAlreadyExists):
            await engine.start(wf, 2, run_id="r")
        assert await (await engine.start(wf, 2, run_id="r", on_conflict="use_existing")).result() == 6
    assert calls == [2]
    assert [e.type for e in history].count("run_started") == 1


def _first(x: int) -> int:
    return x + 1


def _second(x: int) -> int:
    return x * 2


def _extra(x: int) -> int:
    return x


CHANGES = {
    "step-added": (
        lambda: Workflow("defs").then(_first).then(_second).then(_extra),
        "node '_extra' was added",
    ),
    "step-removed": (lambda: Workflow("defs").then(_first), "node '_second' was removed"),
    "retry-changed": (
        lambda: Workflow("defs").then(step(retries=3)(_first)).then(_second),
        "node '_first' changed: retry.max_attempts 1 -> 4",
    ),
    "version-changed": (lambda: Workflow("defs", version=2).then(_first).then(_second), "version"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_resume_under_a_changed_definition_is_refused_and_writes_nothing(db: Path, change: str) -> None:
    old = Workflow("defs").then(_first).then(_second)
    new, expected = CHANGES[change][0](), CHANGES[change][1]
    assert new.definition_hash != old.definition_hash
    async with Engine(db) as engine:
        planted = [
            run_started(old, 1),
            ev.StepScheduled(seq=2, ts=ev.utcnow(), node="_first", attempt=1),
            ev.StepStarted(seq=3, ts=ev.utcnow(), node="_first", attempt=1),
        ]
        await engine.journal.append("r", planted)  # created unowned, as a submitted run is
        for attempt in (
            lambda: engine.resume("r", new),
            lambda: engine.run(new, run_id="r"),
            lambda: engine.start(new, run_id="r", on_conflict="use_existing"),
        ):
            with pytest.raises(DefinitionMismatch) as caught:
                await attempt()
            err = caught.value
            assert err.run_id == "r"
            assert (err.old_hash, err.new_hash) == (old.definition_hash, new.definition_hash)
            assert any(expected in line for line in err.changes), err.changes
            assert expected in str(err)
        report = await engine.recover([new])  # recover resumes nothing of it, and says why
        assert list(report) == []
        [skipped] = report.skipped
        assert (skipped.run_id, skipped.reason) == ("r", "definition") and expected in skipped.detail
        assert await engine.history("r") == planted
        info = await engine.journal.get_run("r")
        assert info is not None and (info.status, info.last_seq) == ("running", 3)
        assert await engine.run(old, run_id="r") == 4  # the right definition still resumes it


# -- recovery --------------------------------------------------------------------------------


async def test_recover_reruns_an_in_flight_step_as_attempt_2_with_the_same_idempotency_key(db: Path) -> None:
    contexts: list[StepContext] = []

    def charge(x: int) -> int:
        contexts.append(durable.context())
        return x + 1

    def ship(x: int) -> int:
        contexts.append(durable.context())
        return x * 10

    wf = Workflow("recover").then(charge).then(ship)
    other = Workflow("other").then(_first)
    async with Engine(db) as engine:
        await engine.journal.append(
            "r",
            [
                run_started(wf, 4),
                ev.StepScheduled(seq=2, ts=ev.utcnow(), node="charge", attempt=1),
                ev.StepStarted(seq=3, ts=ev.utcnow(), node="charge", attempt=1),
            ],
        )
        await engine.journal.append("not-started-yet", [run_started(wf, 1)])
        await engine.journal.append("someone-elses", [run_started(other, 1)])
        assert await engine.run(wf, 7, run_id="done") == 80
        contexts.clear()

        handles = await engine.recover([wf])
        assert sorted(h.run_id for h in handles) == ["not-started-yet", "r"]
        results = {h.run_id: await h.result() for h in handles}
        assert results == {"r": 50, "not-started-yet": 20}
        history = await engine.history("r")
        untouched = await engine.history("someone-elses")
        runs = {r.run_id: r.status for r in await engine.list_runs()}

    charge_r = [c for c in contexts if c.run_id == "r" and c.node == "charge"]
    assert len(charge_r) == 1
    ctx = charge_r[0]
    assert (ctx.run_id, ctx.workflow, ctx.node, ctx.attempt) == ("r", "recover", "charge", 2)
    assert ctx.idempotency_key == "r/charge"
    assert of(history, "charge") == [
        ("step_scheduled", 1),
        ("step_started", 1),
        ("step_started", 2),
        ("step_completed", 2),
    ]
    assert [e.type for e in untouched] == ["run_started"]
    assert runs == {"r": "completed", "not-started-yet": "completed", "done": "completed", "someone-elses": "running"}


async def test_a_step_interrupted_for_real_reruns_with_the_same_idempotency_key(db: Path) -> None:
    contexts: list[StepContext] = []
    block = {"on": True}
    entered = anyio.Event()

    async def pay(x: int) -> int:
        contexts.append(durable.context())
        if block["on"]:
            entered.set()
            await anyio.sleep_forever()
        return x + 1

    wf = Workflow("real-interrupt").then(_first).then(pay)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        with anyio.fail_after(5):
            await entered.wait()
    assert [t for _, t, _, _ in committed(db, "r")][-1] == "step_started"  # stopped as a crash: nothing more
    block["on"] = False
    async with Engine(db) as engine:
        (handle,) = await engine.recover([wf])
        assert await handle.result() == 3
    assert [(c.attempt, c.idempotency_key) for c in contexts] == [(1, "r/pay"), (2, "r/pay")]


async def test_a_retry_wait_resumed_after_a_crash_is_never_early(db: Path) -> None:
    def flaky(x: int) -> int:
        return x + 1

    wf = Workflow("wait").then(step(retries=RetryPolicy(max_attempts=3, initial="300ms"))(flaky))
    retry_at = now_plus(0.3)
    async with Engine(db) as engine:
        t = ev.utcnow()
        await engine.journal.append(
            "r",
            [
                run_started(wf, 1),
                ev.StepScheduled(seq=2, ts=t, node="flaky", attempt=1),
                ev.StepStarted(seq=3, ts=t, node="flaky", attempt=1),
                ev.StepFailed(
                    seq=4, ts=t, node="flaky", attempt=1, error=ev.ErrorInfo(type="E", message="m"), retry_at=retry_at
                ),
                ev.StepScheduled(seq=5, ts=t, node="flaky", attempt=2, not_before=retry_at),
            ],
        )
        assert await engine.run(wf, run_id="r") == 2
        history = await engine.history("r")
    restarted = first(history, "step_started", "flaky", 2)
    assert restarted.seq == 6  # no new schedule: the committed one stands
    assert restarted.ts >= retry_at - timedelta(milliseconds=5)


# -- retries and timeouts --------------------------------------------------------------------


async def test_a_step_failing_twice_then_succeeding_completes_with_each_failure_journaled(db: Path) -> None:
    attempts: list[int] = []

    @step(retries=RetryPolicy(max_attempts=3, initial="10ms"))
    def flaky(x: int) -> int:
        attempt = durable.context().attempt
        attempts.append(attempt)
        if attempt < 3:
            raise ConnectionError(f"try {attempt}")
        return x * 10

    wf = Workflow("retry").then(flaky)
    async with Engine(db) as engine:
        assert await engine.run(wf, 4, run_id="r") == 40
        history = await engine.history("r")
        state = await engine.state("r")
    assert attempts == [1, 2, 3]
    assert of(history, "flaky") == [
        ("step_scheduled", 1),
        ("step_started", 1),
        ("step_failed", 1),
        ("step_scheduled", 2),
        ("step_started", 2),
        ("step_failed", 2),
        ("step_scheduled", 3),
        ("step_started", 3),
        ("step_completed", 3),
    ]
    for attempt in (1, 2):
        failed = first(history, "step_failed", "flaky", attempt)
        rescheduled = first(history, "step_scheduled", "flaky", attempt + 1)
        assert failed.final is False
        assert (failed.error.type, failed.error.message, failed.error.node) == (
            "ConnectionError",
            f"try {attempt}",
            "flaky",
        )
        assert "ConnectionError" in failed.error.traceback
        assert failed.retry_at is not None and rescheduled.not_before == failed.retry_at
        assert rescheduled.seq == failed.seq + 1
    node = state.nodes["flaky"]
    assert (node.status, node.attempt, node.failures, node.output) == ("completed", 3, 2, 40)


async def test_retries_exhausted_fail_the_run_with_the_original_exception_as_cause(db: Path) -> None:
    calls: list[str] = []

    @step(retries=RetryPolicy(max_attempts=2, initial="10ms"))
    def broken(x: int) -> int:
        calls.append("broken")
        raise KeyError("no such sku")

    def after(x: int) -> int:
        calls.append("after")
        return x

    wf = Workflow("exhausted").then(_first).then(broken).then(after)
    async with Engine(db) as engine:
        handle = await engine.start(wf, 1, run_id="r")
        with pytest.raises(RunFailed) as caught:
            await handle.result()
        history = await engine.history("r")
        failed_runs = [r.run_id for r in await engine.list_runs(status="failed")]
    err = caught.value
    assert isinstance(err.__cause__, KeyError)
    assert (err.run_id, err.node, err.error_type) == ("r", "broken", "KeyError")
    assert "broken" in str(err) and "no such sku" in str(err)
    assert calls == ["broken", "broken"]
    assert [e.type for e in history[-2:]] == ["step_failed", "run_failed"]
    assert history[-2].final is True and history[-2].attempt == 2 and history[-2].retry_at is None
    assert history[-1].error.type == "KeyError" and history[-1].error.node == "broken"
    assert failed_runs == ["r"]

    async with Engine(db) as engine:  # the stored failure, in another engine: no step runs
        with pytest.raises(RunFailed) as again:
            await engine.run(wf, 1, run_id="r")
    assert isinstance(again.value.__cause__, StepError)
    assert (again.value.node, again.value.__cause__.error_type) == ("broken", "KeyError")
    assert calls == ["broken", "broken"]


async def test_backoff_delays_are_respected(db: Path) -> None:
    @step(retries=RetryPolicy(max_attempts=3, initial="150ms", backoff=2, jitter=0))
    def flaky(x: int) -> int:
        if durable.context().attempt < 3:
            raise ValueError("not yet")
        return x

    async with Engine(db) as engine:
        assert await engine.run(Workflow("backoff").then(flaky), 1, run_id="r") == 1
        history = await engine.history("r")
    for attempt, delay in ((1, 0.15), (2, 0.30)):
        failed = first(history, "step_failed", "flaky", attempt)
        scheduled = first(history, "step_scheduled", "flaky", attempt + 1)
        started = first(history, "step_started", "flaky", attempt + 1)
        waited = (scheduled.not_before - failed.ts).total_seconds()
        assert delay - 0.02 <= waited <= delay + 0.001
        assert started.ts >= scheduled.not_before - timedelta(milliseconds=5)
        assert (started.ts - failed.ts).total_seconds() >= delay - 0.02


async def test_an_async_step_past_its_timeout_fails_with_step_timeout(db: Path) -> None:
    finished: list[bool] = []

    @step(timeout="50ms")
    async def slow(x: int) -> int:
        await anyio.sleep(10)
        finished.append(True)
        return x

    async with Engine(db) as engine:
        with anyio.fail_after(5), pytest.raises(RunFailed) as caught:
            await engine.run(Workflow("timeout").then(slow), 1, run_id="r")
        history = await engine.history("r")
    assert isinstance(caught.value.__cause__, StepTimeout)
    assert (caught.value.__cause__.node, caught.value.__cause__.timeout) == ("slow", 0.05)
    failed = first(history, "step_failed", "slow", 1)
    assert failed.error.type == "StepTimeout" and failed.final is True
    assert history[-1].type == "run_failed"
    assert finished == []


async def test_a_timed_out_attempt_is_retried_like_any_failure(db: Path) -> None:
    @step(timeout="50ms", retries=RetryPolicy(max_attempts=2, initial="10ms"))
    async def sometimes_slow(x: int) -> int:
        if durable.context().attempt == 1:
            await anyio.sleep(10)
        return x + 1

    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(Workflow("timeout-retry").then(sometimes_slow), 1, run_id="r") == 2
        history = await engine.history("r")
    failed = first(history, "step_failed", "sometimes_slow", 1)
    assert failed.error.type == "StepTimeout" and failed.final is False


# -- threads and context ---------------------------------------------------------------------


async def test_sync_steps_run_in_a_worker_thread_with_their_context(db: Path) -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, tuple[int, StepContext]] = {}

    def in_thread(x: int) -> int:
        seen["in_thread"] = (threading.get_ident(), durable.context())
        return x + 1

    async def on_loop(x: int) -> int:
        seen["on_loop"] = (threading.get_ident(), durable.context())
        return x + 1

    async with Engine(db) as engine:
        assert await engine.run(Workflow("threads").then(in_thread).then(on_loop), 1, run_id="r") == 3
    thread_id, ctx = seen["in_thread"]
    assert thread_id != loop_thread
    assert (ctx.run_id, ctx.workflow, ctx.node, ctx.attempt, ctx.idempotency_key) == (
        "r",
        "threads",
        "in_thread",
        1,
        "r/in_thread",
    )
    loop_id, loop_ctx = seen["on_loop"]
    assert loop_id == loop_thread
    assert (loop_ctx.node, loop_ctx.attempt) == ("on_loop", 1)


async def test_context_outside_a_step_is_an_error(db: Path) -> None:
    with pytest.raises(DurableError, match="outside"):
        durable.context()
    async with Engine(db) as engine:
        await engine.run(Workflow("ctx").then(_first), 1)
        with pytest.raises(DurableError, match="outside"):  # a finished step leaves no context behind
            durable.context()


# -- branch failure --------------------------------------------------------------------------


async def test_a_branch_failing_for_good_cancels_its_siblings_and_names_itself(db: Path) -> None:
    sibling_started = anyio.Event()
    completed: list[str] = []

    async def patient(x: int) -> int:
        sibling_started.set()
        await anyio.sleep(30)
        completed.append("patient")
        return x

    async def breaker(x: int) -> int:
        await sibling_started.wait()
        raise RuntimeError("kaput")

    def joiner(d: dict[str, int]) -> int:
        completed.append("joiner")
        return 0

    wf = Workflow("cancel").then(_first).fork().branch(patient).branch(breaker, name="brk").join(joiner)
    async with Engine(db) as engine:
        with anyio.fail_after(5), pytest.raises(RunFailed) as caught:
            await engine.run(wf, 1, run_id="r")
        history = await engine.history("r")
        state = await engine.state("r")
    err = caught.value
    assert err.node == "breaker" and isinstance(err.__cause__, RuntimeError)
    assert "'brk'" in str(err) and "'breaker'" in str(err) and "kaput" in str(err)
    assert completed == []
    types = [e.type for e in history]
    assert of(history, "patient") == [("step_scheduled", 1), ("step_started", 1)]  # started, never completed
    assert first(history, "branch_failed").branch == "brk"
    assert "fork_joined" not in types and "joiner" not in {getattr(e, "node", None) for e in history}
    assert types[-1] == "run_failed"
    assert history[-1].error.node == "breaker"
    assert state.status == "failed"
    assert state.nodes["patient"].status == "interrupted"
    assert integrity_ok(db)


async def test_outputs_of_branches_completed_before_a_failure_stay_in_the_journal(db: Path) -> None:
    fast_done = anyio.Event()

    async def fast(x: int) -> int:
        fast_done.set()
        return x + 100

    async def slow(x: int) -> int:
        await anyio.sleep(30)
        return x

    async def bad(x: int) -> int:
        await fast_done.wait()
        await anyio.sleep(0.01)
        raise ValueError("bad branch")

    def joiner(d: dict[str, int]) -> int:
        return 0

    wf = Workflow("partial").fork().branch(fast).branch(slow).branch(bad).join(joiner)
    async with Engine(db) as engine:
        with anyio.fail_after(5), pytest.raises(RunFailed):
            await engine.run(wf, 1, run_id="r")
        history = await engine.history("r")
    done = first(history, "step_completed", "fast", 1)
    assert done.output == 101
    assert first(history, "branch_completed").branch == "fast"
    assert first(history, "branch_failed").branch == "bad"
    assert done.seq < first(history, "branch_failed").seq
    assert history[-1].type == "run_failed"


# -- ordering and commits --------------------------------------------------------------------


async def test_no_step_starts_before_the_previous_completion_is_committed(db: Path) -> None:
    # Each step reads the journal through a connection of its own: what it sees is committed.
    observed: dict[str, list[tuple[int, str, str | None, int | None]]] = {}

    def snapshot(name: str) -> None:
        observed[name] = committed(db, "r")

    def s1(x: int) -> int:
        snapshot("s1")
        return x + 1

    def s2(x: int) -> int:
        snapshot("s2")
        return x + 1

    def b1(x: int) -> int:
        snapshot("b1")
        return x

    def b2(x: int) -> int:
        snapshot("b2")
        return x

    def j(d: dict[str, int]) -> int:
        snapshot("j")
        return sum(d.values())

    def s3(x: int) -> int:
        snapshot("s3")
        return x

    wf = Workflow("order").then(s1).then(s2).fork().branch(b1).branch(b2).join(j).then(s3)
    async with Engine(db) as engine:
        assert await engine.run(wf, 0, run_id="r") == 4
        history = await engine.history("r")

    def has(rows: list[Any], type_: str, node: str) -> bool:
        return any(t == type_ and n == node for _, t, n, _ in rows)

    for name, rows in observed.items():
        assert has(rows, "step_started", name), f"{name} ran before its step_started was committed"
    for before, after in (("s1", "s2"), ("s2", "b1"), ("s2", "b2"), ("b1", "j"), ("b2", "j"), ("j", "s3")):
        assert has(observed[after], "step_completed", before), f"{after} ran before {before}'s completion was committed"
        assert first(history, "step_started", after).seq > first(history, "step_completed", before).seq


async def test_run_started_is_committed_when_start_returns_and_the_result_when_result_returns(db: Path) -> None:
    release = anyio.Event()

    async def wait(x: int) -> dict[str, int]:
        await release.wait()
        return {"v": x}

    async with Engine(db) as engine:
        handle = await engine.start(Workflow("commit").then(wait), 5, run_id="r")
        assert committed(db, "r")[0][1] == "run_started"
        release.set()
        assert await handle.result() == {"v": 5}
        rows = committed(db, "r")
        with raw(db) as conn:
            status = conn.execute("SELECT status FROM runs WHERE run_id = 'r'").fetchone()[0]
        assert rows[-1][1] == "run_completed" and status == "completed"
        assert (await handle.state()).result == {"v": 5}


async def test_an_unserialisable_output_fails_the_run_for_good_naming_step_and_type(db: Path) -> None:
    calls: list[int] = []

    class Opaque:
        pass

    @step(retries=3)
    def leaky(x: int):  # type: ignore[no-untyped-def]
        calls.append(x)
        return Opaque()

    @step(retries=3)
    def liar(x: int) -> int:
        return "not an int"  # type: ignore[return-value]

    for name, wf, type_name in (
        ("a", Workflow("unser").then(_first).then(leaky), "Opaque"),
        ("b", Workflow("unser-annotated").then(liar), "str"),
    ):
        async with Engine(db) as engine:
            with pytest.raises(RunFailed) as caught:
                await engine.run(wf, 1, run_id=name)
            history = await engine.history(name)
        err = caught.value
        assert err.error_type == "SerializationError"
        assert err.node in ("leaky", "liar") and f"'{err.node}'" in str(err)
        assert type_name in str(err)
        assert [e.type for e in history[-2:]] == ["step_failed", "run_failed"]
        assert history[-2].final is True and history[-2].attempt == 1  # retrying cannot help
        assert integrity_ok(db)
    assert calls == [2]


# -- reading ---------------------------------------------------------------------------------


async def test_history_and_state_of_an_unknown_run(db: Path) -> None:
    async with Engine(db) as engine:
        with pytest.raises(RunNotFound) as caught:
            await engine.history("nope")
        assert caught.value.run_id == "nope"
        with pytest.raises(RunNotFound):
            await engine.state("nope")
        with pytest.raises(RunNotFound):
            await engine.state("nope", at=0)
        with pytest.raises(RunNotFound):
            await engine.resume("nope", Workflow("x").then(_first))


async def test_state_at_k_is_the_fold_of_the_first_k_events(db: Path) -> None:
    @step(retries=RetryPolicy(max_attempts=2, initial="10ms"))
    def flaky(x: int) -> int:
        if durable.context().attempt == 1:
            raise ValueError("once")
        return x

    wf = Workflow("fold").then(_first).fork().branch(flaky).branch(_second).join(lambda_free_sum)
    async with Engine(db) as engine:
        await engine.run(wf, 1, run_id="r")
        history = await engine.history("r")
        last = history[-1].seq
        for k in range(last + 1):
            assert await engine.state("r", at=k) == fold(history[:k], "r")
        assert await engine.state("r") == fold(history, "r") == await engine.state("r", at=last)
        assert (await engine.state("r", at=1)).status == "running"
        assert (await engine.state("r")).status == "completed"
        for bad in (-1, last + 1, last + 100):
            with pytest.raises(SeqOutOfRange) as caught:
                await engine.state("r", at=bad)
            assert (caught.value.run_id, caught.value.seq, caught.value.last_seq) == ("r", bad, last)


def lambda_free_sum(d: dict[str, int]) -> int:
    return sum(d.values())


async def test_list_runs_filters(db: Path) -> None:
    def boom(x: int) -> int:
        raise ValueError("boom")

    ok, bad = Workflow("ok").then(_first), Workflow("bad").then(boom)
    async with Engine(db) as engine:
        for run_id in ("ok-1", "ok-2", "ok-3"):
            await engine.run(ok, 1, run_id=run_id)
        with pytest.raises(RunFailed):
            await engine.run(bad, 1, run_id="bad-1")
        await engine.journal.append("ok-4", [run_started(ok, 1)])

        assert [r.run_id for r in await engine.list_runs()] == ["ok-4", "bad-1", "ok-3", "ok-2", "ok-1"]
        assert [r.run_id for r in await engine.list_runs(workflow="ok")] == ["ok-4", "ok-3", "ok-2", "ok-1"]
        assert [r.run_id for r in await engine.list_runs(status="failed")] == ["bad-1"]
        assert [r.run_id for r in await engine.list_runs(status="running")] == ["ok-4"]
        assert [r.run_id for r in await engine.list_runs(status="completed", workflow="ok", limit=2)] == [
            "ok-3",
            "ok-2",
        ]
        assert await engine.list_runs(status="failed", workflow="ok") == []
        info = (await engine.list_runs(workflow="bad"))[0]
        assert (info.workflow, info.version, info.definition_hash) == ("bad", "1", bad.definition_hash)


# -- the synchronous helper ------------------------------------------------------------------


def test_durable_run_helper_runs_then_returns_the_stored_result(tmp_path: Path) -> None:
    calls: list[int] = []

    def count(x: int) -> int:
        calls.append(x)
        return x * 2

    wf = Workflow("helper").then(count).then(_first)
    path = tmp_path / "helper.db"
    assert durable.run(wf, 5, run_id="h", db=path) == 11
    assert durable.run(wf, 5, run_id="h", db=path) == 11
    assert durable.run(wf, 5, run_id="h", db=path, synchronous="NORMAL") == 11
    assert calls == [5]
    assert [t for _, t, _, _ in committed(path, "h")].count("run_started") == 1
