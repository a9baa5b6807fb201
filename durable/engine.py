"""The engine: start, resume and recover runs; read their journals.

The engine owns the run lifecycle (a task per run in its task group, handles, outcomes)
and the public API. Executing a run's nodes lives in :mod:`durable._runner`. The
guarantees are spelled out in ``docs/semantics.md``: on resume the journal is read and
folded, and execution walks the definition again, skipping every node whose completion is
committed; any error of the journal stops the run without writing more, leaving a
consistent prefix that can be resumed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from . import events as ev
from ._codec import encode_any
from ._runner import LiveRun, StepFailedForGood, run_nodes
from .definition import ForkNode, Workflow, definition_changes
from .errors import (
    DefinitionMismatch,
    DurableError,
    RunAlreadyExists,
    RunFailed,
    RunNotFound,
    SeqOutOfRange,
    StepError,
)
from .fold import RunState, fold
from .journal import Journal, RunInfo
from .portable import export_document, fork_events, parse_document
from .sqlite import SQLiteJournal, Synchronous

__all__ = ["Engine", "Incompatibility", "RunHandle", "run"]


@dataclass(frozen=True)
class Incompatibility:
    """An unfinished run that the given definitions could not resume."""

    run_id: str
    workflow: str
    version: str
    definition_hash: str
    changes: list[str]


@dataclass(frozen=True)
class RunHandle:
    """A run started or resumed by an engine; await :meth:`result` for its outcome."""

    run_id: str
    _engine: Engine
    _workflow: Workflow
    _live: LiveRun | None = None

    async def result(self) -> Any:
        """Wait for the run to end and return its result.

        Raises:
            RunFailed: the run failed; ``__cause__`` is the step's exception (a :class:`StepError`
                rebuilt from the journal when the run failed in another process).
            DurableError: the run stopped without an outcome (a journal error, say); resume it.
        """
        if self._live is not None:
            await self._live.finished.wait()
            if self._live.error is not None:
                raise self._live.error
            return self._live.result
        return await self._engine._stored_result(self.run_id, self._workflow)

    async def state(self) -> RunState:
        """The run's state as committed so far."""
        return await self._engine.state(self.run_id)


