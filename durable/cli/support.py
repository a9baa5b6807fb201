"""Plumbing of the command line: errors as one line, the event loop, the --db option, the console.

Every command in :mod:`durable.cli` goes through these, so that every refusal looks the same
(``error: ...`` on stderr, exit status 1) and no command creates a database by accident.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console

from .. import events as ev
from .._codec import valid_unicode
from .._loading import load_workflows
from ..definition import Workflow
from ..errors import DurableError
from ..journal.base import RunInfo

__all__ = [
    "DEFAULT_DB",
    "SORT_KEYS",
    "RUN_ID",
    "BadInput",
    "CliError",
    "Since",
    "make_console",
    "db_option",
    "db_path",
    "existing_db",
    "load",
    "natural_key",
    "one_line",
    "print_json",
    "run_async",
    "run_json",
]

T = TypeVar("T")

DEFAULT_DB = "durable.db"


class CliError(click.ClickException):
    """A failure the user can act on: printed as one ``error: ...`` line, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        # A run id or a file name from the command line may not be valid Unicode: print it escaped.
        text = f"error: {self.format_message()}".encode("utf-8", "backslashreplace").decode("utf-8")
        click.echo(text, err=True)


class BadInput(CliError):
    """A malformed argument or file (not JSON, too deep, not valid Unicode): one line, exit status 2.

    Nothing is created or written: the input is checked before the journal is opened.
    """

    exit_code = 2


def parse_json(text: str, what: str, hint: str) -> Any:
    """``text`` as JSON, or :class:`BadInput` saying what is wrong with it (and ``hint``: what to do)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not JSON ({exc}); {hint}") from None
    except RecursionError:
        raise BadInput(f"{what} nests too deep to be read as JSON") from None


class RunIdType(click.ParamType):  # type: ignore[type-arg]
    """A run id from the command line: non-empty, valid Unicode (a non-UTF-8 byte is refused, not stored)."""

    name = "RUN_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not valid_unicode(text):
            raise BadInput(f"the run id {text!r} is not valid UTF-8; run ids are text")
        if not text.strip():
            raise BadInput("the run id must not be empty")
        return text


RUN_ID = RunIdType()


def one_line(message: str) -> str:
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
        raise CliError(one_line(str(leaf))) from None


# -- the --db option ------------------------------------------------------------------------


def db_option(*, on_group: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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


def db_path(ctx: click.Context, db: str | None) -> str:
    """The subcommand's --db if given, else the group's (which falls back to DURABLE_DB, then ./durable.db)."""
    if db is not None:
        return db
    root = ctx.find_root()
    return str(root.params.get("db") or DEFAULT_DB)


def existing_db(path: str) -> str:
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


def make_console() -> Console:
    # highlight=False: rich would otherwise colour numbers and quotes in ids at random.
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # rich assumes 80 columns for a pipe or a CI log; nothing wraps there
    return console


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SORT_KEYS: dict[str, Callable[[RunInfo], Any]] = {
    "created": lambda r: r.created_at,
    "updated": lambda r: r.updated_at,
    "status": lambda r: r.status,
    "workflow": lambda r: r.workflow,
}


class Since(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+ only
    """``--since``: an ISO date or time (UTC unless it says otherwise), or a duration back from now."""

    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
        if match:
            return ev.utcnow() - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is neither a date or time (2026-11-22, 2026-11-22T17:30, UTC unless an offset is given) "
                "nor a duration back from now (30m, 1h, 2d, 1w)",
                param,
                ctx,
            )
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def load(refs: Sequence[str]) -> list[Workflow]:
    """Import the workflows that ``pkg.module:attr`` references name; a failure is a :class:`CliError`."""
    try:
        return load_workflows(refs)
    except DurableError as exc:
        raise CliError(one_line(str(exc))) from None


JSON_VERSION = 1
"""The version of every ``--json`` shape; it goes up when a shape changes incompatibly."""


def run_json(info: RunInfo) -> dict[str, Any]:
    """One run's index row as JSON (``durable runs --json``, ``durable show --json``)."""
    from .._ownership import owned_by_the_living  # the ownership rules, not the CLI's

    def iso(t: Any) -> str | None:
        return t.isoformat() if t is not None else None

    owner = None
    if info.lease_owner is not None:
        owner = {
            "name": info.lease_owner,
            "host": info.lease_host,
            "pid": info.lease_pid,
            "since": iso(info.lease_since),
            "until": iso(info.lease_expires_at),
            "alive": owned_by_the_living(info),
        }
    return {
        "run_id": info.run_id,
        "workflow": info.workflow,
        "version": info.version,
        "definition_hash": info.definition_hash,
        "status": info.status,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "events": info.last_seq,
        "parent_run_id": info.parent_run_id,
        "paused": info.paused,
        "waiting_for": info.waiting_for,
        "wake_at": iso(info.wake_at),
        "takeovers": info.takeovers,
        "owner": owner,
    }


def print_json(kind: str, data: Any) -> None:
    """Print ``{"version": 1, kind: data}``: the documented shape of every ``--json``."""
    click.echo(json.dumps({"version": JSON_VERSION, kind: data}, ensure_ascii=False, indent=2))


def natural_key(text: str) -> list[Any]:
    """Sort ``download[2]`` before ``download[10]``: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
