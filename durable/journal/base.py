"""The journal interface, and the rules every journal enforces: appends, leases, claims.

A journal stores each run's events, append-only, in ``seq`` order, and keeps an index of
runs. It knows nothing of workflows or steps: the engine decides *what* to append, the
journal guarantees *how* (atomically, contiguously, never after the end, only from the
run's owner). The in-memory journal lives in :mod:`durable.journal.memory`, the SQLite one in
:mod:`durable.journal.sqlite`; a PostgreSQL one will implement the same contract, and
``tests/journal/test_contract.py`` runs one suite against every implementation.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from types import TracebackType
from typing import Any

from .. import events as ev
from ..errors import JournalError, LeaseLost, LeaseRequired, RunAlreadyExists, RunBusy, RunNotFound, SeqConflict

__all__ = [
    "Claim",
    "Journal",
    "Lease",
    "Owner",
    "RunInfo",
    "SignalRecord",
    "Slots",
    "as_owner",
    "check_append",
    "check_acquire",
    "check_lease",
    "check_signal",
    "claimable",
    "holds_a_slot",
    "leased",
    "unleased",
    "schedule_after",
    "started_run",
    "status_after",
]

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
    # where the run waits, derived from its events (see schedule_after)
    wake_at: datetime | None = None
    waiting_for: str | None = None
    signal_mark: int = 0
    paused: bool = False
    # the lease of whoever executes the run (an engine or a worker): see docs/reliability.md
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    takeovers: int = 0
    parent_run_id: str | None = None  # a child run: its parent runs it, workers never claim it
    lease_host: str | None = None  # where the holder runs, and its process id, when it said so
    lease_pid: int | None = None
    lease_since: datetime | None = None  # when the holder took the lease

    def lease_live(self, now: datetime) -> bool:
        """Whether someone holds the run's lease and it has not expired at ``now``."""
        return self.lease_owner is not None and self.lease_expires_at is not None and self.lease_expires_at >= now

    def holder(self) -> str:
        """The lease holder for people: ``pid@host`` when known, else the owner's name."""
        if self.lease_pid is not None and self.lease_host is not None:
            return f"pid {self.lease_pid}@{self.lease_host}"
        return repr(self.lease_owner)


def started_run(
    run_id: str, first: ev.RunStarted, lease: Lease | None = None, owner: Owner | None = None, ttl: float | None = None
) -> RunInfo:
    """The index row of a run that ``first`` (its ``run_started``) is about to create.

    With a ``lease`` (token 1), the run is created held by it: the engine that starts a run
    owns it from its first event on, so no worker can claim it in between.
    """
    parent = first.parent.run_id if first.parent is not None else None
    info = RunInfo(
        run_id, first.workflow, first.version, first.definition_hash, "running", first.ts, first.ts, 0,
        parent_run_id=parent,
    )  # fmt: skip
    if lease is None:
        return info
    if lease.token != 1 or lease.run_id != run_id or ttl is None:
        raise JournalError(f"run {run_id!r}: a new run's lease has token 1 and a ttl")
    who = owner if owner is not None and owner.name == lease.owner else Owner(lease.owner)
    now = ev.utcnow()
    return replace(
        info,
        lease_owner=who.name,
        lease_token=1,
        lease_expires_at=now + timedelta(seconds=ttl),
        lease_host=who.host,
        lease_pid=who.pid,
        lease_since=now,
    )


@dataclass(frozen=True)
class Owner:
    """Who executes runs: one engine (or worker) of one process. Its ``name`` is unique per engine."""

    name: str
    host: str | None = None
    pid: int | None = None

    @classmethod
    def here(cls, name: str | None = None, host: str | None = None) -> Owner:
        """An owner in this process: ``host:pid:random`` unless ``name`` is given."""
        host, pid = host or socket.gethostname(), os.getpid()
        return cls(name or f"{host}:{pid}:{os.urandom(4).hex()}", host, pid)


def as_owner(owner: Owner | str) -> Owner:
    return owner if isinstance(owner, Owner) else Owner(owner)


@dataclass(frozen=True)
class Lease:
    """The right to execute one run: the fencing token that every append of the holder carries."""

    run_id: str
    owner: str
    token: int


@dataclass(frozen=True)
class Claim:
    """A run a worker just claimed; ``takeovers`` counts the leases that expired on it so far."""

    lease: Lease
    workflow: str
    definition_hash: str
    takeovers: int


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


