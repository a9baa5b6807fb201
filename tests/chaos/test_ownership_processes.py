"""Every run has exactly one owner, checked with real processes on real SQLite files.

Each child process runs ``tests/ownership_workflows.py``; its steps log every execution to
a side-effect file (fsync'ed), and the tests check from outside: that file, the journal read
with a connection of our own, and what each process printed and exited with.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "ownership_workflows.py"
TIMEOUT = 60.0
STEPS = ["first", "second", "third", "last"]
RESULT = "result 104"  # ((1 + 1) * 2 + 100)


def _env(effects: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, OWNERSHIP_EFFECTS=str(effects), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def spawn(effects: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(effects, **env),
    )


@contextmanager
def killed_at_exit(procs: list[subprocess.Popen[str]]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()  # reaps it and closes its pipes


def effects_of(effects: Path) -> list[dict[str, Any]]:
    if not effects.exists():
        return []
    return [json.loads(line) for line in effects.read_text().splitlines() if line.strip()]


def executions(effects: Path, run_id: str) -> Counter[str]:
    """How many times each step of the run was entered."""
    return Counter(e["node"] for e in effects_of(effects) if e["run"] == run_id and e["tag"] == "start")


def returns(effects: Path, run_id: str) -> Counter[str]:
    return Counter(e["node"] for e in effects_of(effects) if e["run"] == run_id and e["tag"] == "")


def query(db: Path, sql: str, *params: Any) -> list[Any]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def events(db: Path, run_id: str) -> list[tuple[str, str | None]]:
    try:
        rows = query(db, "SELECT type, node FROM events WHERE run_id = ? ORDER BY seq", run_id)
    except sqlite3.OperationalError:
        return []  # the schema is not there yet
    return [(t, n) for t, n in rows]


def finished(db: Path, run_id: str) -> bool:
    found = events(db, run_id)
    return bool(found) and found[-1][0] == "run_completed"


def wait_for(what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def lease_pid(db: Path, run_id: str) -> int | None:
    try:
        rows = query(db, "SELECT lease_pid FROM runs WHERE run_id = ? AND status = 'running'", run_id)
    except sqlite3.OperationalError:
        return None  # the schema is not there yet
    return rows[0][0] if rows else None


def in_step(db: Path, run_id: str) -> str | None:
    """The node whose step_started is the run's last event, if any."""
    try:
        rows = query(db, "SELECT type, node FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", run_id)
    except sqlite3.OperationalError:
        return None
    return rows[0][1] if rows and rows[0][0] == "step_started" else None


def outputs(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=TIMEOUT)
        out.append((p.returncode, stdout, stderr))
    return out


def check_journal(db: Path, run_id: str) -> None:
    """The journal is consistent: one run_started, each step completed once, the run completed once."""
    types = events(db, run_id)
    assert [t for t, _ in types].count("run_started") == 1
    completed = Counter(n for t, n in types if t == "step_completed")
    assert completed == Counter(STEPS), types
    assert types[-1][0] == "run_completed"
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"


# -- N processes run the same run id ---------------------------------------------------------


@pytest.mark.parametrize("ttl", [None, "30"], ids=["durable.run", "engine.run"])
def test_n_processes_running_one_run_id_execute_each_step_once_and_all_get_the_result(
    tmp_path: Path, ttl: str | None
) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    procs = [spawn(effects, "run", str(db), "order-1", *([ttl] if ttl else [])) for _ in range(4)]
    with killed_at_exit(procs):
        results = outputs(procs)
    for code, out, err in results:
        assert code == 0, (out, err)
        assert json.loads(out)["result"] == RESULT
        assert "Traceback" not in err and "SeqConflict" not in err
    assert executions(effects, "order-1") == Counter(STEPS)  # exactly once each: no crash hit them
    check_journal(db, "order-1")


