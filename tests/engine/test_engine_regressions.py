"""Regression tests for bugs found while writing the engine tests (each failed before its fix)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from durable import Engine, NotADurableDatabase, RunFailed, SQLiteJournal, StepTimeout, Workflow, step
from durable import events as ev

pytestmark = pytest.mark.anyio


# Bug A: a sync step past its timeout completes (docs/semantics.md: "its attempt is failed as
# timed out when the thread returns, and its return value is discarded").
async def test_a_sync_step_past_its_timeout_is_failed_when_its_thread_returns(tmp_path: Path) -> None:
    returned: list[int] = []

    @step(timeout="50ms")
    def slow(x: int) -> int:
        time.sleep(0.3)
        returned.append(x)
        return x

    async with Engine(tmp_path / "a.db") as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(Workflow("timeout-sync").then(slow), 1, run_id="r")
        history = await engine.history("r")
    assert returned == [1]
    assert isinstance(caught.value.__cause__, StepTimeout)
    assert "step_completed" not in [e.type for e in history]


# Bug B: a TimeoutError raised by the step itself is recorded as StepTimeout ("did not finish
# within 30s") although the step failed at once with its own error.
async def test_a_steps_own_timeout_error_is_not_reported_as_step_timeout(tmp_path: Path) -> None:
    @step(timeout="30s")
    async def call_api(x: int) -> int:
        raise TimeoutError("upstream read timed out")

    async with Engine(tmp_path / "b.db") as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(Workflow("own-timeout").then(call_api), 1, run_id="r")
        history = await engine.history("r")
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert not isinstance(caught.value.__cause__, StepTimeout)
    failed = next(e for e in history if e.type == "step_failed")
    assert (failed.error.type, failed.error.message) == ("TimeoutError", "upstream read timed out")


# Bug C/G: a step of a sibling branch starts after the fork was cancelled by a failing branch;
# the failure (step_failed final, branch_failed) is committed by that sibling's commit, apart
# from run_failed.
async def test_no_sibling_step_starts_after_a_branch_failed_for_good(tmp_path: Path) -> None:
    ran: list[str] = []

    def a1(x: int) -> int:
        time.sleep(0.2)  # a sync step: its thread returns after the sibling failed
        return x

    async def a2(x: int) -> int:
        ran.append("a2")
        await anyio.sleep(10)
        return x

    async def b1(x: int) -> int:
        await anyio.sleep(0.05)
        raise ValueError("b1 failed")

    def j(d: dict[str, int]) -> int:
        return 0

    async with Engine(tmp_path / "g.db") as engine:
        with pytest.raises(RunFailed):
            await engine.run(Workflow("g").fork().branch(a1, a2).branch(b1).join(j), 1, run_id="r")
        history = await engine.history("r")
    assert ran == []
    failed_at = next(e.seq for e in history if e.type == "branch_failed")
    assert not [e for e in history if e.type == "step_started" and e.seq > failed_at]


# Bug F: resuming a run whose branch failure was committed but not its run_failed appends a
# second branch_failed and restarts the other branches.
async def test_resuming_after_a_committed_branch_failure_starts_nothing(tmp_path: Path) -> None:
    ran: list[str] = []

    async def x(v: int) -> int:
        ran.append("x")
        return v

    async def y(v: int) -> int:
        ran.append("y")
        await anyio.sleep(10)
        return v

    def j(d: dict[str, int]) -> int:
        return 0

    wf = Workflow("f").fork().branch(x).branch(y).join(j)
    t = ev.utcnow
    err = ev.ErrorInfo(type="ValueError", message="x failed", node="x")
    async with Engine(tmp_path / "f.db") as engine:
        await engine.journal.append(
            "r",
            [
                ev.RunStarted(
                    seq=1,
                    ts=t(),
                    workflow=wf.name,
                    version=wf.version,
                    definition_hash=wf.definition_hash,
                    definition=wf.canonical(),
                    input=1,
                ),
                ev.ForkStarted(seq=2, ts=t(), node="fork-1", branches=["x", "y"]),
                ev.StepScheduled(seq=3, ts=t(), node="x", attempt=1),
                ev.StepStarted(seq=4, ts=t(), node="x", attempt=1),
                ev.StepScheduled(seq=5, ts=t(), node="y", attempt=1),
                ev.StepStarted(seq=6, ts=t(), node="y", attempt=1),
                ev.StepFailed(seq=7, ts=t(), node="x", attempt=1, error=err, final=True),
                ev.BranchFailed(seq=8, ts=t(), node="fork-1", branch="x", error=err),
            ],
        )
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, run_id="r")
        history = await engine.history("r")
    assert caught.value.node == "x"
    assert ran == []
    assert [e.type for e in history[8:]] == ["run_failed"]


# Bug D: an empty SQLite file that another application marked with its application_id is taken
# over (its application_id overwritten).
async def test_an_empty_database_of_another_application_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "theirs.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.commit()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(NotADurableDatabase):
        async with SQLiteJournal(db):
            pass
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


# Bug E: refusing another application's WAL-mode database leaves -wal and -shm files beside it.
async def test_refusing_a_wal_mode_database_of_another_application_creates_no_files(tmp_path: Path) -> None:
    db = tmp_path / "theirs.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]
    with pytest.raises(NotADurableDatabase):
        async with SQLiteJournal(db):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]
