"""Workflows of the language tests that child processes run (tests/language/test_language_cli.py).

Run as a script, so that a child process needs nothing but the path of this file::

    python tests/language_workflows.py approve DB RUN_ID   # start APPROVAL, wait for its end, print the result

The child's engine polls the signal inbox every 50 ms, so a signal sent by another process
(``durable signal``) wakes the parked run. The result is printed as one JSON line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from durable import Engine, Workflow, step


@step
def submit(order: int) -> int:
    return order


@step
def decide(decision: Any) -> str:
    return f"decision: {json.dumps(decision, sort_keys=True)}"


APPROVAL = Workflow("approval").then(submit).wait_for("approve").then(decide)
"""Parks at ``wait_for("approve")``; the result names the payload it received."""

NAP = Workflow("nap").then(submit).sleep(30).then(decide)
"""Sleeps 30 s: long enough to pause or cancel it while it sleeps."""


async def _approve(db: str, run_id: str) -> None:
    async with Engine(db, signal_poll_interval=0.05) as engine:
        result = await engine.run(APPROVAL, 7, run_id=run_id)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    command, db, run_id = sys.argv[1:4]
    if command != "approve":
        raise SystemExit(f"unknown command {command!r}; see the module docstring")
    anyio.run(_approve, db, run_id)
