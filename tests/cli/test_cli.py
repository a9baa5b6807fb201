"""The command line, on real SQLite journals written by the real engine."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner, Result

import durable
from durable import Engine, RunFailed, Workflow, step
from durable.cli import cli


@step
def double(x: int) -> int:
    return x * 2


@step
def explode(x: int) -> int:
    raise ValueError(f"boom: out of teapots ({x})")


MATH = Workflow("math").then(double)
BREAKER = Workflow("breaker").then(double).then(explode)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A journal holding a completed run ('ok-1', then 'ok-2') and a failed one ('bad-1'), in that order."""
    path = str(tmp_path_factory.mktemp("journal") / "runs.db")
    assert durable.run(MATH, 2, run_id="ok-1", db=path, synchronous="NORMAL") == 4
    assert durable.run(MATH, 5, run_id="ok-2", db=path, synchronous="NORMAL") == 10
    with pytest.raises(RunFailed):
        durable.run(BREAKER, 3, run_id="bad-1", db=path, synchronous="NORMAL")
    return path


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    # A wide terminal, so that no cell of a table is cut; no DURABLE_DB from the outside.
    environment: dict[str, str | None] = {"COLUMNS": "200", "DURABLE_DB": None, **(env or {})}
    return CliRunner().invoke(cli, list(args), env=environment)


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- runs -----------------------------------------------------------------------------------


def test_runs_lists_every_run_with_its_status(db: str) -> None:
    result = invoke("--db", db, "runs")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(("ok-", "bad-"))]
    assert [cells[0] for cells in lines] == ["bad-1", "ok-2", "ok-1"]  # newest first
    rows = {cells[0]: cells for cells in lines}
    assert rows["ok-1"][1:5] == ["math", "1", "completed", "5"]
    assert rows["bad-1"][1:4] == ["breaker", "1", "failed"]


def test_runs_filters_by_status_and_workflow(db: str) -> None:
    failed = invoke("--db", db, "runs", "--status", "failed")
    assert failed.exit_code == 0
    assert "bad-1" in failed.stdout and "ok-1" not in failed.stdout
    math = invoke("--db", db, "runs", "--workflow", "math")
    assert "ok-1" in math.stdout and "ok-2" in math.stdout and "bad-1" not in math.stdout
    none = invoke("--db", db, "runs", "--status", "cancelled")
    assert none.exit_code == 0
    assert none.stdout.strip() == f"no cancelled runs in {db}"


def test_runs_limit_shows_the_newest_and_says_there_may_be_more(db: str) -> None:
    result = invoke("--db", db, "runs", "--limit", "1")
    assert result.exit_code == 0
    assert "bad-1" in result.stdout and "ok-" not in result.stdout
    assert "pass --limit" in result.stdout
    assert invoke("--db", db, "runs", "--limit", "0").exit_code == 2  # click's usage error


def test_runs_on_an_empty_journal_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"

    async def create() -> None:
        async with Engine(path):
            pass

    anyio.run(create)
    result = invoke("--db", str(path), "runs")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"no runs in {path}; 'durable demo")


# -- history --------------------------------------------------------------------------------


def test_history_table_of_a_completed_run(db: str) -> None:
    result = invoke("--db", db, "history", "ok-1")
    assert result.exit_code == 0, result.output
    types = [line.split()[2] for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert types == ["run_started", "step_scheduled", "step_started", "step_completed", "run_completed"]
    assert "output=4" in result.stdout and "result=4" in result.stdout
    assert "math v1 def" in result.stdout


def test_history_table_shows_the_error_of_a_failed_run(db: str) -> None:
    result = invoke("--db", db, "history", "bad-1")
    assert result.exit_code == 0, result.output
    assert "step_failed" in result.stdout and "run_failed" in result.stdout
    assert "ValueError: boom: out of teapots (6)" in result.stdout


def test_history_json_is_the_events(db: str) -> None:
    result = invoke("--db", db, "history", "bad-1", "--json")
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_started" and events[0]["workflow"] == "breaker" and events[0]["input"] == 3
    assert events[-1]["type"] == "run_failed"
    assert events[-1]["error"]["type"] == "ValueError"
    completed = [e for e in events if e["type"] == "step_completed"]
    assert [(e["node"], e["output"]) for e in completed] == [("double", 6)]


# -- state ----------------------------------------------------------------------------------


def test_state_of_a_completed_run(db: str) -> None:
    result = invoke("--db", db, "state", "ok-2")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["run_id"] == "ok-2"
    assert state["status"] == "completed"
    assert state["result"] == 10
    assert state["nodes"]["double"]["status"] == "completed"
    assert state["last_seq"] == 5


def test_state_at_a_seq_is_the_fold_up_to_it(db: str) -> None:
    at_one = json.loads(invoke("--db", db, "state", "bad-1", "--at", "1").stdout)
    assert at_one["status"] == "running" and at_one["last_seq"] == 1
    assert at_one["nodes"]["explode"]["status"] == "not_started"
    at_zero = json.loads(invoke("--db", db, "state", "bad-1", "--at", "0").stdout)
    assert at_zero["status"] == "pending" and at_zero["last_seq"] == 0
    final = json.loads(invoke("--db", db, "state", "bad-1").stdout)
    assert final["status"] == "failed" and final["error"]["type"] == "ValueError"


@pytest.mark.parametrize("at", ["99", "-1"])
def test_state_at_out_of_range_fails_cleanly(db: str, at: str) -> None:
    result = invoke("--db", db, "state", "ok-1", "--at", at)
    assert_one_line_error(result, f"seq {at} is out of range", "use 0 to 5")


def test_state_at_not_a_number_is_a_usage_error(db: str) -> None:
    result = invoke("--db", db, "state", "ok-1", "--at", "last")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["history", "nope"], ["history", "nope", "--json"], ["state", "nope"]])
