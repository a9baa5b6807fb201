"""durable.testing itself: crash points, the journal invariants, check_crash_safety and violations.

The crash tools are what every other crash test stands on, so they get tested like any
other public API: a crash fires exactly where it is armed, writes nothing afterwards, and the
checks catch what they claim to catch.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import Phase, settings

import durable
from durable import Engine, RetryPolicy, Workflow, step
from durable import events as ev
from durable.journal.sqlite import decode_event
from durable.testing import (
    POINTS,
    CrashSafetyError,
    SimulatedCrash,
    check_crash_safety,
    crash_at,
    journal_violations,
    run_with_crashes,
)
from durable.testing.check import violations

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection of our own: it sees exactly what is committed."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        yield conn


def committed(db: Path, run_id: str = "r") -> list[ev.Event]:
    with raw(db) as conn:
        rows = conn.execute(
            "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    return [decode_event(*row) for row in rows]


def shape(events: list[ev.Event]) -> list[tuple[str, str | None]]:
    return [(e.type, getattr(e, "node", None)) for e in events]


def run_once(db: Path, wf: Workflow, value: Any, run_id: str = "r") -> Any:
    async def main() -> Any:
        async with Engine(db) as engine:
            return await engine.run(wf, value, run_id=run_id)

    return anyio.run(main)


@step
def add_one(x: int) -> int:
    return x + 1


@step
def double(x: int) -> int:
    return x * 2


@step
async def minus_three(x: int) -> int:
    return x - 3


def chain() -> Workflow:
    return Workflow("chain").then(add_one).then(double).then(minus_three)


# A chain commits once per step plus once for run_started: (1) run_started; (2) schedule and
# start add_one; (3) complete add_one, schedule and start double; (4) complete double, schedule
# and start minus_three; (5) complete minus_three and run_completed.
CHAIN_COMMITS = [1, 2, 3, 3, 3]


# -- crash_at --------------------------------------------------------------------------------


def test_simulated_crash_is_not_an_exception() -> None:
    assert issubclass(SimulatedCrash, BaseException)
    assert not issubclass(SimulatedCrash, Exception)
    assert POINTS == ("before_append", "before_commit", "after_commit", "in_step")


def test_unknown_point_and_bad_occurrence_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown crash point 'nowhere'; the points are before_append"):
        with crash_at("nowhere"):
            pass
    with pytest.raises(ValueError, match="counts from 1"):
        with crash_at("in_step", 0):
            pass


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_crash_fires_at_the_nth_arrival_of_each_point(tmp_path: Path, point: str, n: int) -> None:
    db = tmp_path / "c.db"
    with crash_at(point, n):
        with pytest.raises(SimulatedCrash) as caught:
            run_once(db, chain(), 1)
    assert (caught.value.point, caught.value.occurrence) == (point, n)
    assert str(caught.value) == f"simulated crash at {point!r} (occurrence {n})"

    events = committed(db)
    # Exactly the transactions committed before the crash are in the file, and they are whole.
    commits_before = {"before_append": n - 1, "before_commit": n - 1, "after_commit": n, "in_step": n + 1}[point]
    assert len(events) == sum(CHAIN_COMMITS[:commits_before])
    assert journal_violations(events) == ([] if events else ["the run has no events"])
    if point == "in_step":  # the n-th step returned, but its completion was never written
        assert shape(events)[-1] == ("step_started", ["add_one", "double", "minus_three"][n - 1])

    assert run_once(db, chain(), 1) == (1 + 1) * 2 - 3  # a fresh Engine, as a restarted process
    assert journal_violations(committed(db)) == []


def test_crash_that_is_never_reached_does_not_fire(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with crash_at("in_step", 4):  # the chain has three steps
        assert run_once(db, chain(), 5) == 9
    assert shape(committed(db))[-1] == ("run_completed", None)


def test_the_journal_after_a_crash_is_a_prefix_of_the_fault_free_journal(tmp_path: Path) -> None:
    run_once(tmp_path / "base.db", chain(), 1)
    baseline = shape(committed(tmp_path / "base.db"))
    for k in range(1, len(CHAIN_COMMITS) + 1):
        db = tmp_path / f"after-{k}.db"
        with crash_at("after_commit", k), pytest.raises(SimulatedCrash):
            run_once(db, chain(), 1)
        assert shape(committed(db)) == baseline[: sum(CHAIN_COMMITS[:k])]


def test_nothing_is_written_after_the_crash_fires(tmp_path: Path) -> None:
    """A sibling branch still running when the crash fires finishes its work but writes nothing."""
    db = tmp_path / "c.db"
    slow_started = threading.Event()
    slow_returned = threading.Event()

    @step
    def fast(x: int) -> int:
        assert slow_started.wait(5)
        return x + 1

    @step
    def slow(x: int) -> int:
        slow_started.set()
        time.sleep(0.3)
        slow_returned.set()
        return x + 2

    @step
    def total(parts: dict[str, int]) -> int:
        return sum(parts.values())

    wf = Workflow("siblings").fork().branch(fast).branch(slow).join(total)
    with crash_at("in_step", 1), pytest.raises(SimulatedCrash):
        run_once(db, wf, 10)
    assert slow_returned.is_set()  # the slow step ran to its end after the crash fired...
    events = committed(db)
    assert [e for e in events if e.type == "step_completed"] == []  # ...and its completion was not written
    assert ("step_started", "slow") in shape(events)
    time.sleep(0.1)
    assert committed(db) == events  # and nothing trickles in afterwards
    assert journal_violations(events) == []

    slow_started.set()
    assert run_once(db, wf, 10) == 23
    assert journal_violations(committed(db)) == []


def test_a_step_catching_exception_cannot_swallow_the_crash(tmp_path: Path) -> None:
    """The step's work (here a nested durable run) crashes; ``except Exception`` does not see it."""
    outer_db, inner_db = tmp_path / "outer.db", tmp_path / "inner.db"
    swallowed: list[BaseException] = []
    inner = Workflow("inner").then(add_one)

    @step
    def careful(x: int) -> int:
        try:
            return int(durable.run(inner, x, run_id="inner", db=inner_db))
        except Exception as exc:  # the pattern that must not eat a crash
            swallowed.append(exc)
            return -1

    @step
    def then_more(x: int) -> int:
        return x * 10

    wf = Workflow("outer").then(careful).then(then_more)
    with crash_at("in_step", 1), pytest.raises(SimulatedCrash) as caught:  # arrival 1: the inner step
        run_once(outer_db, wf, 4)
    assert caught.value.point == "in_step"
    assert swallowed == []
    assert ("step_completed", "careful") not in shape(committed(outer_db))
    assert run_once(outer_db, wf, 4) == 50
    assert swallowed == []


