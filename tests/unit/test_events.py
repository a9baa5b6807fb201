"""The event vocabulary: round trips through the union and the SQLite row format, frozen models."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from durable import events as ev
from durable.journal.sqlite import decode_event, encode_event

EVENT_CLASSES: tuple[type[BaseModel], ...] = typing.get_args(typing.get_args(ev.Event)[0])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
# Aware datetimes with whole-minute offsets (what isoformat/ISO 8601 can carry), UTC included.
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC) | offsets)
seqs = st.integers(min_value=1, max_value=2**62)
attempts = st.integers(min_value=1, max_value=10_000)
names = st.text(min_size=1, max_size=20)
errors = st.builds(ev.ErrorInfo, type=names, message=st.text(), traceback=st.text(max_size=50), node=st.none() | names)
definitions = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "run_started": st.builds(
        ev.RunStarted,
        seq=seqs,
        ts=times,
        workflow=names,
        version=names,
        definition_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        definition=definitions,
        input=json_values,
    ),
    "step_scheduled": st.builds(
        ev.StepScheduled, seq=seqs, ts=times, node=names, attempt=attempts, not_before=st.none() | times
    ),
    "step_started": st.builds(ev.StepStarted, seq=seqs, ts=times, node=names, attempt=attempts),
    "step_completed": st.builds(ev.StepCompleted, seq=seqs, ts=times, node=names, attempt=attempts, output=json_values),
    "step_failed": st.builds(
        ev.StepFailed,
        seq=seqs,
        ts=times,
        node=names,
        attempt=attempts,
        error=errors,
        retry_at=st.none() | times,
        final=st.booleans(),
    ),
    "fork_started": st.builds(ev.ForkStarted, seq=seqs, ts=times, node=names, branches=st.lists(names, max_size=4)),
    "branch_completed": st.builds(ev.BranchCompleted, seq=seqs, ts=times, node=names, branch=names),
    "branch_failed": st.builds(ev.BranchFailed, seq=seqs, ts=times, node=names, branch=names, error=errors),
    "fork_joined": st.builds(ev.ForkJoined, seq=seqs, ts=times, node=names),
    "run_completed": st.builds(ev.RunCompleted, seq=seqs, ts=times, result=json_values),
    "run_failed": st.builds(ev.RunFailed, seq=seqs, ts=times, error=errors),
    "run_cancelled": st.builds(ev.RunCancelled, seq=seqs, ts=times, reason=st.text()),
    "route_chosen": st.builds(ev.RouteChosen, seq=seqs, ts=times, node=names, key=names, branch=names),
    "loop_iterated": st.builds(
        ev.LoopIterated, seq=seqs, ts=times, node=names, iteration=attempts, again=st.booleans(), value=json_values
    ),
    "map_started": st.builds(ev.MapStarted, seq=seqs, ts=times, node=names, count=st.integers(0, 1000)),
    "child_started": st.builds(ev.ChildStarted, seq=seqs, ts=times, node=names, child_run_id=names),
    "sleep_started": st.builds(ev.SleepStarted, seq=seqs, ts=times, node=names, until=times),
    "wait_started": st.builds(ev.WaitStarted, seq=seqs, ts=times, node=names, signal=names, deadline=st.none() | times),
    "signal_received": st.builds(
        ev.SignalReceived,
        seq=seqs,
        ts=times,
        node=names,
        signal=names,
        signal_id=st.integers(1, 10**6),
        payload=json_values,
    ),
    "node_completed": st.builds(
        ev.NodeCompleted, seq=seqs, ts=times, node=names, output=json_values, timed_out=st.booleans()
    ),
    "run_paused": st.builds(ev.RunPaused, seq=seqs, ts=times, reason=st.text()),
    "run_unpaused": st.builds(ev.RunUnpaused, seq=seqs, ts=times),
}
any_event = st.one_of(*STRATEGIES.values())


def test_the_strategies_cover_every_event_type() -> None:
    # A new event type must get a strategy here (and so a round-trip test).
    assert set(STRATEGIES) == ev.EVENT_TYPES
    assert {cls.model_fields["type"].default for cls in EVENT_CLASSES} == ev.EVENT_TYPES
    assert len(EVENT_CLASSES) == len(ev.EVENT_TYPES) == 22


def test_terminal_types_are_the_run_endings() -> None:
    assert ev.TERMINAL_TYPES == {"run_completed", "run_failed", "run_cancelled"}
    assert ev.TERMINAL_TYPES <= ev.EVENT_TYPES


@settings(max_examples=100)
@given(any_event)
def test_roundtrip_through_the_union(event: Any) -> None:
    again = ev.EVENT_ADAPTER.validate_python(event.model_dump())
    assert type(again) is type(event)
    assert again == event


@settings(max_examples=100)
@given(any_event)
def test_roundtrip_through_json(event: Any) -> None:
    assert ev.EVENT_ADAPTER.validate_json(event.model_dump_json()) == event
    assert ev.EVENT_ADAPTER.validate_python(json.loads(json.dumps(event.model_dump(mode="json")))) == event


@settings(max_examples=100)
@given(any_event)
def test_roundtrip_through_a_sqlite_row(event: Any) -> None:
    row = encode_event(event)
    seq, type_, node, attempt, ts, payload = row
    assert (seq, type_) == (event.seq, event.type)
    assert node == getattr(event, "node", None)
    assert attempt == getattr(event, "attempt", None)
    assert isinstance(ts, str)
    stored = json.loads(payload)
    assert not stored.keys() & {"seq", "ts", "type", "node", "attempt"}  # columns are not repeated
    again = decode_event(*row)
    assert type(again) is type(event)
    assert again == event


@pytest.mark.parametrize("type_", sorted(ev.EVENT_TYPES))
def test_every_event_type_is_frozen(type_: str) -> None:
    event = _sample(type_)
    with pytest.raises(ValidationError):
        event.seq = 99
    with pytest.raises(ValidationError):
        event.ts = ev.utcnow()
    assert event.seq == 3


def _sample(type_: str) -> Any:
    fields: dict[str, Any] = {"type": type_, "seq": 3, "ts": "2024-01-01T00:00:00Z"}
    extra: dict[str, dict[str, Any]] = {
        "run_started": {"workflow": "w", "version": "1", "definition_hash": "ab", "definition": {}},
        "step_scheduled": {"node": "a", "attempt": 1},
        "step_started": {"node": "a", "attempt": 1},
        "step_completed": {"node": "a", "attempt": 1, "output": [1]},
        "step_failed": {"node": "a", "attempt": 1, "error": {"type": "E", "message": "m"}},
        "fork_started": {"node": "f", "branches": ["x"]},
        "branch_completed": {"node": "f", "branch": "x"},
        "branch_failed": {"node": "f", "branch": "x", "error": {"type": "E", "message": "m"}},
        "fork_joined": {"node": "f"},
        "run_completed": {},
        "run_failed": {"error": {"type": "E", "message": "m"}},
        "run_cancelled": {},
        "route_chosen": {"node": "r", "key": "a", "branch": "a"},
        "loop_iterated": {"node": "l", "iteration": 1, "again": True},
        "map_started": {"node": "m", "count": 2},
        "child_started": {"node": "c", "child_run_id": "r/c"},
        "sleep_started": {"node": "s", "until": "2024-01-01T00:01:00Z"},
        "wait_started": {"node": "w", "signal": "go"},
        "signal_received": {"node": "w", "signal": "go", "signal_id": 1},
        "node_completed": {"node": "s"},
        "run_paused": {},
        "run_unpaused": {},
    }
    return ev.EVENT_ADAPTER.validate_python({**fields, **extra[type_]})


def test_nested_error_info_is_frozen_too() -> None:
    event = _sample("step_failed")
    with pytest.raises(ValidationError):
        event.error.message = "changed"


def test_the_union_picks_the_class_by_type() -> None:
    for type_ in ev.EVENT_TYPES:
        event = _sample(type_)
        assert event.type == type_
        assert type(event).model_fields["type"].default == type_


def test_the_union_rejects_an_unknown_type() -> None:
    with pytest.raises(ValidationError, match="step_exploded"):
        ev.EVENT_ADAPTER.validate_python({"type": "step_exploded", "seq": 1, "ts": "2024-01-01T00:00:00Z"})
    with pytest.raises(ValidationError):
        ev.EVENT_ADAPTER.validate_python({"seq": 1, "ts": "2024-01-01T00:00:00Z", "node": "a", "attempt": 1})


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 0},
        {"attempt": 0},
        {"unexpected": 1},  # extra fields are refused: the payload is the whole event
        {"ts": "yesterday"},
        {"node": None},
    ],
)
def test_invalid_fields_are_refused(change: dict[str, Any]) -> None:
    data = {"type": "step_started", "seq": 1, "ts": "2024-01-01T00:00:00Z", "node": "a", "attempt": 1, **change}
    with pytest.raises(ValidationError):
        ev.EVENT_ADAPTER.validate_python(data)


def test_a_type_cannot_be_changed_through_the_constructor() -> None:
    with pytest.raises(ValidationError):
        ev.StepStarted(seq=1, ts=ev.utcnow(), node="a", attempt=1, type="step_completed")  # type: ignore[arg-type]


def test_utcnow_is_timezone_aware_utc() -> None:
    now = ev.utcnow()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)


def test_defaults() -> None:
    ts = ev.utcnow()
    failed = ev.StepFailed(seq=2, ts=ts, node="a", attempt=1, error=ev.ErrorInfo(type="E", message="m"))
    assert failed.final is False
    assert failed.retry_at is None
    assert failed.error.traceback == ""
    assert ev.StepScheduled(seq=2, ts=ts, node="a", attempt=1).not_before is None
    assert ev.RunCompleted(seq=9, ts=ts).result is None
    assert ev.RunCancelled(seq=9, ts=ts).reason == ""
