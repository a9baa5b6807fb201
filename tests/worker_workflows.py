"""Workflows for the worker tests, importable by worker child processes as ``worker_workflows:<name>``.

The worker tests start ``python -m durable worker --workflows worker_workflows:chaos`` with this
directory on ``PYTHONPATH``. Every step first appends ``"<run_id> <node> <attempt> <pid>"`` to
the side-effect log named by ``$DURABLE_WORKER_LOG`` (flushed and fsynced, so that the line
survives a SIGKILL that follows it), so that the tests can compare what executed with what the
journal committed. Without the variable, nothing is logged.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import anyio
from pydantic import BaseModel

import durable
from durable import Workflow, step

LOG_ENV = "DURABLE_WORKER_LOG"


def log_effect() -> None:
    """Record that this step attempt is executing (first thing in every step below)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    ctx = durable.context()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.run_id} {ctx.node} {ctx.attempt} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(path: str | os.PathLike[str]) -> list[tuple[str, str, int, int]]:
    """The side-effect log as (run_id, node, attempt, pid), in the order written."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [line.split() for line in f.read().splitlines() if line.strip()]
    return [(run_id, node, int(attempt), int(pid)) for run_id, node, attempt, pid in rows]


# -- the chaos workflow: a fork, a sleep, a few steps -------------------------------------------

STEP_PAUSE = 0.1  # long enough for kills to land mid-step, short enough for 40 runs in seconds


@step
def prepare(n: int) -> int:
    log_effect()
    time.sleep(STEP_PAUSE)
    return n + 1


@step
def left(x: int) -> int:
    log_effect()
    time.sleep(STEP_PAUSE)
    return x * 2


@step
async def left_more(x: int) -> int:
    log_effect()
    await anyio.sleep(STEP_PAUSE)
    return x + 3


@step
async def right(x: int) -> int:
    log_effect()
    await anyio.sleep(STEP_PAUSE)
    return x * 10


@step
def combine(parts: dict[str, int]) -> int:
    log_effect()
    time.sleep(STEP_PAUSE)
    return parts["left"] + parts["right"]


@step
def finish(total: int) -> str:
    log_effect()
    return f"total={total}"


chaos = (
    Workflow("chaos")
    .then(prepare)
    .fork()
    .branch(left, left_more, name="left")
    .branch(right)
    .join(combine)
    .sleep(0.2)
    .then(finish)
)
CHAOS_STEPS = ("prepare", "left", "left_more", "right", "combine", "finish")


def chaos_result(n: int) -> str:
    """What ``chaos`` returns for input ``n``."""
    x = n + 1
    return f"total={(x * 2 + 3) + x * 10}"


# -- small workflows for the in-process tests ---------------------------------------------------


@step
def add_one(x: int) -> int:
    log_effect()
    return x + 1


@step
def double(x: int) -> int:
    log_effect()
    return x * 2


pipeline = Workflow("pipeline").then(add_one).then(double)
"""(x + 1) * 2."""

other = Workflow("other").then(double)
"""x * 2, under another name: for "a worker only runs what it knows"."""


class Receipt(BaseModel):
    order: int
    total: int


@step
def make_receipt(x: int) -> Receipt:
    log_effect()
    return Receipt(order=x, total=x * 2)


receipt = Workflow("receipt").then(make_receipt)
"""Returns a pydantic model: engine.wait decodes it with the workflow, gives plain JSON without."""


@step
def unreliable(x: int) -> int:
    log_effect()
    raise ValueError(f"card {x} declined")


broken = Workflow("broken").then(add_one).then(unreliable)
"""Fails for good at its second step."""


# Concurrency probes: steps that hold for a while and record how many run at once.

probe: dict[str, Any] = {"now": 0, "max": 0, "order": []}


def reset_probe() -> None:
    probe.update(now=0, max=0, order=[])


@step
async def hold(x: int) -> int:
    log_effect()
    probe["order"].append(durable.context().run_id)
    probe["now"] += 1
    probe["max"] = max(probe["max"], probe["now"])
    try:
        await anyio.sleep(0.1)
    finally:
        probe["now"] -= 1
    return x


held = Workflow("held").then(hold)
held_twice = Workflow("held_twice").then(hold).then(hold, name="hold_again")
capped = Workflow("capped").then(hold)
"""The same step as ``held`` under another name: the tests cap this one with workflow_concurrency."""


@step
async def quick(x: int) -> int:
    log_effect()
    return x


free = Workflow("free").then(quick)


# Sleeping and waiting runs.


@step
def before(x: int) -> int:
    log_effect()
    return x + 1


@step
def after(x: Any) -> Any:
    log_effect()
    return x


sleeper = Workflow("sleeper").then(before).sleep(0.5).then(after)
waiter = Workflow("waiter").then(before).wait_for("go").then(after)


# Slow steps, for stop() and drain.


@step
async def slow_first_attempt(seconds: float) -> str:
    """Sleeps ``seconds`` on attempt 1 and returns at once on later attempts."""
    log_effect()
    if durable.context().attempt == 1:
        await anyio.sleep(seconds)
    return f"done on attempt {durable.context().attempt}"


slow = Workflow("slow").then(slow_first_attempt)


# A step that kills the process that runs it, every time.


@step
def kill_my_worker(x: int) -> int:
    log_effect()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # pragma: no cover - the signal is on its way
    return x


suicidal = Workflow("suicidal").then(add_one).then(kill_my_worker)


# Two versions of one workflow, side by side during a deploy.


@step
def price_v1(x: int) -> str:
    log_effect()
    return f"v1:{x}"


@step
def price_v2(x: int) -> str:
    log_effect()
    return f"v2:{x}"


pricing_v1 = Workflow("pricing", version=1).then(price_v1)
pricing_v2 = Workflow("pricing", version=2).then(price_v2)


# -- checking a journal and the side-effect log from the outside --------------------------------


def read_journal(db: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every run in the file, read with a read-only connection of our own.

    Returns ``{run_id: {"status", "takeovers", "lease_owner", "events"}}``.
    """
    import sqlite3
    from contextlib import closing
    from pathlib import Path

    from durable.journal.sqlite import decode_rows

    uri = f"{Path(db).resolve().as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        runs = conn.execute("SELECT run_id, status, takeovers, lease_owner FROM runs").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for run_id, status, takeovers, owner in runs:
            rows = conn.execute(
                "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
            out[run_id] = {"status": status, "takeovers": takeovers, "lease_owner": owner, "events": decode_rows(rows)}
    return out


def execution_problems(journal: dict[str, dict[str, Any]], log: list[tuple[str, str, int, int]]) -> list[str]:
    """What the side-effect log says executed, against what the journal committed; one line per problem.

    * every logged execution had its ``step_started`` committed first (same node, same attempt);
    * no attempt executed twice;
    * no step executed again after the attempt whose completion was committed
      (attempts only grow, so a later execution would carry a larger attempt number);
    * a step executed at most ``1 + takeovers`` times (a step in flight at a kill runs again).
    """
    from collections import defaultdict

    from durable.testing import journal_violations

    problems: list[str] = []
    executed: dict[tuple[str, str], list[int]] = defaultdict(list)
    for run_id, node, attempt, _pid in log:
        executed[(run_id, node)].append(attempt)
    for run_id, info in journal.items():
        problems += [f"{run_id}: {p}" for p in journal_violations(info["events"])]
    for (run_id, node), attempts in sorted(executed.items()):
        run = journal.get(run_id)
        if run is None:
            problems.append(f"{run_id}/{node} executed, but the run is not in the journal")
            continue
        started = {e.attempt for e in run["events"] if e.type == "step_started" and e.node == node}
        done = [e.attempt for e in run["events"] if e.type == "step_completed" and e.node == node]
        if not set(attempts) <= started:
            problems.append(f"{run_id}/{node}: attempts {sorted(set(attempts) - started)} ran without a step_started")
        if len(attempts) != len(set(attempts)):
            problems.append(f"{run_id}/{node}: an attempt executed twice: {attempts}")
        if done and max(attempts) > done[0]:
            problems.append(f"{run_id}/{node}: executed again (attempts {attempts}) after attempt {done[0]} completed")
        if len(attempts) > 1 + run["takeovers"]:
            problems.append(
                f"{run_id}/{node}: executed {len(attempts)} times with {run['takeovers']} takeovers of the run"
            )
    return problems
