"""Named crash points: the places where a test may make the engine "die".

Each point is reached in exactly one place in the code:

``before_append``
    in the engine, with a batch of events recorded and about to be handed to the journal;
``before_commit``
    in the journal's write transaction, after the batch's rows are written and before COMMIT;
``after_commit``
    in the engine, right after the journal acknowledged a commit;
``in_step``
    in the engine, after a step's function returned (its effects happened) and before its
    completion is recorded.

Disarmed (the normal case), :func:`reached` costs one global lookup. Armed by
:func:`durable.testing.crash_at`, the chosen occurrence raises :class:`SimulatedCrash`, a
``BaseException`` that ``except Exception`` cannot swallow; from then on every journal write
raises it too, so the file is left exactly as a killed process would leave it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["POINTS", "SimulatedCrash", "arm", "dead", "disarm", "reached", "set_write_fault", "write_fault"]

POINTS: tuple[str, ...] = ("before_append", "before_commit", "after_commit", "in_step")


class SimulatedCrash(BaseException):
    """The process "died" at a crash point. Not an ``Exception``: steps cannot catch it by accident."""

    def __init__(self, point: str, occurrence: int) -> None:
        super().__init__(f"simulated crash at {point!r} (occurrence {occurrence})")
        self.point = point
        self.occurrence = occurrence


@dataclass
class _Schedule:
    point: str
    occurrence: int
    counts: Counter[str] = field(default_factory=Counter)
    fired: SimulatedCrash | None = None


_schedule: _Schedule | None = None


def arm(point: str, occurrence: int) -> None:
    """Make the ``occurrence``-th arrival at ``point`` (counting from 1) crash."""
    global _schedule
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; the points are {', '.join(POINTS)}")
    if occurrence < 1:
        raise ValueError("occurrence counts from 1")
    _schedule = _Schedule(point, occurrence)


def disarm() -> _Schedule | None:
    """Disarm; return the schedule (with its counts and whether it fired)."""
    global _schedule
    schedule, _schedule = _schedule, None
    return schedule


def reached(point: str) -> None:
    """Mark an arrival at ``point``; raise :class:`SimulatedCrash` if this one is armed, or one fired before."""
    schedule = _schedule
    if schedule is None:
        return
    if schedule.fired is not None:
        raise schedule.fired
    schedule.counts[point] += 1
    if point == schedule.point and schedule.counts[point] == schedule.occurrence:
        schedule.fired = SimulatedCrash(point, schedule.occurrence)
        raise schedule.fired


def dead() -> None:
    """Raise the crash that already fired, if any: a dead process writes nothing."""
    schedule = _schedule
    if schedule is not None and schedule.fired is not None:
        raise schedule.fired


@dataclass
class _WriteFault:
    at: int
    persistent: bool
    message: str
    count: int = 0


_write_fault: _WriteFault | None = None


def set_write_fault(at: int | None, *, persistent: bool = False, message: str = "disk I/O error") -> None:
    """Make the ``at``-th journal write transaction fail; ``None`` clears the fault.

    The failure is ``sqlite3.OperationalError(message)``, raised just before COMMIT; with
    ``persistent``, every later write transaction fails too.
    """
    global _write_fault
    _write_fault = None if at is None else _WriteFault(at, persistent, message)


def write_fault() -> None:
    """Reached in the journal's write transaction, after its rows are written and before COMMIT."""
    fault = _write_fault
    if fault is None:
        return
    fault.count += 1
    if fault.count == fault.at or (fault.persistent and fault.count > fault.at):
        raise sqlite3.OperationalError(fault.message)


def fired() -> bool:
    """Whether an armed crash has fired: the (simulated) process is dead and writes nothing more."""
    schedule = _schedule
    return schedule is not None and schedule.fired is not None
