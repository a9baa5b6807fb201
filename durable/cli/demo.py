"""``durable demo``: crash recovery, seen in one command.

The demo starts a small checkout workflow (with a fork) in a child process, watches the
journal until some steps have completed, kills the child with SIGKILL, resumes the run in
this process, and shows from the steps' own side-effect log that no completed step ran
again.

The side-effect log is a file outside the journal: each step appends one line (its pid,
node and attempt) and fsyncs it when it does its work, so the log tells which process did
what, independently of what the journal claims.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from ..context import context
from ..definition import Workflow, step
from ..engine import Engine
from ..fold import COMPLETED, RunState, fold
from ..journal.sqlite import SQLiteJournal
from .render import history_table

__all__ = ["WORKFLOW", "DemoError", "run_child", "run_demo"]

_POLL = 0.05  # seconds between two reads of the journal while the child runs
_WATCH_LIMIT = 30.0  # seconds the child may take to get far enough to be killed


class DemoError(Exception):
    """The demo could not show what it meant to show (the child died on its own, say)."""


# -- the sample workflow --------------------------------------------------------------------

_effects: Path | None = None  # where steps log their side effects; set by run_child / run_demo


def _do_work(seconds: float, what: str) -> None:
    """Pretend to work, then record the side effect, fsynced, in the side-effect log."""
    time.sleep(seconds)
    if _effects is None:
        return
    ctx = context()
    line = json.dumps({"pid": os.getpid(), "node": ctx.node, "attempt": ctx.attempt, "what": what})
    with open(_effects, "a", encoding="utf-8") as log:
        log.write(line + "\n")
        log.flush()
        os.fsync(log.fileno())


@step
def fetch_order(order_id: str) -> dict[str, Any]:
    """Load the order."""
    _do_work(0.3, f"loaded {order_id}")
    return {"order_id": order_id, "email": "ada@example.com", "items": ["teapot", "cups"], "total": 42.5}


@step
def send_email(order: dict[str, Any]) -> str:
    """Tell the customer (branch "email")."""
    _do_work(0.2, f"emailed {order['email']}")
    return f"confirmation sent to {order['email']}"


@step
def reserve_stock(order: dict[str, Any]) -> dict[str, Any]:
    """Reserve the items (branch "stock", first step)."""
    _do_work(0.3, f"reserved {len(order['items'])} items")
    return {"order_id": order["order_id"], "reservation": "R-1001", "items": order["items"]}


@step
def notify_warehouse(reservation: dict[str, Any]) -> str:
    """Ask the warehouse to ship (branch "stock", second step)."""
    _do_work(0.4, f"notified the warehouse of {reservation['reservation']}")
    return f"warehouse will ship {reservation['reservation']}"


@step
def summarize(branches: dict[str, Any]) -> dict[str, Any]:
    """Join the branches."""
    _do_work(0.2, "summarized")
    return {"email": branches["email"], "stock": branches["stock"]}


@step
def finish(summary: dict[str, Any]) -> str:
    """Close the order."""
    _do_work(0.2, "closed the order")
    return f"order complete: {summary['email']}; {summary['stock']}"


WORKFLOW = (
    Workflow("checkout-demo", version=1)
    .then(fetch_order)
    .fork()
    .branch(send_email, name="email")
    .branch(reserve_stock, notify_warehouse, name="stock")
    .join(summarize)
    .then(finish)
)
"""The sample: fetch_order -> fork(email: send_email | stock: reserve_stock -> notify_warehouse)
-> summarize -> finish."""

_SHAPE = (
    "fetch_order -> fork -> summarize -> finish",
    "the fork runs two branches at once:",
    "  email: send_email",
    "  stock: reserve_stock -> notify_warehouse",
)
_STEPS = list(WORKFLOW.step_nodes())
_INPUT = "order-42"


async def run_child(db: str, run_id: str, effects: Path) -> None:
    """Run the sample workflow in this process (the demo's child) until it ends or is killed."""
    global _effects
    _effects = effects
    async with Engine(db) as engine:
        await engine.run(WORKFLOW, _INPUT, run_id=run_id)


# -- the demo -------------------------------------------------------------------------------


@dataclass
class _Kill:
    """What the journal said when the child was killed."""

    pid: int
    completed: list[str]
    in_flight: list[str]
    last_seq: int  # the child's last committed event


def _completed_steps(state: RunState) -> list[str]:
    return [n for n in _STEPS if state.nodes.get(n) is not None and state.nodes[n].status == COMPLETED]


def _ready_to_kill(state: RunState) -> bool:
    """After the first step and at least one branch step completed, with work still to do."""
    done = set(_completed_steps(state))
    return "fetch_order" in done and bool(done & {"send_email", "reserve_stock"}) and not state.finished


def _read_effects(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _child_log_tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip() if path.exists() else ""
    return text.splitlines()[-1] if text else "(it printed nothing)"


async def _watch_and_kill(console: Console, engine: Engine, run_id: str, db: Path, workdir: Path) -> _Kill:
    """Start the child, print its progress from the journal, and SIGKILL it halfway."""
    child_log = workdir / "child.log"
    cmd = [sys.executable, "-m", "durable", "demo-child", "--db", str(db), "--run-id", run_id]
    cmd += ["--effects", str(workdir / "effects.log")]
    with open(child_log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        console.print(f"[bold]1. starting run {run_id} in a child process (pid {proc.pid})[/]")
        began, printed = time.monotonic(), 0
        while True:
            state = fold(await engine.journal.read(run_id), run_id)
            done = _completed_steps(state)
            for node in done[printed:]:
                console.print(f"   {time.monotonic() - began:5.2f}s  the journal says {node} completed")
            printed = len(done)
            if state.finished:
                raise DemoError(
                    f"run {run_id} finished before the demo could kill it (it read the journal too late); try again"
                )
            if proc.poll() is not None:
                raise DemoError(
                    f"the child process exited on its own with status {proc.returncode}: {_child_log_tail(child_log)}"
                )
            if _ready_to_kill(state):
                break
            if time.monotonic() - began > _WATCH_LIMIT:
                raise DemoError(f"the child made no progress in {_WATCH_LIMIT:g}s: {_child_log_tail(child_log)}")
            await anyio.sleep(_POLL)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Read again: a commit may have landed between the last read and the kill.
        state = fold(await engine.journal.read(run_id), run_id)
        kill = _Kill(proc.pid, _completed_steps(state), [n for n in state.in_flight() if n in _STEPS], state.last_seq)
        console.print(f"[bold]2. killed it with SIGKILL after {len(kill.completed)} steps completed[/]")
        console.print(f"   completed: {', '.join(kill.completed)}")
        console.print(f"   in flight: {', '.join(kill.in_flight) or 'nothing'}")
        return kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _report_effects(console: Console, kill: _Kill, effects: Path) -> bool:
    """Print which process did each step's work; return False if a completed step ran again."""
    log = _read_effects(effects)
    me = os.getpid()
    before = [e["node"] for e in log if e["pid"] == kill.pid]
    after = [e["node"] for e in log if e["pid"] == me]
    console.print("   the steps' side-effect log says:")
    console.print(f"     before the kill (pid {kill.pid}): {', '.join(before) or 'nothing'}")
    console.print(f"     after the resume (pid {me}): {', '.join(after) or 'nothing'}")
    repeated = [n for n in after if n in kill.completed]
    if repeated:
        console.print(f"   [red]completed steps ran again: {', '.join(repeated)}[/]")
        return False
    console.print(f"   none of the {len(kill.completed)} completed steps ran again.")
    twice = [n for n in kill.in_flight if n in before and n in after]
    for node in kill.in_flight:
        if node in twice:
            console.print(f"   {node} was in flight at the kill and did its work twice:")
            console.print("   it had done it, but its completion was not committed yet.")
        else:
            console.print(f"   {node} was in flight at the kill and ran again from its start;")
            console.print("   had the kill come after its work but before its completion was")
            console.print("   committed, it would have done that work twice.")
    if kill.in_flight:
        console.print("   durable runs a step at least once: make side effects idempotent")
        console.print("   (durable.context().idempotency_key is the same on every attempt).")
    return True


async def run_demo(console: Console, db: str | None = None) -> int:
    """Run the whole demo, printing as it goes; return the exit status (0: recovered correctly).

    Args:
        console: where to print.
        db: the journal file; by default a new one in a fresh temporary directory.

    Raises:
        DemoError: the child died on its own, or never got far enough to be killed.
        DurableError: the journal cannot be opened (a missing directory, a file that is not ours).
    """
    global _effects
    workdir = Path(tempfile.mkdtemp(prefix="durable-demo-"))
    db_path = Path(db) if db is not None else workdir / "demo.db"
    effects = _effects = workdir / "effects.log"
    run_id = f"demo-{secrets.token_hex(4)}"
    try:  # refuse a bad --db (a missing directory, a file that is not ours) before printing anything
        async with SQLiteJournal(db_path):
            pass
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    console.print("[bold]durable demo[/]: a checkout workflow, killed mid-run and resumed")
    console.print(f"   workflow: {_SHAPE[0]}")
    for line in _SHAPE[1:]:
        console.print(f"             {line}")
    console.print(f"   journal:  {db_path}")
    async with Engine(db_path) as engine:
        kill = await _watch_and_kill(console, engine, run_id, db_path, workdir)
        console.print(f"[bold]3. resuming run {run_id} in this process (pid {os.getpid()})[/]")
        console.print("   completed steps are read from the journal, not run again")
        handle = await engine.resume(run_id, WORKFLOW)
        result = await handle.result()
        ok = _report_effects(console, kill, effects)
        events = await engine.history(run_id)
        final = fold(events, run_id)
    console.print(f"[bold]4. history of run {run_id}[/] ({len(events)} events)")
    console.print(f"   events 1-{kill.last_seq} were committed by the child before the kill,")
    console.print(f"   events {kill.last_seq + 1}-{len(events)} by this process after the resume")
    console.print(history_table(events))
    console.print(f"run {run_id} {final.status}; result:")
    console.print(f"   {json.dumps(result)}", soft_wrap=True)
    console.print("look again with:")
    console.print(f"   durable --db {shlex.quote(str(db_path))} history {run_id}", soft_wrap=True)
    return 0 if ok and final.status == "completed" else 1
