"""The state of a run is a fold of its events: ``fold(events) -> RunState``.

Pure: no I/O, no clock, no tasks. The same events always give the same state, which is
what makes resume, replay and property tests possible. While a run executes, the engine
applies each event to its live state with :meth:`RunState.apply` instead of re-folding;
``fold`` is exactly repeated ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from . import events as ev

__all__ = ["NodeState", "RunState", "fold"]

# Node statuses
NOT_STARTED = "not_started"  # in the definition, not reached yet
PENDING = "pending"  # scheduled, not started (may wait for not_before)
RUNNING = "running"  # an attempt started and has not ended
RETRYING = "retrying"  # an attempt failed; another is scheduled
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"  # was running when the run ended (cancelled by a failing sibling)
SLEEPING = "sleeping"  # a durable sleep, until not_before
WAITING = "waiting"  # waiting for a signal, until not_before (the deadline) if any


@dataclass
class NodeState:
    """What the journal says about one node (a step, a join, or a fork)."""

    node: str
    kind: str = "step"
    status: str = PENDING
    attempt: int = 0  # the highest attempt number started
    scheduled: int = 0  # the highest attempt number scheduled
    failures: int = 0  # failed attempts (crashes are not failures: they leave no step_failed)
    output: Any = None
    error: ev.ErrorInfo | None = None
    not_before: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    branches: dict[str, str] = field(default_factory=dict)  # forks only: branch -> status
    chosen: str | None = None  # routes: the branch taken
    iteration: int = 0  # loops: iterations finished
    items: int | None = None  # maps: how many items
    child_run_id: str | None = None  # child workflows: the child's run


@dataclass
class RunState:
    """The folded state of one run. Build it with :func:`fold`; never mutate a state you did not fold."""

    run_id: str | None = None
    status: str = "pending"  # pending (no events) | running | completed | failed | cancelled
    workflow: str | None = None
    version: str | None = None
    definition_hash: str | None = None
    definition: dict[str, Any] | None = None
    input: Any = None
    result: Any = None
    error: ev.ErrorInfo | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    last_seq: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    forked_from: ev.ForkOrigin | None = None
    parent: ev.ParentRef | None = None
    paused: bool = False
    shared: dict[str, Any] | None = None  # the shared context (workflow state model), as JSON
    consumed_signals: list[int] = field(default_factory=list)
    control_seen: int = 0  # the newest control request (from the run's inbox) its owner applied

    @property
    def finished(self) -> bool:
        """True once a terminal event (completed, failed, cancelled) has been folded."""
        return self.status in ev.TERMINAL_STATUSES

    def in_flight(self) -> list[str]:
        """Nodes with an attempt started and not ended: these run again on resume."""
        return [n for n, s in self.nodes.items() if s.status == RUNNING]

    def pending(self) -> list[str]:
        """Nodes scheduled (or waiting to retry) and not yet started."""
        return [n for n, s in self.nodes.items() if s.status in (PENDING, RETRYING)]

    def parked(self) -> NodeState | None:
        """The node the run is parked at (sleeping or waiting for a signal), if any."""
        return next((s for s in self.nodes.values() if s.status in (SLEEPING, WAITING)), None)

    def completed(self) -> list[str]:
        """Nodes whose completion is committed: these never run again."""
        return [n for n, s in self.nodes.items() if s.status == COMPLETED]

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready data (datetimes as ISO strings)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data

    def _node(self, node: str, kind: str = "step") -> NodeState:
        state = self.nodes.get(node)
        if state is None:
            state = self.nodes[node] = NodeState(node=node, kind=kind)
        return state

    def apply(self, event: ev.Event) -> None:
        """Fold one more event into this state, in place. Events must come in seq order."""
        self.last_seq = event.seq
        match event:
            case ev.StepScheduled():
                n = self._node(event.node)
                n.status = PENDING if n.failures == 0 else RETRYING
                n.scheduled = max(n.scheduled, event.attempt)
                n.not_before = event.not_before
                n.scheduled_at = n.scheduled_at or event.ts
            case ev.StepStarted():
                n = self._node(event.node)
                n.status = RUNNING
                n.attempt = max(n.attempt, event.attempt)
                n.not_before = None
                n.started_at = n.started_at or event.ts
            case ev.StepCompleted():
                n = self._node(event.node)
                n.status = COMPLETED
                n.output = event.output
                n.error = None
                n.finished_at = event.ts
                if event.state_patch:  # field-level, last writer wins: see docs/language.md
                    self.shared = {**(self.shared or {}), **event.state_patch}
            case ev.StepFailed():
                n = self._node(event.node)
                n.failures += 1
                n.error = event.error
                if event.final:
                    n.status = FAILED
                    n.finished_at = event.ts
                else:
                    n.status = RETRYING
                    n.not_before = event.retry_at
            case ev.RunStarted():
                self.status = "running"
                self.workflow = event.workflow
                self.version = event.version
                self.definition_hash = event.definition_hash
                self.definition = event.definition
                self.input = event.input
                self.started_at = event.ts
                self.forked_from = event.forked_from
                self.parent = event.parent
                self.shared = event.state
                for node_id, kind in _node_kinds(event.definition):
                    self.nodes.setdefault(node_id, NodeState(node=node_id, kind=kind, status=NOT_STARTED))
            case ev.ForkStarted():
                n = self._node(event.node, "fork")
                n.status = RUNNING
                n.started_at = event.ts
                n.branches = {b: RUNNING for b in event.branches}
            case ev.BranchCompleted():
                self._node(event.node, "fork").branches[event.branch] = COMPLETED
            case ev.BranchFailed():
                n = self._node(event.node, "fork")
                n.branches[event.branch] = FAILED
                n.error = event.error
            case ev.ForkJoined():
                n = self._node(event.node, "fork")
                n.status = COMPLETED
                n.finished_at = event.ts
            case ev.RouteChosen():
                n = self._node(event.node, "route")
                n.status = RUNNING
                n.chosen = event.branch
                n.started_at = n.started_at or event.ts
            case ev.LoopIterated():
                n = self._node(event.node, "loop")
                n.status = RUNNING
                n.iteration = event.iteration
                n.output = event.value
                n.started_at = n.started_at or event.ts
            case ev.MapStarted():
                n = self._node(event.node, "map")
                n.status = RUNNING
                n.items = event.count
                n.started_at = event.ts
            case ev.ChildStarted():
                n = self._node(event.node, "child")
                n.status = RUNNING
                n.child_run_id = event.child_run_id
                n.started_at = n.started_at or event.ts
            case ev.SleepStarted():
                n = self._node(event.node, "sleep")
                n.status = SLEEPING
                n.not_before = event.until
                n.started_at = event.ts
            case ev.WaitStarted():
                n = self._node(event.node, "wait")
                n.status = WAITING
                n.not_before = event.deadline
                n.started_at = event.ts
            case ev.SignalReceived():
                self.consumed_signals.append(event.signal_id)
            case ev.NodeCompleted():
                n = self._node(event.node)
                n.status = COMPLETED
                n.output = event.output
                n.not_before = None
                n.finished_at = event.ts
                n.started_at = n.started_at or event.ts
            case ev.RunPaused():
                self.paused = True
                self.control_seen = max(self.control_seen, event.request or 0)
            case ev.RunUnpaused():
                self.paused = False
                self.control_seen = max(self.control_seen, event.request or 0)
            case ev.RunCompleted():
                self._finish("completed", event.ts)
                self.result = event.result
            case ev.RunFailed():
                self._finish("failed", event.ts)
                self.error = event.error
            case ev.RunCancelled():
                self._finish("cancelled", event.ts)
                self.control_seen = max(self.control_seen, event.request or 0)

    def _finish(self, status: str, ts: datetime) -> None:
        self.status = status
        self.finished_at = ts
        for n in self.nodes.values():
            if n.status in (RUNNING, PENDING, RETRYING, SLEEPING, WAITING):
                n.status = INTERRUPTED
            for b, s in n.branches.items():
                if s == RUNNING:
                    n.branches[b] = INTERRUPTED


def _node_kinds(definition: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for node in definition.get("nodes", []):
        yield node["id"], node.get("kind", "step")
        if node.get("kind") == "loop":  # body steps appear per iteration ("step#3"), when they run
            continue
        default = node.get("default") if node.get("kind") == "route" else None
        for b in [*node.get("branches", []), *([default] if default else [])]:
            for n in b.get("nodes", []):
                yield n["id"], n.get("kind", "step")


def fold(events: Iterable[ev.Event], run_id: str | None = None) -> RunState:
    """Fold events (in seq order) into the run's state. Pure: same events, same state."""
    state = RunState(run_id=run_id)
    for event in events:
        state.apply(event)
    return state


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
