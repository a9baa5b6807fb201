"""The debugging commands (show, history, timeline, state --changes, fork, export, import, check, runs filters).

Every command runs on journals written by the real engine (see tests/debugging_workflows.py):
a completed run with a fork, a run with a retry, a failed run, a fork of it resumed with the
fix, a run stopped mid-step and resumed, and an unfinished fork.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from debugging_workflows import BREAKER, FORKED_STEPS, MODE, make_runs

from durable import Engine, RunInfo, fold
from durable import events as ev
from durable.cli import cli
from durable.cli.render import duration


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("journal") / "runs.db"
    make_runs(path)
    return str(path)


@pytest.fixture
def copy_db(db: str, tmp_path: Path) -> str:
    """A copy of the journal, for the tests that write to it."""
    target = tmp_path / "copy.db"
    shutil.copy(db, target)
    return str(target)


def invoke(*args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
    environment: dict[str, str | None] = {"COLUMNS": "200", "DURABLE_DB": None, **(env or {})}
    return CliRunner().invoke(cli, list(args), env=environment, input=input)


def ok(*args: str, **kwargs: Any) -> str:
    result = invoke(*args, **kwargs)
    assert result.exit_code == 0, result.output
    return result.stdout


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def history_of(path: str, run_id: str) -> list[ev.Event]:
    async def body() -> list[ev.Event]:
        async with Engine(path) as engine:
            return await engine.history(run_id)

    return anyio.run(body)


def row(output: str, seq: int) -> str:
    """The line of a history table for event ``seq``."""
    return next(line for line in output.splitlines() if re.match(rf"\s*{seq}\s", line))


# -- history --------------------------------------------------------------------------------


def test_history_shows_how_long_each_attempt_and_the_run_took(db: str) -> None:
    events = history_of(db, "retry-1")
    out = ok("--db", db, "history", "retry-1")
    started = {(e.node, e.attempt): e.ts for e in events if isinstance(e, ev.StepStarted)}
    ended = [e for e in events if isinstance(e, ev.StepCompleted | ev.StepFailed)]
    assert any(isinstance(e, ev.StepFailed) for e in ended)
    for e in ended:
        took = duration((e.ts - started[(e.node, e.attempt)]).total_seconds())
        assert took in row(out, e.seq).split(), row(out, e.seq)
    last = events[-1]
    assert last.type == "run_completed"
    assert duration((last.ts - events[0].ts).total_seconds()) in row(out, last.seq).split()
    scheduled = next(e for e in events if isinstance(e, ev.StepScheduled))
    assert len(row(out, scheduled.seq).split()) == 5  # seq, time, type, node, attempt: nothing took time
    assert "ConnectionError: gateway busy (retry at" in out


def test_history_errors_are_red_on_a_terminal(db: str) -> None:
    result = invoke("--db", db, "history", "bad-1", env={"FORCE_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    failed_line = next(line for line in result.stdout.splitlines() if "run_failed" in line)
    assert re.search(r"\x1b\[[0-9;]*31m(run_failed|ValueError)", failed_line), failed_line
    completed_line = next(line for line in result.stdout.splitlines() if "step_completed" in line)
    assert "31m" not in completed_line


def test_history_jsonl_is_one_event_per_line_and_equals_json(db: str) -> None:
    lines = ok("--db", db, "history", "done-1", "--jsonl").splitlines()
    parsed = [json.loads(line) for line in lines]
    assert parsed == json.loads(ok("--db", db, "history", "done-1", "--json"))
    assert [e["seq"] for e in parsed] == list(range(1, len(parsed) + 1))
    assert [ev.EVENT_ADAPTER.validate_python(e) for e in parsed] == history_of(db, "done-1")


def test_history_filters_by_node_and_type(db: str) -> None:
    by_node = [
        json.loads(line) for line in ok("--db", db, "history", "bad-1", "--jsonl", "--node", "explode").splitlines()
    ]
    assert {e["node"] for e in by_node} == {"explode"}
    assert [e["type"] for e in by_node].count("step_failed") == 3
    failures = json.loads(ok("--db", db, "history", "bad-1", "--json", "--type", "step_failed", "--type", "run_failed"))
    assert [(e["type"], e.get("attempt")) for e in failures] == [
        ("step_failed", 1),
        ("step_failed", 2),
        ("step_failed", 3),
        ("run_failed", None),
    ]
    both = json.loads(
        ok("--db", db, "history", "done-1", "--json", "--node", "a1", "--node", "b1", "--type", "step_completed")
    )
    assert sorted(e["node"] for e in both) == ["a1", "b1"]
    table = ok("--db", db, "history", "bad-1", "--node", "prep")
    assert "run bad-1: 14 events, 3 shown" in table
    assert "explode" not in table
    # a fork's node filters too, and a node of the definition that never ran gives nothing, not an error
    assert {e["type"] for e in json.loads(ok("--db", db, "history", "done-1", "--json", "--node", "fork-1"))} == {
        "fork_started",
        "branch_completed",
        "fork_joined",
    }
    assert json.loads(ok("--db", db, "history", "bad-1", "--json", "--node", "finish")) == []


def test_history_unknown_type_or_node_is_one_line(db: str) -> None:
    assert_one_line_error(
        invoke("--db", db, "history", "bad-1", "--type", "step_exploded"),
        "unknown event type 'step_exploded'",
        "step_failed",
        "run_started",
    )
    assert_one_line_error(invoke("--db", db, "history", "bad-1", "--node", "nope"), "no node 'nope'", "explode")
    both = invoke("--db", db, "history", "bad-1", "--json", "--jsonl")
    assert both.exit_code == 2 and "not both" in both.stderr


# -- show -----------------------------------------------------------------------------------


def _node_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["node", "status"])
    body = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        body.append(line.strip())
    return body


def _label(line: str) -> str:
    """The node column of a row of the steps table (it may hold spaces: tree glyphs)."""
    statuses = "completed|failed|running|not_started|interrupted|pending|retrying|sleeping|waiting|taken|not taken"
    return re.split(rf"\s+(?=(?:{statuses})\b)", line)[0]


def test_show_lays_out_the_steps_along_the_workflow(db: str) -> None:
    out = ok("--db", db, "show", "done-1")
    assert out.splitlines()[0].split() == ["run", "done-1", "completed"]
    assert re.search(r"workflow\s+forked v1, definition [0-9a-f]{12}\b", out)
    assert re.search(r"result\s+\"total=27\"", out)
    assert re.search(r"finished\s+.* UTC \(took \d+\.\d{3}s\)", out)
    names = [_label(line) for line in _node_lines(out)]
    assert names == [
        "prep",
        "fork-1 (fork)",
        "├─ branch a",
        "│  ├─ a1",
        "│  └─ a2",
        "└─ branch b",
        "└─ b1",
        "combine (join)",
        "finish",
    ]
    for line in _node_lines(out):
        assert "completed" in line
    assert "traceback" not in out and "attempts that failed" not in out


def test_show_a_failed_run_has_the_error_its_attempts_and_the_traceback(db: str) -> None:
    out = ok("--db", db, "show", "bad-1")
    assert out.splitlines()[0].split() == ["run", "bad-1", "failed"]
    assert "error     ValueError at step 'explode': boom: out of teapots (4)" in out
    explode = next(line for line in _node_lines(out) if line.startswith("explode"))
    assert explode.split()[:4] == ["explode", "failed", "3", "3"]
    assert next(line for line in _node_lines(out) if line.startswith("finish")).split() == ["finish", "not_started"]
    troubles = re.findall(r"explode\s+(\d)\s+\+\S+\s+(retried|failed)\s+ValueError: boom: out of teapots \(4\)", out)
    assert troubles == [("1", "retried"), ("2", "retried"), ("3", "failed")]
    trace = out[out.index("traceback of the failure") :]
    assert "Traceback (most recent call last)" in trace
    assert 'raise ValueError(f"boom: out of teapots ({x})")' in trace
    assert trace.rstrip().endswith("ValueError: boom: out of teapots (4)")


def test_show_a_fork_and_an_unfinished_run(db: str) -> None:
    fixed = ok("--db", db, "show", "bad-1-fixed")
    assert re.search(r"forked from\s+run bad-1 at seq 4 \(its events 2-4 were copied\)", fixed)
    assert "completed" in fixed.splitlines()[0]
    later = ok("--db", db, "show", "bad-1-later")
    assert later.splitlines()[0].split() == ["run", "bad-1-later", "running"]
    assert re.search(r"last event\s+.*\(seq 4\); the run has not finished", later)
    assert "unfinished" in later and "engine.resume" in later
    assert "result" not in later and "traceback" not in later


def test_show_a_crashed_then_resumed_run_names_the_cut_attempt(db: str) -> None:
    out = ok("--db", db, "show", "crash-1")
    hold = next(line for line in _node_lines(out) if _label(line) == "│  └─ hold")
    assert hold.split()[3:6] == ["completed", "2", "0"]  # two attempts, no failure
    assert re.search(r"hold\s+1\s+\+\S+\s+ran again\s+no ending event: its process stopped", out)


def test_show_the_rest_of_the_language(db: str) -> None:
    out = ok("--db", db, "show", "lang-1")
    rows = {_label(line).strip(): line for line in _node_lines(out)}
    assert list(rows)[:6] == ["prep", "route-1 (route)", "├─ branch even", "│  └─ half", "└─ branch odd", "└─ triple"]
    assert rows["├─ branch even"].split()[-1] == "taken" and rows["└─ branch odd"].split()[-2:] == ["not", "taken"]
    assert rows["└─ triple"].split() == ["└─", "triple", "not_started"]
    assert rows["loop-1 (loop)"].split()[-2:] == ["3", "iterations"]
    assert [name for name in rows if name.startswith("countdown#")] == ["countdown#1", "countdown#2", "countdown#3"]
    assert rows["square (map)"].split()[-2:] == ["3", "items"]
    assert [name for name in rows if name.startswith("square[")] == ["square[0]", "square[1]", "square[2]"]
    assert "run lang-1/kid, workflow kid v1" in rows["kid (child)"]
    assert "sleep 0.020s" in rows["sleep-1 (sleep)"] and "signal 'go'" in rows["go (wait)"]
    headers = ("└─ triple", "└─ body", "└─ countdown", "├─ branch even", "└─ branch odd")  # no status of their own
    assert all("completed" in line for name, line in rows.items() if name not in headers)
    child = ok("--db", db, "show", "lang-1/kid")
    assert re.search(r"parent\s+run lang-1, node kid", child)


def test_show_a_cancelled_run(db: str) -> None:
    out = ok("--db", db, "show", "cancel-1")
    assert out.splitlines()[0].split() == ["run", "cancel-1", "cancelled"]
    assert re.search(r"cancelled\s+the customer gave up", out)
    assert next(line for line in _node_lines(out) if line.startswith("never")).split()[:3] == [
        "never",
        "(wait)",
        "interrupted",
    ]


def test_history_payloads_of_the_language(db: str) -> None:
    out = ok("--db", db, "history", "lang-1")
    for fragment in [
        "key='even' -> branch even",
        "iteration 1 again value=2",
        "iteration 3 done value=3",
        "3 items",
        "child run lang-1/kid",
        "until 20",
        "signal 'go'",
        "signal 'go' #1 payload=7",
        "output=[0,1,4]",
    ]:
        assert fragment in out, fragment
    completed = json.loads(ok("--db", db, "history", "lang-1", "--json", "--type", "node_completed"))
    events = history_of(db, "lang-1")
    for e in completed:  # took: since the node's first event
        first = next(x for x in events if getattr(x, "node", None) == e["node"])
        took = duration((ev.EVENT_ADAPTER.validate_python(e).ts - first.ts).total_seconds())
        assert took in row(out, e["seq"]).split()


# -- timeline -------------------------------------------------------------------------------


def _lanes(out: str) -> dict[str, str]:
    """Lane label -> its bars, for every line of the chart that has bars."""
    lanes = {}
    for line in out.splitlines():
        if line.count("│") == 2:
            label, bars, _ = line.split("│")
            lanes[label.strip()] = bars
    return lanes


def test_timeline_has_a_lane_per_step_grouped_under_the_fork(db: str) -> None:
    out = ok("--db", db, "timeline", "done-1")
    lanes = _lanes(out)
    assert list(lanes) == ["prep", "fork-1 (fork)", "a  a1", "a2", "b  b1", "combine (join)", "finish"]
    steps = [label.split()[-1] for label in lanes if "(fork)" not in label]
    assert steps == [s if s != "combine" else "(join)" for s in FORKED_STEPS]
    for label, bars in lanes.items():
        assert set(bars.strip()) == ({"─"} if "(fork)" in label else {"█"}), (label, bars)
    assert len({len(bars) for bars in lanes.values()}) == 1
    # a branch runs beside its sibling, not after it: their bars overlap in time
    a1, b1 = lanes["a  a1"], lanes["b  b1"]
    assert set(range(a1.index("█"), a1.rindex("█") + 1)) & set(range(b1.index("█"), b1.rindex("█") + 1))
    assert "legend:" in out and "+0.000s" in out


def test_timeline_of_a_failed_run_shows_each_attempt_in_red_with_the_waits(db: str) -> None:
    out = ok("--db", db, "timeline", "bad-1")
    explode = _lanes(out)["explode"]
    assert re.fullmatch(r" *▓+·+▓+·+▓+ *", explode), explode  # three failures, two waits
    assert _lanes(out)["finish"].strip() == ""
    assert re.search(r"explode\s+│.*│ \d+\.\d{3}s x3", out)
    colour = invoke("--db", db, "timeline", "bad-1", env={"FORCE_COLOR": "1", "COLUMNS": "120"})
    assert re.search(r"\x1b\[[0-9;]*31m▓", colour.stdout), colour.stdout


def test_timeline_of_a_crashed_run_shows_the_cut_attempt_and_squeezes_the_downtime(db: str) -> None:
    out = ok("--db", db, "timeline", "crash-1")
    hold = _lanes(out)["hold   hold"]
    assert re.fullmatch(r" *░+ *≈+ *█+ *", hold), hold
    assert "stretches with no step running, drawn narrow" in out


def test_timeline_without_a_terminal_is_120_columns(db: str) -> None:
    result = invoke("--db", db, "timeline", "bad-1", env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert max(len(line) for line in lines if line.count("│") == 2) >= 110  # it uses the width
    narrow = invoke("--db", db, "timeline", "bad-1", env={"COLUMNS": "70"})
    assert max(len(line) for line in narrow.stdout.splitlines() if "│" in line) <= 70


def test_timeline_of_the_language(db: str) -> None:
    lanes = _lanes(ok("--db", db, "timeline", "lang-1"))
    assert list(lanes) == [
        "prep",
        "route-1 (route)",
        "even  half",
        "odd   triple",
        "loop-1 (loop)",
        "body  countdown",
        "spread",
        "square (map)",
        "[0]",
        "[1]",
        "[2]",
        "total",
        "kid (child)",
        "sleep-1 (sleep)",
        "go (wait)",
        "finish",
    ]
    assert set(lanes["odd   triple"]) <= {" ", "≈"}  # the branch not taken
    assert len(re.findall(r"█+", lanes["body  countdown"])) >= 1 and "─" in lanes["loop-1 (loop)"]
    for label in ("sleep-1 (sleep)", "go (wait)", "kid (child)", "square (map)"):
        assert "─" in lanes[label], label


ALL_RUNS = ["done-1", "retry-1", "bad-1", "bad-1-fixed", "crash-1", "bad-1-later", "lang-1", "lang-1/kid", "cancel-1"]


@pytest.mark.parametrize("columns", ["60", "80", "120", "200"])
def test_timeline_and_show_fit_the_width(db: str, columns: str) -> None:
    for run_id in ALL_RUNS:
        chart = ok("--db", db, "timeline", run_id, env={"COLUMNS": columns})
        assert max(len(line) for line in chart.splitlines()) <= int(columns), (run_id, chart)
        bars = [line.split("│")[1] for line in chart.splitlines() if line.count("│") == 2]
        assert bars and len({len(b) for b in bars}) == 1, run_id
        summary = ok("--db", db, "show", run_id, env={"COLUMNS": columns})
        before_traceback = summary.split("traceback of the failure")[0]
        assert max(len(line) for line in before_traceback.splitlines()) <= int(columns), (run_id, summary)


# -- state --changes ------------------------------------------------------------------------


def test_state_changes_lists_what_each_event_changed_up_to_seq(db: str) -> None:
    out = ok("--db", db, "state", "bad-1", "--at", "7", "--changes")
    headers = [line.split()[:2] for line in out.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [int(h[0]) for h in headers] == list(range(1, 8))
    assert headers[0][1] == "run_started" and headers[6][1] == "step_failed"
    assert "run status: 'pending' -> 'running'" in out
    assert "node 'explode' failures: 0 -> 1" in out
    assert "node 'explode' status: 'running' -> 'retrying'" in out
    blocks = re.split(r"\n(?=\s*\d+\s)", out.strip())
    assert all(len(block.splitlines()) >= 2 for block in blocks)  # every event has at least one line below it
    assert "output" not in ok("--db", db, "state", "bad-1", "--at", "1", "--changes")


def test_state_changes_at_zero_and_out_of_range(db: str) -> None:
    assert ok("--db", db, "state", "bad-1", "--at", "0", "--changes").strip() == "run bad-1: no events up to seq 0"
    assert_one_line_error(invoke("--db", db, "state", "bad-1", "--at", "15", "--changes"), "seq 15 is out of range")


# -- fork -----------------------------------------------------------------------------------


def test_fork_from_step_prints_the_new_id_and_how_to_resume(copy_db: str) -> None:
    result = invoke("--db", copy_db, "fork", "bad-1", "--from-step", "explode", "--new-run-id", "again")
    assert result.exit_code == 0, result.output
    assert result.stdout == "again\n"
    assert "forked run bad-1 at seq 4 (everything before step 'explode') into again" in result.stderr
    assert (
        "durable.run(workflow, run_id='again'" in result.stderr and "engine.resume('again', workflow)" in result.stderr
    )
    events = history_of(copy_db, "again")
    first = events[0]
    assert isinstance(first, ev.RunStarted) and first.forked_from == ev.ForkOrigin(run_id="bad-1", seq=4)
    assert events[1:] == history_of(copy_db, "bad-1")[1:4]

    async def resume() -> Any:
        async with Engine(copy_db) as engine:
            return await (await engine.resume("again", BREAKER)).result()

    MODE["explode"] = False
    try:
        assert anyio.run(resume) == "total=4"
    finally:
        MODE["explode"] = True
    assert fold(history_of(copy_db, "again")).status == "completed"


def test_fork_at_a_seq_with_a_made_up_id(copy_db: str) -> None:
    result = invoke("--db", copy_db, "fork", "done-1", "--at", "5")
    assert result.exit_code == 0, result.output
    new_id = result.stdout.strip()
    assert re.fullmatch(r"done-1-fork-[0-9a-f]{8}", new_id)
    assert len(history_of(copy_db, new_id)) == 5
    assert new_id in ok("--db", copy_db, "runs", "--status", "running")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["nope", "--at", "2"], ["no run with id 'nope'"]),
        (["bad-1", "--at", "99"], ["seq 99 is out of range"]),
        (["bad-1", "--at", "14"], ["seq 14 is out of range", "use 0 to 13"]),
        (["bad-1", "--from-step", "nope"], ["no events for node 'nope'"]),
        (["bad-1", "--at", "3", "--new-run-id", "done-1"], ["'done-1' already exists"]),
    ],
)
def test_fork_refusals_are_one_line(copy_db: str, args: list[str], fragments: list[str]) -> None:
    before = ok("--db", copy_db, "runs")
    assert_one_line_error(invoke("--db", copy_db, "fork", *args), *fragments)
    assert ok("--db", copy_db, "runs") == before


@pytest.mark.parametrize("args", [[], ["--at", "3", "--from-step", "explode"]])
def test_fork_needs_exactly_one_of_at_and_from_step(db: str, args: list[str]) -> None:
    result = invoke("--db", db, "fork", "bad-1", *args)
    assert result.exit_code == 2
    assert "exactly one of --at SEQ and --from-step NODE" in result.stderr


def test_fork_with_a_new_definition(copy_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "breaker_fix_" + tmp_path.name.replace("-", "_")
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from durable import RetryPolicy, Workflow, step
            from debugging_workflows import finish, prep

            @step(retries=RetryPolicy(max_attempts=5))
            def explode(x: int) -> int:
                return x

            FIXED = Workflow("breaker").then(prep).then(explode).then(finish)
            OTHER = Workflow("other").then(prep)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["--db", copy_db, "fork", "bad-1", "--from-step", "explode", "--new-run-id", "v2"]
    assert_one_line_error(invoke(*args, "--definition", f"{module}:OTHER"), "no workflow named 'breaker'")
    assert ok(*args, "--definition", f"{module}:FIXED").strip() == "v2"
    first = history_of(copy_db, "v2")[0]
    assert isinstance(first, ev.RunStarted)
    assert first.definition["nodes"][1]["retry"]["max_attempts"] == 5
    assert first.definition_hash != history_of(copy_db, "bad-1")[0].definition_hash  # type: ignore[union-attr]


# -- export and import ----------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["bad-1", "bad-1-fixed", "crash-1"])
def test_export_then_import_into_another_database_gives_the_same_history(db: str, tmp_path: Path, run_id: str) -> None:
    doc = ok("--db", db, "export", run_id)
    assert json.loads(doc)["run_id"] == run_id
    (tmp_path / "run.json").write_text(doc)
    other = str(tmp_path / "other.db")
    out = ok("--db", other, "import", str(tmp_path / "run.json"))
    assert out.startswith(f"imported run {run_id} (")
    assert history_of(other, run_id) == history_of(db, run_id)
    assert ok("--db", other, "show", run_id).splitlines()[0] == ok("--db", db, "show", run_id).splitlines()[0]


def test_import_from_stdin_under_a_new_id_and_a_taken_id(db: str, tmp_path: Path) -> None:
    doc = ok("--db", db, "export", "retry-1")
    other = str(tmp_path / "other.db")
    assert ok("--db", other, "import", "-", input=doc).startswith("imported run retry-1 ")
    taken = invoke("--db", other, "import", "-", input=doc)
    assert_one_line_error(taken, "'retry-1' already exists", "--new-run-id")
    assert ok("--db", other, "import", "-", "--new-run-id", "retry-2", input=doc).startswith("imported run retry-2 ")
    assert history_of(other, "retry-2") == history_of(db, "retry-1")


def _tampered(db: str) -> str:
    doc = json.loads(ok("--db", db, "export", "bad-1"))
    doc["events"][0]["definition"]["nodes"][0]["retry"]["max_attempts"] = 9
    return json.dumps(doc)


def _broken_event(db: str) -> str:
    doc = json.loads(ok("--db", db, "export", "bad-1"))
    doc["events"][3]["seq"] = 9
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda db: '{"format": "durable-run", "events": [', ["is not JSON"]),
        (lambda db: "", ["is not JSON"]),
        (lambda db: "[1, 2, 3]", ["not a durable run document"]),
        (lambda db: '{"format": "durable-run", "version": 7}', ["version 7 is not supported"]),
        (_tampered, ["does not match its definition hash"]),
        (_broken_event, ["break the journal's rules"]),
    ],
    ids=["truncated", "empty", "not-a-document", "version", "tampered", "seq-gap"],
)
def test_a_bad_import_file_is_one_line_and_writes_nothing(
    db: str, tmp_path: Path, make: Any, fragments: list[str]
) -> None:
    (tmp_path / "run.json").write_text(make(db))
    target = tmp_path / "new.db"
    assert_one_line_error(invoke("--db", str(target), "import", str(tmp_path / "run.json")), *fragments, code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no database was created


def test_import_of_a_missing_file_or_into_a_missing_directory(db: str, tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("--db", db, "import", str(tmp_path / "absent.json")), "cannot read", "absent.json", code=2
    )
    (tmp_path / "run.json").write_text(ok("--db", db, "export", "bad-1"))
    assert_one_line_error(
        invoke("--db", str(tmp_path / "no" / "j.db"), "import", str(tmp_path / "run.json")), "does not exist"
    )


# -- check ----------------------------------------------------------------------------------


@pytest.fixture
def defs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of definitions in the current directory: its name (unique per test)."""
    name = "defs_" + tmp_path.name.replace("-", "_")
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from durable import RetryPolicy, Workflow, step
            from debugging_workflows import BREAKER, FORKED, finish, prep

            @step(retries=RetryPolicy(max_attempts=5, initial="60ms", jitter=0))
            def explode(x: int) -> int:
                return x

            SAME = [BREAKER, FORKED]
            CHANGED = Workflow("breaker").then(prep).then(explode).then(finish)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader puts the current directory on it
    yield name


