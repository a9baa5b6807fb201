"""The node kinds a workflow is made of, each with its canonical form (for the definition hash).

A workflow is a sequence of nodes. Some nodes hold *lanes* (a tuple of step nodes run in
order): a fork's branches, a route's branches and default, a loop's body. Lanes hold steps
only; durable waits (``sleep``, ``wait_for``) stand at the top level of a workflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from .steps import Step

if TYPE_CHECKING:
    from .definition import Workflow

__all__ = [
    "Branch",
    "ChildNode",
    "ForkNode",
    "LoopNode",
    "LoopResult",
    "MapNode",
    "Node",
    "RouteNode",
    "SleepNode",
    "StepNode",
    "WaitNode",
    "again",
    "done",
]


@dataclass(frozen=True)
class StepNode:
    """A step at a position in the workflow. ``kind`` is ``"step"``, or ``"join"`` after a fork."""

    id: str
    step: Step[Any, Any]
    kind: str = "step"

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "step": self.step.name,
            "step_version": self.step.version,
            "retry": self.step.retry.canonical(),
            "timeout": self.step.timeout,
        }


@dataclass(frozen=True)
class Branch:
    """One lane: a chain of steps run in order (a fork's branch, a route's branch, a loop's body)."""

    name: str
    nodes: tuple[StepNode, ...]

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": [n.canonical() for n in self.nodes]}


@dataclass(frozen=True)
class ForkNode:
    """Branches that run concurrently; the node's output is ``{branch_name: branch_output}``."""

    id: str
    branches: tuple[Branch, ...]
    kind: str = field(default="fork", init=False)

    def canonical(self) -> dict[str, Any]:
        return {"id": self.id, "kind": "fork", "branches": [b.canonical() for b in self.branches]}


@dataclass(frozen=True)
class RouteNode:
    """Runs the one branch whose name is ``key(input)`` (or ``default``); its output is that branch's.

    ``key`` must be quick and free of side effects: it runs on the event loop, and its answer is
    journaled, so a resumed run takes the branch it took before.
    """

    id: str
    key: Callable[[Any], Any]
    key_name: str
    keys: tuple[str, ...] | None
    branches: tuple[Branch, ...]
    default: Branch | None
    kind: str = field(default="route", init=False)

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "route",
            "key": self.key_name,
            "keys": list(self.keys) if self.keys is not None else None,
            "branches": [b.canonical() for b in self.branches],
            "default": self.default.canonical() if self.default is not None else None,
        }

    def lane(self, key: str) -> Branch | None:
        """The branch for ``key``, or the default."""
        return next((b for b in self.branches if b.name == key), self.default)


class LoopResult(BaseModel):
    """What a loop body's last step returns: go ``again`` with ``value``, or stop with it."""

    model_config = ConfigDict(frozen=True)

    again: bool
    value: Any = None


def again(value: Any = None) -> LoopResult:
    """Return this from a loop body to run another iteration on ``value``."""
    return LoopResult(again=True, value=value)


def done(value: Any = None) -> LoopResult:
    """Return this from a loop body to end the loop; ``value`` is the loop's output."""
    return LoopResult(again=False, value=value)


@dataclass(frozen=True)
class LoopNode:
    """Runs ``body`` over and over; each iteration's last step says whether to go again.

    Iteration *i* runs the body's steps under the journal names ``"<step>#<i>"``.
    """

    id: str
    body: Branch
    max_iterations: int
    on_max: Literal["fail", "exit"]
    kind: str = field(default="loop", init=False)

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "loop",
            "max_iterations": self.max_iterations,
            "on_max": self.on_max,
            "branches": [self.body.canonical()],
        }


@dataclass(frozen=True)
class MapNode:
    """Runs ``step`` once per item of the incoming list, at most ``concurrency`` at a time.

    Item *i* runs under the journal name ``"<id>[<i>]"``; the output is the list of results,
    in the order of the items.
    """

    id: str
    step: Step[Any, Any]
    concurrency: int | None
    kind: str = field(default="map", init=False)

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "map",
            "concurrency": self.concurrency,
            "step": self.step.name,
            "step_version": self.step.version,
            "retry": self.step.retry.canonical(),
            "timeout": self.step.timeout,
        }


@dataclass(frozen=True)
class ChildNode:
    """Runs another workflow as a child run (id ``"<parent run>/<node>"``); its result is the output."""

    id: str
    workflow: Workflow
    kind: str = field(default="child", init=False)

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "child",
            "workflow": self.workflow.name,
            "workflow_version": self.workflow.version,
            "definition_hash": self.workflow.definition_hash,
        }


@dataclass(frozen=True)
class SleepNode:
    """A durable sleep: the run parks until ``seconds`` after it reached this node. Passes its input on."""

    id: str
    seconds: float
    kind: str = field(default="sleep", init=False)

    def canonical(self) -> dict[str, Any]:
        return {"id": self.id, "kind": "sleep", "seconds": self.seconds}


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class WaitNode:
    """Parks the run until the signal ``signal`` arrives; its payload is the output.

    After ``timeout`` seconds the run fails with ``SignalTimeout``, or, if a ``default`` was
    declared, goes on with it.
    """

    id: str
    signal: str
    timeout: float | None
    default: Any = _NO_DEFAULT
    kind: str = field(default="wait", init=False)

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "wait",
            "signal": self.signal,
            "timeout": self.timeout,
            "has_default": self.has_default,
            "default_value": self.default if self.has_default else None,
        }


Node = StepNode | ForkNode | RouteNode | LoopNode | MapNode | ChildNode | SleepNode | WaitNode


def lanes(node: Node) -> tuple[Branch, ...]:
    """The lanes (chains of steps) a node holds, in order."""
    if isinstance(node, ForkNode):
        return node.branches
    if isinstance(node, RouteNode):
        return (*node.branches, *((node.default,) if node.default is not None else ()))
    if isinstance(node, LoopNode):
        return (node.body,)
    return ()


def inner_ids(node: Node) -> Iterator[str]:
    """The node's id, then the ids of the steps in its lanes."""
    yield node.id
    for lane in lanes(node):
        for n in lane.nodes:
            yield n.id


def map_steps(node: Node, wrap: Callable[[StepNode], Step[Any, Any]]) -> Node:
    """A copy of ``node`` with every step ``s`` it holds replaced by ``wrap(s)`` (ids kept)."""

    def swap(n: StepNode) -> StepNode:
        return StepNode(n.id, wrap(n), n.kind)

    def swap_lane(b: Branch) -> Branch:
        return Branch(b.name, tuple(swap(n) for n in b.nodes))

    if isinstance(node, StepNode):
        return swap(node)
    if isinstance(node, ForkNode):
        return ForkNode(node.id, tuple(swap_lane(b) for b in node.branches))
    if isinstance(node, RouteNode):
        return replace(
            node,
            branches=tuple(swap_lane(b) for b in node.branches),
            default=swap_lane(node.default) if node.default is not None else None,
        )
    if isinstance(node, LoopNode):
        return replace(node, body=swap_lane(node.body))
    if isinstance(node, MapNode):
        return replace(node, step=wrap(StepNode(node.id, node.step)))
    return node
