"""Executing a run's nodes: the live run, steps with retries and timeouts, forks.

Every transition is first *recorded* on the :class:`LiveRun` (applied to its live state, seq
assigned) and then *committed* to the journal. A step's code runs only after its
``step_started`` is committed; a step's completion is committed, at the latest, together
with the run's next transition (one commit per step).
"""

from __future__ import annotations

import copy
import random
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from enum import Enum
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup

from . import _crash
from . import events as ev
from ._codec import encode_any
from ._run import LiveRun, RunParked
from .context import StepContext, _current
from .errors import (
    DurableError,
    LoopExhausted,
    NoRouteBranch,
    SerializationError,
    SignalTimeout,
    StepError,
    StepTimeout,
)
from .fold import COMPLETED, FAILED, INTERRUPTED, NOT_STARTED, RunState
from .nodes import (
    ChildNode,
    ForkNode,
    LoopNode,
    LoopResult,
    MapNode,
    Node,
    RouteNode,
    SleepNode,
    StepNode,
    WaitNode,
)
from .retry import backoff_delay
from .steps import Step

__all__ = ["StepFailedForGood", "StepInterrupted", "decode_node", "run_nodes"]


class StepInterrupted(BaseException):
    """Internal stop signal: ``KeyboardInterrupt`` or ``SystemExit`` was raised inside a step.

    Carried up as this (not as itself: asyncio treats those two specially inside a task and
    would tear the event loop down) so that the run stops as a crash would; the engine raises
    the original again once it has shut down cleanly.
    """

    def __init__(self, original: BaseException, node: str) -> None:
        super().__init__(f"{type(original).__name__} in step {node!r}")
        self.original = original
        self.node = node


class StepFailedForGood(BaseException):
    """Internal stop signal: a step failed with no retry left; unwinds to the run, which records run_failed.

    A ``BaseException``, so that no ``except Exception:`` on the way can swallow it.
    """

    def __init__(self, node: str, info: ev.ErrorInfo, cause: BaseException, branch: str | None = None) -> None:
        super().__init__(info.message)
        self.node = node
        self.info = info
        self.cause = cause
        self.branch = branch


def error_info(exc: BaseException, node: str | None) -> ev.ErrorInfo:
    """What the journal keeps of a failure, its text made storable.

    A message holding a lone surrogate would otherwise make the failure itself impossible to
    record, and the run would fail the same way on every resume.
    """
    return ev.ErrorInfo(
        type=_text(type(exc).__name__),
        message=_text(str(exc)),
        traceback=_text("".join(traceback.format_exception(exc))),
        node=node,
    )


def _text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def run_nodes(run: LiveRun, nodes: Sequence[Node], value: Any, *, top: bool = False) -> Any:
    """Run ``nodes`` in order, each on the previous one's output; return the last output."""
    for node in nodes:
        if top and run.pause_requested and not run.state.paused:
            run.record_control(ev.RunPaused, reason=run.pause_requested)
            run.pause_requested = None  # done: an unpause must not find it asked again
        if top and run.state.paused:
            await run.commit()
            if not run.unpause_requested:
                raise RunParked(None)
            run.record_control(ev.RunUnpaused)  # unpaused while its run_paused was being committed
        run.unpause_requested = False
        value = await run_node(run, node, value)
    return value


async def run_node(run: LiveRun, node: Node, value: Any) -> Any:
    """Run one node of any kind (the dispatch of the workflow language)."""
    match node:
        case StepNode():
            return await _run_step(run, node.step, node.id, value)
        case ForkNode():
            return await _run_fork(run, node, value)
        case RouteNode():
            return await _run_route(run, node, value)
        case LoopNode():
            return await _run_loop(run, node, value)
        case MapNode():
            return await _run_map(run, node, value)
        case ChildNode():
            return await _run_child(run, node, value)
        case SleepNode():
            return await _run_sleep(run, node, value)
        case WaitNode():
            return await _run_wait(run, node, value)
    raise AssertionError(f"unknown node {node!r}")  # pragma: no cover - the Node union is closed


