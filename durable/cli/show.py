"""``durable show``: one run summed up, its nodes laid out along its workflow's structure.

Built from the run's events alone (the definition is in ``run_started``), so it works for a
run of code you no longer have, or one imported from another machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .. import events as ev
from .._ownership import owned_by_the_living, owner_text
from ..fold import RunState, fold
from ..journal.base import RunInfo
from .render import STATUS_STYLE, Entry, attempts, clip, compact, duration, offset, structure, when

__all__ = ["failure_traceback", "run_summary"]

_VALUE_WIDTH = 300  # input and result; `durable state` has them whole
_MANY = 12  # more iterations or items than this: the first and last few, and how many between


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _header(state: RunState, events: Sequence[ev.Event], info: RunInfo | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    definition = (state.definition_hash or "")[:12]
    grid.add_row("workflow", f"{state.workflow} v{state.version}, definition {definition}")
    if state.forked_from is not None:
        origin = state.forked_from
        grid.add_row("forked from", f"run {origin.run_id} at seq {origin.seq} (its events 2-{origin.seq} were copied)")
    if state.parent is not None:
        grid.add_row("parent", f"run {state.parent.run_id}, node {state.parent.node}")
    if state.started_at is not None:
        grid.add_row("created", f"{when(state.started_at, ms=True)} UTC")
    if state.finished_at is not None and state.started_at is not None:
        took = duration((state.finished_at - state.started_at).total_seconds())
        grid.add_row("finished", f"{when(state.finished_at, ms=True)} UTC (took {took})")
    else:
        last = max(e.ts for e in events)
        grid.add_row("last event", f"{when(last, ms=True)} UTC (seq {state.last_seq}); the run has not finished")
    grid.add_row("input", clip(compact(state.input), _VALUE_WIDTH))
    if state.status == "completed":
        grid.add_row("result", clip(compact(state.result), _VALUE_WIDTH))
    if state.error is not None:
        err = state.error
        where = f" at step {err.node!r}" if err.node else ""
        if err.branch:
            where += f" (branch {err.branch!r})"
        grid.add_row("error", Text(clip(f"{err.type}{where}: {err.message}", _VALUE_WIDTH), style="red"))
    if state.status == "cancelled":
        reason = next((e.reason for e in events if isinstance(e, ev.RunCancelled)), "")
        grid.add_row("cancelled", reason or "(no reason given)")
    owner = owner_text(info) if info is not None else None
    if owner is not None:
        grid.add_row("owner", Text(owner, style="cyan"))
    if not state.finished:
        live = info is not None and owned_by_the_living(info)
        grid.add_row("unfinished", Text(_unfinished(state, live), style="yellow"))
    return grid


def _unfinished(state: RunState, owned: bool) -> str:
    notes = []
    if state.paused:
        notes.append("paused (engine.unpause to let it go on)")
    parked = state.parked()
    if parked is not None:
        until = f" until {when(parked.not_before)} UTC" if parked.not_before else ""
        notes.append(f"parked at {parked.node} ({parked.status}{until})")
    if state.in_flight():
        notes.append("in flight at its last event: " + ", ".join(state.in_flight()))
    if state.pending():
        notes.append("scheduled or waiting to retry: " + ", ".join(state.pending()))
    if owned:
        notes.append("its owner is executing it: wait for it (engine.wait, or durable.run with its id waits)")
    else:
        notes.append("resume it with engine.resume(run_id, workflow) or durable.run(workflow, run_id=...)")
    return "; ".join(notes)


def _rows(entries: list[Entry], prefix: str = "", top: bool = True) -> list[tuple[str, Entry, str | None]]:
    """(label with tree glyphs, entry, the journal node of this row) for every row, depth first."""
    rows: list[tuple[str, Entry, str | None]] = []
    for i, e in enumerate(entries):
        last = i == len(entries) - 1
        glyph = "" if top else ("└─ " if last else "├─ ")
        stem = "" if top else ("   " if last else "│  ")
        kind = "" if e.kind in ("step", "branch", "item") else f" ({e.kind})"
        title = f"branch {e.label}" if e.kind == "branch" else e.label + kind
        if e.kind == "branch" and e.label == "body":
            title = "body"
        if len(e.node_ids) > 1 or (e.node_ids and e.node_ids != [e.label]):  # a loop's step: one row per iteration
            rows.append((prefix + glyph + title, e, None))
            rows += [(prefix + stem + "   " + label, e, node) for label, node in _thin(e.node_ids)]
        else:
            rows.append((prefix + glyph + title, e, e.node_ids[0] if e.node_ids else None))
        children = e.children
        if e.kind == "map":
            rows += [(prefix + stem + "   " + label, e, node) for label, node in _thin([c.label for c in children])]
            continue
        rows += _rows(children, prefix + stem, top=False)
    return rows


def _thin(ids: list[str]) -> list[tuple[str, str | None]]:
    """Every id, or with many, the first and last few and a line for the rest."""
    if len(ids) <= _MANY:
        return [(i, i) for i in ids]
    head, tail = ids[:5], ids[-5:]
    return [*((i, i) for i in head), (f"… {len(ids) - 10} more", None), *((i, i) for i in tail)]


def _nodes_table(state: RunState, start: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="steps", title_justify="left")
    table.add_column("node", no_wrap=True)
    table.add_column("status", no_wrap=True, min_width=11)
    table.add_column("attempts", justify="right", no_wrap=True, min_width=8)
    table.add_column("failures", justify="right", no_wrap=True, min_width=8)
    table.add_column("started", justify="right", no_wrap=True, min_width=8)
    table.add_column("took", justify="right", no_wrap=True, min_width=6)
    table.add_column("note")  # the one column that gives way on a narrow terminal
    for label, entry, node_id in _rows(structure(state.definition or {}, state)):
        if entry.kind == "branch":
            status = _branch_status(state, entry)
            table.add_row(Text(label, style="bold"), status, "", "", "", "", _cut(entry.note))
        elif node_id is None:
            table.add_row(Text(label, style="dim" if "more" in label else ""), "", "", "", "", "", "")
        else:
            table.add_row(*_node_cells(label, state, node_id, start, entry.note if node_id == entry.label else ""))
    return table


def _cut(text: str) -> Text:
    return Text(text, no_wrap=True, overflow="ellipsis")


def _branch_status(state: RunState, entry: Entry) -> Text:
    """A fork's branch keeps its status on the fork; a route's, on whether it was taken."""
    name = entry.label
    for n in state.nodes.values():
        if name in n.branches:
            return _status(n.branches[name])
    return Text("")


def _node_cells(label: str, state: RunState, node_id: str, start: datetime, note: str) -> list[Any]:
    n = state.nodes.get(node_id)
    if n is None:
        return [label, _status("not_started"), "", "", "", "", _cut(note)]
    is_step = n.attempt > 0
    began = offset((n.started_at - start).total_seconds()) if n.started_at else ""
    took = duration((n.finished_at - n.started_at).total_seconds()) if n.finished_at and n.started_at else ""
    return [
        label,
        _status(n.status),
        str(n.attempt) if is_step else "",
        Text(str(n.failures), style="red" if n.failures else "") if is_step else "",
        began,
        took,
        _cut(note),
    ]


def _troubles(events: Sequence[ev.Event], start: datetime) -> Table | None:
    """Every attempt that failed or was cut short, with its error: what a debugging session starts from."""
    errors = {(e.node, e.attempt): e for e in events if isinstance(e, ev.StepFailed)}
    rows = [a for a in attempts(events) if a.outcome != "completed"]
    if not rows:
        return None
    finished = events[-1].type in ev.TERMINAL_TYPES
    table = Table(box=box.SIMPLE_HEAD, title="attempts that failed or did not finish", title_justify="left")
    # Only the last column gives way on a narrow terminal: the others say which attempt it was.
    table.add_column("node", no_wrap=True, min_width=min(40, max(len(a.node) for a in rows)))
    table.add_column("att", justify="right", no_wrap=True, min_width=3)
    table.add_column("at", justify="right", no_wrap=True, min_width=8)
    table.add_column("then", no_wrap=True, min_width=11)
    table.add_column("what happened")  # its cells are one line each, cut with an ellipsis
    for a in rows:
        failed = errors.get((a.node, a.attempt))
        if failed is not None:
            then = "failed" if failed.final else "retried"
            text, style = clip(f"{failed.error.type}: {failed.error.message}"), "red"
        elif a.end < max(e.ts for e in events if getattr(e, "node", None) == a.node):
            then, style = "ran again", "yellow"
            text = "no ending event: its process stopped (a crash, a shutdown) and a later one ran it again"
        elif finished:
            then, text, style = "cut short", "no ending event: the run ended first", "yellow"
        else:
            then, style = "in flight?", "yellow"
            text = "no ending event yet: it is running, or its process stopped (resume the run)"
        what = Text(text, style=style, no_wrap=True, overflow="ellipsis")
        table.add_row(a.node, str(a.attempt), offset((a.end - start).total_seconds()), Text(then, style=style), what)
    return table


def run_summary(run_id: str, events: Sequence[ev.Event], info: RunInfo | None = None) -> RenderableType:
    """The run's header, its nodes along the workflow's structure, its troubles, and the failure's traceback.

    With ``info`` (the run's index row), the header also says who owns the run.
    """
    state = fold(events, run_id)
    start = min(e.ts for e in events)
    title = Text.assemble(("run ", "bold"), (run_id, "bold"), "  ", _status(state.status))
    if state.paused and not state.finished:
        title.append("  paused", style="yellow")
    parts: list[RenderableType] = [title, _header(state, events, info), Text(), _nodes_table(state, start)]
    caption = f"started: offset from {when(start, ms=True)} UTC; took: from the first attempt's start to the end"
    if state.forked_from is not None:
        caption += "; copied steps keep the times of the run they came from"
    parts.append(Text(caption, style="dim"))
    troubles = _troubles(events, start)
    if troubles is not None:
        parts += [Text(), troubles]
    if state.error is not None and state.error.traceback:
        parts.append(Text())
        parts.append(Text(f"traceback of the failure (as recorded at seq {state.last_seq}):", style="bold"))
    return Group(*parts)


def failure_traceback(run_id: str, events: Sequence[ev.Event]) -> Text | None:
    """The traceback of the run's failure, as the journal recorded it (print it with ``soft_wrap``: never cut)."""
    error = fold(events, run_id).error
    if error is None or not error.traceback:
        return None
    return Text(error.traceback.rstrip("\n"), style="red")
