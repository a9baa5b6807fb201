"""The benchmark runner works: tiny sizes, in this process, figures of the right shape.

No timing is asserted: this only proves the runner runs. It needs nothing beyond durable's
own dependencies (the peers of the ``bench`` extra are optional code paths, not imported here).
"""

import io
import json
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

# benchmarks/ is a directory beside durable/, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import peers
from benchmarks.common import INSTALL_HINT, MODES, Sizes
from benchmarks.report import print_report, write_json
from benchmarks.run import run_benchmarks, select

TINY = replace(Sizes.quick(), min_runs=3, warmup_runs=1, resume_events=(1_000,), resume_reps=1)


def _is_rate(figure: dict) -> None:
    assert figure["steps"] > 0
    assert figure["seconds"] > 0
    assert figure["ms_per_step"] > 0
    assert figure["steps_per_s"] > 0


def test_quick_sequential_and_resume(tmp_path: Path) -> None:
    results = run_benchmarks(["sequential", "resume", "sqlite"], TINY, tmp_path)

    seq = results["sequential"]
    assert "error" not in seq, seq.get("error")
    for mode in MODES:
        for variant in ("async", "sync"):
            figure = seq[mode][variant]
            _is_rate(figure)
            assert figure["runs"] == 3
            assert figure["steps"] == 30
            assert 0 < figure["run_ms_p50"] <= figure["run_ms_max"]
    assert seq["peak_rss_mib"] > 0

    resume = results["resume"]
    assert "error" not in resume, resume.get("error")
    one = resume["1000"]
    assert one["events"] == 1_000
    for key in ("state_ms", "read_ms", "fold_ms"):
        assert one[key] > 0
    assert one["db_bytes"] > 0

    raw = results["sqlite"]
    assert raw["installed"] is True
    for mode in MODES:
        _is_rate(raw["sequential"][mode]["sync"])

    # The report renders and the JSON round-trips.
    data = {
        "meta": {
            "started_at": "now",
            "quick": True,
            "machine": {
                "cpu_model": "cpu",
                "nproc": 1,
                "platform": "p",
                "python": "3",
                "sqlite_version": "3",
                "tmp_filesystem": "fs",
                "packages": {"durable": "0"},
            },
        },
        "results": results,
    }
    out = io.StringIO()
    print_report(data, Console(file=out, width=200))
    assert "Sequential" in out.getvalue()
    assert "Resume" in out.getvalue()
    write_json(data, tmp_path / "figures.json")
    assert json.loads((tmp_path / "figures.json").read_text())["results"]["resume"]["1000"]["events"] == 1_000


def test_selection_and_missing_peer() -> None:
    assert select("resume,sequential") == ["sequential", "resume"]
    assert select("peers") == ["sqlite", "aiosqlite", "dbos", "langgraph"]
    assert peers._missing("no_such_module_for_durable_bench") == {
        "installed": False,
        "message": INSTALL_HINT,
        "missing": "no_such_module_for_durable_bench",
    }
