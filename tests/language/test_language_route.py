"""Routes: ``.route(key).branch(k, ...).default(...) / .end()``, on real SQLite files."""

from __future__ import annotations

from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

from durable import DefinitionError, Engine, NoRouteBranch, RunFailed, Workflow, step
from durable import events as ev

pytestmark = pytest.mark.anyio


CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@step
def small(x: int) -> str:
    CALLS["small"] += 1
    return f"small {x}"


@step
def large(x: int) -> str:
    CALLS["large"] += 1
    return f"large {x}"


@step
def huge(x: int) -> str:
    CALLS["huge"] += 1
    return f"huge {x}"


@step
def fallback(x: int) -> str:
    CALLS["fallback"] += 1
    return f"fallback {x}"


def size(x: int) -> Literal["small", "large"]:
    return "small" if x < 10 else "large"


class Size(Enum):
    SMALL = "small"
    LARGE = "large"


def size_enum(x: int) -> Size:
    return Size.SMALL if x < 10 else Size.LARGE


def free_key(x: int) -> str:  # no declared keys: any string
    return {1: "small", 2: "large"}.get(x, "other")


# -- running ---------------------------------------------------------------------------------


async def test_the_chosen_branch_runs_and_the_others_do_not(db: Path) -> None:
    wf = Workflow("sizes").route(size).branch("small", small).branch("large", large).end()
    async with Engine(db) as engine:
        assert await engine.run(wf, 3, run_id="a") == "small 3"
        assert CALLS == {"small": 1}
        assert await engine.run(wf, 30, run_id="b") == "large 30"
        assert CALLS == {"small": 1, "large": 1}
        history = await engine.history("b")
    chosen = [e for e in history if isinstance(e, ev.RouteChosen)]
    assert [(e.node, e.key, e.branch) for e in chosen] == [("route-1", "large", "large")]
    started = [e.node for e in history if isinstance(e, ev.StepStarted)]
    assert started == ["large"]
    done = [e for e in history if isinstance(e, ev.NodeCompleted)]
    assert [(e.node, e.output) for e in done] == [("route-1", "large 30")]


async def test_a_branch_may_chain_several_steps_and_the_route_hands_its_output_on(db: Path) -> None:
    @step
    def plus_one(x: int) -> int:
        return x + 1

    @step
    def times_ten(x: int) -> int:
        return x * 10

    @step
    def describe(x: Any) -> str:
        return f"after the route: {x!r}"

    wf = (
        Workflow("chained").route(size).branch("small", plus_one, times_ten).branch("large", large).end().then(describe)
    )
    async with Engine(db) as engine:
        assert await engine.run(wf, 2, run_id="r") == "after the route: 30"


async def test_an_enum_key_selects_the_branch_of_its_value(db: Path) -> None:
    wf = Workflow("enum").route(size_enum).branch(Size.SMALL, small).branch(Size.LARGE, large).end()
    async with Engine(db) as engine:
        assert await engine.run(wf, 99, run_id="r") == "large 99"
    assert CALLS == {"large": 1}


async def test_the_default_branch_runs_for_a_key_without_a_branch(db: Path) -> None:
    wf = Workflow("defaults").route(free_key).branch("small", small).branch("large", large).default(fallback)
    async with Engine(db) as engine:
        assert await engine.run(wf, 1, run_id="one") == "small 1"
        assert await engine.run(wf, 7, run_id="seven") == "fallback 7"
        history = await engine.history("seven")
    assert [(e.key, e.branch) for e in history if isinstance(e, ev.RouteChosen)] == [("other", "default")]
    assert CALLS == {"small": 1, "fallback": 1}


async def test_a_key_with_no_branch_and_no_default_fails_the_run_with_no_route_branch(db: Path) -> None:
    wf = Workflow("strict").route(free_key).branch("small", small).branch("large", large).end()
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, 5, run_id="r")
        history = await engine.history("r")
    assert caught.value.error_type == "NoRouteBranch"
    assert caught.value.node == "route-1"
    assert isinstance(caught.value.__cause__, NoRouteBranch)
    assert caught.value.__cause__.key == "other"
    assert "add .branch(key, ...)" in str(caught.value)
    assert history[-1].type == "run_failed"
    assert not CALLS


async def test_a_failing_key_function_fails_the_run_with_its_error(db: Path) -> None:
    def broken_key(x: int) -> str:
        raise LookupError(f"no size for {x}")

    wf = Workflow("broken-key").route(broken_key).branch("small", small).default(fallback)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, 5, run_id="r")
    assert caught.value.error_type == "LookupError"
    assert "no size for 5" in str(caught.value)
    assert not CALLS


