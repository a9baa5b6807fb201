"""One encoding boundary: what cannot be stored is refused where it enters, and never becomes a poison run.

A poison run is one that stays ``running`` and re-executes its step on every resume because
the step's outcome cannot be written. Every value that enters the journal (a run's input, a
step's output, a shared-state patch, a signal's payload, an imported document) is checked
against exactly what the event encoder accepts.
"""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import durable
from durable import CorruptJournal, Engine, RunFailed, SerializationError, Workflow, step
from durable._codec import MAX_DEPTH
from durable.testing import journal_violations

pytestmark = pytest.mark.anyio

CALLS: Counter[str] = Counter()
BAD_NAME = "report-\udcff.txt"  # what os.listdir returns for a file name that is not UTF-8


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@step
def produce(value: Any) -> Any:
    CALLS["produce"] += 1
    return value


@step
def after(value: Any) -> str:
    CALLS["after"] += 1
    return "after"


FLOW = Workflow("values").then(produce).then(after)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (BAD_NAME, "lone surrogate"),
        ({"files": [BAD_NAME]}, "$.files[0]"),
        (nest(MAX_DEPTH + 5), f"more than {MAX_DEPTH} levels"),
        ({"ratio": math.nan}, "$.ratio"),
        ({"big": [math.inf]}, "$.big[0]"),
        ({BAD_NAME: 1}, "key"),
    ],
    ids=["surrogate", "surrogate-inside", "too-deep", "nan", "inf", "surrogate-key"],
)
async def test_an_output_that_cannot_be_stored_fails_the_step_for_good(db: Path, value: Any, needle: str) -> None:
    @step
    def bad(x: int) -> Any:
        CALLS["bad"] += 1
        return value

    wf = Workflow("bad-output").then(bad).then(after)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as failed:
            await engine.run(wf, 1, run_id="r")
        assert failed.value.error_type == "SerializationError" and needle in failed.value.error_message
        assert (await engine.state("r")).status == "failed"
    async with Engine(db) as engine:  # a resume runs nothing again: the failure is final
        with pytest.raises(RunFailed):
            await engine.run(wf, 1, run_id="r")
        assert await engine.recover([wf]) == []
    assert CALLS == Counter({"bad": 1})


