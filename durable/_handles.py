"""What the engine hands back: run handles, and the reports of recover() and check_compatibility()."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._run import LiveRun
from .definition import Workflow
from .fold import RunState

if TYPE_CHECKING:  # the engine makes handles; a handle only calls back into it
    from .engine import Engine

__all__ = ["Incompatibility", "Recovery", "RunHandle", "Skipped"]


@dataclass(frozen=True)
class Incompatibility:
    """An unfinished run that the given definitions could not resume."""

    run_id: str
    workflow: str
    version: str
    definition_hash: str
    changes: list[str]


@dataclass(frozen=True)
class Skipped:
    """A run that :meth:`Engine.recover` left alone, and why.

    ``reason`` is ``"owned"`` (a live owner executes it; ``detail`` names it), ``"definition"``
    (its workflow was given, but not its definition; ``detail`` lists the changes),
    ``"workflow"`` (no definition of its workflow was given) or ``"child"`` (its parent run
    resumes it).
    """

    run_id: str
    workflow: str
    reason: str
    detail: str


class Recovery(list["RunHandle"]):
    """What :meth:`Engine.recover` did: the list of the runs it resumed, and ``skipped``, the ones it left."""

    def __init__(self, resumed: Iterable[RunHandle] = (), skipped: Iterable[Skipped] = ()) -> None:
        super().__init__(resumed)
        self.skipped: list[Skipped] = list(skipped)

    def __repr__(self) -> str:
        return f"Recovery(resumed={[h.run_id for h in self]!r}, skipped={self.skipped!r})"


@dataclass(frozen=True)
class RunHandle:
    """A run started or resumed by an engine; await :meth:`result` for its outcome."""

    run_id: str
    _engine: Engine
    _workflow: Workflow
    _live: LiveRun | None = None

    async def result(self) -> Any:
        """Wait for the run to end and return its result.

        Raises:
            RunFailed: the run failed; ``__cause__`` is the step's exception (a :class:`StepError`
                rebuilt from the journal when the run failed in another process).
            DurableError: the run stopped without an outcome (a journal error, say); resume it.
        """
        if self._live is not None:
            await self._live.finished.wait()
            if self._live.error is not None:
                raise self._live.error
            return self._live.result
        return await self._engine._stored_result(self.run_id, self._workflow)

    async def state(self) -> RunState:
        """The run's state as committed so far."""
        return await self._engine.state(self.run_id)
