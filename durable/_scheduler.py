"""Parked runs: the engine's one task that wakes sleeping and waiting runs on time.

A parked run holds no task, thread or connection: only its entry here. One loop, a task of
the engine's task group, sleeps until the earliest wake-up time (or until nudged), wakes the
runs that are due, and polls the journal's signal inbox (one query for all runs, by a
cursor) so that signals sent by other processes wake their runs too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio

from . import events as ev
from ._runner import LiveRun
from .journal import Journal

__all__ = ["Parking"]


class Parking:
    """The parked runs of one engine, and the loop that wakes them."""

    def __init__(self, journal: Journal, wake: Callable[[LiveRun], None], poll_interval: float) -> None:
        self._journal = journal
        self._wake = wake
        self._poll = poll_interval
        self._runs: dict[str, LiveRun] = {}
        self._nudged = anyio.Event()
        self._cursor = 0

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def park(self, run: LiveRun) -> None:
        """Keep ``run`` until its wake-up time, its signal, or an explicit :meth:`wake`."""
        self._runs[run.run_id] = run
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
            if waiting:
                for signal in await self._journal.read_signals(None, after=self._cursor):
                    self._cursor = signal.id
                    target = waiting.get(signal.run_id)
                    if target is not None and target.parked is not None and target.parked.signal == signal.name:
                        self.wake(signal.run_id)
            dues = [r.parked.until for r in self._runs.values() if r.parked and r.parked.until]
            delay = (min(dues) - ev.utcnow()).total_seconds() if dues else math.inf
            if waiting:
                delay = min(delay, self._poll)
            with anyio.move_on_after(max(0.0, delay)):
                await self._nudged.wait()
