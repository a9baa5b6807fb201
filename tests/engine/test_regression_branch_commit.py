"""Regression: a finished branch is committed while its sibling still runs (was lost at a crash and re-run)."""

from pathlib import Path

import anyio

from durable import Engine, Workflow, step

CALLS = {"quick": 0}
BLOCK = {"on": True}


@step
async def hold(x: int) -> int:
    if BLOCK["on"]:
        await anyio.sleep_forever()
    return x


@step
async def quick(x: int) -> int:
    CALLS["quick"] += 1  # stands for an external effect: an email, a payment
    return x


@step
def merge(b: dict) -> int:
    return b["hold"] + b["quick"]


WF = Workflow("w").fork().branch(hold).branch(quick).join(merge)


def test_a_finished_branch_is_committed_while_its_sibling_runs(tmp_path: Path) -> None:
    db = tmp_path / "j.db"

    async def main() -> None:
        async with Engine(db) as engine:
            await engine.start(WF, 1, run_id="r")
            with anyio.fail_after(5):
                while CALLS["quick"] == 0:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.5)  # quick returned long ago; hold still runs
            types = [(e.type, getattr(e, "node", None)) for e in await engine.history("r")]
            assert ("step_completed", "quick") in types, types
        BLOCK["on"] = False  # leaving the block above stopped the run as a crash would
        async with Engine(db) as engine:
            assert await (await engine.resume("r", WF)).result() == 2
        assert CALLS["quick"] == 1  # the step whose completion was known must not run again

    anyio.run(main)
