"""Workers: processes that share one journal, claim runs through leases, and take over the dead.

A worker claims ready runs (submitted, or left behind by a dead worker), due sleepers and
runs with a newly delivered signal, oldest first, for the workflow definitions it knows. A
claim is a lease (owner, fencing token, expiry) renewed by a heartbeat; every append the
worker makes checks, in the same transaction, that it still holds the lease, so a worker
presumed dead that comes back can never write into a run another has taken over. When a
lease expires, any worker may take the run over from its journal; a run whose lease has
expired more than ``max_takeovers`` times (it keeps killing its worker) is failed instead.

::

    worker = Worker("app.db", [checkout], concurrency=16)
    await worker.run()           # until worker.stop(), SIGTERM in the CLI, or cancellation
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path

import anyio

from . import events as ev
from ._ownership import HOST, owner_dead
from ._run import LiveRun, write
from .definition import Workflow
from .engine import Engine
from .errors import DurableError, LeaseLost, RunCancelled, RunFailed
from .fold import fold
from .journal.base import Claim, Journal
from .journal.sqlite import Synchronous

__all__ = ["Worker"]

log = logging.getLogger("durable.worker")


def _sqlite_has_wal_reset_bug() -> bool:
    """Whether this SQLite has the WAL-reset bug.

    SQLite before 3.51.3 (but for the 3.44.6 and 3.50.7 backports) can corrupt a WAL database
    when two connections write or checkpoint at the same moment.
    """
    version = tuple(int(x) for x in sqlite3.sqlite_version.split("."))
    return version < (3, 51, 3) and version not in ((3, 44, 6), (3, 50, 7))


class Worker:
    """Executes runs of the given workflows from a shared journal, with leases.

    Args:
        db: the database path (or a :class:`~durable.Journal`) shared by every worker.
        workflows: the definitions this worker may run; runs of other definitions are left
            for workers that know them (old and new code side by side during a deploy).
        concurrency: the most runs this worker executes at once.
        owner: this worker's name in leases; ``host:pid:random`` by default.
        lease_ttl: seconds a lease lasts without a heartbeat; a dead worker's runs are taken
            over this long after its last heartbeat. The heartbeat renews every ``lease_ttl / 3``.
        poll_interval: seconds between looks for claimable runs when idle.
        max_takeovers: after this many expired leases on one run, the run is failed
            (``TooManyTakeovers``) instead of handed to yet another worker.
        workflow_concurrency: the most live leases per workflow name, across all workers.
        drain_timeout: on :meth:`stop`, seconds to let runs in flight finish before they are
            stopped (as a crash would stop them) and their leases released.
        synchronous: SQLite's ``synchronous`` (see :class:`~durable.Engine`).
    """

    def __init__(
        self,
        db: str | Path | Journal,
        workflows: Iterable[Workflow],
        *,
        concurrency: int = 8,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.2,
        max_takeovers: int = 3,
        workflow_concurrency: dict[str, int] | None = None,
        drain_timeout: float = 10.0,
        synchronous: Synchronous = "FULL",
    ) -> None:
        self.workflows = {w.definition_hash: w for w in workflows}
        if not self.workflows:
            raise DurableError("a worker needs at least one workflow definition to run")
        if concurrency < 1:
            raise DurableError("concurrency must be 1 or more")
        if lease_ttl <= 0 or poll_interval <= 0:
            raise DurableError("lease_ttl and poll_interval must be positive")
        if max_takeovers < 0 or drain_timeout < 0:
            raise DurableError("max_takeovers and drain_timeout must not be negative")
        self.db = db
        self.concurrency = concurrency
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.signal_poll_interval = min(0.5, poll_interval * 2)
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.max_takeovers = max_takeovers
        self.workflow_concurrency = dict(workflow_concurrency or {})
        self.drain_timeout = drain_timeout
        self.synchronous: Synchronous = synchronous
        self._active: dict[str, LiveRun] = {}
        self._stopping = anyio.Event()
        self._nudge = anyio.Event()
        self.engine: Engine | None = None
        self.claimed = 0  # counters, for tests and the CLI's closing line
        self.finished = 0
        self.given_up = 0

    def stop(self) -> None:
        """Stop claiming; let runs in flight finish (up to ``drain_timeout``), then return from :meth:`run`."""
        self._stopping.set()
        self._nudge.set()

    async def run(self) -> None:
        """Claim and execute runs until :meth:`stop` (or cancellation, which stops like a crash)."""
        if isinstance(self.db, str | Path) and _sqlite_has_wal_reset_bug():
            log.warning(
                "SQLite %s is older than 3.51.3: concurrent writers in several processes can hit its WAL-reset "
                "bug. durable keeps one writer connection per process and bounds the WAL; upgrade SQLite (or "
                "Python) for several worker processes on one file",
                sqlite3.sqlite_version,
            )
        engine = Engine(
            self.db,
            synchronous=self.synchronous,
            lease_ttl=self.lease_ttl,
            owner=self.owner,
            signal_poll_interval=self.signal_poll_interval,
        )
        async with engine:  # its heartbeat renews the leases of our runs; a lost one stops its run
            self.engine = engine
            async with anyio.create_task_group() as tg:
                await self._claim_loop(engine)
                with anyio.move_on_after(self.drain_timeout):
                    while self._active:
                        self._nudge = anyio.Event()
                        await self._nudge.wait()
                for run in list(self._active.values()):  # still running after the drain: stop them
                    if run.scope is not None:
                        run.scope.cancel()
                with anyio.move_on_after(self.drain_timeout):
                    while self._active:
                        self._nudge = anyio.Event()
                        await self._nudge.wait()
                tg.cancel_scope.cancel()
            self.engine = None

    async def _claim_loop(self, engine: Engine) -> None:
        while not self._stopping.is_set():
            self._nudge = anyio.Event()
            free = self.concurrency - len(self._active)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await engine.journal.claim(
                        engine.owner,
                        hashes=list(self.workflows),
                        limit=free,
                        ttl=self.lease_ttl,
                        workflow_limits=self.workflow_concurrency,
                        dead=await self._dead_owners(engine),
                    )
                except DurableError as exc:  # a busy or failing disk: look again after a pause
                    log.warning("worker %s: claiming failed: %s", self.owner, exc)
            for claim in claims:
                self.claimed += 1
                await self._start(engine, claim)
            if claims and len(self._active) < self.concurrency:
                continue  # there may be more ready right now
            with anyio.move_on_after(self.poll_interval):
                await self._nudge.wait()

    async def _start(self, engine: Engine, claim: Claim) -> None:
        lease = claim.lease
        mine = self._active.get(lease.run_id)
        if mine is not None:
            # Our own run, whose lease expired while the loop was blocked (a step that blocks the
            # event loop): keep running it, under the new token, rather than start it twice.
            mine.lease = lease
            return
        try:
            if claim.takeovers > self.max_takeovers:
                await self._give_up(engine, claim)
                return
            run = await engine._run_leased(lease, self.workflows[claim.definition_hash], self._exited)
            if run is None:
                await engine.journal.release(lease)
                return
        except DurableError as exc:  # the lease expires by itself; another worker (or we) take it up
            log.error("worker %s could not start run %r: %s", self.owner, lease.run_id, exc)
            return
        self._active[lease.run_id] = run

    async def _exited(self, run: LiveRun) -> None:
        """A run's task ended (finished, parked, lost its lease, or stopped): give its lease back."""
        if self._active.get(run.run_id) is run:
            del self._active[run.run_id]
        if run.finished.is_set() and (run.error is None or isinstance(run.error, RunFailed | RunCancelled)):
            self.finished += 1
        lease = run.lease
        # Release is fenced (owner and token): harmless when the lease was lost, and it spares a
        # run stopped by another process's pause or cancel a takeover it did not deserve.
        if lease is not None and not isinstance(run.error, LeaseLost) and self.engine is not None:
            try:
                await self.engine.journal.release(lease)
            except DurableError as exc:  # the lease expires by itself; another worker takes over
                log.warning("worker %s could not release run %r: %s", self.owner, run.run_id, exc)
        self._nudge.set()

    async def _give_up(self, engine: Engine, claim: Claim) -> None:
        """Fail a run that keeps killing its workers, instead of handing it on forever."""
        lease = claim.lease
        state = fold(await engine.journal.read(lease.run_id), lease.run_id)
        error = ev.ErrorInfo(
            type="TooManyTakeovers",
            message=(
                f"the run's lease expired {claim.takeovers} times (max_takeovers={self.max_takeovers}): it keeps "
                "killing its worker, or its workers keep dying while running it; it was stopped. Fix the cause, "
                "then fork it (durable fork) to run it again"
            ),
        )
        event = ev.RunFailed(seq=state.last_seq + 1, ts=ev.utcnow(), error=error)
        try:
            await write(engine.journal, lease.run_id, [event], lease)
            self.given_up += 1
        finally:
            await engine.journal.release(lease)

    async def _dead_owners(self, engine: Engine) -> list[str]:
        """Owners of this host that hold leases but whose process is gone: their runs are taken over now."""
        holders = await engine.journal.lease_holders(HOST)
        return [name for name, pid in holders if name != self.owner and owner_dead(name, pid)]
