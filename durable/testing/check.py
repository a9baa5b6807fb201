"""``check_crash_safety``: let Hypothesis crash a workflow everywhere, and check it recovers."""

from __future__ import annotations

import functools
import inspect
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .. import _crash
from ..context import context
from ..definition import Step, StepNode, Workflow
from ..engine import Engine
from ..errors import RunFailed
from ..events import Event
from .invariants import journal_violations

__all__ = [
    "CrashSafetyError",
    "CrashSafetyReport",
    "check_crash_safety",
    "run_with_crashes",
    "schedule_entries",
    "violations",
]

Schedule = Sequence[tuple[str, int]]


class CrashSafetyError(AssertionError):
    """A crash schedule broke a promise; the message holds the schedule and how to reproduce it."""


@dataclass
class _Counts:
    """Executions of the instrumented steps, and which nodes each incarnation touched."""

    calls: Counter[tuple[str, int]] = field(default_factory=Counter)  # (node, attempt) -> calls
    returns: Counter[str] = field(default_factory=Counter)  # node -> normal returns
    touched: set[str] = field(default_factory=set)  # nodes executed in the current incarnation


@dataclass
class Outcome:
    """What one run under one crash schedule did."""

    result: Any
    error: str | None
    crashes: list[tuple[str, int]]
    in_flight: Counter[str]
    counts: _Counts
    events: list[Event]
    integrity: str
    arrivals: Counter[str]


@dataclass
class CrashSafetyReport:
    """What :func:`check_crash_safety` checked."""

    schedules: int
    crashes: int
    baseline_events: int
    arrivals: dict[str, int]
    result: Any


def _instrument(workflow: Workflow, counts: _Counts) -> Workflow:
    def wrap(node: StepNode) -> Step[Any, Any]:
        s = node.step
        fn = s.fn

        def note() -> str:
            ctx = context()
            counts.calls[(ctx.node, ctx.attempt)] += 1
            counts.touched.add(ctx.node)
            return ctx.node  # the journal name: "step#3" in a loop, "map[2]" in a map

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any) -> Any:
                name = note()
                out = await fn(*args)
                counts.returns[name] += 1
                return out

            wrapper: Any = run_async
        else:

            @functools.wraps(fn)
            def run_sync(*args: Any) -> Any:
                name = note()
                out = fn(*args)
                counts.returns[name] += 1
                return out

            wrapper = run_sync
        return Step(wrapper, name=s.name, retries=s.retry, timeout=s.timeout, version=s.version)

    instrumented = workflow.with_steps(wrap)
    assert instrumented.definition_hash == workflow.definition_hash
    return instrumented


async def _incarnation(
    db: Path, workflow: Workflow, input: Any, run_id: str, signals: Sequence[tuple[str, Any]]
) -> tuple[str, Any]:
    async with Engine(db, signal_poll_interval=0.01) as engine:
        try:
            handle = await engine.start(workflow, input, run_id=run_id, on_conflict="use_existing")
            if signals and not await engine.journal.read_signals(run_id):
                for name, payload in signals:  # the inbox keeps them: sent once, across crashes
                    await engine.signal(run_id, name, payload)
            return "completed", await handle.result()
        except RunFailed as exc:
            return "failed", f"{exc.error_type}: {exc.node}"


