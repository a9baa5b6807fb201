"""Shared state: ``Workflow(..., state=Model)`` and ``durable.context().state``, on real SQLite files.

The merge rule under test: a step's changes are the fields it changed (compared with the
state it started from); they are journaled with its ``step_completed`` and applied when it
completes, in commit order; for one field, the last committed change wins.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import durable
from durable import DefinitionError, DurableError, Engine, RetryPolicy, SerializationError, Workflow, step
from durable import events as ev

pytestmark = pytest.mark.anyio


class Cart(BaseModel):
    items: list[str] = []
    total: int = 0
    note: str = ""
    coupon: str | None = None


CALLS: Counter[str] = Counter()
SEEN: list[dict[str, Any]] = []
GATE: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    SEEN.clear()
    GATE.clear()


def cart() -> Cart:
    state = durable.context().state
    assert isinstance(state, Cart)
    return state


@step
def add_apple(x: int) -> int:
    c = cart()
    c.items.append("apple")
    c.total += 3
    return x


@step
def add_pear(x: int) -> int:
    c = cart()
    c.items.append("pear")
    c.total += 5
    return x


@step
def summary(x: int) -> str:
    c = cart()
    SEEN.append(c.model_dump())
    return f"{c.items} {c.total} {c.note!r} {c.coupon}"


def patches(history: list[ev.Event]) -> list[tuple[str, Any]]:
    return [(e.node, e.state_patch) for e in history if isinstance(e, ev.StepCompleted)]


async def test_steps_update_the_state_and_each_change_is_journaled_with_its_completion(db: Path) -> None:
    wf = Workflow("cart", state=Cart).then(add_apple).then(add_pear).then(summary)
    async with Engine(db) as engine:
        assert await engine.run(wf, 0, run_id="r") == "['apple', 'pear'] 8 '' None"
        history = await engine.history("r")
        state = await engine.state("r")
    first = history[0]
    assert isinstance(first, ev.RunStarted)
    assert first.state == {"items": [], "total": 0, "note": "", "coupon": None}
    assert patches(history) == [
        ("add_apple", {"items": ["apple"], "total": 3}),
        ("add_pear", {"items": ["apple", "pear"], "total": 8}),
        ("summary", None),  # it only read
    ]
    assert state.shared == {"items": ["apple", "pear"], "total": 8, "note": "", "coupon": None}


async def test_the_initial_state_may_be_given_at_start(db: Path) -> None:
    wf = Workflow("cart", state=Cart).then(add_apple).then(summary)
    async with Engine(db) as engine:
        h = await engine.start(wf, 0, run_id="model", state=Cart(items=["fig"], total=1))
        assert await h.result() == "['fig', 'apple'] 4 '' None"
        h = await engine.start(wf, 0, run_id="dict", state={"note": "gift"})
        assert await h.result() == "['apple'] 3 'gift' None"
        with pytest.raises(SerializationError, match="initial state"):
            await engine.start(wf, 0, run_id="bad", state={"total": "lots"})
        with pytest.raises(DurableError, match="declares no state model"):
            await engine.start(Workflow("stateless").then(summary), 0, state={"total": 1})


async def test_without_a_state_model_ctx_state_is_none(db: Path) -> None:
    @step
    def peek(x: int) -> bool:
        return durable.context().state is None

    async with Engine(db) as engine:
        assert await engine.run(Workflow("plain").then(peek), 0, run_id="r") is True


def test_state_must_be_a_pydantic_model_class() -> None:
    with pytest.raises(DefinitionError, match="state= must be a pydantic model class"):
        Workflow("w", state=dict)  # type: ignore[arg-type]


def test_the_state_model_is_part_of_the_definition_hash() -> None:
    class Other(BaseModel):
        total: int = 0

    plain = Workflow("w").then(summary).definition_hash
    with_cart = Workflow("w", state=Cart).then(summary).definition_hash
    with_other = Workflow("w", state=Other).then(summary).definition_hash
    assert len({plain, with_cart, with_other}) == 3


async def test_a_failed_attempts_changes_are_discarded(db: Path) -> None:
    @step(retries=RetryPolicy(max_attempts=3, initial=0.001, jitter=0))
    def flaky_discount(x: int) -> int:
        c = cart()
        SEEN.append(c.model_dump())
        c.total -= 100
        c.coupon = f"attempt-{durable.context().attempt}"
        if durable.context().attempt < 3:
            raise ConnectionError("coupon service down")
        return x

    wf = Workflow("discount", state=Cart).then(add_apple).then(flaky_discount).then(summary)
    async with Engine(db) as engine:
        assert await engine.run(wf, 0, run_id="r") == "['apple'] -97 '' attempt-3"
        history = await engine.history("r")
    # every attempt started from the committed state, not from a failed attempt's leftovers
    assert [s["total"] for s in SEEN[:3]] == [3, 3, 3]
    assert [s["coupon"] for s in SEEN[:3]] == [None, None, None]
    assert patches(history)[1] == ("flaky_discount", {"total": -97, "coupon": "attempt-3"})


async def test_the_state_is_restored_exactly_on_resume(db: Path) -> None:
    @step
    async def blocking_summary(x: int) -> str:
        c = cart()
        SEEN.append(c.model_dump())
        if GATE.get("block"):
            GATE["entered"].set()
            await anyio.sleep_forever()
        return f"{c.items} {c.total}"

    wf = Workflow("resume", state=Cart).then(add_apple).then(add_pear).then(blocking_summary)
    GATE.update(block=True, entered=anyio.Event())
    async with Engine(db) as engine:
        await engine.start(wf, 0, run_id="r", state={"note": "n"})
        with anyio.fail_after(5):
            await GATE["entered"].wait()
    GATE["block"] = False
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="r") == "['apple', 'pear'] 8"
    expected = {"items": ["apple", "pear"], "total": 8, "note": "n", "coupon": None}
    assert SEEN == [expected, expected]  # live, then after the restart: the same state


async def test_a_step_in_flight_at_a_crash_leaves_no_change_behind(db: Path) -> None:
    @step
    async def half_done(x: int) -> int:
        c = cart()
        c.note = "half"
        if GATE.get("block"):
            GATE["entered"].set()
            await anyio.sleep_forever()
        return x

    wf = Workflow("in-flight", state=Cart).then(add_apple).then(half_done).then(summary)
    GATE.update(block=True, entered=anyio.Event())
    async with Engine(db) as engine:
        await engine.start(wf, 0, run_id="r")
        with anyio.fail_after(5):
            await GATE["entered"].wait()
    async with Engine(db) as engine:
        assert (await engine.state("r")).shared == {"items": ["apple"], "total": 3, "note": "", "coupon": None}
        GATE["block"] = False
        assert await engine.run(wf, run_id="r") == "['apple'] 3 'half' None"


class Tally(BaseModel):
    left: int = 0
    right: int = 0
    winner: str = ""


def tally() -> Tally:
    state = durable.context().state
    assert isinstance(state, Tally)
    return state


@step
async def left(x: int) -> int:
    await GATE["left_may_finish"].wait()
    t = tally()
    t.left = 1
    t.winner = "left"
    return x


@step
async def right(x: int) -> int:
    t = tally()
    t.right = 2
    t.winner = "right"
    GATE["right_done"].set()
    return x


@step
def show(both: dict[str, int]) -> dict[str, Any]:
    return tally().model_dump()


async def test_concurrent_branches_changing_different_fields_both_survive_and_last_committed_wins(db: Path) -> None:
    GATE.update(left_may_finish=anyio.Event(), right_done=anyio.Event())

    async def let_left_finish_after_right() -> None:
        await GATE["right_done"].wait()
        await anyio.sleep(0.05)  # right's completion is recorded first
        GATE["left_may_finish"].set()

    wf = Workflow("tally", state=Tally).fork().branch(left).branch(right).join(show)
    async with Engine(db) as engine, anyio.create_task_group() as tg:
        tg.start_soon(let_left_finish_after_right)
        # both branches started from {left: 0, right: 0}; each changed its own field and "winner"
        assert await engine.run(wf, 0, run_id="r") == {"left": 1, "right": 2, "winner": "left"}
        history = await engine.history("r")
    assert patches(history)[:2] == [
        ("right", {"right": 2, "winner": "right"}),
        ("left", {"left": 1, "winner": "left"}),  # committed last: its "winner" wins
    ]


async def test_map_items_and_loop_iterations_update_the_state_too(db: Path) -> None:
    class Seen(BaseModel):
        visited: list[int] = []
        rounds: int = 0

    @step
    def visit(x: int) -> int:
        state = durable.context().state
        state.visited = [*state.visited, x]
        return x

    @step
    def round_(x: int) -> durable.LoopResult:
        state = durable.context().state
        state.rounds += 1
        return durable.again(x + 1) if x < 3 else durable.done(x)

    @step
    def spread(n: int) -> list[int]:
        return list(range(n))

    @step
    def report(_: Any) -> dict[str, Any]:
        return durable.context().state.model_dump()  # type: ignore[no-any-return]

    wf = Workflow("mixed", state=Seen).loop(round_, max_iterations=10).then(spread).map(visit, concurrency=1)
    wf = wf.then(report)
    async with Engine(db) as engine:
        assert await engine.run(wf, 0, run_id="r") == {"visited": [0, 1, 2], "rounds": 4}
