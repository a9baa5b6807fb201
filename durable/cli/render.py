"""What the command line prints: tables and summaries of runs, built from events and their fold.

Pure functions from events (or index rows) to rich renderables; no I/O. ``durable/cli.py``
fetches, calls these, and prints. The timeline chart is in :mod:`durable._timeline`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from .. import events as ev
from .._ownership import owner_text, waits_text
from ..fold import NodeState, RunState
from ..journal.base import RunInfo
from ..replay import ReplayStep

__all__ = [
    "STATUS_STYLE",
    "Attempt",
    "attempts",
    "changes_text",
    "clip",
    "compact",
    "duration",
    "Entry",
    "event_durations",
    "history_table",
    "offset",
    "payload_summary",
    "runs_table",
    "structure",
    "when",
]

STATUS_STYLE = {
    "running": "yellow",
    "pending": "yellow",
    "retrying": "yellow",
    "interrupted": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "not_started": "dim",
}
_PAYLOAD_WIDTH = 200  # a first cut; the table cuts again to the terminal's width
_VALUE_WIDTH = 300  # input and result in `show`; `durable state` has them whole
_ERROR_TYPES = ("step_failed", "branch_failed", "run_failed")


# -- small formatters -----------------------------------------------------------------------


def clip(text: str, width: int = _PAYLOAD_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def compact(value: Any) -> str:
    """A JSON value in its shortest form."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def duration(seconds: float) -> str:
    """A duration: ``0.312s``, ``2m05.1s``, ``3h02m07s``, ``1d04h10m``."""
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m{int(secs):02d}s"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h{minutes:02d}m"


def offset(seconds: float) -> str:
    """A time offset from a run's start: ``+0.312s``, ``+2m05.1s``."""
    return ("-" if seconds < 0 else "+") + duration(abs(seconds))


def when(ts: datetime, *, ms: bool = False) -> str:
    """A UTC time as ``2026-11-22 17:17:06`` (with milliseconds if ``ms``)."""
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ms else ts.strftime("%Y-%m-%d %H:%M:%S")


def _node(event: ev.Event) -> str:
    return getattr(event, "node", None) or ""


# -- history --------------------------------------------------------------------------------


def event_durations(events: Sequence[ev.Event]) -> dict[int, float]:
    """Seconds each ending event took, by seq.

    ``step_completed`` and ``step_failed``: since that attempt's ``step_started``;
    ``fork_joined`` and ``node_completed`` (a route, loop, map, child, sleep or wait ended):
    since the node's first event; ``run_completed``, ``run_failed`` and ``run_cancelled``:
    since ``run_started``.
    """
    started: dict[tuple[str, int], datetime] = {}
    first_seen: dict[str, datetime] = {}
    out: dict[int, float] = {}
    run_start = events[0].ts if events and isinstance(events[0], ev.RunStarted) else None
    for event in events:
        node = getattr(event, "node", None)
        if node is not None:
            first_seen.setdefault(node, event.ts)
        match event:
            case ev.StepStarted():
                started[(event.node, event.attempt)] = event.ts
            case ev.StepCompleted() | ev.StepFailed():
                began = started.get((event.node, event.attempt))
                if began is not None:
                    out[event.seq] = (event.ts - began).total_seconds()
            case ev.ForkJoined() | ev.NodeCompleted():
                out[event.seq] = (event.ts - first_seen[event.node]).total_seconds()
            case ev.RunCompleted() | ev.RunFailed() | ev.RunCancelled() if run_start is not None:
                out[event.seq] = (event.ts - run_start).total_seconds()
    return out


def payload_summary(event: ev.Event) -> Text:
    """What an event carries beyond its columns, in one short line; errors in red."""
    text, style = _payload(event)
    return Text(clip(text), style=style, no_wrap=True, overflow="ellipsis")