def test_check_passes_when_the_definitions_match(db: str, defs: str) -> None:
    result = invoke("--db", db, "check", "--workflows", f"{defs}:SAME")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: the one unfinished run in {db} can be resumed by breaker v1 (")


def test_check_fails_and_lists_the_change(db: str, defs: str) -> None:
    result = invoke("--db", db, "check", "--workflows", f"{defs}:CHANGED")
    assert result.exit_code == 1, result.output
    assert f"1 of 1 unfinished runs in {db} cannot be resumed" in result.stdout
    assert "bad-1-later  breaker v1" in result.stdout
    assert "- node 'explode' changed: retry.max_attempts 3 -> 5" in result.stdout
    assert "engine.recover" in result.stdout
    # the old definition next to the new one: compatible again
    both = invoke("--db", db, "check", "--workflows", f"{defs}:CHANGED", "--workflows", f"{defs}:SAME")
    assert both.exit_code == 0, both.output


def test_check_without_a_definition_of_the_workflow(db: str, defs: str) -> None:
    result = invoke("--db", db, "check", "--workflows", "debugging_workflows:FORKED")
    assert result.exit_code == 1
    assert "no definition of workflow 'breaker' was given" in result.stdout


def test_check_with_no_unfinished_run(tmp_path: Path, db: str) -> None:
    (tmp_path / "run.json").write_text(ok("--db", db, "export", "done-1"))
    fresh = str(tmp_path / "fresh.db")
    ok("--db", fresh, "import", str(tmp_path / "run.json"))
    result = invoke("--db", fresh, "check", "--workflows", "debugging_workflows:FORKED")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"OK: no unfinished runs in {fresh}"


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("no_such_module_here:X", "no module named 'no_such_module_here'"),
        ("debugging_workflows:NOPE", "has no attribute 'NOPE'"),
        ("debugging_workflows:MODE", "MODE['explode'] is a bool, not a Workflow"),
        ("debugging_workflows:PAUSE_BEFORE_RESUME", "is a float, not a Workflow"),
        ("debugging_workflows:prep", "not a Workflow"),
        ("debugging_workflows", "pkg.module:attr"),
    ],
)
def test_check_with_a_bad_reference_is_one_line(db: str, ref: str, fragment: str) -> None:
    assert_one_line_error(invoke("--db", db, "check", "--workflows", ref), fragment)


