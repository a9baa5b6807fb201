"""``durable demo``, run as a newcomer would: a subprocess with no terminal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
from rich.console import Console

from durable import Engine
from durable.cli.demo import WORKFLOW, _Kill, _report_effects

STEPS = set(WORKFLOW.step_nodes())


def run_demo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # TMPDIR: the demo's scratch directory lands in pytest's tmp_path, which pytest cleans up.
    tmp = cwd.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in ("DURABLE_DB", "COLUMNS")}
    environment.update({"TMPDIR": str(tmp), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "durable", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )


def journal_of(db: Path, run_id: str) -> list[object]:
    async def read() -> list[object]:
        async with Engine(db) as engine:
            return list(await engine.history(run_id))

    return anyio.run(read)


def check_output(out: str) -> tuple[str, Path, int]:
    """Assert what the demo must say; return its run id, journal path and how many steps had completed."""
    run_id = re.search(r"^1\. starting run (demo-[0-9a-f]+) in a child process \(pid \d+\)$", out, re.M)
    assert run_id, out
    killed = re.search(r"^2\. killed it with SIGKILL after (\d+) steps completed$", out, re.M)
    assert killed, out
    assert re.search(rf"^3\. resuming run {run_id[1]} in this process", out, re.M), out
    assert re.search(rf"^4\. history of run {run_id[1]} \(\d+ events\)$", out, re.M), out
    assert f"none of the {killed[1]} completed steps ran again." in out
    assert "run_completed" in out  # the history table
    assert f"run {run_id[1]} completed; result:" in out
    journal = re.search(r"^\s+journal:\s+(\S+)$", out, re.M)
    assert journal, out
    return run_id[1], Path(journal[1]), int(killed[1])


def check_journal(db: Path, run_id: str, completed_at_kill: int) -> None:
    """The run completed, each step completed exactly once, and something was really interrupted."""
    events = journal_of(db, run_id)
    types = [e.type for e in events]  # type: ignore[attr-defined]
    assert types[0] == "run_started" and types[-1] == "run_completed"
    completions = Counter(e.node for e in events if e.type == "step_completed")  # type: ignore[attr-defined]
    assert completions == Counter(dict.fromkeys(STEPS, 1))
    assert 2 <= completed_at_kill < len(STEPS)
    # The kill left a step started but not completed; it started again after the resume.
    starts = Counter(e.node for e in events if e.type == "step_started")  # type: ignore[attr-defined]
    assert max(starts.values()) == 2, starts


def test_demo_kills_a_child_and_resumes_the_run(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # DURABLE_DB is set, but the demo must not write there (nor anywhere in the cwd).
    result = run_demo("demo", cwd=cwd, env={"DURABLE_DB": str(cwd / "mine.db")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    run_id, db, killed = check_output(result.stdout)
    assert db.name == "demo.db" and db.parent.parent == tmp_path / "tmp"  # a fresh directory of its own
    assert list(cwd.iterdir()) == []
    check_journal(db, run_id, killed)


def test_demo_with_db_writes_that_journal(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    db = cwd / "journal.db"
    result = run_demo("--db", str(db), "demo", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id, printed, killed = check_output(result.stdout)
    assert printed == db
    check_journal(db, run_id, killed)
    # A second demo adds a run with another id to the same journal.
    again = run_demo("demo", "--db", str(db), cwd=cwd)
    assert again.returncode == 0, again.stdout + again.stderr
    second, _, _ = check_output(again.stdout)
    assert second != run_id
    listed = run_demo("--db", str(db), "runs", cwd=cwd)
    assert listed.returncode == 0
    assert run_id in listed.stdout and second in listed.stdout


def _report(tmp_path: Path, before: list[str], after: list[str], kill: _Kill) -> tuple[bool, str]:
    log = tmp_path / "effects.log"
    lines = [{"pid": kill.pid, "node": n} for n in before] + [{"pid": os.getpid(), "node": n} for n in after]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = io.StringIO()
    ok = _report_effects(Console(file=out, width=200), kill, log)
    return ok, out.getvalue()


def test_demo_says_so_when_a_completed_step_ran_again(tmp_path: Path) -> None:
    kill = _Kill(pid=1, completed=["fetch_order", "send_email"], in_flight=["reserve_stock"], last_seq=9)
    ok, out = _report(tmp_path, ["fetch_order", "send_email"], ["send_email", "reserve_stock"], kill)
    assert not ok
    assert "completed steps ran again: send_email" in out
    assert "none of the" not in out


def test_demo_says_so_when_an_in_flight_step_did_its_work_twice(tmp_path: Path) -> None:
    kill = _Kill(pid=1, completed=["fetch_order"], in_flight=["send_email"], last_seq=7)
    ok, out = _report(tmp_path, ["fetch_order", "send_email"], ["send_email", "summarize"], kill)
    assert ok
    assert "none of the 1 completed steps ran again." in out
    assert "send_email was in flight at the kill and did its work twice" in out
    assert "at least once" in out