class Engine:
    """Runs workflows durably against one journal.

    ::

        async with Engine("app.db") as engine:
            result = await engine.run(checkout, order_id, run_id="order-42")

    Args:
        db: a database path (a SQLite journal is opened there) or a :class:`Journal`.
        synchronous: SQLite's ``synchronous`` setting: ``"FULL"`` (default, survives power loss)
            or ``"NORMAL"`` (faster; survives process crashes). Ignored for a ``Journal`` object.
        busy_timeout: seconds to wait for another process's write lock.

    Leaving the ``async with`` block stops the runs still in progress as a crash would: they
    write nothing more and can be resumed later.
    """

    def __init__(
        self, db: str | Path | Journal, *, synchronous: Synchronous = "FULL", busy_timeout: float = 5.0
    ) -> None:
        self.journal: Journal = (
            db if isinstance(db, Journal) else SQLiteJournal(db, synchronous=synchronous, busy_timeout=busy_timeout)
        )
        self._tg: TaskGroup | None = None
        self._live: dict[str, LiveRun] = {}

    async def __aenter__(self) -> Engine:
        await self.journal.open()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(et, e, tb)
        except BaseExceptionGroup as group:
            # Runs never raise into the group (they keep their errors for their handles), so
            # what is here is the block's own exception or a simulated crash: raise it as
            # itself, not wrapped, so that `except RunNotFound:` around the block still works.
            raise _unwrap(group) from None
        finally:
            self._tg = None
            await self.journal.close()

    def _group(self) -> TaskGroup:
        if self._tg is None:
            raise DurableError("the engine is not running; use it as 'async with Engine(path) as engine:'")
        return self._tg

    # -- starting and resuming ----------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow,
        input: Any = None,
        *,
        run_id: str | None = None,
        on_conflict: Literal["fail", "use_existing"] = "fail",
    ) -> RunHandle:
        """Start a new run of ``workflow`` on ``input``; return at once with its handle.

        ``run_started`` is committed before this returns.

        Raises:
            RunAlreadyExists: ``run_id`` is taken and ``on_conflict="fail"``.
            DefinitionMismatch: ``on_conflict="use_existing"`` and the existing run has another definition.
            SerializationError: ``input`` cannot be encoded as JSON.
        """
        tg = self._group()
        workflow = _check_workflow(workflow)
        if on_conflict not in ("fail", "use_existing"):
            raise DurableError(f"on_conflict={on_conflict!r}: use 'fail' or 'use_existing'")
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        if not isinstance(run_id, str) or not run_id:
            raise DurableError(f"run_id={run_id!r}: a run id is a non-empty string")
        if run_id in self._live:
            if on_conflict == "fail":
                raise RunAlreadyExists(run_id)
            return self._handle_for(self._live[run_id], workflow)
        if await self.journal.get_run(run_id) is not None:
            if on_conflict == "fail":
                raise RunAlreadyExists(run_id)
            return await self.resume(run_id, workflow)
        input_json = encode_any(input, what="the run's input")
        run = LiveRun(self.journal, workflow, RunState(run_id=run_id))
        run.record(
            ev.RunStarted,
            workflow=workflow.name,
            version=workflow.version,
            definition_hash=workflow.definition_hash,
            definition=workflow.canonical(),
            input=input_json,
        )
        try:
            await run.commit()
        except RunAlreadyExists:
            if on_conflict == "fail":
                raise
            return await self.resume(run_id, workflow)
        return self._launch(tg, run)

    async def resume(self, run_id: str, workflow: Workflow) -> RunHandle:
        """Continue an unfinished run from its journal. A finished run is not run again.

        Raises:
            RunNotFound: no such run.
            DefinitionMismatch: the run was started by a different definition; nothing is written.
        """
        tg = self._group()
        workflow = _check_workflow(workflow)
        live = self._live.get(run_id)
        if live is not None:
            return self._handle_for(live, workflow)
        events = await self.journal.read(run_id)
        if not events:
            raise RunNotFound(run_id)
        state = fold(events, run_id)
        self._check_definition(state, workflow)
        if state.finished:
            return RunHandle(run_id, self, workflow)
        return self._launch(tg, LiveRun(self.journal, workflow, state))

    async def run(self, workflow: Workflow, input: Any = None, *, run_id: str | None = None) -> Any:
        """Start the run, or resume it if it exists and is unfinished, and wait for its result.

        A run that already finished returns its stored result (or raises its stored failure)
        without running anything.
        """
        handle = await self.start(workflow, input, run_id=run_id, on_conflict="use_existing")
        return await handle.result()

    async def recover(self, workflows: Iterable[Workflow]) -> list[RunHandle]:
        """Resume every unfinished run of these workflows; return their handles.

        Runs of workflows not named here are left alone. Pass old and new versions of a workflow
        side by side to recover runs of both.

        Raises:
            DefinitionMismatch: a run's workflow is named here, but under no matching definition;
                raised before anything is resumed.
        """
        by_hash = {w.definition_hash: _check_workflow(w) for w in workflows}
        names = {w.name for w in by_hash.values()}
        todo: list[tuple[str, Workflow]] = []
        for info in await self.journal.list_runs(status="running"):
            if info.workflow not in names:
                continue
            workflow = by_hash.get(info.definition_hash)
            if workflow is None:
                candidate = next(w for w in by_hash.values() if w.name == info.workflow)
                events = await self.journal.read(info.run_id, upto=1)
                self._check_definition(fold(events, info.run_id), candidate)
            else:
                todo.append((info.run_id, workflow))
        return [await self.resume(run_id, workflow) for run_id, workflow in reversed(todo)]

    def _check_definition(self, state: RunState, workflow: Workflow) -> None:
        if state.definition_hash == workflow.definition_hash:
            return
        assert state.run_id is not None
        changes = definition_changes(state.definition or {}, workflow.canonical())
        old, new = state.definition_hash or "", workflow.definition_hash
        message = (
            f"run {state.run_id!r} was started by definition {old[:12]} ({state.workflow} v{state.version}); "
            f"the code now defines {new[:12]} ({workflow.name} v{workflow.version}):\n  - "
            + "\n  - ".join(changes or ["(the canonical forms differ)"])
            + "\nLet the old run finish under the code that started it (keep that definition, with its own "
            "version, and pass it to resume/recover), or start a new run."
        )
        raise DefinitionMismatch(state.run_id, old, new, changes, message)

    def _handle_for(self, live: LiveRun, workflow: Workflow) -> RunHandle:
        self._check_definition(live.state, workflow)
        return RunHandle(live.run_id, self, workflow, live)

    def _launch(self, tg: TaskGroup, run: LiveRun) -> RunHandle:
        self._live[run.run_id] = run
        tg.start_soon(self._drive, run, name=f"durable run {run.run_id}")
        return RunHandle(run.run_id, self, run.workflow, run)

    async def check_compatibility(self, workflows: Iterable[Workflow]) -> list[Incompatibility]:
        """List the unfinished runs that these definitions could not resume (empty: safe to deploy).

        A run is incompatible when no given workflow of its name has its definition hash (the
        changes are listed against the last definition of that name given), or when no
        definition of its name is given at all.
        """
        given = [_check_workflow(w) for w in workflows]
        out: list[Incompatibility] = []
        for info in await self.journal.list_runs(status="running"):
            same_name = [w for w in given if w.name == info.workflow]
            if any(w.definition_hash == info.definition_hash for w in same_name):
                continue
            if same_name:
                first = (await self.journal.read(info.run_id, upto=1))[0]
                assert isinstance(first, ev.RunStarted)
                changes = definition_changes(first.definition, same_name[-1].canonical())
            else:
                changes = [f"no definition of workflow {info.workflow!r} was given"]
            out.append(Incompatibility(info.run_id, info.workflow, info.version, info.definition_hash, changes))
        return out

    async def fork(
        self,
        run_id: str,
        *,
        at: int | None = None,
        from_step: str | None = None,
        new_run_id: str | None = None,
        workflow: Workflow | None = None,
    ) -> str:
        """Create a new run whose journal starts with a copy of ``run_id``'s prefix; return its id.

        ``at=SEQ`` copies events up to SEQ; ``from_step=NODE`` copies everything before the
        node's first event, so that the node runs afresh. The new run records where it came
        from; the old run is not touched. Resume the new run with today's code::

            new_id = await engine.fork("order-42", from_step="charge")
            result = await engine.run(checkout, run_id=new_id)

        Pass ``workflow`` to give the new run that definition (when the fix changed it).

        Raises:
            RunNotFound: no such run.
            SeqOutOfRange: ``at`` is outside the run (or at its end).
            RunAlreadyExists: ``new_run_id`` is taken.
        """
        events = await self.history(run_id)
        new_run_id = new_run_id or f"{run_id}-fork-{uuid.uuid4().hex[:8]}"
        copied = fork_events(run_id, events, at=at, from_step=from_step, workflow=workflow)
        await self.journal.append(new_run_id, copied)
        return new_run_id

    async def export(self, run_id: str) -> dict[str, Any]:
        """The run as a self-contained JSON-ready document (events and definition), for another machine.

        Raises:
            RunNotFound: no such run.
        """
        return export_document(run_id, await self.history(run_id))

    async def import_run(self, doc: Any, *, new_run_id: str | None = None) -> str:
        """Load a document made by :meth:`export` into this journal; return the run id.

        Raises:
            InvalidRunDocument: the document is malformed (nothing is written).
            RunAlreadyExists: the run id is taken here (pass ``new_run_id``).
        """
        run_id, events = parse_document(doc)
        run_id = new_run_id or run_id
        await self.journal.append(run_id, events)
        return run_id

    # -- reading ------------------------------------------------------------------------------

    async def history(self, run_id: str) -> list[ev.Event]:
        """The run's committed events, in seq order.

        Raises:
            RunNotFound: no such run.
        """
        events = await self.journal.read(run_id)
        if not events:
            raise RunNotFound(run_id)
        return events

    async def state(self, run_id: str, at: int | None = None) -> RunState:
        """The fold of the run's events up to seq ``at`` (all of them by default).

        Raises:
            RunNotFound: no such run.
            SeqOutOfRange: ``at`` is negative or beyond the run's last seq.
        """
        events = await self.history(run_id)
        if at is not None:
            if at < 0 or at > events[-1].seq:
                raise SeqOutOfRange(run_id, at, events[-1].seq)
            events = events[:at]
        return fold(events, run_id)

    async def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> list[RunInfo]:
        """Index rows of the runs, newest first."""
        return await self.journal.list_runs(status=status, workflow=workflow, limit=limit)

    async def _stored_result(self, run_id: str, workflow: Workflow | None) -> Any:
        state = await self.state(run_id)
        if state.status == "completed":
            return _decode_result(workflow, state)
        if state.status == "failed" and state.error is not None:
            err = state.error
            raise RunFailed(run_id, err.node, err.type, err.message, branch=err.branch) from StepError(
                err.node, err.type, err.message, err.traceback
            )
        raise DurableError(
            f"run {run_id!r} is {state.status} and not running in this engine; resume it with engine.resume()"
        )

    # -- executing ----------------------------------------------------------------------------

    async def _drive(self, run: LiveRun) -> None:
        """Execute a run to its end. Never raises into the engine's task group, except cancellation."""
        try:
            try:
                value = await run_nodes(run, run.workflow.nodes, run.state.input)
            except StepFailedForGood as failed:
                info = failed.info
                if failed.branch:  # the node alone does not say which lane of the fork failed
                    info = info.model_copy(update={"branch": failed.branch})
                run.record(ev.RunFailed, error=info)
                await run.commit()
                error = RunFailed(run.run_id, failed.node, info.type, info.message, branch=info.branch)
                error.__cause__ = failed.cause
                run.finish(error=error)
                return
            run.record(ev.RunCompleted, result=_result_json(run.workflow, run.state))
            await run.commit()
            run.finish(result=value)
        except anyio.get_cancelled_exc_class():
            run.finish(error=DurableError(f"run {run.run_id!r} was stopped (engine shut down); resume it to go on"))
            raise
        except BaseException as exc:  # journal failure or simulated crash: write nothing more
            leaf = _unwrap(exc)
            run.finish(error=leaf)
            if not isinstance(leaf, Exception):
                raise leaf from None
        finally:
            self._live.pop(run.run_id, None)