# -- runs -----------------------------------------------------------------------------------


def infos(path: str) -> list[RunInfo]:
    async def body() -> list[RunInfo]:
        async with Engine(path) as engine:
            return await engine.list_runs()

    return anyio.run(body)


def _ids(out: str) -> list[str]:
    """The run ids of a 'durable runs' table, in its order."""
    return [line.split()[0] for line in out.splitlines() if re.match(r"\s+[a-z]+-\d", line)]


def test_runs_sorting(db: str) -> None:
    runs = {r.run_id: r for r in infos(db)}
    newest_first = _ids(ok("--db", db, "runs"))
    assert sorted(newest_first) == sorted(runs) and len(runs) == 9
    assert newest_first == sorted(runs, key=lambda i: (runs[i].created_at, i), reverse=True)
    assert _ids(ok("--db", db, "runs", "--sort", "created", "--asc")) == newest_first[::-1]
    by_workflow = _ids(ok("--db", db, "runs", "--sort", "workflow"))
    assert by_workflow[:3] == ["bad-1-later", "bad-1-fixed", "bad-1"]  # breaker first; ties newest first
    assert [runs[i].workflow for i in by_workflow] == sorted(r.workflow for r in runs.values())
    assert [runs[i].workflow for i in _ids(ok("--db", db, "runs", "--sort", "workflow", "--desc"))] == sorted(
        (r.workflow for r in runs.values()), reverse=True
    )
    by_status = _ids(ok("--db", db, "runs", "--sort", "status"))
    assert [runs[i].status for i in by_status] == ["cancelled", *["completed"] * 6, "failed", "running"]
    by_updated = _ids(ok("--db", db, "runs", "--sort", "updated", "--limit", "2"))
    assert by_updated == sorted(runs, key=lambda i: (runs[i].updated_at, runs[i].created_at), reverse=True)[:2]


