"""Hypothesis strategies for random workflow shapes, built from counting steps.

``workflows()`` draws chains, forks of 2 to 8 branches, branches of several steps, routes,
loops, maps, durable sleeps, signal waits that time out to their default, child workflows,
steps that fail a given number of times before they succeed under a retry
policy, and steps that fail for good. Every step is deterministic (integer arithmetic on its
input), so a run's result depends only on the shape and the input: exactly what
:func:`check_crash_safety` needs. Each drawn step counts its calls in :data:`CALLS`, keyed
by ``(workflow, node)`` (a loop's steps as ``"<step>#<iteration>"``, a map's items as
``"<map>[<i>]"``, as the journal names them).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from hypothesis import strategies as st

from ..context import context
from ..definition import ForkBuilder, RouteBuilder, Step, Workflow
from ..nodes import LoopResult, again, done
from ..retry import RetryPolicy

__all__ = ["CALLS", "KINDS", "counting_step", "loop_control", "spread_step", "workflows"]

CALLS: Counter[tuple[str, str]] = Counter()
"""Calls of every step built here, by (workflow name, node id)."""

KINDS: tuple[str, ...] = ("step", "fork", "route", "loop", "map", "sleep", "wait", "child")
"""The node kinds :func:`workflows` can draw."""

_names = itertools.count(1)


class StepFailure(Exception):
    """Raised by a drawn step that is set to fail."""


def _total(x: Any) -> int:
    """A counting step's view of its input: a join's dict and a map's list are summed."""
    if isinstance(x, dict):
        return sum(_total(v) for v in x.values())
    if isinstance(x, list):
        return sum(_total(v) for v in x)
    return int(x or 0)


def _counted(fail_times: int, name: str) -> int:
    """Count the call; fail while the attempt number is at most ``fail_times``; return the attempt."""
    ctx = context()
    CALLS[(ctx.workflow, ctx.node)] += 1
    if ctx.attempt <= fail_times:
        raise StepFailure(f"{name} fails on attempt {ctx.attempt}")
    return ctx.attempt


def _policy(retries: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=retries + 1, initial=0.001, max_delay=0.005, jitter=0.0)


def _as_step(name: str, body: Any, retries: int, asynchronous: bool) -> Step[Any, Any]:
    if asynchronous:

        async def run_async(x: Any) -> Any:
            return body(x)

        run_async.__name__ = name
        return Step(run_async, name=name, retries=_policy(retries))

    def run_sync(x: Any) -> Any:
        return body(x)

    run_sync.__name__ = name
    return Step(run_sync, name=name, retries=_policy(retries))


def counting_step(
    name: str, *, add: int = 1, fail_times: int = 0, retries: int = 0, asynchronous: bool = False
) -> Step[Any, Any]:
    """A step that adds ``add`` to its input (a dict or list is summed), after failing ``fail_times`` times.

    A step fails while its attempt number is at most ``fail_times``; with ``retries`` at least
    ``fail_times`` it eventually succeeds, otherwise it fails for good. (Attempts cut short by a
    crash use up attempt numbers too, so a crash can only make it succeed sooner, never change
    whether it succeeds.)
    """

    def body(x: Any) -> int:
        _counted(fail_times, name)
        return _total(x) + add

    return _as_step(name, body, retries, asynchronous)


def spread_step(name: str, *, items: int, asynchronous: bool = False) -> Step[Any, Any]:
    """A step that turns its input ``v`` into the list ``[v, v + 1, ..., v + items - 1]`` (for a map)."""

    def body(x: Any) -> list[int]:
        _counted(0, name)
        v = _total(x)
        return [v + i for i in range(items)]

    return _as_step(name, body, 0, asynchronous)


def loop_control(name: str, *, add: int = 1, times: int, asynchronous: bool = False) -> Step[Any, Any]:
    """A loop body's last step: adds ``add``, and asks for another iteration until iteration ``times``.

    It reads its iteration from its journal name (``"<name>#<i>"``), so it is deterministic.
    """

    def body(x: Any) -> LoopResult:
        _counted(0, name)
        iteration = int(context().node.rpartition("#")[2] or 0)
        value = _total(x) + add
        return again(value) if iteration < times else done(value)

    return _as_step(name, body, 0, asynchronous)


