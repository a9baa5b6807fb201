"""What every benchmark shares: sizes, timing loops, rates, memory readings, machine facts."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODES = ("FULL", "NORMAL")
STEPS = 10  # steps per run in the sequential and concurrent workloads
INSTALL_HINT = "not installed (pip install -e '.[bench]')"
PACKAGES = (
    "durable",
    "anyio",
    "aiosqlite",
    "pydantic",
    "rich",
    "dbos",
    "SQLAlchemy",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "matplotlib",
)


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does. ``full()`` is the real benchmark, ``quick()`` a smoke test."""

    min_seconds: float  # timed loops (sequential, concurrent, fork, peers) run at least this long...
    min_runs: int  # ...and at least this many runs (sequential) ...
    min_reps: int  # ...or repetitions (concurrent bursts, fork runs)
    warmup_runs: int  # untimed runs first: imports, adapters and caches settle
    concurrent_runs: int  # runs started together in one burst
    resume_events: tuple[int, ...]  # run lengths for the resume benchmark
    resume_reps: int  # timed reads of each run (the median is reported)
    size_runs: int  # runs written before measuring the file
    memory_checkpoints: tuple[int, ...]  # finished runs at which RSS is read

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            min_seconds=2.0,
            min_runs=50,
            min_reps=3,
            warmup_runs=10,
            concurrent_runs=200,
            resume_events=(1_000, 10_000, 100_000),
            resume_reps=5,
            size_runs=1_000,
            memory_checkpoints=(1_000, 2_000, 3_000, 4_000, 5_000),
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            min_seconds=0.0,
            min_runs=20,
            min_reps=2,
            warmup_runs=2,
            concurrent_runs=50,
            resume_events=(1_000, 10_000),
            resume_reps=2,
            size_runs=50,
            memory_checkpoints=(100, 200, 300, 400, 500),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rate(steps: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """A throughput figure: steps, seconds, ms per step and steps per second."""
    return {
        "steps": steps,
        "seconds": round(seconds, 6),
        "ms_per_step": 1000 * seconds / steps if steps else None,
        "steps_per_s": steps / seconds if seconds > 0 else None,
        **extra,
    }


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Median and tail of per-run latencies, in ms."""
    ms = sorted(1000 * s for s in seconds)
    return {
        "run_ms_p50": statistics.median(ms),
        "run_ms_p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "run_ms_max": ms[-1],
    }


def _enough(count: int, started: float, now: float, min_count: int, min_seconds: float) -> bool:
    return count >= min_count and now - started >= min_seconds


def time_loop(once: Callable[[int], Any], min_count: int, min_seconds: float) -> tuple[list[float], float]:
    """Call ``once(i)`` until both minimums are met; return per-call seconds and the total."""
    laps: list[float] = []
    started = now = time.perf_counter()
    while not _enough(len(laps), started, now, min_count, min_seconds):
        t = now
        once(len(laps))
        now = time.perf_counter()
        laps.append(now - t)
    return laps, now - started


async def atime_loop(
    once: Callable[[int], Awaitable[Any]], min_count: int, min_seconds: float
) -> tuple[list[float], float]:
    """The async twin of :func:`time_loop`."""
    laps: list[float] = []
    started = now = time.perf_counter()
    while not _enough(len(laps), started, now, min_count, min_seconds):
        t = now
        await once(len(laps))
        now = time.perf_counter()
        laps.append(now - t)
    return laps, now - started


def sequential_figure(laps: list[float], total: float, steps_per_run: int = STEPS, **extra: Any) -> dict[str, Any]:
    """Runs one after another: every step over the whole loop's time."""
    return rate(len(laps) * steps_per_run, total, runs=len(laps), **latency_summary(laps), **extra)


def burst_figure(laps: list[float], steps_per_rep: int, **extra: Any) -> dict[str, Any]:
    """Repeated bursts: the median burst is the figure; every burst is kept."""
    median = statistics.median(laps)
    return rate(
        steps_per_rep,
        median,
        reps=len(laps),
        rep_ms=[round(1000 * s, 3) for s in laps],
        **extra,
    )


# -- memory ------------------------------------------------------------------------------------


def rss_mib() -> float | None:
    """The process's resident set size now, in MiB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """The process's peak RSS so far (``ru_maxrss``), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


# -- files -------------------------------------------------------------------------------------


def db_bytes(path: str | Path) -> int:
    """Bytes of a SQLite database on disk: the file, its WAL and its shared-memory index."""
    return sum(
        os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal", "-shm") if os.path.exists(f"{path}{suffix}")
    )


def checkpoint(path: str | Path) -> None:
    """Move the WAL into the database file and truncate it."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


# -- machine -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """The filesystem type holding ``path`` (fsync cost depends on it)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], f"{parts[2]} on {parts[1]}"
    return kind


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info(tmp: Path) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[1]
    commit = _git(repo, "rev-parse", "--short", "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", "durable")
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "sqlite_version": sqlite3.sqlite_version,
        "packages": package_versions(),
        "tmp_dir": str(tmp),
        "tmp_filesystem": _filesystem(tmp.resolve()),
        "git_commit": (commit + ("+dirty(durable/)" if dirty else "")) if commit else None,
    }


@contextlib.contextmanager
def fresh_dir(tmp: Path | None, prefix: str) -> Iterator[Path]:
    """A new temporary directory (under ``tmp`` when given), removed afterwards."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"durable-bench-{prefix}-", dir=tmp) as d:
        yield Path(d)
