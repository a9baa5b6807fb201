"""Storage faults under a running engine: a full disk and I/O errors.

The promise (docs/semantics.md, "Shutdown and storage errors"): the caller gets a
``StorageError`` that says what to do, the failed transaction is rolled back whole, nothing
committed is lost, and once the cause is gone the run resumes and finishes with the result it
would have had. A full disk is made with ``SQLiteJournal.limit_pages`` on the engine's own
journal; an I/O error with ``durable.testing.io_error_at``.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from durable import DurableError, Engine, SQLiteJournal, StorageError, Workflow, context, step
from durable import events as ev
from durable.journal.sqlite import decode_event
from durable.testing import io_error_at, journal_violations, run_with_crashes

pytestmark = pytest.mark.anyio


# -- helpers ---------------------------------------------------------------------------------


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection of our own: it sees exactly what is committed."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        yield conn


def events_of(db: Path, run_id: str) -> list[ev.Event]:
    with raw(db) as conn:
        rows = conn.execute(
            "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    return [decode_event(*row) for row in rows]


def rows_of(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    """A run's rows, byte for byte as stored."""
    with raw(db) as conn:
        return conn.execute(
            "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()


def assert_consistent(db: Path) -> None:
    """Every run's journal keeps the invariants, the index agrees with it, and the file is intact."""
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        index = conn.execute("SELECT run_id, last_seq FROM runs ORDER BY run_id").fetchall()
        seqs = conn.execute("SELECT run_id, max(seq) FROM events GROUP BY run_id ORDER BY run_id").fetchall()
    assert index == seqs
    for run_id, _ in index:
        assert journal_violations(events_of(db, run_id)) == [], run_id


def page_count(db: Path) -> int:
    with raw(db) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def sqlite_journal(engine: Engine) -> SQLiteJournal:
    journal = engine.journal
    assert isinstance(journal, SQLiteJournal)
    return journal


CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    CALLS.clear()


@step
def fetch(n: int) -> int:
    CALLS[context().run_id + "/fetch"] += 1
    return n


@step
def blob(n: int) -> str:
    CALLS[context().run_id + "/blob"] += 1
    return "x" * (n * 1000)  # big enough to need new pages: 75 of them for n = 300


@step
def size(s: str) -> int:
    CALLS[context().run_id + "/size"] += 1
    return len(s)


big = Workflow("big").then(fetch).then(blob).then(size)


@step
def lane_a(n: int) -> str:
    return "a" * (n * 1000)


@step
def lane_b(n: int) -> str:
    return "b" * (n * 1000)


@step
def lengths(parts: dict[str, str]) -> int:
    return sum(len(p) for p in parts.values())


forked = Workflow("forked").then(fetch).fork().branch(lane_a).branch(lane_b).join(lengths)


# -- a full disk -----------------------------------------------------------------------------


async def test_disk_full_fails_the_run_cleanly_and_the_run_finishes_once_space_is_freed(tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    async with Engine(db) as engine:
        assert await engine.run(big, 3, run_id="small") == 3000
        before = rows_of(db, "small")
        sqlite_journal(engine).limit_pages(page_count(db))  # the disk is full from here on

        with pytest.raises(StorageError) as caught:
            await engine.run(big, 300, run_id="b")
        message = str(caught.value)
        assert isinstance(caught.value, DurableError)
        assert "database or disk is full" in message
        assert "the transaction was rolled back and nothing committed is lost" in message
        assert "free disk space (or raise the size limit), then resume the run" in message

        # blob returned, but its completion (committed with size's start) was rolled back whole.
        prefix = events_of(db, "b")
        assert [(e.type, getattr(e, "node", None)) for e in prefix][-2:] == [
            ("step_scheduled", "blob"),
            ("step_started", "blob"),
        ]
        assert CALLS["b/blob"] == 1
        with pytest.raises(StorageError, match="full"):  # further runs that need space fail the same way
            await engine.run(big, 200, run_id="c")
        assert rows_of(db, "small") == before  # nothing committed lost
        assert_consistent(db)

        sqlite_journal(engine).limit_pages(1_000_000)  # space freed
        assert await engine.run(big, 300, run_id="b") == 300_000
    assert events_of(db, "b")[: len(prefix)] == prefix
    assert CALLS["b/blob"] == 2 and CALLS["b/fetch"] == 1  # only the step whose completion was lost ran again

    async with Engine(db) as fresh:  # a restarted process has no cap: "c" resumes there
        assert await fresh.run(big, 200, run_id="c") == 200_000
    assert rows_of(db, "small") == before
    assert_consistent(db)


async def test_disk_full_in_a_fork_fails_every_grouped_append_and_half_applies_nothing(tmp_path: Path) -> None:
    db = tmp_path / "fork.db"
    async with Engine(db) as engine:
        await engine.run(big, 1, run_id="warm-up")
        sqlite_journal(engine).limit_pages(page_count(db))
        with pytest.raises(StorageError, match="full"):
            await engine.run(forked, 200, run_id="f")
        prefix = events_of(db, "f")
        assert not any(e.type == "step_completed" and getattr(e, "node", "").startswith("lane") for e in prefix)
        assert_consistent(db)
        sqlite_journal(engine).limit_pages(1_000_000)
        assert await engine.run(forked, 200, run_id="f") == 400_000
    assert events_of(db, "f")[: len(prefix)] == prefix
    assert_consistent(db)


# -- I/O errors ------------------------------------------------------------------------------

# How many write transactions a fault-free run of `big` makes: run_started; the first step's start;
# each step's completion with the next one's start; the last completion with run_completed.
WRITES = 5


def test_a_fault_free_run_of_big_makes_five_write_transactions(tmp_path: Path) -> None:
    outcome = run_with_crashes(big, 2, [], tmp_path / "count.db")
    assert outcome.arrivals["before_commit"] == WRITES


@pytest.mark.parametrize("n", range(1, WRITES + 1))
async def test_an_io_error_at_any_write_fails_the_run_and_it_resumes_after(tmp_path: Path, n: int) -> None:
    db = tmp_path / "io.db"
    async with Engine(db) as engine:
        with io_error_at(n):
            with pytest.raises(StorageError) as caught:
                await engine.run(big, 2, run_id="r")
        assert "disk I/O error; the transaction was rolled back and nothing committed is lost" in str(caught.value)
        assert "check the disk and the file, then resume the run" in str(caught.value)
        prefix = events_of(db, "r")
        assert len(prefix) == [0, 1, 3, 6, 9][n - 1]  # exactly the n - 1 transactions before the failed one
        if prefix:
            assert_consistent(db)
        assert await engine.run(big, 2, run_id="r") == 2000
    assert events_of(db, "r")[: len(prefix)] == prefix
    assert_consistent(db)


async def test_a_persistent_io_error_keeps_failing_until_it_clears(tmp_path: Path) -> None:
    db = tmp_path / "io.db"
    async with Engine(db) as engine:
        with io_error_at(3, persistent=True):
            with pytest.raises(StorageError, match="disk I/O error"):
                await engine.run(big, 4, run_id="r")
            prefix = events_of(db, "r")
            for _ in range(3):  # resuming while the disk is still failing fails too, and writes nothing
                with pytest.raises(StorageError, match="then resume the run"):
                    await engine.run(big, 4, run_id="r")
                assert events_of(db, "r") == prefix
            with pytest.raises(StorageError):  # and so does a new run
                await engine.run(big, 5, run_id="other")
        assert [e.type for e in prefix] == ["run_started", "step_scheduled", "step_started"]
        assert_consistent(db)
        assert await engine.run(big, 4, run_id="r") == 4000
        assert await engine.run(big, 5, run_id="other") == 5000
    assert events_of(db, "r")[: len(prefix)] == prefix
    # fetch ran, and its completion could not be committed; while the disk failed, its next attempt's
    # step_started could not be committed either, so it did not run again until the fault cleared.
    assert CALLS["r/fetch"] == 2
    assert_consistent(db)


def test_io_error_at_refuses_a_count_below_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        with io_error_at(0):
            pass


async def test_the_fault_is_gone_when_the_block_ends(tmp_path: Path) -> None:
    db = tmp_path / "io.db"
    with io_error_at(1, persistent=True):
        pass
    async with Engine(db) as engine:
        assert await engine.run(big, 1, run_id="r") == 1000
    assert_consistent(db)


def test_io_errors_in_a_fork_leave_a_consistent_prefix_at_every_write(tmp_path: Path) -> None:
    baseline = run_with_crashes(forked, 20, [], tmp_path / "count.db")
    writes = baseline.arrivals["before_commit"]
    assert writes >= 4
    failed = [anyio.run(io_error_in_fork, tmp_path / f"fork-{n}.db", n) for n in range(1, writes + 1)]
    assert sum(failed) >= writes - 1


async def io_error_in_fork(db: Path, n: int) -> bool:
    """Fail the n-th write under a fork; resume; check. Whether the fault hit the run."""
    async with Engine(db) as engine:
        with io_error_at(n):
            try:
                result = await engine.run(forked, 20, run_id="f")
            except StorageError:
                result = None  # group commit may need one write fewer; then the run just finishes
        failed = result is None
        if failed:
            prefix = events_of(db, "f")
            if prefix:
                assert_consistent(db)
            result = await engine.run(forked, 20, run_id="f")
            assert events_of(db, "f")[: len(prefix)] == prefix
    assert result == 40_000
    assert_consistent(db)
    return failed
