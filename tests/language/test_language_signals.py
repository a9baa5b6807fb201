"""Signals: ``.wait_for("name", timeout=, default=)`` and ``engine.signal(run_id, name, payload)``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from durable import (
    DefinitionError,
    DurableError,
    Engine,
    JournalError,
    RunFailed,
    RunNotFound,
    SerializationError,
    SignalTimeout,
    Workflow,
    step,
)
from durable import events as ev

pytestmark = pytest.mark.anyio


CALLS: Counter[str] = Counter()
GATE: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.clear()


@step
def submit(x: int) -> int:
    CALLS["submit"] += 1
    return x


@step
async def gated_submit(x: int) -> int:
    """Waits for the test to open the gate: lets a test act before the run reaches its wait."""
    CALLS["gated_submit"] += 1
    await GATE["open"].wait()
    return x


@step
def record(decision: Any) -> str:
    CALLS["record"] += 1
    return f"decision: {decision}"


@step
def pair(both: Any) -> Any:
    return both


approval = Workflow("approval").then(submit).wait_for("approve").then(record)


async def parked(engine: Engine, run_id: str) -> None:
    with anyio.fail_after(5):
        while (await engine.state(run_id)).parked() is None:
            await anyio.sleep(0.01)


def received(history: list[ev.Event]) -> list[tuple[str, Any]]:
    return [(e.node, e.payload) for e in history if isinstance(e, ev.SignalReceived)]


async def test_a_signal_is_delivered_to_the_waiting_run(db: Path) -> None:
    async with Engine(db) as engine:
        handle = await engine.start(approval, 1, run_id="r")
        await parked(engine, "r")
        assert CALLS["record"] == 0
        signal_id = await engine.signal("r", "approve", {"by": "ann", "ok": True})
        with anyio.fail_after(5):
            assert await handle.result() == "decision: {'by': 'ann', 'ok': True}"
        history = await engine.history("r")
    assert isinstance(signal_id, int)
    kinds = [e.type for e in history]
    assert kinds.index("wait_started") < kinds.index("signal_received") < kinds.index("node_completed")
    got = next(e for e in history if isinstance(e, ev.SignalReceived))
    assert (got.node, got.signal, got.signal_id) == ("approve", "approve", signal_id)
    assert got.payload == {"by": "ann", "ok": True}
    done = next(e for e in history if isinstance(e, ev.NodeCompleted))
    assert (done.node, done.output, done.timed_out) == ("approve", {"by": "ann", "ok": True}, False)


async def test_a_signal_sent_before_the_run_reaches_its_wait_is_kept_and_delivered(db: Path) -> None:
    wf = Workflow("early").then(gated_submit).wait_for("approve").then(record)
    GATE["open"] = anyio.Event()
    async with Engine(db) as engine:
        handle = await engine.start(wf, 1, run_id="r")
        await engine.signal("r", "approve", "yes, early")
        GATE["open"].set()
        with anyio.fail_after(5):
            assert await handle.result() == "decision: yes, early"
        history = await engine.history("r")
    assert received(history) == [("approve", "yes, early")]
    assert not any(isinstance(e, ev.WaitStarted) for e in history)  # it never had to park


async def test_several_signals_go_to_successive_waits_in_the_order_sent(db: Path) -> None:
    wf = (
        Workflow("steps")
        .then(gated_submit)
        .wait_for("step", name="first")
        .wait_for("step", name="second")
        .wait_for("step", name="third")
        .then(record)
    )
    GATE["open"] = anyio.Event()
    async with Engine(db) as engine:
        handle = await engine.start(wf, 1, run_id="r")
        await engine.signal("r", "step", 1)  # two before the run gets to its waits
        await engine.signal("r", "step", 2)
        GATE["open"].set()
        await parked(engine, "r")
        await engine.signal("r", "step", 3)  # one while it waits
        with anyio.fail_after(5):
            assert await handle.result() == "decision: 3"
        history = await engine.history("r")
    assert received(history) == [("first", 1), ("second", 2), ("third", 3)]


async def test_a_signal_of_another_name_does_not_wake_the_wait(db: Path) -> None:
    async with Engine(db) as engine:
        handle = await engine.start(approval, 1, run_id="r")
        await parked(engine, "r")
        with pytest.raises(DurableError, match=r"no wait_for\('reject'\).*'approve'"):
            await engine.signal("r", "reject", "no")  # a typo, most likely: refused
        await engine.signal("r", "reject", "no", force=True)  # kept anyway when asked
        await anyio.sleep(0.1)
        state = await engine.state("r")
        assert state.parked() is not None and state.parked().node == "approve"  # type: ignore[union-attr]
        await engine.signal("r", "approve", "fine")
        with anyio.fail_after(5):
            assert await handle.result() == "decision: fine"


async def test_a_timeout_with_a_default_goes_on_with_the_default(db: Path) -> None:
    default = {"approved": True, "by": "timeout"}
    wf = Workflow("lenient").then(submit).wait_for("approve", timeout=0.2, default=default).then(record)
    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(wf, 1, run_id="r") == "decision: {'approved': True, 'by': 'timeout'}"
        history = await engine.history("r")
    started = next(e for e in history if isinstance(e, ev.WaitStarted))
    done = next(e for e in history if isinstance(e, ev.NodeCompleted))
    assert (done.output, done.timed_out) == (default, True)
    assert started.deadline is not None and done.ts >= started.deadline  # not earlier than the deadline


async def test_a_timeout_without_a_default_fails_the_run_with_signal_timeout(db: Path) -> None:
    wf = Workflow("strict").then(submit).wait_for("approve", timeout="200ms").then(record)
    async with Engine(db) as engine:
        with anyio.fail_after(5), pytest.raises(RunFailed) as caught:
            await engine.run(wf, 1, run_id="r")
        history = await engine.history("r")
    assert caught.value.error_type == "SignalTimeout"
    assert caught.value.node == "approve"
    assert isinstance(caught.value.__cause__, SignalTimeout)
    assert "default=" in str(caught.value)
    assert history[-1].type == "run_failed"
    assert CALLS["record"] == 0


async def test_a_signal_to_an_unknown_run_raises_run_not_found(db: Path) -> None:
    async with Engine(db) as engine:
        with pytest.raises(RunNotFound):
            await engine.signal("nobody", "approve", 1)


async def test_a_signal_to_a_finished_run_is_refused(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(Workflow("done").then(submit), 1, run_id="r") == 1
        with pytest.raises(JournalError, match="has completed; it takes no more signals"):
            await engine.signal("r", "approve", 1)


async def test_signal_arguments_are_checked(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(approval, 1, run_id="r")
        with pytest.raises(SerializationError):
            await engine.signal("r", "approve", object())
        with pytest.raises(DurableError, match="non-empty string"):
            await engine.signal("r", "", 1)
    with pytest.raises(DefinitionError, match="not starting with '__'"):
        Workflow("w").wait_for("__internal")
    with pytest.raises(DefinitionError, match="is not JSON"):
        Workflow("w").wait_for("x", default=object())


async def test_a_signal_from_another_engine_wakes_the_parked_run_by_polling(db: Path) -> None:
    async with Engine(db, signal_poll_interval=0.05) as first:
        handle = await first.start(approval, 1, run_id="r")
        await parked(first, "r")
        async with Engine(db) as second:  # another connection, as another process would have
            await second.signal("r", "approve", "from elsewhere")
        with anyio.fail_after(5):
            assert await handle.result() == "decision: from elsewhere"


async def test_a_signal_sent_while_no_engine_runs_is_delivered_on_recover(db: Path) -> None:
    async with Engine(db) as engine:
        await engine.start(approval, 1, run_id="r")
        await parked(engine, "r")
    # no engine holds the run now; the signal waits in the journal's inbox
    async with Engine(db) as engine:
        await engine.signal("r", "approve", "while you were away")
    async with Engine(db) as engine:
        handles = await engine.recover([approval])
        with anyio.fail_after(5):
            assert await handles[0].result() == "decision: while you were away"
        history = await engine.history("r")
    assert CALLS == {"submit": 1, "record": 1}
    assert received(history) == [("approve", "while you were away")]
    assert len([e for e in history if isinstance(e, ev.WaitStarted)]) == 1


async def test_a_consumed_signal_is_not_delivered_again_after_a_restart(db: Path) -> None:
    wf = Workflow("two").then(submit).wait_for("go", name="a").then(pair).wait_for("go", name="b").then(record)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        await parked(engine, "r")
        await engine.signal("r", "go", "first")
        with anyio.fail_after(5):
            while (await engine.state("r")).nodes["b"].status != "waiting":
                await anyio.sleep(0.01)
    async with Engine(db) as engine:
        handle = await engine.resume("r", wf)
        await anyio.sleep(0.1)
        assert (await engine.state("r")).status == "running"  # "first" was consumed by 'a'
        await engine.signal("r", "go", "second")
        with anyio.fail_after(5):
            assert await handle.result() == "decision: second"
        history = await engine.history("r")
    assert received(history) == [("a", "first"), ("b", "second")]


async def test_a_wait_timeout_survives_a_restart(db: Path) -> None:
    wf = Workflow("deadline").then(submit).wait_for("approve", timeout=0.3, default={"late": True}).then(record)
    async with Engine(db) as engine:
        await engine.start(wf, 1, run_id="r")
        await parked(engine, "r")
    async with Engine(db) as engine:
        with anyio.fail_after(5):
            assert await engine.run(wf, run_id="r") == "decision: {'late': True}"
        history = await engine.history("r")
    started = [e for e in history if isinstance(e, ev.WaitStarted)]
    assert len(started) == 1  # the deadline was journaled once and kept
    done = next(e for e in history if isinstance(e, ev.NodeCompleted))
    assert started[0].deadline is not None and done.ts >= started[0].deadline
