"""What every test area shares: the helper modules importable, the anyio backend, a journal path.

The tests live in folders by area (unit, journal, engine, language, cli, workers, chaos); the
modules they share (workflows the child processes run, among them) stay here, at the top.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # the helper modules (workflows.py, worker_workflows.py, ...)


@pytest.fixture
def anyio_backend() -> str:
    """The engine's write path uses asyncio futures: every async test runs on asyncio."""
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A path for a fresh SQLite journal, in the test's own temporary folder."""
    return tmp_path / "durable.db"
