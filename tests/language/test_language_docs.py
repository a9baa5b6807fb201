"""The examples in docs/language.md run, and print exactly the output shown under them."""

from __future__ import annotations

import re
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
