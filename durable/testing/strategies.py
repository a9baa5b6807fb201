"""Hypothesis strategies for random workflow shapes, built from counting steps.

``workflows()`` draws chains, forks of 2 to 8 branches, branches of several steps, steps
that fail a given number of times before they succeed under a retry policy, and steps that
fail for good. Every step is deterministic (integer arithmetic on its input), so a run's
result depends only on the shape and the input: exactly what :func:`check_crash_safety`
needs. Each drawn step counts its calls in :data:`CALLS`, keyed by ``(workflow, node)``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from hypothesis import strategies as st

from ..context import context
from ..definition import ForkBuilder, Step, Workflow
from ..retry import RetryPolicy

__all__ = ["CALLS", "counting_step", "workflows"]

CALLS: Counter[tuple[str, str]] = Counter()
"""Calls of every step built here, by (workflow name, node id)."""

_names = itertools.count(1)


class StepFailure(Exception):
    """Raised by a drawn step that is set to fail."""


def counting_step(
    name: str, *, add: int = 1, fail_times: int = 0, retries: int = 0, asynchronous: bool = False
) -> Step[Any, Any]:
    """A step that adds ``add`` to its input (summing a join's dict), after failing ``fail_times`` times.

    A step fails while its attempt number is at most ``fail_times``; with ``retries`` at least
    ``fail_times`` it eventually succeeds, otherwise it fails for good. (Attempts cut short by a
    crash use up attempt numbers too, so a crash can only make it succeed sooner, never change
    whether it succeeds.)
    """

    def value(x: Any) -> int:
        total = sum(x.values()) if isinstance(x, dict) else int(x or 0)
        return total + add

    def body(x: Any) -> int:
        ctx = context()
        CALLS[(ctx.workflow, ctx.node)] += 1
        if ctx.attempt <= fail_times:
            raise StepFailure(f"{name} fails on attempt {ctx.attempt}")
        return value(x)

    policy = RetryPolicy(max_attempts=retries + 1, initial=0.001, max_delay=0.005, jitter=0.0)
    if asynchronous:

        async def run_async(x: Any) -> int:
            return body(x)

        run_async.__name__ = name
        return Step(run_async, name=name, retries=policy)

    def run_sync(x: Any) -> int:
        return body(x)

    run_sync.__name__ = name
    return Step(run_sync, name=name, retries=policy)


@st.composite
def _step(draw: st.DrawFn, prefix: str, broken_left: list[int]) -> Step[Any, Any]:
    name = f"{prefix}{next(_names)}"
    kind = draw(st.sampled_from(["ok", "ok", "ok", "flaky", "broken"]))
    if kind == "broken" and not broken_left[0]:
        kind = "ok"
    add = draw(st.integers(-5, 5))
    asynchronous = draw(st.booleans())
    if kind == "ok":
        return counting_step(name, add=add, asynchronous=asynchronous)
    fail_times = draw(st.integers(1, 2))
    if kind == "flaky":
        return counting_step(name, add=add, fail_times=fail_times, retries=fail_times, asynchronous=asynchronous)
    broken_left[0] -= 1
    return counting_step(name, add=add, fail_times=99, retries=draw(st.integers(0, 1)), asynchronous=asynchronous)


@st.composite
def workflows(
    draw: st.DrawFn,
    *,
    max_nodes: int = 4,
    max_branches: int = 8,
    max_branch_steps: int = 3,
    failures: bool = True,
) -> Workflow:
    """Draw a workflow: a chain of steps and forks (2 to ``max_branches`` branches, each joined).

    Args:
        draw: supplied by Hypothesis.
        max_nodes: the most top-level nodes (a fork and its join count as one).
        max_branches: the most branches in one fork (at least 2).
        max_branch_steps: the most steps in one branch.
        failures: whether a step that fails for good may be drawn (at most one per workflow, so
            that which failure ends the run does not depend on timing; flaky steps always may).
    """
    name = f"wf{next(_names)}"
    broken_left = [1 if failures else 0]
    wf = Workflow(name)
    for _ in range(draw(st.integers(1, max_nodes))):
        if draw(st.booleans()):
            wf = wf.then(draw(_step("s", broken_left)))
            continue
        fork: ForkBuilder = wf.fork()
        for b in range(draw(st.integers(2, max(2, max_branches)))):
            steps = [draw(_step("b", broken_left)) for _ in range(draw(st.integers(1, max_branch_steps)))]
            fork = fork.branch(*steps, name=f"lane{b}")
        wf = fork.join(draw(_step("j", broken_left)))
    return wf