async def test_a_value_just_inside_the_depth_limit_round_trips(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(Workflow("deep").then(produce), nest(MAX_DEPTH - 2), run_id="r") == nest(MAX_DEPTH - 2)
    async with Engine(db) as engine:
        assert (await engine.state("r")).result == nest(MAX_DEPTH - 2)


@pytest.mark.parametrize("value", [BAD_NAME, nest(MAX_DEPTH + 1), {"x": math.nan}], ids=["surrogate", "deep", "nan"])
async def test_an_input_that_cannot_be_stored_is_refused_and_nothing_is_written(db: Path, value: Any) -> None:
    async with Engine(db) as engine:
        with pytest.raises(SerializationError, match="the run's input"):
            await engine.start(FLOW, value, run_id="r")
        with pytest.raises(SerializationError):
            await engine.submit(FLOW, value, run_id="s")
        assert await engine.list_runs() == []


def test_durable_run_refuses_an_input_that_cannot_be_stored(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match="lone surrogate"):
        durable.run(FLOW, {"name": BAD_NAME}, run_id="t", db=tmp_path / "app.db")
    with sqlite3.connect(tmp_path / "app.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


@pytest.mark.parametrize("value", [BAD_NAME, nest(MAX_DEPTH + 1), math.inf], ids=["surrogate", "deep", "inf"])
async def test_a_signal_that_cannot_be_stored_is_refused_and_the_waiting_run_lives_on(db: Path, value: Any) -> None:
    wf = Workflow("waits").wait_for("go").then(produce)
    async with Engine(db) as engine:
        handle = await engine.start(wf, None, run_id="r")
        with pytest.raises(SerializationError, match="signal 'go'"):
            await engine.signal("r", "go", value)
        assert await engine.journal.read_signals("r", name="go") == []
        await engine.signal("r", "go", {"fine": True})
        assert await handle.result() == {"fine": True}


class Shared(BaseModel):
    note: str = ""


async def test_a_shared_state_patch_that_cannot_be_stored_fails_the_step_for_good(db: Path) -> None:
    @step
    def scribble(x: int) -> int:
        CALLS["scribble"] += 1
        durable.context().state.note = BAD_NAME
        return x

    wf = Workflow("patch", state=Shared).then(scribble)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed, match="shared state"):
            await engine.run(wf, 1, run_id="r")
    async with Engine(db) as engine:
        with pytest.raises(RunFailed):
            await engine.run(wf, 1, run_id="r")
    assert CALLS == Counter({"scribble": 1})


async def test_a_failure_whose_message_cannot_be_stored_is_still_recorded(db: Path) -> None:
    @step
    def explode(x: int) -> int:
        CALLS["explode"] += 1
        raise ValueError(f"cannot open {BAD_NAME}")

    wf = Workflow("explodes").then(explode)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as failed:
            await engine.run(wf, 1, run_id="r")
        assert "cannot open report-\\udcff.txt" in failed.value.error_message  # escaped, not lost
    async with Engine(db) as engine:
        with pytest.raises(RunFailed):
            await engine.run(wf, 1, run_id="r")
    assert CALLS == Counter({"explode": 1})


# -- corrupt storage ---------------------------------------------------------------------------


async def test_a_corrupt_payload_is_named_with_its_run_and_seq(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(FLOW, 3, run_id="r") == "after"
    with sqlite3.connect(db) as conn:  # damage one payload behind durable's back
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET payload = '{not json' WHERE run_id = 'r' AND seq = 4")
    async with Engine(db) as engine:
        with pytest.raises(CorruptJournal) as corrupt:
            await engine.history("r")
        assert (corrupt.value.run_id, corrupt.value.seq) == ("r", 4)
        assert "seq 4" in str(corrupt.value) and "backup" in str(corrupt.value)


# -- imports -----------------------------------------------------------------------------------


async def test_an_import_that_breaks_the_invariants_is_refused_whole(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.run(FLOW, 3, run_id="r")
        doc = await engine.export("r")
    completed = next(e for e in doc["events"] if e["type"] == "step_completed")
    twice = json.loads(json.dumps(doc))
    at = twice["events"].index(next(e for e in twice["events"] if e["type"] == "step_completed"))
    for _ in range(2):  # a node completed three times
        twice["events"].insert(at + 1, dict(completed))
    for i, e in enumerate(twice["events"], start=1):
        e["seq"] = i
    orphan = json.loads(json.dumps(doc))
    orphan["events"] = [e for e in orphan["events"] if not (e["type"] == "step_started" and e["node"] == "produce")]
    for i, e in enumerate(orphan["events"], start=1):
        e["seq"] = i
    async with Engine(db.with_name("other.db")) as engine:
        for bad in (twice, orphan):
            with pytest.raises(durable.InvalidRunDocument, match="invariants"):
                await engine.import_run(bad)
        assert await engine.list_runs() == []
        assert await engine.import_run(doc) == "r"
        assert journal_violations(await engine.history("r")) == []


# -- the property: every value round-trips exactly, or is refused at the boundary -------------

_texts = st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=8)
_leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | _texts
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=12,
)


def _deepen(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values, depth=st.sampled_from([0, 0, 0, MAX_DEPTH - 6, MAX_DEPTH + 1]))
async def test_values_round_trip_exactly_or_are_refused_at_the_boundary(tmp_path: Path, value: Any, depth: int) -> None:
    value = _deepen(value, depth)
    db = tmp_path / f"{uuid.uuid4().hex}.db"  # one journal per example
    async with Engine(db) as engine:
        # as an input
        try:
            await engine.start(Workflow("in").then(after), value, run_id="input")
        except SerializationError:
            assert await engine.journal.get_run("input") is None  # refused: nothing written
        # as an output
        CALLS.clear()

        @step
        def emit(_: Any) -> Any:
            CALLS["emit"] += 1
            return value

        try:
            result = await engine.run(Workflow("out").then(emit), None, run_id="output")
        except RunFailed as failed:
            assert failed.error_type == "SerializationError"
            assert (await engine.state("output")).status == "failed"  # refused: failed for good
        else:
            stored = (await engine.state("output")).result
            assert json.dumps(stored, sort_keys=True) == json.dumps(result, sort_keys=True)
            assert _same(stored, value)
        assert CALLS["emit"] == 1
        # as a signal
        waiter = await engine.start(Workflow("sig").wait_for("go"), None, run_id="signal")
        try:
            await engine.signal("signal", "go", value)
        except SerializationError:
            await engine.cancel("signal")
        else:
            assert _same(await waiter.result(), value)
    async with Engine(db) as engine:  # nothing is left to re-execute
        assert [r.run_id for r in await engine.list_runs(status="running")] == []


def _same(stored: Any, original: Any) -> bool:
    """Equal as JSON would hold it (tuples as lists; -0.0 and 0.0 alike)."""
    if isinstance(original, float) and isinstance(stored, float):
        return stored == original
    if isinstance(original, list | tuple):
        return isinstance(stored, list) and len(stored) == len(original) and all(map(_same, stored, original))
    if isinstance(original, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == original.keys()
            and all(_same(stored[k], original[k]) for k in original)
        )
    return bool(stored == original and type(stored) is type(original))


# -- value semantics ---------------------------------------------------------------------------


@step
def basket(_: Any) -> dict[str, list[str]]:
    return {"items": ["apple"]}


@step
def add_pear(b):  # type: ignore[no-untyped-def]  # untyped: it gets the value itself, not a validated copy
    b["items"].append("pear")  # mutates its input
    return b["items"]


@step
async def count(b):  # type: ignore[no-untyped-def]
    await anyio.sleep(0.1)  # its sibling has mutated its own input by now
    return len(b["items"])


@step
def join_lanes(lanes: dict[str, Any]) -> dict[str, Any]:
    return lanes


MUTATING_FORK = (
    Workflow("mutating-fork").then(basket).fork().branch(add_pear, name="a").branch(count, name="b").join(join_lanes)
)


async def test_each_fork_lane_receives_its_own_copy_of_the_input(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(MUTATING_FORK, None, run_id="r") == {"a": ["apple", "pear"], "b": 1}


@step
def mutate(item):  # type: ignore[no-untyped-def]
    item["n"] += 1
    return item["n"]


@step
def shared_items(_: Any):  # type: ignore[no-untyped-def]
    one = {"n": 0}
    return [one, one, one]  # three references to one object, as a live value may hold


async def test_each_map_item_receives_its_own_copy(db: Path) -> None:
    wf = Workflow("mutating-map").then(shared_items).map(mutate)
    async with Engine(db) as engine:
        assert await engine.run(wf, None, run_id="r") == [1, 1, 1]


# -- same id, different input -------------------------------------------------------------------


async def test_running_an_existing_id_with_another_input_is_refused_showing_both(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(Workflow("w").then(produce), 2, run_id="m4") == 2
        with pytest.raises(durable.RunAlreadyExists) as taken:
            await engine.run(Workflow("w").then(produce), 5, run_id="m4")
        assert taken.value.inputs == (2, 5) and "started with 2" in str(taken.value) and "gives 5" in str(taken.value)
        assert await engine.run(Workflow("w").then(produce), 2, run_id="m4") == 2  # the same input: its result
        assert await engine.run(Workflow("w").then(produce), run_id="m4") == 2  # no input: attach to it


def test_durable_run_with_another_input_is_refused(tmp_path: Path) -> None:
    wf = Workflow("w").then(produce)
    assert durable.run(wf, 2, run_id="m4", db=tmp_path / "app.db") == 2
    with pytest.raises(durable.RunAlreadyExists, match="another input"):
        durable.run(wf, 5, run_id="m4", db=tmp_path / "app.db")
