"""``durable submit``, ``durable wait`` (CliRunner) and ``durable worker`` (a real process, stopped by SIGTERM)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner, Result

from durable import Worker, Workflow
from durable.cli import cli

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
try:
    import worker_workflows as ww
finally:
    sys.path.pop(0)

TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(TESTS))  # --workflows worker_workflows:... resolves as in a worker process
    monkeypatch.setenv(ww.LOG_ENV, str(tmp_path / "effects.log"))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"DURABLE_DB": None})


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def drain(db: Path, *workflows: Workflow) -> None:
    """Run an in-process worker until every submitted run has ended."""

    async def main() -> None:
        w = Worker(db, list(workflows), poll_interval=0.02, synchronous="NORMAL")
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.run)
                while True:
                    await anyio.sleep(0.02)
                    if w.engine is not None and not await w.engine.list_runs(status="running"):
                        break
                w.stop()

    anyio.run(main)


def test_submit_prints_the_run_id_and_wait_prints_the_result(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    submitted = invoke(
        "--db", db, "submit", "--workflows", "worker_workflows:pipeline", "--input", "3", "--run-id", "p3"
    )
    assert submitted.exit_code == 0, submitted.output
    assert submitted.stdout == "p3\n"
    fresh = invoke("submit", "--db", db, "--workflows", "worker_workflows:receipt", "--input", "5")
    assert fresh.exit_code == 0, fresh.output
    fresh_id = fresh.stdout.strip()
    assert len(fresh_id) == 32

    not_yet = invoke("--db", db, "wait", "p3", "--timeout", "0.2")
    assert_one_line_error(not_yet, "'p3' has not ended after 0.2s")

    drain(Path(db), ww.pipeline, ww.receipt)
    waited = invoke("--db", db, "wait", "p3")
    assert waited.exit_code == 0, waited.output
    assert waited.stdout == "8\n"
    assert invoke("--db", db, "wait", fresh_id).stdout == '{"order": 5, "total": 10}\n'


def test_wait_for_a_failed_run_exits_1_with_its_error(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    assert (
        invoke(
            "--db", db, "submit", "--workflows", "worker_workflows:broken", "--run-id", "b", "--input", "1"
        ).exit_code
        == 0
    )
    drain(Path(db), ww.broken)
    assert_one_line_error(invoke("--db", db, "wait", "b"), "run 'b' failed at step 'unreliable'", "card 2 declined")


def test_wait_refusals(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    assert_one_line_error(invoke("--db", db, "wait", "x"), "no database at")
    assert not Path(db).exists()  # wait creates nothing
    invoke("--db", db, "submit", "--workflows", "worker_workflows:pipeline", "--run-id", "p")
    assert_one_line_error(invoke("--db", db, "wait", "nobody"), "no run with id 'nobody'")


def test_submit_refusals(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    ref = "worker_workflows:pipeline"
    assert_one_line_error(
        invoke("--db", db, "submit", "--workflows", ref, "--input", "{oops"), "--input is not JSON", code=2
    )
    assert_one_line_error(
        invoke("--db", db, "submit", "--workflows", ref, "--run-id", " "), "must not be empty", code=2
    )
    assert_one_line_error(
        invoke("--db", str(tmp_path / "nope" / "x.db"), "submit", "--workflows", ref), "does not exist"
    )
    assert_one_line_error(invoke("--db", db, "submit", "--workflows", "worker_workflows:nothing"), "no attribute")
    two = ("--workflows", ref, "--workflows", "worker_workflows:other")
    assert_one_line_error(invoke("--db", db, "submit", *two), "define 2 workflows (other, pipeline)", "--workflow NAME")
    assert_one_line_error(invoke("--db", db, "submit", *two, "--workflow", "chaos"), "no workflow named 'chaos'")
    versions = ("--workflows", "worker_workflows:pricing_v1", "--workflows", "worker_workflows:pricing_v2")
    assert_one_line_error(
        invoke("--db", db, "submit", *versions, "--workflow", "pricing"), "2 definitions (versions 1, 2)"
    )
    picked = invoke("--db", db, "submit", *two, "--workflow", "other", "--run-id", "o")
    assert picked.exit_code == 0 and picked.stdout == "o\n"
    assert_one_line_error(invoke("--db", db, "submit", *two, "--workflow", "other", "--run-id", "o"), "already exists")


def test_worker_refusals(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    ref = ("--workflows", "worker_workflows:pipeline")
    for bad in ("pipeline", "pipeline=0", "=3", "pipeline=x"):
        result = invoke("--db", db, "worker", *ref, "--workflow-concurrency", bad)
        assert_one_line_error(result, f"--workflow-concurrency {bad!r}", "NAME=N")
    assert_one_line_error(invoke("--db", db, "worker", "--workflows", "no_such_module:x"), "no module named")
    assert invoke("--db", db, "worker", *ref, "--concurrency", "0").exit_code == 2  # a usage error, click's
    assert not Path(db).exists()


# -- a real worker process ------------------------------------------------------------------


def child_env(log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env[ww.LOG_ENV] = str(log)
    env.pop("DURABLE_DB", None)
    return env


def status_of(db: Path, run_id: str) -> tuple[str, int]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        started = conn.execute(
            "SELECT count(*) FROM events WHERE run_id = ? AND type = 'step_started'", (run_id,)
        ).fetchone()[0]
    return status, started


def test_the_worker_process_drains_on_sigterm_and_exits_0(tmp_path: Path) -> None:
    db, log = tmp_path / "w.db", tmp_path / "effects.log"
    assert (
        invoke(
            "--db", str(db), "submit", "--workflows", "worker_workflows:slow", "--input", "1.0", "--run-id", "s"
        ).exit_code
        == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "durable", "--db", str(db), "worker", "--workflows", "worker_workflows:slow", "-v"],
        env=child_env(log),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while status_of(db, "s")[1] == 0:  # until the step has started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never started the run"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # mid-step: the run finishes before the worker exits
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert status_of(db, "s") == ("completed", 1)
    lines = out.splitlines()
    assert lines[0].startswith("worker ") and "slow v1; concurrency 8" in lines[0]
    assert lines[1:4] == ["claimed s (slow)", "SIGTERM: draining (up to 10s)", "completed s"]
    assert lines[4].endswith("stopped: 1 claimed, 1 finished, 0 failed for too many takeovers")
    assert "Traceback" not in err
    assert [(r, n, a) for r, n, a, _ in ww.read_log(log)] == [("s", "slow_first_attempt", 1)]


def test_a_second_sigterm_stops_at_once_and_hands_the_run_back(tmp_path: Path) -> None:
    db, log, out = tmp_path / "w.db", tmp_path / "effects.log", tmp_path / "worker.out"
    submitted = invoke(
        "--db", str(db), "submit", "--workflows", "worker_workflows:slow", "--input", "60", "--run-id", "s"
    )
    assert submitted.exit_code == 0
    command = [sys.executable, "-m", "durable", "--db", str(db), "worker", "--workflows", "worker_workflows:slow"]
    options = ["--lease-ttl", "60", "--drain-timeout", "60", "-v"]  # only a release can free the run in time
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [*command, *options], env=child_env(log), stdout=stdout, stderr=subprocess.PIPE, text=True
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while status_of(db, "s")[1] == 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # drain: the step would take a minute ...
        while "draining" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # ... so stop now
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "SIGTERM again: stopping without draining" in err
    assert out.read_text().splitlines()[-2] == "stopped s"
    run = ww.read_journal(db)["s"]
    assert (run["status"], run["lease_owner"], run["takeovers"]) == ("running", None, 0)  # handed back at once
