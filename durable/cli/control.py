"""The control commands: ``durable signal | cancel | pause | unpause``.

Each opens the journal and asks for one thing. A run that a live process executes gets the
request in its inbox, and its owner applies it; a run that nobody executes is changed at
once (this command takes its lease for the one event it writes). Each prints one line saying
what happened, or what happens next. ``docs/language.md`` and ``docs/semantics.md`` have the
semantics.
"""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.table import Table

from .._control import signal_names
from .._ownership import owned_by_the_living
from .._scheduler import CONTROL_SIGNAL
from ..engine import Engine
from ..fold import RunState
from ..journal.base import RunInfo, SignalRecord
from .render import clip, compact
from .support import (
    RUN_ID,
    CliError,
    db_option,
    db_path,
    existing_db,
    make_console,
    parse_json,
    print_json,
    run_async,
)

__all__ = ["cancel", "pause", "signal", "signals", "unpause"]


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.argument("name")
@click.option("--data", "data", metavar="JSON", default="null", help="The signal's payload, as JSON [default: null].")
@click.option("--force", is_flag=True, help="Keep it in the inbox even if no wait_for of the run has this name.")
@click.pass_context
def signal(ctx: click.Context, db: str | None, run_id: str, name: str, data: str, force: bool) -> None:
    """Send the signal NAME to RUN_ID: its wait_for(NAME) node receives the payload.

    The signal is kept until the run consumes it, also if the run has not reached its wait
    yet; several signals of one name are delivered in the order sent. A NAME that no
    wait_for of the run waits for is refused (a typo, most likely) unless --force is given.
    """
    payload: Any = parse_json(data, "--data", "quote it for the shell: --data '{\"approved\": true}'")
    if not name.strip():
        raise CliError("the signal NAME must not be empty")
    path = existing_db(db_path(ctx, db))

    async def body() -> int:
        async with Engine(path) as engine:
            return await engine.signal(run_id, name, payload, force=force)

    signal_id = run_async(body)
    click.echo(f"sent signal {name!r} to run {run_id} (signal {signal_id}); its wait_for({name!r}) receives it")