def test_unknown_run_is_one_line_and_exit_1(db: str, command: list[str]) -> None:
    result = invoke("--db", db, *command)
    assert_one_line_error(result, "no run with id 'nope'", "durable runs")


@pytest.mark.parametrize("command", [["runs"], ["history", "x"], ["state", "x"]])
def test_read_commands_do_not_create_a_database(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "absent.db"
    result = invoke("--db", str(path), *command)
    assert_one_line_error(result, f"no database at {path}", "durable demo")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["runs"], ["state", "x"]])
def test_missing_directory_is_named(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "no" / "such" / "dir" / "j.db"
    result = invoke("--db", str(path), *command)
    assert_one_line_error(result, "does not exist", str(path.parent))
    assert list(tmp_path.iterdir()) == []


def test_demo_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "j.db"
    result = invoke("demo", "--db", str(path))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "does not exist" in errors[0]
    assert not (tmp_path / "no").exists()


def test_empty_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    assert_one_line_error(invoke("--db", str(path), "runs"), "empty file")
    assert path.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine, not durable''s')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p.write_bytes(b"name,qty\nteapot,1\n" * 20), "not a SQLite database"),
        (_foreign_sqlite, "not a durable journal"),
    ],
    ids=["text", "foreign-sqlite"],
)
@pytest.mark.parametrize("command", [["runs"], ["history", "x"], ["state", "x", "--at", "0"], ["demo", "--db"]])
def test_a_file_that_is_not_a_journal_is_left_byte_for_byte(
    tmp_path: Path, make: object, why: str, command: list[str]
) -> None:
    path = tmp_path / "data.db"
    make(path)  # type: ignore[operator]
    before = path.read_bytes()
    args = [*command, str(path)] if command[-1] == "--db" else ["--db", str(path), *command]
    result = invoke(*args)
    assert_one_line_error(result, why, "left untouched")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.db"]  # no -wal or -shm either


# -- where the journal is -------------------------------------------------------------------


def test_durable_db_environment_variable_is_the_default(db: str, tmp_path: Path) -> None:
    result = invoke("runs", env={"DURABLE_DB": db})
    assert result.exit_code == 0, result.output
    assert "ok-1" in result.stdout


def test_without_db_or_environment_the_journal_is_durable_db_in_the_cwd(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = invoke("runs")
    assert missing.exit_code == 1 and "no database at durable.db" in missing.stderr
    (tmp_path / "durable.db").write_bytes(Path(db).read_bytes())
    found = invoke("runs")
    assert found.exit_code == 0, found.output
    assert "bad-1" in found.stdout


def test_subcommand_db_overrides_group_db_and_environment(db: str, tmp_path: Path) -> None:
    elsewhere = str(tmp_path / "elsewhere.db")
    result = invoke("--db", elsewhere, "history", "--db", db, "ok-1", env={"DURABLE_DB": elsewhere})
    assert result.exit_code == 0, result.output
    assert "run_completed" in result.stdout
    assert not Path(elsewhere).exists()


def test_missing_argument_is_a_usage_error() -> None:
    result = invoke("history")
    assert result.exit_code == 2
    assert "Missing argument 'RUN_ID'" in result.stderr
