"""Maps: ``.map(step, concurrency=)`` over the incoming list, on real SQLite files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import durable
from durable import DefinitionError, Engine, RunFailed, Workflow, step
from durable import events as ev
from durable.testing import SimulatedCrash, crash_at

pytestmark = pytest.mark.anyio


CALLS: Counter[str] = Counter()
LIVE = {"now": 0, "max": 0}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    LIVE.update(now=0, max=0)


@step
def spread(n: int) -> list[int]:
    return list(range(n))


@step
async def slow_square(x: int) -> int:
    """Later items finish first: the output order must still be the items' order."""
    CALLS[durable.context().node] += 1
    LIVE["now"] += 1
    LIVE["max"] = max(LIVE["max"], LIVE["now"])
    try:
        await anyio.sleep(0.002 * (10 - x % 10))
    finally:
        LIVE["now"] -= 1
    return x * x


@step
def square(x: int) -> int:
    CALLS[durable.context().node] += 1
    return x * x


@step
def total(xs: list[int]) -> int:
    return sum(xs)


class Item(BaseModel):
    sku: str
    qty: int


@step
def items(n: int) -> list[Item]:
    return [Item(sku=f"s{i}", qty=i) for i in range(n)]


@step
def restock(item: Item) -> Item:
    assert isinstance(item, Item)
    return Item(sku=item.sku, qty=item.qty + 10)


@step
def describe(xs: list[Item]) -> str:
    return ",".join(f"{type(x).__name__}:{x.sku}={x.qty}" for x in xs)


# -- running ---------------------------------------------------------------------------------


async def test_results_come_in_the_order_of_the_items(db: Path) -> None:
    wf = Workflow("squares").then(spread).map(slow_square).then(total, name="sum")
    async with Engine(db) as engine:
        handle = await engine.start(wf, 8, run_id="r")
        assert await handle.result() == sum(i * i for i in range(8))
        history = await engine.history("r")
        state = await engine.state("r")
    assert state.nodes["slow_square"].output == [i * i for i in range(8)]
    assert [(e.node, e.count) for e in history if isinstance(e, ev.MapStarted)] == [("slow_square", 8)]
    assert sorted(e.node for e in history if isinstance(e, ev.StepCompleted) and "[" in e.node) == sorted(
        f"slow_square[{i}]" for i in range(8)
    )
    assert CALLS == {f"slow_square[{i}]": 1 for i in range(8)}
    assert LIVE["max"] == 8  # no limit: all at once


async def test_items_are_decoded_by_the_steps_annotations(db: Path) -> None:
    wf = Workflow("restock").then(items).map(restock).then(describe)
    async with Engine(db) as engine:
        assert await engine.run(wf, 3, run_id="r") == "Item:s0=10,Item:s1=11,Item:s2=12"


@pytest.mark.parametrize("limit", [1, 3])
async def test_the_concurrency_limit_is_respected(db: Path, limit: int) -> None:
    wf = Workflow("limited").then(spread).map(slow_square, concurrency=limit)
    async with Engine(db) as engine:
        assert await engine.run(wf, 10, run_id="r") == [i * i for i in range(10)]
    assert LIVE["max"] == limit


async def test_an_empty_list_maps_to_an_empty_list(db: Path) -> None:
    wf = Workflow("empty").then(spread).map(square)
    async with Engine(db) as engine:
        assert await engine.run(wf, 0, run_id="r") == []
    assert not CALLS


async def test_a_tuple_is_mapped_like_a_list(db: Path) -> None:
    wf = Workflow("tuple").map(square)
    async with Engine(db) as engine:
        assert await engine.run(wf, (2, 3), run_id="r") == [4, 9]


async def test_input_that_is_not_a_list_fails_the_run_with_a_clear_error(db: Path) -> None:
    wf = Workflow("not-a-list").map(square)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, {"a": 1}, run_id="r")
    assert caught.value.node == "square"
    assert "map 'square' needs a list as its input, got dict" in str(caught.value)
    assert not CALLS


async def test_an_item_failing_for_good_fails_the_run_and_cancels_the_rest(db: Path) -> None:
    started: list[int] = []
    finished: list[int] = []

    @step
    async def picky(x: int) -> int:
        started.append(x)
        if x == 2:
            await anyio.sleep(0.05)  # the others are in their long sleep by now
            raise ValueError("item 2 is bad")
        await anyio.sleep(10)
        finished.append(x)
        return x

    wf = Workflow("picky").then(spread).map(picky, concurrency=4)
    async with Engine(db) as engine:
        with anyio.fail_after(5), pytest.raises(RunFailed) as caught:
            await engine.run(wf, 8, run_id="r")
        history = await engine.history("r")
    assert caught.value.node == "picky[2]"
    assert caught.value.error_type == "ValueError"
    assert sorted(started) == [0, 1, 2, 3]  # the items beyond the limit never started
    assert finished == []  # the others were cancelled at their await
    assert history[-1].type == "run_failed"
    assert not any(isinstance(e, ev.NodeCompleted) for e in history)


def test_map_definitions_are_checked_when_built() -> None:
    with pytest.raises(DefinitionError, match="concurrency must be 1 or more"):
        Workflow("w").map(square, concurrency=0)
    with pytest.raises(DefinitionError, match="already exists"):
        Workflow("w").map(square).map(square)
    assert Workflow("w").map(square).map(square, name="again").nodes[1].id == "again"


# -- crash and resume ------------------------------------------------------------------------


async def test_items_completed_before_a_crash_are_not_run_again(db: Path) -> None:
    wf = Workflow("squares").then(spread).map(square, concurrency=1)
    # in_step arrivals: spread, square[0], square[1], square[2] <- the process dies here
    with crash_at("in_step", 4), pytest.raises(SimulatedCrash):
        async with Engine(db) as engine:
            await engine.run(wf, 6, run_id="r")
    assert CALLS == {"square[0]": 1, "square[1]": 1, "square[2]": 1}
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="r") == [0, 1, 4, 9, 16, 25]
        history = await engine.history("r")
    assert CALLS == {"square[0]": 1, "square[1]": 1, "square[2]": 2, "square[3]": 1, "square[4]": 1, "square[5]": 1}
    assert len([e for e in history if isinstance(e, ev.MapStarted)]) == 1


async def test_a_crash_while_items_run_concurrently_resumes_only_the_unfinished_ones(db: Path) -> None:
    gate: dict[str, Any] = {"block": True, "entered": anyio.Event()}

    @step
    async def staggered(x: int) -> int:
        CALLS[durable.context().node] += 1
        if x >= 4 and gate["block"]:  # the last two items run "for hours"
            if x == 5:
                gate["entered"].set()
            await anyio.sleep_forever()
        return x + 100

    wf = Workflow("staggered").then(spread).map(staggered, concurrency=3)
    async with Engine(db) as engine:
        await engine.start(wf, 6, run_id="r")
        with anyio.fail_after(5):
            await gate["entered"].wait()
        await anyio.sleep(0.1)
    # items 4 and 5 were in flight; every finished item's completion was committed when it returned
    async with Engine(db) as engine:
        state = await engine.state("r")
        committed = {n for n, s in state.nodes.items() if n.startswith("staggered[") and s.status == "completed"}
        assert committed == {f"staggered[{i}]" for i in range(4)}
        gate["block"] = False
        assert await engine.run(wf, run_id="r") == [100, 101, 102, 103, 104, 105]
    assert CALLS == {f"staggered[{i}]": 1 for i in range(4)} | {"staggered[4]": 2, "staggered[5]": 2}
