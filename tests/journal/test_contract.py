"""One contract suite, run against every journal implementation.

Every test receives a fresh, open journal from the parametrised ``journal`` fixture; a new
implementation joins the suite by adding one entry to ``JOURNALS``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import (
    InMemoryJournal,
    Journal,
    JournalError,
    Lease,
    LeaseLost,
    LeaseRequired,
    Owner,
    RunAlreadyExists,
    RunBusy,
    RunNotFound,
    SeqConflict,
    SQLiteJournal,
)
from durable import events as ev

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)

JOURNALS: dict[str, Callable[[Path], Journal]] = {
    "memory": lambda tmp: InMemoryJournal(),
    "sqlite": lambda tmp: SQLiteJournal(tmp / "j.db"),
}


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


OWNER = Owner("contract-owner", "contract-host", 4242)


async def append(journal: Journal, run_id: str, events: list[ev.Event]) -> None:
    """Append as the run's owner: every run here is created holding this lease (token 1), and keeps it."""
    await journal.append(run_id, events, lease=Lease(run_id, OWNER.name, 1), owner=OWNER, ttl=3600)


async def seqs(journal: Journal, run_id: str) -> list[int]:
    return [e.seq for e in await journal.read(run_id)]


# -- creating runs ---------------------------------------------------------------------------


async def test_run_started_at_seq_1_creates_the_run(journal: Journal) -> None:
    assert await journal.get_run("r") is None
    first = started(workflow="checkout", version="3")
    await append(journal, "r", [first])
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
    await append(journal, "r", batch[:1])
    await append(journal, "r", batch[1:])
    assert await journal.read("r") == batch


# -- listing runs ----------------------------------------------------------------------------


async def test_list_runs_newest_first_filtered_and_limited(journal: Journal) -> None:
    await append(journal, "a1", [started(workflow="alpha", at=1)])
    await append(journal, "b2", [started(workflow="beta", at=2)])
    await append(journal, "a3", [started(workflow="alpha", at=3)])
    await append(journal, "a4", [started(workflow="alpha", at=4)])
    await append(journal, "a3", [scheduled(2), terminal("completed", 3)])
    await append(journal, "b2", [terminal("failed", 2)])

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
    await append(journal, "r", [started()])
    await append(journal, "r", steps(2, 2))
    await append(journal, "r", steps(3, 6))
    await append(journal, "r", steps(7, 7))
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
    await append(journal, "r", [started(workflow="one")])
    await append(journal, "r", steps(2, 3))
    with pytest.raises(RunAlreadyExists) as caught:
        await append(journal, "r", [started(workflow="two")])
    assert caught.value.run_id == "r"
    info = await journal.get_run("r")
    assert info is not None and (info.workflow, info.last_seq) == ("one", 3)
    assert await seqs(journal, "r") == [1, 2, 3]


async def test_continuing_an_unknown_run_is_refused(journal: Journal) -> None:
    with pytest.raises(RunNotFound) as caught:
        await append(journal, "ghost", steps(2, 3))
    assert caught.value.run_id == "ghost"
    with pytest.raises(RunNotFound):
        await append(journal, "ghost", steps(1, 1))  # seq 1 that is not run_started creates nothing either
    assert await journal.get_run("ghost") is None
    assert await journal.read("ghost") == []
    assert await journal.list_runs() == []


@pytest.mark.parametrize("first_seq", [2, 3, 5, 7])  # 2 and 3 are taken, 5 and 7 leave a gap
async def test_batch_at_wrong_seq_is_a_conflict_and_writes_nothing(journal: Journal, first_seq: int) -> None:
    await append(journal, "r", [started()])
    await append(journal, "r", steps(2, 3))
    with pytest.raises(SeqConflict) as caught:
        await append(journal, "r", steps(first_seq, first_seq + 2))
    assert (caught.value.run_id, caught.value.expected, caught.value.actual) == ("r", first_seq, 3)
    assert await seqs(journal, "r") == [1, 2, 3]
    info = await journal.get_run("r")
    assert info is not None and info.last_seq == 3
    await append(journal, "r", steps(4, 4))  # the run is still appendable at the right seq
    assert await seqs(journal, "r") == [1, 2, 3, 4]


@pytest.mark.parametrize("batch_seqs", [[2, 4], [2, 3, 3], [2, 1], [3, 2]])
async def test_non_contiguous_batch_is_refused_whole(journal: Journal, batch_seqs: list[int]) -> None:
    await append(journal, "r", [started()])
    with pytest.raises(JournalError):
        await append(journal, "r", [scheduled(s) for s in batch_seqs])
    assert await seqs(journal, "r") == [1]
    info = await journal.get_run("r")
    assert info is not None and info.last_seq == 1


