"""The SQLite journal's schema, its migrations, its claim query, and the mapping between events and rows.

Kept apart from :mod:`durable.journal.sqlite` (the journal's connections and write path) so
that each file has one job; every name here is SQLite-specific, used by the SQLite journal only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from .. import events as ev
from .base import Claim, Lease, Owner, RunInfo, Slots, leased

APPLICATION_ID = 0x44524231  # "DRB1", in the database header: marks the file as a durable journal
SCHEMA_VERSION = 4
SQLITE_HEADER = b"SQLite format 3\x00"

# Each entry takes the schema from version i to i+1. Never edit a released entry: add one.
MIGRATIONS: list[list[str]] = [
    [
        """
        CREATE TABLE runs (
            run_id           TEXT PRIMARY KEY,
            workflow         TEXT NOT NULL,
            version          TEXT NOT NULL,
            definition_hash  TEXT NOT NULL,
            status           TEXT NOT NULL,
            created_at       TEXT NOT NULL,
            updated_at       TEXT NOT NULL,
            last_seq         INTEGER NOT NULL,
            -- reserved for worker leases (owner, expiry, fencing token)
            lease_owner      TEXT,
            lease_expires_at TEXT,
            lease_token      INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        "CREATE INDEX runs_by_workflow ON runs (workflow, status)",
        """
        CREATE TABLE events (
            run_id   TEXT NOT NULL,
            seq      INTEGER NOT NULL,
            type     TEXT NOT NULL,
            node     TEXT,
            attempt  INTEGER,
            ts       TEXT NOT NULL,
            payload  TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'durable: the events table is append-only'); END
        """,
        """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'durable: the events table is append-only'); END
        """,
    ],
    [  # 1 -> 2: the signal inbox
        """
        CREATE TABLE signals (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id   TEXT NOT NULL,
            name     TEXT NOT NULL,
            ts       TEXT NOT NULL,
            payload  TEXT NOT NULL
        )
        """,
        "CREATE INDEX signals_by_run ON signals (run_id, name, id)",
        """
        CREATE TRIGGER signals_no_update BEFORE UPDATE ON signals
        BEGIN SELECT RAISE(ABORT, 'durable: the signals table is append-only'); END
        """,
        """
        CREATE TRIGGER signals_no_delete BEFORE DELETE ON signals
        BEGIN SELECT RAISE(ABORT, 'durable: the signals table is append-only'); END
        """,
    ],
    [  # 2 -> 3: where runs wait (derived from their events), and worker takeovers
        "ALTER TABLE runs ADD COLUMN wake_at TEXT",
        "ALTER TABLE runs ADD COLUMN waiting_for TEXT",
        "ALTER TABLE runs ADD COLUMN signal_mark INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN parent_run_id TEXT",  # child runs run inside their parent's task
    ],
    [  # 3 -> 4: every execution holds a lease; who holds it (host, pid, since), for takeovers and people
        "ALTER TABLE runs ADD COLUMN lease_host TEXT",
        "ALTER TABLE runs ADD COLUMN lease_pid INTEGER",
        "ALTER TABLE runs ADD COLUMN lease_since TEXT",
        "CREATE INDEX runs_by_lease ON runs (lease_host, lease_owner) WHERE lease_owner IS NOT NULL",
        "CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
    ],
]
assert len(MIGRATIONS) == SCHEMA_VERSION

_COLUMNS = {"seq", "ts", "type", "node", "attempt"}
RUN_FIELDS = (
    "workflow, version, definition_hash, status, created_at, updated_at, last_seq, wake_at, waiting_for, "
    "signal_mark, paused, lease_owner, lease_token, lease_expires_at, takeovers, parent_run_id, lease_host, lease_pid, "
    "lease_since"
)


def encode_event(event: ev.Event) -> tuple[int, str, str | None, int | None, str, str]:
    """An event as (seq, type, node, attempt, ts, payload) for the events table."""
    return (
        event.seq,
        event.type,
        getattr(event, "node", None),
        getattr(event, "attempt", None),
        event.ts.isoformat(),
        event.model_dump_json(exclude=_COLUMNS, exclude_none=True),
    )


_EVENT_LIST: TypeAdapter[list[ev.Event]] = TypeAdapter(list[ev.Event])


def decode_rows(rows: Iterable[Sequence[Any]]) -> list[ev.Event]:
    """Rebuild events from rows (seq, type, node, attempt, ts, payload) of the events table.

    One validation call for the whole list: pydantic-core does the per-event work in Rust,
    which is what keeps loading a 10,000-event run fast.
    """
    loads = json.loads
    fromiso = datetime.fromisoformat
    batch: list[dict[str, Any]] = []
    for seq, type_, node, attempt, ts, payload in rows:
        data: dict[str, Any] = loads(payload) if payload != "{}" else {}
        data["seq"] = seq
        data["type"] = type_
        data["ts"] = fromiso(ts)
        if node is not None:
            data["node"] = node
        if attempt is not None:
            data["attempt"] = attempt
        batch.append(data)
    return _EVENT_LIST.validate_python(batch)


