"""The real-process crash sweep: SIGKILL a child running a workflow at every journal statement.

By default the sweeps kill at every commit boundary (as each BEGIN and each COMMIT begins:
every state the file can be in) plus a few random moments, which keeps this file well under
a minute on two cores. With ``DURABLE_SLOW=1`` the demo is killed at every statement, and at
many more random moments (the figures in docs/testing.md come from that run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from durable.testing.sweep import SweepError, sweep_sigkill

SLOW = os.environ.get("DURABLE_SLOW") == "1"
WORKERS = 2


def test_demo_survives_a_kill_at_every_commit_boundary_and_at_random_moments(tmp_path: Path) -> None:
    report = sweep_sigkill(
        "durable.testing.sweep:demo",
        3,
        db_dir=tmp_path,
        commit_boundaries=not SLOW,
        random_kills=60 if SLOW else 6,
        seed=20261122,
        workers=WORKERS,
    )
    if SLOW:
        print(f"\n{report.summary()}")
    assert report.result == "rcpt-3-30 | item-3-0+item-3-1+item-3-2"
    assert report.violations == []
    assert report.statements == len(report.statement_kinds) >= 40
    assert report.statement_kinds[0] == "BEGIN" and report.statement_kinds[-1] == "COMMIT"
    commits = report.statement_kinds.count("COMMIT")
    assert commits >= 6  # run start, fetch, the fork, the charge's failure and its retry, the lanes, the join
    assert report.statement_kinds.count("BEGIN") == commits
    expected = report.statements if SLOW else 2 * commits
    assert len(report.statement_kills) + len(report.finished_first) == expected
    assert len(report.statement_kills) >= expected - 2  # group commit may shorten a child's statement list a little
    assert report.statement_kills[0] == 1  # killed before anything of the run was written
    assert report.kills == len(report.statement_kills) + report.random_kills
    assert report.random_kills >= (40 if SLOW else 3)  # a few children may finish before their random moment
    assert report.children == 1 + len(report.finished_first) + 2 * report.kills + (
        (60 if SLOW else 6) - report.random_kills
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # passing cases clean up after themselves


def test_a_run_that_fails_for_good_fails_the_same_way_after_any_kill(tmp_path: Path) -> None:
    report = sweep_sigkill(
        "sweep_workflows:failing",
        4,
        db_dir=tmp_path,
        commit_boundaries=not SLOW,
        random_kills=20 if SLOW else 3,
        workers=WORKERS,
    )
    if SLOW:
        print(f"\n{report.summary()}")
    assert (report.result, report.error) == (None, "ValueError: refuse")
    assert report.kills >= 10
    assert report.violations == []


def test_the_sweep_catches_a_result_that_depends_on_the_attempt(tmp_path: Path) -> None:
    with pytest.raises(SweepError) as caught:
        sweep_sigkill("sweep_workflows:attempt_dependent", 2, db_dir=tmp_path, commit_boundaries=True, workers=WORKERS)
    message = str(caught.value)
    assert "kill(s) broke a promise" in message
    assert "the run returned result=203 error=None; without the kill: result=202 error=None" in message
    assert "the journal ends with ('completed', 203); without the kill: ('completed', 202)" in message
    assert "Reproduce with: sweep_sigkill('sweep_workflows:attempt_dependent', 2, db_dir=..., kill_at_statements=[" in (
        message
    )
    assert "kill-at-1:" not in message  # killed before stamp ran: nothing differs
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept and all(name.startswith("kill-at-") for name in kept)  # the failing cases' files stay for a look


def test_the_sweep_catches_a_step_that_runs_again_after_its_completion_was_committed(tmp_path: Path) -> None:
    with pytest.raises(SweepError) as caught:
        sweep_sigkill("sweep_workflows:rerun_liar", 5, db_dir=tmp_path, commit_boundaries=True, workers=WORKERS)
    assert (
        "step 'first' executed again (attempt 1) after the kill, though its completion was committed before it"
        in str(caught.value)
    )


def test_a_bad_reference_or_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory; create it first"):
        sweep_sigkill("durable.testing.sweep:demo", 1, db_dir=tmp_path / "missing")
    with pytest.raises(SweepError, match=r"(?s)the fault-free child failed.*'package.module:attribute'"):
        sweep_sigkill("durable.testing.sweep", 1, db_dir=tmp_path)
    with pytest.raises(SweepError, match="not a durable Workflow"):
        sweep_sigkill("durable.testing.sweep:log_execution", 1, db_dir=tmp_path)