def schedule_after(info: RunInfo, events: Sequence[ev.Event]) -> dict[str, Any]:
    """Where the run waits once ``events`` are appended: ``wake_at``, ``waiting_for``, ``signal_mark``, ``paused``.

    A sleep sets ``wake_at``; a wait sets ``waiting_for`` (and its deadline as ``wake_at``, and
    the newest signal id it had seen as ``signal_mark``); any progress clears both. Workers
    use these columns to find runs that are due without reading their events.
    """
    wake_at, waiting_for, mark, paused = info.wake_at, info.waiting_for, info.signal_mark, info.paused
    for event in events:
        if isinstance(event, ev.SleepStarted):
            wake_at, waiting_for = event.until, None
        elif isinstance(event, ev.WaitStarted):
            wake_at, waiting_for, mark = event.deadline, event.signal, event.seen_signal
        elif isinstance(event, ev.RunPaused):
            paused = True
        elif isinstance(event, ev.RunUnpaused):
            paused = False
        elif not isinstance(event, ev.SignalReceived):
            wake_at, waiting_for = None, None
    return {"wake_at": wake_at, "waiting_for": waiting_for, "signal_mark": mark, "paused": paused}


def check_lease(run_id: str, info: RunInfo | None, lease: Lease | None, events: Sequence[ev.Event] = ()) -> None:
    """Fencing: every append to an existing, running run comes from the holder of its current lease.

    A new run needs no lease (its ``run_started`` may install one); a finished run is refused
    by :func:`check_append`. The token decides, not the expiry: a holder whose lease expired
    but that nobody took over may still write, since nobody else executed the run meanwhile.
    """
    if info is None or info.status in ev.TERMINAL_STATUSES:
        return
    if events and events[0].type == "run_started":
        return  # a second start of a taken id: check_append says RunAlreadyExists
    if lease is None:
        if info.lease_owner is not None:
            raise RunBusy(run_id, info)
        raise LeaseRequired(run_id)
    if info.lease_owner != lease.owner or info.lease_token != lease.token:
        raise LeaseLost(run_id, lease.owner, lease.token, info.lease_owner, info.lease_token)


def check_acquire(run_id: str, info: RunInfo | None, now: datetime, replacing: Lease | None) -> None:
    """Whether a lease on the run may be taken now (the rule every journal applies to ``acquire``).

    The run must exist and be running, and its lease be free, expired, or exactly ``replacing``
    (a holder the caller found dead: same host, process gone).
    """
    if info is None:
        raise RunNotFound(run_id)
    if info.status in ev.TERMINAL_STATUSES:
        raise JournalError(f"run {run_id!r} has already {info.status}; there is nothing to execute")
    if not info.lease_live(now):
        return
    if replacing is not None and (info.lease_owner, info.lease_token) == (replacing.owner, replacing.token):
        return
    raise RunBusy(run_id, info)


def claimable(
    info: RunInfo, now: datetime, hashes: Collection[str], has_new_signal: bool, dead: Collection[str] = ()
) -> bool:
    """Whether a worker that knows ``hashes`` may claim the run now (the rule every journal applies).

    ``dead`` names owners the worker found dead (on its host, their process gone): their
    leases count as expired.
    """
    if info.status != "running" or info.paused or info.definition_hash not in hashes:
        return False
    if info.parent_run_id is not None:  # a child runs inside its parent's execution, under its own lease
        return False
    if info.lease_live(now) and info.lease_owner not in dead:
        return False
    if info.wake_at is None and info.waiting_for is None:
        return True  # ready, or its worker died mid-step
    if info.wake_at is not None and info.wake_at <= now:
        return True
    return info.waiting_for is not None and has_new_signal


def holds_a_slot(info: RunInfo, now: datetime, dead: Collection[str] = ()) -> bool:
    """Whether the run counts against its workflow's concurrency cap: running, under a live lease.

    A cancelled, finished or released run gives its slot back at once; so does one whose owner
    was found dead.
    """
    return info.status == "running" and info.lease_live(now) and info.lease_owner not in dead