def decode_event(seq: int, type_: str, node: str | None, attempt: int | None, ts: str, payload: str) -> ev.Event:
    """Rebuild one event from a row of the events table."""
    return decode_rows([(seq, type_, node, attempt, ts, payload)])[0]


def claim_runs(
    conn: sqlite3.Connection,
    owner: Owner,
    hashes: list[str],
    limit: int,
    ttl: float,
    caps: dict[str, int],
    dead: list[str],
) -> list[Claim]:
    """The claim transaction's body (see :meth:`Journal.claim`).

    The rule is :func:`~durable.journal.base.claimable`'s, written as the query below, and the
    caps are counted by :class:`~durable.journal.base.Slots` as in every journal;
    ``tests/journal/test_claim_parity.py`` drives this query and ``claimable`` through the
    same random histories and checks that they claim the same runs.
    """
    now = ev.utcnow()
    now_iso = iso(now)
    dead_marks = ",".join("?" * len(dead))
    not_dead = f"AND lease_owner NOT IN ({dead_marks})" if dead else ""
    # holds_a_slot(), in SQL
    live = conn.execute(
        "SELECT workflow, count(*) FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL"
        f" AND lease_expires_at >= ? {not_dead} GROUP BY workflow",
        (now_iso, *dead),
    ).fetchall()
    slots = Slots(caps, dict(live))
    out: list[Claim] = []
    while len(out) < limit:
        full = slots.full()  # at their cap: not even looked at
        marks = ",".join("?" * len(hashes))
        not_full = f"AND workflow NOT IN ({','.join('?' * len(full))})" if full else ""
        or_dead = f"OR lease_owner IN ({dead_marks})" if dead else ""
        rows = conn.execute(
            f"""
            SELECT run_id, {RUN_FIELDS} FROM runs
            WHERE status = 'running' AND paused = 0 AND parent_run_id IS NULL
              AND definition_hash IN ({marks}) {not_full}
              AND (lease_owner IS NULL OR lease_expires_at < ? {or_dead})
              AND ((wake_at IS NULL AND waiting_for IS NULL)
                   OR wake_at <= ?
                   OR (waiting_for IS NOT NULL AND EXISTS (
                       SELECT 1 FROM signals s
                       WHERE s.run_id = runs.run_id AND s.name = runs.waiting_for AND s.id > runs.signal_mark)))
            ORDER BY created_at, run_id
            LIMIT ?
            """,
            (*hashes, *full, now_iso, *dead, now_iso, limit),
        ).fetchall()
        before = (len(out), len(full))
        for row in rows:
            if len(out) >= limit:
                break
            info = run_info(row[0], row[1:])
            if not slots.take(info.workflow):
                continue
            info = leased(info, owner, now, ttl)
            write_lease(conn, info)
            out.append(Claim(Lease(info.run_id, owner.name, info.lease_token), info.workflow, info.definition_hash,
                             info.takeovers))  # fmt: skip
        # Claimed rows drop out of the next query and full workflows are excluded from it: each
        # round claims something or fills a cap, or there is nothing more to claim.
        if not rows or (len(out), len(slots.full())) == before:
            break
    return out


def write_lease(conn: sqlite3.Connection, info: RunInfo) -> None:
    """Store the lease columns of ``info`` (a claim, an acquire, or a release)."""
    conn.execute(
        "UPDATE runs SET lease_owner = ?, lease_token = ?, lease_expires_at = ?, takeovers = ?, lease_host = ?,"
        " lease_pid = ?, lease_since = ? WHERE run_id = ?",
        (info.lease_owner, info.lease_token, iso(info.lease_expires_at), info.takeovers, info.lease_host,
         info.lease_pid, iso(info.lease_since), info.run_id),
    )  # fmt: skip


def iso(value: datetime | None) -> str | None:
    # Fixed width (microseconds always), so that text comparison in SQL is time comparison.
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def run_info(run_id: str, row: Sequence[Any]) -> RunInfo:
    (workflow, version, definition_hash, status, created_at, updated_at, last_seq, wake_at, waiting_for,
     signal_mark, paused, lease_owner, lease_token, lease_expires_at, takeovers, parent_run_id, lease_host,
     lease_pid, lease_since) = row  # fmt: skip
    return RunInfo(
        run_id,
        workflow,
        version,
        definition_hash,
        status,
        datetime.fromisoformat(created_at),
        datetime.fromisoformat(updated_at),
        last_seq,
        _time(wake_at),
        waiting_for,
        signal_mark,
        bool(paused),
        lease_owner,
        lease_token,
        _time(lease_expires_at),
        takeovers,
        parent_run_id,
        lease_host,
        lease_pid,
        _time(lease_since),
    )
