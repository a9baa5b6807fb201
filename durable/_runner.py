"""Executing a run's nodes: the live run, steps with retries and timeouts, forks.

Every transition is first *recorded* on the :class:`LiveRun` (applied to its live state, seq
assigned) and then *committed* to the journal. A step's code runs only after its
``step_started`` is committed; a step's completion is committed, at the latest, together
with the run's next transition (one commit per step).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup

from . import _crash
from . import events as ev
from .context import StepContext, _current
from .definition import ForkNode, StepNode, Workflow
from .errors import SerializationError, StepError, StepTimeout
from .fold import COMPLETED, FAILED, INTERRUPTED, NOT_STARTED, RunState
from .journal import Journal
from .retry import backoff_delay

__all__ = ["LiveRun", "StepFailedForGood", "run_nodes"]


class StepFailedForGood(Exception):
    """Internal: a step failed with no retry left; unwinds to the run, which records run_failed."""

    def __init__(self, node: str, info: ev.ErrorInfo, cause: BaseException, branch: str | None = None) -> None:
        super().__init__(info.message)
        self.node = node
        self.info = info
        self.cause = cause
        self.branch = branch


def error_info(exc: BaseException, node: str | None) -> ev.ErrorInfo:
    return ev.ErrorInfo(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        node=node,
    )


class LiveRun:
    """A run executing in this engine: its workflow, its live state, and its outcome."""

    def __init__(self, journal: Journal, workflow: Workflow, state: RunState) -> None:
        assert state.run_id is not None
        self.journal = journal
        self.run_id: str = state.run_id
        self.workflow = workflow
        self.state = state
        self._pending: list[ev.Event] = []
        self.finished = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def record(self, event_type: Any, **fields: Any) -> ev.Event:
        """Create the next event (seq and time assigned), apply it to the live state, queue it for commit."""
        event: ev.Event = event_type(seq=self.state.last_seq + 1, ts=ev.utcnow(), **fields)
        self.state.apply(event)
        self._pending.append(event)
        return event

    async def commit(self) -> None:
        """Commit every recorded event. Shielded: once recorded, an event is committed or the run is broken."""
        if not self._pending:
            return
        _crash.reached("before_append")
        batch, self._pending = self._pending, []
        with anyio.CancelScope(shield=True):
            await self.journal.append(self.run_id, batch)
        _crash.reached("after_commit")

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.finished.set()


async def run_nodes(run: LiveRun, nodes: Sequence[StepNode | ForkNode], value: Any) -> Any:
    for node in nodes:
        if isinstance(node, ForkNode):
            value = await _run_fork(run, node, value)
        else:
            value = await _run_step(run, node, value)
    return value

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
            outputs[branch.name] = await run_nodes(run, branch.nodes, value)
        except StepFailedForGood as failed:
            if not failures:  # the first failure ends the fork; the rest are its consequences
                failed.branch = branch.name
                failures.append(failed)
                run.record(ev.BranchFailed, node=node.id, branch=branch.name, error=failed.info)
                tg.cancel_scope.cancel()
            return
        run.record(ev.BranchCompleted, node=node.id, branch=branch.name)

    async with anyio.create_task_group() as tg:
        for i in range(len(node.branches)):
            tg.start_soon(branch_task, i, tg)
    if failures:
        raise failures[0]
    run.record(ev.ForkJoined, node=node.id)
    return {b.name: outputs[b.name] for b in node.branches}

async def _run_step(run: LiveRun, node: StepNode, value: Any) -> Any:
    s = node.step
    codec = s.codec
    while True:
        # A failing sibling branch may have cancelled us while a sync step's thread ran or a
        # commit was in flight: record nothing more, start nothing more.
        await anyio.lowlevel.checkpoint_if_cancelled()
        st = run.state.nodes.get(node.id)
        if st is not None and st.status == COMPLETED:
            return codec.decode_output(st.output)
        if st is not None and st.status == FAILED and st.error is not None:  # failed for good before a crash
            cause = StepError(node.id, st.error.type, st.error.message, st.error.traceback)
            raise StepFailedForGood(node.id, st.error, cause)
        attempt = (st.attempt if st else 0) + 1
        if st is None or st.status in (NOT_STARTED, INTERRUPTED):
            run.record(ev.StepScheduled, node=node.id, attempt=attempt)
        elif st.not_before is not None:
            await run.commit()
            delay = (st.not_before - ev.utcnow()).total_seconds()
            if delay > 0:
                await anyio.sleep(delay)
        run.record(ev.StepStarted, node=node.id, attempt=attempt)
        await run.commit()
        # The commit is shielded: if a sibling branch failed meanwhile, stop here rather
        # than start the step (an async step would run up to its first await).
        await anyio.lowlevel.checkpoint_if_cancelled()
        token = _current.set(StepContext(run.run_id, run.workflow.name, node.id, attempt))
        try:
            arg = codec.prepare_input(value)
            if s.timeout is not None:
                with anyio.move_on_after(s.timeout) as deadline:
                    out = await _call(s, arg, codec.takes_input)
                # cancel_called, not cancelled_caught: a sync step's thread cannot be interrupted,
                # so a late return arrives here normally; and a TimeoutError the step raised
                # itself is its own failure, not ours.
                if deadline.cancel_called:
                    raise StepTimeout(node.id, s.timeout)
            else:
                out = await _call(s, arg, codec.takes_input)
            _crash.reached("in_step")
            output = codec.encode_output(out)
        except SerializationError as exc:  # deterministic: retrying cannot help
            info = error_info(exc, node.id)
            run.record(ev.StepFailed, node=node.id, attempt=attempt, error=info, final=True)
            raise StepFailedForGood(node.id, info, exc) from None
        except Exception as exc:
            info = error_info(exc, node.id)
            failures = run.state.nodes[node.id].failures + 1
            if failures >= s.retry.max_attempts:
                run.record(ev.StepFailed, node=node.id, attempt=attempt, error=info, final=True)
                raise StepFailedForGood(node.id, info, exc) from None
            delay = backoff_delay(s.retry, failures, random.random())
            retry_at = ev.utcnow() + timedelta(seconds=delay)
            run.record(ev.StepFailed, node=node.id, attempt=attempt, error=info, retry_at=retry_at)
            run.record(ev.StepScheduled, node=node.id, attempt=attempt + 1, not_before=retry_at)
            continue  # the loop commits, waits until retry_at, and starts the next attempt
        finally:
            _current.reset(token)
        run.record(ev.StepCompleted, node=node.id, attempt=attempt, output=output)
        return codec.decode_output(output)


async def _call(s: Any, arg: Any, takes_input: bool) -> Any:
    args = (arg,) if takes_input else ()
    if s.is_async:
        return await s.fn(*args)
    # A sync step runs in a worker thread so the loop stays free. Cancellation (a failing
    # sibling, a timeout) takes effect when the thread returns: a thread cannot be interrupted.
    return await anyio.to_thread.run_sync(s.fn, *args)


def _branch_output(state: RunState, last: StepNode) -> Any:
    return last.step.codec.decode_output(state.nodes[last.id].output)
