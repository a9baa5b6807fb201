"""One run executing in this process: its lifecycle, its control inbox, and the one write path.

A :class:`LiveRun` goes through four phases, in this order (a parked run may go back to
running, and any phase may end in finished)::

    STARTING ──> RUNNING ──> FINISHED
                  │   ^
                  v   │
                 PARKED ──> FINISHED

It holds a lease on the run from the moment it exists (see ``docs/reliability.md``): every
event it writes goes through :func:`write`, which carries that lease, passes the named crash
points, and shields the commit from cancellation. Control requests (cancel, pause, unpause)
from this process or another land in the run's inbox fields and are applied by the run
itself at its next transition; :mod:`durable._control` delivers them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import anyio

from . import _crash
from . import events as ev
from ._codec import storable
from .definition import Workflow
from .fold import RunState
from .journal.base import Journal, Lease, Owner

__all__ = ["LiveRun", "Phase", "RunParked", "SpawnChild", "write"]

SpawnChild = Callable[[Workflow, Any, str, ev.ParentRef], Awaitable[tuple[bool, Any]]]


async def write(
    journal: Journal,
    run_id: str,
    events: Sequence[ev.Event],
    lease: Lease | None,
    *,
    owner: Owner | None = None,
    ttl: float | None = None,
) -> None:
    """The one write path: append ``events`` under ``lease``, through the named crash points.

    Shielded: once the append is on its way it is committed or refused as a whole, whatever
    cancels the caller meanwhile.
    """
    _crash.reached("before_append")
    with anyio.CancelScope(shield=True):
        await journal.append(run_id, events, lease=lease, owner=owner, ttl=ttl)
    _crash.reached("after_commit")


class Phase(StrEnum):
    """Where a live run is in its lifecycle."""

    STARTING = "starting"  # recorded (its lease taken), no task yet
    RUNNING = "running"  # a task executes its nodes
    PARKED = "parked"  # it waits (a sleep, a signal, a pause) with no task, thread or connection
    FINISHED = "finished"  # its outcome is set; it is gone from the engine


class RunParked(BaseException):
    """Internal stop signal: the run waits (a sleep, a signal, a pause) and gives up its task until ``until``.

    ``until`` is ``None`` when only a signal or an unpause can wake it. A ``BaseException``,
    so that a step's ``except Exception:`` cannot swallow it.
    """

    def __init__(self, until: datetime | None, signal: str | None = None, seen: int = 0) -> None:
        super().__init__(f"parked until {until} (signal {signal!r})")
        self.until = until
        self.signal = signal
        self.seen = seen  # the newest signal id of that name the run had seen: newer ones wake it


class LiveRun:
    """A run executing in this engine: its workflow, live state, lease, inbox and outcome.

    Args:
        journal: where its events go.
        workflow: its definition.
        state: its state as folded from the journal (empty for a new run).
        lease: the lease every write carries (``None`` only for a run that is recorded for a
            worker to execute, never executed here).
        owner: who holds ``lease``, and ``ttl`` its duration: a new run is created holding it.
        spawn_child: how a child workflow node starts (or attaches to) its child run.
        claimed: the lease came from a worker's claim: the run is handed back when it parks.
        on_exit: called when the run's task ends (a worker frees its slot and lease).
    """

    def __init__(
        self,
        journal: Journal,
        workflow: Workflow,
        state: RunState,
        *,
        lease: Lease | None,
        owner: Owner | None = None,
        ttl: float | None = None,
        spawn_child: SpawnChild | None = None,
        claimed: bool = False,
        on_exit: Callable[[LiveRun], Awaitable[None]] | None = None,
    ) -> None:
        assert state.run_id is not None
        self.journal = journal
        self.run_id: str = state.run_id
        self.workflow = workflow
        self.state = state
        self.lease = lease
        self.owner = owner
        self.ttl = ttl
        self.spawn_child = spawn_child
        self.claimed = claimed
        self.on_exit = on_exit
        self.phase = Phase.STARTING
        self._pending: list[ev.Event] = []
        self.finished = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        # the inbox: requests from engine.cancel/pause/unpause (here or in another process)
        self.pause_requested: str | None = None  # a reason, once a pause was asked
        self.unpause_requested = False  # an unpause was asked while the run had its task
        self.cancel_reason: str | None = None  # set before the run's scope is cancelled
        self.control_seen = state.control_seen  # the newest inbox request applied (its signal id)
        self.request: int | None = None  # the inbox request that the next control event applies
        self.lost: BaseException | None = None  # a LeaseLost, once another owner took the run over
        self.scope: anyio.CancelScope | None = None  # the run's task, while it has one
        self.parked: RunParked | None = None  # why the run waits, while it is parked

    def shared_model(self) -> Any:
        """A fresh instance of the shared context for one step, or ``None`` if the workflow has none."""
        model = self.workflow.state_model
        if model is None:
            return None
        return model.model_validate(self.state.shared or {})

    def state_patch(self, before: dict[str, Any] | None, shared: Any) -> dict[str, Any] | None:
        """The fields of the shared context a step changed (compared with what it started from)."""
        if shared is None or before is None:
            return None
        after = shared.model_dump(mode="json")
        patch = {k: v for k, v in after.items() if before.get(k) != v} or None
        if patch is not None:
            storable(patch, what="the shared state a step changed")
        return patch

    def record(self, event_type: Any, **fields: Any) -> ev.Event:
        """Create the next event (seq and time assigned), apply it to the live state, queue it for commit."""
        event: ev.Event = event_type(seq=self.state.last_seq + 1, ts=ev.utcnow(), **fields)
        self.state.apply(event)
        self._pending.append(event)
        return event

    def record_control(self, event_type: Any, **fields: Any) -> ev.Event:
        """Record a control event (pause, unpause, cancel), marked with the inbox request it applies."""
        request, self.request = self.request, None
        return self.record(event_type, request=request, **fields)

    async def commit(self) -> None:
        """Commit every recorded event. Shielded: once recorded, an event is committed or the run is broken."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await write(self.journal, self.run_id, batch, self.lease, owner=self.owner, ttl=self.ttl)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if self.finished.is_set():
            return
        self.result, self.error = result, error
        self.phase = Phase.FINISHED
        self.finished.set()
