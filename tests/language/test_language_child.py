"""Child workflows: ``.then(other_workflow)`` runs it as a linked run, on real SQLite files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import durable
from durable import Engine, RunFailed, Workflow, step
from durable import events as ev

pytestmark = pytest.mark.anyio


CALLS: Counter[tuple[str, str]] = Counter()
GATE: dict[str, Any] = {"block": False}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.update(block=False, entered=anyio.Event())


def _count() -> None:
    ctx = durable.context()
    CALLS[(ctx.run_id, ctx.node)] += 1


class Receipt(BaseModel):
    order: int
    amount: int


@step
def price(order: int) -> int:
    _count()
    return order * 10


@step
async def charge(amount: int) -> int:
    _count()
    if GATE["block"]:
        GATE["entered"].set()
        await anyio.sleep_forever()
    return amount + 1


@step
def receipt(amount: int) -> Receipt:
    _count()
    return Receipt(order=amount // 10, amount=amount)


@step
def prepare(order: int) -> int:
    _count()
    return order


@step
def thank(r: Receipt) -> str:
    _count()
    assert isinstance(r, Receipt)
    return f"thanks for order {r.order}: {r.amount}"


payment = Workflow("payment").then(price).then(charge).then(receipt)
checkout = Workflow("checkout").then(prepare).then(payment).then(thank)


async def test_the_child_runs_as_its_own_run_linked_to_the_parent(db: Path) -> None:
    async with Engine(db) as engine:
        assert await engine.run(checkout, 4, run_id="order-4") == "thanks for order 4: 41"
        parent = await engine.history("order-4")
        child = await engine.history("order-4/payment")
        runs = {r.run_id: r for r in await engine.list_runs()}
    assert runs["order-4/payment"].workflow == "payment"
    assert runs["order-4/payment"].status == "completed"
    first = child[0]
    assert isinstance(first, ev.RunStarted)
    assert first.parent == ev.ParentRef(run_id="order-4", node="payment")
    assert first.input == 4
    assert first.definition_hash == payment.definition_hash
    assert child[-1].type == "run_completed"
    linked = [e for e in parent if isinstance(e, ev.ChildStarted)]
    assert [(e.node, e.child_run_id) for e in linked] == [("payment", "order-4/payment")]
    completed = [e for e in parent if isinstance(e, ev.NodeCompleted)]
    assert [(e.node, e.output) for e in completed] == [("payment", {"order": 4, "amount": 41})]
    # the child's steps are in the child's journal only
    assert {e.node for e in parent if isinstance(e, ev.StepStarted)} == {"prepare", "thank"}
    assert {e.node for e in child if isinstance(e, ev.StepStarted)} == {"price", "charge", "receipt"}
    assert CALLS[("order-4/payment", "charge")] == 1


async def test_a_child_workflow_can_be_named_and_used_twice(db: Path) -> None:
    pricing = Workflow("pricing").then(price)
    twice = Workflow("twice").then(pricing).then(pricing, name="again")
    async with Engine(db) as engine:
        assert await engine.run(twice, 1, run_id="t") == 100
        assert {r.run_id for r in await engine.list_runs()} == {"t", "t/pricing", "t/again"}
    assert CALLS == {("t/pricing", "price"): 1, ("t/again", "price"): 1}


async def test_a_failing_child_fails_the_parent_with_the_childs_error(db: Path) -> None:
    @step
    def decline(amount: int) -> int:
        raise PermissionError(f"card declined for {amount}")

    strict = Workflow("strict-payment").then(price).then(decline)
    wf = Workflow("checkout-strict").then(prepare).then(strict).then(thank)
    async with Engine(db) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.run(wf, 2, run_id="p")
        child_state = await engine.state("p/strict-payment")
        parent_history = await engine.history("p")
    assert caught.value.node == "strict-payment"
    assert caught.value.error_type == "PermissionError"
    assert "child run 'p/strict-payment'" in str(caught.value)
    assert "card declined for 20" in str(caught.value)
    assert child_state.status == "failed"
    assert parent_history[-1].type == "run_failed"
    assert ("p", "thank") not in CALLS


async def test_a_parent_crash_while_the_child_runs_resumes_both_without_rerunning_completed_steps(db: Path) -> None:
    GATE["block"] = True
    async with Engine(db) as engine:
        await engine.start(checkout, 7, run_id="o")
        with anyio.fail_after(5):
            await GATE["entered"].wait()
    # the process "died" with the child in its 'charge' step and the parent waiting for it
    GATE["block"] = False
    async with Engine(db) as engine:
        assert (await engine.state("o")).status == "running"
        assert (await engine.state("o/payment")).status == "running"
        assert await engine.run(checkout, run_id="o") == "thanks for order 7: 71"
        child = await engine.history("o/payment")
        parent = await engine.history("o")
    assert CALLS == {
        ("o", "prepare"): 1,
        ("o/payment", "price"): 1,
        ("o/payment", "charge"): 2,  # in flight at the crash
        ("o/payment", "receipt"): 1,
        ("o", "thank"): 1,
    }
    assert len([e for e in child if isinstance(e, ev.RunStarted)]) == 1
    assert len([e for e in parent if isinstance(e, ev.ChildStarted)]) == 1


async def test_recover_with_both_definitions_resumes_parent_and_child_once(db: Path) -> None:
    GATE["block"] = True
    async with Engine(db) as engine:
        await engine.start(checkout, 3, run_id="o")
        with anyio.fail_after(5):
            await GATE["entered"].wait()
    GATE["block"] = False
    async with Engine(db) as engine:
        handles = await engine.recover([checkout, payment])
        assert [h.run_id for h in handles] == ["o"]  # the parent resumes its child
        assert [(s.run_id, s.reason) for s in handles.skipped] == [("o/payment", "child")]
        results = {"o": await handles[0].result(), "o/payment": await engine.wait("o/payment", payment)}
    assert results["o"] == "thanks for order 3: 31"
    assert results["o/payment"] == Receipt(order=3, amount=31)
    assert CALLS[("o/payment", "charge")] == 2
    assert CALLS[("o/payment", "receipt")] == 1


async def test_a_finished_child_is_not_run_again_when_the_parent_resumes(db: Path) -> None:
    block = {"thank": True}
    entered = anyio.Event()

    @step
    async def slow_thank(r: Receipt) -> str:
        _count()
        if block["thank"]:
            entered.set()
            await anyio.sleep_forever()
        return f"thanks {r.amount}"

    wf = Workflow("checkout-slow").then(prepare).then(payment).then(slow_thank)
    async with Engine(db) as engine:
        await engine.start(wf, 5, run_id="o")
        with anyio.fail_after(5):
            await entered.wait()
    block["thank"] = False
    async with Engine(db) as engine:
        assert await engine.run(wf, run_id="o") == "thanks 51"
    assert CALLS[("o/payment", "price")] == CALLS[("o/payment", "charge")] == CALLS[("o/payment", "receipt")] == 1
    assert CALLS[("o", "slow_thank")] == 2