async def test_run_started_later_in_a_batch_is_refused(journal: Journal) -> None:
    await append(journal, "r", [started()])
    late = started().model_copy(update={"seq": 3})
    with pytest.raises(JournalError):
        await append(journal, "r", [scheduled(2), late])
    assert await seqs(journal, "r") == [1]


async def test_empty_batch_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError):
        await append(journal, "r", [])
    await append(journal, "r", [started()])
    with pytest.raises(JournalError):
        await append(journal, "r", [])
    assert await seqs(journal, "r") == [1]


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
async def test_status_follows_the_terminal_event(journal: Journal, kind: str) -> None:
    await append(journal, "r", [started()])
    await append(journal, "r", steps(2, 3))
    info = await journal.get_run("r")
    assert info is not None and info.status == "running"
    await append(journal, "r", [scheduled(4), terminal(kind, 5)])
    info = await journal.get_run("r")
    assert info is not None and (info.status, info.last_seq) == (kind, 5)
    assert [r.run_id for r in await journal.list_runs(status=kind)] == ["r"]
    assert await journal.list_runs(status="running") == []


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
async def test_nothing_is_appended_after_a_terminal_event(journal: Journal, kind: str) -> None:
    await append(journal, "r", [started()])
    await append(journal, "r", [terminal(kind, 2)])
    with pytest.raises(JournalError):
        await append(journal, "r", steps(3, 3))
    with pytest.raises(JournalError):
        await append(journal, "r", [terminal("completed", 3)])
    assert await seqs(journal, "r") == [1, 2]
    info = await journal.get_run("r")
    assert info is not None and (info.status, info.last_seq) == (kind, 2)


async def test_events_after_a_terminal_event_in_one_batch_are_refused(journal: Journal) -> None:
    await append(journal, "r", [started()])
    with pytest.raises(JournalError):
        await append(journal, "r", [terminal("completed", 2), scheduled(3)])
    assert await seqs(journal, "r") == [1]
    info = await journal.get_run("r")
    assert info is not None and info.status == "running"


# -- concurrency -----------------------------------------------------------------------------


async def test_many_concurrent_appends_all_land_in_order(journal: Journal) -> None:
    runs, appends = 50, 20

    async def writer(i: int) -> None:
        run_id = f"run-{i:02d}"
        await append(journal, run_id, [started(at=i)])
        for seq in range(2, appends + 2):
            await append(journal, run_id, [scheduled(seq, node=f"{run_id}-{seq}")])

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
    await append(journal, "r", [started()])
    async with anyio.create_task_group() as tg:
        for seq in range(2, 42):
            tg.start_soon(append, journal, "r", steps(seq, seq))
    assert await seqs(journal, "r") == list(range(1, 42))


async def test_a_refused_batch_does_not_undo_its_concurrent_neighbours(journal: Journal) -> None:
    for i in range(10):
        await append(journal, f"r{i}", [started(at=i)])
    outcomes: dict[str, BaseException | None] = {}

    async def attempt(run_id: str, first: int) -> None:
        try:
            await append(journal, run_id, steps(first, first + 1))
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


# -- leases: who may write ---------------------------------------------------------------------

A = Owner("owner-a", "host-a", 101)
B = Owner("owner-b", "host-b", 202)


async def test_an_append_without_a_lease_is_refused_while_the_run_is_held(journal: Journal) -> None:
    await append(journal, "r", [started()])
    with pytest.raises(RunBusy) as busy:
        await journal.append("r", steps(2, 2))
    assert (busy.value.owner, busy.value.pid, busy.value.host) == (OWNER.name, OWNER.pid, OWNER.host)
    assert "pid 4242 on contract-host" in str(busy.value)
    assert await seqs(journal, "r") == [1]


async def test_an_append_without_a_lease_is_refused_when_nobody_holds_the_run(journal: Journal) -> None:
    await journal.append("r", [started()])  # created unowned, as engine.submit does
    info = await journal.get_run("r")
    assert info is not None and info.lease_owner is None
    with pytest.raises(LeaseRequired):
        await journal.append("r", steps(2, 2))
    lease = await journal.acquire("r", A, 60)
    await journal.append("r", steps(2, 2), lease=lease)
    assert await seqs(journal, "r") == [1, 2]


async def test_a_new_run_is_created_holding_its_lease(journal: Journal) -> None:
    await append(journal, "r", [started()])
    info = await journal.get_run("r")
    assert info is not None
    assert (info.lease_owner, info.lease_token, info.lease_host, info.lease_pid) == (
        OWNER.name,
        1,
        "contract-host",
        4242,
    )
    assert info.lease_since is not None and info.lease_expires_at == info.lease_since + timedelta(seconds=3600)
    assert abs((info.lease_since - ev.utcnow()).total_seconds()) < 60  # taken when committed
    with pytest.raises(JournalError):  # a new run's lease has token 1
        await journal.append("s", [started()], lease=Lease("s", A.name, 2), owner=A, ttl=60)
    assert await journal.get_run("s") is None