async def _run_fork(run: LiveRun, node: ForkNode, value: Any) -> Any:
    state = run.state.nodes.get(node.id)
    if state is not None and state.status == COMPLETED:
        return {b.name: _branch_output(run.state, b.nodes[-1]) for b in node.branches}
    if state is None or not state.branches:
        run.record(ev.ForkStarted, node=node.id, branches=[b.name for b in node.branches])
    elif state.error is not None:  # a branch failed for good before a crash: end as it ended, start nothing
        failed = next(b for b, status in state.branches.items() if status == FAILED)
        err = state.error
        cause = StepError(err.node, err.type, err.message, err.traceback)
        raise StepFailedForGood(err.node or node.id, err, cause, branch=failed)
    outputs: dict[str, Any] = {}
    failures: list[StepFailedForGood] = []

    async def branch_task(branch_index: int, tg: TaskGroup) -> None:
        branch = node.branches[branch_index]
        if run.state.nodes[node.id].branches.get(branch.name) == COMPLETED:
            outputs[branch.name] = _branch_output(run.state, branch.nodes[-1])
            return
        try:
            # Each lane gets its own copy: a lane that mutates its input must not change what its
            # sibling sees (a resumed run would compute something else than the live one).
            outputs[branch.name] = await run_nodes(run, branch.nodes, copy.deepcopy(value))
        except StepFailedForGood as failed:
            if not failures:  # the first failure ends the fork; the rest are its consequences
                failed.branch = branch.name
                failures.append(failed)
                run.record(ev.BranchFailed, node=node.id, branch=branch.name, error=failed.info)
                tg.cancel_scope.cancel()
            return
        run.record(ev.BranchCompleted, node=node.id, branch=branch.name)
        # Commit now: nothing else of this lane follows, and a sibling may run for hours; a
        # crash meanwhile must not lose this branch's last completion (and so re-run it).
        await run.commit()

    async with anyio.create_task_group() as tg:
        for i in range(len(node.branches)):
            tg.start_soon(branch_task, i, tg)
    if failures:
        raise failures[0]
    run.record(ev.ForkJoined, node=node.id)
    return {b.name: outputs[b.name] for b in node.branches}


