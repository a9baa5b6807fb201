"""Who owns a run: the leases of one engine, their heartbeat, and how a dead owner is recognised.

Every execution of a run holds a lease (see ``docs/reliability.md``). An engine takes one when
it starts a run (in the same transaction as ``run_started``), resumes one (:meth:`Leases.acquire`)
or a worker claims one, renews all of them with one heartbeat, and gives them back when it
stops. A lease held by a process that is gone is taken over at once when that process ran on
this host (its pid no longer exists, or, within this process, its engine has closed), and
otherwise when the lease expires.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio

from . import events as ev
from ._run import LiveRun
from .errors import DurableError, RunBusy
from .journal.base import Journal, Lease, Owner, RunInfo

__all__ = [
    "HOST",
    "Leases",
    "holder_alive",
    "nudge",
    "owned_by_the_living",
    "owner_dead",
    "owner_text",
    "pid_alive",
    "waits_text",
]

log = logging.getLogger("durable")

_INITIAL_PID_NAMESPACE = 0xEFFFFFFC  # the kernel's PROC_PID_INIT_INO: the host's own pid namespace


def _host() -> str:
    """This host's name in leases: ``DURABLE_HOST`` if set, else the hostname.

    Pids are only comparable within one pid namespace: in a container (a namespace of its
    own), the namespace is part of the name, so that two containers sharing a hostname never
    take each other's pids for their own.
    """
    name = os.environ.get("DURABLE_HOST") or socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return name if namespace == _INITIAL_PID_NAMESPACE else f"{name}#pidns{namespace}"


HOST = _host()

_OPEN: dict[str, Callable[[], None]] = {}  # the engines open in this process: owner name -> look at the inbox now


def nudge(owner: str | None) -> None:
    """If ``owner`` is an engine of this process, make it read its inbox now (a request was just sent)."""
    look = _OPEN.get(owner) if owner is not None else None
    if look is not None:
        look()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def owner_dead(name: str, pid: int | None) -> bool:
    """Whether the owner ``name``, a process ``pid`` of this host, is known to be gone."""
    if pid is None:
        return False
    if pid == os.getpid():
        return name not in _OPEN  # an engine of this process that has closed (or crashed, in a test)
    return not pid_alive(pid)


def holder_alive(info: RunInfo) -> bool:
    """Whether the holder of ``info``'s lease may still be alive (only a holder on this host can be known dead)."""
    if info.lease_owner is None:
        return False
    if info.lease_host != HOST:
        return True
    return not owner_dead(info.lease_owner, info.lease_pid)


def owned_by_the_living(info: RunInfo) -> bool:
    """Whether someone alive holds the run's lease now: live, and its holder not known to be dead."""
    return info.lease_live(ev.utcnow()) and holder_alive(info)


def owner_text(info: RunInfo) -> str | None:
    """Who owns a running run, for people; ``None`` for a finished run."""
    if info.status != "running":
        return None
    if info.lease_owner is None:
        return "nobody"
    who = info.holder()
    if not holder_alive(info):
        return f"{who}, gone"
    until = info.lease_expires_at
    if until is None or not info.lease_live(ev.utcnow()):
        return f"nobody ({who}'s lease expired)"
    return f"{who} until {until:%H:%M:%S}"


def waits_text(info: RunInfo) -> str:
    """What a running run waits for (a pause, a signal, a sleep), for people; empty when it does not wait."""
    if info.status != "running":
        return ""
    parts = ["paused"] if info.paused else []
    if info.waiting_for is not None:
        until = f" until {info.wake_at:%H:%M:%S}" if info.wake_at else ""
        parts.append(f"signal {info.waiting_for!r}{until}")
    elif info.wake_at is not None:
        parts.append(f"sleep until {info.wake_at:%H:%M:%S}")
    return ", ".join(parts)


class Leases:
    """The leases of one engine: taking them, renewing them, giving them back.

    Args:
        journal: the engine's journal.
        owner: the engine's identity in leases.
        ttl: seconds a lease lasts without a heartbeat; the heartbeat renews every ``ttl / 3``.
        live: the engine's runs, by id; each holds its lease.
        lost: called for a run whose lease another owner took over (the engine stops it).
    """

    def __init__(
        self,
        journal: Journal,
        owner: Owner,
        ttl: float,
        live: Mapping[str, LiveRun],
        lost: Callable[[LiveRun], None],
    ) -> None:
        self.journal = journal
        self.owner = owner
        self.ttl = ttl
        self._live = live
        self._lost = lost

    def open(self, look: Callable[[], None]) -> None:
        """Register the engine as alive in this process; ``look`` makes it read its inbox now."""
        _OPEN[self.owner.name] = look

    def close(self) -> None:
        _OPEN.pop(self.owner.name, None)

    def first(self, run_id: str) -> Lease:
        """The lease a new run is created holding (token 1, written with its ``run_started``)."""
        return Lease(run_id, self.owner.name, 1)

    async def acquire(self, run_id: str) -> Lease:
        """Take the run's lease, taking it over at once from a holder known to be dead.

        Raises:
            RunBusy: a live owner holds it. RunNotFound: no such run. JournalError: it has finished.
        """
        try:
            return await self.journal.acquire(run_id, self.owner, self.ttl)
        except RunBusy:
            info = await self.journal.get_run(run_id)
            if info is None or info.lease_owner is None:
                return await self.journal.acquire(run_id, self.owner, self.ttl)  # released meanwhile
            ours = info.lease_owner == self.owner.name and info.lease_pid == self.owner.pid
            if not ours and holder_alive(info):  # a name given twice (owner=) is not ours in another process
                raise RunBusy(run_id, info) from None
            # Its holder is gone (or it is a lease of ours whose run stopped): take it over now,
            # on the condition that it is still exactly that lease.
            dead = Lease(run_id, info.lease_owner, info.lease_token)
            return await self.journal.acquire(run_id, self.owner, self.ttl, replacing=dead)

    async def heartbeat(self) -> None:
        """Renew every lease of the engine's runs, forever; stop the runs whose lease was taken over."""
        while True:
            await anyio.sleep(self.ttl / 3)
            await self.beat()

    async def beat(self) -> None:
        runs = [r for r in self._live.values() if r.lease is not None]
        leases = [r.lease for r in runs if r.lease is not None]
        try:
            lost = set(await self.journal.renew(leases, self.ttl))
        except DurableError as exc:  # a busy or failing disk: try again at the next beat
            log.warning("durable: %s: heartbeat failed (renewing its leases): %s", self.owner.name, exc)
            return
        for run, lease in zip(runs, leases, strict=True):
            if run.lease == lease and lease.run_id in lost:
                log.warning("durable: %s lost its lease on run %r; stopping it", self.owner.name, lease.run_id)
                self._lost(run)

    async def release(self, lease: Lease) -> None:
        """Give a lease back; a failure is logged (the lease then expires by itself)."""
        try:
            with anyio.CancelScope(shield=True):
                await self.journal.release(lease)
        except DurableError as exc:
            log.warning("durable: giving back the lease on run %r failed: %s", lease.run_id, exc)

    def expired(self, info: RunInfo) -> bool:
        """Whether nobody alive holds the run (free, expired, or held by a dead process of this host)."""
        return not owned_by_the_living(info)
