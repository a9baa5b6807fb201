"""The child process of :func:`durable.testing.sweep.sweep_sigkill`: run one workflow, maybe die.

``python -m durable.testing._child WORKFLOW_REF DB OUT --input JSON [--kill-at K]``

Runs (starts or resumes) the run ``sweep`` of the workflow named by ``WORKFLOW_REF``
(``"package.module:attribute"``) on the SQLite file ``DB``. It counts the SQL statements the
journal's writer connection executes; with ``--kill-at K`` it sends itself ``SIGKILL`` just
as the K-th statement begins, which is as abrupt as a death can be: no ``finally``, no
``atexit``, no flush. Otherwise it writes ``{"result", "error", "statements", "elapsed"}``
as JSON to ``OUT`` (``statements``: the first word of each statement, in order). It prints
``ready`` once imports are done, so that a parent timing a random kill does not waste it on
interpreter start-up.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sqlite3
import sys
import time
from typing import Any

import anyio
from pydantic_core import to_jsonable_python

from ..definition import Workflow
from ..engine import Engine
from ..errors import RunFailed
from ..journal.sqlite import SQLiteJournal

RUN_ID = "sweep"


def load_workflow(ref: str) -> Workflow:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) and check it is a Workflow."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"workflow reference {ref!r}: write it as 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Workflow):
        raise TypeError(f"{ref} is {obj!r}, not a durable Workflow")
    return obj


async def _run(workflow: Workflow, db: str, value: Any, kill_at: int | None) -> dict[str, Any]:
    statements: list[str] = []

    def count(sql: str) -> None:
        statements.append(sql.split(None, 1)[0].upper() if sql.strip() else "")
        if len(statements) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    started = time.perf_counter()
    async with Engine(db) as engine:
        journal = engine.journal
        assert isinstance(journal, SQLiteJournal)
        writer: sqlite3.Connection | None = journal._writer
        assert writer is not None
        # The writer thread is idle until the first append, so installing the callback here is race-free;
        # it runs in the writer thread, just before each statement executes.
        writer.set_trace_callback(count)
        try:
            result = await engine.run(workflow, value, run_id=RUN_ID)
            error = None
        except RunFailed as exc:
            result, error = None, f"{exc.error_type}: {exc.node}"
    return {"result": result, "error": error, "statements": statements, "elapsed": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m durable.testing._child")
    parser.add_argument("workflow")
    parser.add_argument("db")
    parser.add_argument("out")
    parser.add_argument("--input", default="null", help="the run's input, as JSON")
    parser.add_argument("--kill-at", type=int, default=None, help="SIGKILL self as this writer statement begins")
    args = parser.parse_args(argv)
    workflow = load_workflow(args.workflow)
    print("ready", flush=True)
    outcome = anyio.run(_run, workflow, args.db, json.loads(args.input), args.kill_at)
    with open(args.out, "w") as f:
        json.dump(to_jsonable_python(outcome), f)


if __name__ == "__main__":
    main(sys.argv[1:])
