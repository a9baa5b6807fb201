"""``durable.run``: a workflow run to its end from a script, with Ctrl-C handled as a crash."""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio

from .definition import Workflow
from .engine import Engine
from .errors import RunInterrupted
from .journal.sqlite import Synchronous

__all__ = ["run"]


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
    running anything; an unfinished one continues where it stopped; one that another live
    process executes right now is waited for, not executed twice.

    Ctrl-C (or a step raising ``KeyboardInterrupt`` or ``SystemExit``) stops the run as a crash
    would: one line on stderr says where it stopped, and the process exits with status 130
    (``SystemExit``'s own code for a ``SystemExit``). Running the same command again resumes it.
    """
    rid = run_id if run_id is not None else uuid.uuid4().hex
    engine = Engine(db, synchronous=synchronous)

    async def main() -> Any:
        async with engine:
            return await engine.run(workflow, input, run_id=rid)

    where: list[str] = []  # the nodes in flight when Ctrl-C came

    def in_flight() -> list[str]:
        live = engine._live.get(rid) or engine._stopped.get(rid)
        return live.state.in_flight() if live is not None else []

    def on_ctrl_c(signum: int, frame: Any) -> None:
        where[:] = where or in_flight()
        if _step_threads():
            # A sync step runs in a thread, and a thread cannot be interrupted: waiting for it
            # could take as long as the step. Leave now, as a crash would; the journal needs
            # nothing more (everything acknowledged is committed), and the run resumes from there.
            _leave(RunInterrupted(rid, where[0] if where else None), 130)
        raise KeyboardInterrupt

    previous = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        return anyio.run(main)
    except (KeyboardInterrupt, SystemExit) as stop:
        nodes = where or in_flight()
        code = stop.code if isinstance(stop, SystemExit) and isinstance(stop.code, int) else 130
        message = RunInterrupted(rid, nodes[0] if nodes else None)
        if _step_threads():  # a step's thread is still running: do not wait for it at exit
            _leave(message, code)
        print(message, file=sys.stderr)
        raise SystemExit(code) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _step_threads() -> bool:
    """Whether a sync step is running in a worker thread right now."""
    return any(t.name == "AnyIO worker thread" and t.is_alive() for t in threading.enumerate())


def _leave(message: RunInterrupted, code: int) -> None:
    """Print where the run stopped and exit at once, as a crash would (no thread is waited for)."""
    print(message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
