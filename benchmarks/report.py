"""Showing the figures: rich tables on stdout, a JSON file, a PNG plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import INSTALL_HINT, MODES

PEERS = ("dbos", "langgraph", "sqlite", "aiosqlite")
PEER_LABELS = {
    "dbos": "DBOS Transact (WAL)",
    "langgraph": "LangGraph + SQLite checkpointer",
    "sqlite": "raw sqlite3: 1 INSERT per commit",
    "aiosqlite": "aiosqlite: 3 awaited calls per commit",
}

# The targets; checked against the figures, never asserted.
TARGETS = {
    "sequential_full_steps_per_s": 4_000,
    "concurrent_steps_per_s": 15_000,
    "resume_10000_ms": 50,
    "memory_growth_kib_per_1000_runs": 1_024,
}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    """Durable's throughput over the peer's: above 1 means durable is faster."""
    if not ours or not theirs:
        return "-"
    r = ours / theirs
    colour = "green" if r >= 1 else "red"
    return f"[{colour}]{r:.2f}x[/{colour}]"


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _header(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    pk = m["packages"]
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    load = m.get("loadavg_at_start")
    return (
        f"[bold]durable benchmarks[/bold] ({'quick smoke sizes' if meta['quick'] else 'full sizes'}) "
        f"{meta['started_at']}  commit {m.get('git_commit')}\n"
        f"{m['cpu_model']}, nproc {m['nproc']}, load {', '.join(f'{x:.2f}' for x in load) if load else '?'}; "
        f"{m['platform']}\n"
        f"Python {m['python']}, SQLite {m['sqlite_version']}; temp files on {m['tmp_filesystem']}\n"
        f"{versions}"
    )


def _peer_rows(results: dict[str, Any], kind: str) -> list[tuple[str, str, dict[str, Any | None]]]:
    """(label, variant, {mode: figure}) for every peer measured, in a table of ``kind``."""
    rows: list[tuple[str, str, dict[str, Any | None]]] = []
    for peer in PEERS:
        r = results.get(peer)
        if r is None or "error" in r or not r.get("installed", True):
            continue
        label = f"{PEER_LABELS[peer]} {r.get('version') or ''}".strip()
        if kind == "sequential":
            for variant in ("async", "sync"):
                per_mode = {mode: _get(r, "sequential", mode, variant) for mode in MODES}
                if any(per_mode.values()):
                    rows.append((label, variant, per_mode))
        elif "concurrent" in r:
            rows.append((label, "async", {mode: _get(r, "concurrent", mode) for mode in MODES}))
        shipped = r.get("as_shipped")
        if shipped:  # DBOS's own defaults: one column only (its journal mode, synchronous FULL)
            journal = _get(shipped, "journal_mode") or "default"
            shipped_label = f"DBOS Transact {r.get('version') or ''}, as shipped ({journal} journal)"
            if kind == "sequential":
                for variant in ("async", "sync"):
                    rows.append((shipped_label, variant, {"FULL": _get(shipped, "sequential", variant)}))
            elif "concurrent" in shipped:
                rows.append((shipped_label, "async", {"FULL": shipped["concurrent"]}))
    return rows


def _throughput_table(title: str, results: dict[str, Any], kind: str) -> Table:
    ours = results.get(kind, {})
    table = Table(title=title, title_justify="left")
    table.add_column("engine", no_wrap=True)
    table.add_column("steps")
    for mode in MODES:
        table.add_column(f"{mode} ms/step", justify="right")
        table.add_column(f"{mode} steps/s", justify="right")
        table.add_column(f"durable vs it\n{mode}", justify="right")

    def ours_fig(mode: str, variant: str) -> Any:
        return _get(ours, mode, variant) if kind == "sequential" else _get(ours, mode)

    durable_variants = ("async", "sync") if kind == "sequential" else ("async",)
    for variant in durable_variants:
        if not any(ours_fig(mode, variant) for mode in MODES):
            continue
        cells: list[str] = []
        for mode in MODES:
            f = ours_fig(mode, variant)
            cells += [_ms(_get(f, "ms_per_step")), _num(_get(f, "steps_per_s")), ""]
        table.add_row("[bold]durable[/bold]", variant, *cells)
    for label, variant, per_mode in _peer_rows(results, kind):
        cells = []
        for mode in MODES:
            f = per_mode.get(mode)
            mine = ours_fig(mode, variant if kind == "sequential" else "async")
            cells += [
                _ms(_get(f, "ms_per_step")),
                _num(_get(f, "steps_per_s")),
                _ratio(_get(mine, "steps_per_s"), _get(f, "steps_per_s")),
            ]
        table.add_row(label, variant, *cells)
    return table


def _targets(results: dict[str, Any], quick: bool) -> Table:
    title = "Targets (from the issue)" + (": quick sizes, a smoke test, not a measurement" if quick else "")
    table = Table(title=title, title_justify="left")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("")

    def row(name: str, measured: float | None, ok: bool | None, unit: str) -> None:
        verdict = "-" if ok is None else ("[green]met[/green]" if ok else "[red]not met[/red]")
        table.add_row(name, "-" if measured is None else f"{measured:,.1f} {unit}", verdict)

    seq = _get(results, "sequential", "FULL", "async", "steps_per_s")
    row("sequential >= 4,000 steps/s at FULL", seq, None if seq is None else seq >= 4_000, "steps/s")
    for mode in MODES:
        conc = _get(results, "concurrent", mode, "steps_per_s")
        row(f"concurrent >= 15,000 steps/s ({mode})", conc, None if conc is None else conc >= 15_000, "steps/s")
    res = _get(results, "resume", "10000", "state_ms")
    row("resume of 10,000 events < 50 ms", res, None if res is None else res < 50, "ms")
    grow = _get(results, "memory", "growth_kib_per_1000_runs")
    row("memory flat in finished runs (< 1 MiB per 1,000 runs)", grow, None if grow is None else grow < 1024, "KiB")
    return table


def print_report(data: dict[str, Any], console: Console | None = None) -> None:
    # Piped to a file, rich would wrap at 80 columns; the tables need more.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    results = data["results"]
    console.print(_header(data["meta"]))
    if "sequential" in results or any(p in results for p in PEERS):
        console.print(
            _throughput_table(
                "Sequential: runs of 10 no-op steps one after another (durable vs it: durable's steps/s over its)",
                results,
                "sequential",
            )
        )
    if "concurrent" in results or any("concurrent" in (results.get(p) or {}) for p in PEERS):
        n = _get(results, "concurrent", "FULL", "runs") or 200
        console.print(
            _throughput_table(
                f"Concurrent: {n} runs of 10 steps started together (median burst)", results, "concurrent"
            )
        )
    if "fork" in results:
        t = Table(title="Fork: 8 branches x 10 steps + join", title_justify="left")
        for col in ("mode", "median wall ms", "steps/s", "steps", "runs"):
            t.add_column(col, justify="right")
        for mode in MODES:
            f = _get(results, "fork", mode)
            t.add_row(
                mode,
                _ms(_get(f, "seconds") and 1000 * f["seconds"]),
                _num(_get(f, "steps_per_s")),
                str(_get(f, "steps")),
                str(_get(f, "reps")),
            )
        console.print(t)
    if "resume" in results:
        t = Table(title="Resume: load and fold one run (median ms)", title_justify="left")
        for col in ("events", "engine.state", "journal.read", "fold", "db bytes"):
            t.add_column(col, justify="right")
        for n, f in results["resume"].items():
            if isinstance(f, dict) and "state_ms" in f:
                t.add_row(f"{int(n):,}", _ms(f["state_ms"]), _ms(f["read_ms"]), _ms(f["fold_ms"]), _num(f["db_bytes"]))
        console.print(t)
    if "size" in results and "bytes_per_event" in results["size"]:
        s = results["size"]
        console.print(
            f"[bold]Size[/bold]: {s['bytes_per_event']:,.0f} bytes per event on disk after a checkpoint "
            f"({s['events']:,} events of {s['runs']:,} runs, {s['events_per_run']:.0f} per run; "
            f"payload column {s['payload_bytes_per_event']:.0f} bytes per event)"
        )
    if "memory" in results and "rss_mib_after_runs" in results["memory"]:
        m = results["memory"]
        readings = ", ".join(f"{int(k):,}: {_num(v, 1)}" for k, v in m["rss_mib_after_runs"].items())
        console.print(
            f"[bold]Memory[/bold]: RSS MiB after N finished runs in one engine: {readings}; "
            f"growth {m['from_runs']:,} -> {m['to_runs']:,} runs: {_num(m['growth_mib'], 2)} MiB "
            f"({_num(m['growth_kib_per_1000_runs'], 0)} KiB per 1,000 runs)"
        )
    peaks = {
        name: r["peak_rss_mib"]
        for name, r in results.items()
        if isinstance(r, dict) and r.get("peak_rss_mib") and r.get("installed") is not False
    }
    if peaks:
        console.print(
            (
                "[bold]Peak RSS[/bold] (ru_maxrss of each benchmark's process, MiB): "
                if data["meta"].get("isolated", True)
                else "[bold]Peak RSS[/bold] (ru_maxrss of the one process, so far, after each benchmark, MiB): "
            )
            + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items())
        )
    for peer in PEERS:
        r = results.get(peer)
        if r is not None and r.get("installed") is False:
            console.print(f"{PEER_LABELS[peer]}: {escape(r.get('message', INSTALL_HINT))}")
    errors = {k: r["error"] for k, r in results.items() if isinstance(r, dict) and "error" in r}
    for name, err in errors.items():
        last = err.strip().splitlines()[-1] if err.strip() else err
        console.print(f"[red]{name} failed[/red]: {escape(last)} (the traceback is in the JSON)")
    if any(k in results for k in ("sequential", "concurrent", "resume", "memory")):
        console.print(_targets(results, data["meta"].get("quick", False)))


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_plot(data: dict[str, Any], path: Path) -> str | None:
    """Bars of ms/step per engine (sequential, FULL and NORMAL) and resume time vs events (log-log).

    Returns None when written, else why not.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib " + INSTALL_HINT
    results = data["results"]
    fig, (bars, conc, lines) = plt.subplots(1, 3, figsize=(18, 5.5))

    labels: list[str] = []
    values: dict[str, list[float]] = {mode: [] for mode in MODES}

    def add(label: str, per_mode: dict[str, Any]) -> None:
        if not any(_get(per_mode, mode, "ms_per_step") for mode in MODES):
            return
        labels.append(label)
        for mode in MODES:
            values[mode].append(_get(per_mode, mode, "ms_per_step") or 0.0)

    for variant in ("async", "sync"):
        add(f"durable\n{variant}", {m: _get(results, "sequential", m, variant) for m in MODES})
    for peer in PEERS:
        r = results.get(peer) or {}
        for variant in ("async", "sync"):
            add(f"{peer}\n{variant}", {m: _get(r, "sequential", m, variant) for m in MODES})
    width = 0.4
    xs = range(len(labels))
    for k, mode in enumerate(MODES):
        bars.bar([x + (k - 0.5) * width for x in xs], values[mode], width, label=f"synchronous={mode}")
    bars.set_xticks(list(xs), labels, fontsize=8)
    bars.set_ylabel("ms per step (lower is better)")
    bars.set_title("Sequential: 10 no-op steps per run")
    bars.legend()

    conc_labels: list[str] = []
    conc_values: dict[str, list[float]] = {mode: [] for mode in MODES}
    for name, per_mode in [("durable", results.get("concurrent") or {})] + [
        (peer, (results.get(peer) or {}).get("concurrent") or {}) for peer in PEERS
    ]:
        if any(_get(per_mode, mode, "steps_per_s") for mode in MODES):
            conc_labels.append(name)
            for mode in MODES:
                conc_values[mode].append(_get(per_mode, mode, "steps_per_s") or 0.0)
    xs = range(len(conc_labels))
    for k, mode in enumerate(MODES):
        conc.bar([x + (k - 0.5) * width for x in xs], conc_values[mode], width, label=f"synchronous={mode}")
    conc.set_xticks(list(xs), conc_labels, fontsize=8)
    conc.set_ylabel("steps per second (higher is better)")
    n = _get(results, "concurrent", "FULL", "runs") or "N"
    conc.set_title(f"Concurrent: {n} runs of 10 steps started together")
    conc.legend()

    resume = results.get("resume") or {}
    points = sorted((int(n), f) for n, f in resume.items() if isinstance(f, dict) and "state_ms" in f)
    if points:
        ns = [n for n, _ in points]
        for key, label in (
            ("state_ms", "engine.state (read + fold)"),
            ("read_ms", "journal.read"),
            ("fold_ms", "fold"),
        ):
            lines.plot(ns, [f[key] for _, f in points], marker="o", label=label)
        lines.axhline(50, color="grey", linestyle=":", label="target at 10,000 events: 50 ms")
        lines.set_xscale("log")
        lines.set_yscale("log")
        lines.legend()
    lines.set_xlabel("events in the run")
    lines.set_ylabel("ms")
    lines.set_title("Resume: load and fold one run")
    m = data["meta"]["machine"]
    fig.suptitle(
        f"durable {m['packages'].get('durable')} on {m['cpu_model']} x{m['nproc']}, SQLite {m['sqlite_version']}"
        + (" (quick sizes: a smoke test, not a measurement)" if data["meta"].get("quick") else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