def _payload(event: ev.Event) -> tuple[str, str]:
    """(text, style) of an event's payload."""
    match event:
        case ev.RunStarted():
            hash_ = event.definition_hash[:12]
            text = f"{event.workflow} v{event.version} def {hash_} input={compact(event.input)}"
            if event.forked_from is not None:
                text += f" (forked from {event.forked_from.run_id} at seq {event.forked_from.seq})"
            return text, ""
        case ev.StepScheduled() if event.not_before is not None:
            return f"not before {event.not_before.isoformat(timespec='milliseconds')}", ""
        case ev.StepCompleted():
            return f"output={compact(event.output)}", ""
        case ev.StepFailed():
            then = "final" if event.final else (f"retry at {event.retry_at:%H:%M:%S}" if event.retry_at else "")
            return f"{event.error.type}: {event.error.message} ({then})", "red"
        case ev.ForkStarted():
            return "branches=" + ",".join(event.branches), ""
        case ev.BranchCompleted():
            return f"branch={event.branch}", ""
        case ev.BranchFailed():
            return f"branch={event.branch} {event.error.type}: {event.error.message}", "red"
        case ev.RunCompleted():
            return f"result={compact(event.result)}", ""
        case ev.RunFailed():
            return f"{event.error.type}: {event.error.message}", "red"
        case ev.RouteChosen():
            return f"key={event.key!r} -> branch {event.branch}", ""
        case ev.LoopIterated():
            return f"iteration {event.iteration} {'again' if event.again else 'done'} value={compact(event.value)}", ""
        case ev.MapStarted():
            return f"{event.count} items", ""
        case ev.ChildStarted():
            return f"child run {event.child_run_id}", ""
        case ev.SleepStarted():
            return f"until {event.until.isoformat(timespec='milliseconds')}", ""
        case ev.WaitStarted():
            deadline = f" until {event.deadline.isoformat(timespec='milliseconds')}" if event.deadline else ""
            return f"signal {event.signal!r}{deadline}", ""
        case ev.SignalReceived():
            return f"signal {event.signal!r} #{event.signal_id} payload={compact(event.payload)}", ""
        case ev.NodeCompleted():
            return ("timed out, " if event.timed_out else "") + f"output={compact(event.output)}", ""
        case ev.RunPaused():
            return event.reason, "yellow"
        case ev.RunCancelled():
            return event.reason, "magenta"
    return "", ""


def _history_caption(events: Sequence[ev.Event], start: datetime) -> str:
    caption = f"times are offsets from {when(start)} UTC; took: how long that attempt (or the run) ran"
    first = events[0] if events else None
    if isinstance(first, ev.RunStarted) and first.forked_from is not None:
        origin = first.forked_from
        caption += (
            f"; events 2-{origin.seq} were copied from run {origin.run_id} and keep their times, "
            "seq 1 is when the fork was made"
        )
    return caption