def run_with_crashes(
    workflow: Workflow,
    input: Any,
    schedule: Schedule,
    db: Path,
    run_id: str = "crash-check",
    signals: Sequence[tuple[str, Any]] = (),
) -> Outcome:
    """Run ``workflow`` on a fresh database, crashing per ``schedule``, resuming after each crash.

    Each ``(point, n)`` of the schedule is armed in turn for one incarnation (a fresh
    ``Engine``, as a restarted process would open); an entry that does not fire leaves the run
    to finish. After the schedule, the run is resumed without faults until it ends.
    """
    counts = _Counts()
    wf = _instrument(workflow, counts)
    crashes: list[tuple[str, int]] = []
    in_flight: Counter[str] = Counter()
    arrivals: Counter[str] = Counter()
    outcome: tuple[str, Any] | None = None
    for point, n in [*schedule, ("", 0)]:
        counts.touched = set()
        if point:
            _crash.arm(point, n)
        else:
            _crash.arm("before_append", 2**62)  # never fires; counts arrivals
        try:
            outcome = anyio.run(_incarnation, db, wf, input, run_id, signals)
        except _crash.SimulatedCrash as crash:
            crashes.append((crash.point, crash.occurrence))
            done = _completed_nodes(db, run_id)
            for node in counts.touched - done:
                in_flight[node] += 1
            continue
        finally:
            fired = _crash.disarm()
            if fired is not None and not point:
                arrivals = fired.counts
        if outcome is not None:
            break
    assert outcome is not None
    events = _read_events(db, run_id)
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    status, value = outcome
    return Outcome(
        result=value if status == "completed" else None,
        error=value if status == "failed" else None,
        crashes=crashes,
        in_flight=in_flight,
        counts=counts,
        events=events,
        integrity=integrity,
        arrivals=arrivals,
    )


def _read_events(db: Path, run_id: str) -> list[Event]:
    from ..journal.sqlite import decode_event

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    return [decode_event(*row) for row in rows]


def _completed_nodes(db: Path, run_id: str) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(
                "SELECT node FROM events WHERE run_id = ? AND type = 'step_completed'", (run_id,)
            ).fetchall()
        except sqlite3.OperationalError:  # crashed before the schema was committed
            return set()
    return {row[0] for row in rows}


def violations(outcome: Outcome, baseline: Outcome, workflow: Workflow) -> list[str]:
    """Everything in ``outcome`` that breaks a promise, compared with the fault-free ``baseline``."""
    max_attempts = {node_id: n.step.retry.max_attempts for node_id, n in workflow.step_nodes().items()}
    problems = list(journal_violations(outcome.events))
    if outcome.integrity != "ok":
        problems.append(f"PRAGMA integrity_check: {outcome.integrity}")
    if (outcome.result, outcome.error) != (baseline.result, baseline.error):
        problems.append(
            f"the run ended with result={outcome.result!r} error={outcome.error!r}; without crashes it ended with "
            f"result={baseline.result!r} error={baseline.error!r}"
        )
    if not outcome.events or outcome.events[-1].type not in ("run_completed", "run_failed"):
        problems.append("the run did not reach a terminal event after its crashes")
    calls: Counter[str] = Counter()
    for (node, _attempt), n in outcome.counts.calls.items():
        calls[node] += n
    for node, n in calls.items():
        crashes = outcome.in_flight[node]
        returned = outcome.counts.returns[node]
        if returned > 1 + crashes:
            problems.append(
                f"step {node!r} ran to completion {returned} times; at most 1 + {crashes} "
                "(the crashes that hit while it was in flight) is allowed"
            )
        budget = max_attempts.get(re.sub(r"(#\d+|\[\d+\])$", "", node), 1) + crashes
        if n > budget:
            problems.append(f"step {node!r} ran {n} times; its retry policy and {crashes} crashes allow {budget}")
    return problems


def schedule_entries(points: Sequence[str], arrivals: Counter[str] | dict[str, int]) -> Any:
    """A Hypothesis strategy for one ``(point, occurrence)``, the occurrence within ``arrivals``.

    The raw draw does not depend on ``arrivals`` (group commit makes arrival counts vary a
    little from run to run, and Hypothesis needs draws that replay the same way).
    """
    from hypothesis import strategies as st

    return st.tuples(st.sampled_from(list(points)), st.integers(0, 10**6)).map(
        lambda pk: (pk[0], 1 + pk[1] % max(1, arrivals[pk[0]]))
    )