async def _run_step(run: LiveRun, s: Step[Any, Any], node_id: str, value: Any) -> Any:
    """Run one step under the journal name ``node_id``, with its retries and timeout."""
    codec = s.codec
    while True:
        # A failing sibling branch may have cancelled us while a sync step's thread ran or a
        # commit was in flight: record nothing more, start nothing more.
        await anyio.lowlevel.checkpoint_if_cancelled()
        st = run.state.nodes.get(node_id)
        if st is not None and st.status == COMPLETED:
            return codec.decode_output(st.output)
        _failed_before(run, node_id)
        attempt = (st.attempt if st else 0) + 1
        if st is None or st.status in (NOT_STARTED, INTERRUPTED):
            run.record(ev.StepScheduled, node=node_id, attempt=attempt)
        elif st.not_before is not None:
            await run.commit()
            delay = (st.not_before - ev.utcnow()).total_seconds()
            if delay > 0:
                await anyio.sleep(delay)
        run.record(ev.StepStarted, node=node_id, attempt=attempt)
        await run.commit()
        # The commit is shielded: if a sibling branch failed meanwhile, stop here rather
        # than start the step (an async step would run up to its first await).
        await anyio.lowlevel.checkpoint_if_cancelled()
        shared = run.shared_model()
        before = shared.model_dump(mode="json") if shared is not None else None
        token = _current.set(StepContext(run.run_id, run.workflow.name, node_id, attempt, shared))
        try:
            arg = codec.prepare_input(value)
            if s.timeout is not None:
                with anyio.move_on_after(s.timeout) as deadline:
                    out = await _call(s, arg, codec.takes_input)
                # cancel_called, not cancelled_caught: a sync step's thread cannot be interrupted,
                # so a late return arrives here normally; and a TimeoutError the step raised
                # itself is its own failure, not ours.
                if deadline.cancel_called:
                    raise StepTimeout(node_id, s.timeout)
            else:
                out = await _call(s, arg, codec.takes_input)
            _crash.reached("in_step")
            output = codec.encode_output(out)
            patch = run.state_patch(before, shared)  # checked here too: a bad patch fails the step for good
        except (KeyboardInterrupt, SystemExit) as stop:  # stop the run as a crash would: write nothing more
            raise StepInterrupted(stop, node_id) from None
        except SerializationError as exc:  # deterministic: retrying cannot help
            info = error_info(exc, node_id)
            run.record(ev.StepFailed, node=node_id, attempt=attempt, error=info, final=True)
            raise StepFailedForGood(node_id, info, exc) from None
        except Exception as exc:
            info = error_info(exc, node_id)
            failures = run.state.nodes[node_id].failures + 1
            if failures >= s.retry.max_attempts:
                run.record(ev.StepFailed, node=node_id, attempt=attempt, error=info, final=True)
                raise StepFailedForGood(node_id, info, exc) from None
            delay = backoff_delay(s.retry, failures, random.random())
            retry_at = ev.utcnow() + timedelta(seconds=delay)
            run.record(ev.StepFailed, node=node_id, attempt=attempt, error=info, retry_at=retry_at)
            run.record(ev.StepScheduled, node=node_id, attempt=attempt + 1, not_before=retry_at)
            continue  # the loop commits, waits until retry_at, and starts the next attempt
        finally:
            _current.reset(token)
        run.record(ev.StepCompleted, node=node_id, attempt=attempt, output=output, state_patch=patch)
        return codec.decode_output(output)


async def _call(s: Any, arg: Any, takes_input: bool) -> Any:
    args = (arg,) if takes_input else ()
    if s.is_async:
        return await s.fn(*args)
    # A sync step runs in a worker thread so the loop stays free. Cancellation (a failing
    # sibling, a timeout) takes effect when the thread returns: a thread cannot be interrupted.
    out, stop = await anyio.to_thread.run_sync(_guarded, s.fn, *args)
    if stop is not None:
        raise stop  # caught by _run_step at once, before asyncio's own handling of these can see it
    return out


def _guarded(fn: Callable[..., Any], *args: Any) -> tuple[Any, BaseException | None]:
    """In the worker thread: hand back Ctrl-C or SystemExit as a value, not through the thread pool."""
    try:
        return fn(*args), None
    except (KeyboardInterrupt, SystemExit) as stop:
        return None, stop


def _branch_output(state: RunState, last: StepNode) -> Any:
    return last.step.codec.decode_output(state.nodes[last.id].output)


def decode_node(node: Node, data: Any, state: RunState | None) -> Any:
    """A node's output rebuilt from its JSON, exactly as the node hands it on in a live run."""
    match node:
        case StepNode():
            return node.step.codec.decode_output(data)
        case RouteNode():
            chosen = state.nodes[node.id].chosen if state is not None and node.id in state.nodes else None
            lane = node.lane(chosen) if chosen is not None else None
            return lane.nodes[-1].step.codec.decode_output(data) if lane is not None and lane.nodes else data
        case MapNode():
            return [node.step.codec.decode_output(x) for x in data]
        case ChildNode():
            return decode_node(node.workflow.nodes[-1], data, None) if node.workflow.nodes else data
    return data  # loops, sleeps and waits hand on plain JSON


def _fail(run: LiveRun, node_id: str, exc: BaseException) -> StepFailedForGood:
    """Record that a node that is not a step failed for good; return the exception to raise."""
    info = error_info(exc, node_id)
    run.record(ev.StepFailed, node=node_id, attempt=1, error=info, final=True)
    return StepFailedForGood(node_id, info, exc)


