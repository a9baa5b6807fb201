"""The same workloads on the peers: raw SQLite commits, aiosqlite, DBOS Transact, LangGraph.

Raw ``sqlite3`` and ``aiosqlite`` are always there (aiosqlite is a dependency of durable);
DBOS and LangGraph come with the ``bench`` extra and are imported only inside their
functions, so this module imports without them. A missing peer returns
``{"installed": False, ...}`` and the runner goes on.

Every peer writes to SQLite in WAL mode with ``PRAGMA synchronous`` set per column (FULL,
NORMAL), like durable, so the columns compare the same physical settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sqlite3
from pathlib import Path
from typing import Any

from .common import INSTALL_HINT, MODES, STEPS, Sizes, atime_loop, burst_figure, fresh_dir, sequential_figure, time_loop


def _missing(*modules: str) -> dict[str, Any] | None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return {"installed": False, "message": INSTALL_HINT, "missing": module}
    return None


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- raw sqlite3: the physical limit -----------------------------------------------------------

_TABLE = "CREATE TABLE IF NOT EXISTS steps (id INTEGER PRIMARY KEY, run INTEGER NOT NULL, payload TEXT NOT NULL)"
_INSERT = "INSERT INTO steps (run, payload) VALUES (?, ?)"


def _raw_sqlite(path: Path, mode: str, sizes: Sizes) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute(f"PRAGMA synchronous={mode}")
        conn.execute(_TABLE)

        def one_run(i: int) -> None:
            for s in range(STEPS):  # one commit per step, as durable commits once per step
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_INSERT, (i, f'{{"output":{s}}}'))
                conn.execute("COMMIT")

        for i in range(sizes.warmup_runs):
            one_run(-i)
        laps, total = time_loop(one_run, sizes.min_runs, sizes.min_seconds)
    return sequential_figure(laps, total)


def raw_sqlite(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """One INSERT per BEGIN IMMEDIATE/COMMIT transaction on one sqlite3 connection (WAL)."""
    out: dict[str, Any] = {"installed": True, "version": sqlite3.sqlite_version, "sequential": {}}
    for mode in MODES:
        with fresh_dir(tmp, "sqlite") as d:
            out["sequential"][mode] = {"sync": _raw_sqlite(d / "raw.db", mode, sizes)}
    return out


# -- aiosqlite: the same commit through three awaited calls -------------------------------------


async def _aiosqlite(path: Path, mode: str, sizes: Sizes) -> dict[str, Any]:
    import aiosqlite

    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={mode}")
        await conn.execute(_TABLE)

        async def one_run(i: int) -> None:
            for s in range(STEPS):  # three awaited calls, each a hop to aiosqlite's thread and back
                await conn.execute("BEGIN IMMEDIATE")
                await conn.execute(_INSERT, (i, f'{{"output":{s}}}'))
                await conn.execute("COMMIT")

        for i in range(sizes.warmup_runs):
            await one_run(-i)
        laps, total = await atime_loop(one_run, sizes.min_runs, sizes.min_seconds)
    return sequential_figure(laps, total)


def aiosqlite_peer(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """BEGIN IMMEDIATE / INSERT / COMMIT as three awaited aiosqlite calls per step (WAL)."""
    out: dict[str, Any] = {"installed": True, "version": _version("aiosqlite"), "sequential": {}}
    for mode in MODES:
        with fresh_dir(tmp, "aiosqlite") as d:
            out["sequential"][mode] = {"async": asyncio.run(_aiosqlite(d / "aio.db", mode, sizes))}
    return out


# -- DBOS Transact with its SQLite system database ----------------------------------------------

_dbos_workflows: dict[str, Any] = {}
_dbos_mode: list[str] = ["FULL"]


def _dbos_register() -> dict[str, Any]:
    """Register the DBOS workflows once per process (DBOS keeps a global registry)."""
    if _dbos_workflows:
        return _dbos_workflows
    import sqlalchemy
    from dbos import DBOS
    from sqlalchemy import event

    # DBOS's SQLite engine sets no journal mode or synchronous; the database file is put in WAL
    # mode before DBOS opens it, and this hook sets synchronous on every connection it opens.
    @event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _synchronous(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA synchronous={_dbos_mode[0]}")

    @DBOS.step()
    def sync_step(x: int) -> int:
        return x

    @DBOS.workflow()
    def sync_workflow(x: int) -> int:
        for _ in range(STEPS):
            x = sync_step(x)
        return x

    @DBOS.step()
    async def async_step(x: int) -> int:
        return x

    @DBOS.workflow()
    async def async_workflow(x: int) -> int:
        for _ in range(STEPS):
            x = await async_step(x)
        return x

    _dbos_workflows.update(sync=sync_workflow, async_=async_workflow)
    return _dbos_workflows


def _dbos_mode_run(path: Path, mode: str, sizes: Sizes, journal: str) -> dict[str, Any]:
    import logging

    from dbos import DBOS

    wfs = _dbos_register()
    _dbos_mode[0] = mode
    if journal == "wal":
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
    DBOS(config={"name": "durable-bench", "system_database_url": f"sqlite:///{path}", "log_level": "WARNING"})
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS.launch()
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            actual_journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync_wf, async_wf = wfs["sync"], wfs["async_"]
        for i in range(sizes.warmup_runs):
            sync_wf(i)
        laps, total = time_loop(sync_wf, sizes.min_runs, sizes.min_seconds)
        out: dict[str, Any] = {"sync": sequential_figure(laps, total, journal_mode=actual_journal)}

        async def async_part() -> tuple[dict[str, Any], dict[str, Any]]:
            for i in range(sizes.warmup_runs):
                await async_wf(i)
            laps, total = await atime_loop(async_wf, sizes.min_runs, sizes.min_seconds)
            seq = sequential_figure(laps, total, journal_mode=actual_journal)
            n = sizes.concurrent_runs

            async def burst(_: int) -> None:
                await asyncio.gather(*(async_wf(i) for i in range(n)))

            laps, _ = await atime_loop(burst, sizes.min_reps, sizes.min_seconds)
            return seq, burst_figure(laps, n * STEPS, runs=n, journal_mode=actual_journal)

        out["async"], concurrent = asyncio.run(async_part())
        return {"journal_mode": actual_journal, "sequential": out, "concurrent": concurrent}
    finally:
        DBOS.destroy()


def dbos_peer(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """A DBOS workflow of 10 @DBOS.step no-op steps, SQLite system database; sync and async."""
    missing = _missing("dbos")
    if missing:
        return missing
    out: dict[str, Any] = {"installed": True, "version": _version("dbos"), "sequential": {}, "concurrent": {}}
    for mode in MODES:
        with fresh_dir(tmp, "dbos") as d:
            figures = _dbos_mode_run(d / "dbos.sqlite", mode, sizes, journal="wal")
        out["sequential"][mode] = figures["sequential"]
        out["concurrent"][mode] = figures["concurrent"]
    # As shipped: DBOS leaves SQLite in its default rollback journal (synchronous FULL).
    with fresh_dir(tmp, "dbos") as d:
        out["as_shipped"] = _dbos_mode_run(d / "dbos.sqlite", "FULL", sizes, journal="default")
    return out


# -- LangGraph with its SQLite checkpointer -----------------------------------------------------


def _langgraph_graph(async_nodes: bool) -> Any:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        x: int

    def node(state: State) -> State:
        return {"x": state["x"]}

    async def anode(state: State) -> State:
        return {"x": state["x"]}

    graph = StateGraph(State)
    prev = START
    for i in range(STEPS):
        graph.add_node(f"n{i}", anode if async_nodes else node)
        graph.add_edge(prev, f"n{i}")
        prev = f"n{i}"
    graph.add_edge(prev, END)
    return graph


def _langgraph_sync(path: Path, mode: str, sizes: Sizes) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with contextlib.closing(sqlite3.connect(path, check_same_thread=False)) as conn:
        conn.execute(f"PRAGMA synchronous={mode}")
        saver = SqliteSaver(conn)
        saver.setup()  # sets journal_mode=WAL
        app = _langgraph_graph(async_nodes=False).compile(checkpointer=saver)

        def one_run(i: int) -> None:
            app.invoke({"x": i}, {"configurable": {"thread_id": f"t{i}"}})

        for i in range(sizes.warmup_runs):
            app.invoke({"x": i}, {"configurable": {"thread_id": f"warm{i}"}})
        laps, total = time_loop(one_run, sizes.min_runs, sizes.min_seconds)
    return sequential_figure(laps, total)


async def _langgraph_async(path: Path, mode: str, sizes: Sizes) -> tuple[dict[str, Any], dict[str, Any]]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(path) as conn:
        await conn.execute(f"PRAGMA synchronous={mode}")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()  # sets journal_mode=WAL
        app = _langgraph_graph(async_nodes=True).compile(checkpointer=saver)

        async def one_run(i: int, prefix: str = "t") -> None:
            await app.ainvoke({"x": i}, {"configurable": {"thread_id": f"{prefix}{i}"}})

        for i in range(sizes.warmup_runs):
            await one_run(i, "warm")
        laps, total = await atime_loop(one_run, sizes.min_runs, sizes.min_seconds)
        seq = sequential_figure(laps, total)
        n = sizes.concurrent_runs

        async def burst(rep: int) -> None:
            await asyncio.gather(*(one_run(i, f"c{rep}-") for i in range(n)))

        laps, _ = await atime_loop(burst, sizes.min_reps, sizes.min_seconds)
    return seq, burst_figure(laps, n * STEPS, runs=n)


def langgraph_peer(sizes: Sizes, tmp: Path | None = None) -> dict[str, Any]:
    """A StateGraph of 10 no-op nodes in a chain, SqliteSaver / AsyncSqliteSaver, new thread per run."""
    missing = _missing("langgraph", "langgraph.checkpoint.sqlite")
    if missing:
        return missing
    out: dict[str, Any] = {"installed": True, "version": _version("langgraph"), "sequential": {}, "concurrent": {}}
    out["checkpointer_version"] = _version("langgraph-checkpoint-sqlite")
    for mode in MODES:
        with fresh_dir(tmp, "langgraph") as d:
            sync_fig = _langgraph_sync(d / "lg.sqlite", mode, sizes)
        with fresh_dir(tmp, "langgraph") as d:
            async_fig, conc_fig = asyncio.run(_langgraph_async(d / "lg.sqlite", mode, sizes))
        out["sequential"][mode] = {"sync": sync_fig, "async": async_fig}
        out["concurrent"][mode] = conc_fig
    return out