def history_table(
    events: Sequence[ev.Event],
    *,
    title: str | None = None,
    shown: Sequence[ev.Event] | None = None,
) -> Table:
    """The events of one run as a table: seq, offset, type, node, attempt, took, payload.

    Args:
        events: every event of the run (times and durations are computed from all of them).
        title: the table's title.
        shown: the events to list (a filtered subset of ``events``); all of them by default.
    """
    start = min((e.ts for e in events), default=None)
    caption = _history_caption(events, start) if start else None
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD)
    # Every column but the payload keeps its width; the payload gets what is left and is cut
    # there with an ellipsis, so one event is one line ('history --json' has everything).
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("node", no_wrap=True)
    table.add_column("att", justify="right", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("payload")
    took = event_durations(events)
    for event in events if shown is None else shown:
        failed = event.type in _ERROR_TYPES
        table.add_row(
            str(event.seq),
            offset((event.ts - start).total_seconds()) if start else "",
            Text(event.type, style="red" if failed else ("green" if event.type == "run_completed" else "")),
            Text(_node(event)),
            str(getattr(event, "attempt", None) or ""),
            Text(duration(took[event.seq]), style="red" if failed else "") if event.seq in took else "",
            payload_summary(event),
        )
    return table


@dataclass(frozen=True)
class Attempt:
    """One attempt of a step, as the journal tells it."""

    node: str
    attempt: int
    start: datetime
    end: datetime
    outcome: str  # completed | failed | interrupted (no ending event: a crash, a cancellation, or in flight)
    retry_at: datetime | None = None  # a failed attempt that is retried: when the retry was due


def attempts(events: Sequence[ev.Event]) -> list[Attempt]:
    """Every attempt in the run, in the order they started.

    An attempt with no ending event was cut short: by a crash or a shutdown (the run was
    resumed later, or forked), by the end of the run (a failing sibling), or it is still in
    flight at the end of the journal. A resumed run starts again the attempts its process
    had in flight: the first such restart shows where the resume begins, and every attempt
    still open there is drawn up to the event before it, the last moment the journal shows
    its process alive. An attempt open at the end of the journal ends at its last event.
    """
    ordered = sorted(events, key=lambda e: e.seq)
    out: list[Attempt] = []
    open_: dict[tuple[str, int], ev.StepStarted] = {}

    def cut(until: datetime) -> None:
        for (node, attempt), began in open_.items():
            out.append(Attempt(node, attempt, began.ts, max(until, began.ts), "interrupted"))
        open_.clear()

    for i, event in enumerate(ordered):
        if isinstance(event, ev.StepStarted | ev.StepScheduled) and any(
            node == event.node and attempt < event.attempt for node, attempt in open_
        ):
            cut(ordered[i - 1].ts)  # a resume (or the run a fork made): the attempts open before it were cut short
        if isinstance(event, ev.StepStarted):
            open_[(event.node, event.attempt)] = event
        elif isinstance(event, ev.StepCompleted | ev.StepFailed):
            began = open_.pop((event.node, event.attempt), None)
            if began is not None:
                failed = isinstance(event, ev.StepFailed)
                retry_at = event.retry_at if isinstance(event, ev.StepFailed) and not event.final else None
                outcome = "failed" if failed else "completed"
                out.append(Attempt(event.node, event.attempt, began.ts, event.ts, outcome, retry_at))
    if ordered:
        cut(ordered[-1].ts)
    return sorted(out, key=lambda a: (a.start, a.node, a.attempt))


# -- runs -----------------------------------------------------------------------------------


def runs_table(runs: Sequence[RunInfo]) -> Table:
    """The run index as a table, in the order given."""
    table = Table(caption="times are UTC", caption_justify="left", box=box.SIMPLE_HEAD)
    longest = max((len(r.run_id) for r in runs), default=2)
    table.add_column("id", overflow="fold", min_width=min(longest, 36))  # ids are what users copy: keep them whole
    table.add_column("workflow", overflow="fold")
    table.add_column("version")
    table.add_column("status")
    table.add_column("events", justify="right")
    table.add_column("created", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    table.add_column("owner", overflow="fold", ratio=1)
    table.add_column("waits for", overflow="fold", ratio=1)
    for r in runs:
        table.add_row(
            Text(r.run_id),
            Text(r.workflow),
            Text(r.version),
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            str(r.last_seq),
            when(r.created_at),
            when(r.updated_at),
            Text(owner_text(r) or "", style="cyan" if r.status == "running" else ""),
            Text(waits_text(r), style="yellow"),
        )
    return table


# -- replay ---------------------------------------------------------------------------------


def changes_text(steps: Iterable[ReplayStep]) -> Text:
    """What each event changed, event by event: a header line per event, its changes indented."""
    out = Text()
    for step in steps:
        event = step.event
        attempt = getattr(event, "attempt", None)
        where = _node(event) + (f" #{attempt}" if attempt else "")
        style = "red" if event.type in _ERROR_TYPES else "bold"
        out.append(f"{event.seq:>4}  ", style="dim")
        out.append(event.type, style=style)
        out.append(f"  {where}\n" if where else "\n")
        for line in step.changes or ["(no field of the state changed)"]:
            out.append(f"        {line}\n", style="" if step.changes else "dim")
    return out


# -- the structure of a run ---------------------------------------------------------------

_STEP_KINDS = ("step", "join")
_ITERATION = re.compile(r"^(?P<step>.+)#(?P<i>\d+)$")
_ITEM = re.compile(r"^(?P<map>.+)\[(?P<i>\d+)\]$")


@dataclass
class Entry:
    """One row of a run's structure: a node, a branch of a fork or route, a loop's body, or a map's item.

    ``node_ids`` are the journal's nodes the entry stands for: the node itself, or for a step of
    a loop's body each of its iterations (``"check#1"``, ``"check#2"``); none for a branch.
    """

    label: str
    kind: str  # step | join | fork | route | loop | map | child | sleep | wait | branch | item
    node_ids: list[str]
    children: list[Entry] = field(default_factory=list)
    note: str = ""


def _numbered(pattern: re.Pattern[str], group: str, name: str, ids: Iterable[str]) -> list[str]:
    """The ids of ``ids`` that are ``name`` numbered by ``pattern`` (iterations, items), in number order."""
    found = [(int(m["i"]), i) for i in ids if (m := pattern.match(i)) and m[group] == name]
    return [i for _, i in sorted(found)]


def structure(definition: dict[str, Any], state: RunState) -> list[Entry]:
    """The run's nodes laid out along its workflow's definition (as stored in ``run_started``).

    Top-level nodes in order; a fork's or a route's branches under it, each with its steps; a
    loop's body under it, each body step standing for all its iterations; a map's items
    under it. Nodes the journal mentions that the definition does not come last.
    """
    entries: list[Entry] = []
    seen: set[str] = set()
    for node in definition.get("nodes", []):
        node_id, kind = node["id"], node.get("kind", "step")
        entry = Entry(node_id, kind, [node_id])
        n = state.nodes.get(node_id)
        branches = [b for b in [*(node.get("branches") or []), node.get("default")] if isinstance(b, dict)]
        for bi, branch in enumerate(branches):
            name = branch.get("name") or "default"
            if kind == "route" and bi == len(node.get("branches") or []):
                name = "default"
            head = Entry("body" if kind == "loop" else name, "branch", [])
            if kind == "route" and n is not None and n.chosen is not None:
                head.note = "taken" if n.chosen == name else "not taken"
            for step in branch.get("nodes", []):
                ids = [step["id"]]
                if kind == "loop":
                    ids = _numbered(_ITERATION, "step", step["id"], state.nodes) or [step["id"]]
                head.children.append(Entry(step["id"], step.get("kind", "step"), ids))
            entry.children.append(head)
        if kind == "map":
            for item in _numbered(_ITEM, "map", node_id, state.nodes):
                entry.children.append(Entry(item, "item", [item]))
        entry.note = _note(node, n)
        entries.append(entry)
    for e in _walk(entries):
        seen.update(e.node_ids)
    entries += [Entry(node_id, n.kind, [node_id]) for node_id, n in state.nodes.items() if node_id not in seen]
    return entries


def _note(node: dict[str, Any], n: NodeState | None) -> str:
    """What a node that is not a step did: iterations, items, the child run, what it waits for."""
    kind = node.get("kind", "step")
    if kind == "sleep":
        until = f", until {when(n.not_before)} UTC" if n and n.not_before and n.status == "sleeping" else ""
        return f"sleep {duration(float(node.get('seconds') or 0))}{until}"
    if kind == "wait":
        timeout = f", timeout {duration(float(node['timeout']))}" if node.get("timeout") else ""
        return f"signal {node.get('signal')!r}{timeout}"
    if kind == "child":
        run = f"run {n.child_run_id}, " if n and n.child_run_id else ""
        return f"{run}workflow {node.get('workflow')} v{node.get('workflow_version')}"
    if n is None:
        return ""
    if kind == "loop" and n.iteration:
        return f"{n.iteration} iteration{'s' if n.iteration != 1 else ''}"
    if kind == "map" and n.items is not None:
        return f"{n.items} item{'s' if n.items != 1 else ''}"
    return ""


def _walk(entries: Iterable[Entry]) -> Iterable[Entry]:
    for e in entries:
        yield e
        yield from _walk(e.children)
