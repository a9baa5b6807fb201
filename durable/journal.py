"""The journal interface, the append rules every journal enforces, and the in-memory journal.

A journal stores each run's events, append-only, in ``seq`` order, and keeps an index of
runs. It knows nothing of workflows or steps: the engine decides *what* to append, the
journal guarantees *how* (atomically, contiguously, never after the end). The SQLite
journal lives in :mod:`durable.sqlite`; a PostgreSQL one will implement the same contract,
and ``tests/test_journal_contract.py`` runs one suite against every implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from types import TracebackType
from typing import Any

import anyio.lowlevel

from . import events as ev
from .errors import JournalError, RunAlreadyExists, RunNotFound, SeqConflict

__all__ = ["InMemoryJournal", "Journal", "RunInfo", "SignalRecord", "check_append", "status_after"]

_STATUS_OF_TERMINAL = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}


@dataclass(frozen=True)
class RunInfo:
    """One row of the run index: enough to list and pick runs without reading their events."""

    run_id: str
    workflow: str
    version: str
    definition_hash: str
    status: str  # running | completed | failed | cancelled
    created_at: datetime
    updated_at: datetime
    last_seq: int


@dataclass(frozen=True)
class SignalRecord:
    """A signal sent to a run: kept in the run's inbox until a ``wait_for`` node consumes it."""

    id: int  # increasing per journal: signals are delivered in this order
    run_id: str
    name: str
    payload: Any
    ts: datetime


def status_after(status: str, events: Sequence[ev.Event]) -> str:
    """The run's index status once ``events`` are appended."""
    for event in events:
        if event.type == "run_started":
            status = "running"
        elif event.type in _STATUS_OF_TERMINAL:
            status = _STATUS_OF_TERMINAL[event.type]
    return status


def check_append(run_id: str, info: RunInfo | None, events: Sequence[ev.Event]) -> None:
    """Enforce the append rules shared by every journal; raise before anything is written.

    The rules: a batch is non-empty and its seqs are contiguous; a new run starts with
    ``run_started`` at seq 1 and nothing else is ever ``run_started``; an existing run's
    batch starts right after its last seq; nothing follows a terminal event.
    """
    if not events:
        raise JournalError(f"append to run {run_id!r}: empty batch")
    for prev, nxt in pairwise(events):
        if nxt.seq != prev.seq + 1:
            raise JournalError(f"append to run {run_id!r}: seqs {prev.seq} and {nxt.seq} are not contiguous")
    first = events[0]
    if any(e.type == "run_started" for e in events[1:]):
        raise JournalError(f"append to run {run_id!r}: run_started may only be seq 1")
    if info is None:
        if first.type != "run_started" or first.seq != 1:
            raise RunNotFound(run_id)
        return
    if first.type == "run_started":
        raise RunAlreadyExists(run_id)
    if first.seq != info.last_seq + 1:
        raise SeqConflict(run_id, first.seq, info.last_seq)
    if info.status in ("completed", "failed", "cancelled"):
        raise JournalError(f"run {run_id!r} has already {info.status}; its journal is closed")
    for i, event in enumerate(events):
        if event.type in _STATUS_OF_TERMINAL and i != len(events) - 1:
            raise JournalError(f"append to run {run_id!r}: events follow the terminal {event.type}")


