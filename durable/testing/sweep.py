"""A real-process crash sweep: kill a child process running a workflow with ``SIGKILL``, everywhere.

:func:`durable.testing.check_crash_safety` crashes the engine *inside* one process, at named
points. This sweep does what no in-process test can: it lets the operating system kill a
real process at every SQL statement the journal executes (and at random moments, which land
inside commits and fsyncs), then restarts it, and checks from the outside, by reading the
SQLite file, that nothing committed was lost and nothing was half applied. ::

    from durable.testing.sweep import sweep_sigkill

    report = sweep_sigkill("myapp.flows:checkout", {"order": 7}, db_dir=tmp_path, random_kills=20)
    print(report.summary())

Steps that call :func:`log_execution` at their start also get their executions counted: a
step whose completion was committed before the kill must never run again after it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..context import context
from ..definition import Workflow, step
from ..events import Event, RunCompleted, RunFailed, StepCompleted, StepStarted
from ..journal.sqlite import decode_event
from ..retry import RetryPolicy
from .invariants import journal_violations

__all__ = ["LOG_ENV", "SweepError", "SweepReport", "demo", "log_execution", "sweep_sigkill"]

LOG_ENV = "DURABLE_SWEEP_LOG"
"""The environment variable holding the path of the side-effect log of a sweep child."""

_RUN_ID = "sweep"  # the run id the child uses (durable.testing._child.RUN_ID)


def log_execution() -> None:
    """Record that this step attempt is executing: call it first thing in a step.

    Appends ``"<node> <attempt> <pid>"`` to the file named by ``$DURABLE_SWEEP_LOG``, flushed
    and fsynced, so that the line survives the ``SIGKILL`` that may follow. Does nothing when
    the variable is not set (outside a sweep).
    """
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    ctx = context()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.node} {ctx.attempt} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class SweepError(AssertionError):
    """A kill broke a promise; the message lists every problem and how to reproduce each."""


@dataclass
class SweepReport:
    """What :func:`sweep_sigkill` did.

    Attributes:
        workflow: the workflow reference swept.
        statements: SQL statements a fault-free child executes on the journal's writer connection.
        statement_kinds: the first word of each of those statements, in order (``statement_kinds[k - 1]``
            is the statement a kill at ``k`` precedes).
        kills: children killed by ``SIGKILL`` (at a statement or at a random moment), each resumed
            by a fresh child.
        statement_kills: the statement numbers at which a child was killed.
        finished_first: statement numbers a child never reached (group commit grouped its writes
            differently, so it executed fewer statements): that child finished, and was checked.
        random_kills: random-moment kills that hit a running child.
        children: child processes started, the fault-free one included.
        violations: everything that broke (empty when :func:`sweep_sigkill` returns).
        result: the fault-free run's result (as JSON).
        error: the fault-free run's failure (``"ErrorType: node"``), if it failed.
        elapsed: seconds the sweep took.
    """

    workflow: str
    statements: int = 0
    statement_kinds: list[str] = field(default_factory=list)
    kills: int = 0
    statement_kills: list[int] = field(default_factory=list)
    finished_first: list[int] = field(default_factory=list)
    random_kills: int = 0
    children: int = 0
    violations: list[str] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    elapsed: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.workflow}: {self.statements} writer statements; {self.kills} SIGKILLs "
            f"({len(self.statement_kills)} at a statement, {self.random_kills} at a random moment), "
            f"{len(self.finished_first)} children finished before their kill statement, {self.children} children, "
            f"{len(self.violations)} violations, {self.elapsed:.1f}s"
        )


@dataclass
class _Baseline:
    result: Any
    error: str | None
    terminal: Any
    elapsed: float
    executions: Counter[str]


class _Child:
    """Starting and waiting for one child process."""

    def __init__(self, ref: str, value_json: str, db: Path, log: Path, timeout: float) -> None:
        self.ref, self.value_json, self.db, self.log, self.timeout = ref, value_json, db, log, timeout
        self.env = dict(os.environ)
        self.env[LOG_ENV] = str(log)
        # The child must import what the parent can (a test module's workflows, say).
        paths = [p or os.getcwd() for p in sys.path]
        if self.env.get("PYTHONPATH"):
            paths.append(self.env["PYTHONPATH"])
        self.env["PYTHONPATH"] = os.pathsep.join(paths)

    def run(self, *, kill_at: int | None = None, kill_after: float | None = None) -> tuple[int, dict[str, Any], str]:
        """Run a child to its end (or its death); return (pid, its JSON outcome or {}, a problem or "")."""
        out = self.db.with_suffix(".out.json")
        out.unlink(missing_ok=True)
        err = self.db.with_suffix(".stderr")
        cmd = [
            sys.executable,
            "-m",
            "durable.testing._child",
            self.ref,
            str(self.db),
            str(out),
            "--input",
            self.value_json,
        ]
        if kill_at is not None:
            cmd += ["--kill-at", str(kill_at)]
        with open(err, "wb") as stderr:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=self.env)
        assert proc.stdout is not None
        with proc.stdout:
            ready = proc.stdout.readline()
            if ready == b"ready\n" and kill_after is not None:
                time.sleep(kill_after)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
        try:
            code = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return proc.pid, {}, f"the child hung for {self.timeout:g}s and was killed"
        if code == -signal.SIGKILL:
            return proc.pid, {}, ""
        if code != 0:
            tail = err.read_text(errors="replace").strip().splitlines()[-5:]
            return proc.pid, {}, f"the child exited with code {code}:\n      " + "\n      ".join(tail)
        return proc.pid, json.loads(out.read_text()), ""


def _outsider(db: Path) -> closing[sqlite3.Connection]:
    """A connection of the parent's own that never writes a row.

    Not ``mode=ro``: a file left by a killed process may need recovery first (a hot rollback
    journal, if the kill hit while the file was being put in WAL mode), and SQLite does that
    recovery, exactly as the next process to open the file would, only on a writable connection.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    return closing(conn)


