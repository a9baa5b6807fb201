"""Workflows for the ownership tests, and a script that runs them the ways users do.

    python ownership_workflows.py run DB RUN_ID EFFECTS [LEASE_TTL]   # durable.run (LEASE_TTL: an Engine)
    python ownership_workflows.py recover DB EFFECTS                  # engine.recover, prints its report
    python ownership_workflows.py start-many DB EFFECTS N             # starts N runs, then waits to be killed
    python ownership_workflows.py family DB EFFECTS                   # a parent whose child blocks in a step
    python ownership_workflows.py interrupt DB RUN_ID EFFECTS KIND    # a step raises KeyboardInterrupt/SystemExit

Every step appends one line (pid, run, node, attempt) to the EFFECTS file, fsync'ed, before
it returns: the tests count executions from outside, whatever was killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio

import durable
from durable import Engine, Workflow, step

EFFECTS = Path(os.environ.get("OWNERSHIP_EFFECTS", "effects.log"))
STEP_SECONDS = float(os.environ.get("OWNERSHIP_STEP_SECONDS", "0.3"))


def effect(tag: str = "") -> None:
    ctx = durable.context()
    line = json.dumps({"pid": os.getpid(), "run": ctx.run_id, "node": ctx.node, "attempt": ctx.attempt, "tag": tag})
    with open(EFFECTS, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@step
def first(x: int) -> int:
    effect("start")
    time.sleep(STEP_SECONDS)
    effect()
    return x + 1


@step
async def second(x: int) -> int:
    effect("start")
    await anyio.sleep(STEP_SECONDS)
    effect()
    return x * 2


@step
def third(x: int) -> int:
    effect("start")
    time.sleep(STEP_SECONDS)
    effect()
    return x + 100


@step
async def last(x: int) -> str:
    effect("start")
    await anyio.sleep(STEP_SECONDS)
    effect()
    return f"result {x}"


chain = Workflow("chain").then(first).then(second).then(third).then(last)


@step
def block(x: int) -> int:
    effect("start")
    time.sleep(float(os.environ.get("OWNERSHIP_BLOCK_SECONDS", "30")))
    effect()
    return x


child = Workflow("kid").then(block)
family = Workflow("family").then(first).then(child).then(third)


@step
def interrupted(x: int) -> int:
    effect("start")
    if os.environ.get("OWNERSHIP_INTERRUPT") == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if os.environ.get("OWNERSHIP_INTERRUPT") == "SystemExit":
        raise SystemExit(3)
    if os.environ.get("OWNERSHIP_INTERRUPT") == "sleep":
        time.sleep(30)
    effect()
    return x + 1


stoppable = Workflow("stoppable").then(first).then(interrupted).then(third)

WORKFLOWS = [chain, family, child, stoppable]


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "run":
        db, run_id = argv[2], argv[3]
        if len(argv) > 4:  # an Engine with this lease_ttl, as an embedding application would
            ttl = float(argv[4])

            async def with_engine() -> str:
                async with Engine(db, lease_ttl=ttl) as engine:
                    return str(await engine.run(chain, 1, run_id=run_id))

            try:
                print(json.dumps({"pid": os.getpid(), "result": anyio.run(with_engine)}), flush=True)
            except durable.DurableError as exc:
                print(json.dumps({"pid": os.getpid(), "error": type(exc).__name__, "message": str(exc)}), flush=True)
                raise SystemExit(1) from None
        else:
            print(json.dumps({"pid": os.getpid(), "result": durable.run(chain, 1, run_id=run_id, db=db)}), flush=True)
    elif mode == "recover":

        async def recover() -> dict[str, object]:
            async with Engine(argv[2]) as engine:
                report = await engine.recover(WORKFLOWS)
                results = {h.run_id: await h.result() for h in report}
                return {"resumed": sorted(results), "skipped": {s.run_id: s.reason for s in report.skipped}}

        print(json.dumps(anyio.run(recover)), flush=True)
    elif mode == "start-many":

        async def start_many() -> None:
            async with Engine(argv[2]) as engine:
                for i in range(int(argv[3])):
                    await engine.start(chain, i, run_id=f"many-{i}")
                print("started", flush=True)
                await anyio.sleep(3600)

        anyio.run(start_many)
    elif mode == "family":

        async def run_family() -> None:
            async with Engine(argv[2]) as engine:
                handle = await engine.start(family, 1, run_id="parent")
                print("started", flush=True)
                try:
                    print(json.dumps({"result": await handle.result()}), flush=True)
                except durable.RunCancelled as exc:
                    print(json.dumps({"cancelled": str(exc)}), flush=True)

        anyio.run(run_family)
    elif mode == "interrupt":
        print(durable.run(stoppable, 1, run_id=argv[3], db=argv[2]), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
