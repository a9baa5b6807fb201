"""One contract suite, run against every journal implementation.

Every test receives a fresh, open journal from the parametrised ``journal`` fixture; a new
implementation joins the suite by adding one entry to ``JOURNALS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from durable import InMemoryJournal, Journal, JournalError, RunAlreadyExists, RunNotFound, SeqConflict, SQLiteJournal
from durable import events as ev

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)

JOURNALS: dict[str, Callable[[Path], Journal]] = {
    "memory": lambda tmp: InMemoryJournal(),
    "sqlite": lambda tmp: SQLiteJournal(tmp / "j.db"),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(JOURNALS))
async def journal(request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str) -> AsyncIterator[Journal]:
    async with JOURNALS[request.param](tmp_path) as j:
        yield j


# -- event builders --------------------------------------------------------------------------


def ts(i: float) -> datetime:
    return T0 + timedelta(seconds=i)


def started(*, workflow: str = "wf", at: float = 0, version: str = "1") -> ev.RunStarted:
    return ev.RunStarted(
        seq=1,
        ts=ts(at),
        workflow=workflow,
        version=version,
        definition_hash="h-" + workflow,
        definition={"name": workflow, "version": version, "nodes": []},
        input={"n": 1},
    )


def scheduled(seq: int, node: str = "a", attempt: int = 1) -> ev.StepScheduled:
    return ev.StepScheduled(seq=seq, ts=ts(seq), node=node, attempt=attempt)


def steps(first: int, last: int) -> list[ev.Event]:
    return [scheduled(s, node=f"n{s}") for s in range(first, last + 1)]


def terminal(kind: str, seq: int) -> ev.Event:
    if kind == "completed":
        return ev.RunCompleted(seq=seq, ts=ts(seq), result={"ok": True})
    if kind == "failed":
        return ev.RunFailed(seq=seq, ts=ts(seq), error=ev.ErrorInfo(type="ValueError", message="boom", node="a"))
    return ev.RunCancelled(seq=seq, ts=ts(seq), reason="operator")


async def seqs(journal: Journal, run_id: str) -> list[int]:
    return [e.seq for e in await journal.read(run_id)]


# -- creating runs ---------------------------------------------------------------------------


async def test_run_started_at_seq_1_creates_the_run(journal: Journal) -> None:
    assert await journal.get_run("r") is None
    first = started(workflow="checkout", version="3")
    await journal.append("r", [first])
    info = await journal.get_run("r")
    assert info is not None
    assert (info.run_id, info.workflow, info.version, info.definition_hash) == ("r", "checkout", "3", "h-checkout")
    assert (info.status, info.last_seq) == ("running", 1)
    assert info.created_at == first.ts
    assert await journal.read("r") == [first]


async def test_read_of_unknown_run_is_empty(journal: Journal) -> None:
    assert await journal.read("nobody") == []
    assert await journal.get_run("nobody") is None


async def test_events_round_trip_unchanged(journal: Journal) -> None:
    error = ev.ErrorInfo(type="ValueError", message='bad \u00e9 "quote"', traceback="Traceback...", node="a")
    batch: list[ev.Event] = [
        started(),
        ev.StepScheduled(seq=2, ts=ts(2), node="a", attempt=1),
        ev.StepStarted(seq=3, ts=ts(3), node="a", attempt=1),
        ev.StepFailed(seq=4, ts=ts(4), node="a", attempt=1, error=error, retry_at=ts(5)),
        ev.StepScheduled(seq=5, ts=ts(5), node="a", attempt=2, not_before=ts(5.5)),
        ev.StepStarted(seq=6, ts=ts(6), node="a", attempt=2),
        ev.StepCompleted(seq=7, ts=ts(7), node="a", attempt=2, output={"x": [1, 2.5, None, "s"]}),
        ev.ForkStarted(seq=8, ts=ts(8), node="fork-1", branches=["b", "c"]),
        ev.BranchCompleted(seq=9, ts=ts(9), node="fork-1", branch="b"),
        ev.BranchFailed(seq=10, ts=ts(10), node="fork-1", branch="c", error=error),
        ev.RunFailed(seq=11, ts=ts(11), error=error),
    ]
    await journal.append("r", batch[:1])
    await journal.append("r", batch[1:])
    assert await journal.read("r") == batch


# -- listing runs ----------------------------------------------------------------------------


async def test_list_runs_newest_first_filtered_and_limited(journal: Journal) -> None:
    await journal.append("a1", [started(workflow="alpha", at=1)])
    await journal.append("b2", [started(workflow="beta", at=2)])
    await journal.append("a3", [started(workflow="alpha", at=3)])
    await journal.append("a4", [started(workflow="alpha", at=4)])
    await journal.append("a3", [scheduled(2), terminal("completed", 3)])
    await journal.append("b2", [terminal("failed", 2)])

    assert [r.run_id for r in await journal.list_runs()] == ["a4", "a3", "b2", "a1"]
    assert [r.run_id for r in await journal.list_runs(workflow="alpha")] == ["a4", "a3", "a1"]
    assert [r.run_id for r in await journal.list_runs(status="running")] == ["a4", "a1"]
    assert [r.run_id for r in await journal.list_runs(status="running", workflow="alpha")] == ["a4", "a1"]
    assert [r.run_id for r in await journal.list_runs(status="failed")] == ["b2"]
    assert [r.run_id for r in await journal.list_runs(status="completed", workflow="beta")] == []
    assert [r.run_id for r in await journal.list_runs(limit=2)] == ["a4", "a3"]
    assert [r.run_id for r in await journal.list_runs(workflow="alpha", limit=1)] == ["a4"]
    assert await journal.list_runs(workflow="gamma") == []


# -- appending -------------------------------------------------------------------------------


async def test_contiguous_appends_and_reading_ranges(journal: Journal) -> None:
    await journal.append("r", [started()])
    await journal.append("r", steps(2, 2))
    await journal.append("r", steps(3, 6))
    await journal.append("r", steps(7, 7))
    assert await seqs(journal, "r") == [1, 2, 3, 4, 5, 6, 7]
    info = await journal.get_run("r")
    assert info is not None and info.last_seq == 7
    assert info.updated_at == ts(7)
    assert [e.seq for e in await journal.read("r", after=3)] == [4, 5, 6, 7]
    assert [e.seq for e in await journal.read("r", upto=2)] == [1, 2]
    assert [e.seq for e in await journal.read("r", after=2, upto=5)] == [3, 4, 5]
    assert await journal.read("r", after=7) == []
    assert await journal.read("r", after=4, upto=4) == []
    assert [e.seq for e in await journal.read("r", upto=100)] == [1, 2, 3, 4, 5, 6, 7]


async def test_second_run_started_for_same_id_is_refused(journal: Journal) -> None:
    await journal.append("r", [started(workflow="one")])
    await journal.append("r", steps(2, 3))
    with pytest.raises(RunAlreadyExists) as caught:
        await journal.append("r", [started(workflow="two")])
    assert caught.value.run_id == "r"
    info = await journal.get_run("r")
    assert info is not None and (info.workflow, info.last_seq) == ("one", 3)
    assert await seqs(journal, "r") == [1, 2, 3]


async def test_continuing_an_unknown_run_is_refused(journal: Journal) -> None:
    with pytest.raises(RunNotFound) as caught:
        await journal.append("ghost", steps(2, 3))
    assert caught.value.run_id == "ghost"
    with pytest.raises(RunNotFound):
        await journal.append("ghost", steps(1, 1))  # seq 1 that is not run_started creates nothing either
    assert await journal.get_run("ghost") is None
    assert await journal.read("ghost") == []
    assert await journal.list_runs() == []


@pytest.mark.parametrize("first_seq", [2, 3, 5, 7])  # 2 and 3 are taken, 5 and 7 leave a gap
async def test_batch_at_wrong_seq_is_a_conflict_and_writes_nothing(journal: Journal, first_seq: int) -> None:
    await journal.append("r", [started()])
    await journal.append("r", steps(2, 3))
    with pytest.raises(SeqConflict) as caught:
        await journal.append("r", steps(first_seq, first_seq + 2))
    assert (caught.value.run_id, caught.value.expected, caught.value.actual) == ("r", first_seq, 3)
    assert await seqs(journal, "r") == [1, 2, 3]
    info = await journal.get_run("r")
    assert info is not None and info.last_seq == 3
    await journal.append("r", steps(4, 4))  # the run is still appendable at the right seq
    assert await seqs(journal, "r") == [1, 2, 3, 4]


@pytest.mark.parametrize("batch_seqs", [[2, 4], [2, 3, 3], [2, 1], [3, 2]])
async def test_non_contiguous_batch_is_refused_whole(journal: Journal, batch_seqs: list[int]) -> None:
    await journal.append("r", [started()])
    with pytest.raises(JournalError):
        await journal.append("r", [scheduled(s) for s in batch_seqs])
    assert await seqs(journal, "r") == [1]
    info = await journal.get_run("r")
    assert info is not None and info.last_seq == 1


async def test_run_started_later_in_a_batch_is_refused(journal: Journal) -> None:
    await journal.append("r", [started()])
    late = started().model_copy(update={"seq": 3})
    with pytest.raises(JournalError):
        await journal.append("r", [scheduled(2), late])
    assert await seqs(journal, "r") == [1]


async def test_empty_batch_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError):
        await journal.append("r", [])
    await journal.append("r", [started()])
    with pytest.raises(JournalError):
        await journal.append("r", [])
    assert await seqs(journal, "r") == [1]


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
async def test_status_follows_the_terminal_event(journal: Journal, kind: str) -> None:
    await journal.append("r", [started()])
    await journal.append("r", steps(2, 3))
    info = await journal.get_run("r")
    assert info is not None and info.status == "running"
    await journal.append("r", [scheduled(4), terminal(kind, 5)])
    info = await journal.get_run("r")
    assert info is not None and (info.status, info.last_seq) == (kind, 5)
    assert [r.run_id for r in await journal.list_runs(status=kind)] == ["r"]
    assert await journal.list_runs(status="running") == []


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
async def test_nothing_is_appended_after_a_terminal_event(journal: Journal, kind: str) -> None:
    await journal.append("r", [started()])
    await journal.append("r", [terminal(kind, 2)])
    with pytest.raises(JournalError):
        await journal.append("r", steps(3, 3))
    with pytest.raises(JournalError):
        await journal.append("r", [terminal("completed", 3)])
    assert await seqs(journal, "r") == [1, 2]
    info = await journal.get_run("r")
    assert info is not None and (info.status, info.last_seq) == (kind, 2)


async def test_events_after_a_terminal_event_in_one_batch_are_refused(journal: Journal) -> None:
    await journal.append("r", [started()])
    with pytest.raises(JournalError):
        await journal.append("r", [terminal("completed", 2), scheduled(3)])
    assert await seqs(journal, "r") == [1]
    info = await journal.get_run("r")
    assert info is not None and info.status == "running"


# -- concurrency -----------------------------------------------------------------------------


async def test_many_concurrent_appends_all_land_in_order(journal: Journal) -> None:
    runs, appends = 50, 20

    async def writer(i: int) -> None:
        run_id = f"run-{i:02d}"
        await journal.append(run_id, [started(at=i)])
        for seq in range(2, appends + 2):
            await journal.append(run_id, [scheduled(seq, node=f"{run_id}-{seq}")])

    async with anyio.create_task_group() as tg:
        for i in range(runs):
            tg.start_soon(writer, i)

    listed = await journal.list_runs()
    assert len(listed) == runs
    for i in range(runs):
        run_id = f"run-{i:02d}"
        events = await journal.read(run_id)
        assert [e.seq for e in events] == list(range(1, appends + 2))
        assert [getattr(e, "node", None) for e in events[1:]] == [f"{run_id}-{s}" for s in range(2, appends + 2)]
        info = await journal.get_run(run_id)
        assert info is not None and info.last_seq == appends + 1


async def test_concurrent_appends_to_one_run_commit_in_call_order(journal: Journal) -> None:
    # The engine relies on this: two fork branches commit their batches concurrently, in the
    # order they recorded them.
    await journal.append("r", [started()])
    async with anyio.create_task_group() as tg:
        for seq in range(2, 42):
            tg.start_soon(journal.append, "r", steps(seq, seq))
    assert await seqs(journal, "r") == list(range(1, 42))


async def test_a_refused_batch_does_not_undo_its_concurrent_neighbours(journal: Journal) -> None:
    for i in range(10):
        await journal.append(f"r{i}", [started(at=i)])
    outcomes: dict[str, BaseException | None] = {}

    async def attempt(run_id: str, first: int) -> None:
        try:
            await journal.append(run_id, steps(first, first + 1))
        except JournalError as exc:
            outcomes[run_id] = exc
        else:
            outcomes[run_id] = None

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(attempt, f"r{i}", 5 if i == 4 else 2)

    assert isinstance(outcomes.pop("r4"), SeqConflict)
    assert outcomes == {f"r{i}": None for i in range(10) if i != 4}
    for i in range(10):
        assert await seqs(journal, f"r{i}") == ([1] if i == 4 else [1, 2, 3])
