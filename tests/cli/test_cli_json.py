"""Machine-readable output (--json, one versioned shape per command) and 'durable resume'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
from click.testing import CliRunner, Result

import durable
from durable import Engine, Workflow, step
from durable.cli import cli

TESTS = Path(__file__).resolve().parents[1]


@step
def double(x: int) -> int:
    return x * 2


MATH = Workflow("math").then(double)
WAITS = Workflow("waits").then(double).wait_for("go")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", "DURABLE_DB": None})


def test_runs_show_and_signals_print_one_versioned_json_shape_each(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    assert durable.run(MATH, 2, run_id="done", db=db) == 4

    async def park() -> None:
        async with Engine(db) as engine:
            await engine.start(WAITS, 1, run_id="parked")
            await engine.signal("parked", "go", {"n": 1}, force=False)
            with anyio.fail_after(5):
                while (await engine.state("parked")).status == "running":
                    await anyio.sleep(0.01)

    anyio.run(park)
    runs = json.loads(invoke("--db", str(db), "runs", "--json").stdout)
    assert runs["version"] == 1
    by_id = {r["run_id"]: r for r in runs["runs"]}
    assert by_id["done"]["status"] == "completed" and by_id["done"]["owner"] is None
    assert by_id["done"]["events"] == 5 and by_id["done"]["workflow"] == "math"
    show = json.loads(invoke("--db", str(db), "show", "done", "--json").stdout)
    assert show["version"] == 1 and show["run"]["run_id"] == "done"
    assert show["run"]["state"]["result"] == 4 and show["run"]["state"]["nodes"]["double"]["status"] == "completed"
    signals = json.loads(invoke("--db", str(db), "signals", "parked", "--json").stdout)
    assert signals["version"] == 1
    [sent] = signals["signals"]
    assert (sent["name"], sent["payload"], sent["status"], sent["receivable"]) == ("go", {"n": 1}, "consumed", True)


def test_resume_finishes_a_run_whose_process_was_killed(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    env = dict(os.environ, OWNERSHIP_EFFECTS=str(effects), OWNERSHIP_STEP_SECONDS="0.3", PYTHONPATH=str(TESTS))
    owner = subprocess.Popen(
        [sys.executable, str(TESTS / "ownership_workflows.py"), "run", str(db), "job", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = 60.0
        start = time.monotonic()
        while not effects.exists() or "second" not in effects.read_text():
            assert time.monotonic() - start < deadline and owner.poll() is None
            time.sleep(0.02)
        owner.send_signal(signal.SIGKILL)
    finally:
        owner.communicate()
    resumed = subprocess.run(
        [sys.executable, "-m", "durable", "resume", "job", "--db", str(db), "--workflows", "ownership_workflows:chain"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == "result 104"
    again = invoke("--db", str(db), "resume", "job", "--workflows", "ownership_workflows:chain")
    assert again.exit_code == 0 and json.loads(again.stdout) == "result 104"  # finished: the stored result


def test_resume_refuses_a_run_another_process_owns_and_an_unknown_workflow(tmp_path: Path) -> None:
    db, effects = tmp_path / "app.db", tmp_path / "effects.log"
    env = dict(os.environ, OWNERSHIP_EFFECTS=str(effects), OWNERSHIP_STEP_SECONDS="3", PYTHONPATH=str(TESTS))
    owner = subprocess.Popen(
        [sys.executable, str(TESTS / "ownership_workflows.py"), "run", str(db), "busy", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        start = time.monotonic()
        while not effects.exists():
            assert time.monotonic() - start < 60 and owner.poll() is None
            time.sleep(0.02)
        busy = subprocess.run(
            [sys.executable, "-m", "durable", "resume", "busy", "--db", str(db),
             "--workflows", "ownership_workflows:chain"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        other = subprocess.run(
            [sys.executable, "-m", "durable", "resume", "busy", "--db", str(db),
             "--workflows", "ownership_workflows:family"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    finally:
        owner.kill()
        owner.communicate()
    assert busy.returncode == 1 and f"pid {owner.pid} on" in busy.stderr and len(busy.stderr.splitlines()) == 1
    assert other.returncode == 1 and "is a run of workflow 'chain'" in other.stderr


@step
def download(x: int) -> int:
    return x


def test_an_unknown_node_gets_a_did_you_mean_and_a_natural_order(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    assert durable.run(Workflow("many").then(step(lambda x: list(range(12)), name="items")).map(download), 0,
                       run_id="m", db=db) == list(range(12))  # fmt: skip
    result = invoke("--db", str(db), "history", "m", "--node", "downlaod[1]")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "did you mean 'download[1]'" in result.stderr
    listed = result.stderr.split("its nodes are ")[1]
    assert listed.index("download[2],") < listed.index("download[10]")  # 2 before 10
