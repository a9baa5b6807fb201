"""Arming the engine's named crash points from a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._crash import POINTS, SimulatedCrash, arm, disarm, set_write_fault

__all__ = ["POINTS", "SimulatedCrash", "crash_at", "io_error_at"]


@contextmanager
def crash_at(point: str, n: int = 1) -> Iterator[None]:
    """Within the block, the ``n``-th arrival at crash point ``point`` raises :class:`SimulatedCrash`.

    After it fires, the engine writes nothing more: the database is left as a killed process
    would leave it. Open a new ``Engine`` on the same file to resume. ::

        with crash_at("in_step", 2):
            with pytest.raises(SimulatedCrash):
                async with Engine(path) as engine:
                    await engine.run(wf, 1, run_id="r")
        async with Engine(path) as engine:          # "restart the process"
            assert await engine.run(wf, 1, run_id="r") == expected

    Points: ``before_append``, ``before_commit``, ``after_commit``, ``in_step`` (see
    ``docs/testing.md``). One schedule is armed at a time, for the whole process.
    """
    arm(point, n)
    try:
        yield
    finally:
        disarm()


@contextmanager
def io_error_at(n: int, *, persistent: bool = False) -> Iterator[None]:
    """Within the block, the ``n``-th journal write transaction fails with an I/O error.

    The error is raised where SQLite reports one, after the transaction's rows are written
    and before COMMIT, so the whole transaction is rolled back; the caller gets a
    ``StorageError``. With ``persistent=True`` every later write fails too, until the block
    ends ("the disk came back").
    """
    if n < 1:
        raise ValueError("n counts from 1")
    set_write_fault(n, persistent=persistent)
    try:
        yield
    finally:
        set_write_fault(None)
