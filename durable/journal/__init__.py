"""The journal family: the interface and its rules, the in-memory and SQLite journals, portable documents.

::

    base.py           the Journal interface (a contract per method) and the rules every journal applies
    memory.py         InMemoryJournal: a dict, for unit tests
    sqlite.py         SQLiteJournal: one file, WAL mode, group commit
    sqlite_schema.py  its schema, migrations, claim query and row mapping
    portable.py       a run as a self-contained document (export, import, fork)
"""

from .base import Claim as Claim
from .base import Journal as Journal
from .base import Lease as Lease
from .base import Owner as Owner
from .base import RunInfo as RunInfo
from .base import SignalRecord as SignalRecord
from .memory import InMemoryJournal as InMemoryJournal
from .sqlite import SQLiteJournal as SQLiteJournal
from .sqlite import Synchronous as Synchronous

__all__ = [
    "Claim",
    "InMemoryJournal",
    "Journal",
    "Lease",
    "Owner",
    "RunInfo",
    "SQLiteJournal",
    "SignalRecord",
    "Synchronous",
]
