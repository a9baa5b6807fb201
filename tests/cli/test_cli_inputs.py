"""The CLI's boundary, fuzzed: whatever the user types, one line on stderr, no traceback, nothing changed.

Malformed input (not JSON, too deep, not valid Unicode, not a run document) exits with
status 2; well-formed input the journal refuses (an unknown run, a finished one) with 1.
Either way the journal is exactly as it was, and no file is created.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable import Engine, Workflow, step
from durable.cli import cli

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@step
def double(x: int) -> int:
    return x * 2


MATH = Workflow("math").then(double)
APPROVAL = Workflow("approval").then(double).wait_for("approve")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("journal") / "runs.db"
    assert durable.run(MATH, 2, run_id="done", db=path, synchronous="NORMAL") == 4
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", "DURABLE_DB": None})


def contents(db: Path) -> tuple[list[Any], list[Any], list[Any]]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return (
            conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall(),
            conn.execute("SELECT * FROM events ORDER BY run_id, seq").fetchall(),
            conn.execute("SELECT * FROM signals ORDER BY id").fetchall(),
        )


def assert_refused(result: Result, codes: tuple[int, ...] = (1, 2)) -> None:
    assert result.exit_code in codes, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no crash
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    lines[0].encode("utf-8")  # printable whatever the input held


_any_text = st.text(alphabet=st.characters(codec=None, blacklist_categories=()), min_size=1, max_size=12)


@SETTINGS
@given(run_id=_any_text.filter(lambda t: t not in ("done",) and not t.startswith("-")))
def test_any_run_id_is_refused_on_one_line_and_changes_nothing(db: Path, run_id: str) -> None:
    before = contents(db)
    for command in (["show"], ["history"], ["timeline"], ["state"], ["export"], ["signals"], ["cancel"],
                    ["signal", "__RUN__", "approve"]):  # fmt: skip
        args = [a.replace("__RUN__", run_id) for a in command] if "__RUN__" in command else [*command, run_id]
        assert_refused(invoke("--db", str(db), *args))
    assert contents(db) == before


_json_texts = st.one_of(
    _any_text,
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),  # valid JSON, too deep to store
    st.integers(3000, 100_000).map(lambda n: "[" * n),  # too deep to parse
    st.recursive(st.none() | st.integers() | st.text(max_size=4), lambda x: st.lists(x, max_size=3)).map(json.dumps),
)


@SETTINGS
@given(data=_json_texts)
def test_any_signal_data_or_input_is_refused_on_one_line_and_changes_nothing(
    db: Path, tmp_path: Path, data: str
) -> None:
    before = contents(db)
    assert_refused(invoke("--db", str(db), "signal", "done", "approve", "--data", data))  # a finished run
    assert contents(db) == before
    target = tmp_path / f"{uuid.uuid4().hex}.db"
    submitted = invoke("--db", str(target), "submit", "--workflows", "nosuchmodule:wf", "--input", data)
    assert_refused(submitted)
    assert not target.exists()


_documents = st.one_of(
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=6),
        lambda x: st.lists(x, max_size=3) | st.dictionaries(st.sampled_from(["format", "run_id", "events", "x"]), x),
    ).map(json.dumps),
    st.just('{"format": "durable-run", "version": 1, "run_id": "\\udcff", "events": []}'),
)


@SETTINGS
@given(document=_documents)
def test_any_document_is_refused_on_one_line_and_creates_nothing(tmp_path: Path, document: str) -> None:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    (folder / "run.json").write_text(document, encoding="utf-8", errors="surrogateescape")
    assert_refused(invoke("--db", str(folder / "new.db"), "import", str(folder / "run.json")), codes=(2,))
    assert sorted(p.name for p in folder.iterdir()) == ["run.json"]  # no database left behind


def test_a_document_with_a_string_that_is_not_unicode_leaves_no_database(tmp_path: Path, db: Path) -> None:
    doc = json.loads(invoke("--db", str(db), "export", "done").stdout)
    doc["events"][0]["input"] = "caf\udce9"  # written by hand: a lone surrogate
    (tmp_path / "run.json").write_text(json.dumps(doc))
    result = invoke("--db", str(tmp_path / "new.db"), "import", str(tmp_path / "run.json"))
    assert_refused(result, codes=(2,))
    assert "cannot be stored" in result.stderr
    assert not (tmp_path / "new.db").exists()


def test_a_run_id_that_is_not_utf8_from_a_real_shell(tmp_path: Path, db: Path) -> None:
    """The bytes of a non-UTF-8 argument reach Python as lone surrogates: refused, printed escaped."""
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"durable", b"show", b"caf\xe9", b"--db", str(db).encode()],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().strip() == "error: the run id 'caf\\udce9' is not valid UTF-8; run ids are text"


# -- durable signals -----------------------------------------------------------------------------


def test_signals_lists_a_runs_inbox(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"

    async def scenario() -> None:
        async with Engine(db) as engine:
            handle = await engine.start(APPROVAL, 1, run_id="r")
            await engine.signal("r", "approve", {"by": "ada"})
            assert await handle.result() == {"by": "ada"}

    anyio.run(scenario)
    typo = invoke("--db", str(db), "signal", "r", "aproval")
    assert typo.exit_code == 1 and "has completed" in typo.stderr  # a finished run takes no signal at all
    listed = invoke("--db", str(db), "signals", "r")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if "approve" in line)
    assert '{"by":"ada"}' in row and "consumed" in row


def test_signal_refuses_a_name_no_wait_can_receive_unless_forced(tmp_path: Path) -> None:
    db = tmp_path / "waiting.db"

    async def park() -> None:
        async with Engine(db) as engine:
            await engine.start(APPROVAL, 1, run_id="w")
            with anyio.fail_after(5):
                while (await engine.state("w")).parked() is None:
                    await anyio.sleep(0.01)

    anyio.run(park)
    typo = invoke("--db", str(db), "signal", "w", "aproval")
    assert typo.exit_code == 1
    assert "no wait_for('aproval')" in typo.stderr and "'approve'" in typo.stderr
    forced = invoke("--db", str(db), "signal", "w", "aproval", "--force")
    assert forced.exit_code == 0, forced.output
    listed = invoke("--db", str(db), "signals", "w")
    row = next(line for line in listed.stdout.splitlines() if "aproval" in line)
    assert "pending" in row and "no wait_for has this name" in row


def test_a_corrupt_event_is_one_line_naming_the_run_and_seq(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    assert durable.run(MATH, 2, run_id="r", db=db) == 4
    with closing(sqlite3.connect(db)) as conn:  # damage one payload behind durable's back
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET payload = '{\"output\": ' WHERE run_id = 'r' AND seq = 4")
        conn.commit()
    for command in ("show", "history", "timeline", "state", "export"):
        result = invoke("--db", str(db), command, "r")
        assert_refused(result, codes=(1,))
        assert "run 'r': the event at seq 4 cannot be decoded" in result.stderr
