"""The control commands: ``durable signal | cancel | pause | unpause``, on real journals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import anyio
from click.testing import CliRunner, Result

from durable import Engine, RunCancelled
from durable import events as ev
from durable.cli import cli

try:
    from language_workflows import APPROVAL, NAP
finally:
    sys.path.pop(0)

SCRIPT = Path(__file__).resolve().parents[1] / "language_workflows.py"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", "DURABLE_DB": None})


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def events(db: Path, run_id: str) -> list[str]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT type FROM events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    return [r[0] for r in rows]


def park(db: Path, run_id: str, workflow: object, order: int = 7) -> None:
    """Start a run and leave it parked in the journal, with no engine running it."""

    async def body() -> None:
        async with Engine(db) as engine:
            await engine.start(workflow, order, run_id=run_id)  # type: ignore[arg-type]
            with anyio.fail_after(5):
                while (await engine.state(run_id)).parked() is None:
                    await anyio.sleep(0.01)

    anyio.run(body)


def finish(db: Path, run_id: str, workflow: object) -> object:
    """Recover the run in a fresh engine and return its result (or the exception it raised)."""

    async def body() -> object:
        async with Engine(db) as engine:
            handles = await engine.recover([workflow])  # type: ignore[list-item]
            handle = next(h for h in handles if h.run_id == run_id) if handles else None
            if handle is None:
                return "not resumed"
            with anyio.fail_after(5):
                try:
                    return await handle.result()
                except RunCancelled as exc:
                    return exc

    return anyio.run(body)


# -- signal ----------------------------------------------------------------------------------


def test_signal_wakes_a_run_parked_in_another_process(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), "approve", str(db), "order-7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (db.exists() and "wait_started" in _safe_events(db, "order-7")):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never parked"
            time.sleep(0.05)
        result = invoke("--db", str(db), "signal", "order-7", "approve", "--data", '{"ok": true, "by": "ann"}')
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("sent signal 'approve' to run order-7 (signal 1)")
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert json.loads(out) == 'decision: {"by": "ann", "ok": true}'


def _safe_events(db: Path, run_id: str) -> list[str]:
    try:
        return events(db, run_id)
    except sqlite3.OperationalError:  # the child is still creating the schema
        return []


def test_a_signal_sent_while_no_engine_runs_is_delivered_on_recover(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", APPROVAL)
    result = invoke("--db", str(db), "signal", "r", "approve", "--data", "[1, 2]")
    assert result.exit_code == 0, result.output
    assert finish(db, "r", APPROVAL) == "decision: [1, 2]"


def test_signal_without_data_sends_null(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", APPROVAL)
    assert invoke("--db", str(db), "signal", "r", "approve").exit_code == 0
    assert finish(db, "r", APPROVAL) == "decision: null"


def test_signal_refuses_bad_json_unknown_and_finished_runs(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", APPROVAL)
    bad_json = invoke("--db", str(db), "signal", "r", "approve", "--data", "{ok: yes}")
    assert_one_line_error(bad_json, "--data is not JSON", code=2)
    assert_one_line_error(invoke("--db", str(db), "signal", "nobody", "approve"), "no run with id 'nobody'")
    assert_one_line_error(invoke("--db", str(db), "signal", "r", " "), "must not be empty")
    assert invoke("--db", str(db), "signal", "r", "approve").exit_code == 0
    assert finish(db, "r", APPROVAL) == "decision: null"
    assert_one_line_error(invoke("--db", str(db), "signal", "r", "approve"), "has completed", "no more signals")
    assert_one_line_error(invoke("--db", str(tmp_path / "none.db"), "signal", "r", "x"), "no database at")
    assert not (tmp_path / "none.db").exists()


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_ends_the_run_and_it_is_never_resumed(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", NAP)
    result = invoke("--db", str(db), "cancel", "r", "--reason", "duplicate order")
    assert result.exit_code == 0, result.output
    assert result.stdout == "cancelled run r (duplicate order); it will not be resumed\n"
    assert events(db, "r")[-1] == "run_cancelled"
    assert finish(db, "r", NAP) == "not resumed"

    async def reason() -> str:
        async with Engine(db) as engine:
            last = (await engine.history("r"))[-1]
            assert isinstance(last, ev.RunCancelled)
            return last.reason

    assert anyio.run(reason) == "duplicate order"


def test_cancel_refuses_unknown_and_finished_runs(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", NAP)
    assert_one_line_error(invoke("--db", str(db), "cancel", "nobody"), "no run with id 'nobody'")
    assert invoke("--db", str(db), "cancel", "r").exit_code == 0
    assert_one_line_error(invoke("--db", str(db), "cancel", "r"), "has already cancelled")


# -- pause and unpause -----------------------------------------------------------------------


def test_pause_then_unpause(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", APPROVAL)
    paused = invoke("--db", str(db), "pause", "r", "--reason", "audit")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout == "paused run r; it starts no new node until: durable unpause r\n"
    again = invoke("--db", str(db), "pause", "r")
    assert again.stdout == "run r was already paused; nothing changed\n"
    assert events(db, "r").count("run_paused") == 1
    unpaused = invoke("--db", str(db), "unpause", "r")
    assert unpaused.exit_code == 0, unpaused.output
    assert unpaused.stdout.startswith("unpaused run r; it goes on when an engine resumes it")
    assert invoke("--db", str(db), "unpause", "r").stdout == "run r is not paused; nothing changed\n"
    assert events(db, "r")[-2:] == ["run_paused", "run_unpaused"]
    assert invoke("--db", str(db), "signal", "r", "approve", "--data", "true").exit_code == 0
    assert finish(db, "r", APPROVAL) == "decision: true"


def test_a_paused_run_does_not_go_on_when_recovered(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", APPROVAL)
    assert invoke("--db", str(db), "pause", "r").exit_code == 0
    assert invoke("--db", str(db), "signal", "r", "approve", "--data", "1").exit_code == 0

    async def recover_briefly() -> str:
        async with Engine(db) as engine:
            await engine.recover([APPROVAL])
            await anyio.sleep(0.2)
            return (await engine.state("r")).status

    assert anyio.run(recover_briefly) == "running"
    assert "signal_received" not in events(db, "r")
    assert invoke("--db", str(db), "unpause", "r").exit_code == 0
    assert finish(db, "r", APPROVAL) == "decision: 1"


def test_pause_and_unpause_refuse_unknown_and_finished_runs(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    park(db, "r", APPROVAL)
    for command in ("pause", "unpause"):
        assert_one_line_error(invoke("--db", str(db), command, "nobody"), "no run with id 'nobody'")
    assert invoke("--db", str(db), "cancel", "r").exit_code == 0
    for command in ("pause", "unpause"):
        assert_one_line_error(invoke("--db", str(db), command, "r"), "has already cancelled")


def test_the_commands_are_listed_in_help() -> None:
    result = invoke("--help")
    for command in ("signal", "cancel", "pause", "unpause"):
        assert f"  {command} " in result.stdout
    assert "--data JSON" in invoke("signal", "--help").stdout
