"""The commands that look at runs: ``demo | runs | show | history | timeline | state | fork | export | import | check``.

Thin by design: parse with click, call the engine, print with rich (the tables and charts
are built in :mod:`durable.cli.render`, :mod:`durable.cli.show` and :mod:`durable.cli.timeline`). Every
:class:`~durable.errors.DurableError` becomes one line on stderr (``error: ...``) and exit
status 1; usage errors are click's (exit status 2).

The commands that read (every one but ``demo`` and ``import``) never create a database:
pointed at a path where none exists, they say so and stop. ``docs/debugging.md`` walks
through them on a failing run.
"""

from __future__ import annotations

import difflib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .. import events as ev
from ..definition import Workflow
from ..engine import Engine
from ..errors import InvalidRunDocument, RunAlreadyExists
from ..fold import fold
from ..journal.base import RunInfo
from ..journal.portable import parse_document
from ..replay import replay
from .render import changes_text, history_table, runs_table
from .show import failure_traceback, run_summary
from .support import (
    RUN_ID,
    SORT_KEYS,
    BadInput,
    CliError,
    Since,
    db_option,
    db_path,
    existing_db,
    load,
    make_console,
    natural_key,
    parse_json,
    print_json,
    run_async,
    run_json,
)
from .timeline import timeline as timeline_chart

__all__ = ["check", "demo", "demo_child", "export_", "fork", "history", "import_", "runs", "show", "state", "timeline"]


@click.command()
@db_option(on_group=False)
@click.pass_context
def demo(ctx: click.Context, db: str | None) -> None:
    """Run a sample checkout in a child process, kill it with SIGKILL mid-run, and resume it.

    The journal goes to a file in a fresh temporary directory unless --db is given on the
    command line (DURABLE_DB is ignored here, so the demo never writes to your journal
    unless you ask it to).
    """
    from . import demo as demo_module  # imported here: demo imports this module's tables

    root = ctx.find_root()
    if db is None and root.get_parameter_source("db") is click.core.ParameterSource.COMMANDLINE:
        db = root.params["db"]
    code = run_async(lambda: demo_module.run_demo(make_console(), db), expected=(demo_module.DemoError,))
    ctx.exit(code)


@click.command("demo-child", hidden=True)
@click.option("--db", required=True)
@click.option("--run-id", required=True)
@click.option("--effects", required=True, type=click.Path(dir_okay=False))
def demo_child(db: str, run_id: str, effects: str) -> None:
    """Internal: the demo's child process, which runs the sample workflow until it is killed."""
    from . import demo as demo_module

    run_async(lambda: demo_module.run_child(db, run_id, Path(effects)))


# -- runs -----------------------------------------------------------------------------------


