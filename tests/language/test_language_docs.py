"""The examples in docs/language.md run, and print exactly the output shown under them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"
# A runnable example is a python block followed by "Output:" and a text block.
EXAMPLE = re.compile(r"```python\n((?:(?!```).)*)```\n\nOutput:\n\n```text\n((?:(?!```).)*)```", re.S)
EXAMPLES = EXAMPLE.findall(DOC.read_text())


def test_the_page_has_an_example_for_every_feature() -> None:
    assert len(EXAMPLES) == 8
    code = "\n".join(c for c, _ in EXAMPLES)
    for feature in (".route(", ".loop(", ".map(", 'Workflow("checkout").then(payment)', ".sleep(", ".wait_for("):
        assert feature in code, feature
    assert "state=Trip" in code and "terminate_existing" in code


@pytest.mark.parametrize(("code", "expected"), EXAMPLES, ids=[f"example-{i + 1}" for i in range(len(EXAMPLES))])
def test_example_prints_what_the_page_says(tmp_path: Path, code: str, expected: str) -> None:
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected


CONSOLE = re.compile(r"## The command line\n.*?```console\n(.*?)```", re.S)


def test_the_command_line_section_shows_what_the_commands_print(tmp_path: Path) -> None:
    """Replays the console block of 'The command line' on runs left parked by a process that ended."""
    setup = """
import anyio
from durable import Engine, Workflow, step

@step
def first(x: int) -> int:
    return x

async def main() -> None:
    async with Engine("app.db") as engine:
        await engine.start(Workflow("expense").then(first).wait_for("approval"), 3, run_id="exp-3")
        await engine.start(Workflow("report").then(first).sleep("1h").then(first, name="later"), 4, run_id="exp-4")
        for run_id in ("exp-3", "exp-4"):
            while (await engine.state(run_id)).parked() is None:
                await anyio.sleep(0.01)

anyio.run(main)
"""
    (tmp_path / "setup.py").write_text(setup)
    subprocess.run([sys.executable, "setup.py"], cwd=tmp_path, check=True, timeout=60)
    block = CONSOLE.search(DOC.read_text())
    assert block is not None
    transcript = block.group(1)
    commands = [line[2:] for line in transcript.splitlines() if line.startswith("$ ")]
    assert len(commands) >= 7
    out = []
    for command in commands:
        assert command.startswith("durable ")
        done = subprocess.run(
            [sys.executable, "-m", "durable", *shlex.split(command)[1:]],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out.append(f"$ {command}\n{done.stdout}{done.stderr}")
    assert "".join(out) == transcript
