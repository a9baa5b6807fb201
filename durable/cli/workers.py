"""The worker commands: ``durable worker | submit | wait``.

Registered on :data:`durable.cli.cli` when :mod:`durable.cli` is imported (its last line
imports this module). ``durable worker`` runs a :class:`~durable.worker.Worker` until SIGTERM
or SIGINT, then drains it; ``submit`` records a run for any worker to pick up and prints its
id; ``wait`` prints a run's result once some worker has finished it. ``docs/reliability.md``
shows them running N workers on one database.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from .._run import LiveRun
from ..engine import Engine
from ..errors import JournalError, LeaseLost, RunCancelled, RunFailed, RunNotFound
from ..journal.base import Claim
from ..worker import Worker
from .support import RUN_ID, CliError, db_option, db_path, existing_db, load, parse_json, run_async

__all__ = ["resume", "submit", "wait", "worker"]


class _TalkingWorker(Worker):
    """A worker that prints one line per claimed and per finished run (``durable worker -v``)."""

    # It hooks the worker's private _start/_exited: Worker has no public callbacks (yet); the
    # lines are for people watching a terminal, not a contract.

    async def _start(self, engine: Engine, claim: Claim) -> None:
        lease = claim.lease
        takeover = f", takeover {claim.takeovers}" if claim.takeovers else ""
        click.echo(f"claimed {lease.run_id} ({claim.workflow}{takeover})")
        await super()._start(engine, claim)
        if claim.takeovers > self.max_takeovers:
            click.echo(f"failed {lease.run_id}: TooManyTakeovers ({claim.takeovers} > max {self.max_takeovers})")

    async def _exited(self, run: LiveRun) -> None:
        await super()._exited(run)
        click.echo(f"{_outcome(run)} {run.run_id}")


def _outcome(run: LiveRun) -> str:
    error = run.error
    if run.finished.is_set() and error is None:
        return "completed"
    if isinstance(error, RunFailed):
        return "failed"
    if isinstance(error, RunCancelled):
        return "cancelled"
    if isinstance(error, LeaseLost):
        return "lost the lease of"
    if isinstance(error, JournalError):  # a conflict or a storage failure: the run stopped, nothing half written
        return f"stopped ({type(error).__name__})"
    if run.parked is not None:
        if run.parked.signal is not None:
            return f"parked (waiting for signal {run.parked.signal!r})"
        return f"parked (until {run.parked.until:%H:%M:%S})" if run.parked.until else "parked (paused)"
    return "stopped"  # by stop() after the drain timeout, or a second signal: handed back


def _caps(values: tuple[str, ...]) -> dict[str, int]:
    caps: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit() or int(number) < 1:
            raise CliError(f"--workflow-concurrency {value!r}: write it as NAME=N with N a whole number >= 1")
        caps[name.strip()] = int(number)
    return caps


_workflows_option = click.option(
    "--workflows",
    "refs",
    multiple=True,
    required=True,
    metavar="pkg.module:attr",
    help="Workflow definitions: a Workflow, or a list/tuple/dict of them (repeatable); the current directory "
    "is importable.",
)


@click.command()
@db_option(on_group=False)
@_workflows_option
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Runs at once.")
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a lease lasts without a heartbeat: a dead worker's runs are taken over this long after it died.",
)
@click.option(
    "--max-takeovers",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Fail a run (TooManyTakeovers) whose lease expired more often than this: it keeps killing its worker.",
)
@click.option(
    "--workflow-concurrency",
    "caps",
    multiple=True,
    metavar="NAME=N",
    help="At most N live runs of workflow NAME across all workers (repeatable).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds to let runs in flight finish before they are stopped and handed back.",
)
@click.option("--verbose", "-v", is_flag=True, help="Print a line per claimed and per finished run.")
@click.pass_context
def worker(
    ctx: click.Context,
    db: str | None,
    refs: tuple[str, ...],
    concurrency: int,
    lease_ttl: float,
    max_takeovers: int,
    caps: tuple[str, ...],
    drain_timeout: float,
    verbose: bool,
) -> None:
    """Run the given workflows' runs from the journal until SIGTERM or SIGINT, sharing it with other workers.

    Start as many as you like, on one machine, against one database: each claims runs under a
    lease, and takes over the runs of workers that died. SIGTERM (or Ctrl-C) stops claiming and
    lets the runs in flight finish (up to --drain-timeout); a second one stops at once.
    """
    path = db_path(ctx, db)
    if not Path(path).parent.is_dir():
        raise CliError(f"no database at {path}: the directory {str(Path(path).parent)!r} does not exist")
    workflows = load(refs)
    kind = _TalkingWorker if verbose else Worker
    w = kind(
        path,
        workflows,
        concurrency=concurrency,
        lease_ttl=lease_ttl,
        max_takeovers=max_takeovers,
        workflow_concurrency=_caps(caps),
        drain_timeout=drain_timeout,
    )
    _log_to_stderr()

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(_stop_on_signals, w, tg.cancel_scope, verbose)
            if verbose:  # printed once SIGTERM is handled: from here on, it drains
                names = ", ".join(f"{wf.name} v{wf.version}" for wf in workflows)
                click.echo(f"worker {w.owner} on {path}: {names}; concurrency {concurrency}, lease {lease_ttl:g}s")
            await w.run()
            tg.cancel_scope.cancel()

    run_async(body)
    click.echo(
        f"worker {w.owner} stopped: {w.claimed} claimed, {w.finished} finished, {w.given_up} failed for too many "
        "takeovers"
    )


async def _stop_on_signals(
    w: Worker, scope: anyio.CancelScope, verbose: bool, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED
) -> None:
    draining = False
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not draining:
                draining = True
                if verbose:
                    click.echo(f"{name}: draining (up to {w.drain_timeout:g}s)")
                w.stop()
            else:  # a second signal: stop now, as a crash would (the runs' leases expire)
                click.echo(f"{name} again: stopping without draining", err=True)
                scope.cancel()


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(record.levelname, record.levelname.lower(), 1)


def _log_to_stderr() -> None:
    """The worker's warnings (a lost lease, the SQLite version) as ``warning: ...`` lines on stderr."""
    logger = logging.getLogger("durable")
    if not any(getattr(h, "_durable_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
        handler._durable_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@click.command()
@db_option(on_group=False)
@_workflows_option
@click.option("--workflow", "name", metavar="NAME", help="Which workflow to run [default: the only one given].")
@click.option("--input", "input_json", metavar="JSON", default="null", help="The run's input, as JSON.")
@click.option("--run-id", type=RUN_ID, metavar="ID", help="The run's id [default: a fresh one].")
@click.pass_context
def submit(
    ctx: click.Context, db: str | None, refs: tuple[str, ...], name: str | None, input_json: str, run_id: str | None
) -> None:
    """Record a run for any worker to execute; print its id (nothing runs here)."""
    path = db_path(ctx, db)
    if not Path(path).parent.is_dir():
        raise CliError(f"cannot submit to {path}: the directory {str(Path(path).parent)!r} does not exist")
    if run_id is not None and not run_id.strip():
        raise CliError("--run-id must not be empty")
    value: Any = parse_json(input_json, "--input", "quote it for the shell: --input '{\"id\": 7}'")
    workflows = load(refs)
    names = sorted({w.name for w in workflows})
    if name is None:
        if len(workflows) != 1:
            raise CliError(
                f"{', '.join(refs)} define {len(workflows)} workflows ({', '.join(names)}); "
                "pick one with --workflow NAME"
            )
        chosen = workflows[0]
    else:
        found = [w for w in workflows if w.name == name]
        if len(found) != 1:
            versions = ", ".join(w.version for w in found)
            what = f"{len(found)} definitions (versions {versions})" if found else "no workflow"
            raise CliError(
                f"{', '.join(refs)} define {what} named {name!r} (workflows: {', '.join(names)}); "
                "point --workflows at exactly one definition of it"
            )
        chosen = found[0]

    async def body() -> str:
        async with Engine(path) as engine:
            return await engine.submit(chosen, value, run_id=run_id)

    click.echo(run_async(body))


@click.command()
@db_option(on_group=False)
@click.argument("run_id", type=RUN_ID)
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS", help="Give up after this long [default: never]."
)
@click.pass_context
def wait(ctx: click.Context, db: str | None, run_id: str, timeout: float | None) -> None:
    """Wait until RUN_ID ends, whichever worker runs it; print its result as JSON.

    Exit status 1, with the error on one line, if the run failed or was cancelled.
    """
    path = existing_db(db_path(ctx, db))

    async def body() -> Any:
        async with Engine(path) as engine:
            try:
                return await engine.wait(run_id, timeout=timeout)
            except TimeoutError:
                raise CliError(
                    f"run {run_id!r} has not ended after {timeout:g}s; it is still running or waiting for a worker "
                    f"(wait again, or look at it with 'durable show {run_id}')"
                ) from None

    result = run_async(body, expected=(CliError,))
    click.echo(json.dumps(result, ensure_ascii=False))


@click.command()
@db_option(on_group=False)
@_workflows_option
@click.argument("run_id", type=RUN_ID)
@click.pass_context
def resume(ctx: click.Context, db: str | None, refs: tuple[str, ...], run_id: str) -> None:
    """Resume RUN_ID here, with the definition among --workflows that started it; print its result as JSON.

    The same rules as engine.resume: a finished run prints its stored result and runs nothing;
    a run that another live process executes is not touched (the error names it); one whose
    owner died is taken over, at once if that owner ran on this host. Exit status 1, with the
    error on one line, if the run fails, is cancelled, or cannot be resumed.
    """
    path = existing_db(db_path(ctx, db))
    workflows = load(refs)

    async def body() -> Any:
        async with Engine(path) as engine:
            info = await engine.journal.get_run(run_id)
            if info is None:
                raise RunNotFound(run_id)
            chosen = next((w for w in workflows if w.definition_hash == info.definition_hash), None)
            if chosen is None:  # say what differs, against the definition of that name given last
                same_name = [w for w in workflows if w.name == info.workflow]
                if not same_name:
                    names = ", ".join(sorted({w.name for w in workflows}))
                    raise CliError(
                        f"run {run_id!r} is a run of workflow {info.workflow!r}; {', '.join(refs)} define {names}"
                    )
                chosen = same_name[-1]
            handle = await engine.resume(run_id, chosen)
            await handle.result()
            return (await engine.state(run_id)).result  # as stored: JSON

    result = run_async(body, expected=(CliError,))
    click.echo(json.dumps(result, ensure_ascii=False))