def _route_key(modulus: int) -> Any:
    def route_key(x: Any) -> str:
        return f"k{_total(x) % modulus}"

    return route_key


@st.composite
def _step(draw: st.DrawFn, prefix: str, broken_left: list[int], *, flaky: bool = True) -> Step[Any, Any]:
    """A drawn counting step. Without ``flaky``, it is ``ok``, or broken with no retry.

    Loop and map steps are journaled under names of their own (``step#3``, ``map[2]``), which
    the retry budget of :func:`~durable.testing.check.violations` does not look up; so they
    are drawn without retries.
    """
    name = f"{prefix}{next(_names)}"
    kind = draw(st.sampled_from(["ok", "ok", "ok", "flaky", "broken"]))
    if kind == "broken" and not broken_left[0]:
        kind = "ok"
    if kind == "flaky" and not flaky:
        kind = "ok"
    add = draw(st.integers(-5, 5))
    asynchronous = draw(st.booleans())
    if kind == "ok":
        return counting_step(name, add=add, asynchronous=asynchronous)
    fail_times = draw(st.integers(1, 2))
    if kind == "flaky":
        return counting_step(name, add=add, fail_times=fail_times, retries=fail_times, asynchronous=asynchronous)
    broken_left[0] -= 1
    retries = draw(st.integers(0, 1)) if flaky else 0
    return counting_step(name, add=add, fail_times=99, retries=retries, asynchronous=asynchronous)


def _lane(draw: st.DrawFn, prefix: str, broken_left: list[int], max_steps: int) -> list[Step[Any, Any]]:
    return [draw(_step(prefix, broken_left)) for _ in range(draw(st.integers(1, max(1, max_steps))))]


def _add_fork(draw: st.DrawFn, wf: Workflow, broken_left: list[int], max_branches: int, max_steps: int) -> Workflow:
    fork: ForkBuilder = wf.fork()
    for b in range(draw(st.integers(2, max(2, max_branches)))):
        fork = fork.branch(*_lane(draw, "b", broken_left, max_steps), name=f"lane{b}")
    return fork.join(draw(_step("j", broken_left)))


def _add_route(draw: st.DrawFn, wf: Workflow, broken_left: list[int], max_branches: int, max_steps: int) -> Workflow:
    """A route on ``total % m`` over branches ``k0..k<n-1>``; keys without a branch take the default, if any."""
    n = draw(st.integers(1, max(1, min(3, max_branches))))
    modulus = draw(st.integers(n, n + 1))
    route: RouteBuilder = wf.route(_route_key(modulus))
    for k in range(n):
        route = route.branch(f"k{k}", *_lane(draw, "r", broken_left, max_steps))
    # Without a default, a key beyond the branches fails the run (NoRouteBranch): one failure for good.
    if modulus > n and broken_left[0] and draw(st.booleans()):
        broken_left[0] -= 1
        return route.end()
    if modulus == n and draw(st.booleans()):
        return route.end()
    return route.default(*_lane(draw, "r", broken_left, max_steps))


def _add_loop(draw: st.DrawFn, wf: Workflow, broken_left: list[int], max_steps: int) -> Workflow:
    """A loop whose body runs ``times`` iterations; with ``times`` over the bound, it exits or fails (LoopExhausted)."""
    body = [draw(_step("l", broken_left, flaky=False)) for _ in range(draw(st.integers(0, max(0, max_steps - 1))))]
    times = draw(st.integers(1, 4))
    max_iterations = draw(st.integers(1, 4))
    on_max: Literal["fail", "exit"] = "exit"
    if times > max_iterations and broken_left[0] and draw(st.booleans()):
        broken_left[0] -= 1
        on_max = "fail"
    add, asynchronous = draw(st.integers(-5, 5)), draw(st.booleans())
    control = loop_control(f"c{next(_names)}", add=add, times=times, asynchronous=asynchronous)
    return wf.loop(*body, control, max_iterations=max_iterations, on_max=on_max)