def test_runs_limit_says_how_many_there_are(db: str) -> None:
    out = ok("--db", db, "runs", "--limit", "2")
    assert len(_ids(out)) == 2
    assert "showing 2 of 9 runs; pass --limit to see more" in out


def test_runs_since(db: str) -> None:
    runs = {r.run_id: r for r in infos(db)}
    assert len(_ids(ok("--db", db, "runs", "--since", "2d"))) == 9
    assert len(_ids(ok("--db", db, "runs", "--since", "2000-01-01"))) == 9
    since = runs["crash-1"].created_at
    naive = since.replace(tzinfo=None).isoformat()  # no offset: UTC
    expected = sorted(i for i, r in runs.items() if r.created_at >= since)
    assert "crash-1" in expected and "done-1" not in expected
    assert sorted(_ids(ok("--db", db, "runs", "--since", naive))) == expected
    after = (max(r.created_at for r in runs.values()) + timedelta(milliseconds=1)).isoformat()
    assert ok("--db", db, "runs", "--since", after).startswith("no runs created since ")
    assert ok("--db", db, "runs", "--since", "2999-01-01T00:00+00:00").startswith("no runs created since 2999-01-01")
    combined = _ids(ok("--db", db, "runs", "--since", "1h", "--status", "completed", "--workflow", "breaker"))
    assert combined == ["bad-1-fixed"]


