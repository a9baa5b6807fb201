"""The examples in the README run, and say what the README says they do."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_runs_and_second_run_returns_the_stored_result(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    (tmp_path / "app.py").write_text(code)
    first = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "emailed about order-42; warehouse told about 42 units"
    assert (tmp_path / "app.db").exists()
    second = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    assert test_command in readme
    assert test_command in ci
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/durable demo" in readme


def test_semantics_ownership_example_two_processes_print_the_one_result(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "semantics.md").read_text()
    section = text[text.index("## Who executes a run") : text.index("## Ordering")]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    shown = re.findall(r"```console\n\$ (.*?)\n(.*?)```", section, re.S)[0]
    example = (ROOT / "docs" / "examples" / "owned.py").read_text()
    assert code in example  # the page shows the file as it is
    assert shown[0] == "python owned.py app.db & python owned.py app.db; wait"
    script = tmp_path / "owned.py"
    script.write_text(example)
    first = subprocess.Popen([sys.executable, str(script), "app.db"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, str(script), "app.db"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=60)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0]
    assert "".join(outs) == shown[1]
    with sqlite3.connect(tmp_path / "app.db") as conn:
        starts = conn.execute("SELECT count(*) FROM events WHERE type = 'step_started' AND node = 'charge'").fetchone()
    assert starts == (1,)