class Slots:
    """The per-workflow concurrency caps during one claim (the same accounting in every journal).

    Args:
        caps: the most live leases per workflow name (``workflow_limits``); others are uncapped.
        live: how many runs of each workflow hold a slot now (see :func:`holds_a_slot`).
    """

    def __init__(self, caps: Mapping[str, int], live: Mapping[str, int]) -> None:
        self._caps = dict(caps)
        self._live = dict(live)

    def full(self) -> list[str]:
        """The capped workflows with no free slot: a claim query leaves them out."""
        return [w for w, cap in self._caps.items() if self._live.get(w, 0) >= cap]

    def take(self, workflow: str) -> bool:
        """Take a slot of ``workflow`` for a run being claimed; ``False`` if it has none free."""
        cap = self._caps.get(workflow)
        if cap is not None and self._live.get(workflow, 0) >= cap:
            return False
        self._live[workflow] = self._live.get(workflow, 0) + 1
        return True


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
    for i, event in enumerate(events):
        if event.type in _STATUS_OF_TERMINAL and i != len(events) - 1:
            raise JournalError(f"append to run {run_id!r}: events follow the terminal {event.type}")
    if info is None:
        if first.type != "run_started" or first.seq != 1:
            raise RunNotFound(run_id)
        return
    if first.type == "run_started":
        raise RunAlreadyExists(run_id)
    if first.seq != info.last_seq + 1:
        raise SeqConflict(run_id, first.seq, info.last_seq)
    if info.status in ev.TERMINAL_STATUSES:
        raise JournalError(f"run {run_id!r} has already {info.status}; its journal is closed")


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
    async def append(
        self,
        run_id: str,
        events: Sequence[ev.Event],
        *,
        lease: Lease | None = None,
        owner: Owner | None = None,
        ttl: float | None = None,
    ) -> None:
        """Append ``events`` to ``run_id`` atomically: all of them are committed, or none.

        ``events`` carry their seqs; they must follow :func:`check_append`. Returning means
        committed (durably, as far as the journal's ``synchronous`` setting promises). Many
        concurrent appends, for one run or many, may share one commit (group commit).

        Fencing (:func:`check_lease`), in the same transaction: an append to an existing,
        running run must carry the run's current ``lease``; an owner presumed dead can never
        write into a run another has taken over, and nobody writes into a run without owning it.
        A batch that starts a new run with a ``lease`` (token 1) creates the run holding it,
        for ``owner`` (its host and pid), expiring ``ttl`` seconds from now.

        Raises:
            SeqConflict: another writer appended first; nothing of this batch was written.
            RunAlreadyExists: the batch starts a run whose id is taken.
            RunNotFound: the batch continues a run that does not exist.
            LeaseLost: ``lease`` is no longer the run's lease; nothing was written.
            RunBusy: no ``lease`` was given and another owner holds the run.
            LeaseRequired: no ``lease`` was given for a running run that nobody holds.
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
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        parent: str | None = None,
    ) -> list[RunInfo]:
        """Return index rows, newest first, filtered by status, workflow name and parent run."""

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
    async def read_signals(self, run_id: str | None, *, name: str | None = None, after: int = 0) -> list[SignalRecord]:
        """Return signals with ``id > after``, in the order they were sent.

        Only the run's (and only those named ``name``, if given); every run's when ``run_id``
        is ``None``.
        """

    @abstractmethod
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
        """Lease up to ``limit`` runs that ``owner`` may execute, oldest first, in one transaction.

        A run is claimable when :func:`claimable` says so (leases held by the owners named in
        ``dead`` count as expired). Claiming sets the lease (owner, a new token, expiry
        ``now + ttl``); taking over a lease that someone held counts a takeover.
        ``workflow_limits`` caps the live leases of running runs per workflow name, across all
        workers.
        """

    @abstractmethod
    async def acquire(self, run_id: str, owner: Owner, ttl: float, *, replacing: Lease | None = None) -> Lease:
        """Lease one run for ``owner`` (an engine about to execute it), in one transaction.

        Allowed when :func:`check_acquire` says so: the run is running and its lease is free,
        expired, or exactly ``replacing``. The new lease has the next token (fencing out the
        previous holder) and expires ``ttl`` seconds from now; taking a lease that someone
        held counts a takeover.

        Raises:
            RunNotFound: no such run.
            RunBusy: another owner holds a live lease on it (the error names the holder).
            JournalError: the run has finished.
        """

    @abstractmethod
    async def renew(self, leases: Sequence[Lease], ttl: float) -> list[str]:
        """Extend these leases to ``now + ttl`` (the heartbeat); return the run ids whose lease was lost."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give a lease back (the run parked, finished, or its owner is stopping). No-op if lost."""

    @abstractmethod
    async def lease_holders(self, host: str) -> list[tuple[str, int | None]]:
        """The owners (name, pid) on ``host`` that hold a lease on a running run, each once.

        Workers use it to find owners of their own host whose process is gone, whose runs
        they may take over at once instead of waiting for the leases to expire.
        """


def leased(info: RunInfo, owner: Owner, now: datetime, ttl: float) -> RunInfo:
    """The index row once ``owner`` takes the run's lease at ``now`` (a claim or an acquire).

    The token goes up by one, fencing out whoever held it; taking a lease someone held
    (expired, or its holder dead) counts a takeover.
    """
    return replace(
        info,
        lease_owner=owner.name,
        lease_token=info.lease_token + 1,
        lease_expires_at=now + timedelta(seconds=ttl),
        lease_host=owner.host,
        lease_pid=owner.pid,
        lease_since=now,
        takeovers=info.takeovers + (1 if info.lease_owner is not None else 0),
    )


def check_signal(run_id: str, info: RunInfo | None) -> None:
    """Refuse a signal to a run that does not exist or has finished."""
    if info is None:
        raise RunNotFound(run_id)
    if info.status in ev.TERMINAL_STATUSES:
        raise JournalError(f"run {run_id!r} has {info.status}; it takes no more signals")


def unleased(info: RunInfo) -> RunInfo:
    """The index row once its lease is given back (released, or the run finished); the token stays."""
    return replace(info, lease_owner=None, lease_expires_at=None, lease_host=None, lease_pid=None, lease_since=None)