def _read_events(db: Path) -> list[Event]:
    """The sweep run's committed events, read as an outsider."""
    if not db.exists() or db.stat().st_size == 0:
        return []
    with _outsider(db) as conn:
        try:
            rows = conn.execute(
                "SELECT seq, type, node, attempt, ts, payload FROM events WHERE run_id = ? ORDER BY seq", (_RUN_ID,)
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # killed before the schema was committed
                return []
            raise
    return [decode_event(*row) for row in rows]


def _outside_checks(db: Path) -> list[str]:
    """``integrity_check`` and the run index against the events, read as an outsider."""
    with _outsider(db) as conn:
        problems = []
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"PRAGMA integrity_check: {integrity}")
        row = conn.execute("SELECT status, last_seq FROM runs WHERE run_id = ?", (_RUN_ID,)).fetchone()
        last = conn.execute("SELECT max(seq) FROM events WHERE run_id = ?", (_RUN_ID,)).fetchone()[0]
        if row is None or row[1] != last:
            problems.append(f"the runs index row {row!r} does not match the events (last seq {last})")
        return problems


def _log_lines(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    lines = []
    for line in log.read_text().splitlines():
        node, attempt, pid = line.split()
        lines.append((node, int(attempt), int(pid)))
    return lines


def _terminal(events: list[Event]) -> Any:
    last = events[-1] if events else None
    if isinstance(last, RunCompleted):
        return ("completed", last.result)
    if isinstance(last, RunFailed):
        return ("failed", last.error.type, last.error.node)
    return None


def _clean(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    for suffix in (".log", ".out.json", ".stderr"):
        db.with_suffix(suffix).unlink(missing_ok=True)


def sweep_sigkill(
    workflow_ref: str,
    input: Any = None,
    *,
    db_dir: str | Path,
    kill_at_statements: Iterable[int] | None = None,
    random_kills: int = 0,
    seed: int = 0,
    commit_boundaries: bool = False,
    workers: int = 1,
    timeout: float = 60.0,
    keep_files: bool = False,
) -> SweepReport:
    """Kill a real process running ``workflow_ref`` at every journal statement, resume it, check it.

    First a child process runs the workflow without faults: its result, and ``N``, the number
    of SQL statements it executes on the journal's writer connection once the engine is open
    (creating the schema comes before; only random kills reach it). Then, for each ``k``
    (1 to ``N`` by default), a fresh child runs the workflow on a fresh database and kills
    itself with ``SIGKILL`` as its ``k``-th statement begins; after each ``random_kills``
    child is killed by the parent at a random moment 0 to ``T`` after its start (``T`` the
    fault-free duration), which lands kills inside commits too. A second, fresh child then
    resumes the run to its end. The parent checks, reading the file itself:

    * the journal left by the kill satisfies the journal invariants, and the final journal
      starts with it (nothing committed was lost) and satisfies them too;
    * ``PRAGMA integrity_check`` is ok, and the runs index agrees with the events;
    * the run ends with the fault-free result (or failure);
    * with steps that call :func:`log_execution`: every attempt that executed has its
      ``step_started`` committed, no attempt number executed twice, every completion's
      attempt executed, no node executed more than once more than without the kill, and a
      node whose completion was committed before the kill never executed after it.

    Args:
        workflow_ref: ``"package.module:attribute"`` of a module-level ``Workflow``; the child
            imports it (the parent's ``sys.path`` is passed on in ``PYTHONPATH``).
        input: the run's input (JSON-encodable).
        db_dir: an existing directory for the databases and logs.
        kill_at_statements: the statement numbers to kill at (``None``: every one, 1 to N).
        commit_boundaries: with ``kill_at_statements=None``, kill only as each ``BEGIN`` and
            each ``COMMIT`` begins: just before and just after every commit, which reaches every
            state the file can be in at a fraction of the cost (statements inside a transaction
            all leave the file as it was at its ``BEGIN``).
        random_kills: how many kills at a random moment.
        seed: seeds the random moments.
        workers: children run side by side (each kill case is independent).
        timeout: seconds any one child may take.
        keep_files: keep the databases of cases that passed (those that failed are always kept).

    Returns:
        What was done; ``report.violations`` is empty.

    Raises:
        SweepError: a kill broke a promise (an ``AssertionError``); the message lists every
            problem and a line to reproduce each.
    """
    started = time.perf_counter()
    directory = Path(db_dir)
    if not directory.is_dir():
        raise ValueError(f"db_dir={str(directory)!r} is not a directory; create it first")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    value_json = json.dumps(input)
    report = SweepReport(workflow_ref)
    lock = threading.Lock()

    def child(name: str) -> _Child:
        db = directory / f"{name}.db"
        _clean(db)
        return _Child(workflow_ref, value_json, db, db.with_suffix(".log"), timeout)

    # -- the fault-free run ---------------------------------------------------------------------
    base_child = child("fault-free")
    _, out, problem = base_child.run()
    report.children += 1
    if problem:
        raise SweepError(f"the fault-free child failed, so there is nothing to sweep: {problem}")
    events = _read_events(base_child.db)
    base_problems = journal_violations(events) + _outside_checks(base_child.db)
    if base_problems:
        raise SweepError("the fault-free run already breaks the promises:\n  - " + "\n  - ".join(base_problems))
    kinds: list[str] = out["statements"]
    baseline = _Baseline(
        result=out["result"],
        error=out["error"],
        terminal=_terminal(events),
        elapsed=out["elapsed"],
        executions=Counter(node for node, _, _ in _log_lines(base_child.log)),
    )
    report.statements, report.statement_kinds = len(kinds), kinds
    report.result, report.error = baseline.result, baseline.error
    if not keep_files:
        _clean(base_child.db)

    def case(name: str, repro: str, *, kill_at: int | None = None, kill_after: float | None = None) -> None:
        c = child(name)
        killed_pid, out, problem = c.run(kill_at=kill_at, kill_after=kill_after)
        children = 1
        prefix: list[Event] = []
        done_before: set[str] = set()
        killed = not problem and not out
        if killed:  # look at what the dead child left, then resume in a fresh one
            prefix = _read_events(c.db)
            done_before = {e.node for e in prefix if isinstance(e, StepCompleted)}
            _, out, problem = c.run()
            children += 1
            problem = f"resuming: {problem}" if problem else ""
        problems = [problem] if problem else []
        if prefix:
            problems += [f"after the kill: {p}" for p in journal_violations(prefix)]
        if not problem:
            problems += _final_checks(c, baseline, out, prefix, done_before, killed_pid)
        with lock:
            report.children += children
            if killed:
                report.kills += 1
                if kill_at is not None:
                    report.statement_kills.append(kill_at)
                else:
                    report.random_kills += 1
            elif kill_at is not None and not problem:
                report.finished_first.append(kill_at)
            if problems:
                report.violations.append(
                    f"{name}: " + "\n    ".join(problems) + f"\n    Reproduce with: {repro} (files in {c.db.parent})"
                )
        if not problems and not keep_files:
            _clean(c.db)

    if kill_at_statements is not None:
        ks = list(kill_at_statements)
    elif commit_boundaries:
        ks = [k for k, kind in enumerate(kinds, start=1) if kind in ("BEGIN", "COMMIT")]
    else:
        ks = list(range(1, len(kinds) + 1))
    args = f"{workflow_ref!r}, {input!r}, db_dir=..."
    jobs: list[tuple[str, str, int | None, float | None]] = []
    for k in ks:
        what = kinds[k - 1] if 0 < k <= len(kinds) else "beyond the fault-free count"
        jobs.append((f"kill-at-{k}", f"sweep_sigkill({args}, kill_at_statements=[{k}])  # {what}", k, None))
    rng = random.Random(seed)
    for i in range(random_kills):
        delay = rng.uniform(0, baseline.elapsed)
        repro = (
            f"sweep_sigkill({args}, kill_at_statements=[], random_kills={random_kills}, seed={seed})  "
            f"# kill {i}, {delay * 1000:.1f} ms after start; timing varies from run to run"
        )
        jobs.append((f"random-{i}", repro, None, delay))
    with ThreadPoolExecutor(workers, thread_name_prefix="durable-sweep") as pool:
        for future in [pool.submit(case, name, repro, kill_at=k, kill_after=d) for name, repro, k, d in jobs]:
            future.result()
    report.statement_kills.sort()
    report.finished_first.sort()
    report.violations.sort(key=lambda v: (v.split(":")[0].rsplit("-", 1)[0], int(v.split(":")[0].rsplit("-", 1)[1])))
    report.elapsed = time.perf_counter() - started
    if report.violations:
        raise SweepError(
            f"{len(report.violations)} kill(s) broke a promise ({report.summary()}):\n  "
            + "\n  ".join(report.violations)
        )
    return report


def _final_checks(
    c: _Child, baseline: _Baseline, out: dict[str, Any], prefix: list[Event], done_before: set[str], killed_pid: int
) -> list[str]:
    events = _read_events(c.db)
    problems = journal_violations(events)
    if events[: len(prefix)] != prefix:
        problems.append(f"the {len(prefix)} events committed before the kill are not the start of the final journal")
    problems += _outside_checks(c.db)
    if (out.get("result"), out.get("error")) != (baseline.result, baseline.error):
        problems.append(
            f"the run returned result={out.get('result')!r} error={out.get('error')!r}; "
            f"without the kill: result={baseline.result!r} error={baseline.error!r}"
        )
    if _terminal(events) != baseline.terminal:
        problems.append(f"the journal ends with {_terminal(events)!r}; without the kill: {baseline.terminal!r}")

    lines = _log_lines(c.log)
    started = {(e.node, e.attempt) for e in events if isinstance(e, StepStarted)}
    executed = Counter((node, attempt) for node, attempt, _ in lines)
    for (node, attempt), n in sorted(executed.items()):
        if (node, attempt) not in started:
            problems.append(f"step {node!r} attempt {attempt} executed, but its step_started was never committed")
        if n > 1:
            problems.append(f"step {node!r} attempt {attempt} executed {n} times; attempt numbers are never reused")
    for e in events:
        if isinstance(e, StepCompleted) and baseline.executions[e.node] and (e.node, e.attempt) not in executed:
            problems.append(f"step {e.node!r} completed attempt {e.attempt}, which never executed")
    per_node = Counter(node for node, _, _ in lines)
    for node, n in sorted(per_node.items()):
        if n > baseline.executions[node] + 1:
            problems.append(
                f"step {node!r} executed {n} times; without the kill {baseline.executions[node]}, "
                "and one kill allows one more"
            )
    for node, attempt, pid in lines:
        if node in done_before and pid != killed_pid:
            problems.append(
                f"step {node!r} executed again (attempt {attempt}) after the kill, "
                "though its completion was committed before it"
            )
    return problems


# -- a workflow to try the sweep on ------------------------------------------------------------


@step
def fetch(order: int) -> dict[str, int]:
    """Look the order up."""
    log_execution()
    return {"order": order, "total": 10 * order}


@step(retries=RetryPolicy(max_attempts=3, initial=0.01, max_delay=0.05, jitter=0.0))
def charge(order: dict[str, int]) -> str:
    """Charge the card; the first attempt always fails, so a retry is in every run."""
    log_execution()
    if context().attempt == 1:
        raise ConnectionError("payment gateway timeout")
    return f"rcpt-{order['order']}-{order['total']}"


@step
async def reserve(order: dict[str, int]) -> list[str]:
    """Reserve the items."""
    log_execution()
    return [f"item-{order['order']}-{i}" for i in range(3)]


@step
def pack(items: list[str]) -> str:
    """Pack the reserved items."""
    log_execution()
    return "+".join(items)


@step
def summarize(parts: dict[str, str]) -> str:
    """Join the lanes' outcomes."""
    log_execution()
    return f"{parts['charge']} | {parts['stock']}"


demo: Workflow = (
    Workflow("sweep-demo").then(fetch).fork().branch(charge).branch(reserve, pack, name="stock").join(summarize)
)
"""Five steps, a fork of two lanes (one of two steps), and a retry: ``durable.testing.sweep:demo``."""