def test_killing_the_owner_hands_the_run_to_a_waiting_caller_at_once(tmp_path: Path) -> None:
    """Three processes run one id; the owner is SIGKILLed mid-step twice; the survivors finish it.

    The lease lasts 600 s: the takeover happens because the owner's pid is gone on this host,
    not because its lease expired.
    """
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    procs = [spawn(effects, "run", str(db), "order-2", "600") for _ in range(3)]
    by_pid = {p.pid: p for p in procs}
    kills: list[str] = []
    with killed_at_exit(procs):
        for _ in range(2):
            wait_for("a step is in flight", lambda: in_step(db, "order-2") is not None)
            owner = lease_pid(db, "order-2")
            assert owner in by_pid
            node = in_step(db, "order-2")
            assert node is not None
            by_pid[owner].send_signal(signal.SIGKILL)
            by_pid[owner].wait()
            kills.append(node)

            def taken_over(dead: int = owner) -> bool:
                return lease_pid(db, "order-2") not in (None, dead) or finished(db, "order-2")

            wait_for("another process owns the run", taken_over, timeout=30)  # long before the 600 s lease expires
        survivors = [p for p in procs if p.poll() is None or p.returncode == 0]
        results = outputs(survivors)
    assert len(survivors) == 1
    for code, out, err in results:
        assert code == 0, (out, err)
        assert json.loads(out)["result"] == RESULT
    ran = executions(effects, "order-2")
    for s in STEPS:  # at most once more than the crashes that hit it
        assert 1 <= ran[s] <= 1 + kills.count(s), (ran, kills)
    assert returns(effects, "order-2")[STEPS[-1]] >= 1
    check_journal(db, "order-2")
    assert query(db, "SELECT takeovers FROM runs WHERE run_id = 'order-2'")[0][0] == 2


def test_an_owner_on_another_host_is_taken_over_when_its_lease_expires(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    elsewhere = spawn(effects, "run", str(db), "order-3", "1.5", DURABLE_HOST="other-host")
    with killed_at_exit([elsewhere]):
        wait_for("the other host is in a step", lambda: in_step(db, "order-3") is not None)
        elsewhere.send_signal(signal.SIGKILL)
        elsewhere.wait()
        killed_in = in_step(db, "order-3")
        assert query(db, "SELECT lease_host FROM runs WHERE run_id = 'order-3'")[0][0] == "other-host"
        here = spawn(effects, "run", str(db), "order-3", "30")
        with killed_at_exit([here]):
            ((code, out, err),) = outputs([here])
    assert code == 0, (out, err)
    assert json.loads(out)["result"] == RESULT
    ran = executions(effects, "order-3")
    # the step in flight at the kill runs again (once, or twice if its code had started); the others once
    assert all(ran[s] in ((1, 2) if s == killed_in else (1,)) for s in STEPS), (ran, killed_in)
    check_journal(db, "order-3")


# -- a worker and a plain engine on one file --------------------------------------------------


def test_a_worker_never_claims_a_run_that_a_plain_engine_executes(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    engine = spawn(effects, "run", str(db), "order-4", "30")
    worker = subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", "--db", str(db), "--workflows", "ownership_workflows:WORKFLOWS"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(effects, PYTHONPATH=str(SCRIPT.parent)),
    )  # fmt: skip
    with killed_at_exit([engine, worker]):
        ((code, out, err),) = outputs([engine])
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=TIMEOUT)
    assert code == 0, (out, err)
    assert json.loads(out)["result"] == RESULT
    pids = {e["pid"] for e in effects_of(effects)}
    assert pids == {engine.pid}  # the worker ran nothing of it
    assert executions(effects, "order-4") == Counter(STEPS)
    check_journal(db, "order-4")


# -- recover() in two processes ---------------------------------------------------------------