@pytest.mark.parametrize("since", ["yesterday", "3 parsecs", "-1h", "1y"])
def test_runs_since_not_understood_is_a_usage_error(db: str, since: str) -> None:
    result = invoke("--db", db, "runs", "--since", since)
    assert result.exit_code == 2
    assert "nor a duration back from now" in result.stderr


# -- every command: clean refusals ----------------------------------------------------------

READERS = [
    ["show", "nope"],
    ["timeline", "nope"],
    ["history", "nope", "--jsonl"],
    ["state", "nope", "--changes"],
    ["export", "nope"],
    ["fork", "nope", "--at", "1"],
]


@pytest.mark.parametrize("command", READERS)
def test_unknown_run_is_one_line(db: str, command: list[str]) -> None:
    assert_one_line_error(invoke("--db", db, *command), "no run with id 'nope'")


@pytest.mark.parametrize("command", [*READERS, ["check", "--workflows", "debugging_workflows:FORKED"]])
def test_no_database_is_one_line_and_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "absent.db"
    assert_one_line_error(invoke("--db", str(path), *command), f"no database at {path}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [*READERS, ["import", "-"], ["check", "--workflows", "x:y"]])
def test_a_file_that_is_not_a_journal_is_one_line_and_untouched(db: str, tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "data.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    doc = ok("--db", db, "export", "bad-1") if command[0] == "import" else None
    command = ["check", "--workflows", "debugging_workflows:FORKED"] if command[0] == "check" else command
    assert_one_line_error(invoke("--db", str(path), *command, input=doc), "not a durable journal", "left untouched")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.db"]


# -- docs/debugging.md ----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_the_walkthrough_of_docs_debugging_md(tmp_path: Path) -> None:
    """The story of docs/debugging.md holds: the sample fails at charge, the fix in the page fixes it."""
    doc = (ROOT / "docs" / "debugging.md").read_text()
    shutil.copy(ROOT / "docs" / "examples" / "shop.py", tmp_path / "shop.py")
    env = {**os.environ, "DURABLE_DB": str(tmp_path / "shop.db"), "COLUMNS": "100"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    def durable_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run(sys.executable, "-m", "durable", *args)

    def apply_sed(number: int) -> None:
        # the page edits shop.py with sed; do the same replacement here
        old, new = re.findall(r"sed -i\.bak 's/(.*?)/(.*?)/' shop\.py", doc)[number]
        source = (tmp_path / "shop.py").read_text()
        assert source.count(old) == 1, old
        (tmp_path / "shop.py").write_text(source.replace(old, new))

    failed = run(sys.executable, "shop.py", "start", "o-17")
    assert failed.returncode == 1
    assert failed.stderr.strip() in doc
    assert "charge                    failed               3          3" in durable_cli("show", "o-17").stdout
    apply_sed(0)
    fork = durable_cli("fork", "o-17", "--from-step", "charge", "--new-run-id", "o-17-fixed")
    assert fork.returncode == 0 and fork.stdout == "o-17-fixed\n"
    assert "forked run o-17 at seq 23 (everything before step 'charge') into o-17-fixed" in doc
    assert fork.stderr.startswith("forked run o-17 at seq 23 (everything before step 'charge') into o-17-fixed")
    assert durable_cli("check", "--workflows", "shop:checkout").returncode == 0
    resumed = run(sys.executable, "shop.py", "resume", "o-17-fixed")
    assert resumed.returncode == 0 and resumed.stdout == "shipped o-17 (49.50 charged)\n"
    assert "$ python shop.py resume o-17-fixed\nshipped o-17 (49.50 charged)\n" in doc
    durable_cli("fork", "o-17", "--from-step", "charge", "--new-run-id", "o-17-later")
    apply_sed(1)
    check = durable_cli("check", "--workflows", "shop:checkout")
    assert check.returncode == 1
    assert "    - node 'charge' changed: retry.max_attempts 3 -> 5\n" in check.stdout
    assert "    - node 'charge' changed: retry.max_attempts 3 -> 5\n" in doc
