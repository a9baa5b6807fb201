"""Runs for the debugging commands' tests, made by the real engine in one SQLite journal.

:func:`make_runs` writes, in this order:

* ``done-1``: a completed run with a fork (branch ``a`` of two steps, branch ``b`` of one) and a join;
* ``retry-1``: a completed run whose step ``flaky`` failed once and succeeded on its retry;
* ``bad-1``: a failed run: ``explode`` failed three attempts in a row (with waits between them);
* ``bad-1-fixed``: ``bad-1`` forked before ``explode`` (``engine.fork``) and resumed with the fix: completed;
* ``crash-1``: a run stopped while its step ``hold`` was blocked (leaving ``async with Engine``
  is a crash to the run), resumed after a pause: completed; ``hold`` ran twice;
* ``bad-1-later``: another fork of ``bad-1``, never resumed: the one unfinished run;
* ``lang-1``: a completed run of the rest of the language: a route, a loop, a map, a child
  workflow (its run is ``lang-1/kid``), a sleep and a wait for a signal;
* ``cancel-1``: a run cancelled while it waited for a signal.

The fix and the unblocking change only the bodies of the steps (flags in :data:`MODE`), never
the definitions: what a real fix looks like to the journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio

import durable
from durable import Engine, RetryPolicy, Workflow, step

MODE = {"explode": True, "block": True, "flaky_failures": 0}
PAUSE_BEFORE_RESUME = 1.0  # seconds between the crash and the resume: an idle stretch the timeline squeezes (> 0.5s)


@step
def prep(n: int) -> int:
    return n + 1


@step
def a1(x: int) -> int:
    time.sleep(0.01)
    return x * 2


@step
def a2(x: int) -> int:
    return x + 3


@step
async def b1(x: int) -> int:
    await anyio.sleep(0.01)
    return x * 10


@step
def combine(branches: dict[str, int]) -> int:
    return branches["a"] + branches["b"]


@step
def finish(total: int) -> str:
    return f"total={total}"


FORKED = Workflow("forked").then(prep).fork().branch(a1, a2, name="a").branch(b1, name="b").join(combine).then(finish)
FORKED_STEPS = ["prep", "a1", "a2", "b1", "combine", "finish"]


@step(retries=RetryPolicy(max_attempts=3, initial="10ms", jitter=0))
def flaky(x: int) -> int:
    if MODE["flaky_failures"] < 1:
        MODE["flaky_failures"] += 1
        raise ConnectionError("gateway busy")
    return x


FLAKY = Workflow("flaky").then(prep).then(flaky).then(finish)


@step(retries=RetryPolicy(max_attempts=3, initial="60ms", jitter=0))
def explode(x: int) -> int:
    time.sleep(0.03)
    if MODE["explode"]:
        raise ValueError(f"boom: out of teapots ({x})")
    return x


BREAKER = Workflow("breaker").then(prep).then(explode).then(finish)


@step
async def hold(x: int) -> int:
    if MODE["block"]:
        await anyio.sleep_forever()
    return x


@step
async def quick(x: int) -> int:
    return x


@step
def merge(branches: dict[str, int]) -> int:
    return branches["hold"] + branches["quick"]


CRASHY = Workflow("crashy").then(prep).fork().branch(hold).branch(quick).join(merge)


@step
def half(n: int) -> int:
    return n // 2


@step
def triple(n: int) -> int:
    return n * 3


def parity(n: int) -> str:
    return "even" if n % 2 == 0 else "odd"


@step
def countdown(n: int) -> Any:
    return durable.again(n + 1) if n < 3 else durable.done(n)


@step
def spread(n: int) -> list[int]:
    return list(range(n))


@step
def square(x: int) -> int:
    return x * x


@step
def total(xs: list[int]) -> int:
    return sum(xs)


KID = Workflow("kid").then(a2)
LANG = (
    Workflow("language")
    .then(prep)
    .route(parity, keys=["even", "odd"])
    .branch("even", half)
    .branch("odd", triple)
    .end()
    .loop(countdown, max_iterations=5)
    .then(spread)
    .map(square)
    .then(total)
    .then(KID)
    .sleep("20ms")
    .wait_for("go")
    .then(finish)
)
WAITER = Workflow("waiter").then(prep).wait_for("never")


async def _parked(engine: Engine, run_id: str) -> None:
    """Wait until the run waits for a signal."""
    with anyio.fail_after(10):
        while (parked := (await engine.state(run_id)).parked()) is None or parked.status != "waiting":
            await anyio.sleep(0.005)


async def _language(path: Path) -> None:
    async with Engine(path, synchronous="NORMAL") as engine:
        handle = await engine.start(LANG, 1, run_id="lang-1")
        await _parked(engine, "lang-1")
        await engine.signal("lang-1", "go", 7)
        assert await handle.result() == "total=7"
        await engine.start(WAITER, 1, run_id="cancel-1")
        await _parked(engine, "cancel-1")
        await engine.cancel("cancel-1", "the customer gave up")


async def _crash_then_resume(path: Path) -> None:
    async with Engine(path, synchronous="NORMAL") as engine:
        await engine.start(CRASHY, 1, run_id="crash-1")
        with anyio.fail_after(10):
            while (await engine.state("crash-1")).nodes["hold"].status != "running":
                await anyio.sleep(0.005)
    # the block is left with 'hold' blocked: the run stops as in a crash
    await anyio.sleep(PAUSE_BEFORE_RESUME)
    MODE["block"] = False
    async with Engine(path, synchronous="NORMAL") as engine:
        handle = await engine.resume("crash-1", CRASHY)
        assert await handle.result() == 4


async def _fork_and_fix(path: Path) -> None:
    async with Engine(path, synchronous="NORMAL") as engine:
        new_id = await engine.fork("bad-1", from_step="explode", new_run_id="bad-1-fixed")
        MODE["explode"] = False
        assert await engine.run(BREAKER, run_id=new_id) == "total=4"
        MODE["explode"] = True
        await engine.fork("bad-1", from_step="explode", new_run_id="bad-1-later")


def make_runs(path: Path) -> None:
    """Write the runs listed in the module docstring into the journal at ``path``."""
    MODE.update(explode=True, block=True, flaky_failures=0)
    db = str(path)
    assert durable.run(FORKED, 1, run_id="done-1", db=db, synchronous="NORMAL") == "total=27"
    assert durable.run(FLAKY, 1, run_id="retry-1", db=db, synchronous="NORMAL") == "total=2"
    try:
        durable.run(BREAKER, 3, run_id="bad-1", db=db, synchronous="NORMAL")
    except durable.RunFailed:
        pass
    else:
        raise AssertionError("bad-1 should have failed")
    anyio.run(_fork_and_fix, path)
    anyio.run(_crash_then_resume, path)
    anyio.run(_language, path)
