"""A real crash: SIGKILL a process mid-run, resume in a fresh process, check from the outside.

The child runs ``tests/workflows.py`` (seven steps with a fork), whose steps log every attempt
to a side-effect file. Everything is checked through files only: the SQLite database (with
a connection of our own) and the side-effect log.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows.py"
sys.path.insert(0, str(WORKFLOWS.parent))
try:
    import workflows as wf
finally:
    sys.path.pop(0)

TIMEOUT = 30.0


def _events(db: Path) -> list[tuple[int, str, str | None, int | None, str]]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return conn.execute(
            "SELECT seq, type, node, attempt, payload FROM events WHERE run_id = ? ORDER BY seq", (wf.RUN_ID,)
        ).fetchall()


def _completions(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE type = 'step_completed'").fetchone()[0])
    except sqlite3.OperationalError:  # the child has not created the schema yet
        return -1


def _wait_and_kill(child: subprocess.Popen[str], db: Path, completions: int) -> None:
    """Poll the database (read-only) until ``completions`` step completions are committed, then SIGKILL."""
    deadline = time.monotonic() + TIMEOUT
    conn: sqlite3.Connection | None = None
    try:
        while True:
            if child.poll() is not None:
                pytest.fail(f"the child ended by itself (exit {child.returncode}) before it could be killed")
            if time.monotonic() > deadline:
                pytest.fail("the child made no progress")
            if conn is None and db.exists():
                try:
                    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
                except sqlite3.OperationalError:
                    conn = None
            if conn is not None and _completions(conn) >= completions:
                if completions > 0 or conn.execute("SELECT count(*) FROM events").fetchone()[0] >= 1:
                    break
            time.sleep(0.005)
    finally:
        if conn is not None:
            conn.close()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(TIMEOUT)


def _log(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    return [
        (node, int(attempt), int(pid)) for node, attempt, pid in (line.split() for line in log.read_text().splitlines())
    ]


def _by_node(rows: list[tuple[int, str, str | None, int | None, str]], type_: str) -> set[tuple[str | None, Any]]:
    return {(node, attempt) for _, t, node, attempt, _ in rows if t == type_}


@pytest.mark.parametrize("kill_after", [0, 1, 2, 3, 4, 6])
def test_sigkill_mid_run_then_resume_in_a_fresh_process(tmp_path: Path, kill_after: int) -> None:
    db, log = tmp_path / "crash.db", tmp_path / "effects.log"
    child = subprocess.Popen(
        [sys.executable, str(WORKFLOWS), "start", str(db), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_and_kill(child, db, kill_after)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL

    # What the dead process left: only committed events survive a SIGKILL.
    at_kill = _events(db)
    done_at_kill = {node for node, _ in _by_node(at_kill, "step_completed")}
    assert len(done_at_kill) >= kill_after
    assert not any(t in ("run_completed", "run_failed") for _, t, *_ in at_kill)
    effects_at_kill = _log(log)
    assert {pid for *_, pid in effects_at_kill} <= {child.pid}

    resumed = subprocess.run(
        [sys.executable, str(WORKFLOWS), "resume", str(db), str(log)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == wf.RESULT

    # The journal, checked from the outside.
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status = conn.execute("SELECT status, last_seq FROM runs WHERE run_id = ?", (wf.RUN_ID,)).fetchone()
    final = _events(db)
    seqs = [seq for seq, *_ in final]
    types = [t for _, t, *_ in final]
    assert seqs == list(range(1, len(final) + 1))
    assert final[: len(at_kill)] == at_kill  # the resumed process only appended
    assert types.count("run_started") == 1 and types[0] == "run_started"
    assert sum(t in ("run_completed", "run_failed", "run_cancelled") for t in types) == 1
    assert types[-1] == "run_completed"
    assert json.loads(final[-1][4])["result"] == wf.RESULT
    assert status == ("completed", len(final))
    assert {node for node, _ in _by_node(final, "step_completed")} == set(wf.STEPS)

    # The side effects: once for every step whose completion was committed before the kill,
    # at most twice for the rest, and every attempt that had an effect is in the journal.
    effects = _log(log)
    assert effects[: len(effects_at_kill)] == effects_at_kill
    runs = Counter(node for node, _, _ in effects)
    assert set(runs) == set(wf.STEPS)
    for node in wf.STEPS:
        if node in done_at_kill:
            assert runs[node] == 1, f"{node} ran again although its completion was committed before the kill"
        else:
            assert runs[node] <= 2, f"{node} ran {runs[node]} times"
    resumer = {pid for *_, pid in effects[len(effects_at_kill) :]}
    assert resumer.isdisjoint({child.pid}) and len(resumer) <= 1
    started = _by_node(final, "step_started")
    for node, attempt, _ in effects:
        assert (node, attempt) in started, f"{node} attempt {attempt} had an effect but no committed step_started"
    for node in wf.STEPS:  # a re-run is a new attempt
        attempts = [a for n, a, _ in effects if n == node]
        assert attempts == sorted(set(attempts)), f"{node}: attempts {attempts}"
