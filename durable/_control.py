"""Controlling runs from outside their task: signals, cancel, pause and unpause.

A mixin of :class:`durable.Engine`, kept in a module of its own: these calls race a run's
own task (which may be starting, running, parked, or in another process), and each such
race is handled here, in one place.
"""

from __future__ import annotations

from typing import Any

import anyio

from . import events as ev
from ._codec import encode_any
from ._runner import LiveRun, RunParked
from ._scheduler import CONTROL_SIGNAL, Parking
from .errors import DurableError, JournalError, RunCancelled, SeqConflict
from .fold import RunState, fold
from .journal import Journal

__all__ = ["ControlMixin", "check_run_id"]


def check_run_id(run_id: Any) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise DurableError(f"run_id={run_id!r}: a run id is a non-empty string")



class ControlMixin:
    """``signal``, ``cancel``, ``pause`` and ``unpause`` for :class:`durable.Engine`."""

    journal: Journal
    _live: dict[str, LiveRun]
    _parking: Parking

    async def state(self, run_id: str, at: int | None = None) -> RunState:  # provided by Engine
        raise NotImplementedError

    async def signal(self, run_id: str, name: str, payload: Any = None) -> int:
        """Send the signal ``name`` to a run; its ``wait_for(name)`` node receives ``payload``.

        The signal is kept (journaled) until the run consumes it, also if it is sent before the
        run reaches its wait; several are delivered in the order sent. Returns the signal's id.

        Raises:
            RunNotFound: no such run.
            JournalError: the run has finished.
            SerializationError: ``payload`` is not JSON.
        """
        check_run_id(run_id)
        if not isinstance(name, str) or not name:
            raise DurableError("a signal name is a non-empty string")
        payload_json = encode_any(payload, what=f"the payload of signal {name!r}")
        record = await self.journal.send_signal(run_id, name, payload_json)
        live = self._live.get(run_id)
        if live is not None and live.parked is not None and live.parked.signal == name:
            self._parking.wake(run_id)
        return record.id

    async def cancel(self, run_id: str, reason: str = "") -> None:
        """Cancel a run: it ends ``cancelled`` and is never resumed.

        A running step is cancelled at its next ``await`` (a sync step, when its thread returns);
        a parked run is cancelled at once. A run that no engine is running is cancelled in the
        journal. ``handle.result()`` raises :class:`~durable.RunCancelled`.

        Raises:
            RunNotFound: no such run.
            DurableError: the run has already finished.
        """
        check_run_id(run_id)
        live = self._live.get(run_id)
        if live is not None and live.scope is not None:
            live.cancel_reason = reason
            live.scope.cancel()
            await live.finished.wait()
            if live.error is not None and not isinstance(live.error, RunCancelled):
                raise live.error  # the cancellation could not be recorded (a storage error, say)
            return
        if live is not None and live.parked is not None:
            await self._control_parked(live, ev.RunCancelled, reason=reason)
            self._parking.remove(run_id)
            self._live.pop(run_id, None)
            live.finish(error=RunCancelled(run_id, reason))
            return
        await self._append_control(run_id, ev.RunCancelled, reason=reason)

    async def _control_parked(self, live: LiveRun, event_type: Any, **fields: Any) -> None:
        """Record a control event on a run parked here.

        If it cannot be committed, the run is dropped from this engine (its live state would be
        ahead of the journal) and the error is raised.
        """
        live.record(event_type, **fields)
        try:
            with anyio.CancelScope(shield=True):
                await live.commit()
        except BaseException as exc:
            self._parking.remove(live.run_id)
            self._live.pop(live.run_id, None)
            live.finish(error=exc)
            raise

    async def pause(self, run_id: str, reason: str = "") -> None:
        """Pause a run: it starts no new node until :meth:`unpause`.

        It takes effect at the next node of the workflow's top-level chain; a node in progress
        finishes first.

        Raises:
            RunNotFound: no such run.
            DurableError: the run has finished.
        """
        check_run_id(run_id)
        live = self._live.get(run_id)
        if live is not None and live.scope is not None:
            live.pause_requested = reason or "paused"
            return
        if live is not None and live.parked is not None:
            if not live.state.paused:
                await self._control_parked(live, ev.RunPaused, reason=reason)
            return
        state = await self.state(run_id)
        if not state.paused:
            await self._append_control(run_id, ev.RunPaused, reason=reason)

    async def unpause(self, run_id: str) -> None:
        """Let a paused run go on.

        A paused run of this engine wakes at once; one that no engine runs goes on when it is
        next resumed (``recover``/``resume``).

        Raises:
            RunNotFound: no such run.
            DurableError: the run has finished.
        """
        check_run_id(run_id)
        live = self._live.get(run_id)
        if live is not None and live.scope is not None:
            live.pause_requested = None
            live.unpause_requested = True  # in case it is committing its run_paused right now
            return
        if live is not None and live.parked is not None:
            if live.state.paused:
                await self._control_parked(live, ev.RunUnpaused)
            self._parking.wake(run_id)
            return
        state = await self.state(run_id)
        if state.finished:
            raise DurableError(f"run {run_id!r} has already {state.status}; there is nothing to unpause")
        if state.paused:
            await self._append_control(run_id, ev.RunUnpaused)

    async def _append_control(self, run_id: str, event_type: Any, **fields: Any) -> None:
        """Append a control event to a run that no engine of this process is running.

        Another process may have it parked: a ``__control__`` signal makes its engine wake it,
        re-read the journal, and see the pause or the cancel.
        """
        try:
            await self.journal.send_signal(run_id, CONTROL_SIGNAL, event_type.model_fields["type"].default)
        except JournalError:
            pass  # finished: the checks below say so
        for _ in range(5):
            state = await self.state(run_id)
            if state.finished:
                raise DurableError(f"run {run_id!r} has already {state.status}; there is nothing to control")
            event = event_type(seq=state.last_seq + 1, ts=ev.utcnow(), **fields)
            try:
                await self.journal.append(run_id, [event])
                return
            except SeqConflict:  # another process advanced it meanwhile: read again
                continue
        raise DurableError(f"run {run_id!r} kept changing under us; try again")


    async def _controlled_elsewhere(self, run: LiveRun) -> bool:
        """After a SeqConflict: if another process cancelled or paused the run, act on it; else False."""
        with anyio.CancelScope(shield=True):
            events = await self.journal.read(run.run_id)
        state = fold(events, run.run_id)
        last = events[-1] if events else None
        if isinstance(last, ev.RunCancelled):
            run.finish(error=RunCancelled(run.run_id, last.reason))
            return True
        if state.paused and not state.finished and run.lease is None:
            run.state = state
            run.parked = RunParked(None)
            self._parking.park(run)  # the step in flight runs again on unpause (at least once)
            return True
        return False

    async def _record_cancel(self, run: LiveRun, reason: str) -> None:
        run.record(ev.RunCancelled, reason=reason)
        with anyio.CancelScope(shield=True):
            await run.commit()
        run.finish(error=RunCancelled(run.run_id, reason))
