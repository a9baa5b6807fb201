"""The durable benchmarks: sequential, concurrent, fork, resume, size and memory.

Every write benchmark runs once per synchronous mode, each in a fresh temporary database.
Each function takes the sizes and a directory for temporary files and returns plain data.
"""

from __future__ import annotations

import gc
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import anyio

from durable import Engine, SQLiteJournal, Workflow, fold, step
from durable import events as ev
from durable.definition import StepNode

from .common import (
    MODES,
    STEPS,
    Sizes,
    atime_loop,
    burst_figure,
    checkpoint,
    db_bytes,
    fresh_dir,
    rss_mib,
    sequential_figure,
)

# -- workloads ---------------------------------------------------------------------------------


async def _noop(x: int) -> int:
    return x


def _sync_noop(x: int) -> int:
    return x


async def _join(outputs: dict[str, int]) -> int:
    return len(outputs)


def chain(name: str, fn: Any, n: int = STEPS) -> Workflow:
    """A workflow of ``n`` no-op steps in a row."""
    wf = Workflow(name)
    for i in range(n):
        wf = wf.then(step(name=f"s{i}")(fn))
    return wf


ASYNC_CHAIN = chain("bench-async", _noop)
SYNC_CHAIN = chain("bench-sync", _sync_noop)
FORK_BRANCHES, FORK_STEPS = 8, 10


def fork_workflow() -> Workflow:
    """One fork of 8 branches of 10 no-op steps each, closed by a join step (81 steps)."""
    fork = Workflow("bench-fork").fork()
    for b in range(FORK_BRANCHES):
        fork = fork.branch(*(step(name=f"b{b}_s{i}")(_noop) for i in range(FORK_STEPS)), name=f"b{b}")
    return fork.join(step(name="join")(_join))


FORK = fork_workflow()
FORK_STEP_COUNT = FORK_BRANCHES * FORK_STEPS + 1


async def _start_together(engine: Engine, workflow: Workflow, n: int, offset: int = 0) -> None:
    """Start ``n`` runs at once (their run_started commits group) and wait for every result."""
    handles: list[Any] = []

    async def start(i: int) -> None:
        handles.append(await engine.start(workflow, offset + i))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(start, i)
    for handle in handles:
        await handle.result()


# -- sequential --------------------------------------------------------------------------------


async def _sequential(path: Path, mode: str, workflow: Workflow, sizes: Sizes) -> dict[str, Any]:
    async with Engine(path, synchronous=mode) as engine:  # type: ignore[arg-type]
        for i in range(sizes.warmup_runs):
            await engine.run(workflow, i)
        laps, total = await atime_loop(lambda i: engine.run(workflow, i), sizes.min_runs, sizes.min_seconds)
    return sequential_figure(laps, total)


