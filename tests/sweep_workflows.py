"""Workflows for tests/chaos/test_crash_sweep.py, importable by the sweep's child processes.

The sweep passes its ``sys.path`` on to the children, so ``sweep_workflows:failing`` resolves
there as it does under pytest. The well-behaved demo lives in ``durable.testing.sweep:demo``.
"""

from __future__ import annotations

import os

from durable import RetryPolicy, Workflow, context, step
from durable.testing.sweep import LOG_ENV, log_execution


@step
def prepare(x: int) -> int:
    log_execution()
    return x + 1


@step(retries=RetryPolicy(max_attempts=2, initial=0.01, jitter=0.0))
def refuse(x: int) -> int:
    log_execution()
    raise ValueError(f"card {x} declined")


@step
async def notify(x: int) -> str:
    log_execution()
    return f"notified {x}"


@step
def settle(parts: dict[str, object]) -> str:
    log_execution()
    return repr(parts)


failing = Workflow("sweep-failing").then(prepare).fork().branch(refuse).branch(notify).join(settle)
"""Fails for good in one branch (after one retry) while its sibling completes: a failure must survive kills too."""


@step
def stamp(x: int) -> int:
    log_execution()
    return x * 100 + context().attempt  # not deterministic across crashes: depends on the attempt


@step
def finish(x: int) -> int:
    log_execution()
    return x + 1


attempt_dependent = Workflow("sweep-attempt-dependent").then(stamp).then(finish)
"""Broken on purpose: a kill while ``stamp`` is in flight changes the result."""


@step
def first(x: int) -> int:
    log_execution()
    return x + 1


@step
def second(x: int) -> int:
    log_execution()
    # Lies in the side-effect log: claims that `first` ran again, in whatever process runs this.
    with open(os.environ[LOG_ENV], "a") as log:
        log.write(f"first 1 {os.getpid()}\n")
    return x * 2


rerun_liar = Workflow("sweep-rerun-liar").then(first).then(second)
"""Broken on purpose: its log says a step whose completion was committed executed again."""
