"""durable: workflows of plain Python steps that survive crashes, in one SQLite file.

This module only re-exports; see ``docs/`` for the semantics.
"""

from ._script import run as run
from .context import StepContext as StepContext
from .context import context as context
from .definition import Step as Step
from .definition import Workflow as Workflow
from .definition import step as step
from .engine import Engine as Engine
from .engine import Incompatibility as Incompatibility
from .engine import Recovery as Recovery
from .engine import RunHandle as RunHandle
from .engine import Skipped as Skipped
from .errors import CorruptJournal as CorruptJournal
from .errors import DefinitionError as DefinitionError
from .errors import DefinitionMismatch as DefinitionMismatch
from .errors import DurableError as DurableError
from .errors import InvalidRunDocument as InvalidRunDocument
from .errors import JournalError as JournalError
from .errors import LeaseLost as LeaseLost
from .errors import LeaseRequired as LeaseRequired
from .errors import LoopExhausted as LoopExhausted
from .errors import NoRouteBranch as NoRouteBranch
from .errors import NotADurableDatabase as NotADurableDatabase
from .errors import RunAlreadyExists as RunAlreadyExists
from .errors import RunBusy as RunBusy
from .errors import RunCancelled as RunCancelled
from .errors import RunFailed as RunFailed
from .errors import RunInterrupted as RunInterrupted
from .errors import RunNotFound as RunNotFound
from .errors import SeqConflict as SeqConflict
from .errors import SeqOutOfRange as SeqOutOfRange
from .errors import SerializationError as SerializationError
from .errors import SignalTimeout as SignalTimeout
from .errors import StepError as StepError
from .errors import StepTimeout as StepTimeout
from .errors import StorageError as StorageError
from .fold import NodeState as NodeState
from .fold import RunState as RunState
from .fold import fold as fold
from .journal.base import Journal as Journal
from .journal.base import Lease as Lease
from .journal.base import Owner as Owner
from .journal.base import RunInfo as RunInfo
from .journal.memory import InMemoryJournal as InMemoryJournal
from .journal.sqlite import SQLiteJournal as SQLiteJournal
from .nodes import LoopResult as LoopResult
from .nodes import again as again
from .nodes import done as done
from .replay import ReplayStep as ReplayStep
from .replay import replay as replay
from .retry import RetryPolicy as RetryPolicy
from .worker import Worker as Worker

__version__ = "0.1.0"

__all__ = [
    "CorruptJournal",
    "DefinitionError",
    "DefinitionMismatch",
    "DurableError",
    "Engine",
    "InMemoryJournal",
    "Incompatibility",
    "InvalidRunDocument",
    "Journal",
    "JournalError",
    "Lease",
    "LeaseLost",
    "LeaseRequired",
    "LoopExhausted",
    "LoopResult",
    "NoRouteBranch",
    "NodeState",
    "NotADurableDatabase",
    "Owner",
    "Recovery",
    "ReplayStep",
    "RetryPolicy",
    "RunAlreadyExists",
    "RunBusy",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunInfo",
    "RunInterrupted",
    "RunNotFound",
    "RunState",
    "SQLiteJournal",
    "SeqConflict",
    "SeqOutOfRange",
    "SerializationError",
    "SignalTimeout",
    "Skipped",
    "Step",
    "StepContext",
    "StepError",
    "StepTimeout",
    "StorageError",
    "Worker",
    "Workflow",
    "again",
    "context",
    "done",
    "fold",
    "replay",
    "run",
    "step",
]
