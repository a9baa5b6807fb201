"""Journal invariants that hold for every run, crashed or not (the rules live in :mod:`durable.journal.invariants`)."""

from ..journal.invariants import journal_violations as journal_violations

__all__ = ["journal_violations"]