async def test_acquire_takes_a_free_lease_and_refuses_a_live_one(journal: Journal) -> None:
    await journal.append("r", [started()])
    lease = await journal.acquire("r", A, 60)
    assert (lease.run_id, lease.owner, lease.token) == ("r", A.name, 1)
    with pytest.raises(RunBusy) as busy:
        await journal.acquire("r", B, 60)
    assert busy.value.owner == A.name and busy.value.host == "host-a" and busy.value.pid == 101
    info = await journal.get_run("r")
    assert info is not None and (info.lease_owner, info.lease_token, info.takeovers) == (A.name, 1, 0)
    with pytest.raises(RunNotFound):
        await journal.acquire("ghost", A, 60)


async def test_a_stale_token_cannot_write_after_a_takeover(journal: Journal) -> None:
    await journal.append("r", [started()])
    old = await journal.acquire("r", A, -1)  # expired at once: anybody may take it over
    await journal.append("r", steps(2, 2), lease=old)  # nobody took it yet: the holder may still write
    new = await journal.acquire("r", B, 60)
    assert new.token == old.token + 1
    with pytest.raises(LeaseLost):
        await journal.append("r", steps(3, 3), lease=old)
    await journal.append("r", steps(3, 3), lease=new)
    info = await journal.get_run("r")
    assert info is not None and (info.lease_owner, info.takeovers, info.last_seq) == (B.name, 1, 3)


async def test_acquire_replacing_a_dead_holder_needs_exactly_its_lease(journal: Journal) -> None:
    await journal.append("r", [started()])
    dead = await journal.acquire("r", A, 3600)
    with pytest.raises(RunBusy):  # not the lease it holds now: refused
        await journal.acquire("r", B, 60, replacing=Lease("r", A.name, dead.token + 1))
    taken = await journal.acquire("r", B, 60, replacing=dead)
    assert taken.token == dead.token + 1
    with pytest.raises(LeaseLost):
        await journal.append("r", steps(2, 2), lease=dead)


async def test_release_and_renew_are_fenced(journal: Journal) -> None:
    await journal.append("r", [started()])
    old = await journal.acquire("r", A, -1)
    new = await journal.acquire("r", B, 60)
    assert await journal.renew([old, new], 60) == ["r"]
    await journal.release(old)  # a stale release is a no-op
    info = await journal.get_run("r")
    assert info is not None and info.lease_owner == B.name
    await journal.release(new)
    info = await journal.get_run("r")
    assert info is not None and (info.lease_owner, info.lease_host, info.lease_pid, info.lease_since) == (
        None, None, None, None,
    )  # fmt: skip
    with pytest.raises(LeaseLost):  # released: nobody writes until someone owns it again
        await journal.append("r", steps(2, 2), lease=new)


async def test_a_finished_run_has_no_owner_and_cannot_be_acquired(journal: Journal) -> None:
    await append(journal, "r", [started()])
    await append(journal, "r", [terminal("completed", 2)])
    info = await journal.get_run("r")
    assert info is not None and info.lease_owner is None and info.status == "completed"
    with pytest.raises(JournalError):
        await journal.acquire("r", A, 60)
    assert await journal.lease_holders("contract-host") == []


async def test_lease_holders_lists_each_owner_of_a_host_once(journal: Journal) -> None:
    for i in range(3):
        await journal.append(f"r{i}", [started(at=i)])
    await journal.acquire("r0", A, 60)
    await journal.acquire("r1", A, 60)
    await journal.acquire("r2", B, 60)
    assert await journal.lease_holders("host-a") == [(A.name, 101)]
    assert await journal.lease_holders("host-b") == [(B.name, 202)]
    assert await journal.lease_holders("elsewhere") == []


# -- claims ------------------------------------------------------------------------------------


async def test_claim_takes_ready_unowned_runs_oldest_first(journal: Journal) -> None:
    for i in range(3):
        await journal.append(f"r{i}", [started(at=i)])
    await append(journal, "held", [started(at=3)])  # created held by its engine: never claimed
    claims = await journal.claim(A, hashes=["h-wf"], limit=5, ttl=60)
    assert [c.lease.run_id for c in claims] == ["r0", "r1", "r2"]
    assert all(c.lease.owner == A.name and c.takeovers == 0 for c in claims)
    info = await journal.get_run("r0")
    assert info is not None and (info.lease_host, info.lease_pid) == ("host-a", 101)
    assert await journal.claim(B, hashes=["h-wf"], limit=5, ttl=60) == []


