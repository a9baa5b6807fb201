"""Bad input never damages the database: each mistake is refused with a clear error and the
file (a journal, or a file that is not ours) is left as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import (
    DurableError,
    Engine,
    JournalError,
    NotADurableDatabase,
    RunFailed,
    RunNotFound,
    SerializationError,
    StorageError,
    Workflow,
)

pytestmark = pytest.mark.anyio


def add_one(x: int) -> int:
    return x + 1


def needs_int(x: int) -> int:
    return x * 2


WF = Workflow("failures").then(add_one)
STRICT = Workflow("strict").then(needs_int)


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        yield conn


def content(db: Path) -> tuple[list[Any], list[Any]]:
    """Everything the journal holds, row by row."""
    with raw(db) as conn:
        runs = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        events = conn.execute("SELECT * FROM events ORDER BY run_id, seq").fetchall()
    return runs, events


def integrity_ok(db: Path) -> bool:
    with raw(db) as conn:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


@pytest.fixture
async def journal_db(tmp_path: Path, anyio_backend: str) -> Path:
    """A journal that already holds a finished run and an unfinished one."""
    db = tmp_path / "app.db"
    async with Engine(db) as engine:
        assert await engine.run(WF, 1, run_id="done") == 2
        await engine.journal.append("open", (await engine.history("done"))[:1])
    return db


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- unknown runs ----------------------------------------------------------------------------


async def test_an_unknown_run_id_is_refused_and_the_journal_unchanged(journal_db: Path) -> None:
    before = content(journal_db)
    async with Engine(journal_db) as engine:
        for call in (
            lambda: engine.resume("nope", WF),
            lambda: engine.history("nope"),
            lambda: engine.state("nope"),
            lambda: engine.state("nope", at=1),
        ):
            with pytest.raises(RunNotFound) as caught:
                await call()
            assert caught.value.run_id == "nope"
            assert "'nope'" in str(caught.value) and "durable runs" in str(caught.value)
        assert await engine.journal.get_run("nope") is None
    assert content(journal_db) == before
    assert integrity_ok(journal_db)


# -- bad values ------------------------------------------------------------------------------


async def test_a_step_input_that_fails_validation_fails_the_run_cleanly(journal_db: Path) -> None:
    runs_before, events_before = content(journal_db)
    async with Engine(journal_db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(STRICT, "not a number", run_id="bad-input")
        history = await engine.history("bad-input")
    err = caught.value
    assert err.node == "needs_int" and err.error_type == "SerializationError"
    assert isinstance(err.__cause__, SerializationError)
    assert "'needs_int'" in str(err) and "str" in str(err)
    assert [e.type for e in history] == ["run_started", "step_scheduled", "step_started", "step_failed", "run_failed"]
    assert history[3].final is True
    runs_after, events_after = content(journal_db)
    assert [r for r in runs_after if r[0] != "bad-input"] == runs_before  # other runs untouched
    assert [e for e in events_after if e[0] != "bad-input"] == events_before
    assert integrity_ok(journal_db)


async def test_a_run_input_that_cannot_be_encoded_writes_nothing(journal_db: Path) -> None:
    before = content(journal_db)
    async with Engine(journal_db) as engine:
        with pytest.raises(SerializationError, match="input"):
            await engine.start(WF, object(), run_id="opaque")
        with pytest.raises(SerializationError):
            await engine.run(WF, {1, 2, object()}, run_id="opaque")
        assert await engine.journal.get_run("opaque") is None
    assert content(journal_db) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"run_id": ""}, "non-empty"),
        ({"run_id": 42}, "non-empty"),
        ({"run_id": "x", "on_conflict": "replace"}, "on_conflict"),
    ],
)
async def test_bad_start_arguments_write_nothing(journal_db: Path, kwargs: dict[str, Any], match: str) -> None:
    before = content(journal_db)
    async with Engine(journal_db) as engine:
        with pytest.raises(DurableError, match=match):
            await engine.start(WF, 1, **kwargs)
    assert content(journal_db) == before


async def test_something_that_is_not_a_workflow_is_refused(journal_db: Path) -> None:
    before = content(journal_db)
    open_fork = Workflow("half").then(add_one).fork().branch(needs_int)
    async with Engine(journal_db) as engine:
        with pytest.raises(DurableError, match="not a Workflow"):
            await engine.start(add_one, 1)  # type: ignore[arg-type]
        with pytest.raises(DurableError, match="still open"):
            await engine.start(open_fork, 1)  # type: ignore[arg-type]
        with pytest.raises(DurableError, match="no steps"):
            await engine.start(Workflow("empty"), 1)
    assert content(journal_db) == before


# -- files that are not journals, paths that do not exist ------------------------------------


async def test_a_file_that_is_not_a_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: milk, eggs\n")
    before = digest(notes)
    with pytest.raises(NotADurableDatabase) as caught:
        async with Engine(notes) as engine:
            await engine.run(WF, 1)
    assert str(notes) in str(caught.value)
    assert digest(notes) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


async def test_a_missing_directory_is_a_storage_error_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "there"
    with pytest.raises(StorageError) as caught:
        async with Engine(missing / "app.db"):
            pass
    assert str(missing) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_the_sync_helper_refuses_the_same_files(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"\x00\x01 not a database")
    before = digest(notes)
    with pytest.raises(NotADurableDatabase):
        durable.run(WF, 1, db=notes)
    assert digest(notes) == before
    with pytest.raises(StorageError, match="does not exist"):
        durable.run(WF, 1, db=tmp_path / "missing" / "app.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -- an engine used outside its block --------------------------------------------------------


async def test_an_engine_used_without_async_with_says_so(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    engine = Engine(db)
    for call in (
        lambda: engine.start(WF, 1),
        lambda: engine.run(WF, 1),
        lambda: engine.resume("r", WF),
    ):
        with pytest.raises(DurableError, match="async with"):
            await call()
    for call in (lambda: engine.history("r"), lambda: engine.list_runs(), lambda: engine.recover([WF])):
        with pytest.raises(JournalError, match="async with"):
            await call()
    assert not db.exists()


async def test_an_engine_used_after_its_block_says_so(journal_db: Path) -> None:
    before = content(journal_db)
    async with Engine(journal_db) as engine:
        pass
    with pytest.raises(DurableError, match="async with"):
        await engine.start(WF, 1, run_id="late")
    with pytest.raises(DurableError, match="async with"):
        await engine.resume("open", WF)
    assert content(journal_db) == before