# -- journal_violations ----------------------------------------------------------------------


def started(seq: int = 1) -> ev.Event:
    return ev.RunStarted(seq=seq, ts=T0, workflow="wf", version="1", definition_hash="h", definition={}, input=None)


def at(seq: int) -> datetime:
    return T0 + timedelta(seconds=seq)


def good_run() -> list[ev.Event]:
    return [
        started(),
        ev.StepScheduled(seq=2, ts=at(2), node="a", attempt=1),
        ev.StepStarted(seq=3, ts=at(3), node="a", attempt=1),
        ev.StepCompleted(seq=4, ts=at(4), node="a", attempt=1, output=1),
        ev.RunCompleted(seq=5, ts=at(5), result=1),
    ]


def renumber(events: list[ev.Event]) -> list[ev.Event]:
    return [e.model_copy(update={"seq": i}) for i, e in enumerate(events, start=1)]


def test_a_well_formed_journal_has_no_violations() -> None:
    assert journal_violations(good_run()) == []
    assert journal_violations(good_run()[:3]) == []  # an unfinished run is fine
    assert journal_violations([]) == ["the run has no events"]


def test_gap_in_seq_is_caught() -> None:
    events = good_run()
    del events[1]  # the step_scheduled: nothing else depends on it
    assert journal_violations(events) == ["seq 3 stands at position 2: seqs must be contiguous from 1"]


def test_two_run_started_are_caught() -> None:
    events = renumber([*good_run()[:2], started(), *good_run()[2:]])
    assert journal_violations(events) == ["run_started must be exactly once, first; found at seqs [1, 3]"]


def test_run_started_not_first_is_caught() -> None:
    events = renumber([good_run()[1], started(), *good_run()[2:]])
    assert journal_violations(events) == ["run_started must be exactly once, first; found at seqs [2]"]


def test_two_terminal_events_are_caught() -> None:
    events = renumber([*good_run(), ev.RunFailed(seq=1, ts=at(6), error=ev.ErrorInfo(type="E", message="m"))])
    assert journal_violations(events) == [
        "2 terminal events (seqs [5, 6]); at most one",
        "events follow the terminal run_completed at seq 5",
    ]


def test_event_after_terminal_is_caught() -> None:
    events = renumber([*good_run(), ev.StepScheduled(seq=1, ts=at(6), node="b", attempt=1)])
    assert journal_violations(events) == ["events follow the terminal run_completed at seq 5"]


def test_node_completed_twice_is_caught() -> None:
    run = good_run()
    events = renumber([*run[:4], run[3], run[4]])
    assert journal_violations(events) == ["node 'a' completed twice (seqs 4 and 5)"]


def test_completion_without_start_of_the_same_attempt_is_caught() -> None:
    run = good_run()
    events = [*run[:3], run[3].model_copy(update={"attempt": 2}), run[4]]
    assert journal_violations(events) == [
        "node 'a' completed attempt 2 at seq 4 without a step_started of that attempt before it"
    ]
    no_start = renumber([run[0], run[1], run[3], run[4]])
    assert journal_violations(no_start) == [
        "node 'a' completed attempt 1 at seq 3 without a step_started of that attempt before it"
    ]


