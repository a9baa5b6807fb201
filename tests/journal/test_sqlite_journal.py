"""What only the SQLite journal promises: pragmas, schema marks, triggers, refusing foreign files,
two processes on one file, and a full disk."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from durable import JournalError, Lease, NotADurableDatabase, Owner, SeqConflict, SQLiteJournal, StorageError
from durable import events as ev
from durable.journal.sqlite import APPLICATION_ID, SCHEMA_VERSION

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


TESTER = Owner("tester", "test-host", 1)


def owned(run_id: str) -> dict[str, Any]:
    """Append as the run's owner: every run here is created holding this lease, and keeps it."""
    return {"lease": Lease(run_id, TESTER.name, 1), "owner": TESTER, "ttl": 3600}


def started(workflow: str = "wf") -> ev.RunStarted:
    return ev.RunStarted(
        seq=1, ts=T0, workflow=workflow, version="1", definition_hash="h", definition={"name": workflow}, input=None
    )


def scheduled(seq: int, node: str = "a", output_size: int = 0) -> ev.Event:
    if output_size:
        return ev.StepCompleted(seq=seq, ts=T0 + timedelta(seconds=seq), node=node, attempt=1, output="x" * output_size)
    return ev.StepScheduled(seq=seq, ts=T0 + timedelta(seconds=seq), node=node, attempt=1)


@contextmanager
def raw(path: Path, *, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "")
    with closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        yield conn


def writer_connection(journal: SQLiteJournal) -> sqlite3.Connection:
    # synchronous, busy_timeout and max_page_count are settings of a connection, not of the
    # file: only the journal's own write connection shows them, and no public API exposes it.
    conn = journal._writer
    assert conn is not None
    return conn


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# -- pragmas and schema marks ----------------------------------------------------------------


async def test_defaults_wal_full_sync_and_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    async with SQLiteJournal(db) as journal:
        conn = writer_connection(journal)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    with raw(db) as conn:  # WAL is a property of the file: it outlives the journal's connections
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_synchronous_normal_and_busy_timeout_when_asked(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "j.db", synchronous="NORMAL", busy_timeout=2.5) as journal:
        conn = writer_connection(journal)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500


def test_unknown_synchronous_value_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteJournal(tmp_path / "j.db", synchronous="SOMETIMES")  # type: ignore[arg-type]
    assert not (tmp_path / "j.db").exists()


