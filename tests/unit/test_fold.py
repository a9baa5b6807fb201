"""fold(events) -> RunState: properties over generated journals, and examples of transitions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from durable import Workflow, step
from durable import events as ev
from durable.fold import RunState, fold

# -- generating valid journals -----------------------------------------------------------------
#
# A journal is generated the way the engine writes one: run_started with the definition, then
# each node in order (retries, crashes that restart an attempt, final failures), forks whose
# branches interleave and stop at the first failed branch, and a terminal event when the run got
# that far. The journal is then cut anywhere (a crash), and possibly cancelled at the cut.

Spec = tuple[type[Any], dict[str, Any]]

small_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=5,
)
retry_times = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


def _identity(x):  # type: ignore[no-untyped-def]
    return x


def _step(name: str) -> Any:
    return step(name=name)(_identity)


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    # None: a step; a list: a fork with branches of that many steps each
    layout = draw(
        st.lists(
            st.none() | st.lists(st.integers(min_value=1, max_value=2), min_size=1, max_size=3),
            min_size=1,
            max_size=4,
        )
    )
    counter = iter(range(1000))
    wf = Workflow("wf", version=draw(st.integers(1, 3)))
    for entry in layout:
        if entry is None:
            wf = wf.then(_step(f"s{next(counter)}"))
        else:
            fb = wf.fork(name=f"f{next(counter)}")
            for size in entry:
                first = next(counter)
                fb = fb.branch(*(_step(f"s{first}_{k}") for k in range(size)), name=f"b{first}")
            wf = fb.join(_step(f"j{next(counter)}"))
    return wf


def _error(draw: st.DrawFn, node: str | None) -> ev.ErrorInfo:
    return ev.ErrorInfo(
        type=draw(st.sampled_from(["ValueError", "KeyError"])), message=draw(st.text(max_size=8)), node=node
    )


def _step_events(draw: st.DrawFn, node: str) -> tuple[list[Spec], bool, Any]:
    """One step, from scheduled to completed or failed for good: (events, succeeded, output)."""
    out: list[Spec] = [(ev.StepScheduled, {"node": node, "attempt": 1})]
    attempt, failures = 1, 0
    while True:
        for _ in range(draw(st.integers(0, 1))):  # a crash during the attempt; resume starts the next
            out.append((ev.StepStarted, {"node": node, "attempt": attempt}))
            attempt += 1
        out.append((ev.StepStarted, {"node": node, "attempt": attempt}))
        outcome = draw(st.sampled_from(["ok", "retry", "ok", "final", "ok"] if failures < 2 else ["ok", "final"]))
        if outcome == "ok":
            output = draw(small_json)
            out.append((ev.StepCompleted, {"node": node, "attempt": attempt, "output": output}))
            return out, True, output
        error = _error(draw, node)
        if outcome == "final":
            out.append((ev.StepFailed, {"node": node, "attempt": attempt, "error": error, "final": True}))
            return out, False, error
        retry_at = draw(retry_times)
        out.append((ev.StepFailed, {"node": node, "attempt": attempt, "error": error, "retry_at": retry_at}))
        out.append((ev.StepScheduled, {"node": node, "attempt": attempt + 1, "not_before": retry_at}))
        attempt += 1
        failures += 1


def _chain_events(draw: st.DrawFn, nodes: Sequence[Any]) -> tuple[list[Spec], bool, Any]:
    out: list[Spec] = []
    value: Any = None
    for node in nodes:
        if node.kind == "fork":
            events, ok, value = _fork_events(draw, node)
        else:
            events, ok, value = _step_events(draw, node.id)
        out += events
        if not ok:
            return out, False, value
    return out, True, value


def _fork_events(draw: st.DrawFn, fork: Any) -> tuple[list[Spec], bool, Any]:
    out: list[Spec] = [(ev.ForkStarted, {"node": fork.id, "branches": [b.name for b in fork.branches]})]
    streams: list[list[Spec]] = []
    for b in fork.branches:
        events, ok, value = _chain_events(draw, b.nodes)
        end: Spec = (
            (ev.BranchCompleted, {"node": fork.id, "branch": b.name})
            if ok
            else (ev.BranchFailed, {"node": fork.id, "branch": b.name, "error": value})
        )
        streams.append([*events, end])
    while any(streams):  # the branches run concurrently: interleave their events
        live = [s for s in streams if s]
        spec = live[draw(st.integers(0, len(live) - 1))].pop(0)
        out.append(spec)
        if spec[0] is ev.BranchFailed:  # the first failed branch cancels its siblings
            return out, False, spec[1]["error"]
    out.append((ev.ForkJoined, {"node": fork.id}))
    return out, True, None


@st.composite
def runs(draw: st.DrawFn) -> tuple[Workflow, list[ev.Event]]:
    wf = draw(workflows())
    specs: list[Spec] = [
        (
            ev.RunStarted,
            {
                "workflow": wf.name,
                "version": wf.version,
                "definition_hash": wf.definition_hash,
                "definition": wf.canonical(),
                "input": draw(small_json),
            },
        )
    ]
    body, ok, value = _chain_events(draw, wf.nodes)
    specs += body
    specs.append((ev.RunCompleted, {"result": value}) if ok else (ev.RunFailed, {"error": value}))
    specs = specs[: len(specs) - draw(st.integers(min_value=0, max_value=len(specs) - 1))]  # a crash
    if specs[-1][0] not in (ev.RunCompleted, ev.RunFailed) and draw(st.booleans()):
        specs.append((ev.RunCancelled, {"reason": "by hand"}))
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10**6)))
    events = [
        cls(seq=i, ts=start + timedelta(milliseconds=10 * i), **kwargs) for i, (cls, kwargs) in enumerate(specs, 1)
    ]
    return wf, events


# -- properties --------------------------------------------------------------------------------

PROPS = settings(max_examples=80, deadline=None)


@PROPS
@given(runs())
def test_fold_is_deterministic(run: tuple[Workflow, list[ev.Event]]) -> None:
    _, events = run
    assert fold(events).to_dict() == fold(list(events)).to_dict() == fold(iter(events)).to_dict()
    assert fold(events, run_id="r").run_id == "r"


@PROPS
@given(runs())
def test_fold_is_repeated_apply(run: tuple[Workflow, list[ev.Event]]) -> None:
    _, events = run
    state = RunState()
    for event in events:
        state.apply(event)
    assert state.to_dict() == fold(events).to_dict()


@PROPS
@given(runs(), st.data())
def test_a_prefix_does_not_depend_on_later_events(run: tuple[Workflow, list[ev.Event]], data: st.DataObject) -> None:
    _, events = run
    snapshots = [RunState().to_dict()]
    state = RunState()
    for event in events:
        state.apply(event)
        snapshots.append(state.to_dict())
    for k in range(len(events) + 1):
        assert fold(events[:k]).to_dict() == snapshots[k]
    # folding can stop anywhere and go on later (this is what resume does)
    k = data.draw(st.integers(0, len(events)))
    resumed = fold(events[:k])
    for event in events[k:]:
        resumed.apply(event)
    assert resumed.to_dict() == snapshots[-1]


@PROPS
@given(runs())
def test_last_seq_is_the_last_events_seq(run: tuple[Workflow, list[ev.Event]]) -> None:
    _, events = run
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert fold(events).last_seq == events[-1].seq


def _of(events: Sequence[ev.Event], node: str) -> list[Any]:
    return [e for e in events if getattr(e, "node", None) == node]


@PROPS
@given(runs())
def test_node_statuses_follow_their_events(run: tuple[Workflow, list[ev.Event]]) -> None:
    wf, events = run
    state = fold(events)
    terminal = events[-1].type in ev.TERMINAL_TYPES
    kinds = {n.id: n.kind for n in wf.nodes} | {s.id: s.kind for s in wf.step_nodes().values()}
    assert list(state.nodes) == list(wf.node_ids())
    for node_id, n in state.nodes.items():
        mine = _of(events, node_id)
        assert n.kind == kinds[node_id]
        if not mine:
            assert n.status == "not_started"
            continue
        if n.kind == "fork":
            started = next(e for e in mine if isinstance(e, ev.ForkStarted))
            joined = any(isinstance(e, ev.ForkJoined) for e in mine)
            assert n.status == ("completed" if joined else "interrupted" if terminal else "running")
            assert list(n.branches) == started.branches
            for branch, status in n.branches.items():
                ends = {type(e) for e in mine if getattr(e, "branch", None) == branch}
                expected = (
                    "completed"
                    if ev.BranchCompleted in ends
                    else "failed"
                    if ev.BranchFailed in ends
                    else "interrupted"
                    if terminal
                    else "running"
                )
                assert status == expected, (branch, ends)
            continue
        last = mine[-1]
        failed_before = any(isinstance(e, ev.StepFailed) for e in mine)
        assert (n.status == "completed") == any(isinstance(e, ev.StepCompleted) for e in mine)
        assert (n.status == "failed") == any(isinstance(e, ev.StepFailed) and e.final for e in mine)
        if isinstance(last, ev.StepStarted):
            assert n.status == ("interrupted" if terminal else "running")
        elif isinstance(last, ev.StepScheduled) or (isinstance(last, ev.StepFailed) and not last.final):
            waiting = "retrying" if failed_before else "pending"
            assert n.status == ("interrupted" if terminal else waiting)
        assert n.attempt == max((e.attempt for e in mine if isinstance(e, ev.StepStarted)), default=0)
        assert n.failures == sum(isinstance(e, ev.StepFailed) for e in mine)
        if n.status == "completed":
            assert n.output == last.output
            assert n.error is None
        if n.status == "failed":
            assert n.error == last.error


@PROPS
@given(runs())
def test_completed_in_flight_and_pending_agree_with_statuses(run: tuple[Workflow, list[ev.Event]]) -> None:
    wf, events = run
    state = fold(events)
    in_order = list(wf.node_ids())
    by_status = {
        status: [n for n in in_order if state.nodes[n].status in status]
        for status in (("completed",), ("running",), ("pending", "retrying"))
    }
    assert state.completed() == by_status[("completed",)]
    assert state.in_flight() == by_status[("running",)]
    assert state.pending() == by_status[("pending", "retrying")]
    everything = state.completed() + state.in_flight() + state.pending()
    assert len(everything) == len(set(everything))  # no node is in two of them
    step_completions = {e.node for e in events if isinstance(e, ev.StepCompleted | ev.ForkJoined)}
    assert set(state.completed()) == step_completions


@PROPS
@given(runs())
def test_after_a_terminal_event_nothing_runs(run: tuple[Workflow, list[ev.Event]]) -> None:
    wf, events = run
    state = fold(events)
    last = events[-1]
    if last.type not in ev.TERMINAL_TYPES:
        assert state.status == "running"
        assert not state.finished
        assert state.finished_at is None
        return
    assert (
        state.status == {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}[last.type]
    )
    assert state.finished
    assert state.finished_at == last.ts
    assert state.in_flight() == []
    assert state.pending() == []
    for n in state.nodes.values():
        assert n.status not in ("running", "pending", "retrying")
        assert "running" not in n.branches.values()
    if isinstance(last, ev.RunCompleted):
        assert state.result == last.result
        assert state.completed() == list(wf.node_ids())
    if isinstance(last, ev.RunFailed):
        assert state.error == last.error
        assert any(n.status == "failed" for n in state.nodes.values())


@PROPS
@given(runs())
def test_state_is_json_ready(run: tuple[Workflow, list[ev.Event]]) -> None:
    wf, events = run
    data = fold(events).to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["definition"] == wf.canonical()
    assert data["definition_hash"] == wf.definition_hash
    assert data["started_at"] == events[0].ts.isoformat()


@PROPS
@given(runs())
def test_fold_does_not_touch_its_events(run: tuple[Workflow, list[ev.Event]]) -> None:
    _, events = run
    before = [e.model_dump() for e in events]
    fold(events).to_dict()
    assert [e.model_dump() for e in events] == before


# -- examples ----------------------------------------------------------------------------------

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def _journal(*specs: Spec) -> list[ev.Event]:
    return [cls(seq=i, ts=T0 + timedelta(seconds=i), **kw) for i, (cls, kw) in enumerate(specs, 1)]


def _started(wf: Workflow) -> Spec:
    return (
        ev.RunStarted,
        {
            "workflow": wf.name,
            "version": wf.version,
            "definition_hash": wf.definition_hash,
            "definition": wf.canonical(),
            "input": {"order": 42},
        },
    )


BOOM = ev.ErrorInfo(type="ValueError", message="boom", node="a")
LINEAR = Workflow("w").then(_step("a")).then(_step("b"))
FORKED = Workflow("w").fork(name="f").branch(_step("x")).branch(_step("y")).branch(_step("z")).join(_step("j"))


def test_empty_journal() -> None:
    state = fold([])
    assert (state.status, state.last_seq, state.nodes, state.finished) == ("pending", 0, {}, False)


def test_run_started_lists_every_node_as_not_started() -> None:
    state = fold(_journal(_started(FORKED)))
    assert state.status == "running"
    assert state.input == {"order": 42}
    assert (state.workflow, state.version, state.definition_hash) == ("w", "1", FORKED.definition_hash)
    assert {n: (s.kind, s.status) for n, s in state.nodes.items()} == {
        "f": ("fork", "not_started"),
        "x": ("step", "not_started"),
        "y": ("step", "not_started"),
        "z": ("step", "not_started"),
        "j": ("join", "not_started"),
    }
    assert state.completed() == state.in_flight() == state.pending() == []


def test_a_retry_waits_as_retrying_until_not_before() -> None:
    retry_at = T0 + timedelta(minutes=5)
    events = _journal(
        _started(LINEAR),
        (ev.StepScheduled, {"node": "a", "attempt": 1}),
        (ev.StepStarted, {"node": "a", "attempt": 1}),
        (ev.StepFailed, {"node": "a", "attempt": 1, "error": BOOM, "retry_at": retry_at}),
        (ev.StepScheduled, {"node": "a", "attempt": 2, "not_before": retry_at}),
        (ev.StepStarted, {"node": "a", "attempt": 2}),
        (ev.StepCompleted, {"node": "a", "attempt": 2, "output": "ok"}),
    )
    pending = fold(events[:2])
    assert (pending.nodes["a"].status, pending.pending()) == ("pending", ["a"])
    assert pending.nodes["a"].scheduled_at == events[1].ts

    failed_once = fold(events[:4])
    a = failed_once.nodes["a"]
    assert (a.status, a.not_before, a.failures, a.attempt, a.error) == ("retrying", retry_at, 1, 1, BOOM)
    assert failed_once.pending() == ["a"]

    rescheduled = fold(events[:5])
    assert (rescheduled.nodes["a"].status, rescheduled.nodes["a"].not_before) == ("retrying", retry_at)
    assert rescheduled.nodes["a"].scheduled_at == events[1].ts  # first scheduling is kept

    running = fold(events[:6])
    a = running.nodes["a"]
    assert (a.status, a.attempt, a.not_before, a.started_at) == ("running", 2, None, events[2].ts)
    assert running.in_flight() == ["a"]

    done = fold(events)
    a = done.nodes["a"]
    assert (a.status, a.output, a.error, a.failures, a.finished_at) == ("completed", "ok", None, 1, events[6].ts)
    assert done.completed() == ["a"]
    assert done.nodes["b"].status == "not_started"


def test_a_final_failure_fails_the_node_and_then_the_run() -> None:
    events = _journal(
        _started(LINEAR),
        (ev.StepScheduled, {"node": "a", "attempt": 1}),
        (ev.StepStarted, {"node": "a", "attempt": 1}),
        (ev.StepFailed, {"node": "a", "attempt": 1, "error": BOOM, "final": True}),
        (ev.RunFailed, {"error": BOOM}),
    )
    node_failed = fold(events[:4])
    a = node_failed.nodes["a"]
    assert (a.status, a.error, a.failures, a.finished_at) == ("failed", BOOM, 1, events[3].ts)
    assert node_failed.status == "running"  # the run ends with its own event
    assert node_failed.completed() == node_failed.in_flight() == node_failed.pending() == []

    run_failed = fold(events)
    assert (run_failed.status, run_failed.error, run_failed.finished_at) == ("failed", BOOM, events[4].ts)
    assert run_failed.nodes["a"].status == "failed"
    assert run_failed.nodes["b"].status == "not_started"  # never reached: not interrupted


def test_a_crash_restarts_the_attempt_without_counting_a_failure() -> None:
    events = _journal(
        _started(LINEAR),
        (ev.StepScheduled, {"node": "a", "attempt": 1}),
        (ev.StepStarted, {"node": "a", "attempt": 1}),
        (ev.StepStarted, {"node": "a", "attempt": 2}),
    )
    a = fold(events).nodes["a"]
    assert (a.status, a.attempt, a.failures, a.started_at) == ("running", 2, 0, events[2].ts)


def test_fork_branches_and_interrupted_nodes_after_run_failed() -> None:
    err = ev.ErrorInfo(type="KeyError", message="y", node="y")
    events = _journal(
        _started(FORKED),
        (ev.ForkStarted, {"node": "f", "branches": ["x", "y", "z"]}),
        (ev.StepScheduled, {"node": "x", "attempt": 1}),
        (ev.StepScheduled, {"node": "y", "attempt": 1}),
        (ev.StepScheduled, {"node": "z", "attempt": 1}),
        (ev.StepStarted, {"node": "x", "attempt": 1}),
        (ev.StepStarted, {"node": "y", "attempt": 1}),
        (ev.StepCompleted, {"node": "x", "attempt": 1, "output": 1}),
        (ev.BranchCompleted, {"node": "f", "branch": "x"}),
        (ev.StepFailed, {"node": "y", "attempt": 1, "error": err, "final": True}),
        (ev.BranchFailed, {"node": "f", "branch": "y", "error": err}),
        (ev.RunFailed, {"error": err}),
    )
    forked = fold(events[:2])
    assert forked.nodes["f"].status == "running"
    assert forked.nodes["f"].branches == {"x": "running", "y": "running", "z": "running"}

    before_end = fold(events[:-1])
    f = before_end.nodes["f"]
    assert f.branches == {"x": "completed", "y": "failed", "z": "running"}
    assert f.error == err
    assert f.status == "running"
    assert before_end.in_flight() == ["f"]
    assert before_end.pending() == ["z"]

    ended = fold(events)
    assert ended.status == "failed"
    assert ended.nodes["f"].status == "interrupted"
    assert ended.nodes["f"].branches == {"x": "completed", "y": "failed", "z": "interrupted"}
    assert {n: s.status for n, s in ended.nodes.items()} == {
        "f": "interrupted",
        "x": "completed",
        "y": "failed",
        "z": "interrupted",  # scheduled when the run ended
        "j": "not_started",
    }
    assert ended.in_flight() == ended.pending() == []


def test_a_joined_fork_is_completed() -> None:
    events = _journal(
        _started(FORKED),
        (ev.ForkStarted, {"node": "f", "branches": ["x", "y", "z"]}),
        *(
            spec
            for b in "xyz"
            for spec in (
                (ev.StepScheduled, {"node": b, "attempt": 1}),
                (ev.StepStarted, {"node": b, "attempt": 1}),
                (ev.StepCompleted, {"node": b, "attempt": 1, "output": b}),
                (ev.BranchCompleted, {"node": "f", "branch": b}),
            )
        ),
        (ev.ForkJoined, {"node": "f"}),
    )
    state = fold(events)
    f = state.nodes["f"]
    assert (f.status, f.finished_at, f.started_at) == ("completed", events[-1].ts, events[1].ts)
    assert set(f.branches.values()) == {"completed"}
    assert state.completed() == ["f", "x", "y", "z"]
    assert state.nodes["j"].status == "not_started"


def test_cancelling_interrupts_what_was_running_and_waiting() -> None:
    events = _journal(
        _started(LINEAR),
        (ev.StepScheduled, {"node": "a", "attempt": 1}),
        (ev.StepStarted, {"node": "a", "attempt": 1}),
        (ev.RunCancelled, {"reason": "operator"}),
    )
    state = fold(events)
    assert (state.status, state.finished, state.error, state.result) == ("cancelled", True, None, None)
    assert state.nodes["a"].status == "interrupted"
    assert state.nodes["b"].status == "not_started"


def test_run_completed_records_the_result() -> None:
    events = _journal(
        _started(Workflow("w").then(_step("a"))),
        (ev.StepScheduled, {"node": "a", "attempt": 1}),
        (ev.StepStarted, {"node": "a", "attempt": 1}),
        (ev.StepCompleted, {"node": "a", "attempt": 1, "output": {"total": 3}}),
        (ev.RunCompleted, {"result": {"total": 3}}),
    )
    state = fold(events)
    assert (state.status, state.result, state.finished_at) == ("completed", {"total": 3}, events[-1].ts)
    assert state.to_dict()["nodes"]["a"]["finished_at"] == events[3].ts.isoformat()
