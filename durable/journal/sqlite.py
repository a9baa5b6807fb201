"""The SQLite journal: one file, WAL mode, append-only events, group commit.

Everything SQLite-specific lives here: the schema and its migrations, the pragmas, the
checks that refuse a file which is not ours, and the write path.

The write path is a *group commit*. One writer thread, owned by the journal (started by
``open``, joined by ``close``), holds the write connection. Every :meth:`SQLiteJournal.append`
puts its batch on the writer's queue and awaits a future; the writer takes everything
queued, writes it in one ``BEGIN IMMEDIATE`` transaction, commits (one fsync for all), and
wakes the event loop once for the whole group. Appends that arrive meanwhile form the next
group. The write path uses asyncio futures: run the engine on anyio's asyncio backend.
Each batch sits in its own SAVEPOINT, so one refused batch (a seq conflict) does not undo
its neighbours; a storage failure rolls the whole transaction back and fails every batch
in it, so nothing is ever half applied.

Reads go through an ``aiosqlite`` connection of their own: in WAL mode they see the last
commit and never block the writer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Literal

import aiosqlite
import anyio
import anyio.to_thread

from .. import _crash
from .. import events as ev
from ..errors import CorruptJournal, DurableError, JournalError, NotADurableDatabase, StorageError
from .base import (
    Claim,
    Journal,
    Lease,
    Owner,
    RunInfo,
    SignalRecord,
    check_acquire,
    check_append,
    check_lease,
    check_signal,
    leased,
    schedule_after,
    started_run,
    status_after,
)
from .sqlite_schema import APPLICATION_ID as APPLICATION_ID
from .sqlite_schema import MIGRATIONS, RUN_FIELDS, SQLITE_HEADER, claim_runs, iso, run_info, write_lease
from .sqlite_schema import SCHEMA_VERSION as SCHEMA_VERSION
from .sqlite_schema import decode_event as decode_event
from .sqlite_schema import decode_rows as decode_rows
from .sqlite_schema import encode_event as encode_event

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "SQLiteJournal",
    "Synchronous",
    "decode_event",
    "decode_rows",
    "encode_event",
]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_MAX_BATCH = 512  # batches per commit: bounds one transaction's size and latency


@dataclass
class _Request:
    run_id: str
    events: Sequence[ev.Event]
    future: asyncio.Future[Any]
    error: BaseException | None = None
    lease: Lease | None = None
    owner: Owner | None = None  # a new run created holding ``lease``: its owner and the lease's ttl
    ttl: float | None = None
    op: Callable[[sqlite3.Connection], Any] | None = None  # another write than an append (signal, claim)
    result: Any = None
    rows: list[tuple[Any, ...]] | None = None  # the events, encoded for the events table


def _resolve(batch: list[_Request]) -> None:
    """On the event loop: hand each caller its outcome."""
    for request in batch:
        if request.future.done():  # the caller was cancelled; the outcome stands regardless
            continue
        if request.error is None:
            request.future.set_result(request.result)
        else:
            request.future.set_exception(request.error)


def _corrupt(run_id: str, rows: Sequence[Any], exc: Exception) -> CorruptJournal:
    """Name the first row of ``rows`` that cannot be decoded (the batch decode does not say which)."""
    for row in rows:
        try:
            decode_rows([row])
        except (ValueError, TypeError, KeyError) as bad:
            return CorruptJournal(run_id, int(row[0]), one_line(bad))
    return CorruptJournal(run_id, int(rows[0][0]) if rows else 0, one_line(exc))


def one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _storage_error(exc: sqlite3.Error, path: str) -> StorageError:
    text = str(exc)
    if "full" in text:
        hint = "free disk space (or raise the size limit), then resume the run"
    elif "locked" in text or "busy" in text:
        hint = "another process held the write lock too long; retry, or raise busy_timeout"
    else:
        hint = "check the disk and the file, then resume the run"
    return StorageError(f"{path}: {text}; the transaction was rolled back and nothing committed is lost: {hint}")


class SQLiteJournal(Journal):
    """A journal in one SQLite file.

    Args:
        path: the database file; created if missing (its directory must exist).
        synchronous: ``"FULL"`` (default) fsyncs every commit: a committed transition survives
            power loss. ``"NORMAL"`` fsyncs only at WAL checkpoints: much faster, still safe
            against a crashed *process*, but the last commits may be lost if the *machine* loses
            power. See ``docs/journal.md``.
        busy_timeout: seconds to wait for another process's write lock before failing.
    """

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL", busy_timeout: float = 5.0) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}: use 'FULL' (default) or 'NORMAL'")
        if not isinstance(busy_timeout, int | float) or busy_timeout < 0:
            raise ValueError(f"busy_timeout={busy_timeout!r}: give a number of seconds (0 or more)")
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: SimpleQueue[list[_Request] | None] = SimpleQueue()
        self._outbox: list[_Request] = []  # requests of this loop iteration, handed over together
        self._thread: threading.Thread | None = None
        self._max_pages: int | None = None

    # -- opening ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        await anyio.to_thread.run_sync(self._open_writer)
        self._thread = threading.Thread(target=self._run_writer, name=f"durable writer {self.path}", daemon=True)
        self._thread.start()
        try:
            self._reader = await aiosqlite.connect(self.path, timeout=self.busy_timeout)
            await self._reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await self._reader.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            await self.close()
            raise _storage_error(exc, self.path) from None

    def _inspect(self) -> None:
        """Refuse a file that is not ours, before writing a single byte to it."""
        p = Path(self.path)
        if not p.parent.is_dir():
            raise StorageError(
                f"{self.path}: the directory {str(p.parent)!r} does not exist; "
                "create it (mkdir -p) or choose another path"
            )
        if p.is_dir():
            raise StorageError(f"{self.path} is a directory; give the path of a database file")
        if not p.exists() or p.stat().st_size == 0:
            return
        with open(p, "rb") as f:
            header = f.read(16)
        if header != SQLITE_HEADER:
            raise NotADurableDatabase(self.path, "this file is not a SQLite database")
        try:
            # With no -wal beside it there is nothing but the file to read: immutable=1 then keeps
            # SQLite from creating -wal and -shm files next to a file that may not be ours.
            immutable = "" if Path(self.path + "-wal").exists() else "&immutable=1"
            ro = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro{immutable}", uri=True)
            try:
                app_id = ro.execute("PRAGMA application_id").fetchone()[0]
                version = ro.execute("PRAGMA user_version").fetchone()[0]
                tables = ro.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            finally:
                ro.close()
        except sqlite3.Error as exc:
            raise NotADurableDatabase(self.path, f"this file cannot be read as SQLite ({exc})") from None
        if app_id not in (0, APPLICATION_ID) or (tables and app_id != APPLICATION_ID):
            raise NotADurableDatabase(self.path, "this is a SQLite database, but not a durable journal")
        if version > SCHEMA_VERSION:
            raise NotADurableDatabase(
                self.path,
                f"this journal has schema version {version}, newer than this durable knows ({SCHEMA_VERSION}); "
                "upgrade durable",
            )

    def _inspect_patiently(self) -> None:
        """:meth:`_inspect`, looking again for a while at a file that seems foreign but may be ours in the making.

        Another process may be creating the schema right now: a file with tables and no
        application id yet (read without locks, see ``immutable=1``) that was written in the
        last seconds is looked at again for up to a second before it is called foreign.
        """
        deadline = time.monotonic() + 1.0
        while True:
            try:
                self._inspect()
                return
            except NotADurableDatabase as exc:
                if "not a durable journal" not in str(exc) and "cannot be read" not in str(exc):
                    raise
                try:
                    young = time.time() - Path(self.path).stat().st_mtime < 5.0
                except OSError:
                    young = False
                if not young or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def _set_wal(self, conn: sqlite3.Connection) -> Any:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the lock it needs.

        Changing the journal mode does not wait on ``busy_timeout`` the way writes do: several
        processes opening one new file at once would otherwise fail with "database is locked".
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    def _open_writer(self) -> None:
        self._inspect_patiently()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise _storage_error(exc, self.path) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = self._set_wal(conn)
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the file on a local disk")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Keep the WAL bounded: SQLite checkpoints every ~1000 pages on commit (readers here
            # never hold a read transaction open, so checkpoints are not starved), and after a
            # checkpoint the WAL file is truncated back to this size.
            conn.execute(f"PRAGMA journal_size_limit = {64 * 1024 * 1024}")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _storage_error(exc, self.path) from None
        except BaseException:
            conn.close()
            raise
        self._writer = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the common case: nothing to write, no lock to take
        # BEGIN IMMEDIATE: two processes opening a new file at once must not both create the schema.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise NotADurableDatabase(
                    self.path, f"schema version {version} is newer than this durable; upgrade durable"
                )
            for step in MIGRATIONS[version:]:
                for sql in step:
                    conn.execute(sql)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._hand_over()
            self._queue.put(None)  # the writer commits what is queued, then stops
            await anyio.to_thread.run_sync(thread.join)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    # -- writing ------------------------------------------------------------------------------

    async def append(
        self,
        run_id: str,
        events: Sequence[ev.Event],
        *,
        lease: Lease | None = None,
        owner: Owner | None = None,
        ttl: float | None = None,
    ) -> None:
        writer = self._thread
        if writer is None:
            raise JournalError("the journal is not open; use 'async with Engine(...)' or 'await journal.open()'")
        loop = asyncio.get_running_loop()
        request = _Request(run_id, events, loop.create_future(), lease=lease, owner=owner, ttl=ttl)
        # Encode here, on the loop's thread: the writer thread then runs almost no Python and
        # spends its time in SQLite with the GIL released, instead of contending for it.
        request.rows = [(run_id, *encode_event(e)) for e in events]
        self._send(request)
        await request.future

    def _send(self, request: _Request) -> None:
        """Queue a request for the writer, together with every other one of this loop iteration.

        Handing them over in one piece wakes the writer once (not once per request, each
        time contending for the GIL) and lets many runs' transitions share one commit: when a
        commit returns, its callers resume in the same loop iteration, and their next
        requests leave together.
        """
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._outbox.append(request)

    def _hand_over(self) -> None:
        batch, self._outbox = self._outbox, []
        if batch:
            self._queue.put(batch)

    def limit_pages(self, pages: int) -> None:
        """Cap the database at ``pages`` pages from the next write on: a full disk, for tests.

        Writes beyond the cap fail with ``StorageError`` ("database or disk is full"); raise the
        cap again (SQLite keeps the larger of the cap and the current size) to "free space".
        """
        self._max_pages = pages

    def _run_writer(self) -> None:
        """The writer thread: take every queued batch, commit them together, wake their callers."""
        queue = self._queue
        while True:
            first = queue.get()
            if first is None:
                return
            batch = list(first)
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = queue.get_nowait()
                except Empty:
                    break
                if nxt is None:
                    queue.put(None)  # finish this batch, then stop
                    break
                batch.extend(nxt)
            self._write(batch)
            # One wake-up of the event loop per commit, however many callers it serves.
            batch[0].future.get_loop().call_soon_threadsafe(_resolve, batch)

    def _write(self, batch: list[_Request]) -> None:
        conn = self._writer
        assert conn is not None
        try:
            _crash.dead()
            if self._max_pages is not None:
                pages, self._max_pages = self._max_pages, None
                conn.execute(f"PRAGMA max_page_count = {int(pages)}")
            # BEGIN IMMEDIATE: take the write lock first, so that two writers can never both
            # read last_seq N and both append N+1.
            conn.execute("BEGIN IMMEDIATE")
            appends = [r for r in batch if r.op is None]
            if appends:
                # The fast path: every append of the group in a handful of statements.
                conn.execute("SAVEPOINT fast")
                try:
                    self._append_batch(conn, appends)
                    conn.execute("RELEASE fast")
                except sqlite3.OperationalError:
                    raise  # the storage failed (full, I/O, locked): the whole transaction goes
                except Exception:  # a request the rules could not see was bad (a row that cannot be bound)
                    conn.execute("ROLLBACK TO fast")
                    conn.execute("RELEASE fast")
                    for request in appends:
                        request.error = None
                    self._one_by_one(conn, appends)  # find it: only it fails
            self._one_by_one(conn, [r for r in batch if r.op is not None])
            _crash.write_fault()
            _crash.reached("before_commit")
            conn.execute("COMMIT")
        except BaseException as exc:  # storage failure, simulated crash, or a bug: nothing of the batch stays
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            error = _storage_error(exc, self.path) if isinstance(exc, sqlite3.Error) else exc
            for request in batch:
                request.error = error

    def _one_by_one(self, conn: sqlite3.Connection, requests: list[_Request]) -> None:
        """Each request in a SAVEPOINT of its own: one that fails does not undo its neighbours."""
        for request in requests:
            conn.execute("SAVEPOINT one")
            try:
                if request.op is not None:
                    request.result = request.op(conn)
                else:
                    self._append_batch(conn, [request])
            except sqlite3.OperationalError:
                raise  # the storage failed (full, I/O, locked): the whole transaction goes
            except Exception as exc:  # this request is at fault, not the storage: only it fails
                conn.execute("ROLLBACK TO one")
                request.error = exc if isinstance(exc, DurableError) else JournalError(f"refused: {exc}")
            conn.execute("RELEASE one")

    def _insert_signal(self, conn: sqlite3.Connection, run_id: str, name: str, payload: str) -> SignalRecord:
        row = conn.execute(f"SELECT {RUN_FIELDS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        check_signal(run_id, run_info(run_id, row) if row else None)
        ts = ev.utcnow()
        cur = conn.execute(
            "INSERT INTO signals (run_id, name, ts, payload) VALUES (?, ?, ?, ?)",
            (run_id, name, ts.isoformat(), payload),
        )
        assert cur.lastrowid is not None
        return SignalRecord(cur.lastrowid, run_id, name, json.loads(payload), ts)

    async def _submit(self, run_id: str, op: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``op`` in the writer thread, inside a write transaction shared with other requests."""
        if self._thread is None:
            raise JournalError("the journal is not open; use 'async with Engine(...)' or 'await journal.open()'")
        request = _Request(run_id, (), asyncio.get_running_loop().create_future(), op=op)
        self._send(request)
        return await request.future

    async def send_signal(self, run_id: str, name: str, payload: Any) -> SignalRecord:
        text = json.dumps(payload)
        record: SignalRecord = await self._submit(run_id, lambda conn: self._insert_signal(conn, run_id, name, text))
        return record

    async def claim(
        self,
        owner: Owner | str,
        *,
        hashes: Collection[str],
        limit: int,
        ttl: float,
        workflow_limits: dict[str, int] | None = None,
        dead: Collection[str] = (),
    ) -> list[Claim]:
        if limit <= 0 or not hashes:
            return []
        who = owner if isinstance(owner, Owner) else Owner(owner)
        claims: list[Claim] = await self._submit(
            "", lambda conn: claim_runs(conn, who, list(hashes), limit, ttl, workflow_limits or {}, list(dead))
        )
        return claims

    async def acquire(self, run_id: str, owner: Owner, ttl: float, *, replacing: Lease | None = None) -> Lease:
        def op(conn: sqlite3.Connection) -> Lease:
            row = conn.execute(f"SELECT {RUN_FIELDS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            info = run_info(run_id, row) if row else None
            now = ev.utcnow()
            check_acquire(run_id, info, now, replacing)
            assert info is not None
            info = leased(info, owner, now, ttl)
            write_lease(conn, info)
            return Lease(run_id, owner.name, info.lease_token)

        lease: Lease = await self._submit(run_id, op)
        return lease

    async def renew(self, leases: Sequence[Lease], ttl: float) -> list[str]:
        if not leases:
            return []

        def op(conn: sqlite3.Connection) -> list[str]:
            until = iso(ev.utcnow() + timedelta(seconds=ttl))
            lost = []
            for lease in leases:
                cur = conn.execute(
                    "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ? AND lease_token = ?",
                    (until, lease.run_id, lease.owner, lease.token),
                )
                if cur.rowcount == 0:
                    lost.append(lease.run_id)
            return lost

        lost: list[str] = await self._submit("", op)
        return lost

    async def release(self, lease: Lease) -> None:
        await self._submit(
            lease.run_id,
            lambda conn: conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, lease_host = NULL, lease_pid = NULL,"
                " lease_since = NULL WHERE run_id = ? AND lease_owner = ? AND lease_token = ?",
                (lease.run_id, lease.owner, lease.token),
            ),
        )

    async def lease_holders(self, host: str) -> list[tuple[str, int | None]]:
        rows = await self._fetch(
            "SELECT DISTINCT lease_owner, lease_pid FROM runs WHERE lease_host = ? AND lease_owner IS NOT NULL"
            " AND status = 'running' ORDER BY lease_owner",
            (host,),
        )
        return [(owner, pid) for owner, pid in rows]

    async def read_signals(self, run_id: str | None, *, name: str | None = None, after: int = 0) -> list[SignalRecord]:
        sql = "SELECT id, run_id, name, ts, payload FROM signals WHERE id > ?"
        params: list[Any] = [after]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        rows = await self._fetch(sql + " ORDER BY id", params)
        return [SignalRecord(i, r, n, json.loads(p), datetime.fromisoformat(t)) for i, r, n, t, p in rows]

    def _append_batch(self, conn: sqlite3.Connection, appends: list[_Request]) -> None:
        """Apply the append rules to every request and write the ones that pass.

        One query reads the index rows of all the runs involved; the rules (:func:`check_lease`,
        :func:`check_append`) run in Python against them, a request seeing the effect of the
        ones before it; then every event row, new run and index update is written with one
        ``executemany`` each. A refused request gets its error and writes nothing. We hold the
        write lock (BEGIN IMMEDIATE), so what we read cannot change under us.
        """
        infos: dict[str, RunInfo] = {}
        ids = list(dict.fromkeys(r.run_id for r in appends))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = f"SELECT run_id, {RUN_FIELDS} FROM runs WHERE run_id IN ({','.join('?' * len(chunk))})"
            for row in conn.execute(sql, chunk):
                infos[row[0]] = run_info(row[0], row[1:])
        new_runs: list[tuple[Any, ...]] = []
        rows: list[tuple[Any, ...]] = []
        touched: dict[str, RunInfo] = {}
        for request in appends:
            run_id, events = request.run_id, request.events
            info = infos.get(run_id)
            try:
                check_lease(run_id, info, request.lease, events)
                check_append(run_id, info, events)
            except DurableError as exc:
                request.error = exc
                continue
            if info is None:
                first = events[0]
                assert isinstance(first, ev.RunStarted)
                try:
                    info = started_run(run_id, first, request.lease, request.owner, request.ttl)
                except DurableError as exc:
                    request.error = exc
                    continue
                ts = iso(first.ts)
                new_runs.append(
                    (run_id, info.workflow, info.version, info.definition_hash, ts, ts, info.parent_run_id,
                     info.lease_owner, info.lease_token, iso(info.lease_expires_at), info.lease_host, info.lease_pid,
                     iso(info.lease_since))
                )  # fmt: skip
            last = events[-1]
            info = replace(
                info,
                status=status_after(info.status, events),
                updated_at=last.ts,
                last_seq=last.seq,
                **schedule_after(info, events),
            )
            infos[run_id] = touched[run_id] = info
            assert request.rows is not None
            rows.extend(request.rows)
        if new_runs:
            conn.executemany(
                "INSERT INTO runs (run_id, workflow, version, definition_hash, status, created_at, updated_at, "
                "last_seq, parent_run_id, lease_owner, lease_token, lease_expires_at, lease_host, lease_pid, "
                "lease_since) VALUES (?, ?, ?, ?, 'running', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                new_runs,
            )
        if rows:
            conn.executemany(
                "INSERT INTO events (run_id, seq, type, node, attempt, ts, payload) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
        if touched:
            conn.executemany(
                "UPDATE runs SET status = ?, updated_at = ?, last_seq = ?, wake_at = ?, waiting_for = ?,"
                " signal_mark = ?, paused = ? WHERE run_id = ?",
                [
                    (
                        i.status,
                        iso(i.updated_at),
                        i.last_seq,
                        iso(i.wake_at),
                        i.waiting_for,
                        i.signal_mark,
                        int(i.paused),
                        run_id,
                    )
                    for run_id, i in touched.items()
                ],
            )
            finished = [(run_id,) for run_id, i in touched.items() if i.status in ev.TERMINAL_STATUSES]
            if finished:  # a finished run has no owner
                conn.executemany(
                    "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, lease_host = NULL,"
                    " lease_pid = NULL, lease_since = NULL WHERE run_id = ?",
                    finished,
                )

    # -- reading ------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self._reader is None:
            raise JournalError("the journal is not open; use 'async with Engine(...)' or 'await journal.open()'")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _storage_error(exc, self.path) from None

    async def read(self, run_id: str, *, after: int = 0, upto: int | None = None) -> list[ev.Event]:
        rows = await self._fetch(
            "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? AND seq > ? AND seq <= ?"
            " ORDER BY seq",
            (run_id, after, upto if upto is not None else 2**62),
        )
        try:
            return decode_rows(rows)
        except (ValueError, TypeError, KeyError) as exc:  # json.JSONDecodeError and ValidationError are ValueErrors
            raise _corrupt(run_id, rows, exc) from None

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = await self._fetch(
            f"SELECT {RUN_FIELDS} FROM runs WHERE run_id = ?",
            (run_id,),
        )
        return run_info(run_id, rows[0]) if rows else None

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        parent: str | None = None,
    ) -> list[RunInfo]:
        where, params = [], []
        if parent is not None:
            where.append("parent_run_id = ?")
            params.append(parent)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        sql = f"SELECT run_id, {RUN_FIELDS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = await self._fetch(sql, params)
        return [run_info(row[0], row[1:]) for row in rows]