def _check_workflow(workflow: Any) -> Workflow:
    if isinstance(workflow, Workflow):
        return workflow.build()
    from .definition import ForkBuilder

    if isinstance(workflow, ForkBuilder):
        raise DurableError("this workflow has a fork that is still open; close it with .join(step)")
    raise DurableError(f"{workflow!r} is not a Workflow; build one with Workflow('name').then(step)")


def _result_json(workflow: Workflow, state: RunState) -> Any:
    last = workflow.nodes[-1]
    if isinstance(last, ForkNode):
        return {b.name: state.nodes[b.nodes[-1].id].output for b in last.branches}
    return state.nodes[last.id].output


def _decode_result(workflow: Workflow | None, state: RunState) -> Any:
    if workflow is None:
        return state.result
    last = workflow.nodes[-1]
    if isinstance(last, ForkNode):
        return {b.name: b.nodes[-1].step.codec.decode_output(state.result[b.name]) for b in last.branches}
    return last.step.codec.decode_output(state.result)


def _unwrap(exc: BaseException) -> BaseException:
    """The most telling exception inside nested exception groups (crashes first, then errors, then cancellation)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        else:
            leaves.append(e)
    cancelled = anyio.get_cancelled_exc_class()
    crashes = [e for e in leaves if not isinstance(e, Exception | cancelled)]
    errors = [e for e in leaves if isinstance(e, Exception)]
    return (crashes or errors or leaves)[0]


def run(
    workflow: Workflow,
    input: Any = None,
    *,
    run_id: str | None = None,
    db: str | Path = "durable.db",
    synchronous: Synchronous = "FULL",
) -> Any:
    """Run a workflow to its end from synchronous code (a script): start it, or resume it.

    Same semantics as :meth:`Engine.run`: a finished run returns its stored result without
    running anything; an unfinished one continues where it stopped.
    """

    async def main() -> Any:
        async with Engine(db, synchronous=synchronous) as engine:
            return await engine.run(workflow, input, run_id=run_id)

    return anyio.run(main)