def check_crash_safety(
    workflow: Workflow,
    input: Any = None,
    *,
    max_examples: int = 50,
    max_crashes: int = 3,
    points: Sequence[str] = _crash.POINTS,
    schedule: Schedule | None = None,
    derandomize: bool = False,
    signals: Sequence[tuple[str, Any]] = (),
) -> CrashSafetyReport:
    """Crash ``workflow`` at many points and check that every run recovers correctly.

    First the workflow runs once without faults, to learn its result, its journal length and
    how often each crash point is reached. Then Hypothesis chooses crash schedules (which
    point, which occurrence, several crashes in a row, crashes during recovery) and, for each,
    runs the workflow on a fresh SQLite file, resuming after every crash until the run ends,
    and asserts:

    * the final result (or failure) equals the fault-free one;
    * the journal invariants hold (see :func:`durable.testing.journal_violations`);
    * no step ran to completion more often than without crashes, plus the number of crashes
      that hit while that step was in flight;
    * ``PRAGMA integrity_check`` is ok.

    Call it from a plain (sync) test function. Steps must be deterministic given their input
    (that is what makes "the same result" a fair demand). Needs Hypothesis
    (``pip install 'durable[testing]'``).

    Args:
        workflow: the workflow under test.
        input: its input.
        max_examples: how many crash schedules Hypothesis tries.
        max_crashes: the most crashes in one schedule.
        points: the crash points to use (all by default).
        schedule: replay exactly this schedule (as printed by a failure) instead of searching.
        derandomize: make Hypothesis's choices repeatable.
        signals: ``(name, payload)`` pairs sent to the run once it exists, for workflows that
            ``wait_for`` signals.

    Raises:
        CrashSafetyError: a schedule broke a promise; the message has the schedule and the
            line to reproduce it.
    """
    with tempfile.TemporaryDirectory(prefix="durable-crash-") as tmp:
        counter = iter(range(10**9))

        def fresh_db() -> Path:
            return Path(tmp) / f"run-{next(counter)}.db"

        baseline = run_with_crashes(workflow, input, [], fresh_db(), signals=signals)
        base_problems = journal_violations(baseline.events)
        if base_problems:
            raise CrashSafetyError(
                "the fault-free run already breaks the journal invariants:\n  " + "\n  ".join(base_problems)
            )
        tried: list[int] = [0, 0]

        def check(one: Schedule) -> None:
            outcome = run_with_crashes(workflow, input, one, fresh_db(), signals=signals)
            tried[0] += 1
            tried[1] += len(outcome.crashes)
            problems = violations(outcome, baseline, workflow)
            if problems:
                raise CrashSafetyError(
                    f"workflow {workflow.name!r} broke under the crash schedule {list(one)!r} "
                    f"(crashes that fired: {outcome.crashes!r}):\n  - "
                    + "\n  - ".join(problems)
                    + f"\nReproduce with: check_crash_safety(<workflow>, <input>, schedule={list(one)!r})"
                )

        if schedule is not None:
            check(schedule)
        else:
            from hypothesis import HealthCheck, given, settings
            from hypothesis import strategies as st

            usable = [p for p in points if baseline.arrivals[p] > 0]
            if not usable:
                raise CrashSafetyError(f"none of the crash points {list(points)} is reached by this workflow")
            one_crash = schedule_entries(usable, baseline.arrivals)

            @settings(
                max_examples=max_examples,
                deadline=None,
                derandomize=derandomize,
                database=None,
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.function_scoped_fixture,
                    HealthCheck.nested_given,
                ],
            )
            @given(st.lists(one_crash, min_size=1, max_size=max_crashes))
            def search(one: list[tuple[str, int]]) -> None:
                check(one)

            search()
        return CrashSafetyReport(
            schedules=tried[0],
            crashes=tried[1],
            baseline_events=len(baseline.events),
            arrivals=dict(baseline.arrivals),
            result=baseline.result,
        )
