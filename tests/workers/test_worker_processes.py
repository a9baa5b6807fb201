"""Worker processes that die: a run that kills every worker that runs it ends failed (max_takeovers).

Real ``durable worker`` processes with a short lease; the run's step SIGKILLs its own process.
Without ``max_takeovers`` such a run would be handed from worker to worker forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from durable.cli import cli

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
try:
    import worker_workflows as ww
finally:
    sys.path.pop(0)

TIMEOUT = 60.0
MAX_TAKEOVERS = 2


def child_env(log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env[ww.LOG_ENV] = str(log)
    env.pop("DURABLE_DB", None)
    return env


def start_worker(db: Path, log: Path) -> subprocess.Popen[str]:
    options = ["--workflows", "worker_workflows:suicidal", "--lease-ttl", "0.5", "--max-takeovers", str(MAX_TAKEOVERS)]
    return subprocess.Popen(
        [sys.executable, "-m", "durable", "--db", str(db), "worker", *options, "-v"],
        env=child_env(log),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_that_kills_its_worker_every_time_fails_after_max_takeovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, log = tmp_path / "w.db", tmp_path / "effects.log"
    monkeypatch.syspath_prepend(str(TESTS))
    runner = CliRunner()
    submitted = runner.invoke(
        cli,
        ["--db", str(db), "submit", "--workflows", "worker_workflows:suicidal", "--input", "1", "--run-id", "victim"],
    )
    assert submitted.exit_code == 0, submitted.output

    deaths: list[int] = []
    deadline = time.monotonic() + TIMEOUT
    proc = start_worker(db, log)
    try:
        while ww.read_journal(db)["victim"]["status"] == "running":
            assert time.monotonic() < deadline, f"the run never ended; deaths: {deaths}"
            if proc.poll() is not None:  # its step killed it: start a replacement, as a supervisor would
                proc.communicate()
                deaths.append(proc.returncode)
                proc = start_worker(db, log)
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    # Claimed MAX_TAKEOVERS + 1 times, each claim killed its worker; the next claim failed the run.
    assert deaths == [-signal.SIGKILL] * (MAX_TAKEOVERS + 1)
    assert proc.returncode == 0, err
    assert "failed victim: TooManyTakeovers (3 > max 2)" in out
    assert out.splitlines()[-1].endswith("stopped: 1 claimed, 0 finished, 1 failed for too many takeovers")

    run = ww.read_journal(db)["victim"]
    assert run["status"] == "failed" and run["takeovers"] == MAX_TAKEOVERS + 1 and run["lease_owner"] is None
    last = run["events"][-1]
    assert last.type == "run_failed" and last.error.type == "TooManyTakeovers"
    assert f"max_takeovers={MAX_TAKEOVERS}" in last.error.message
    executed = [(node, attempt) for _, node, attempt, _ in ww.read_log(log)]
    assert executed == [("add_one", 1)] + [("kill_my_worker", a) for a in range(1, MAX_TAKEOVERS + 2)]
    assert ww.execution_problems({"victim": run}, ww.read_log(log)) == []

    waited = runner.invoke(cli, ["--db", str(db), "wait", "victim"])
    assert waited.exit_code == 1
    assert "run 'victim' failed: TooManyTakeovers: the run's lease expired 3 times" in waited.stderr
