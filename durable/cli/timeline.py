"""``durable timeline``: a run drawn as a Gantt chart in the terminal.

One lane per step, in the order of the workflow's definition; the lanes of a fork's
branches sit under the fork's own lane, which spans from ``fork_started`` to ``fork_joined``.
Every attempt is a bar from its ``step_started`` to its ``step_completed`` (green) or
``step_failed`` (red); the wait before a retry is dotted; an attempt that never ended
(interrupted by a crash, cancelled by a failing sibling, or still in flight at the end of the
journal) is yellow. Each kind also has its own glyph, so the chart reads without colour.

Time runs left to right, scaled to the width. A stretch in which nothing ran and nothing
waited (a process down between a crash and its resume, or a fork made long after the
events it copied) would squash everything else into a sliver: when it is more than a fifth
of the run, it is drawn as a narrow ``≈`` break instead, not to scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from .. import events as ev
from ..fold import fold
from .render import STATUS_STYLE, Attempt, Entry, attempts, duration, offset, structure, when

__all__ = ["GLYPHS", "timeline"]

GLYPHS = {"completed": "█", "failed": "▓", "interrupted": "░", "wait": "·", "fork": "─", "gap": "≈"}
_STYLES = {
    "completed": "green",
    "failed": "bold red",
    "interrupted": "yellow",
    "wait": "dim",
    "fork": "cyan",
    "gap": "dim",
}
_PRIORITY = {"gap": 0, "wait": 1, "fork": 2, "completed": 3, "interrupted": 4, "failed": 5}  # who wins a shared cell
_GAP_CELLS = 3
_GAP_SHARE = 0.2  # idle stretches longer than this share of the run (and than _GAP_MIN) are drawn as a break
_GAP_MIN = 0.5  # seconds: shorter pauses (a run waiting for its first step, say) are real time worth seeing
_LABEL_MAX = 32


# -- the time axis --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    start: float  # seconds from t0
    end: float
    x: int  # first cell
    width: int
    gap: bool


class _Axis:
    """Seconds from the run's first event -> a cell, with idle stretches squeezed into breaks."""

    def __init__(self, busy: list[tuple[float, float]], points: list[float], width: int) -> None:
        total = max(points) if points else 0.0
        gaps = _idle_gaps(busy, points, total) if total > 0 else []
        gaps = gaps[: max(0, (width // 2) // (_GAP_CELLS + 1))]  # never more breaks than fit
        drawn = total - sum(b - a for a, b in gaps)
        cells = max(1, width - _GAP_CELLS * len(gaps))
        parts: list[tuple[float, float, bool]] = []  # (start, end, is a break)
        cursor = 0.0
        for a, b in [*gaps, (total, total)]:
            # the sentinel (total, total) closes with a time segment, even an empty one after a break
            if a > cursor or not parts or parts[-1][2]:
                parts.append((cursor, a, False))
            if b > a:
                parts.append((a, b, True))
            cursor = b
        widths = [
            _GAP_CELLS if gap else max(1, round(((end - start) / drawn if drawn > 0 else 1.0) * cells))
            for start, end, gap in parts
        ]
        # rounding (and the one cell an empty stretch gets) must not make the chart wider than asked
        widest = max((i for i, (_, _, gap) in enumerate(parts) if not gap), key=lambda i: widths[i])
        widths[widest] = max(1, widths[widest] + width - sum(widths))
        self.segments: list[_Segment] = []
        x = 0
        for (start, end, gap), w in zip(parts, widths, strict=True):
            self.segments.append(_Segment(start, end, x, w, gap))
            x += w
        self.width = x
        self.gaps = [(s.start, s.end) for s in self.segments if s.gap]

    def cell(self, t: float, *, end: bool = False) -> int:
        """The cell holding time ``t`` (for the end of a bar: the last cell it covers)."""
        for s in self.segments:
            if s.gap:
                if t < s.end:  # inside the break (its start belongs to the segment before it)
                    return s.x + _GAP_CELLS // 2
                continue  # its end belongs to the segment after it
            if t <= s.end or s is self.segments[-1]:
                span = s.end - s.start
                frac = (t - s.start) / span if span > 0 else 0.0
                pos = frac * s.width
                c = s.x + (int(pos - 1e-9) if end and pos > 0 else int(pos))
                return max(s.x, min(s.x + s.width - 1, c))
        return 0


def _idle_gaps(busy: list[tuple[float, float]], points: list[float], total: float) -> list[tuple[float, float]]:
    """Stretches between two events in which no attempt ran and no retry waited, long enough to hide the rest."""
    gaps = []
    marks = sorted(set(points))
    for a, b in pairwise(marks):
        if b - a <= max(_GAP_SHARE * total, _GAP_MIN):
            continue
        if any(s < b and e > a for s, e in busy):
            continue
        gaps.append((a, b))
    return gaps


# -- the chart ------------------------------------------------------------------------------


_STEP_KINDS = ("step", "join")
_SPAN_ENDS = ("fork_joined", "node_completed", "branch_failed")  # events that end a fork's (or another node's) span
_MANY_ITEMS = 12  # a map with more items: lanes for the first and last few


def _lanes(entries: list[Entry]) -> list[tuple[str, list[str], str]]:
    """(label, the journal nodes drawn on it, "step" | "span" | "more") for every lane, in the definition's order.

    A step (or join) is a lane of attempts; a step of a loop's body draws every iteration on
    its lane. A node that is not a step (a fork, a route, a loop, a map, a child run, a sleep,
    a wait) gets a lane spanning its life, with the lanes of its branches' steps (or its
    map's items) under it, indented.
    """
    lanes: list[tuple[str, list[str], str]] = []
    for e in entries:
        if e.kind in _STEP_KINDS:
            lanes.append((e.label + (" (join)" if e.kind == "join" else ""), e.node_ids, "step"))
            continue
        inside = [i for c in _descendants(e) for i in c.node_ids]
        lanes.append((f"{e.label} ({e.kind})", [*e.node_ids, *inside], "span"))
        branches = [c for c in e.children if c.kind == "branch"]
        width = max((len(b.label) for b in branches), default=0)
        for branch in branches:
            for j, step in enumerate(branch.children):
                name = branch.label if j == 0 else ""
                lanes.append((f"  {name:<{width}}  {step.label}", step.node_ids, "step"))
        items = [c for c in e.children if c.kind == "item"]
        shown = items if len(items) <= _MANY_ITEMS else [*items[:5], None, *items[-5:]]
        for item in shown:
            if item is None:
                lanes.append((f"  … {len(items) - 10} more items", [], "more"))
            else:
                lanes.append((f"  {item.label[len(e.label) :]}", item.node_ids, "step"))
    return lanes


def _descendants(entry: Entry) -> list[Entry]:
    return [d for c in entry.children for d in [c, *_descendants(c)]]


def _spans(events: Sequence[ev.Event]) -> dict[str, tuple[datetime, datetime]]:
    """Node id -> (first event, closing event or the run's last event), for the nodes that are not steps."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    last = max(e.ts for e in events)
    closed: set[str] = set()
    for event in sorted(events, key=lambda e: e.seq):
        node = getattr(event, "node", None)
        if node is None or node in closed:
            continue
        if node not in spans:
            spans[node] = (event.ts, last)
        if event.type in _SPAN_ENDS:
            spans[node] = (spans[node][0], event.ts)
            closed.add(node)
    return spans


def _paint(row: list[str | None], axis: _Axis, a: float, b: float, kind: str) -> None:
    first, last = axis.cell(a), axis.cell(b, end=True)
    for c in range(first, max(first, last) + 1):
        current = row[c]
        if current is None or _PRIORITY[kind] >= _PRIORITY[current]:
            row[c] = kind


def _bar_text(row: list[str | None]) -> Text:
    text = Text(no_wrap=True, overflow="crop")
    for kind in row:
        if kind is None:
            text.append(" ")
        else:
            text.append(GLYPHS[kind], style=_STYLES[kind])
    return text


def _fit(label: str, width: int) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _axis_rows(axis: _Axis, indent: int) -> list[Text]:
    line = ["─"] * axis.width
    labels: list[tuple[int, str]] = []
    for s in axis.segments:
        if s.gap:
            for c in range(s.x, s.x + s.width):
                line[c] = GLYPHS["gap"]
            continue
        ticks = [s.start]
        step = max(1, s.width // max(1, s.width // 24))  # a tick every ~24 cells
        ticks += [s.start + (s.end - s.start) * (k / s.width) for k in range(step, s.width - 8, step)]
        ticks.append(s.end)
        for t in ticks:
            c = axis.cell(t, end=t == s.end)
            line[c] = "┴"
            labels.append((c, offset(t)))
    label_row = [" "] * (axis.width + 12)
    taken, previous = -1, ""
    for c, text in labels:
        startc = min(max(c - len(text) // 2, 0), len(label_row) - len(text))
        if startc <= taken or text == previous:  # no overlaps; a tiny stretch would repeat one label
            continue
        previous = text
        label_row[startc : startc + len(text)] = list(text)
        taken = startc + len(text)
    pad = " " * indent
    return [Text(pad + "".join(line), style="dim"), Text(pad + "".join(label_row).rstrip(), style="dim")]


def _legend(width: int) -> list[Text]:
    """What the glyphs mean, on as many lines as the width needs."""
    lines = [Text("legend:")]
    for kind, what in (
        ("completed", "attempt completed"),
        ("failed", "attempt failed"),
        ("interrupted", "attempt interrupted or in flight"),
        ("wait", "waiting to retry"),
        ("fork", "fork, route, loop, map, child run, sleep or wait"),
        ("gap", "no step running (not to scale)"),
    ):
        item = Text.assemble((GLYPHS[kind], _STYLES[kind]), f" {what}")
        if len(lines[-1]) + 2 + len(item) > width:
            lines.append(Text("       "))
        lines[-1].append("  ")
        lines[-1].append_text(item)
    return lines


def timeline(run_id: str, events: Sequence[ev.Event], width: int) -> RenderableType:
    """The Gantt chart of a run, ``width`` columns wide."""
    state = fold(events, run_id)
    t0 = min(e.ts for e in events)

    def sec(t: datetime) -> float:
        return (t - t0).total_seconds()

    tries = attempts(events)
    spans = _spans(events)
    lanes = _lanes(structure(state.definition or {}, state))

    busy = [(sec(a.start), sec(a.end)) for a in tries]
    # a retry's wait is part of the run up to its retry time; a process down after that is not
    busy += [(sec(a.end), sec(min(a.retry_at, _next_start(tries, a)))) for a in tries if a.retry_at is not None]
    points = [sec(e.ts) for e in events]

    drawn: list[tuple[str, str, list[Attempt], tuple[datetime, datetime] | None, str]] = []
    for label, node_ids, kind in lanes:
        mine = [t for t in tries if t.node in node_ids]
        span = spans.get(node_ids[0]) if kind == "span" and node_ids else None
        if span is not None:
            # a loop journals nothing before its first iteration ends: its span starts with its steps
            span = (min([span[0], *(t.start for t in mine)]), span[1])
            right = duration((span[1] - span[0]).total_seconds())
        elif kind == "span":
            right = "not_started"
        elif mine:
            right = duration((mine[-1].end - mine[0].start).total_seconds())
            right += f" x{len(mine)}" if len(mine) > 1 else ""
        elif kind == "step":
            right = state.nodes[node_ids[0]].status if node_ids[0] in state.nodes else "not_started"
        else:
            right = ""
        drawn.append((label, kind, mine, span, right))

    label_w = min(_LABEL_MAX, max((len(label) for label, *_ in drawn), default=4))
    right_w = max((len(right) for *_, right in drawn), default=0)
    bars_w = max(20, width - label_w - right_w - 4)  # label, space, bars between two rules, space, right
    axis = _Axis(busy, points, bars_w)

    rows: list[RenderableType] = [_title(run_id, state, events, t0)]
    for label, kind, mine, span, right in drawn:
        row: list[str | None] = [None] * axis.width
        for seg in axis.segments:
            if seg.gap:
                row[seg.x : seg.x + seg.width] = ["gap"] * seg.width
        if span is not None:
            _paint(row, axis, sec(span[0]), sec(span[1]), "fork")
        elif kind == "step":
            for t in mine:
                if t.retry_at is not None:
                    # dotted up to the next attempt's start: it waited for its retry time, then for a worker
                    _paint(row, axis, sec(t.end), sec(max(t.end, _next_start(tries, t))), "wait")
            for t in mine:
                _paint(row, axis, sec(t.start), sec(t.end), t.outcome)
        line = Text(no_wrap=True, overflow="crop")
        line.append(f"{_fit(label, label_w):<{label_w}} ", style="dim" if right == "not_started" else "")
        line.append("│", style="dim")
        line.append_text(_bar_text(row))
        line.append("│ ", style="dim")
        line.append(right, style=STATUS_STYLE.get(right, ""))
        rows.append(line)
    rows.extend(_axis_rows(axis, label_w + 2))
    rows.extend(_legend(width))
    if axis.gaps:
        breaks = ", ".join(duration(b - a) for a, b in axis.gaps)
        rows.append(Text(f"{GLYPHS['gap']}: stretches with no step running, drawn narrow: {breaks}", style="dim"))
    return Group(*rows)


def _next_start(tries: list[Attempt], a: Attempt) -> datetime:
    """When the attempt after ``a`` started (or ``a``'s retry time if none did)."""
    later = [t.start for t in tries if t.node == a.node and t.attempt > a.attempt]
    assert a.retry_at is not None
    return min(later) if later else a.retry_at


def _title(run_id: str, state: Any, events: Sequence[ev.Event], t0: datetime) -> Text:
    t_end = max(e.ts for e in events)
    text = Text.assemble(("run ", "bold"), (run_id, "bold"), f"  {state.workflow} v{state.version}  ")
    text.append(state.status, style=STATUS_STYLE.get(state.status, ""))
    text.append(f"  {duration((t_end - t0).total_seconds())} from {when(t0, ms=True)} UTC")
    if state.forked_from is not None:
        origin = state.forked_from
        text.append(f"\nforked from run {origin.run_id} at seq {origin.seq}: the steps before it are copies, drawn at ")
        text.append("their original times")
    return text
