"""Reading a run's history: its events, its state at a seq, its stored outcome, and the checks of definitions.

Functions of a journal, with no live runs involved: what ``Engine.history``, ``state``,
``check_compatibility``, ``export``, ``fork`` and ``import_run`` do, and what a handle returns
for a run that ended elsewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from . import events as ev
from ._handles import Incompatibility
from ._run import write
from ._runner import decode_node
from .definition import ForkBuilder, Workflow, definition_changes
from .errors import DefinitionMismatch, DurableError, RunCancelled, RunFailed, RunNotFound, SeqOutOfRange, StepError
from .fold import RunState, fold
from .journal.base import Journal
from .journal.portable import export_document, fork_events, parse_document

__all__ = [
    "check_definition",
    "check_workflow",
    "export",
    "fork",
    "history",
    "import_run",
    "incompatibilities",
    "state",
    "stored_result",
]


def check_workflow(workflow: Any) -> Workflow:
    """The built workflow, or a clear error for something that is not one."""
    if isinstance(workflow, Workflow):
        return workflow.build()
    if isinstance(workflow, ForkBuilder):
        raise DurableError("this workflow has a fork that is still open; close it with .join(step)")
    raise DurableError(f"{workflow!r} is not a Workflow; build one with Workflow('name').then(step)")


def check_definition(state: RunState, workflow: Workflow) -> None:
    """Refuse to go on with a run under a definition other than the one that started it."""
    if state.definition_hash == workflow.definition_hash:
        return
    assert state.run_id is not None
    changes = definition_changes(state.definition or {}, workflow.canonical())
    old, new = state.definition_hash or "", workflow.definition_hash
    message = (
        f"run {state.run_id!r} was started by definition {old[:12]} ({state.workflow} v{state.version}); "
        f"the code now defines {new[:12]} ({workflow.name} v{workflow.version}):\n  - "
        + "\n  - ".join(changes or ["(the canonical forms differ)"])
        + "\nLet the old run finish under the code that started it (keep that definition, with its own "
        "version, and pass it to resume/recover), or start a new run."
    )
    raise DefinitionMismatch(state.run_id, old, new, changes, message)


async def history(journal: Journal, run_id: str) -> list[ev.Event]:
    events = await journal.read(run_id)
    if not events:
        raise RunNotFound(run_id)
    return events


async def state(journal: Journal, run_id: str, at: int | None = None) -> RunState:
    events = await history(journal, run_id)
    if at is not None:
        if at < 0 or at > events[-1].seq:
            raise SeqOutOfRange(run_id, at, events[-1].seq)
        events = events[:at]
    return fold(events, run_id)


def decode_result(workflow: Workflow | None, folded: RunState) -> Any:
    """A completed run's result, decoded by its last node's annotation (plain JSON without a workflow)."""
    if workflow is None:
        return folded.result
    return decode_node(workflow.nodes[-1], folded.result, folded)


async def stored_result(journal: Journal, run_id: str, workflow: Workflow | None) -> Any:
    """What the journal recorded as the run's outcome: its result, or its failure or cancel raised."""
    folded = await state(journal, run_id)
    if folded.status == "completed":
        return decode_result(workflow, folded)
    if folded.status == "cancelled":
        last = (await history(journal, run_id))[-1]
        raise RunCancelled(run_id, last.reason if isinstance(last, ev.RunCancelled) else "")
    if folded.status == "failed" and folded.error is not None:
        err = folded.error
        raise RunFailed(run_id, err.node, err.type, err.message, branch=err.branch) from StepError(
            err.node, err.type, err.message, err.traceback
        )
    raise DurableError(
        f"run {run_id!r} is {folded.status} and not running in this engine; resume it with engine.resume()"
    )


async def incompatibilities(journal: Journal, workflows: Iterable[Workflow]) -> list[Incompatibility]:
    given = [check_workflow(w) for w in workflows]
    out: list[Incompatibility] = []
    for info in await journal.list_runs(status="running"):
        same_name = [w for w in given if w.name == info.workflow]
        if any(w.definition_hash == info.definition_hash for w in same_name):
            continue
        if same_name:
            first = (await journal.read(info.run_id, upto=1))[0]
            assert isinstance(first, ev.RunStarted)
            changes = definition_changes(first.definition, same_name[-1].canonical())
        else:
            changes = [f"no definition of workflow {info.workflow!r} was given"]
        out.append(Incompatibility(info.run_id, info.workflow, info.version, info.definition_hash, changes))
    return out


async def fork(
    journal: Journal,
    run_id: str,
    *,
    at: int | None,
    from_step: str | None,
    new_run_id: str | None,
    workflow: Workflow | None,
) -> str:
    events = await history(journal, run_id)
    new_run_id = new_run_id or f"{run_id}-fork-{uuid.uuid4().hex[:8]}"
    copied = fork_events(run_id, events, at=at, from_step=from_step, workflow=workflow)
    await write(journal, new_run_id, copied, None)  # a new run, unowned until someone resumes it
    return new_run_id


async def export(journal: Journal, run_id: str) -> dict[str, Any]:
    return export_document(run_id, await history(journal, run_id))


async def import_run(journal: Journal, doc: Any, new_run_id: str | None) -> str:
    run_id, events = parse_document(doc)
    run_id = new_run_id or run_id
    await write(journal, run_id, events, None)
    return run_id
