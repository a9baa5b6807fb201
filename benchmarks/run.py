"""The benchmark runner: ``python -m benchmarks [--quick] [--out DIR] [--only NAME,...]``.

Each benchmark runs in a process of its own (the runner starts ``python -m benchmarks
--worker NAME``), so that its peak memory is its own, and a peer's background threads
(DBOS keeps some) cannot slow the next measurement. ``--in-process`` runs them all here
instead; :func:`run_benchmarks` is the same thing as a function, for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import durable_bench, peers
from benchmarks.common import Sizes, machine_info, peak_rss_mib
from benchmarks.report import print_report, write_json, write_plot

Bench = Callable[[Sizes, Path | None], dict[str, Any]]

BENCHMARKS: dict[str, Bench] = {
    "sequential": durable_bench.sequential,
    "concurrent": durable_bench.concurrent,
    "fork": durable_bench.fork,
    "resume": durable_bench.resume,
    "size": durable_bench.size,
    "memory": durable_bench.memory,
    "sqlite": peers.raw_sqlite,
    "aiosqlite": peers.aiosqlite_peer,
    "dbos": peers.dbos_peer,
    "langgraph": peers.langgraph_peer,
}
GROUPS = {
    "durable": ["sequential", "concurrent", "fork", "resume", "size", "memory"],
    "peers": ["sqlite", "aiosqlite", "dbos", "langgraph"],
}
REPO = Path(__file__).resolve().parents[1]


def select(only: str | None) -> list[str]:
    """Benchmark names from ``--only`` (names or the groups 'durable', 'peers'), in the canonical order."""
    if not only:
        return list(BENCHMARKS)
    wanted: set[str] = set()
    for name in (n.strip() for n in only.split(",") if n.strip()):
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in BENCHMARKS:
            wanted.add(name)
        else:
            choices = ", ".join([*BENCHMARKS, *GROUPS])
            raise SystemExit(f"--only: unknown benchmark {name!r}; choose from {choices}")
    return [n for n in BENCHMARKS if n in wanted]


def run_one(name: str, sizes: Sizes, tmp: Path | None) -> dict[str, Any]:
    """Run one benchmark in this process; never raises (a failure is recorded as ``error``)."""
    started = time.perf_counter()
    try:
        result = BENCHMARKS[name](sizes, tmp)
    except Exception:
        result = {"error": traceback.format_exc()}
    result["wall_s"] = round(time.perf_counter() - started, 3)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_benchmarks(names: list[str], sizes: Sizes, tmp: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run the named benchmarks one after another in this process; return their figures by name."""
    return {name: run_one(name, sizes, tmp) for name in names}


def _run_isolated(name: str, quick: bool, tmp: Path | None, timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(prefix=f"durable-bench-{name}-", suffix=".json", delete=False) as f:
        result_file = Path(f.name)
    cmd = [sys.executable, "-m", "benchmarks", "--worker", name, "--result-file", str(result_file)]
    if quick:
        cmd.append("--quick")
    if tmp is not None:
        cmd += ["--tmp", str(tmp)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not result_file.stat().st_size:
            return {"error": f"worker exited {proc.returncode}\n{proc.stderr[-4000:]}"}
        result: dict[str, Any] = json.loads(result_file.read_text())
        return result
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        result_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where JSON and PNG go")
    parser.add_argument("--only", help="comma-separated: " + ", ".join([*BENCHMARKS, *GROUPS]))
    parser.add_argument("--tmp", type=Path, help="directory for the temporary databases (default: the system's)")
    parser.add_argument("--in-process", action="store_true", help="run every benchmark in this process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.tmp is not None and not args.tmp.is_dir():
        parser.error(f"--tmp {args.tmp}: no such directory; create it (mkdir -p) or choose another")

    if args.worker:  # one benchmark in this process, figures to --result-file
        result = run_one(args.worker, sizes, args.tmp)
        args.result_file.write_text(json.dumps(result))
        return 0

    from rich.console import Console

    names = select(args.only)
    err = Console(stderr=True)
    tmp = args.tmp or Path(tempfile.gettempdir())
    started_at = datetime.now(UTC)
    meta = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "quick": args.quick,
        "isolated": not args.in_process,
        "sizes": sizes.to_dict(),
        "benchmarks": names,
        "machine": machine_info(tmp),
    }
    results: dict[str, dict[str, Any]] = {}
    timeout = 300 if args.quick else 1800
    for name in names:
        with err.status(f"running {name}..."):
            if args.in_process:
                results[name] = run_one(name, sizes, args.tmp)
            else:
                results[name] = _run_isolated(name, args.quick, args.tmp, timeout)
        r = results[name]
        outcome = "failed" if "error" in r else f"{r.get('wall_s', 0):.1f} s"
        if r.get("installed") is False:
            outcome = r["message"]
        err.print(f"  {name}: {outcome}", markup=False)
    meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    data = {"meta": meta, "results": results}

    print_report(data)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{started_at:%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}"
    json_path = args.out / f"{stem}.json"
    write_json(data, json_path)
    print(f"figures: {json_path}")
    png_path = args.out / f"{stem}.png"
    why_not = write_plot(data, png_path)
    print(why_not or f"plot: {png_path}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