def test_recover_in_two_processes_resumes_each_run_once(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    starter = spawn(effects, "start-many", str(db), "6", OWNERSHIP_STEP_SECONDS="0.2")
    with killed_at_exit([starter]):
        assert starter.stdout is not None and starter.stdout.readline().strip() == "started"
        wait_for("every run is in a step", lambda: all(in_step(db, f"many-{i}") for i in range(6)))
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    procs = [spawn(effects, "recover", str(db), OWNERSHIP_STEP_SECONDS="0.2") for _ in range(2)]
    with killed_at_exit(procs):
        results = outputs(procs)
    reports = []
    for code, out, err in results:
        assert code == 0, (out, err)
        reports.append(json.loads(out))
    resumed = [set(r["resumed"]) for r in reports]
    assert not resumed[0] & resumed[1]  # no run resumed by both
    assert resumed[0] | resumed[1] == {f"many-{i}" for i in range(6)}
    for r, mine in zip(reports, resumed, strict=True):  # what one did not resume, it says why
        assert all(reason == "owned" for run, reason in r["skipped"].items() if run.startswith("many-"))
        assert set(r["skipped"]) | mine >= set()  # (a run already finished when it looked is not listed)
    for i in range(6):
        ran = executions(effects, f"many-{i}")
        assert ran["first"] in (1, 2) and all(ran[s] == 1 for s in STEPS[1:]), ran  # the crash hit "first"
        check_journal(db, f"many-{i}")


# -- control from another process --------------------------------------------------------------


def test_a_cancel_from_another_process_during_the_last_step_ends_the_run_cancelled(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    owner = spawn(effects, "run", str(db), "order-5", "30", OWNERSHIP_STEP_SECONDS="0.6")
    with killed_at_exit([owner]):
        wait_for("the last step runs", lambda: in_step(db, "order-5") == "last")
        cancel = subprocess.run(
            [sys.executable, "-m", "durable", "cancel", "order-5", "--db", str(db), "--reason", "too late?"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        ((code, out, err),) = outputs([owner])
    assert cancel.returncode == 0, cancel.stderr
    assert code == 1 and json.loads(out)["error"] == "RunCancelled", (out, err)
    types = events(db, "order-5")
    assert types[-1][0] == "run_cancelled"  # not completed: the cancel was not lost
    assert query(db, "SELECT status, lease_owner FROM runs WHERE run_id = 'order-5'")[0] == ("cancelled", None)


def test_cancelling_a_parent_from_the_cli_stops_its_running_child(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    owner = spawn(effects, "family", str(db), OWNERSHIP_STEP_SECONDS="0.05", OWNERSHIP_BLOCK_SECONDS="1.5")
    with killed_at_exit([owner]):
        wait_for("the child is in its step", lambda: in_step(db, "parent/kid") == "block")
        cancel = subprocess.run(
            [sys.executable, "-m", "durable", "cancel", "parent", "--db", str(db)],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        ((code, out, err),) = outputs([owner])
    assert cancel.returncode == 0, cancel.stderr
    assert code == 0, (out, err)
    assert "cancelled" in json.loads(out.splitlines()[-1])
    status = dict(query(db, "SELECT run_id, status FROM runs"))
    assert status == {"parent": "cancelled", "parent/kid": "cancelled"}
    assert returns(effects, "parent")["third"] == 0


def test_cancelling_a_parent_nobody_executes_cancels_its_child(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    owner = spawn(effects, "family", str(db), OWNERSHIP_STEP_SECONDS="0.05")
    with killed_at_exit([owner]):
        wait_for("the child is in its step", lambda: in_step(db, "parent/kid") == "block")
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    cancel = subprocess.run(
        [sys.executable, "-m", "durable", "cancel", "parent", "--db", str(db)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert cancel.returncode == 0, cancel.stderr
    status = dict(query(db, "SELECT run_id, status FROM runs"))
    assert status == {"parent": "cancelled", "parent/kid": "cancelled"}


# -- stopping cleanly ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "code"), [("KeyboardInterrupt", 130), ("SystemExit", 3)])
def test_an_interrupt_inside_a_step_stops_the_run_as_a_crash_would(tmp_path: Path, kind: str, code: int) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    proc = spawn(effects, "interrupt", str(db), "job", OWNERSHIP_INTERRUPT=kind, OWNERSHIP_STEP_SECONDS="0")
    with killed_at_exit([proc]):
        ((rc, out, err),) = outputs([proc])  # returns: the interpreter does not hang at exit
    assert rc == code
    assert err.strip() == "run 'job' interrupted during step 'interrupted'; run the same command again to resume"
    assert events(db, "job")[-1] == ("step_started", "interrupted")  # nothing more was written
    again = spawn(effects, "interrupt", str(db), "job", OWNERSHIP_STEP_SECONDS="0")
    with killed_at_exit([again]):
        ((rc, out, err),) = outputs([again])
    assert rc == 0, err
    assert out.strip() == "103"
    assert executions(effects, "job") == Counter({"first": 1, "interrupted": 2, "third": 1})


def test_ctrl_c_during_durable_run_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    proc = spawn(effects, "interrupt", str(db), "job", OWNERSHIP_INTERRUPT="sleep", OWNERSHIP_STEP_SECONDS="0")
    with killed_at_exit([proc]):
        wait_for("the step runs", lambda: in_step(db, "job") == "interrupted")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)  # impatient users press it twice
        ((rc, _, err),) = outputs([proc])
    assert rc == 130
    assert err.strip() == "run 'job' interrupted during step 'interrupted'; run the same command again to resume"


# -- the long sweep: many callers, random kills -------------------------------------------------

SLOW = os.environ.get("DURABLE_SLOW") == "1"


@pytest.mark.parametrize("rounds", [20 if SLOW else 2])
def test_callers_of_one_run_id_under_random_sigkills(tmp_path: Path, rounds: int) -> None:
    """Rounds of 4 processes running one run id; the current owner is SIGKILLed 0 to 3 times.

    Checked from outside in every round: each step ran at most once more than the kills that
    hit it while it was in flight, each surviving caller printed the one result, the journal
    is consistent. The figures are printed (``-s``); docs/semantics.md quotes a run of them.
    """
    seed = int(os.environ.get("DURABLE_OWNERSHIP_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    totals = Counter[str]()
    started = time.monotonic()
    for r in range(rounds):
        db, effects, run_id = tmp_path / f"r{r}.db", tmp_path / f"r{r}.log", f"order-{r}"
        step_seconds = rng.choice(["0.05", "0.15", "0.3"])
        procs = [spawn(effects, "run", str(db), run_id, "600", OWNERSHIP_STEP_SECONDS=step_seconds) for _ in range(4)]
        by_pid = {p.pid: p for p in procs}
        hit: list[str] = []
        with killed_at_exit(procs):
            for _ in range(rng.randint(0, 3)):
                wait_for(
                    "a step is in flight",
                    lambda db=db, run_id=run_id: in_step(db, run_id) is not None or finished(db, run_id),
                )
                time.sleep(rng.uniform(0, float(step_seconds)))
                owner, node = lease_pid(db, run_id), in_step(db, run_id)
                if owner not in by_pid or by_pid[owner].poll() is not None:
                    break  # finished meanwhile
                by_pid[owner].send_signal(signal.SIGKILL)
                by_pid[owner].wait()
                if node is not None:
                    hit.append(node)
                totals["kills"] += 1
            alive = [p for p in procs if p.returncode is None]
            results = outputs(alive)
        assert alive, "every caller was killed"
        for code, out, err in results:
            assert code == 0, (seed, r, out, err)
            assert json.loads(out)["result"] == RESULT, (seed, r)
        ran = executions(effects, run_id)
        for s in STEPS:
            assert 1 <= ran[s] <= 1 + hit.count(s), (seed, r, ran, hit)
        check_journal(db, run_id)
        totals["rounds"] += 1
        totals["callers"] += len(procs)
        totals["results"] += len(results)
        totals["step executions"] += sum(ran.values())
        totals["steps"] += len(STEPS)
        totals["takeovers"] += query(db, "SELECT takeovers FROM runs WHERE run_id = ?", run_id)[0][0]
    figures = ", ".join(f"{k}: {v}" for k, v in totals.items())
    print(f"\nownership sweep (seed {seed}): {figures}, violations: 0, {time.monotonic() - started:.1f} s")


# -- visible ownership ------------------------------------------------------------------------


def durable_cli(db: Path, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable", *args, "--db", str(db)],
        capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, COLUMNS=str(columns)),
    )  # fmt: skip


def test_runs_and_show_say_who_owns_a_running_run(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    owner = spawn(effects, "run", str(db), "order-6", "30", OWNERSHIP_STEP_SECONDS="2")
    with killed_at_exit([owner]):
        wait_for("a step is in flight", lambda: in_step(db, "order-6") is not None)
        host = query(db, "SELECT lease_host FROM runs WHERE run_id = 'order-6'")[0][0]
        runs = durable_cli(db, "runs")
        show = durable_cli(db, "show", "order-6")
        busy = durable_cli(db, "pause", "order-6")
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        after = durable_cli(db, "show", "order-6")
    assert runs.returncode == 0, runs.stderr
    row = next(line for line in runs.stdout.splitlines() if "order-6" in line)
    assert f"pid {owner.pid}@{host} until" in row
    assert show.returncode == 0, show.stderr
    assert f"pid {owner.pid}@{host} until" in show.stdout
    assert "its owner is executing it" in show.stdout and "resume it with" not in show.stdout
    assert busy.returncode == 0, busy.stderr
    assert busy.stdout.startswith(f"asked pid {owner.pid}@{host}, which executes run order-6, to pause it")
    assert after.returncode == 0, after.stderr
    assert f"pid {owner.pid}@{host}, gone" in after.stdout and "resume it with" in after.stdout
