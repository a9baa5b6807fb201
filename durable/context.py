"""The one documented way for a step to learn where it runs: :func:`context`."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .errors import DurableError

__all__ = ["StepContext", "context"]


@dataclass(frozen=True)
class StepContext:
    """Where a step attempt runs.

    Attributes:
        run_id: the run.
        workflow: the workflow's name.
        node: the node id of the step.
        attempt: 1 for the first attempt; grows with every retry and every re-run after a crash.
        idempotency_key: ``"<run_id>/<node>"``: the same across retries and resumes, so that an
            external service can recognise a repeated call (pass it as an Idempotency-Key header).
        state: the run's shared context (an instance of the workflow's ``state=`` model), or
            ``None``. Change its fields in place; the fields this step changed are journaled with
            its completion, and only if it completes.
    """

    run_id: str
    workflow: str
    node: str
    attempt: int
    state: Any = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}/{self.node}"


_current: ContextVar[StepContext | None] = ContextVar("durable_step_context", default=None)


def context() -> StepContext:
    """Return the context of the step that is running (sync steps in threads included).

    Raises:
        DurableError: called outside a step.
    """
    ctx = _current.get()
    if ctx is None:
        raise DurableError("durable.context() was called outside a running step; call it from inside a step function")
    return ctx
