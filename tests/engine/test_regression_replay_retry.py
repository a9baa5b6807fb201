"""Regression: replay shows what a retry's step_scheduled changes (it used to show nothing)."""

from datetime import UTC, datetime, timedelta

from durable import events as ev
from durable import replay

T = datetime(2026, 1, 1, tzinfo=UTC)
DEF = {"name": "w", "version": "1", "nodes": [{"id": "s", "kind": "step"}]}


def test_every_event_of_a_retried_step_changes_something() -> None:
    events = [
        ev.RunStarted(seq=1, ts=T, workflow="w", version="1", definition_hash="h", definition=DEF),
        ev.StepScheduled(seq=2, ts=T, node="s", attempt=1),
        ev.StepStarted(seq=3, ts=T, node="s", attempt=1),
        ev.StepFailed(
            seq=4,
            ts=T,
            node="s",
            attempt=1,
            error=ev.ErrorInfo(type="E", message="m"),
            retry_at=T + timedelta(seconds=1),
        ),
        ev.StepScheduled(seq=5, ts=T, node="s", attempt=2, not_before=T + timedelta(seconds=1)),
        ev.StepStarted(seq=6, ts=T + timedelta(seconds=1), node="s", attempt=2),
    ]
    for step in replay(events):
        assert step.changes, f"seq {step.event.seq} ({step.event.type}) changed nothing"