class Parcel(BaseModel):
    weight: int


@step
def weigh(x: int) -> Parcel:
    return Parcel(weight=x)


def heavy(p: Parcel) -> Literal["light", "heavy"]:
    return "heavy" if p.weight > 5 else "light"


@step
def ship(p: Parcel) -> str:
    return f"ship {p.weight}kg ({type(p).__name__})"


@step
def add_surcharge(p: Parcel) -> Parcel:
    return Parcel(weight=p.weight + 100)


async def test_an_empty_branch_passes_the_input_through(db: Path) -> None:
    wf = Workflow("ship").then(weigh).route(heavy).branch("light").branch("heavy", add_surcharge).end().then(ship)
    defaulted = Workflow("ship-default").then(weigh).route(heavy).branch("heavy", add_surcharge).default().then(ship)
    async with Engine(db) as engine:
        assert await engine.run(wf, 2, run_id="light") == "ship 2kg (Parcel)"
        assert await engine.run(wf, 9, run_id="heavy") == "ship 109kg (Parcel)"
        assert await engine.run(defaulted, 3, run_id="default") == "ship 3kg (Parcel)"
        history = await engine.history("light")
    done = [e for e in history if isinstance(e, ev.NodeCompleted)]
    assert [(e.node, e.output) for e in done] == [("route-1", {"weight": 2})]


# -- definition time -------------------------------------------------------------------------


def test_a_declared_key_without_a_branch_is_refused_at_definition_time() -> None:
    with pytest.raises(DefinitionError, match=r"\['large'\] have no branch"):
        Workflow("w").route(size).branch("small", small).end()
    with pytest.raises(DefinitionError, match=r"\['large'\] have no branch"):
        Workflow("w").route(size_enum).branch(Size.SMALL, small).end()
    with pytest.raises(DefinitionError, match=r"\['b'\] have no branch"):
        Workflow("w").route(free_key, keys=["a", "b"]).branch("a", small).end()


def test_a_default_covers_the_declared_keys_without_a_branch() -> None:
    wf = Workflow("w").route(size).branch("small", small).default(fallback)
    assert wf.nodes[0].kind == "route"


def test_a_branch_for_an_undeclared_key_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"'medium' is not one of the declared keys \['small', 'large'\]"):
        Workflow("w").route(size).branch("medium", small)
    with pytest.raises(DefinitionError, match="is not one of the declared keys"):
        Workflow("w").route(size_enum).branch("tiny", small)


def test_route_builder_mistakes_are_refused() -> None:
    with pytest.raises(DefinitionError, match="two branches for key 'small'"):
        Workflow("w").route(free_key).branch("small", small).branch("small", large)
    with pytest.raises(DefinitionError, match="has no branches"):
        Workflow("w").route(free_key).end()
    with pytest.raises(DefinitionError, match="still open"):
        Workflow("w").route(free_key).branch("small", small).then(large)  # type: ignore[call-arg]
    with pytest.raises(DefinitionError, match="needs a function"):
        Workflow("w").route("small")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="already exists"):
        Workflow("w").then(small).route(free_key).branch("a", small).end()


# -- crash and resume ------------------------------------------------------------------------

MOOD = {"key": "small"}
GATE: dict[str, Any] = {}


def mood(x: int) -> str:
    return MOOD["key"]


@step
async def slow_small(x: int) -> str:
    CALLS["slow_small"] += 1
    if GATE.get("block"):
        GATE["entered"].set()
        await anyio.sleep_forever()
    return f"slow small {x}"


async def test_a_resumed_run_takes_the_branch_it_chose_even_if_the_key_now_answers_otherwise(db: Path) -> None:
    wf = Workflow("moody").route(mood).branch("small", slow_small).branch("large", large).end()
    MOOD["key"] = "small"
    GATE.update(block=True, entered=anyio.Event())
    async with Engine(db) as engine:
        await engine.start(wf, 4, run_id="r")
        with anyio.fail_after(5):
            await GATE["entered"].wait()
    # the engine stopped as a crash would, inside the branch; the key would now choose "large"
    MOOD["key"] = "large"
    GATE["block"] = False
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="r") == "slow small 4"
        history = await engine.history("r")
    assert CALLS == {"slow_small": 2}  # the interrupted attempt, then its re-run; never "large"
    assert [(e.key, e.branch) for e in history if isinstance(e, ev.RouteChosen)] == [("small", "small")]
