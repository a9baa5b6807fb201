"""The in-memory journal: for unit tests and experiments. It survives nothing.

It applies exactly the rules of :mod:`durable.journal.base` (the contract suite runs against
it as against SQLite), so a test written against it holds for the real journals too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import anyio.lowlevel

from .. import events as ev
from .base import (
    Claim,
    Journal,
    Lease,
    Owner,
    RunInfo,
    SignalRecord,
    Slots,
    as_owner,
    check_acquire,
    check_append,
    check_lease,
    check_signal,
    claimable,
    holds_a_slot,
    leased,
    schedule_after,
    started_run,
    status_after,
    unleased,
)

__all__ = ["InMemoryJournal"]


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

    async def append(
        self,
        run_id: str,
        events: Sequence[ev.Event],
        *,
        lease: Lease | None = None,
        owner: Owner | None = None,
        ttl: float | None = None,
    ) -> None:
        await anyio.lowlevel.checkpoint()
        info = self._runs.get(run_id)
        check_lease(run_id, info, lease, events)
        check_append(run_id, info, events)
        last = events[-1]
        if info is None:
            first = events[0]
            assert isinstance(first, ev.RunStarted)
            info = started_run(run_id, first, lease, owner, ttl)
            self._events[run_id] = []
        self._events[run_id].extend(events)
        self._runs[run_id] = info = replace(
            info,
            status=status_after(info.status, events),
            updated_at=last.ts,
            last_seq=last.seq,
            **schedule_after(info, events),
        )
        if info.status in ev.TERMINAL_STATUSES:  # a finished run has no owner
            self._runs[run_id] = unleased(info)

    async def read(self, run_id: str, *, after: int = 0, upto: int | None = None) -> list[ev.Event]:
        await anyio.lowlevel.checkpoint()
        return [e for e in self._events.get(run_id, []) if e.seq > after and (upto is None or e.seq <= upto)]

    async def get_run(self, run_id: str) -> RunInfo | None:
        await anyio.lowlevel.checkpoint()
        return self._runs.get(run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        parent: str | None = None,
    ) -> list[RunInfo]:
        await anyio.lowlevel.checkpoint()
        rows = [
            r
            for r in self._runs.values()
            if (status is None or r.status == status)
            and (workflow is None or r.workflow == workflow)
            and (parent is None or r.parent_run_id == parent)
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

    async def read_signals(self, run_id: str | None, *, name: str | None = None, after: int = 0) -> list[SignalRecord]:
        await anyio.lowlevel.checkpoint()
        return [
            s for s in self._signals if s.id > after and run_id in (None, s.run_id) and (name is None or s.name == name)
        ]

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
        await anyio.lowlevel.checkpoint()
        who = as_owner(owner)
        now = ev.utcnow()
        slots = Slots(
            workflow_limits or {}, Counter(r.workflow for r in self._runs.values() if holds_a_slot(r, now, dead))
        )
        out: list[Claim] = []
        for info in sorted(self._runs.values(), key=lambda r: (r.created_at, r.run_id)):
            if len(out) >= limit:
                break
            fresh = any(
                s.run_id == info.run_id and s.name == info.waiting_for and s.id > info.signal_mark
                for s in self._signals
            )
            if not claimable(info, now, hashes, fresh, dead) or not slots.take(info.workflow):
                continue
            self._runs[info.run_id] = info = leased(info, who, now, ttl)
            lease = Lease(info.run_id, who.name, info.lease_token)
            out.append(Claim(lease, info.workflow, info.definition_hash, info.takeovers))
        return out

    async def acquire(self, run_id: str, owner: Owner, ttl: float, *, replacing: Lease | None = None) -> Lease:
        await anyio.lowlevel.checkpoint()
        now = ev.utcnow()
        info = self._runs.get(run_id)
        check_acquire(run_id, info, now, replacing)
        assert info is not None
        self._runs[run_id] = info = leased(info, owner, now, ttl)
        return Lease(run_id, owner.name, info.lease_token)

    async def lease_holders(self, host: str) -> list[tuple[str, int | None]]:
        await anyio.lowlevel.checkpoint()
        return sorted(
            {
                (r.lease_owner, r.lease_pid)
                for r in self._runs.values()
                if r.lease_owner is not None and r.status == "running" and r.lease_host == host
            },
            key=lambda x: x[0],
        )

    async def renew(self, leases: Sequence[Lease], ttl: float) -> list[str]:
        await anyio.lowlevel.checkpoint()
        lost: list[str] = []
        until = ev.utcnow() + timedelta(seconds=ttl)
        for lease in leases:
            info = self._runs.get(lease.run_id)
            if info is None or info.lease_owner != lease.owner or info.lease_token != lease.token:
                lost.append(lease.run_id)
            else:
                self._runs[lease.run_id] = replace(info, lease_expires_at=until)
        return lost

    async def release(self, lease: Lease) -> None:
        await anyio.lowlevel.checkpoint()
        info = self._runs.get(lease.run_id)
        if info is not None and info.lease_owner == lease.owner and info.lease_token == lease.token:
            self._runs[lease.run_id] = unleased(info)
