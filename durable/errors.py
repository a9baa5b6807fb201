"""The exceptions `durable` raises, drawn once.

::

    DurableError                     root: catch this to catch everything durable raises
    ├── DefinitionError              a workflow or step was defined wrongly (raised at definition time)
    ├── DefinitionMismatch           a run is resumed under a definition whose hash differs
    ├── RunNotFound                  no run with this id in the journal
    ├── RunAlreadyExists             start() with an id that is taken (see on_conflict)
    ├── SeqOutOfRange                state(at=...) with a seq the run does not have
    ├── RunFailed                    the run ended failed; ``__cause__`` is the step's exception
    ├── RunCancelled                 the run was cancelled (engine.cancel); it is never resumed
    ├── RunBusy                      another live owner (an engine or a worker) executes the run now
    ├── RunInterrupted               Ctrl-C (or SystemExit) stopped the run mid-step; run it again to resume
    ├── StepError                    a step's failure as recorded in the journal (when the
    │                                original exception object is gone, e.g. after a restart)
    ├── StepTimeout                  a step attempt ran longer than its ``timeout``
    ├── SignalTimeout                a wait_for node's timeout passed with no signal and no default
    ├── LoopExhausted                a loop reached max_iterations with on_max="fail"
    ├── NoRouteBranch                a route's key has no branch and the route has no default
    ├── SerializationError           a value cannot be encoded to JSON (or decoded) with its annotation
    ├── InvalidRunDocument           an exported run document is malformed; nothing was imported
    └── JournalError                 the journal cannot do what was asked
        ├── SeqConflict              another writer appended to the run first; nothing was written
        ├── LeaseLost                the writer's lease on the run was taken over; nothing was written
        ├── LeaseRequired            an append to a running run carried no lease; nothing was written
        ├── NotADurableDatabase      the file is not SQLite, or not a durable journal; left untouched
        ├── CorruptJournal           a stored event cannot be decoded (the file was changed outside durable)
        └── StorageError             the storage failed (missing directory, disk full, I/O error,
                                     database locked); the transaction was rolled back

Internal stop signals (a simulated crash, for instance) derive from ``BaseException``
instead, so that a step's ``except Exception:`` cannot swallow them.

Every error carries its identifiers as attributes (``err.run_id``, ``err.node``) and a
message that says what to do next.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "CorruptJournal",
    "DefinitionError",
    "DefinitionMismatch",
    "DurableError",
    "InvalidRunDocument",
    "JournalError",
    "LeaseLost",
    "LeaseRequired",
    "LoopExhausted",
    "NoRouteBranch",
    "NotADurableDatabase",
    "RunAlreadyExists",
    "RunBusy",
    "RunCancelled",
    "RunFailed",
    "RunInterrupted",
    "RunNotFound",
    "SeqConflict",
    "SeqOutOfRange",
    "SerializationError",
    "SignalTimeout",
    "StepError",
    "StepTimeout",
    "StorageError",
]


class DurableError(Exception):
    """Root of every exception raised by `durable`."""


class DefinitionError(DurableError):
    """A workflow or step definition is invalid; raised when it is defined, never mid-run."""


class DefinitionMismatch(DurableError):
    """A run was started by one definition and is being resumed under another.

    Attributes:
        run_id: the run that was refused.
        old_hash: definition hash recorded when the run started.
        new_hash: hash of the definition offered now.
        changes: human-readable lines, one per difference.
    """

    def __init__(self, run_id: str, old_hash: str, new_hash: str, changes: list[str], message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.old_hash = old_hash
        self.new_hash = new_hash
        self.changes = changes


class RunNotFound(DurableError):
    """No run with this id exists in the journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} in this database; 'durable runs' lists the runs it holds")
        self.run_id = run_id


class RunAlreadyExists(DurableError):
    """`Engine.start` was given a run id that is already taken."""

    def __init__(self, run_id: str, inputs: tuple[Any, Any] | None = None) -> None:
        if inputs is None:
            message = (
                f"a run with id {run_id!r} already exists; pick another id, or pass on_conflict='use_existing' "
                "to attach to it (engine.run() does that by default)"
            )
        else:
            message = (
                f"a run with id {run_id!r} already exists with another input: it was started with "
                f"{_short(inputs[0])}, and this call gives {_short(inputs[1])}. Pick another id for the new input, "
                "or resume the existing run (engine.resume(run_id, workflow), or run it without an input)"
            )
        super().__init__(message)
        self.run_id = run_id
        self.inputs = inputs


