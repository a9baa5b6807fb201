"""The SQLite journal's claim query and the in-memory journal's `claimable` rule agree.

`durable.journal.claimable` states who may claim a run; `SQLiteJournal` applies the same rule
in SQL. Hypothesis drives both journals through the same random histories (runs started,
sleeping, waiting for signals, paused, finished; signals sent; leases claimed and released)
and checks, after every claim, that both handed out the same runs in the same order.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from durable import InMemoryJournal, Owner, SQLiteJournal
from durable import events as ev
from durable.journal import Journal, Lease

HOUR = timedelta(hours=1)

START = st.tuples(st.just("start"), st.sampled_from(["h1", "h2"]))
ops = st.lists(
    st.one_of(
        START,
        st.tuples(st.just("sleep"), st.integers(0, 7), st.booleans()),  # run index, due already?
        st.tuples(st.just("wait"), st.integers(0, 7), st.sampled_from(["go", "stop"]), st.booleans()),
        st.tuples(st.just("signal"), st.integers(0, 7), st.sampled_from(["go", "stop"])),
        st.tuples(st.just("progress"), st.integers(0, 7)),
        st.tuples(st.just("pause"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("finish"), st.integers(0, 7)),
        st.tuples(st.just("claim"), st.sampled_from([("h1",), ("h2",), ("h1", "h2")]), st.integers(1, 4)),
        st.tuples(st.just("release"), st.integers(0, 7)),
    ),
    min_size=4,
    max_size=30,
)
histories = st.builds(lambda first, rest: first + rest, st.lists(START, min_size=1, max_size=4), ops)
"""A few runs first, then anything: most histories reach a claim with runs in several states."""


WRITER = Owner("writer")


async def _apply(journals: list[Journal], history: list[tuple[Any, ...]]) -> None:
    runs: list[str] = []
    last: dict[str, int] = {}
    finished: set[str] = set()
    leases: dict[str, list[Lease]] = {}
    sent: list[tuple[str, str]] = []  # (run, name), in id order: signal i has id i + 1

    async def append(run_id: str, event_type: Any, **fields: Any) -> None:
        event = event_type(seq=last[run_id] + 1, ts=ev.utcnow(), **fields)
        for j in journals:
            if event.seq == 1:
                await j.append(run_id, [event])  # created unowned, as engine.submit does
                continue
            mine = [lease for lease in leases.get(run_id, []) if lease.owner == f"owner-{id(j)}"]
            if mine:  # claimed: its holder writes
                await j.append(run_id, [event], lease=mine[-1])
            else:  # nobody holds it: take its lease, write, give it back (as a control call does)
                lease = await j.acquire(run_id, WRITER, -1)
                await j.append(run_id, [event], lease=lease)
                await j.release(lease)
        last[run_id] += 1

    for op in history:
        kind = op[0]
        if kind == "start":
            run_id = f"r{len(runs)}"
            runs.append(run_id)
            last[run_id] = 0
            await append(run_id, ev.RunStarted, workflow="w", version="1", definition_hash=op[1], definition={})
            continue
        if kind == "claim":
            claimed = [await j.claim(f"owner-{id(j)}", hashes=list(op[1]), limit=op[2], ttl=3600) for j in journals]
            ids = [[c.lease.run_id for c in claims] for claims in claimed]
            assert ids[0] == ids[1], f"after {history}: sqlite claimed {ids[0]}, memory {ids[1]}"
            for claims in claimed:
                for c in claims:
                    leases.setdefault(c.lease.run_id, []).append(c.lease)
            continue
        if not runs:
            continue
        run_id = runs[op[1] % len(runs)]
        if run_id in finished and kind != "release":
            continue
        now = ev.utcnow()
        if kind == "sleep":
            await append(run_id, ev.SleepStarted, node="s", until=now - HOUR if op[2] else now + HOUR)
        elif kind == "wait":
            # As the runner does: the wait remembers the newest signal of its name it has seen.
            seen = max((i + 1 for i, (r, n) in enumerate(sent) if r == run_id and n == op[2]), default=0)
            deadline = now - HOUR if op[3] else None
            await append(run_id, ev.WaitStarted, node="w", signal=op[2], deadline=deadline, seen_signal=seen)
        elif kind == "signal":
            for j in journals:
                await j.send_signal(run_id, op[2], None)
            sent.append((run_id, op[2]))
        elif kind == "progress":
            await append(run_id, ev.NodeCompleted, node="n")
        elif kind == "pause":
            await append(run_id, ev.RunPaused if op[2] else ev.RunUnpaused)
        elif kind == "finish":
            await append(run_id, ev.RunCompleted)
            finished.add(run_id)
        elif kind == "release":
            for lease in leases.pop(run_id, []):
                for j in journals:
                    await j.release(lease)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories)
# Histories that random draws reach only now and then, pinned:
@example([("start", "h1"), ("signal", 0, "go"), ("wait", 0, "go", False), ("claim", ("h1",), 1)])  # seen already
@example([("start", "h1"), ("wait", 0, "go", False), ("signal", 0, "stop"), ("claim", ("h1",), 1)])  # other name
@example([("start", "h1"), ("wait", 0, "go", False), ("signal", 0, "go"), ("claim", ("h1",), 1)])  # new: wakes
@example([("start", "h1"), ("wait", 0, "go", True), ("claim", ("h1",), 1)])  # deadline passed
@example([("start", "h2"), ("sleep", 0, True), ("start", "h2"), ("claim", ("h2",), 1)])  # due, and oldest first
@example([("start", "h1"), ("claim", ("h1",), 1), ("release", 0), ("claim", ("h1",), 1)])  # released, claimable
def test_sqlite_claims_exactly_what_claimable_allows(tmp_path: Path, history: list[tuple[Any, ...]]) -> None:
    async def main() -> None:
        path = tmp_path / f"parity-{uuid.uuid4().hex}.db"  # Hypothesis may replay a history: a new file each time
        async with SQLiteJournal(path, synchronous="OFF") as sqlite, InMemoryJournal() as memory:
            await _apply([sqlite, memory], history)

    anyio.run(main)