class Journal(ABC):
    """Where runs' events are kept. Use as an async context manager (``open`` / ``close``).

    Implementations must be safe to call from many tasks of one event loop at once.
    """

    async def __aenter__(self) -> Journal:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Make the journal ready (create or migrate the schema). Calling it twice is harmless.

        Raises:
            NotADurableDatabase: the storage exists but is not a durable journal; it is left untouched.
            StorageError: the storage cannot be reached or created.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Appends already acknowledged stay durable."""

    @abstractmethod
    async def append(self, run_id: str, events: Sequence[ev.Event]) -> None:
        """Append ``events`` to ``run_id`` atomically: all of them are committed, or none.

        ``events`` carry their seqs; they must follow :func:`check_append`. Returning means
        committed (durably, as far as the journal's ``synchronous`` setting promises). Many
        concurrent appends, for one run or many, may share one commit (group commit).

        Raises:
            SeqConflict: another writer appended first; nothing of this batch was written.
            RunAlreadyExists: the batch starts a run whose id is taken.
            RunNotFound: the batch continues a run that does not exist.
            JournalError: the batch breaks another append rule.
            StorageError: the storage failed; the transaction was rolled back.
        """

    @abstractmethod
    async def read(self, run_id: str, *, after: int = 0, upto: int | None = None) -> list[ev.Event]:
        """Return the run's committed events with ``after < seq <= upto``, in seq order.

        Returns an empty list for an unknown run; callers that need the run to exist ask
        :meth:`get_run` first.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> RunInfo | None:
        """Return the run's index row, or ``None`` if no such run was ever started."""

    @abstractmethod
    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> list[RunInfo]:
        """Return index rows, newest first, filtered by status and workflow name."""

    @abstractmethod
    async def send_signal(self, run_id: str, name: str, payload: Any) -> SignalRecord:
        """Put a signal in the run's inbox (append-only, committed on return); return it with its id.

        The run's own events are not touched, so a signal never conflicts with the run's
        writer; the run records a ``signal_received`` event when it consumes the signal.

        Raises:
            RunNotFound: no such run.
            JournalError: the run has finished.
        """

    @abstractmethod
    async def read_signals(
        self, run_id: str | None, *, name: str | None = None, after: int = 0
    ) -> list[SignalRecord]:
        """Return signals with ``id > after``, in the order they were sent.

        Only the run's (and only those named ``name``, if given); every run's when ``run_id``
        is ``None``.
        """


class InMemoryJournal(Journal):
    """A journal in a dict: for unit tests and experiments. It survives nothing."""

    def __init__(self) -> None:
        self._events: dict[str, list[ev.Event]] = {}
        self._runs: dict[str, RunInfo] = {}
        self._signals: list[SignalRecord] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def append(self, run_id: str, events: Sequence[ev.Event]) -> None:
        await anyio.lowlevel.checkpoint()
        info = self._runs.get(run_id)
        check_append(run_id, info, events)
        last = events[-1]
        if info is None:
            first = events[0]
            assert isinstance(first, ev.RunStarted)
            info = RunInfo(
                run_id, first.workflow, first.version, first.definition_hash, "running", first.ts, first.ts, 0
            )
            self._events[run_id] = []
        self._events[run_id].extend(events)
        self._runs[run_id] = replace(
            info, status=status_after(info.status, events), updated_at=last.ts, last_seq=last.seq
        )

    async def read(self, run_id: str, *, after: int = 0, upto: int | None = None) -> list[ev.Event]:
        await anyio.lowlevel.checkpoint()
        return [e for e in self._events.get(run_id, []) if e.seq > after and (upto is None or e.seq <= upto)]

    async def get_run(self, run_id: str) -> RunInfo | None:
        await anyio.lowlevel.checkpoint()
        return self._runs.get(run_id)

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> list[RunInfo]:
        await anyio.lowlevel.checkpoint()
        rows = [
            r
            for r in self._runs.values()
            if (status is None or r.status == status) and (workflow is None or r.workflow == workflow)
        ]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return rows[:limit] if limit is not None else rows

    async def send_signal(self, run_id: str, name: str, payload: Any) -> SignalRecord:
        await anyio.lowlevel.checkpoint()
        info = self._runs.get(run_id)
        check_signal(run_id, info)
        record = SignalRecord(len(self._signals) + 1, run_id, name, payload, ev.utcnow())
        self._signals.append(record)
        return record

    async def read_signals(
        self, run_id: str | None, *, name: str | None = None, after: int = 0
    ) -> list[SignalRecord]:
        await anyio.lowlevel.checkpoint()
        return [
            s
            for s in self._signals
            if s.id > after and run_id in (None, s.run_id) and (name is None or s.name == name)
        ]


def check_signal(run_id: str, info: RunInfo | None) -> None:
    """Refuse a signal to a run that does not exist or has finished."""
    if info is None:
        raise RunNotFound(run_id)
    if info.status in ("completed", "failed", "cancelled"):
        raise JournalError(f"run {run_id!r} has {info.status}; it takes no more signals")
