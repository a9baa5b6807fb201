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
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from . import _history
from . import events as ev
from ._codec import encode_any, storable
from ._control import Control, check_run_id
from ._handles import Incompatibility, Recovery, RunHandle, Skipped
from ._history import check_definition, check_workflow
from ._lifecycle import Runs, unwrap
from ._ownership import HOST, Leases
from ._run import LiveRun
from ._runner import StepInterrupted
from ._scheduler import Parking
from .definition import Workflow
from .errors import (
    DefinitionMismatch,
    DurableError,
    JournalError,
    LeaseLost,
    RunAlreadyExists,
    RunBusy,
    RunCancelled,
    RunFailed,
    RunNotFound,
    SerializationError,
)
from .fold import RunState, fold
from .journal.base import Journal, Lease, Owner, RunInfo
from .journal.sqlite import SQLiteJournal, Synchronous

__all__ = ["Engine", "Incompatibility", "Recovery", "RunHandle", "Skipped"]


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
        signal_poll_interval: how often (seconds) the engine looks for signals and control
            requests sent by other processes to the runs it executes (those sent through this
            engine arrive at once).
        lease_ttl: seconds a run's lease lasts without a heartbeat (renewed every third of it).
            If this process dies, another on the same host takes its runs over at once; one on
            another host, when their leases expire.
        owner: this engine's name in leases; ``host:pid:random`` by default.

    Every run the engine executes is owned by it: it holds the run's lease, and every event
    it writes carries the lease's fencing token. Leaving the ``async with`` block stops the
    runs still in progress as a crash would (they write nothing more) and gives their leases
    back, so that they can be resumed at once, here or elsewhere.
    """

    def __init__(
        self,
        db: str | Path | Journal,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        signal_poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        owner: str | None = None,
    ) -> None:
        if not isinstance(signal_poll_interval, int | float) or signal_poll_interval <= 0:
            raise DurableError(f"signal_poll_interval={signal_poll_interval!r}: give a positive number of seconds")
        if not isinstance(lease_ttl, int | float) or lease_ttl <= 0:
            raise DurableError(f"lease_ttl={lease_ttl!r}: give a positive number of seconds")
        self.journal: Journal = (
            db if isinstance(db, Journal) else SQLiteJournal(db, synchronous=synchronous, busy_timeout=busy_timeout)
        )
        self.owner = Owner.here(owner, HOST)
        self._tg: TaskGroup | None = None
        self._runs = Runs()
        self._live = self._runs.live  # the runs this engine executes (running or parked), by id
        self._stopped = self._runs.stopped
        self._leases = Leases(self.journal, self.owner, float(lease_ttl), self._live, self._runs.lease_lost)
        self._parking = Parking(self.journal, self._runs.wake, signal_poll_interval, self._live, self._apply_control)
        self._control = Control(
            self.journal,
            self._live,
            self._parking,
            self._leases.acquire,
            self._leases.release,
            min(0.1, signal_poll_interval),
        )
        self._runs.wire(self._leases, self._parking, self._control)

    @property
    def lease_ttl(self) -> float:
        return self._leases.ttl

    async def __aenter__(self) -> Engine:
        await self.journal.open()
        self._leases.open(self._parking.nudge)
        self._tg = self._runs.tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._parking.start()
        self._tg.start_soon(self._parking.loop, name="durable: wake parked runs")
        self._tg.start_soon(self._leases.heartbeat, name="durable: renew leases")
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
            leaf = unwrap(group)
            raise (leaf.original if isinstance(leaf, StepInterrupted) else leaf) from None
        finally:
            self._tg = self._runs.tg = None
            try:
                await self._runs.give_back_all()
            finally:
                self._leases.close()
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
        on_conflict: Literal["fail", "use_existing", "terminate_existing"] = "fail",
        state: Any = None,
        _parent: ev.ParentRef | None = None,
    ) -> RunHandle:
        """Start a new run of ``workflow`` on ``input``; return at once with its handle.

        ``run_started`` is committed before this returns.

        Args:
            workflow: what to run.
            input: the first node's input (JSON, or anything pydantic can encode).
            run_id: the run's id; a fresh one if omitted.
            on_conflict: what to do when ``run_id`` is taken: ``"fail"`` (raise
                ``RunAlreadyExists``), ``"use_existing"`` (attach to it, resuming it if unfinished),
                or ``"terminate_existing"`` (cancel it if unfinished, and start the new run as
                ``"<run_id>~2"``, ``"~3"``, ...: ids are never reused, the journal is append-only).
            state: the initial shared context (an instance of the workflow's ``state=`` model, or
                a dict of its fields); the model's defaults if omitted.
            _parent: internal (child workflows).

        Raises:
            RunAlreadyExists: ``run_id`` is taken and ``on_conflict="fail"``.
            DefinitionMismatch: ``on_conflict="use_existing"`` and the existing run has another definition.
            SerializationError: ``input`` cannot be encoded as JSON.
        """
        tg = self._group()
        workflow = check_workflow(workflow)
        if on_conflict not in ("fail", "use_existing", "terminate_existing"):
            raise DurableError(f"on_conflict={on_conflict!r}: use 'fail', 'use_existing' or 'terminate_existing'")
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        check_run_id(run_id)
        if run_id in self._live or await self.journal.get_run(run_id) is not None:
            if on_conflict == "fail":
                raise RunAlreadyExists(run_id)
            if on_conflict == "use_existing":
                live = self._live.get(run_id)
                return self._handle_for(live, workflow) if live is not None else await self.resume(run_id, workflow)
            return await self._supersede(workflow, input, run_id, state)
        run = self._record_start(workflow, input, run_id, state, _parent, self._leases.first(run_id))
        try:
            await run.commit()  # creates the run holding our lease: nobody can claim it in between
        except RunAlreadyExists:
            if on_conflict == "fail":
                raise
            return await self.resume(run_id, workflow)
        return self._launch(tg, run)

    async def resume(self, run_id: str, workflow: Workflow) -> RunHandle:
        """Continue an unfinished run from its journal. A finished run is not run again.

        The engine takes the run's lease first: a run that another live owner executes (another
        process, or another engine) is refused. When that owner was a process of this host that
        is gone, its lease is taken over at once; otherwise once it expires.

        Raises:
            RunNotFound: no such run.
            RunBusy: another live owner executes the run; the error names it (pid@host, since, until).
            DefinitionMismatch: the run was started by a different definition; nothing is written.
        """
        tg = self._group()
        workflow = check_workflow(workflow)
        live = self._live.get(run_id)
        if live is not None:
            return self._handle_for(live, workflow)
        info = await self.journal.get_run(run_id)
        if info is None:
            raise RunNotFound(run_id)
        if info.status in ev.TERMINAL_STATUSES:
            check_definition(fold(await self.journal.read(run_id, upto=1), run_id), workflow)
            return RunHandle(run_id, self, workflow)
        check_definition(fold(await self.journal.read(run_id, upto=1), run_id), workflow)
        try:
            lease = await self._leases.acquire(run_id)
        except RunBusy:
            raise
        except JournalError:
            info = await self.journal.get_run(run_id)
            if info is not None and info.status in ev.TERMINAL_STATUSES:
                return RunHandle(run_id, self, workflow)  # it finished meanwhile: its stored outcome
            raise
        # Read only now that we own it: nobody else can append any more.
        try:
            state = fold(await self.journal.read(run_id), run_id)
        except BaseException:
            await self._leases.release(lease)
            raise
        run = self._new_live(workflow, state, lease)
        self._live[run_id] = run  # before the inbox is read: requests sent from now on reach it
        await self._read_pending(run)
        return self._launch(tg, run)

    async def submit(
        self, workflow: Workflow, input: Any = None, *, run_id: str | None = None, state: Any = None
    ) -> str:
        """Record a run as ready for any worker to pick up (see :class:`durable.Worker`); return its id.

        Nothing runs in this process, and the run has no owner until a worker claims it. Wait
        for the result from anywhere with :meth:`wait`.

        Raises:
            RunAlreadyExists: ``run_id`` is taken.
            SerializationError: ``input`` cannot be encoded as JSON.
        """
        workflow = check_workflow(workflow)
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        check_run_id(run_id)
        await self._record_start(workflow, input, run_id, state, None, None).commit()
        return run_id

    def _record_start(
        self,
        workflow: Workflow,
        input: Any,
        run_id: str,
        state: Any,
        parent: ev.ParentRef | None,
        lease: Lease | None,
    ) -> LiveRun:
        """A new live run with its ``run_started`` recorded (not yet committed)."""
        run = self._new_live(workflow, RunState(run_id=run_id), lease)
        run.record(
            ev.RunStarted,
            workflow=workflow.name,
            version=workflow.version,
            definition_hash=workflow.definition_hash,
            definition=workflow.canonical(),
            input=encode_any(input, what="the run's input"),
            parent=parent,
            state=self._initial_state(workflow, state),
        )
        return run

    async def wait(
        self, run_id: str, workflow: Workflow | None = None, *, timeout: float | None = None, poll: float = 0.05
    ) -> Any:
        """Wait until the run ends, whichever process runs it, and return its result.

        With ``workflow``, the result is decoded by its annotations (a model comes back as that
        model); without, it is plain JSON. Nothing is executed here: if the run's owner dies,
        the run waits for another (a worker, or ``engine.run`` with its id).

        Raises:
            RunNotFound: no such run.
            RunFailed: the run failed. RunCancelled: it was cancelled.
            TimeoutError: ``timeout`` seconds passed first.
        """
        live = self._live.get(run_id)
        with anyio.fail_after(timeout):
            if live is not None:
                await live.finished.wait()
            while True:
                info = await self.journal.get_run(run_id)
                if info is None:
                    raise RunNotFound(run_id)
                if info.status in ev.TERMINAL_STATUSES:
                    return await self._stored_result(run_id, workflow)
                await anyio.sleep(poll)

    async def _run_leased(
        self, lease: Lease, workflow: Workflow, on_exit: Callable[[LiveRun], Awaitable[None]]
    ) -> LiveRun | None:
        """Run a claimed run under its lease (for a worker); ``None`` if it turned out finished."""
        tg = self._group()
        events = await self.journal.read(lease.run_id)
        state = fold(events, lease.run_id)
        if state.finished:
            return None
        check_definition(state, workflow)
        run = self._new_live(workflow, state, lease, claimed=True, on_exit=on_exit)
        self._live[run.run_id] = run
        await self._read_pending(run)
        self._launch(tg, run)
        return run

    async def _read_pending(self, run: LiveRun) -> None:
        """Apply the run's pending inbox requests; if that fails (or is cancelled), let the run go whole."""
        try:
            await self._control.pending(run)
        except BaseException:
            if self._live.get(run.run_id) is run:
                del self._live[run.run_id]
            if run.lease is not None:
                await self._leases.release(run.lease)  # shielded inside
            raise

    async def run(self, workflow: Workflow, input: Any = None, *, run_id: str | None = None) -> Any:
        """Start the run, or resume it if it exists and is unfinished, and wait for its result.

        A run that already finished returns its stored result (or raises its stored failure)
        without running anything. Given an ``input`` that differs from the one the existing run
        was started with, it raises ``RunAlreadyExists`` showing both (pass no input to attach
        to the run whatever its input). A run that another live owner executes right now (another
        process running the same script, a worker) is not executed twice: this call waits for
        that owner's outcome and returns it, and takes the run over if the owner dies first.
        """
        if run_id is not None and input is not None:
            await self._same_input(run_id, input)
        while True:
            try:
                handle = await self.start(workflow, input, run_id=run_id, on_conflict="use_existing")
            except RunBusy as busy:
                await self._until_free_or_finished(busy.run_id)
                continue
            try:
                return await handle.result()
            except LeaseLost:  # presumed dead and taken over: the new owner's outcome is the one
                run_id = handle.run_id

    async def _same_input(self, run_id: str, input: Any) -> None:
        """Refuse to hand out an existing run's result for another input than the one it was started with."""
        first = await self.journal.read(run_id, upto=1)
        if not first or not isinstance(first[0], ev.RunStarted):
            return  # a new run
        given = encode_any(input, what="the run's input")
        if first[0].input != given:
            raise RunAlreadyExists(run_id, (first[0].input, given))

    async def _until_free_or_finished(self, run_id: str, poll: float = 0.05) -> None:
        """Wait until the run has finished, or nobody alive owns it any more."""
        while True:
            info = await self.journal.get_run(run_id)
            if info is None or info.status in ev.TERMINAL_STATUSES or self._leases.expired(info):
                return
            await anyio.sleep(poll)
            poll = min(poll * 1.5, 0.5)

    async def recover(self, workflows: Iterable[Workflow]) -> Recovery:
        """Resume every unfinished run of these definitions that nobody alive owns; return a report.

        The report is the list of the resumed runs' handles; ``report.skipped`` lists the
        runs left alone and why (:class:`Skipped`): a live owner executes them, or their
        workflow or definition was not given. Pass old and new versions of a workflow side by
        side to recover runs of both. A child run is resumed by its parent.
        """
        by_hash = {w.definition_hash: check_workflow(w) for w in workflows}
        names = {w.name for w in by_hash.values()}
        report = Recovery()
        todo: list[tuple[str, Workflow]] = []
        for info in await self.journal.list_runs(status="running"):
            workflow = by_hash.get(info.definition_hash)
            if info.parent_run_id is not None:
                report.skipped.append(Skipped(info.run_id, info.workflow, "child", f"run {info.parent_run_id!r}"))
            elif workflow is not None:
                todo.append((info.run_id, workflow))
            elif info.workflow not in names:
                detail = f"no definition of workflow {info.workflow!r} was given"
                report.skipped.append(Skipped(info.run_id, info.workflow, "workflow", detail))
            else:
                candidate = next(w for w in by_hash.values() if w.name == info.workflow)
                try:
                    check_definition(fold(await self.journal.read(info.run_id, upto=1), info.run_id), candidate)
                except DefinitionMismatch as mismatch:
                    detail = "; ".join(mismatch.changes) or "the canonical forms differ"
                    report.skipped.append(Skipped(info.run_id, info.workflow, "definition", detail))
        for run_id, workflow in reversed(todo):  # oldest first
            try:
                report.append(await self.resume(run_id, workflow))
            except RunBusy as busy:
                report.skipped.append(Skipped(run_id, workflow.name, "owned", str(busy)))
        return report

    def _handle_for(self, live: LiveRun, workflow: Workflow) -> RunHandle:
        check_definition(live.state, workflow)
        return RunHandle(live.run_id, self, workflow, live)

    def _launch(self, tg: TaskGroup, run: LiveRun) -> RunHandle:
        self._runs.launch(tg, run)
        return RunHandle(run.run_id, self, run.workflow, run)

    async def check_compatibility(self, workflows: Iterable[Workflow]) -> list[Incompatibility]:
        """List the unfinished runs that these definitions could not resume (empty: safe to deploy).

        A run is incompatible when no given workflow of its name has its definition hash (the
        changes are listed against the last definition of that name given), or when no
        definition of its name is given at all.
        """
        return await _history.incompatibilities(self.journal, workflows)

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
        return await _history.fork(
            self.journal, run_id, at=at, from_step=from_step, new_run_id=new_run_id, workflow=workflow
        )

    async def export(self, run_id: str) -> dict[str, Any]:
        """The run as a self-contained JSON-ready document (events and definition), for another machine.

        Raises:
            RunNotFound: no such run.
        """
        return await _history.export(self.journal, run_id)

    async def import_run(self, doc: Any, *, new_run_id: str | None = None) -> str:
        """Load a document made by :meth:`export` into this journal; return the run id.

        Raises:
            InvalidRunDocument: the document is malformed (nothing is written).
            RunAlreadyExists: the run id is taken here (pass ``new_run_id``).
        """
        return await _history.import_run(self.journal, doc, new_run_id)

    # -- reading ------------------------------------------------------------------------------

    async def history(self, run_id: str) -> list[ev.Event]:
        """The run's committed events, in seq order.

        Raises:
            RunNotFound: no such run.
        """
        return await _history.history(self.journal, run_id)

    async def state(self, run_id: str, at: int | None = None) -> RunState:
        """The fold of the run's events up to seq ``at`` (all of them by default).

        Raises:
            RunNotFound: no such run.
            SeqOutOfRange: ``at`` is negative or beyond the run's last seq.
        """
        return await _history.state(self.journal, run_id, at)

    async def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> list[RunInfo]:
        """Index rows of the runs, newest first."""
        return await self.journal.list_runs(status=status, workflow=workflow, limit=limit)

    async def _stored_result(self, run_id: str, workflow: Workflow | None) -> Any:
        return await _history.stored_result(self.journal, run_id, workflow)

    # -- executing ----------------------------------------------------------------------------

    async def _apply_control(self, run: LiveRun, request: Any) -> None:
        await self._control.apply(run, request)

    def _new_live(
        self,
        workflow: Workflow,
        state: RunState,
        lease: Lease | None,
        *,
        claimed: bool = False,
        on_exit: Callable[[LiveRun], Awaitable[None]] | None = None,
    ) -> LiveRun:
        return LiveRun(
            self.journal,
            workflow,
            state,
            lease=lease,
            owner=self.owner,
            ttl=self._leases.ttl,
            spawn_child=self._spawn_child,
            claimed=claimed,
            on_exit=on_exit,
        )

    async def _spawn_child(
        self, workflow: Workflow, value: Any, child_id: str, parent: ev.ParentRef
    ) -> tuple[bool, Any]:
        """Run (or attach to) a child run and wait for it: (True, result JSON) or (False, ErrorInfo)."""
        if child_id in self._live or await self.journal.get_run(child_id) is not None:
            handle = await self.resume(child_id, workflow)
        else:
            handle = await self.start(workflow, value, run_id=child_id, _parent=parent)
        try:
            await handle.result()
        except anyio.get_cancelled_exc_class():
            parent_run = self._live.get(parent.run_id)
            child = self._live.get(child_id)
            if parent_run is not None and parent_run.cancel_reason is not None:
                # The parent was cancelled: so is its child (it would never be resumed otherwise).
                with anyio.CancelScope(shield=True):
                    try:
                        await self.cancel(child_id, reason=f"its parent {parent.run_id!r} was cancelled")
                    except DurableError:  # it ended meanwhile: nothing to cancel; the parent's cancel goes on
                        pass
            elif child is not None and child.scope is not None:
                # The parent stopped (a lost lease, shutdown): its child stops with it, as a crash
                # would stop it; whoever resumes the parent resumes the child.
                child.scope.cancel()
            raise
        except RunFailed:
            error = (await self.state(child_id)).error
            assert error is not None
            return False, error.model_copy(update={"message": f"child run {child_id!r}: {error.message}"})
        except RunCancelled as cancelled:
            return False, ev.ErrorInfo(type="RunCancelled", message=str(cancelled))
        return True, (await self.state(child_id)).result

    # -- control ------------------------------------------------------------------------------

    async def signal(self, run_id: str, name: str, payload: Any = None, *, force: bool = False) -> int:
        """Send the signal ``name`` to a run; its ``wait_for(name)`` node receives ``payload``.

        The signal is kept (journaled) until the run consumes it, also if it is sent before the
        run reaches its wait; several are delivered in the order sent. Returns the signal's id.
        A name that no ``wait_for`` of the run's definition waits for (a typo) is refused, with
        the names it can receive; ``force=True`` keeps it in the inbox anyway.

        Raises:
            RunNotFound: no such run.
            JournalError: the run has finished.
            SerializationError: ``payload`` cannot be stored.
            DurableError: no node of the run can receive this signal (and ``force`` is not set).
        """
        return await self._control.signal(run_id, name, payload, force=force)

    async def cancel(self, run_id: str, reason: str = "", *, timeout: float | None = None) -> None:
        """Cancel a run: it ends ``cancelled`` and is never resumed; its running children are cancelled too.

        A running step is cancelled at its next ``await`` (a sync step, when its thread returns);
        a parked run is cancelled at once. A run that another process executes gets the request
        in its inbox and its owner applies it (this call waits for that, up to ``timeout``
        seconds); a run that nobody executes is cancelled in the journal. ``handle.result()``
        raises :class:`~durable.RunCancelled`.

        Raises:
            RunNotFound: no such run.
            DurableError: the run has already finished, or it finished before the cancel reached it.
            TimeoutError: its owner did not apply the request within ``timeout`` (it stays in the
                inbox and is applied at the run's next transition).
        """
        await self._control.cancel(run_id, reason, timeout)

    async def pause(self, run_id: str, reason: str = "") -> None:
        """Pause a run: it starts no new node until :meth:`unpause`.

        It takes effect at the next node of the workflow's top-level chain; a node in progress
        finishes first. For a run that another process executes, the request goes to its
        owner's inbox, and this call returns once it is delivered.

        Raises:
            RunNotFound: no such run.
            DurableError: the run has finished.
        """
        await self._control.pause(run_id, reason)

    async def unpause(self, run_id: str) -> None:
        """Let a paused run go on.

        A paused run of this engine (or of another live engine) wakes at once; one that no
        engine runs goes on when it is next resumed (``recover``/``resume``) or claimed.

        Raises:
            RunNotFound: no such run.
            DurableError: the run has finished.
        """
        await self._control.unpause(run_id)

    def _initial_state(self, workflow: Workflow, state: Any) -> dict[str, Any] | None:
        model = workflow.state_model
        if model is None:
            if state is not None:
                raise DurableError(f"workflow {workflow.name!r} declares no state model; pass state= to Workflow()")
            return None
        try:
            value = state if isinstance(state, model) else model.model_validate(state if state is not None else {})
        except ValueError as exc:
            raise SerializationError(f"the initial state of workflow {workflow.name!r} is not valid: {exc}") from None
        data: dict[str, Any] = value.model_dump(mode="json")
        storable(data, what=f"the initial state of workflow {workflow.name!r}")
        return data

    async def _supersede(self, workflow: Workflow, input: Any, run_id: str, state: Any) -> RunHandle:
        """on_conflict="terminate_existing": cancel the run if unfinished; start the next free ``run_id~N``."""
        n = 2
        while await self.journal.get_run(f"{run_id}~{n}") is not None or f"{run_id}~{n}" in self._live:
            n += 1
        new_id = f"{run_id}~{n}"
        previous = run_id if n == 2 else f"{run_id}~{n - 1}"
        for old in (run_id, previous):
            info = await self.journal.get_run(old)
            if info is not None and info.status == "running":
                await self.cancel(old, reason=f"superseded by {new_id!r}")
        return await self.start(workflow, input, run_id=new_id, state=state)
