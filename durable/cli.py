"""The command line: ``durable demo | runs | history | state``.

Thin by design: parse with click, call the engine, print with rich. Every
:class:`~durable.errors.DurableError` becomes one line on stderr (``error: ...``) and exit
status 1; usage errors are click's (exit status 2).

The read-only commands (``runs``, ``history``, ``state``) never create a database: pointed
at a path where none exists, they say so and stop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import events as ev
from .engine import Engine
from .errors import DurableError
from .journal import RunInfo

__all__ = ["cli", "history_table", "main"]

T = TypeVar("T")

DEFAULT_DB = "durable.db"
_STATUS_STYLE = {"running": "yellow", "completed": "green", "failed": "red", "cancelled": "magenta"}
_PAYLOAD_WIDTH = 200  # a first cut; the table cuts again to the terminal's width


class CliError(click.ClickException):
    """A failure the user can act on: printed as one ``error: ...`` line, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _one_line(message: str) -> str:
    """Fold a multi-line message (a definition mismatch lists its changes) into one line."""
    lines = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip()]
    return "; ".join(lines)


def _leaf(exc: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    """The exception of one of ``kinds`` in ``exc`` (which may be an exception group), if any."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, kinds)
            if found is not None:
                return found
    return None


def run_async(fn: Callable[[], Awaitable[T]], *, expected: tuple[type[Exception], ...] = ()) -> T:
    """Run ``fn`` on a fresh event loop; a ``DurableError`` (or one of ``expected``) becomes a :class:`CliError`."""
    try:
        return anyio.run(fn)
    except BaseException as exc:
        leaf = _leaf(exc, (DurableError, *expected))
        if leaf is None:
            raise
        raise CliError(_one_line(str(leaf))) from None


# -- the --db option ------------------------------------------------------------------------


def _db_option(*, on_group: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if on_group:
        return click.option(
            "--db",
            envvar="DURABLE_DB",
            default=DEFAULT_DB,
            show_default=True,
            show_envvar=True,
            metavar="PATH",
            help="The journal: a SQLite file.",
        )
    return click.option("--db", "db", default=None, metavar="PATH", help="The journal (overrides the group's --db).")


def _db_path(ctx: click.Context, db: str | None) -> str:
    """The subcommand's --db if given, else the group's (which falls back to DURABLE_DB, then ./durable.db)."""
    if db is not None:
        return db
    root = ctx.find_root()
    return str(root.params.get("db") or DEFAULT_DB)


def _existing_db(path: str) -> str:
    """Refuse, without creating anything, a path where no database exists yet."""
    p = Path(path)
    if not p.parent.is_dir():
        raise CliError(
            f"no database at {path}: the directory {str(p.parent)!r} does not exist; "
            "point --db or DURABLE_DB at a journal"
        )
    if not p.exists():
        raise CliError(
            f"no database at {path}; point --db or DURABLE_DB at a journal "
            f"('durable demo --db {path}' makes one with a sample run)"
        )
    if p.is_file() and p.stat().st_size == 0:
        raise CliError(f"{path} is an empty file, not a durable journal; it was left untouched (pass --db)")
    return path


# -- rendering ------------------------------------------------------------------------------


def _clip(text: str, width: int = _PAYLOAD_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _offset(seconds: float) -> str:
    """A time offset from the run's start: ``+0.312s``, ``+2m05.1s``, ``+3h02m07s``, ``+1d04h10m``."""
    if seconds < 60:
        return f"+{seconds:.3f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"+{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 24:
        return f"+{hours}h{minutes:02d}m{int(secs):02d}s"
    days, hours = divmod(hours, 24)
    return f"+{days}d{hours:02d}h{minutes:02d}m"


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def payload_summary(event: ev.Event) -> Text:
    """What an event carries beyond its columns, in one short line; errors in red."""
    text, style = _payload(event)
    return Text(_clip(text), style=style, no_wrap=True, overflow="ellipsis")


def _payload(event: ev.Event) -> tuple[str, str]:
    """(text, style) of an event's payload."""
    match event:
        case ev.RunStarted():
            hash_ = event.definition_hash[:12]
            return f"{event.workflow} v{event.version} def {hash_} input={_compact(event.input)}", ""
        case ev.StepScheduled() if event.not_before is not None:
            return f"not before {event.not_before.isoformat(timespec='milliseconds')}", ""
        case ev.StepCompleted():
            return f"output={_compact(event.output)}", ""
        case ev.StepFailed():
            then = "final" if event.final else (f"retry at {event.retry_at:%H:%M:%S}" if event.retry_at else "")
            return f"{event.error.type}: {event.error.message} ({then})", "red"
        case ev.ForkStarted():
            return "branches=" + ",".join(event.branches), ""
        case ev.BranchCompleted():
            return f"branch={event.branch}", ""
        case ev.BranchFailed():
            return f"branch={event.branch} {event.error.type}: {event.error.message}", "red"
        case ev.RunCompleted():
            return f"result={_compact(event.result)}", ""
        case ev.RunFailed():
            return f"{event.error.type}: {event.error.message}", "red"
        case ev.RunCancelled():
            return event.reason, ""
    return "", ""


def history_table(events: Sequence[ev.Event], *, title: str | None = None) -> Table:
    """The events of one run as a table: seq, time offset from the run's start, type, node, attempt, payload."""
    start = events[0].ts if events else None
    caption = f"times are offsets from {_when(start)} UTC" if start else None
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD)
    # Every column but the payload keeps its width; the payload gets what is left and is cut
    # there with an ellipsis, so one event is one line ('history --json' has everything).
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("node", no_wrap=True)
    table.add_column("att", justify="right", no_wrap=True)
    table.add_column("payload")
    for event in events:
        failed = event.type in ("step_failed", "branch_failed", "run_failed")
        table.add_row(
            str(event.seq),
            _offset((event.ts - start).total_seconds()) if start else "",
            Text(event.type, style="red" if failed else ("green" if event.type == "run_completed" else "")),
            Text(getattr(event, "node", None) or ""),
            str(getattr(event, "attempt", None) or ""),
            payload_summary(event),
        )
    return table


def runs_table(runs: Sequence[RunInfo]) -> Table:
    """The run index as a table, newest first."""
    table = Table(caption="times are UTC", caption_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("id", overflow="fold")
    table.add_column("workflow", overflow="fold")
    table.add_column("version")
    table.add_column("status")
    table.add_column("events", justify="right")
    table.add_column("created", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for r in runs:
        table.add_row(
            Text(r.run_id),
            Text(r.workflow),
            Text(r.version),
            Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
            str(r.last_seq),
            _when(r.created_at),
            _when(r.updated_at),
        )
    return table


def _console() -> Console:
    # highlight=False: rich would otherwise colour numbers and quotes in ids at random.
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # rich assumes 80 columns for a pipe or a CI log; nothing wraps there
    return console


# -- commands -------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_db_option(on_group=True)
@click.version_option(package_name="durable", prog_name="durable")
def cli(db: str) -> None:
    """Durable workflows in one SQLite file: run the demo, list runs, read a run's history and state."""


@cli.command()
@_db_option(on_group=False)
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
    code = run_async(lambda: demo_module.run_demo(_console(), db), expected=(demo_module.DemoError,))
    ctx.exit(code)


@cli.command("demo-child", hidden=True)
@click.option("--db", required=True)
@click.option("--run-id", required=True)
@click.option("--effects", required=True, type=click.Path(dir_okay=False))
def demo_child(db: str, run_id: str, effects: str) -> None:
    """Internal: the demo's child process, which runs the sample workflow until it is killed."""
    from . import demo as demo_module

    run_async(lambda: demo_module.run_child(db, run_id, Path(effects)))


@cli.command()
@_db_option(on_group=False)
@click.option(
    "--status",
    type=click.Choice(["running", "completed", "failed", "cancelled"], case_sensitive=False),
    help="Only runs with this status.",
)
@click.option("--workflow", "-w", metavar="NAME", help="Only runs of this workflow.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="At most N runs.")
@click.pass_context
def runs(ctx: click.Context, db: str | None, status: str | None, workflow: str | None, limit: int) -> None:
    """List runs, newest first."""
    path = _existing_db(_db_path(ctx, db))

    async def body() -> list[RunInfo]:
        async with Engine(path) as engine:
            return await engine.list_runs(status=status, workflow=workflow, limit=limit)

    found = run_async(body)
    console = _console()
    if not found:
        what = f"{status} runs" if status else "runs"
        of = f" of workflow {workflow!r}" if workflow else ""
        hint = "" if status or workflow else f"; 'durable demo --db {path}' adds one to look at"
        console.print(f"no {what}{of} in {path}{hint}")
        return
    console.print(runs_table(found))
    if len(found) == limit:
        console.print(f"showing the {limit} newest runs; there may be more (pass --limit)")


@cli.command()
@_db_option(on_group=False)
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the events as a JSON array.")
@click.pass_context
def history(ctx: click.Context, db: str | None, run_id: str, as_json: bool) -> None:
    """Show the events of RUN_ID, in order."""
    path = _existing_db(_db_path(ctx, db))

    async def body() -> list[ev.Event]:
        async with Engine(path) as engine:
            return await engine.history(run_id)

    events = run_async(body)
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in events], indent=2, ensure_ascii=False))
        return
    _console().print(history_table(events, title=f"run {run_id}: {len(events)} events"))


@cli.command()
@_db_option(on_group=False)
@click.argument("run_id")
@click.option("--at", "at", type=int, metavar="SEQ", help="The state after event SEQ (0: before any event).")
@click.pass_context
def state(ctx: click.Context, db: str | None, run_id: str, at: int | None) -> None:
    """Print the state of RUN_ID (the fold of its events) as JSON."""
    path = _existing_db(_db_path(ctx, db))

    async def body() -> dict[str, Any]:
        async with Engine(path) as engine:
            return (await engine.state(run_id, at=at)).to_dict()

    click.echo(json.dumps(run_async(body), indent=2, ensure_ascii=False))


def main() -> None:
    """Entry point of the ``durable`` command and of ``python -m durable``."""
    cli.main(prog_name="durable")
