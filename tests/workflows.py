"""Workflows run in child processes by the crash tests (tests/chaos/test_sigkill.py).

Run as a script, so that a child process needs nothing but the path of this file::

    python tests/workflows.py start  DB LOG   # start run 'victim' and run it to its end
    python tests/workflows.py resume DB LOG   # recover unfinished runs in a fresh process

Every step first appends ``"<node> <attempt> <pid>"`` to the side-effect log LOG (flushed and
fsynced, so that a line survives a SIGKILL that follows it), then sleeps, so that a parent
process has time to kill it mid-run. The result for input 1 is ``"total=34"``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import anyio

import durable
from durable import Engine, Workflow

RUN_ID = "victim"
INPUT = 1
RESULT = "total=34"
STEPS = ("prepare", "a1", "a2", "b1", "b2", "combine", "finish")
PAUSE = 0.15

_log_path = ""


def _effect() -> None:
    ctx = durable.context()
    with open(_log_path, "a") as log:
        log.write(f"{ctx.node} {ctx.attempt} {os.getpid()}\n")
        log.flush()
        os.fsync(log.fileno())


def prepare(n: int) -> int:
    _effect()
    time.sleep(PAUSE)
    return n + 1


def a1(x: int) -> int:
    _effect()
    time.sleep(PAUSE)
    return x * 2


async def a2(x: int) -> int:
    _effect()
    await anyio.sleep(PAUSE)
    return x + 3


async def b1(x: int) -> int:
    _effect()
    await anyio.sleep(PAUSE)
    return x * 10


def b2(x: int) -> int:
    _effect()
    time.sleep(PAUSE)
    return x + 7


async def combine(outputs: dict[str, int]) -> int:
    _effect()
    await anyio.sleep(PAUSE)
    return outputs["a1"] + outputs["b1"]


def finish(total: int) -> str:
    _effect()
    time.sleep(PAUSE)
    return f"total={total}"


CRASHY = Workflow("crashy").then(prepare).fork().branch(a1, a2).branch(b1, b2).join(combine).then(finish)


async def _resume(db: str) -> None:
    async with Engine(db) as engine:
        handles = await engine.recover([CRASHY])
        if [h.run_id for h in handles] != [RUN_ID]:
            raise SystemExit(f"expected to recover exactly {RUN_ID!r}, got {[h.run_id for h in handles]}")
        print(json.dumps(await handles[0].result()), flush=True)


def main(argv: list[str]) -> None:
    global _log_path
    mode, db, _log_path = argv
    if mode == "start":
        print(json.dumps(durable.run(CRASHY, INPUT, run_id=RUN_ID, db=db)), flush=True)
    elif mode == "resume":
        anyio.run(_resume, db)
    else:
        raise SystemExit(f"unknown mode {mode!r}; use start or resume")


if __name__ == "__main__":
    main(sys.argv[1:])
