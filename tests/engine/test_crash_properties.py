"""Property: whatever the workflow's shape and wherever the process dies, the run recovers.

Hypothesis draws a workflow (chains, forks of 2 to 8 branches, branches of several steps,
flaky steps, at most one step that fails for good) and an input, runs it once without faults
to learn its result and how often each crash point is reached, then draws a schedule of one
to three crashes (the later ones land during recovery) and checks the crashed run against
the fault-free one with :func:`durable.testing.check.violations`: same result or failure,
journal invariants, at-most-once completion per crash, retry budgets, ``integrity_check``.

The default number of examples keeps this file around half a minute on two cores. With
``DURABLE_SLOW=1`` it draws 2000 (the long sweep, run by hand; see docs/testing.md), and
prints what it tried when run with ``-s``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import Workflow
from durable.definition import ForkNode
from durable.testing import POINTS, run_with_crashes
from durable.testing.check import schedule_entries, violations
from durable.testing.strategies import workflows

SLOW = os.environ.get("DURABLE_SLOW") == "1"

PROPERTY = settings(
    max_examples=2000 if SLOW else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

STATS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_stats() -> Iterator[None]:
    yield
    if SLOW:
        crashes = {p: STATS[p] for p in POINTS}
        print(
            f"\ncrash properties: {STATS['examples']} workflows x schedules, {STATS['crashes']} crashes injected "
            f"{crashes} ({STATS['during_recovery']} during recovery), {STATS['failed_runs']} runs that fail for good, "
            f"{STATS['forks']} with forks, {STATS['violations']} violations"
        )


def _note(outcome_crashes: list[tuple[str, int]], has_fork: bool, failed: bool) -> None:
    STATS["examples"] += 1
    STATS["crashes"] += len(outcome_crashes)
    STATS["during_recovery"] += max(0, len(outcome_crashes) - 1)
    for point, _ in outcome_crashes:
        STATS[point] += 1
    STATS["forks"] += has_fork
    STATS["failed_runs"] += failed


@PROPERTY
@given(
    # Half the workflows may draw a step that fails for good: with it allowed, most drawn runs fail early.
    st.booleans().flatmap(
        lambda failures: workflows(max_nodes=4, max_branches=8, max_branch_steps=3, failures=failures)
    ),
    st.integers(-100, 100),
    st.data(),
)
def test_any_workflow_recovers_from_any_crash_schedule(
    tmp_path_factory: pytest.TempPathFactory, wf: Workflow, value: int, data: st.DataObject
) -> None:
    tmp = tmp_path_factory.mktemp("crash")
    baseline = run_with_crashes(wf, value, [], tmp / "baseline.db")
    assert violations(baseline, baseline, wf) == []
    assert baseline.result is not None or baseline.error is not None

    schedule = data.draw(
        st.lists(schedule_entries(POINTS, baseline.arrivals), min_size=1, max_size=3), label="schedule"
    )
    outcome = run_with_crashes(wf, value, schedule, tmp / "crashed.db")
    problems = violations(outcome, baseline, wf)
    _note(outcome.crashes, any(isinstance(n, ForkNode) for n in wf.nodes), baseline.error is not None)
    STATS["violations"] += len(problems)
    assert problems == [], f"schedule {schedule} (fired: {outcome.crashes}) on {wf!r} input {value}"


@settings(
    max_examples=200 if SLOW else 30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(workflows(max_nodes=3, max_branches=4, max_branch_steps=2, failures=False), st.data())
def test_a_crash_at_the_first_arrival_of_every_point_is_survived(
    tmp_path_factory: pytest.TempPathFactory, wf: Workflow, data: st.DataObject
) -> None:
    """The first arrival of a point is the most fragile moment for it: little or nothing is committed yet."""
    tmp = tmp_path_factory.mktemp("first")
    baseline = run_with_crashes(wf, 3, [], tmp / "baseline.db")
    point = data.draw(st.sampled_from(POINTS), label="point")
    outcome = run_with_crashes(wf, 3, [(point, 1)], tmp / "crashed.db")
    assert outcome.crashes == [(point, 1)]  # every workflow reaches every point at least once
    assert violations(outcome, baseline, wf) == []
    assert outcome.result == baseline.result