def _add_map(draw: st.DrawFn, wf: Workflow) -> Workflow:
    """A step that makes a list of 0 to 5 items, then a map over it (limited or not)."""
    spread = spread_step(f"m{next(_names)}", items=draw(st.integers(0, 5)), asynchronous=draw(st.booleans()))
    concurrency = draw(st.sampled_from([None, 1, 2, 3]))
    # A map item that failed for good would race its siblings: which item ends the run would
    # depend on timing. So map steps never fail for good.
    item = draw(_step("i", [0], flaky=False))
    return wf.then(spread).map(item, concurrency=concurrency)


@st.composite
def workflows(
    draw: st.DrawFn,
    *,
    max_nodes: int = 4,
    max_branches: int = 8,
    max_branch_steps: int = 3,
    failures: bool = True,
    kinds: Sequence[str] = KINDS,
) -> Workflow:
    """Draw a workflow: a chain of top-level nodes of the given ``kinds``.

    ``"step"``: a counting step. ``"fork"``: 2 to ``max_branches`` branches, each joined.
    ``"route"``: 1 to 3 branches chosen by the input modulo a number, with or without a
    default. ``"loop"``: a body of up to ``max_branch_steps`` steps (its last one says when to
    stop), bounded by ``max_iterations``, exiting or failing at the bound. ``"map"``: a step
    that makes a list of up to 5 items, then a map over it, limited to 1 to 3 at a time or
    not. ``"sleep"``: a durable sleep of 0 to 10 ms. ``"wait"``: a ``wait_for`` that no signal
    reaches, so it times out (0 or 5 ms) and goes on with its drawn default. ``"child"``: a
    child workflow of one step. Every lane runs at least one step. With ``kinds=("step", "fork")`` the draws are
    exactly those of the first version (chains and forks only).

    Args:
        draw: supplied by Hypothesis.
        max_nodes: the most top-level nodes (a fork and its join count as one, a map and the
            step that makes its list too).
        max_branches: the most branches in one fork (at least 2), or in one route (up to 3).
        max_branch_steps: the most steps in one branch or loop body.
        failures: whether something that fails for good may be drawn: a step, a route key
            without a branch, a loop that reaches its bound with ``on_max="fail"``. At most one
            per workflow, so that which failure ends the run does not depend on timing; flaky
            steps always may.
        kinds: the node kinds to draw from (see :data:`KINDS`).
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds={list(kinds)!r}: pick some of {list(KINDS)}")
    name = f"wf{next(_names)}"
    broken_left = [1 if failures else 0]
    wf = Workflow(name)
    old_shapes = set(kinds) <= {"step", "fork"}
    for _ in range(draw(st.integers(1, max_nodes))):
        if old_shapes:  # the draws of the first version, so that its examples replay the same
            kind = ("step" if draw(st.booleans()) else "fork") if len(kinds) == 2 else kinds[0]
        else:
            kind = draw(st.sampled_from(list(kinds)))
            if kind in ("sleep", "wait") and not wf.nodes and "step" in kinds:
                kind = "step"  # every drawn workflow runs a step, so every crash point is reached
        if kind == "step":
            wf = wf.then(draw(_step("s", broken_left)))
        elif kind == "fork":
            wf = _add_fork(draw, wf, broken_left, max_branches, max_branch_steps)
        elif kind == "route":
            wf = _add_route(draw, wf, broken_left, max_branches, max_branch_steps)
        elif kind == "loop":
            wf = _add_loop(draw, wf, broken_left, max_branch_steps)
        elif kind == "map":
            wf = _add_map(draw, wf)
        elif kind == "sleep":
            wf = wf.sleep(draw(st.sampled_from([0.0, 0.002, 0.01])))
        elif kind == "wait":
            # No signal is ever sent: the wait times out and goes on with its default, the
            # same in every run, crashed or not (a crash keeps the journaled deadline).
            wf = wf.wait_for(
                f"sig{next(_names)}", timeout=draw(st.sampled_from([0.0, 0.005])), default=draw(st.integers(-5, 5))
            )
        else:
            child = Workflow(f"child{next(_names)}").then(draw(_step("c", [0])))
            wf = wf.then(child)
    return wf