@click.command()
@db_option(on_group=False)
@click.option(
    "--status",
    type=click.Choice(["running", "completed", "failed", "cancelled"], case_sensitive=False),
    help="Only runs with this status.",
)
@click.option("--workflow", "-w", metavar="NAME", help="Only runs of this workflow.")
@click.option("--since", type=Since(), help="Only runs created since WHEN: 2026-11-22T17:30, or 1h, 2d (ago).")
@click.option(
    "--sort",
    type=click.Choice(list(SORT_KEYS)),
    default="created",
    show_default=True,
    help="Order by this field (ties: by creation time).",
)
@click.option("--asc/--desc", default=None, help="Direction [default: --desc for times, --asc for names].")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="At most N runs.")
@click.option("--json", "as_json", is_flag=True, help='Print {"version": 1, "runs": [...]} instead of a table.')
@click.pass_context
def runs(
    ctx: click.Context,
    db: str | None,
    status: str | None,
    workflow: str | None,
    since: datetime | None,
    sort: str,
    asc: bool | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first (or as --sort says)."""
    path = existing_db(db_path(ctx, db))

    async def body() -> list[RunInfo]:
        async with Engine(path) as engine:
            return await engine.list_runs(status=status, workflow=workflow)

    found = run_async(body)
    if since is not None:
        found = [r for r in found if r.created_at >= since]
    ascending = asc if asc is not None else sort in ("status", "workflow")
    key = SORT_KEYS[sort]
    # Two stable sorts: by creation time (newest first), then by the field asked for.
    found.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    found.sort(key=key, reverse=not ascending)
    if as_json:
        print_json("runs", [run_json(r) for r in found[:limit]])
        return
    console = make_console()
    if not found:
        what = f"{status} runs" if status else "runs"
        of = f" of workflow {workflow!r}" if workflow else ""
        after = f" created since {since:%Y-%m-%d %H:%M:%S} UTC" if since else ""
        hint = "" if status or workflow or since else f"; 'durable demo --db {path}' adds one to look at"
        console.print(f"no {what}{of}{after} in {path}{hint}")
        return
    console.print(runs_table(found[:limit]))
    if len(found) > limit:
        console.print(f"showing {limit} of {len(found)} runs; pass --limit to see more")


# -- one run --------------------------------------------------------------------------------


def _read_history(ctx: click.Context, db: str | None, run_id: str) -> list[ev.Event]:
    path = existing_db(db_path(ctx, db))

    async def body() -> list[ev.Event]:
        async with Engine(path) as engine:
            return await engine.history(run_id)

    return run_async(body)


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--node", "nodes", multiple=True, metavar="NODE", help="Only events of this node (repeatable).")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the events as a JSON array.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print the events as JSON, one per line.")
@click.pass_context
def history(
    ctx: click.Context,
    db: str | None,
    run_id: str,
    nodes: tuple[str, ...],
    types: tuple[str, ...],
    as_json: bool,
    as_jsonl: bool,
) -> None:
    """Show the events of RUN_ID, in order, with how long each attempt took."""
    if as_json and as_jsonl:
        raise click.UsageError("pass --json or --jsonl, not both")
    unknown = sorted(set(types) - ev.EVENT_TYPES)
    if unknown:
        raise CliError(
            f"unknown event type {', '.join(map(repr, unknown))}; the types are {', '.join(sorted(ev.EVENT_TYPES))}"
        )
    events = _read_history(ctx, db, run_id)
    if nodes:
        known = {n for e in events if (n := getattr(e, "node", None))} | set(fold(events[:1]).nodes)
        missing = sorted(set(nodes) - known)
        if missing:
            close = difflib.get_close_matches(missing[0], sorted(known), n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            listed = sorted(known, key=natural_key)
            shown_nodes = ", ".join(listed[:12]) + (f", ... ({len(listed) - 12} more)" if len(listed) > 12 else "")
            raise CliError(
                f"run {run_id!r} has no node {', '.join(map(repr, missing))}; {hint}its nodes are {shown_nodes}"
            )
    shown = [e for e in events if (not nodes or getattr(e, "node", None) in nodes) and (not types or e.type in types)]
    if as_json or as_jsonl:
        docs = [e.model_dump(mode="json") for e in shown]
        if as_json:
            click.echo(json.dumps(docs, indent=2, ensure_ascii=False))
        for doc in docs if as_jsonl else []:
            click.echo(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
        return
    filtered = f", {len(shown)} shown" if nodes or types else ""
    make_console().print(history_table(events, title=f"run {run_id}: {len(events)} events{filtered}", shown=shown))


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--json", "as_json", is_flag=True, help='Print {"version": 1, "run": {...}} (index row and state).')
@click.pass_context
def show(ctx: click.Context, db: str | None, run_id: str, as_json: bool) -> None:
    """Summarise RUN_ID: status, times, input, result or error with its traceback, and every step."""
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[list[ev.Event], RunInfo | None]:
        async with Engine(path) as engine:
            return await engine.history(run_id), await engine.journal.get_run(run_id)

    events, info = run_async(body)
    if as_json:
        assert info is not None
        print_json("run", {**run_json(info), "state": fold(events, run_id).to_dict()})
        return
    console = make_console()
    console.print(run_summary(run_id, events, info))
    trace = failure_traceback(run_id, events)
    if trace is not None:
        console.print(trace, soft_wrap=True)  # whole lines: it is copied into editors and bug reports


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.pass_context
def timeline(ctx: click.Context, db: str | None, run_id: str) -> None:
    """Draw RUN_ID as a Gantt chart: a lane per step, a bar per attempt, scaled to the terminal."""
    events = _read_history(ctx, db, run_id)
    console = make_console()
    console.print(timeline_chart(run_id, events, console.width))


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--at", "at", type=int, metavar="SEQ", help="The state after event SEQ (0: before any event).")
@click.option("--changes", is_flag=True, help="Print what each event changed (up to SEQ) instead of the state.")
@click.pass_context
def state(ctx: click.Context, db: str | None, run_id: str, at: int | None, changes: bool) -> None:
    """Print the state of RUN_ID (the fold of its events) as JSON, or what each event changed."""
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[dict[str, Any], list[ev.Event]]:
        async with Engine(path) as engine:
            folded = await engine.state(run_id, at=at)  # checks the run and the seq
            return folded.to_dict(), (await engine.history(run_id))[: folded.last_seq]

    folded, events = run_async(body)
    if not changes:
        click.echo(json.dumps(folded, indent=2, ensure_ascii=False))
        return
    if not events:
        click.echo(f"run {run_id}: no events up to seq 0")
        return
    make_console().print(changes_text(replay(events, run_id)), end="")


# -- fork, export, import, check ------------------------------------------------------------


def _pick_definition(ref: str, workflow_name: str) -> Workflow:
    found = [w for w in load([ref]) if w.name == workflow_name]
    if len(found) != 1:
        what = "no workflow" if not found else f"{len(found)} workflows"
        raise CliError(f"{ref} holds {what} named {workflow_name!r}; point --definition at exactly one")
    return found[0]


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--at", "at", type=int, metavar="SEQ", help="Copy the events up to SEQ.")
@click.option("--from-step", "from_step", metavar="NODE", help="Copy everything before NODE's first event.")
@click.option("--new-run-id", type=RUN_ID, metavar="ID", help="The new run's id [default: RUN_ID-fork-<random>].")
@click.option(
    "--definition",
    metavar="pkg.module:attr",
    help="Give the new run this definition (when the fix changed it); the current directory is importable.",
)
@click.pass_context
def fork(
    ctx: click.Context,
    db: str | None,
    run_id: str,
    at: int | None,
    from_step: str | None,
    new_run_id: str | None,
    definition: str | None,
) -> None:
    """Copy the start of RUN_ID into a new run, to resume it with fixed code; print the new id.

    The new run's id goes to stdout (NEW=$(durable fork ...)); how to resume it, to stderr.
    """
    if (at is None) == (from_step is None):
        raise click.UsageError("pass exactly one of --at SEQ and --from-step NODE")
    if new_run_id is not None and not new_run_id.strip():
        raise CliError("--new-run-id must not be empty")
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[str, ev.RunStarted]:
        async with Engine(path) as engine:
            first = (await engine.history(run_id))[0]
            assert isinstance(first, ev.RunStarted)
            workflow = _pick_definition(definition, first.workflow) if definition else None
            new_id = await engine.fork(run_id, at=at, from_step=from_step, new_run_id=new_run_id, workflow=workflow)
            started = (await engine.history(new_id))[0]
            assert isinstance(started, ev.RunStarted)
            return new_id, started

    new_id, started = run_async(body, expected=(CliError,))
    origin = started.forked_from
    assert origin is not None
    click.echo(new_id)
    before = f" (everything before step {from_step!r})" if from_step else ""
    workflow = f"{started.workflow!r} v{started.version}, definition {started.definition_hash[:12]}"
    click.echo(
        f"forked run {run_id} at seq {origin.seq}{before} into {new_id}; it is unfinished until you resume it "
        f"with workflow {workflow} from your code:\n"
        f"  durable.run(workflow, run_id={new_id!r}, db={path!r})\n"
        f"  or, in async code: await engine.resume({new_id!r}, workflow)",
        err=True,
    )


@click.command("export")
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.pass_context
def export_(ctx: click.Context, db: str | None, run_id: str) -> None:
    """Print RUN_ID as a JSON document (its events and definition): durable export RUN_ID > run.json."""
    path = existing_db(db_path(ctx, db))

    async def body() -> dict[str, Any]:
        async with Engine(path) as engine:
            return await engine.export(run_id)

    click.echo(json.dumps(run_async(body), indent=2, ensure_ascii=False))


@click.command("import")
@db_option(on_group=False)
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=True, allow_dash=True))
@click.option("--new-run-id", type=RUN_ID, metavar="ID", help="Import under this id instead of the document's.")
@click.pass_context
def import_(ctx: click.Context, db: str | None, file: str, new_run_id: str | None) -> None:
    """Load a run exported with 'durable export' (FILE, or - for stdin) into the journal."""
    name = "stdin" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}; nothing was imported") from None
    doc = parse_json(text, name, "make a run document with 'durable export RUN_ID > run.json'")
    try:  # validate before the journal is opened, so that a bad file leaves no trace at all
        doc_run_id, events = parse_document(doc)
    except InvalidRunDocument as exc:
        raise BadInput(f"{name}: {exc}; nothing was imported") from None
    if new_run_id is not None and not new_run_id.strip():
        raise CliError("--new-run-id must not be empty")
    path = db_path(ctx, db)
    if not Path(path).parent.is_dir():
        raise CliError(f"cannot import into {path}: the directory {str(Path(path).parent)!r} does not exist")

    async def body() -> str:
        async with Engine(path) as engine:
            try:
                return await engine.import_run(doc, new_run_id=new_run_id)
            except RunAlreadyExists:
                raise CliError(
                    f"a run with id {new_run_id or doc_run_id!r} already exists in {path}; nothing was imported "
                    "(pass --new-run-id ID to import it under another id)"
                ) from None

    run_id = run_async(body, expected=(CliError,))
    first = events[0]
    assert isinstance(first, ev.RunStarted)
    click.echo(
        f"imported run {run_id} ({first.workflow} v{first.version}, {len(events)} events) into {path}; "
        f"look at it with: durable --db {path} show {run_id}"
    )


@click.command()
@db_option(on_group=False)
@click.option(
    "--workflows",
    "refs",
    multiple=True,
    required=True,
    metavar="pkg.module:attr",
    help="Definitions to check against: a Workflow, or a list/tuple/dict of them (repeatable).",
)
@click.pass_context
def check(ctx: click.Context, db: str | None, refs: tuple[str, ...]) -> None:
    """Check that every unfinished run can be resumed by these definitions (before you deploy them).

    Exit status 0 if they all can, 1 if some cannot (each is listed with what changed).
    """
    path = existing_db(db_path(ctx, db))
    workflows = load(refs)

    async def body() -> tuple[int, list[Any]]:
        async with Engine(path) as engine:
            unfinished = await engine.list_runs(status="running")
            return len(unfinished), await engine.check_compatibility(workflows)

    total, bad = run_async(body)
    names = ", ".join(f"{w.name} v{w.version} ({w.definition_hash[:12]})" for w in workflows)
    if not bad:
        if total == 0:
            click.echo(f"OK: no unfinished runs in {path}")
        else:
            runs = "the one unfinished run" if total == 1 else f"all {total} unfinished runs"
            click.echo(f"OK: {runs} in {path} can be resumed by {names}")
        return
    lines = [f"{len(bad)} of {total} unfinished runs in {path} cannot be resumed by {names}:"]
    for item in bad:
        lines.append(f"  {item.run_id}  {item.workflow} v{item.version} ({item.definition_hash[:12]})")
        lines += [f"    - {change}" for change in item.changes]
    lines.append(
        "Deploy the old definitions next to the new ones (pass both to engine.recover), "
        "or let these runs finish before you deploy."
    )
    click.echo("\n".join(lines))
    ctx.exit(1)