def _completed(run: LiveRun, node_id: str) -> Any:
    st = run.state.nodes.get(node_id)
    return st if st is not None and st.status == COMPLETED else None


def _failed_before(run: LiveRun, node_id: str) -> None:
    st = run.state.nodes.get(node_id)
    if st is not None and st.status == FAILED and st.error is not None:  # failed for good before a crash
        cause = StepError(node_id, st.error.type, st.error.message, st.error.traceback)
        raise StepFailedForGood(node_id, st.error, cause)


async def _run_route(run: LiveRun, node: RouteNode, value: Any) -> Any:
    if (st := _completed(run, node.id)) is not None:
        return decode_node(node, st.output, run.state)
    _failed_before(run, node.id)
    st = run.state.nodes.get(node.id)
    if st is None or st.chosen is None:
        try:
            key = node.key(value)
        except Exception as exc:
            raise _fail(run, node.id, exc) from None
        key = str(key.value if isinstance(key, Enum) else key)
        lane = node.lane(key)
        if lane is None:
            raise _fail(run, node.id, NoRouteBranch(node.id, key, [b.name for b in node.branches]))
        run.record(ev.RouteChosen, node=node.id, key=key, branch=lane.name)
    else:
        lane = next(b for b in (*node.branches, node.default) if b is not None and b.name == st.chosen)
    if lane.nodes:
        await run_nodes(run, lane.nodes, value)
        output = run.state.nodes[lane.nodes[-1].id].output
    else:
        output = encode_any(value, what=f"the input of route {node.id!r}", node=node.id)
    run.record(ev.NodeCompleted, node=node.id, output=output)
    return decode_node(node, output, run.state)


async def _run_loop(run: LiveRun, node: LoopNode, value: Any) -> Any:
    if (st := _completed(run, node.id)) is not None:
        return st.output
    _failed_before(run, node.id)
    st = run.state.nodes.get(node.id)
    iteration = st.iteration if st is not None else 0
    current = st.output if st is not None and iteration else value
    last = node.body.nodes[-1]
    while True:
        if iteration >= node.max_iterations:
            if node.on_max == "fail":
                raise _fail(run, node.id, LoopExhausted(node.id, node.max_iterations))
            run.record(ev.NodeCompleted, node=node.id, output=encode_any(current, what="a loop value"))
            return run.state.nodes[node.id].output
        iteration += 1
        v = current
        for n in node.body.nodes:
            v = await _run_step(run, n.step, f"{n.id}#{iteration}", v)
        raw = run.state.nodes[f"{last.id}#{iteration}"].output
        try:
            control = LoopResult.model_validate(raw)
        except ValueError:
            raise _fail(
                run,
                node.id,
                DurableError(
                    f"loop {node.id!r}: its body's last step {last.id!r} returned {raw!r}; "
                    "return durable.again(value) to go on, or durable.done(value) to stop"
                ),
            ) from None
        value_json = encode_any(control.value, what=f"the value of loop {node.id!r}", node=node.id)
        run.record(ev.LoopIterated, node=node.id, iteration=iteration, again=control.again, value=value_json)
        current = value_json
        if not control.again:
            run.record(ev.NodeCompleted, node=node.id, output=value_json)
            return value_json


async def _run_map(run: LiveRun, node: MapNode, value: Any) -> Any:
    if (st := _completed(run, node.id)) is not None:
        return decode_node(node, st.output, run.state)
    _failed_before(run, node.id)
    if not isinstance(value, list | tuple):
        wrong = DurableError(f"map {node.id!r} needs a list as its input, got {type(value).__name__}")
        raise _fail(run, node.id, wrong)
    items = list(value)
    st = run.state.nodes.get(node.id)
    if st is None or st.items is None:
        run.record(ev.MapStarted, node=node.id, count=len(items))
    limiter = anyio.CapacityLimiter(node.concurrency or max(1, len(items)))
    failures: list[StepFailedForGood] = []

    async def item(i: int, tg: TaskGroup) -> None:
        async with limiter:
            try:
                await _run_step(run, node.step, f"{node.id}[{i}]", copy.deepcopy(items[i]))  # its own copy
                await run.commit()  # as for a fork's branch: the item's completion is durable now
            except StepFailedForGood as failed:
                if not failures:
                    failures.append(failed)
                    tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for i in range(len(items)):
            tg.start_soon(item, i, tg)
    if failures:
        raise failures[0]
    output = [run.state.nodes[f"{node.id}[{i}]"].output for i in range(len(items))]
    run.record(ev.NodeCompleted, node=node.id, output=output)
    return decode_node(node, output, run.state)