async def test_schema_version_and_application_id_are_set(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    async with SQLiteJournal(db):
        pass
    with raw(db, readonly=True) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        assert {"runs", "events"} <= tables


async def test_an_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    db.touch()
    async with SQLiteJournal(db) as journal:
        await journal.append("r", [started()], **owned("r"))
    with raw(db, readonly=True) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


async def test_open_twice_is_harmless_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    journal = SQLiteJournal(db)
    await journal.open()
    await journal.open()
    try:
        await journal.append("r", [started("keep")], **owned("r"))
        await journal.append("r", [scheduled(2), scheduled(3, node="b")], **owned("r"))
        before = await journal.read("r")
    finally:
        await journal.close()
    async with SQLiteJournal(db) as again:
        assert await again.read("r") == before
        info = await again.get_run("r")
        assert info is not None and (info.workflow, info.last_seq, info.status) == ("keep", 3, "running")
        await again.append("r", [scheduled(4)], **owned("r"))
        assert [e.seq for e in await again.read("r")] == [1, 2, 3, 4]


async def test_closed_journal_refuses_appends_and_reads(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    with pytest.raises(JournalError, match="not open"):
        await journal.append("r", [started()], **owned("r"))
    with pytest.raises(JournalError, match="not open"):
        await journal.read("r")
    assert not (tmp_path / "j.db").exists()


# -- the events table is append-only ---------------------------------------------------------


async def test_triggers_refuse_update_and_delete_of_events(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    async with SQLiteJournal(db) as journal:
        await journal.append("r", [started(), scheduled(2)], **owned("r"))
    with raw(db) as conn:
        before = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET type = 'run_completed' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")
        assert conn.execute("SELECT * FROM events ORDER BY seq").fetchall() == before


# -- files that are not ours -----------------------------------------------------------------


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _text(path: Path) -> None:
    path.write_text("name,amount\nalice,3\nbob,4\n")


def _sqlite_header_then_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))


def _other_application(path: Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")


def _other_application_with_our_table_names(path: Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
        conn.execute("INSERT INTO events (what) VALUES ('party')")


def _newer_schema(path: Path) -> None:
    with raw(path) as conn:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, shard INTEGER)")


def _newer_schema_no_tables(path: Path) -> None:
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")


FOREIGN = {
    "random-bytes": (_random_bytes, "not a SQLite database"),
    "text": (_text, "not a SQLite database"),
    "sqlite-header-then-garbage": (_sqlite_header_then_garbage, "cannot be read"),
    "other-application": (_other_application, "not a durable journal"),
    "other-application-same-table-name": (_other_application_with_our_table_names, "not a durable journal"),
    "newer-schema": (_newer_schema, "newer"),
    "newer-schema-no-tables": (_newer_schema_no_tables, "newer"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
async def test_a_file_that_is_not_ours_is_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "data.db"
    make, why = FOREIGN[kind]
    make(db)
    before, files = digest(db), siblings(db)
    journal = SQLiteJournal(db)
    with pytest.raises(NotADurableDatabase, match=why) as caught:
        await journal.open()
    assert caught.value.path == str(db)
    assert "untouched" in str(caught.value)
    assert digest(db) == before
    assert siblings(db) == files  # no -wal or -shm left next to it
    with pytest.raises(JournalError):  # the refused journal is not half open
        await journal.append("r", [started()], **owned("r"))


async def test_a_path_in_a_missing_directory_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StorageError) as caught:
        async with SQLiteJournal(missing / "j.db"):
            pass
    assert str(missing) in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert not (tmp_path / "no").exists()


async def test_a_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="directory"):
        async with SQLiteJournal(tmp_path):
            pass


# -- two processes on one file ---------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime

    import anyio

    from durable import Lease, Owner, SeqConflict, SQLiteJournal
    from durable import events as ev

    def owned(run_id):  # the same lease as the parent's: both write as the run's one owner
        return {"lease": Lease(run_id, "tester", 1), "owner": Owner("tester", "test-host", 1), "ttl": 3600}

    def event(seq, node):
        return ev.StepScheduled(seq=seq, ts=datetime.now(UTC), node=node, attempt=1)

    async def main(db, run_id, rounds):
        async with SQLiteJournal(db) as journal:
            print("ready", flush=True)
            sys.stdin.readline()
            try:
                await journal.append(run_id, [event(2, "contested-child")], **owned(run_id))
                print("won", flush=True)
            except SeqConflict as exc:
                print(f"conflict {exc.expected} {exc.actual}", flush=True)
            sys.stdin.readline()  # the second phase: both processes append as fast as they can
            for i in range(rounds):
                for _ in range(10_000):
                    info = await journal.get_run(run_id)
                    try:
                        await journal.append(run_id, [event(info.last_seq + 1, f"child-{i}")], **owned(run_id))
                        break
                    except SeqConflict:
                        pass
                else:
                    raise SystemExit("no progress")
        print("done", flush=True)

    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


async def test_two_processes_appending_at_the_same_seq_one_wins_nothing_lost(tmp_path: Path) -> None:
    db, run_id, rounds = tmp_path / "j.db", "shared", 40
    async with SQLiteJournal(db) as journal:
        await journal.append(run_id, [started()], **owned(run_id))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), run_id, str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            assert (await anyio.to_thread.run_sync(child.stdout.readline)).strip() == "ready"
            child.stdin.write("go\n")
            child.stdin.flush()
            try:
                await journal.append(run_id, [scheduled(2, node="contested-parent")], **owned(run_id))
                parent_won = True
            except SeqConflict as exc:
                assert (exc.expected, exc.actual) == (2, 2)
                parent_won = False
            contested = (await anyio.to_thread.run_sync(child.stdout.readline)).split()
            child.stdin.write("go\n")
            child.stdin.flush()
            for i in range(rounds):
                for _ in range(10_000):
                    info = await journal.get_run(run_id)
                    assert info is not None
                    try:
                        await journal.append(
                            run_id, [scheduled(info.last_seq + 1, node=f"parent-{i}")], **owned(run_id)
                        )
                        break
                    except SeqConflict:
                        pass
                else:
                    pytest.fail("the parent made no progress")
            out, err = await anyio.to_thread.run_sync(child.communicate)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err
        child_won = contested == ["won"]
        assert child_won or contested == ["conflict", "2", "2"]
        assert out.split() == ["done"]
        assert parent_won != child_won  # exactly one of the two contested appends landed

        events = await journal.read(run_id)
        info = await journal.get_run(run_id)

    total = 1 + 1 + 2 * rounds
    assert [e.seq for e in events] == list(range(1, total + 1))
    assert info is not None and info.last_seq == total
    nodes = [getattr(e, "node", None) for e in events[1:]]
    assert nodes[0] == ("contested-parent" if parent_won else "contested-child")
    assert sorted(n for n in nodes if n.startswith("parent-")) == sorted(f"parent-{i}" for i in range(rounds))
    assert sorted(n for n in nodes if n.startswith("child-")) == sorted(f"child-{i}" for i in range(rounds))
    # each process's own appends are in its own order
    for who in ("parent", "child"):
        mine = [n for n in nodes if n.startswith(f"{who}-")]
        assert mine == [f"{who}-{i}" for i in range(rounds)]
    with raw(db, readonly=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- a full disk -----------------------------------------------------------------------------


def _rows(db: Path) -> list[Any]:
    with raw(db, readonly=True) as conn:
        return conn.execute("SELECT run_id, seq, type, payload FROM events ORDER BY run_id, seq").fetchall()


async def test_disk_full_is_a_storage_error_and_the_journal_recovers(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    async with SQLiteJournal(db) as journal:
        await journal.append("r", [started()], **owned("r"))
        await journal.append("r", [scheduled(2), scheduled(3, node="b")], **owned("r"))
        before = await journal.read("r")
        rows_before = _rows(db)

        conn = writer_connection(journal)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        assert conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages

        big = [scheduled(4, output_size=200_000), scheduled(5, node="b")]
        with pytest.raises(StorageError, match="full") as caught:
            await journal.append("r", big, **owned("r"))
        assert "rolled back" in str(caught.value)
        with pytest.raises(StorageError):  # a new run needs pages too
            await journal.append("other", [started(), scheduled(2, output_size=200_000)], **owned("other"))

        assert await journal.read("r") == before
        info = await journal.get_run("r")
        assert info is not None and info.last_seq == 3
        assert await journal.get_run("other") is None
        assert _rows(db) == rows_before
        with raw(db, readonly=True) as check:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        conn.execute("PRAGMA max_page_count = 1073741823")
        await journal.append("r", big, **owned("r"))
        assert [e.seq for e in await journal.read("r")] == [1, 2, 3, 4, 5]
        assert (await journal.read("r", after=3, upto=4))[0] == big[0]

    async with SQLiteJournal(db) as reopened:
        assert [e.seq for e in await reopened.read("r")] == [1, 2, 3, 4, 5]
    with raw(db, readonly=True) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- migrations --------------------------------------------------------------------------------


async def test_a_journal_of_schema_3_is_migrated_forward_and_its_runs_resume(tmp_path: Path) -> None:
    """A file written before leases were on every execution opens, gains the lease columns, and resumes."""
    from durable import Engine, Workflow, step
    from durable.journal.sqlite_schema import MIGRATIONS

    db = tmp_path / "old.db"
    with closing(sqlite3.connect(db)) as conn:  # schema 3, as durable wrote it then
        for migration in MIGRATIONS[:3]:
            for sql in migration:
                conn.execute(sql)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 3")
        started_at = datetime(2026, 11, 1, tzinfo=UTC).isoformat(timespec="microseconds")

        @step
        def inc(x: int) -> int:
            return x + 1

        wf = Workflow("old").then(inc)
        first = ev.RunStarted(
            seq=1, ts=datetime(2026, 11, 1, tzinfo=UTC), workflow="old", version="1",
            definition_hash=wf.definition_hash, definition=wf.canonical(), input=1,
        )  # fmt: skip
        from durable.journal.sqlite import encode_event

        conn.execute(
            "INSERT INTO runs (run_id, workflow, version, definition_hash, status, created_at, updated_at, last_seq)"
            " VALUES ('old-1', 'old', '1', ?, 'running', ?, ?, 1)",
            (wf.definition_hash, started_at, started_at),
        )
        conn.execute("INSERT INTO events VALUES ('old-1', ?, ?, ?, ?, ?, ?)", encode_event(first))
        conn.commit()
    async with Engine(db) as engine:
        info = await engine.journal.get_run("old-1")
        assert info is not None and (info.lease_owner, info.lease_host, info.lease_pid) == (None, None, None)
        assert await engine.run(wf, run_id="old-1") == 2
    with raw(db, readonly=True) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        assert {"lease_host", "lease_pid", "lease_since"} <= columns
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


OPENER = textwrap.dedent(
    """
    import sys

    import anyio

    from durable import Engine

    async def main(db):
        async with Engine(db) as engine:
            await engine.list_runs()

    anyio.run(main, sys.argv[1])
    """
)


def test_many_processes_may_create_and_open_one_new_file_at_once(tmp_path: Path) -> None:
    """The setup of docs/reliability.md (several 'durable worker &' on a new path) never fails to open."""
    rounds = 12
    for r in range(rounds):
        db = tmp_path / f"new-{r}.db"
        procs = [
            subprocess.Popen([sys.executable, "-c", OPENER, str(db)], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        with raw(db, readonly=True) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
