"""Tools to test workflows against crashes: crash points, the crash-safety check, strategies.

``durable.testing.strategies`` (random workflow shapes) and :func:`check_crash_safety` need
Hypothesis: ``pip install 'durable[testing]'``.
"""

from ..journal.memory import InMemoryJournal as InMemoryJournal
from .check import CrashSafetyError as CrashSafetyError
from .check import CrashSafetyReport as CrashSafetyReport
from .check import check_crash_safety as check_crash_safety
from .check import run_with_crashes as run_with_crashes
from .crash import POINTS as POINTS
from .crash import SimulatedCrash as SimulatedCrash
from .crash import crash_at as crash_at
from .crash import io_error_at as io_error_at
from .invariants import journal_violations as journal_violations
from .sweep import SweepError as SweepError
from .sweep import SweepReport as SweepReport
from .sweep import log_execution as log_execution
from .sweep import sweep_sigkill as sweep_sigkill

__all__ = [
    "POINTS",
    "CrashSafetyError",
    "CrashSafetyReport",
    "InMemoryJournal",
    "SimulatedCrash",
    "SweepError",
    "SweepReport",
    "check_crash_safety",
    "crash_at",
    "io_error_at",
    "journal_violations",
    "log_execution",
    "run_with_crashes",
    "sweep_sigkill",
]
