"""Journal invariants that hold for every run, crashed or not."""

from __future__ import annotations

from collections.abc import Sequence

from .. import events as ev

__all__ = ["journal_violations"]


def journal_violations(events: Sequence[ev.Event]) -> list[str]:
    """Check one run's events; return what is wrong, one line each (empty when all is well).

    The invariants: seqs contiguous from 1; exactly one ``run_started``, at seq 1; at most one
    terminal event and nothing after it; each node completed at most once; every completion
    preceded by a start of the same node and attempt.
    """
    problems: list[str] = []
    if not events:
        return ["the run has no events"]
    for i, event in enumerate(events, start=1):
        if event.seq != i:
            problems.append(f"seq {event.seq} stands at position {i}: seqs must be contiguous from 1")
            break
    starts = [e.seq for e in events if e.type == "run_started"]
    if starts != [events[0].seq] or events[0].type != "run_started":
        problems.append(f"run_started must be exactly once, first; found at seqs {starts}")
    terminals = [e for e in events if e.type in ev.TERMINAL_TYPES]
    if len(terminals) > 1:
        problems.append(f"{len(terminals)} terminal events (seqs {[e.seq for e in terminals]}); at most one")
    if terminals and terminals[0].seq != events[-1].seq:
        problems.append(f"events follow the terminal {terminals[0].type} at seq {terminals[0].seq}")
    started: set[tuple[str, int]] = set()
    completed: dict[str, int] = {}
    for event in events:
        if isinstance(event, ev.StepStarted):
            started.add((event.node, event.attempt))
        elif isinstance(event, ev.StepCompleted):
            if event.node in completed:
                problems.append(f"node {event.node!r} completed twice (seqs {completed[event.node]} and {event.seq})")
            completed[event.node] = event.seq
            if (event.node, event.attempt) not in started:
                problems.append(
                    f"node {event.node!r} completed attempt {event.attempt} at seq {event.seq} "
                    "without a step_started of that attempt before it"
                )
    return problems
