"""Step through a run's history: the state after every event, and what each event changed."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from . import events as ev
from .fold import NodeState, RunState

__all__ = ["ReplayStep", "replay", "state_changes"]


@dataclass(frozen=True)
class ReplayStep:
    """One transition: the event, the state right after it, and what it changed."""

    event: ev.Event
    state: RunState
    changes: list[str]


def replay(events: Iterable[ev.Event], run_id: str | None = None) -> Iterator[ReplayStep]:
    """Yield the state after each event, in order, with a line per field the event changed.

    Each yielded state is a snapshot of its own: keep it, compare it, it will not change. ::

        for step in durable.replay(await engine.history("order-42")):
            print(step.event.seq, step.event.type, step.changes)
    """
    state = RunState(run_id=run_id)
    for event in events:
        before = copy.deepcopy(state)
        state.apply(event)
        yield ReplayStep(event, copy.deepcopy(state), state_changes(before, state))


def _short(value: Any) -> str:
    text = repr(value.isoformat() if hasattr(value, "isoformat") else value)
    return text if len(text) <= 60 else text[:57] + "..."


def state_changes(before: RunState, after: RunState) -> list[str]:
    """What differs between two states, one line each (``run status running -> completed``)."""
    lines: list[str] = []
    for f in fields(RunState):
        if f.name in ("nodes", "last_seq", "definition"):
            continue
        a, b = getattr(before, f.name), getattr(after, f.name)
        if a != b:
            lines.append(f"run {f.name}: {_short(a)} -> {_short(b)}")
    for node_id, node in after.nodes.items():
        old = before.nodes.get(node_id)
        if old is None:
            lines.append(f"node {node_id!r} appears ({node.kind}, {node.status})")
            continue
        for f in fields(NodeState):
            a, b = getattr(old, f.name), getattr(node, f.name)
            if a != b:
                lines.append(f"node {node_id!r} {f.name}: {_short(a)} -> {_short(b)}")
    return lines