def test_a_real_run_with_fork_and_retry_has_no_violations(tmp_path: Path) -> None:
    db = tmp_path / "real.db"
    attempts: Counter[str] = Counter()

    @step(retries=RetryPolicy(max_attempts=3, initial=0.001, jitter=0.0))
    def flaky(x: int) -> int:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionError("try again")
        return x + 1

    @step
    def total(parts: dict[str, int]) -> int:
        return sum(parts.values())

    wf = Workflow("real").then(add_one).fork().branch(flaky).branch(double, minus_three).join(total)
    assert run_once(db, wf, 1) == 3 + 1
    events = committed(db)
    assert journal_violations(events) == []
    assert sum(e.type == "step_failed" for e in events) == 2


# -- check_crash_safety ----------------------------------------------------------------------


def flaky_fork_workflow() -> Workflow:
    @step(retries=RetryPolicy(max_attempts=3, initial=0.001, max_delay=0.002, jitter=0.0))
    def flaky(x: int) -> int:
        if durable.context().attempt == 1:  # deterministic: depends only on the attempt number
            raise ConnectionError("first attempt fails")
        return x * 3

    @step
    def total(parts: dict[str, int]) -> int:
        return sum(parts.values())

    return Workflow("safe").then(add_one).fork().branch(flaky).branch(double, minus_three).join(total)


def test_check_crash_safety_passes_a_deterministic_workflow() -> None:
    report = check_crash_safety(flaky_fork_workflow(), 2, max_examples=25, derandomize=True)
    assert report.result == 9 + 3
    assert report.schedules == 25
    assert report.crashes >= report.schedules  # every schedule crashes at least once
    assert set(report.arrivals) == set(POINTS)
    assert all(n > 0 for n in report.arrivals.values())
    assert report.baseline_events > 10


def nondeterministic_workflow() -> Workflow:
    calls = Counter[str]()

    @step
    def stamp(x: int) -> int:
        calls["stamp"] += 1  # grows with every call, in this run or any other: a different result after a crash
        return x + calls["stamp"]

    return Workflow("nondeterministic").then(add_one).then(stamp)


@pytest.fixture
def no_shrinking() -> Iterator[None]:
    """Report the first failing schedule as found: shrinking it costs seconds and is Hypothesis's business."""
    previous = settings.get_current_profile_name()
    settings.register_profile("durable-no-shrink", parent=settings.default, phases=[Phase.generate])
    settings.load_profile("durable-no-shrink")
    try:
        yield
    finally:
        settings.load_profile(previous)


@pytest.mark.usefixtures("no_shrinking")
def test_check_crash_safety_catches_a_nondeterministic_step() -> None:
    with pytest.raises(CrashSafetyError) as caught:
        check_crash_safety(nondeterministic_workflow(), 1, max_examples=10, derandomize=True)
    message = str(caught.value)
    assert "workflow 'nondeterministic' broke under the crash schedule [(" in message
    assert "the run ended with result=" in message
    assert "Reproduce with: check_crash_safety(<workflow>, <input>, schedule=[(" in message


def test_schedule_replays_exactly_that_schedule() -> None:
    report = check_crash_safety(flaky_fork_workflow(), 2, schedule=[("in_step", 1), ("before_commit", 2)])
    assert (report.schedules, report.crashes, report.result) == (1, 2, 12)

    with pytest.raises(CrashSafetyError) as caught:
        check_crash_safety(nondeterministic_workflow(), 1, schedule=[("in_step", 2)])
    assert "under the crash schedule [('in_step', 2)] (crashes that fired: [('in_step', 2)])" in str(caught.value)
    assert "schedule=[('in_step', 2)])" in str(caught.value)


def test_violations_flag_a_step_that_returned_twice_without_a_crash(tmp_path: Path) -> None:
    wf = chain()
    baseline = run_with_crashes(wf, 1, [], tmp_path / "base.db")
    assert violations(baseline, baseline, wf) == []
    assert baseline.counts.returns == Counter({"add_one": 1, "double": 1, "minus_three": 1})

    doubled = replace(baseline.counts, returns=baseline.counts.returns + Counter({"double": 1}))
    fabricated = replace(baseline, counts=doubled)
    assert violations(fabricated, baseline, wf) == [
        "step 'double' ran to completion 2 times; at most 1 + 0 (the crashes that hit while it was in flight) "
        "is allowed"
    ]
    # The same second return is allowed when a crash hit the step while it was in flight.
    excused = replace(fabricated, in_flight=Counter({"double": 1}))
    assert violations(excused, baseline, wf) == []


def test_violations_flag_a_different_result_and_a_missing_end(tmp_path: Path) -> None:
    wf = chain()
    baseline = run_with_crashes(wf, 1, [], tmp_path / "base.db")
    unfinished = replace(baseline, result=7, events=baseline.events[:-1])
    assert violations(unfinished, baseline, wf) == [
        "the run ended with result=7 error=None; without crashes it ended with result=1 error=None",
        "the run did not reach a terminal event after its crashes",
    ]