async def _run_child(run: LiveRun, node: ChildNode, value: Any) -> Any:
    if (st := _completed(run, node.id)) is not None:
        return decode_node(node, st.output, run.state)
    _failed_before(run, node.id)
    st = run.state.nodes.get(node.id)
    child_id = st.child_run_id if st is not None and st.child_run_id else f"{run.run_id}/{node.id}"
    if st is None or st.child_run_id is None:
        run.record(ev.ChildStarted, node=node.id, child_run_id=child_id)
    await run.commit()  # the link is durable before the child exists
    assert run.spawn_child is not None
    ok, outcome = await run.spawn_child(node.workflow, value, child_id, ev.ParentRef(run_id=run.run_id, node=node.id))
    if not ok:
        info: ev.ErrorInfo = outcome
        cause = StepError(info.node, info.type, info.message, info.traceback)
        run.record(ev.StepFailed, node=node.id, attempt=1, error=info, final=True)
        raise StepFailedForGood(node.id, info, cause)
    run.record(ev.NodeCompleted, node=node.id, output=outcome)
    return decode_node(node, outcome, run.state)


async def _run_sleep(run: LiveRun, node: SleepNode, value: Any) -> Any:
    if (st := _completed(run, node.id)) is not None:
        return st.output
    st = run.state.nodes.get(node.id)
    if st is None or st.not_before is None:
        until = ev.utcnow() + timedelta(seconds=node.seconds)
        run.record(ev.SleepStarted, node=node.id, until=until)
    else:
        until = st.not_before
    if ev.utcnow() < until:  # never early: the wall clock must have passed `until`
        await run.commit()
        raise RunParked(until)
    output = encode_any(value, what=f"the input of sleep {node.id!r}", node=node.id)
    run.record(ev.NodeCompleted, node=node.id, output=output)
    return output


async def _run_wait(run: LiveRun, node: WaitNode, value: Any) -> Any:
    if (st := _completed(run, node.id)) is not None:
        return st.output
    _failed_before(run, node.id)
    consumed = set(run.state.consumed_signals)
    signals = await run.journal.read_signals(run.run_id, name=node.signal)
    waiting = [s for s in signals if s.id not in consumed]
    if waiting:  # the oldest unconsumed signal of this name, also if it came before the run got here
        signal = waiting[0]
        run.record(ev.SignalReceived, node=node.id, signal=node.signal, signal_id=signal.id, payload=signal.payload)
        run.record(ev.NodeCompleted, node=node.id, output=signal.payload)
        return signal.payload
    st = run.state.nodes.get(node.id)
    if st is None or st.started_at is None:
        deadline = ev.utcnow() + timedelta(seconds=node.timeout) if node.timeout is not None else None
        seen = max((s.id for s in signals), default=0)
        run.record(ev.WaitStarted, node=node.id, signal=node.signal, deadline=deadline, seen_signal=seen)
    else:
        deadline = st.not_before
        seen = max((s.id for s in signals), default=0)
    if deadline is not None and ev.utcnow() >= deadline:
        if not node.has_default:
            assert node.timeout is not None
            raise _fail(run, node.id, SignalTimeout(node.id, node.signal, node.timeout))
        run.record(ev.NodeCompleted, node=node.id, output=node.default, timed_out=True)
        return node.default
    await run.commit()
    raise RunParked(deadline, signal=node.signal, seen=seen)
