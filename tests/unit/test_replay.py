"""``durable.replay``: the state after every event equals the fold of that prefix, on real runs.

The runs come from the real engine: the debugging runs (a fork, a retry, a failure, a fork of
a run resumed, a run stopped mid-step and resumed) and, with Hypothesis, runs of random
workflow shapes on the in-memory journal.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from debugging_workflows import make_runs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import Engine, InMemoryJournal, RunFailed, Workflow, fold, replay
from durable import events as ev
from durable.testing.strategies import workflows

RUNS = ["done-1", "retry-1", "bad-1", "bad-1-fixed", "crash-1", "bad-1-later", "lang-1", "lang-1/kid", "cancel-1"]


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[ev.Event]]:
    path = tmp_path_factory.mktemp("journal") / "runs.db"
    make_runs(path)

    async def read() -> dict[str, list[ev.Event]]:
        async with Engine(path) as engine:
            return {run_id: await engine.history(run_id) for run_id in RUNS}

    return anyio.run(read)


def assert_replay_is_the_fold_of_each_prefix(events: list[ev.Event], run_id: str) -> None:
    steps = list(replay(events, run_id))  # every state kept: a later event must not change an earlier snapshot
    assert [s.event for s in steps] == events
    for i, s in enumerate(steps):
        assert s.state == fold(events[: i + 1], run_id), f"after seq {s.event.seq}"
        assert s.state.last_seq == s.event.seq


@pytest.mark.parametrize("run_id", RUNS)
def test_replay_states_are_the_folds_of_the_prefixes(histories: dict[str, list[ev.Event]], run_id: str) -> None:
    assert_replay_is_the_fold_of_each_prefix(histories[run_id], run_id)


@pytest.mark.parametrize("run_id", ["done-1", "bad-1-fixed", "crash-1", "bad-1-later", "lang-1", "cancel-1"])
def test_every_event_changes_something(histories: dict[str, list[ev.Event]], run_id: str) -> None:
    for s in replay(histories[run_id], run_id):
        assert s.changes, f"seq {s.event.seq} ({s.event.type}) changed nothing"


def test_changes_name_what_changed(histories: dict[str, list[ev.Event]]) -> None:
    steps = {s.event.seq: s for s in replay(histories["bad-1"], "bad-1")}
    assert "run status: 'pending' -> 'running'" in steps[1].changes
    assert "node 'prep' appears (step, not_started)" in steps[1].changes
    failed = next(s for s in steps.values() if s.event.type == "step_failed")
    assert "node 'explode' status: 'running' -> 'retrying'" in failed.changes
    assert "node 'explode' failures: 0 -> 1" in failed.changes
    last = steps[max(steps)]
    assert last.event.type == "run_failed"
    assert "run status: 'running' -> 'failed'" in last.changes
    assert "node 'finish' status" not in " ".join(last.changes)  # never reached: stays not_started


def test_replay_of_a_crashed_run_shows_the_second_attempt(histories: dict[str, list[ev.Event]]) -> None:
    restarts = [
        s
        for s in replay(histories["crash-1"], "crash-1")
        if isinstance(s.event, ev.StepStarted) and s.event.node == "hold" and s.event.attempt == 2
    ]
    assert len(restarts) == 1
    assert "node 'hold' attempt: 1 -> 2" in restarts[0].changes
    assert restarts[0].state.nodes["hold"].status == "running"


def test_replay_of_nothing_yields_nothing() -> None:
    assert list(replay([])) == []


async def _run_on_memory(workflow: Workflow, value: int) -> list[ev.Event]:
    async with Engine(InMemoryJournal()) as engine:
        try:
            await engine.run(workflow, value, run_id="r")
        except RunFailed:
            pass
        return await engine.history("r")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(max_nodes=3, max_branches=3, max_branch_steps=2), st.integers(-3, 3))
def test_replay_matches_fold_on_random_workflows(workflow: Workflow, value: Any) -> None:
    events = anyio.run(_run_on_memory, workflow, value)
    assert events[-1].type in ev.TERMINAL_TYPES
    assert_replay_is_the_fold_of_each_prefix(events, "r")
