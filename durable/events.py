"""The event vocabulary: every transition of a run, as a frozen pydantic model.

The vocabulary is closed: :data:`Event` is one discriminated union on ``type``. The journal
stores ``run_id``, ``seq``, ``type``, ``node``, ``attempt`` and ``ts`` in columns of their own
and the remaining fields as a JSON payload (see ``docs/journal.md``).

Values (inputs, outputs, results) are JSON values, already encoded from Python objects by
the step annotations (see :mod:`durable._codec`). Nothing is ever pickled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

__all__ = [
    "EVENT_CLASSES",
    "BranchCompleted",
    "ChildStarted",
    "LoopIterated",
    "MapStarted",
    "NodeCompleted",
    "ParentRef",
    "RouteChosen",
    "RunPaused",
    "RunUnpaused",
    "SignalReceived",
    "SleepStarted",
    "WaitStarted",
    "BranchFailed",
    "ErrorInfo",
    "Event",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "ForkJoined",
    "ForkOrigin",
    "ForkStarted",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunStarted",
    "StepCompleted",
    "StepFailed",
    "StepScheduled",
    "StepStarted",
    "TERMINAL_STATUSES",
    "TERMINAL_TYPES",
    "utcnow",
]


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC (the only clock events ever carry)."""
    return datetime.now(UTC)


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1, description="Position in the run's journal, contiguous from 1.")
    ts: AwareDatetime = Field(description="UTC time at which the engine recorded the transition.")


class ErrorInfo(BaseModel):
    """An exception as recorded in the journal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    message: str
    traceback: str = ""
    node: str | None = None
    branch: str | None = None


class ForkOrigin(BaseModel):
    """Where a forked run came from: its events 2..``seq`` are copies of that run's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    seq: int


class ParentRef(BaseModel):
    """The run and node that started a child run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    node: str


class RunStarted(_EventBase):
    """Seq 1 of every run: what runs, under which definition, on which input."""

    type: Literal["run_started"] = "run_started"
    workflow: str
    version: str
    definition_hash: str
    definition: dict[str, Any]
    input: JsonValue = None
    forked_from: ForkOrigin | None = None
    parent: ParentRef | None = None
    state: dict[str, JsonValue] | None = None


class StepScheduled(_EventBase):
    """A step attempt became runnable, at ``not_before`` at the earliest (retries wait)."""

    type: Literal["step_scheduled"] = "step_scheduled"
    node: str
    attempt: int = Field(ge=1)
    not_before: AwareDatetime | None = None


class StepStarted(_EventBase):
    """An attempt of a step began; committed before the step's code runs."""

    type: Literal["step_started"] = "step_started"
    node: str
    attempt: int = Field(ge=1)


class StepCompleted(_EventBase):
    """An attempt returned; ``output`` is its JSON-encoded return value."""

    type: Literal["step_completed"] = "step_completed"
    node: str
    attempt: int = Field(ge=1)
    output: JsonValue = None
    state_patch: dict[str, JsonValue] | None = None


class StepFailed(_EventBase):
    """An attempt raised. ``final`` means no retry follows; otherwise ``retry_at`` says when."""

    type: Literal["step_failed"] = "step_failed"
    node: str
    attempt: int = Field(ge=1)
    error: ErrorInfo
    retry_at: AwareDatetime | None = None
    final: bool = False


class ForkStarted(_EventBase):
    """A fork began; its branches run concurrently."""

    type: Literal["fork_started"] = "fork_started"
    node: str
    branches: list[str]


class BranchCompleted(_EventBase):
    """Every step of one branch completed; the branch output is its last step's output."""

    type: Literal["branch_completed"] = "branch_completed"
    node: str
    branch: str


class BranchFailed(_EventBase):
    """A branch failed for good; its siblings are cancelled."""

    type: Literal["branch_failed"] = "branch_failed"
    node: str
    branch: str
    error: ErrorInfo


class ForkJoined(_EventBase):
    """All branches of a fork completed; the join step receives ``{branch: output}``."""

    type: Literal["fork_joined"] = "fork_joined"
    node: str


class RunCompleted(_EventBase):
    """The run finished; ``result`` is the last node's output."""

    type: Literal["run_completed"] = "run_completed"
    result: JsonValue = None


class RunFailed(_EventBase):
    """The run ended in failure."""

    type: Literal["run_failed"] = "run_failed"
    error: ErrorInfo