class SeqOutOfRange(DurableError):
    """A seq was asked for that the run does not have."""

    def __init__(self, run_id: str, seq: int, last_seq: int) -> None:
        super().__init__(f"run {run_id!r} has events 1 to {last_seq}; seq {seq} is out of range (use 0 to {last_seq})")
        self.run_id = run_id
        self.seq = seq
        self.last_seq = last_seq


class RunFailed(DurableError):
    """The run ended in failure. ``__cause__`` holds the failing step's exception.

    Attributes:
        run_id: the run.
        node: the node whose failure ended the run (``None`` if the run failed outside a step).
        branch: the fork branch that node belongs to, if any.
        error_type: the name of the exception type.
    """

    def __init__(
        self, run_id: str, node: str | None, error_type: str, message: str, *, branch: str | None = None
    ) -> None:
        where = f" at step {node!r}" if node else ""
        if branch:
            where += f" (branch {branch!r})"
        super().__init__(f"run {run_id!r} failed{where}: {error_type}: {message}")
        self.run_id = run_id
        self.node = node
        self.branch = branch
        self.error_type = error_type
        self.error_message = message


class StepError(DurableError):
    """A step's failure rebuilt from the journal, used when the original exception is gone.

    Attributes:
        node: the step's node id.
        error_type: the original exception's type name.
        traceback: the original traceback, as text.
    """

    def __init__(self, node: str | None, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{error_type}: {message}")
        self.node = node
        self.error_type = error_type
        self.error_message = message
        self.traceback = traceback


class RunCancelled(DurableError):
    """The run was cancelled; it ended and will never be resumed."""

    def __init__(self, run_id: str, reason: str = "") -> None:
        super().__init__(f"run {run_id!r} was cancelled" + (f": {reason}" if reason else ""))
        self.run_id = run_id
        self.reason = reason


class RunBusy(DurableError):
    """Another live owner (an engine or a worker, in this process or another) executes the run.

    Attributes:
        run_id: the run.
        owner: the lease holder's name.
        host: the holder's host, and ``pid`` its process id (``None`` when it did not say).
        since: when it took the lease; ``until``: when the lease expires unless renewed.
    """

    def __init__(self, run_id: str, info: Any) -> None:
        self.run_id = run_id
        self.owner: str | None = info.lease_owner
        self.host: str | None = info.lease_host
        self.pid: int | None = info.lease_pid
        self.since: datetime | None = info.lease_since
        self.until: datetime | None = info.lease_expires_at
        who = f"pid {self.pid} on {self.host}" if self.pid is not None and self.host else repr(self.owner)
        since = f" since {_clock(self.since)}" if self.since else ""
        until = f", lease until {_clock(self.until)}" if self.until else ""
        super().__init__(
            f"run {run_id!r} is being executed by {who}{since}{until} UTC; nothing was written. Wait for its "
            "result (engine.run or durable.run with the same id waits for it), or stop that process: if it "
            "dies, the run is taken over at once on the same host, otherwise when its lease expires"
        )


class RunInterrupted(DurableError):
    """Ctrl-C (``KeyboardInterrupt``) or ``SystemExit`` stopped a run mid-step, as a crash would.

    Nothing more was written; running the same command again resumes the run.

    Attributes:
        run_id: the run; ``node``: the step (or other node) it was in, if known.
    """

    def __init__(self, run_id: str, node: str | None) -> None:
        where = f" during step {node!r}" if node else ""
        super().__init__(f"run {run_id!r} interrupted{where}; run the same command again to resume")
        self.run_id = run_id
        self.node = node


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _clock(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


class SignalTimeout(DurableError):
    """A ``wait_for`` node waited ``timeout`` seconds for its signal, and it has no default."""

    def __init__(self, node: str, signal: str, timeout: float) -> None:
        super().__init__(
            f"node {node!r} waited {timeout:g}s for signal {signal!r}, which did not come; send it sooner "
            "(engine.signal / durable signal), or declare wait_for(..., default=...)"
        )
        self.node = node
        self.signal = signal
        self.timeout = timeout


class LoopExhausted(DurableError):
    """A loop ran ``max_iterations`` times and its body still asked for another (``on_max="fail"``)."""

    def __init__(self, node: str, max_iterations: int) -> None:
        super().__init__(
            f"loop {node!r} reached max_iterations={max_iterations} and its body still returned again(); "
            "raise the bound, or pass on_max='exit' to go on with the last value"
        )
        self.node = node
        self.max_iterations = max_iterations


class NoRouteBranch(DurableError):
    """A route's key named no branch, and the route has no default."""

    def __init__(self, node: str, key: str, branches: list[str]) -> None:
        super().__init__(
            f"route {node!r} got key {key!r}, which has no branch (branches: {branches}) and no default; "
            "add .branch(key, ...) or close the route with .default(...)"
        )
        self.node = node
        self.key = key


class StepTimeout(DurableError):
    """A step attempt ran longer than its ``timeout``; counted as a failed attempt."""

    def __init__(self, node: str, timeout: float) -> None:
        super().__init__(f"step {node!r} did not finish within {timeout:g}s")
        self.node = node
        self.timeout = timeout


class SerializationError(DurableError):
    """A value cannot be encoded to JSON, or decoded, with the annotation that governs it.

    Attributes:
        node: the step whose input or output it is (``None`` for a run's input).
        type_name: the Python type that could not be handled.
    """

    def __init__(self, message: str, *, node: str | None = None, type_name: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.type_name = type_name


class InvalidRunDocument(DurableError):
    """A run document given to ``import_run`` is malformed; nothing was imported."""


class JournalError(DurableError):
    """The journal could not do what was asked; nothing was half written."""


class SeqConflict(JournalError):
    """Another writer appended to this run first; the append was refused whole.

    Attributes:
        run_id: the run.
        expected: the sequence number the append wanted to write first.
        actual: the sequence number the journal holds last.
    """

    def __init__(self, run_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"run {run_id!r} was advanced by another writer (wanted to append seq {expected}, journal is at "
            f"seq {actual}); nothing was written. Another process is running it: let it finish, or resume "
            "it once that process has stopped"
        )
        self.run_id = run_id
        self.expected = expected
        self.actual = actual


class LeaseLost(JournalError):
    """An owner appended under a lease that is no longer the run's: another owner took the run over.

    Nothing was written. The stale owner stops the run; the new holder goes on from the journal.
    """

    def __init__(self, run_id: str, owner: str, token: int, holder: str | None, holder_token: int) -> None:
        now = (
            f"is now held by {holder!r} (token {holder_token})"
            if holder
            else "has no owner now (its lease was given back)"
        )
        super().__init__(
            f"run {run_id!r}: {owner!r} lost its lease (token {token}); the run {now}. Nothing was written; "
            "whoever holds the run goes on from its journal"
        )
        self.run_id = run_id
        self.owner = owner
        self.token = token


class LeaseRequired(JournalError):
    """An append to a running run carried no lease: only the run's owner writes into it.

    Nothing was written. Execute the run through an engine (which takes its lease), or take
    the lease with ``journal.acquire`` first.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id!r} is running and this append carries no lease; nothing was written. Only the run's "
            "owner writes into it: resume it through an engine, or take its lease with journal.acquire()"
        )
        self.run_id = run_id


class CorruptJournal(JournalError):
    """A stored event cannot be decoded: the file was changed by something other than durable.

    Attributes:
        run_id: the run; ``seq``: the event that cannot be read.
    """

    def __init__(self, run_id: str, seq: int, why: str) -> None:
        super().__init__(
            f"run {run_id!r}: the event at seq {seq} cannot be decoded ({why}); the journal file was changed "
            "outside durable. Restore the file from a backup; the other runs in it can still be read and resumed"
        )
        self.run_id = run_id
        self.seq = seq


class NotADurableDatabase(JournalError):
    """The file exists but is not a SQLite database, or not one written by `durable`.

    The file is left byte-for-byte untouched.
    """

    def __init__(self, path: str, why: str) -> None:
        super().__init__(
            f"{path}: {why}; it was left untouched. Point --db / DURABLE_DB at a durable journal or a new path"
        )
        self.path = path


class StorageError(JournalError):
    """The storage failed: missing directory, disk full, I/O error, or a lock held too long.

    The transaction in progress was rolled back, so nothing committed is lost and nothing
    is half applied.
    """
