"""Parked runs: the engine's one task that wakes sleeping and waiting runs on time.

A parked run holds no task, thread or connection: only its entry here. One loop, a task of
the engine's task group, sleeps until the earliest wake-up time (or until nudged), wakes the
runs that are due, and polls the journal's signal inbox (one query for all runs, by a
cursor) so that signals sent by other processes wake their runs too, and control requests
(cancel, pause, unpause) sent by other processes reach the runs this engine owns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import anyio
import anyio.lowlevel

from . import events as ev
from ._run import LiveRun
from .errors import DurableError
from .journal.base import Journal, SignalRecord

log = logging.getLogger("durable")

__all__ = ["CONTROL_SIGNAL", "Parking"]

CONTROL_SIGNAL = "__control__"
"""The inbox of control requests: another process's cancel, pause or unpause of a run that an
owner executes, as ``{"op": "cancel" | "pause" | "unpause", "reason": str}``. The owner applies
each at the run's next transition and marks the event it writes with the request's id."""


class Parking:
    """The parked runs of one engine, and the loop that wakes them and delivers control requests.

    Args:
        journal: where signals are read.
        wake: gives a parked run a task again.
        poll_interval: seconds between looks at the inbox while this engine has live runs.
        live: every run this engine executes (running or parked): their control requests are delivered.
        on_control: applies one control request to one live run.
    """

    def __init__(
        self,
        journal: Journal,
        wake: Callable[[LiveRun], None],
        poll_interval: float,
        live: Mapping[str, LiveRun],
        on_control: Callable[[LiveRun, SignalRecord], Awaitable[None]],
    ) -> None:
        self._journal = journal
        self._wake = wake
        self._poll = poll_interval
        self._live = live
        self._on_control = on_control
        self._runs: dict[str, LiveRun] = {}
        self._nudged = anyio.Event()
        self._cursor = 0
        self._unchecked: set[str] = set()  # parked for a signal, its inbox not read since it parked
        self._next_look: anyio.Event | None = None  # the shared look_now() being gathered

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def park(self, run: LiveRun) -> None:
        """Keep ``run`` until its wake-up time, its signal, or an explicit :meth:`wake`."""
        self._runs[run.run_id] = run
        if run.parked is not None and run.parked.signal:
            # A signal may have come between the run reading its inbox and parking, and the
            # global cursor below may have passed it already: read this run's inbox once.
            self._unchecked.add(run.run_id)
        self._nudged.set()

    def nudge(self) -> None:
        """Look again now (a run went live: its inbox is polled from now on)."""
        self._nudged.set()

    def remove(self, run_id: str) -> LiveRun | None:
        """Forget a parked run (it was cancelled, say) without waking it."""
        return self._runs.pop(run_id, None)

    def wake(self, run_id: str) -> bool:
        """Wake a parked run now (an unpause, or a signal sent from this engine)."""
        run = self._runs.pop(run_id, None)
        if run is None:
            return False
        self._wake(run)
        return True

    async def _look_for_signals(self, waiting: dict[str, LiveRun]) -> None:
        for run_id in list(self._unchecked):
            self._unchecked.discard(run_id)
            run = waiting.get(run_id)
            if run is not None and run.parked is not None and run.parked.signal:
                if await self._journal.read_signals(run_id, name=run.parked.signal, after=run.parked.seen):
                    self.wake(run_id)
        if self._live:
            await self._read_inbox()

    async def look_now(self) -> None:
        """Read the inbox now, and deliver what it holds (a run about to write its outcome asks).

        Every caller of one event-loop iteration shares one query, which starts after all of
        them asked: 200 runs finishing together cost one read, not 200.
        """
        if self._next_look is not None:
            await self._next_look.wait()
            return
        self._next_look = done = anyio.Event()
        try:
            # Shielded: the look is shared, and applying a cancel to the run that leads it must
            # not cut it short for the others (that run's own scope takes effect after it).
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # let the other runs of this iteration join
                self._next_look = None
                await self._read_inbox()
        finally:
            self._next_look = None if self._next_look is done else self._next_look
            done.set()

    async def _read_inbox(self) -> None:
        """Deliver the signals and control requests committed since the cursor."""
        for signal in await self._journal.read_signals(None, after=self._cursor):
            self._cursor = max(self._cursor, signal.id)
            if signal.name == CONTROL_SIGNAL:
                run = self._live.get(signal.run_id)
                if run is not None:
                    await self._on_control(run, signal)
                continue
            target = self._runs.get(signal.run_id)
            if target is not None and target.parked is not None and target.parked.signal == signal.name:
                self.wake(signal.run_id)

    async def start(self) -> None:
        """Set the signal cursor to the journal's newest signal: older ones are read when runs resume."""
        newest = await self._journal.read_signals(None, after=self._cursor)
        if newest:
            self._cursor = newest[-1].id

    async def loop(self) -> None:
        """Wake due runs, forever (until the engine's task group is cancelled)."""
        while True:
            self._nudged = anyio.Event()  # before the work: a park() during it makes the wait below return
            now = ev.utcnow()
            for run in [r for r in self._runs.values() if r.parked and r.parked.until and r.parked.until <= now]:
                self.wake(run.run_id)
            waiting = {r.run_id: r for r in self._runs.values() if r.parked and r.parked.signal}
            try:
                await self._look_for_signals(waiting)
            except DurableError as exc:  # a busy disk: look again at the next poll; the runs wait on
                log.warning("durable: reading the signal inbox failed: %s", exc)
            dues = [r.parked.until for r in self._runs.values() if r.parked and r.parked.until]
            delay = (min(dues) - ev.utcnow()).total_seconds() if dues else math.inf
            if self._live:  # a parked run may get a signal, any live run a control request from elsewhere
                delay = min(delay, self._poll)
            with anyio.move_on_after(max(0.0, delay)):
                await self._nudged.wait()