class RouteChosen(_EventBase):
    """A route evaluated its key; ``branch`` is the lane it runs (the key, or ``default``)."""

    type: Literal["route_chosen"] = "route_chosen"
    node: str
    key: str
    branch: str


class LoopIterated(_EventBase):
    """An iteration of a loop's body finished; ``again`` says whether another follows."""

    type: Literal["loop_iterated"] = "loop_iterated"
    node: str
    iteration: int = Field(ge=1)
    again: bool
    value: JsonValue = None


class MapStarted(_EventBase):
    """A map began over ``count`` items; item *i* runs as node ``"<node>[<i>]"``."""

    type: Literal["map_started"] = "map_started"
    node: str
    count: int = Field(ge=0)


class ChildStarted(_EventBase):
    """A child workflow's run was started (or attached to) for this node."""

    type: Literal["child_started"] = "child_started"
    node: str
    child_run_id: str


class SleepStarted(_EventBase):
    """The run parks at this node until ``until`` (wall-clock UTC)."""

    type: Literal["sleep_started"] = "sleep_started"
    node: str
    until: AwareDatetime


class WaitStarted(_EventBase):
    """The run parks at this node until the signal arrives, or ``deadline`` passes."""

    type: Literal["wait_started"] = "wait_started"
    node: str
    signal: str
    deadline: AwareDatetime | None = None
    seen_signal: int = 0  # the newest signal id of this name the run had seen: newer ones wake it


class SignalReceived(_EventBase):
    """A signal was delivered to the waiting node; its payload is the node's output."""

    type: Literal["signal_received"] = "signal_received"
    node: str
    signal: str
    signal_id: int
    payload: JsonValue = None


class NodeCompleted(_EventBase):
    """A node that is not a step (route, loop, map, child, sleep, wait) finished with ``output``."""

    type: Literal["node_completed"] = "node_completed"
    node: str
    output: JsonValue = None
    timed_out: bool = False


class RunPaused(_EventBase):
    """The run was paused; it starts nothing until it is unpaused."""

    type: Literal["run_paused"] = "run_paused"
    reason: str = ""
    request: int | None = None  # the control request (its id in the run's inbox) this applies, if any


class RunUnpaused(_EventBase):
    """A paused run may go on."""

    type: Literal["run_unpaused"] = "run_unpaused"
    request: int | None = None  # the control request (its id in the run's inbox) this applies, if any


class RunCancelled(_EventBase):
    """The run was cancelled and will never be resumed."""

    type: Literal["run_cancelled"] = "run_cancelled"
    reason: str = ""
    request: int | None = None  # the control request (its id in the run's inbox) this applies, if any


Event = Annotated[
    RunStarted
    | StepScheduled
    | StepStarted
    | StepCompleted
    | StepFailed
    | ForkStarted
    | BranchCompleted
    | BranchFailed
    | ForkJoined
    | RouteChosen
    | LoopIterated
    | MapStarted
    | ChildStarted
    | SleepStarted
    | WaitStarted
    | SignalReceived
    | NodeCompleted
    | RunPaused
    | RunUnpaused
    | RunCompleted
    | RunFailed
    | RunCancelled,
    Field(discriminator="type"),
]
"""Any event: one discriminated union on ``type``."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
"""Validates a dict (or JSON) into the right event class."""

EVENT_CLASSES: dict[str, type[BaseModel]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        RunStarted,
        StepScheduled,
        StepStarted,
        StepCompleted,
        StepFailed,
        ForkStarted,
        BranchCompleted,
        BranchFailed,
        ForkJoined,
        RouteChosen,
        LoopIterated,
        MapStarted,
        ChildStarted,
        SleepStarted,
        WaitStarted,
        SignalReceived,
        NodeCompleted,
        RunPaused,
        RunUnpaused,
        RunCompleted,
        RunFailed,
        RunCancelled,
    )
}
"""Every event class, by ``type``."""

EVENT_TYPES: frozenset[str] = frozenset(EVENT_CLASSES)
"""The names of every event type."""

TERMINAL_TYPES: frozenset[str] = frozenset({"run_completed", "run_failed", "run_cancelled"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
"""A run's status once it has a terminal event (``run_completed`` makes it ``completed``, ...)."""
"""Event types after which a run's journal never grows."""