def sequential(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """Runs of a 10-step no-op workflow, one after another; async steps and sync steps."""
    out: dict[str, Any] = {}
    for mode in MODES:
        out[mode] = {}
        for label, workflow in (("async", ASYNC_CHAIN), ("sync", SYNC_CHAIN)):
            with fresh_dir(tmp, "seq") as d:
                out[mode][label] = anyio.run(_sequential, d / "bench.db", mode, workflow, sizes)
    return out


# -- concurrent --------------------------------------------------------------------------------


async def _concurrent(path: Path, mode: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.concurrent_runs
    async with Engine(path, synchronous=mode) as engine:  # type: ignore[arg-type]
        await _start_together(engine, ASYNC_CHAIN, max(1, sizes.warmup_runs))
        laps, _ = await atime_loop(
            lambda rep: _start_together(engine, ASYNC_CHAIN, n, offset=(rep + 1) * n),
            sizes.min_reps,
            sizes.min_seconds,
        )
    return burst_figure(laps, n * STEPS, runs=n)


def concurrent(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """Bursts of 200 runs of 10 async no-op steps started together; the median burst counts."""
    out: dict[str, Any] = {}
    for mode in MODES:
        with fresh_dir(tmp, "conc") as d:
            out[mode] = anyio.run(_concurrent, d / "bench.db", mode, sizes)
    return out


# -- fork --------------------------------------------------------------------------------------


async def _fork(path: Path, mode: str, sizes: Sizes) -> dict[str, Any]:
    async with Engine(path, synchronous=mode) as engine:  # type: ignore[arg-type]
        for i in range(max(1, sizes.warmup_runs // 2)):
            result = await engine.run(FORK, i)
            assert result == FORK_BRANCHES, result
        laps, _ = await atime_loop(lambda i: engine.run(FORK, i), sizes.min_reps, sizes.min_seconds)
    return burst_figure(laps, FORK_STEP_COUNT, branches=FORK_BRANCHES, steps_per_branch=FORK_STEPS)


def fork(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """One run of 8 branches x 10 async no-op steps + a join, repeated; the median run counts."""
    out: dict[str, Any] = {}
    for mode in MODES:
        with fresh_dir(tmp, "fork") as d:
            out[mode] = anyio.run(_fork, d / "bench.db", mode, sizes)
    return out


# -- resume ------------------------------------------------------------------------------------


def _long_run_events(n_events: int) -> list[ev.Event]:
    """run_started, then step_scheduled/started/completed triples: ``n_events`` events in all.

    The definition lists every step, as the engine would record it for a workflow that long;
    it is built by hand because the builder checks names in O(n) per step.
    """
    steps = (n_events - 1) // 3
    base = StepNode("s0", step(name="s0")(_noop)).canonical()
    definition = {
        "name": "bench-resume",
        "version": "1",
        "nodes": [{**base, "id": f"s{i}", "step": f"s{i}"} for i in range(steps)],
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    now = ev.utcnow()
    events: list[ev.Event] = [
        ev.RunStarted(
            seq=1,
            ts=now,
            workflow="bench-resume",
            version="1",
            definition_hash=digest,
            definition=definition,
            input=0,
        )
    ]
    seq = 1
    for i in range(steps):
        node = f"s{i}"
        events.append(ev.StepScheduled(seq=seq + 1, ts=now, node=node, attempt=1))
        events.append(ev.StepStarted(seq=seq + 2, ts=now, node=node, attempt=1))
        events.append(ev.StepCompleted(seq=seq + 3, ts=now, node=node, attempt=1, output=i))
        seq += 3
    return events


async def _write_run(path: Path, run_id: str, events: list[ev.Event]) -> None:
    journal = SQLiteJournal(path, synchronous="NORMAL")  # writing the fixture, not measuring it
    await journal.open()
    try:
        for i in range(0, len(events), 3_000):
            await journal.append(run_id, events[i : i + 3_000])
    finally:
        await journal.close()


def _median_ms(laps: list[float]) -> float:
    return 1000 * statistics.median(laps)


async def _time_resume(path: Path, run_id: str, n_events: int, reps: int) -> dict[str, Any]:
    state_laps: list[float] = []
    read_laps: list[float] = []
    fold_laps: list[float] = []
    async with Engine(path) as engine:
        await engine.state(run_id)  # warm the page cache and the reader connection
        for _ in range(reps):
            t = time.perf_counter()
            state = await engine.state(run_id)
            state_laps.append(time.perf_counter() - t)
        assert state.last_seq == n_events, (state.last_seq, n_events)
        for _ in range(reps):
            t = time.perf_counter()
            events = await engine.journal.read(run_id)
            read_laps.append(time.perf_counter() - t)
        for _ in range(reps):
            t = time.perf_counter()
            fold(events, run_id)
            fold_laps.append(time.perf_counter() - t)
    return {
        "events": n_events,
        "reps": reps,
        "state_ms": _median_ms(state_laps),
        "read_ms": _median_ms(read_laps),
        "fold_ms": _median_ms(fold_laps),
        "state_ms_min": 1000 * min(state_laps),
    }


def resume(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """Load and fold runs of 1,000 / 10,000 / 100,000 events: engine.state, journal.read, fold."""
    out: dict[str, Any] = {}
    for n in sizes.resume_events:
        with fresh_dir(tmp, "resume") as d:
            path = d / "bench.db"
            t = time.perf_counter()
            anyio.run(_write_run, path, "long-run", _long_run_events(n))
            setup_s = time.perf_counter() - t
            figure = anyio.run(_time_resume, path, "long-run", n, sizes.resume_reps)
            figure["setup_s"] = setup_s
            figure["db_bytes"] = db_bytes(path)
            out[str(n)] = figure
    return out


# -- size --------------------------------------------------------------------------------------


async def _fill(path: Path, runs: int) -> None:
    async with Engine(path, synchronous="NORMAL") as engine:
        done = 0
        while done < runs:
            batch = min(100, runs - done)
            await _start_together(engine, ASYNC_CHAIN, batch, offset=done)
            done += batch


def size(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """Bytes on disk per event for small payloads (ints), after a WAL checkpoint."""
    import contextlib
    import sqlite3

    with fresh_dir(tmp, "size") as d:
        path = d / "bench.db"
        anyio.run(_fill, path, sizes.size_runs)
        checkpoint(path)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            events, payload = conn.execute("SELECT count(*), sum(length(payload)) FROM events").fetchone()
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        total = db_bytes(path)
    return {
        "runs": runs,
        "events": events,
        "events_per_run": events / runs,
        "bytes": total,
        "bytes_per_event": total / events,
        "payload_bytes_per_event": payload / events,
    }


# -- memory ------------------------------------------------------------------------------------


async def _memory(path: Path, sizes: Sizes) -> dict[str, Any]:
    readings: dict[str, float | None] = {}
    async with Engine(path, synchronous="NORMAL") as engine:
        await _start_together(engine, ASYNC_CHAIN, 100, offset=-100)  # warm: caches and pools fill
        gc.collect()
        readings["0"] = rss_mib()
        done = 0
        for target in sizes.memory_checkpoints:
            while done < target:
                batch = min(100, target - done)
                await _start_together(engine, ASYNC_CHAIN, batch, offset=done)
                done += batch
            gc.collect()
            readings[str(target)] = rss_mib()
    first, last = sizes.memory_checkpoints[0], sizes.memory_checkpoints[-1]
    a, b = readings[str(first)], readings[str(last)]
    growth = None if a is None or b is None else b - a
    return {
        "rss_mib_after_runs": readings,
        "growth_mib": growth,
        "growth_kib_per_1000_runs": None if growth is None else 1024 * growth * 1000 / (last - first),
        "from_runs": first,
        "to_runs": last,
    }


def memory(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """RSS of the process after N finished runs in one engine (it must not grow with N)."""
    with fresh_dir(tmp, "memory") as d:
        return anyio.run(_memory, d / "bench.db", sizes)
