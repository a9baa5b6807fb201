"""The chaos test: worker processes on one file, SIGKILLed at random while runs flow through them.

Three ``durable worker`` processes share one SQLite file. The test submits runs of
``worker_workflows:chaos`` (a fork, a durable sleep, six steps), then every 0.5 to 1 s
SIGKILLs a random worker and starts a replacement, until every run has ended. Everything is
then checked from the outside, through files only:

* every run completed, exactly once, with the right result;
* no step ran again after its completion was committed, no attempt ran twice, and a step
  ran at most ``1 + takeovers`` times (the side-effect log against the journal);
* the journal invariants hold for every run, and ``PRAGMA integrity_check`` says ok;
* no worker died on its own, and none logged an unhandled "database is locked".

``DURABLE_SLOW=1`` runs a longer version (more runs, more kills). The seed is printed; set
``DURABLE_CHAOS_SEED`` to replay a schedule of kills.
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
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio

from durable import Engine

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
try:
    import worker_workflows as ww
finally:
    sys.path.pop(0)

SLOW = os.environ.get("DURABLE_SLOW") == "1"
WORKERS = 3
RUNS = 600 if SLOW else 40
DEADLINE = 900.0 if SLOW else 55.0  # seconds for the whole test, kills included
LEASE_TTL = 1.0
CONCURRENCY = 2


@dataclass
class Proc:
    index: int
    popen: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]
    killed: bool = False


@dataclass
class Pool:
    """The worker processes, their output files, and what happened to them."""

    db: Path
    log: Path
    dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self) -> Proc:
        index = len(self.procs)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
        env[ww.LOG_ENV] = str(self.log)
        env.pop("DURABLE_DB", None)
        out = open(self.dir / f"worker-{index}.out", "wb")  # closed in close()
        err = open(self.dir / f"worker-{index}.err", "wb")
        options = ["--lease-ttl", str(LEASE_TTL), "--concurrency", str(CONCURRENCY), "--max-takeovers", "1000", "-v"]
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "durable",
                "--db",
                str(self.db),
                "worker",
                "--workflows",
                "worker_workflows:chaos",
                *options,
            ],
            env=env,
            stdout=out,
            stderr=err,
        )
        proc = Proc(index, popen, out, err)
        self.procs.append(proc)
        return proc

    def live(self) -> list[Proc]:
        return [p for p in self.procs if p.popen.poll() is None]

    def died_on_their_own(self) -> list[Proc]:
        return [p for p in self.procs if not p.killed and p.popen.poll() is not None]

    def kill(self, proc: Proc) -> None:
        proc.killed = True
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(30)

    def terminate_all(self) -> list[int | None]:
        live = self.live()
        for p in live:  # a worker SIGTERMed before it handles SIGTERM would just die: wait for its first line
            deadline = time.monotonic() + 30
            while not (self.dir / f"worker-{p.index}.out").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.02)
        for p in live:
            p.popen.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for p in live:
            try:
                codes.append(p.popen.wait(30))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                codes.append(None)
        return codes

    def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
            p.out.close()
            p.err.close()

    def stderr(self, proc: Proc) -> str:
        return (self.dir / f"worker-{proc.index}.err").read_text(errors="replace")


def unfinished(db: Path) -> int:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0])


def submit(db: Path, count: int) -> dict[str, int]:
    async def main() -> dict[str, int]:
        async with Engine(db) as engine:
            return {await engine.submit(ww.chaos, i, run_id=f"chaos-{i:03d}"): i for i in range(count)}

    return anyio.run(main)


def test_worker_processes_killed_at_random_complete_every_run_exactly_once(tmp_path: Path) -> None:
    seed = int(os.environ.get("DURABLE_CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (DURABLE_CHAOS_SEED={seed} replays the kill schedule)")
    db, log = tmp_path / "chaos.db", tmp_path / "effects.log"
    pool = Pool(db, log, tmp_path)
    began = time.monotonic()
    kills = 0
    try:
        for _ in range(WORKERS):
            pool.start()
        inputs = submit(db, RUNS)  # while the workers poll: the submitter is one more writer
        next_kill = time.monotonic() + rng.uniform(0.5, 1.0)
        while unfinished(db):
            assert time.monotonic() - began < DEADLINE, f"{unfinished(db)} runs unfinished after {DEADLINE}s"
            assert not pool.died_on_their_own(), [pool.stderr(p) for p in pool.died_on_their_own()]
            if time.monotonic() >= next_kill:
                pool.kill(rng.choice(pool.live()))
                kills += 1
                pool.start()
                next_kill = time.monotonic() + rng.uniform(0.5, 1.0)
            time.sleep(0.02)
        duration = time.monotonic() - began
        wal = Path(f"{db}-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        assert not pool.died_on_their_own(), [pool.stderr(p) for p in pool.died_on_their_own()]
        codes = pool.terminate_all()
        assert codes == [0] * WORKERS, codes  # SIGTERM: drained, exit 0
    finally:
        pool.close()

    journal = ww.read_journal(db)
    effects = ww.read_log(log)

    # Every run completed exactly once, with the right result.
    assert sorted(journal) == sorted(inputs)
    for run_id, run in journal.items():
        terminal = [e for e in run["events"] if e.type in ("run_completed", "run_failed", "run_cancelled")]
        assert [e.type for e in terminal] == ["run_completed"], (run_id, terminal)
        assert run["status"] == "completed"
        assert terminal[0].result == ww.chaos_result(inputs[run_id]), run_id
        assert run["lease_owner"] is None  # every lease was released or taken over and released

    # What executed, against what was committed; the journal invariants, for every run.
    problems = ww.execution_problems(journal, effects)
    assert problems == [], "\n".join(problems)
    pids = {p.popen.pid for p in pool.procs}
    assert {pid for *_, pid in effects} <= pids  # only our workers ran steps
    executed = Counter((run_id, node) for run_id, node, _, _ in effects)
    assert set(executed) == {(r, n) for r in journal for n in ww.CHAOS_STEPS}  # every step ran

    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    # No worker crashed on a busy database; what they logged is counted for the report.
    stderr = {p.index: pool.stderr(p) for p in pool.procs}
    for index, text in stderr.items():
        assert "database is locked" not in text, f"worker {index}:\n{text}"
        assert "Traceback" not in text, f"worker {index}:\n{text}"

    takeovers = sum(run["takeovers"] for run in journal.values())
    figures = {
        "seed": seed,
        "runs": RUNS,
        "workers_at_once": WORKERS,
        "worker_processes_started": len(pool.procs),
        "sigkills": kills,
        "claims": sum((tmp_path / f"worker-{p.index}.out").read_text().count("\nclaimed ") for p in pool.procs),
        "takeovers": takeovers,
        "runs_taken_over": sum(1 for run in journal.values() if run["takeovers"]),
        "max_takeovers_of_one_run": max(run["takeovers"] for run in journal.values()),
        "step_executions": len(effects),
        "steps": len(executed),
        "steps_executed_again": sum(n - 1 for n in executed.values()),
        "lease_lost_warnings": sum(t.count("lost its lease") for t in stderr.values()),
        "heartbeat_failures": sum(t.count("heartbeat failed") for t in stderr.values()),
        "events": sum(len(run["events"]) for run in journal.values()),
        "violations": len(problems),
        "wal_bytes_at_end": wal_bytes,
        "db_bytes": db.stat().st_size,
        "seconds": round(duration, 1),
    }
    print("chaos figures:", json.dumps(figures))
    # A run in flight at a kill is taken over: with this many kills, some must have been.
    assert takeovers > 0 and kills > 0
