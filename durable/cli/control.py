"""The control commands: ``durable signal | cancel | pause | unpause``.

Registered on :data:`durable.cli.cli` when :mod:`durable.cli` is imported (its last line
imports this module). Each opens the journal, writes one thing (a signal in the run's inbox,
or a ``run_cancelled`` / ``run_paused`` / ``run_unpaused`` event) and prints one line saying
what happens next. The run itself is executed elsewhere: a process that has it parked picks
a signal up by polling the inbox; ``docs/language.md`` has the semantics.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..engine import Engine
from .support import CliError, db_option, db_path, existing_db, run_async

__all__ = ["cancel", "pause", "signal", "unpause"]


@click.command()
@db_option(on_group=False)
@click.argument("run_id")
@click.argument("name")
@click.option("--data", "data", metavar="JSON", default="null", help="The signal's payload, as JSON [default: null].")
@click.pass_context
def signal(ctx: click.Context, db: str | None, run_id: str, name: str, data: str) -> None:
    """Send the signal NAME to RUN_ID: its wait_for(NAME) node receives the payload.

    The signal is kept until the run consumes it, also if the run has not reached its wait
    yet; several signals of one name are delivered in the order sent.
    """
    try:
        payload: Any = json.loads(data)
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not JSON ({exc}); quote it for the shell: --data '{{\"approved\": true}}'") from None
    if not name.strip():
        raise CliError("the signal NAME must not be empty")
    path = existing_db(db_path(ctx, db))

    async def body() -> int:
        async with Engine(path) as engine:
            return await engine.signal(run_id, name, payload)

    signal_id = run_async(body)
    click.echo(f"sent signal {name!r} to run {run_id} (signal {signal_id}); its wait_for({name!r}) receives it")


@click.command()
@db_option(on_group=False)
@click.argument("run_id")
@click.option("--reason", default="", metavar="TEXT", help="Why; recorded in the run_cancelled event.")
@click.pass_context
def cancel(ctx: click.Context, db: str | None, run_id: str, reason: str) -> None:
    """Cancel RUN_ID: it ends 'cancelled' and is never resumed."""
    path = existing_db(db_path(ctx, db))

    async def body() -> None:
        async with Engine(path) as engine:
            await engine.cancel(run_id, reason=reason)

    run_async(body)
    why = f" ({reason})" if reason else ""
    click.echo(f"cancelled run {run_id}{why}; it will not be resumed")


@click.command()
@db_option(on_group=False)
@click.argument("run_id")
@click.option("--reason", default="", metavar="TEXT", help="Why; recorded in the run_paused event.")
@click.pass_context
def pause(ctx: click.Context, db: str | None, run_id: str, reason: str) -> None:
    """Pause RUN_ID: it starts no new top-level node until 'durable unpause RUN_ID'."""
    path = existing_db(db_path(ctx, db))

    async def body() -> bool:
        async with Engine(path) as engine:
            was_paused = (await engine.state(run_id)).paused
            await engine.pause(run_id, reason=reason)
            return was_paused

    if run_async(body):
        click.echo(f"run {run_id} was already paused; nothing changed")
        return
    click.echo(f"paused run {run_id}; it starts no new node until: durable unpause {run_id}")


@click.command()
@db_option(on_group=False)
@click.argument("run_id")
@click.pass_context
def unpause(ctx: click.Context, db: str | None, run_id: str) -> None:
    """Let a paused RUN_ID go on (when an engine next resumes it)."""
    path = existing_db(db_path(ctx, db))

    async def body() -> bool:
        async with Engine(path) as engine:
            state = await engine.state(run_id)
            if state.finished:  # engine.unpause refuses too; say it in the same words as pause
                raise CliError(f"run {run_id!r} has already {state.status}; there is nothing to control")
            await engine.unpause(run_id)
            return state.paused

    if not run_async(body, expected=(CliError,)):
        click.echo(f"run {run_id} is not paused; nothing changed")
        return
    click.echo(f"unpaused run {run_id}; it goes on when an engine resumes it (engine.recover, or a worker)")
