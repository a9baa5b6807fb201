"""Controlling runs from outside their execution: signals, cancel, pause and unpause.

Only a run's owner writes into it. A control call on a run that this engine executes is
handed to the run (its inbox fields), which applies it at its next transition, or at once
when it is parked. A call on a run that another live owner executes (another process, or
another engine) becomes a request in the run's inbox (a ``__control__`` signal) that the
owner's engine delivers the same way. A run that nobody owns is controlled directly: the
caller takes its lease, writes the event, and gives the lease back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from . import events as ev
from ._codec import encode_any, valid_unicode
from ._ownership import nudge, owned_by_the_living
from ._run import LiveRun, Phase, write
from ._scheduler import CONTROL_SIGNAL, Parking
from .errors import DurableError, JournalError, RunBusy, RunCancelled, RunNotFound
from .fold import fold
from .journal.base import Journal, Lease, SignalRecord

__all__ = ["Control", "check_run_id", "signal_names"]

log = logging.getLogger("durable")


def signal_names(definition: Any) -> set[str]:
    """The signal names the ``wait_for`` nodes of a canonical definition wait for, at any depth."""
    names: set[str] = set()
    stack = [definition]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("kind") == "wait" and isinstance(item.get("signal"), str):
                names.add(item["signal"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return names


def check_run_id(run_id: Any) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise DurableError(f"run_id={run_id!r}: a run id is a non-empty string")
    if not valid_unicode(run_id):
        raise DurableError(f"run_id={run_id!r} is not valid Unicode (a lone surrogate); run ids are text")


class Control:
    """``signal``, ``cancel``, ``pause`` and ``unpause`` of one engine.

    Args:
        journal: the engine's journal.
        live: the runs the engine executes, by id.
        parking: the engine's parked runs.
        acquire: takes a run's lease for the engine (raises ``RunBusy`` if a live owner holds it).
        release: gives a lease back (shielded; a failure is logged, the lease then expires).
        poll: seconds between looks at a run that another owner is asked to cancel.
    """

    def __init__(
        self,
        journal: Journal,
        live: dict[str, LiveRun],
        parking: Parking,
        acquire: Callable[[str], Awaitable[Lease]],
        release: Callable[[Lease], Awaitable[None]],
        poll: float,
    ) -> None:
        self._journal = journal
        self._live = live
        self._parking = parking
        self._acquire = acquire
        self._release = release
        self._poll = poll

    # -- the calls ----------------------------------------------------------------------------

    async def signal(self, run_id: str, name: str, payload: Any = None, *, force: bool = False) -> int:
        check_run_id(run_id)
        if not isinstance(name, str) or not name or name == CONTROL_SIGNAL:
            raise DurableError(f"signal name {name!r}: give a non-empty string other than {CONTROL_SIGNAL!r}")
        payload_json = encode_any(payload, what=f"the payload of signal {name!r}")
        first = [] if force else await self._journal.read(run_id, upto=1)
        if first and isinstance(first[0], ev.RunStarted) and name not in (names := signal_names(first[0].definition)):
            info = await self._journal.get_run(run_id)  # only now: a finished run is refused by send_signal below
            if info is not None and info.status == "running":
                can = ", ".join(map(repr, sorted(names))) or "none (it has no wait_for node)"
                raise DurableError(
                    f"run {run_id!r} has no wait_for({name!r}): no node of its definition can receive that signal. "
                    f"The signals it can receive: {can}. Check the name, or pass force=True (--force) to keep it "
                    "in the run's inbox anyway"
                )
        record = await self._journal.send_signal(run_id, name, payload_json)
        live = self._live.get(run_id)
        if live is not None and live.parked is not None and live.parked.signal == name:
            self._parking.wake(run_id)
        return record.id

    async def cancel(self, run_id: str, reason: str, timeout: float | None) -> None:
        check_run_id(run_id)
        live = self._live.get(run_id)
        with anyio.fail_after(timeout):
            if live is not None:
                await self._cancel_live(live, reason)
                return
            await self._from_outside(run_id, "cancel", reason)

    async def pause(self, run_id: str, reason: str) -> None:
        check_run_id(run_id)
        live = self._live.get(run_id)
        if live is None:
            await self._from_outside(run_id, "pause", reason)
        elif live.phase is Phase.PARKED:
            if not live.state.paused:
                await self._record_parked(live, ev.RunPaused, reason=reason)
        else:
            live.pause_requested = reason or "paused"
            live.unpause_requested = False

    async def unpause(self, run_id: str) -> None:
        check_run_id(run_id)
        live = self._live.get(run_id)
        if live is None:
            await self._from_outside(run_id, "unpause", "")
        elif live.phase is Phase.PARKED:
            if live.state.paused:
                await self._record_parked(live, ev.RunUnpaused)
            self._parking.wake(run_id)
        else:
            live.pause_requested = None
            live.unpause_requested = True  # in case it is committing its run_paused right now

    # -- a request from the inbox, for a run this engine executes ---------------------------

    async def apply(self, run: LiveRun, request: SignalRecord) -> None:
        """Apply one control request from the run's inbox (sent by another process). Never raises."""
        if request.id <= run.control_seen or run.phase is Phase.FINISHED:
            return
        run.control_seen = request.id
        payload = request.payload if isinstance(request.payload, dict) else {}
        op, reason = payload.get("op"), str(payload.get("reason") or "")
        run.request = request.id
        try:
            if op == "cancel":
                if run.phase is Phase.PARKED:
                    await self._cancel_parked(run, reason)
                else:
                    self._cancel_running(run, reason)
            elif op == "pause":
                await self.pause(run.run_id, reason)
            elif op == "unpause":
                await self.unpause(run.run_id)
        except DurableError as exc:  # a busy disk: the request stays in the inbox for whoever resumes the run
            log.warning("durable: applying %s to run %r failed: %s", op, run.run_id, exc)

    async def pending(self, run: LiveRun) -> None:
        """Apply the control requests that reached the run's inbox while nobody applied them (on resume)."""
        for request in await self._journal.read_signals(run.run_id, name=CONTROL_SIGNAL, after=run.control_seen):
            await self.apply(run, request)

    # -- runs of this engine --------------------------------------------------------------

    def _cancel_running(self, run: LiveRun, reason: str) -> None:
        run.cancel_reason = reason
        if run.scope is not None:
            run.scope.cancel()

    async def _cancel_live(self, run: LiveRun, reason: str) -> None:
        if run.phase is Phase.PARKED:
            await self._cancel_parked(run, reason)
            return
        self._cancel_running(run, reason)
        await run.finished.wait()
        if isinstance(run.error, RunCancelled):
            return
        if run.error is None:
            raise DurableError(f"run {run.run_id!r} completed before the cancel reached it; nothing was cancelled")
        raise run.error  # the cancellation could not be recorded (a storage error, say)

    async def _cancel_parked(self, run: LiveRun, reason: str) -> None:
        await self._record_parked(run, ev.RunCancelled, reason=reason)
        self._parking.remove(run.run_id)
        self._live.pop(run.run_id, None)
        if run.lease is not None:
            await self._release(run.lease)
        await self.cancel_children(run.run_id)
        run.finish(error=RunCancelled(run.run_id, reason))

    async def _record_parked(self, run: LiveRun, event_type: Any, **fields: Any) -> None:
        """Record a control event on a run parked here.

        If it cannot be committed, the run is dropped from this engine (its live state would be
        ahead of the journal) and the error is raised; whoever resumes it goes on from the journal.
        """
        run.record_control(event_type, **fields)
        waiting = self._parking.remove(run.run_id)  # no wake-up may start it while the event commits
        try:
            await run.commit()
        except BaseException as exc:
            self._live.pop(run.run_id, None)
            run.finish(error=exc)
            if run.lease is not None:
                await self._release(run.lease)
            raise
        if waiting is not None and event_type is not ev.RunCancelled:
            self._parking.park(run)

    # -- runs this engine does not execute --------------------------------------------------

    async def _from_outside(self, run_id: str, op: str, reason: str) -> None:
        """Control a run this engine does not execute: ask its live owner, or act as its owner."""
        request: int | None = None
        while True:
            info = await self._journal.get_run(run_id)
            if info is None:
                raise RunNotFound(run_id)
            if info.status in ev.TERMINAL_STATUSES:
                if request is not None and (info.status == "cancelled" or op != "cancel"):
                    return  # done; or a run that ended has nothing left to unpause
                if request is not None:
                    raise DurableError(
                        f"run {run_id!r} {info.status} before the cancel reached its owner; nothing was cancelled"
                    )
                raise DurableError(f"run {run_id!r} has already {info.status}; there is nothing to {op}")
            if owned_by_the_living(info):
                if request is None:
                    payload = {"op": op, "reason": reason}
                    request = (await self._journal.send_signal(run_id, CONTROL_SIGNAL, payload)).id
                    nudge(info.lease_owner)  # an engine of this process: it reads its inbox at once
                if op == "pause":
                    return  # the owner applies it at the run's next transition
                if op == "unpause" and not info.paused:
                    return  # applied, or there was nothing to unpause
                await anyio.sleep(self._poll)
                continue
            try:
                lease = await self._acquire(run_id)
            except RunBusy:
                continue  # someone took it up meanwhile: ask them
            except JournalError:
                continue  # it finished meanwhile: the checks above say how
            try:
                done = await self._apply_as_owner(run_id, lease, op, reason, request)
            finally:
                await self._release(lease)
            if done and op == "cancel":
                await self.cancel_children(run_id)
            return

    async def _apply_as_owner(self, run_id: str, lease: Lease, op: str, reason: str, request: int | None) -> bool:
        state = fold(await self._journal.read(run_id), run_id)
        if state.finished:
            raise DurableError(f"run {run_id!r} has already {state.status}; there is nothing to {op}")
        event_type: Any
        fields: dict[str, Any] = {"request": request}
        if op == "cancel":
            event_type, fields["reason"] = ev.RunCancelled, reason
        elif op == "pause":
            if state.paused:
                return False
            event_type, fields["reason"] = ev.RunPaused, reason
        else:
            if not state.paused:
                return False
            event_type = ev.RunUnpaused
        # Mark it with the newest request of the inbox: what was asked before this is superseded,
        # and must not be applied again by whoever resumes the run.
        requests = await self._journal.read_signals(run_id, name=CONTROL_SIGNAL, after=state.control_seen)
        fields["request"] = max([r.id for r in requests if request is None or r.id >= request] + [request or 0]) or None
        event = event_type(seq=state.last_seq + 1, ts=ev.utcnow(), **fields)
        await write(self._journal, run_id, [event], lease)
        return True

    async def cancel_children(self, run_id: str) -> None:
        """A cancelled parent takes its running children with it (they would never be resumed otherwise)."""
        for child in await self._journal.list_runs(status="running", parent=run_id):
            try:
                await self.cancel(child.run_id, f"its parent {run_id!r} was cancelled", None)
            except DurableError as exc:  # it ended meanwhile
                log.info("durable: child %r of cancelled run %r: %s", child.run_id, run_id, exc)
