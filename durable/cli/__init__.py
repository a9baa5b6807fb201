"""The terminal family: the ``durable`` command, its rendering, and the demo.

::

    __init__.py  the command group, every command registered on it, and main()
    commands.py  demo, runs, show, history, timeline, state, fork, export, import, check
    control.py   signal, cancel, pause, unpause
    workers.py   worker, submit, wait
    support.py   what the commands share: --db, errors as one line, loading definitions
    render.py    tables (runs, history, changes) and the structure of a run
    show.py      ``durable show``: one run summed up
    timeline.py  ``durable timeline``: a run as a Gantt chart
    demo.py      ``durable demo``: a workflow killed with SIGKILL and resumed

The command modules define plain click commands and import nothing of this one; the group
below registers them, so the import graph has no cycle.
"""

from __future__ import annotations

import click

from . import commands, control, workers
from .render import history_table as history_table
from .support import db_option

__all__ = ["cli", "history_table", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@db_option(on_group=True)
@click.version_option(package_name="durable", prog_name="durable")
def cli(db: str) -> None:
    """Durable workflows in one SQLite file.

    Look at runs (runs, show, history, timeline, state), fork one to resume it with fixed code,
    move one to another machine (export, import), and check definitions before a deploy.
    Control runs (signal, cancel, pause, unpause) and execute them (worker, submit, wait).
    docs/debugging.md walks through them.
    """


for _module in (commands, control, workers):
    for _name in _module.__all__:
        _command = getattr(_module, _name)
        if isinstance(_command, click.Command):
            cli.add_command(_command)


def main() -> None:
    """Entry point of the ``durable`` command and of ``python -m durable``."""
    cli.main(prog_name="durable")