def _owner(info: RunInfo | None) -> str | None:
    """The live owner of a running run, for people, or ``None`` if nobody alive executes it."""
    if info is None or info.status != "running" or not owned_by_the_living(info):
        return None
    return info.holder()


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--reason", default="", metavar="TEXT", help="Why; recorded in the run_cancelled event.")
@click.option(
    "--wait",
    "wait",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the run's owner to stop it (a sync step stops when it returns).",
)
@click.pass_context
def cancel(ctx: click.Context, db: str | None, run_id: str, reason: str, wait: float) -> None:
    """Cancel RUN_ID (and its running children): it ends 'cancelled' and is never resumed."""
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[str | None, bool]:
        async with Engine(path) as engine:
            owner = _owner(await engine.journal.get_run(run_id))
            try:
                await engine.cancel(run_id, reason=reason, timeout=wait)
            except TimeoutError:
                return owner, False
            return owner, True

    owner, done = run_async(body)
    why = f" ({reason})" if reason else ""
    if not done:
        click.echo(
            f"asked {owner or 'its owner'} to cancel run {run_id}{why}; it has not stopped within {wait:g}s "
            "(a step still runs): it ends cancelled at its next transition"
        )
        return
    by = f" (its owner, {owner}, stopped it)" if owner else ""
    click.echo(f"cancelled run {run_id}{why}{by}; it will not be resumed")


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--reason", default="", metavar="TEXT", help="Why; recorded in the run_paused event.")
@click.pass_context
def pause(ctx: click.Context, db: str | None, run_id: str, reason: str) -> None:
    """Pause RUN_ID: it starts no new top-level node until 'durable unpause RUN_ID'."""
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[bool, str | None]:
        async with Engine(path) as engine:
            was_paused = (await engine.state(run_id)).paused
            owner = _owner(await engine.journal.get_run(run_id))
            await engine.pause(run_id, reason=reason)
            return was_paused, owner

    was_paused, owner = run_async(body)
    if was_paused:
        click.echo(f"run {run_id} was already paused; nothing changed")
    elif owner is not None:
        click.echo(
            f"asked {owner}, which executes run {run_id}, to pause it: it starts no new node once the one in "
            f"progress ends, until: durable unpause {run_id}"
        )
    else:
        click.echo(f"paused run {run_id}; it starts no new node until: durable unpause {run_id}")


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.pass_context
def unpause(ctx: click.Context, db: str | None, run_id: str) -> None:
    """Let a paused RUN_ID go on (when an engine next resumes it)."""
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[bool, str | None]:
        async with Engine(path) as engine:
            state = await engine.state(run_id)
            if state.finished:  # engine.unpause refuses too; say it in the same words as pause
                raise CliError(f"run {run_id!r} has already {state.status}; there is nothing to control")
            owner = _owner(await engine.journal.get_run(run_id))
            await engine.unpause(run_id)
            return state.paused, owner

    was_paused, owner = run_async(body, expected=(CliError,))
    if not was_paused:
        click.echo(f"run {run_id} is not paused; nothing changed")
    elif owner is not None:
        click.echo(f"asked {owner}, which holds run {run_id}, to let it go on")
    else:
        click.echo(f"unpaused run {run_id}; it goes on when an engine resumes it (engine.recover, or a worker)")


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option("--json", "as_json", is_flag=True, help='Print {"version": 1, "signals": [...]} instead of a table.')
@click.pass_context
def signals(ctx: click.Context, db: str | None, run_id: str, as_json: bool) -> None:
    """List RUN_ID's inbox: every signal sent to it (consumed or pending) and every control request."""
    path = existing_db(db_path(ctx, db))

    async def body() -> tuple[list[SignalRecord], RunState]:
        async with Engine(path) as engine:
            state = await engine.state(run_id)  # checks that the run exists
            return await engine.journal.read_signals(run_id), state

    records, state = run_async(body)
    waiting = signal_names(state.definition)
    consumed = set(state.consumed_signals)
    if as_json:
        print_json("signals", [_signal_json(r, state, waiting, consumed) for r in records])
        return
    if not records:
        can = ", ".join(map(repr, sorted(waiting))) or "none"
        click.echo(f"run {run_id} has received no signal; the signals its wait_for nodes wait for: {can}")
        return
    table = Table(box=box.SIMPLE_HEAD, caption="times are UTC", caption_justify="left")
    for column in ("id", "sent", "name", "payload", "status"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "sent"))
    for r in records:
        if r.name == CONTROL_SIGNAL:
            op = r.payload.get("op") if isinstance(r.payload, dict) else r.payload
            status = "applied" if r.id <= state.control_seen else ("too late" if state.finished else "pending")
            name, payload = "(control)", str(op)
        else:
            status = "consumed" if r.id in consumed else ("never consumed" if state.finished else "pending")
            if r.name not in waiting:
                status += " (no wait_for has this name)"
            name, payload = r.name, clip(compact(r.payload), 60)
        table.add_row(str(r.id), f"{r.ts:%Y-%m-%d %H:%M:%S}", name, payload, status)
    make_console().print(table)


def _signal_json(r: SignalRecord, state: RunState, waiting: set[str], consumed: set[int]) -> dict[str, Any]:
    if r.name == CONTROL_SIGNAL:
        status = "applied" if r.id <= state.control_seen else ("too late" if state.finished else "pending")
        return {"id": r.id, "sent": r.ts.isoformat(), "control": r.payload, "status": status}
    status = "consumed" if r.id in consumed else ("never consumed" if state.finished else "pending")
    return {
        "id": r.id,
        "sent": r.ts.isoformat(),
        "name": r.name,
        "payload": r.payload,
        "status": status,
        "receivable": r.name in waiting,
    }