async def test_claim_treats_the_leases_of_dead_owners_as_expired(journal: Journal) -> None:
    await append(journal, "r", [started()])
    assert await journal.claim(A, hashes=["h-wf"], limit=1, ttl=60) == []
    (claim,) = await journal.claim(A, hashes=["h-wf"], limit=1, ttl=60, dead=[OWNER.name])
    assert claim.lease.token == 2 and claim.takeovers == 1
    with pytest.raises(LeaseLost):
        await append(journal, "r", steps(2, 2))  # the dead owner, back: fenced out


async def test_workflow_caps_count_only_running_runs(journal: Journal) -> None:
    for i in range(3):
        await journal.append(f"r{i}", [started(at=i)])
    (first,) = await journal.claim(A, hashes=["h-wf"], limit=5, ttl=60, workflow_limits={"wf": 1})
    assert await journal.claim(A, hashes=["h-wf"], limit=5, ttl=60, workflow_limits={"wf": 1}) == []
    await journal.append(first.lease.run_id, [terminal("cancelled", 2)], lease=first.lease)  # gives its slot back
    (second,) = await journal.claim(A, hashes=["h-wf"], limit=5, ttl=60, workflow_limits={"wf": 1})
    assert second.lease.run_id == "r1"


# -- signals and children ----------------------------------------------------------------------


async def test_signals_are_kept_in_order_and_refused_after_the_end(journal: Journal) -> None:
    await append(journal, "r", [started()])
    one = await journal.send_signal("r", "go", {"n": 1})
    two = await journal.send_signal("r", "stop", [1, 2])
    assert one.id < two.id
    assert [s.payload for s in await journal.read_signals("r")] == [{"n": 1}, [1, 2]]
    assert [s.name for s in await journal.read_signals("r", name="stop")] == ["stop"]
    assert [s.id for s in await journal.read_signals(None, after=one.id)] == [two.id]
    with pytest.raises(RunNotFound):
        await journal.send_signal("ghost", "go", None)
    await append(journal, "r", [terminal("completed", 2)])
    with pytest.raises(JournalError):
        await journal.send_signal("r", "go", None)


async def test_list_runs_by_parent(journal: Journal) -> None:
    await append(journal, "p", [started()])
    child = started(at=1).model_copy(update={"parent": ev.ParentRef(run_id="p", node="c")})
    await append(journal, "p/c", [child])
    assert [r.run_id for r in await journal.list_runs(parent="p")] == ["p/c"]
    assert await journal.list_runs(parent="p/c") == []


# -- fencing, as a property over random interleavings ------------------------------------------

OWNERS = [Owner(f"o{i}", "prop-host", 300 + i) for i in range(3)]
_op = st.one_of(
    st.tuples(st.just("acquire"), st.integers(0, 2), st.sampled_from([3600.0, -1.0])),
    st.tuples(st.just("takeover"), st.integers(0, 2), st.just(3600.0)),
    st.tuples(st.just("append"), st.integers(0, 2), st.just(0.0)),
    st.tuples(st.just("release"), st.integers(0, 2), st.just(0.0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=25))
async def test_only_the_current_lease_holder_ever_writes(journal: Journal, ops: list[tuple[str, int, float]]) -> None:
    run_id = f"prop-{uuid.uuid4().hex}"
    await journal.append(run_id, [started()])
    held: dict[int, Lease] = {}  # the lease each owner believes it holds
    current: tuple[str, int] | None = None  # the model: who holds the run, with which token
    expired = False
    token = 0
    last_seq = 1
    for kind, who, ttl in ops:
        owner = OWNERS[who]
        if kind in ("acquire", "takeover"):
            replacing = None
            if kind == "takeover" and current is not None:
                replacing = Lease(run_id, current[0], current[1])  # found dead: take exactly its lease
            may = current is None or expired or replacing is not None
            try:
                lease = await journal.acquire(run_id, owner, ttl, replacing=replacing)
            except RunBusy:
                assert not may
                continue
            assert may
            token += 1
            assert lease.token == token
            held[who], current, expired = lease, (owner.name, token), ttl < 0
        elif kind == "append" and who in held:
            lease = held[who]
            ok = current == (lease.owner, lease.token)
            try:
                await journal.append(run_id, steps(last_seq + 1, last_seq + 1), lease=lease)
            except (LeaseLost, LeaseRequired):
                assert not ok
                continue
            assert ok, "a writer that does not hold the current lease wrote"
            last_seq += 1
        elif kind == "release" and who in held:
            lease = held.pop(who)
            await journal.release(lease)
            if current == (lease.owner, lease.token):
                current = None
    assert await seqs(journal, run_id) == list(range(1, last_seq + 1))
