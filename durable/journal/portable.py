"""Runs as portable documents (export, import) and forks of a run's prefix."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from .. import events as ev
from ..definition import Workflow
from ..errors import DurableError, InvalidRunDocument, SeqOutOfRange
from .base import check_append
from .invariants import journal_violations
from .sqlite_schema import encode_event

__all__ = ["DOCUMENT_FORMAT", "export_document", "fork_events", "parse_document"]

DOCUMENT_FORMAT = "durable-run"
DOCUMENT_VERSION = 1


def export_document(run_id: str, events: Sequence[ev.Event]) -> dict[str, Any]:
    """A self-contained JSON document of one run: its events, which carry its definition."""
    first = events[0]
    assert isinstance(first, ev.RunStarted)
    return {
        "format": DOCUMENT_FORMAT,
        "version": DOCUMENT_VERSION,
        "run_id": run_id,
        "workflow": first.workflow,
        "workflow_version": first.version,
        "definition_hash": first.definition_hash,
        "definition": first.definition,
        "events": [e.model_dump(mode="json", exclude_none=True) for e in events],
    }


def _hash(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_document(doc: Any) -> tuple[str, list[ev.Event]]:
    """Validate an exported run document; return its run id and events.

    Raises:
        InvalidRunDocument: it is not a durable run document, or its events break the journal's
            rules, or its definition does not match its hash. The message says what is wrong.
    """
    if not isinstance(doc, dict) or doc.get("format") != DOCUMENT_FORMAT:
        raise InvalidRunDocument(
            'not a durable run document (expected a JSON object with "format": "durable-run"); '
            "make one with 'durable export RUN_ID > run.json'"
        )
    if doc.get("version") != DOCUMENT_VERSION:
        raise InvalidRunDocument(f"run document version {doc.get('version')!r} is not supported (this durable reads 1)")
    run_id = doc.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise InvalidRunDocument("the run document has no run_id")
    raw = doc.get("events")
    if not isinstance(raw, list) or not raw:
        raise InvalidRunDocument("the run document has no events")
    try:
        events = [ev.EVENT_ADAPTER.validate_python(e) for e in raw]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRunDocument(f"event {where or '?'} of the run document is malformed: {first['msg']}") from None
    try:
        check_append(run_id, None, events)
    except DurableError as exc:
        raise InvalidRunDocument(f"the run document's events break the journal's rules: {exc}") from None
    problems = journal_violations(events)  # checked whole, before anything is written
    if problems:
        raise InvalidRunDocument(f"the run document's events break the journal's invariants: {problems[0]}")
    for event in events:  # exactly what will be stored must be storable
        try:
            encode_event(event)
        except (PydanticSerializationError, ValueError) as exc:
            raise InvalidRunDocument(f"event {event.seq} of the run document cannot be stored: {exc}") from None
    first_event = events[0]
    assert isinstance(first_event, ev.RunStarted)
    if _hash(first_event.definition) != first_event.definition_hash:
        raise InvalidRunDocument("the run document's definition does not match its definition hash; it was altered")
    return run_id, events


def fork_events(
    run_id: str,
    events: Sequence[ev.Event],
    *,
    at: int | None = None,
    from_step: str | None = None,
    workflow: Workflow | None = None,
) -> list[ev.Event]:
    """The first events of a new run that copies ``events[:at]`` (or everything before ``from_step``).

    The new run's ``run_started`` (timed now) records where it came from; events 2..k are the
    copies, their times kept. With ``workflow``, the new run adopts that definition (its hash);
    every node the copied prefix mentions must exist in it.

    Raises:
        SeqOutOfRange: ``at`` is not within the run, or reaches its terminal event.
        DurableError: neither or both of ``at`` and ``from_step``; an unknown ``from_step``; a
            definition that lacks nodes of the prefix.
    """
    if (at is None) == (from_step is None):
        raise DurableError("fork needs exactly one of at=SEQ or from_step=NODE")
    last = events[-1].seq
    end = last - 1 if events[-1].type in ev.TERMINAL_TYPES else last
    if from_step is not None:
        firsts = [e.seq for e in events if getattr(e, "node", None) == from_step]
        if not firsts:
            nodes = sorted({n for e in events if (n := getattr(e, "node", None))})
            raise DurableError(f"run {run_id!r} has no events for node {from_step!r}; its nodes are {nodes}")
        at = firsts[0] - 1
    assert at is not None
    if at < 1 or at > end:
        raise SeqOutOfRange(run_id, at, end)
    first = events[0]
    assert isinstance(first, ev.RunStarted)
    update: dict[str, Any] = {"forked_from": ev.ForkOrigin(run_id=run_id, seq=at), "ts": ev.utcnow()}
    if workflow is not None:
        known = set(workflow.node_ids())
        missing = sorted({n for e in events[1:at] if (n := getattr(e, "node", None)) and n not in known})
        if missing:
            raise DurableError(
                f"the definition {workflow.definition_hash[:12]} has no nodes {missing}, which run {run_id!r} "
                f"reached before seq {at}; fork from an earlier point, or with a definition that has them"
            )
        update |= {
            "workflow": workflow.name,
            "version": workflow.version,
            "definition_hash": workflow.definition_hash,
            "definition": workflow.canonical(),
        }
    return [first.model_copy(update=update), *events[1:at]]
