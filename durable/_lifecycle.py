"""The live runs of one engine: each driven from its start (or wake-up) to its end or its park.

:class:`Runs` holds what an engine executes right now, by id, and the task that executes
each: :meth:`Runs.drive` runs a run's nodes and writes its outcome (completed, failed,
cancelled), parks it when it waits, and stops it, writing nothing more, when the engine
shuts down, its lease is taken over, or the process is interrupted. The engine's public
calls (start, resume, cancel, ...) live in :mod:`durable.engine`.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskGroup

from . import _crash
from . import events as ev
from ._control import Control
from ._ownership import Leases
from ._run import LiveRun, Phase, RunParked
from ._runner import StepFailedForGood, StepInterrupted, run_nodes
from ._scheduler import Parking
from .definition import Workflow
from .errors import DurableError, LeaseLost, RunCancelled, RunFailed, RunInterrupted
from .fold import RunState
from .journal.base import Lease

__all__ = ["Runs", "unwrap"]


class Runs:
    """The runs an engine executes, and their lifecycle (see :class:`~durable._run.Phase`).

    The parking loop, the control calls and the heartbeat are given once the engine has
    built them (:meth:`wire`): each of them needs the runs, and the runs need each of them.
    """

    def __init__(self) -> None:
        self.live: dict[str, LiveRun] = {}  # running or parked here, by id
        self.stopped: dict[str, LiveRun] = {}  # stopped by shutdown or an interrupt: where they were
        self.handed_back: list[Lease] = []  # leases of runs stopped by shutdown, given back on exit
        self.tg: TaskGroup | None = None

    def wire(self, leases: Leases, parking: Parking, control: Control) -> None:
        self._leases = leases
        self._parking = parking
        self._control = control

    def launch(self, tg: TaskGroup, run: LiveRun) -> None:
        """Give a run its task (it holds its lease already)."""
        self.live[run.run_id] = run
        # The scope exists from now on, before the task runs: a cancel() in between reaches it.
        run.scope = anyio.CancelScope()
        run.phase = Phase.RUNNING
        tg.start_soon(self.drive, run, name=f"durable run {run.run_id}")
        self._parking.nudge()  # the inbox is polled while the engine has live runs

    def wake(self, run: LiveRun) -> None:
        """Give a parked run a task again (called by the parking loop, or by unpause/signal)."""
        run.parked = None
        if self.tg is not None:
            run.scope = anyio.CancelScope()
            run.phase = Phase.RUNNING
            self.tg.start_soon(self.drive, run, name=f"durable run {run.run_id}")

    def lease_lost(self, run: LiveRun) -> None:
        """Another owner took the run over (we were presumed dead): stop it at once, write nothing more."""
        lost = LeaseLost(run.run_id, self._leases.owner.name, run.lease.token if run.lease else 0, None, 0)
        if run.phase is Phase.PARKED:
            self._parking.remove(run.run_id)
            self.live.pop(run.run_id, None)
            run.finish(error=lost)
        elif run.scope is not None:
            run.lost = lost
            run.scope.cancel()

    async def drive(self, run: LiveRun) -> None:
        """Execute a run until it ends or parks. Never raises into the engine's task group, except cancellation."""
        parked = False
        scope = run.scope = run.scope or anyio.CancelScope()
        try:
            with scope:
                if run.cancel_reason is not None:  # asked while nobody executed it (found in its inbox)
                    await self.record_cancel(run, run.cancel_reason)
                    return
                try:
                    value = await run_nodes(run, run.workflow.nodes, run.state.input, top=True)
                except StepFailedForGood as failed:
                    info = failed.info
                    if failed.branch:  # the node alone does not say which lane of the fork failed
                        info = info.model_copy(update={"branch": failed.branch})
                    await self._parking.look_now()
                    if run.cancel_reason is not None:  # a cancel asked meanwhile wins over the failure
                        await self.record_cancel(run, run.cancel_reason)
                        return
                    run.record(ev.RunFailed, error=info)
                    await run.commit()
                    error = RunFailed(run.run_id, failed.node, info.type, info.message, branch=info.branch)
                    error.__cause__ = failed.cause
                    run.finish(error=error)
                    return
                except RunParked as parking:  # it waits: no task, no thread, no connection until it wakes
                    if run.lost is not None:  # taken over while its last commit was in flight
                        run.finish(error=run.lost)
                        return
                    if run.cancel_reason is not None:  # cancelled while it committed its wait: no parking
                        await self.record_cancel(run, run.cancel_reason)
                        return
                    run.parked = parking
                    run.phase = Phase.PARKED
                    if not run.claimed:  # a worker's run is woken by whichever worker claims it next
                        parked = True
                        self._parking.park(run)
                    return
                # A cancel asked from another process during the last node must not be lost: look
                # at the inbox once more before the run's outcome is written.
                await self._parking.look_now()
                if run.cancel_reason is not None:  # asked during the last node: the run ends cancelled
                    await self.record_cancel(run, run.cancel_reason)
                    return
                run.record(ev.RunCompleted, result=_result_json(run.workflow, run.state))
                await run.commit()
                run.finish(result=value)
            if run.lost is not None:
                run.finish(error=run.lost)
            elif run.cancel_reason is not None and not run.finished.is_set():  # engine.cancel() stopped it
                await self.record_cancel(run, run.cancel_reason)
            elif not run.finished.is_set() and run.phase is not Phase.PARKED:  # stopped with its parent, as a crash
                run.finish(error=DurableError(f"run {run.run_id!r} was stopped with its parent; resume the parent"))
        except anyio.get_cancelled_exc_class():
            run.finish(error=DurableError(f"run {run.run_id!r} was stopped (engine shut down); resume it to go on"))
            if run.lease is not None and not run.claimed:
                self.handed_back.append(run.lease)
            self.stopped[run.run_id] = run
            raise
        except BaseException as exc:  # journal failure, interrupt or simulated crash: write nothing more
            leaf = unwrap(exc)
            if isinstance(leaf, StepInterrupted):
                run.finish(error=RunInterrupted(run.run_id, leaf.node))
                self.stopped[run.run_id] = run
                raise leaf from None
            run.finish(error=leaf)
            if not isinstance(leaf, Exception):
                raise leaf from None
        finally:
            run.scope = None
            if not parked:
                if run.phase is not Phase.PARKED:
                    run.phase = Phase.FINISHED if run.finished.is_set() else run.phase
                if self.live.get(run.run_id) is run:
                    del self.live[run.run_id]
                # A run that ended with its terminal event has no owner any more (that append cleared
                # the lease); one that stopped on an error gives its lease back, unless it was
                # taken over or its process is (as good as) dead.
                stopped = run.finished.is_set() and not run.state.finished
                if run.lease is not None and run.on_exit is None and stopped and not _crash.fired():
                    if not isinstance(run.error, LeaseLost | RunInterrupted):
                        with anyio.CancelScope(shield=True):
                            await self._leases.release(run.lease)
            if run.on_exit is not None:
                with anyio.CancelScope(shield=True):
                    await run.on_exit(run)

    async def record_cancel(self, run: LiveRun, reason: str) -> None:
        run.record_control(ev.RunCancelled, reason=reason)
        await run.commit()
        with anyio.CancelScope(shield=True):  # before the outcome is handed out: the children go with it
            await self._control.cancel_children(run.run_id)
        run.finish(error=RunCancelled(run.run_id, reason))

    async def give_back_all(self) -> None:
        """On exit: give back the leases of the runs still here, so they can be resumed at once elsewhere."""
        if _crash.fired():  # a (simulated) dead process writes nothing
            return
        leases = self.handed_back + [r.lease for r in self.live.values() if r.lease is not None]
        self.handed_back = []
        for lease in leases:
            await self._leases.release(lease)


def _result_json(workflow: Workflow, state: RunState) -> Any:
    # A workflow never ends in a fork (a fork is closed by its join step): the last node's output.
    return state.nodes[workflow.nodes[-1].id].output


def unwrap(exc: BaseException) -> BaseException:
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
