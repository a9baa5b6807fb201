"""Workflow definitions: the builder, its refusals, the canonical form, the hash and its diffs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from durable import DefinitionError, RetryPolicy, Step, Workflow, step
from durable.definition import ForkBuilder, ForkNode, StepNode, definition_changes, type_text
from durable.retry import parse_duration


def fetch(order_id):  # type: ignore[no-untyped-def]
    return {"id": order_id}


def email_customer(order):  # type: ignore[no-untyped-def]
    return "sent"


def reserve_stock(order):  # type: ignore[no-untyped-def]
    return "reserved"


def notify_warehouse(reservation):  # type: ignore[no-untyped-def]
    return "notified"


def summarize(results):  # type: ignore[no-untyped-def]
    return results


def finish(summary):  # type: ignore[no-untyped-def]
    return "done"


def a(x):  # type: ignore[no-untyped-def]
    return x


def b(x):  # type: ignore[no-untyped-def]
    return x


def c(x):  # type: ignore[no-untyped-def]
    return x


# -- the builder -------------------------------------------------------------------------------


def test_the_docstring_example_builds() -> None:
    doc = Workflow.__doc__ or ""
    code = textwrap.dedent(doc.split("::", 1)[1].split("Every method", 1)[0])
    functions = (fetch, email_customer, reserve_stock, notify_warehouse, summarize, finish)
    namespace: dict[str, Any] = {"Workflow": Workflow, **{f.__name__: f for f in functions}}
    exec(code, namespace)
    checkout: Workflow = namespace["checkout"]
    assert checkout.build() is checkout
    assert (checkout.name, checkout.version) == ("checkout", "1")
    assert list(checkout.node_ids()) == [
        "fetch",
        "fork-1",
        "email_customer",
        "reserve_stock",
        "notify_warehouse",
        "summarize",
        "finish",
    ]
    fork = checkout.nodes[1]
    assert isinstance(fork, ForkNode)
    assert [br.name for br in fork.branches] == ["email_customer", "stock"]
    assert [n.id for n in fork.branches[1].nodes] == ["reserve_stock", "notify_warehouse"]
    assert [n.kind for n in checkout.nodes] == ["step", "fork", "join", "step"]
    assert set(checkout.step_nodes()) == set(checkout.node_ids()) - {"fork-1"}


def test_every_builder_method_returns_a_new_workflow() -> None:
    empty = Workflow("w", version=2)
    one = empty.then(a)
    assert one is not empty
    assert empty.nodes == ()
    fork = one.fork()
    with_branch = fork.branch(b)
    assert isinstance(with_branch, ForkBuilder) and with_branch is not fork
    joined = with_branch.join(c)
    assert joined is not one
    assert [n.id for n in one.nodes] == ["a"]  # untouched by what was built on it
    hash_before = one.definition_hash
    one.then(b)
    assert one.definition_hash == hash_before
    assert [n.id for n in one.nodes] == ["a"]
    # an open fork can be finished two ways without the two workflows sharing anything
    other = with_branch.branch(step(name="d")(a)).join(c)
    assert list(joined.node_ids()) == ["a", "fork-1", "b", "c"]
    assert list(other.node_ids()) == ["a", "fork-1", "b", "d", "c"]
    assert (joined.name, joined.version, other.version) == ("w", "2", "2")


def test_nodes_are_frozen() -> None:
    wf = Workflow("w").then(a)
    node = wf.nodes[0]
    assert isinstance(node, StepNode)
    with pytest.raises(AttributeError):
        node.id = "x"  # type: ignore[misc]
    assert isinstance(wf.nodes, tuple)


def test_then_can_rename_the_node() -> None:
    wf = Workflow("w").then(a).then(a, name="a_again")
    assert list(wf.node_ids()) == ["a", "a_again"]
    assert wf.canonical()["nodes"][1]["step"] == "a"  # the step keeps its name; the node id differs


def test_forks_are_numbered_unless_named() -> None:
    wf = Workflow("w").fork().branch(a).join(b).fork().branch(c).join(step(name="d")(a))
    assert [n.id for n in wf.nodes if isinstance(n, ForkNode)] == ["fork-1", "fork-2"]
    named = Workflow("w").fork(name="fanout").branch(a).join(b)
    assert list(named.node_ids()) == ["fanout", "a", "b"]


def test_build_returns_the_workflow() -> None:
    wf = Workflow("w").then(a)
    assert wf.build() is wf


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: Workflow("w").then(a).then(a), r"'a' already exists.*name='a_2'"),
        (lambda: Workflow("w").then(a).fork().branch(a), r"'a' already exists"),
        (lambda: Workflow("w").fork().branch(a).branch(step(name="x")(b), a), r"'a' already exists"),
        (lambda: Workflow("w").fork().branch(a).join(a), r"'a' already exists"),
        (lambda: Workflow("w").fork().branch(a).join(b).then(b), r"'b' already exists"),
        (lambda: Workflow("w").then(a).fork(name="a"), r"'a' already exists.*fork\(name="),
        (lambda: Workflow("w").fork(name="f").branch(step(name="f")(a)), r"'f' already exists"),
        (lambda: Workflow("w").fork(name="f").branch(a).join(b).fork(name="f"), r"'f' already exists"),
        (lambda: Workflow("w").fork().branch(a).branch(b, name="a"), r"two branches are named 'a'.*name="),
        (lambda: Workflow("w").fork().join(a), r"fork 'fork-1' has no branches.*\.branch\(step\)"),
        (lambda: Workflow("w").fork().branch(), r"\.branch\(\) needs at least one step"),
        (lambda: Workflow("w").then(a).join(b), r"\.join\(\) without a fork.*\.fork\(\)"),
        (lambda: Workflow("w").branch(a), r"\.branch\(\) outside a fork.*\.fork\(\)"),
        (lambda: Workflow("w").fork().branch(a).then(b), r"fork 'fork-1' is still open.*\.join\(step\)"),
        (lambda: Workflow("w").fork().branch(a).fork(), r"fork 'fork-1' is still open"),
        (lambda: Workflow("w").then(a, name="x/y"), r"'x/y' must be non-empty and contain none of '/'"),
        (lambda: Workflow("w").fork(name="x/y"), r"'x/y' must be non-empty and contain none of '/'"),
        (lambda: Workflow("w").fork().branch(Workflow("v").then(a)), r"is not a step.*a workflow only where"),
        (lambda: Workflow("w").then(42), r"42 is not a step"),
        (lambda: Workflow(""), r"non-empty name"),
        (lambda: Workflow("   "), r"non-empty name"),
        (lambda: Workflow(None), r"non-empty name"),
        (lambda: Workflow("w").build(), r"workflow 'w' has no steps.*\.then\(step\)"),
    ],
)
def test_mistakes_are_refused_when_defined(make: Any, pattern: str) -> None:
    with pytest.raises(DefinitionError, match=pattern):
        make()


# -- steps -------------------------------------------------------------------------------------


def test_a_step_stays_callable_as_the_plain_function() -> None:
    def add_one(x: int) -> int:
        """Add one."""
        return x + 1

    s = step(add_one)
    assert isinstance(s, Step)
    assert s(1) == 2
    assert s.fn is add_one
    assert s.__wrapped__ is add_one
    assert s.__doc__ == "Add one."
    assert (s.name, s.version, s.timeout, s.is_async) == ("add_one", "1", None, False)
    assert s.retry == RetryPolicy()
    assert repr(s) == "<step 'add_one' v1>"


def test_an_async_step_stays_awaitable() -> None:
    @step(retries=2, timeout="5s", version=3)
    async def fetch_it(x: int) -> int:
        return x * 2

    assert fetch_it.is_async
    assert asyncio.run(fetch_it(4)) == 8
    assert (fetch_it.retry.max_attempts, fetch_it.timeout, fetch_it.version) == (3, 5.0, "3")


def test_rewrapping_a_step_wraps_its_function() -> None:
    inner = step(a)
    renamed = step(name="renamed")(inner)
    assert renamed.fn is a
    assert renamed.name == "renamed"
    assert renamed(5) == 5


def test_a_lambda_needs_a_name() -> None:
    with pytest.raises(DefinitionError, match=r"no usable name.*name="):
        step(lambda x: x)
    with pytest.raises(DefinitionError, match="no usable name"):
        Workflow("w").then(lambda x: x)
    inc = step(name="inc")(lambda x: x + 1)
    assert inc(1) == 2
    assert list(Workflow("w").then(inc).node_ids()) == ["inc"]


@pytest.mark.parametrize("fn", [42, "a", None])
def test_step_needs_a_function(fn: Any) -> None:
    with pytest.raises(DefinitionError, match="@step needs a function"):
        step(name="x")(fn)


def test_a_step_takes_at_most_one_required_argument() -> None:
    def two(x, y):  # type: ignore[no-untyped-def]
        return x

    def kw_only(*, x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(DefinitionError, match=r"step 'two' takes 2 required arguments.*one argument"):
        step(two)
    with pytest.raises(DefinitionError, match="step 'kw_only'"):
        step(kw_only)
    with pytest.raises(DefinitionError, match="step 'two'"):
        Workflow("w").then(two)

    def fine(x, y=1, *rest, z=2, **more):  # type: ignore[no-untyped-def]
        return x

    def none_at_all():  # type: ignore[no-untyped-def]
        return 1

    assert step(fine)(3) == 3
    assert step(none_at_all)() == 1


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"retries": -1}, r"retries=-1"),
        ({"retries": "3"}, r"retries='3'"),
        ({"timeout": "abc"}, r"step 'f' timeout: 'abc' is not a duration"),
        ({"timeout": -1}, r"step 'f' timeout.*negative"),
        ({"timeout": 0}, r"step 'f': timeout must be longer than 0s"),
        ({"timeout": "0ms"}, r"timeout must be longer than 0s"),
        ({"timeout": True}, r"step 'f' timeout"),
    ],
)
def test_bad_step_options_are_refused_when_defined(options: dict[str, Any], pattern: str) -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(DefinitionError, match=pattern):
        step(**options)(f)
    with pytest.raises(DefinitionError, match=pattern):
        Workflow("w").then(Step(f, **options))


def test_a_bad_retry_policy_fails_before_the_step_exists() -> None:
    with pytest.raises(DefinitionError, match=r"invalid RetryPolicy: max_attempts"):
        step(retries=RetryPolicy(max_attempts=0))(a)


# -- canonical form and hash: generated shapes -------------------------------------------------


@dataclass(frozen=True)
class S:
    """A step as written: its name and its hashed options."""

    name: str
    version: str = "1"
    retries: int | RetryPolicy | None = None
    timeout: Any = None

    def seconds(self) -> float | None:
        return None if self.timeout is None else parse_duration(self.timeout)

    def fields(self, kind: str) -> tuple[Any, ...]:
        return (kind, self.name, self.version, RetryPolicy.of(self.retries).canonical(), self.seconds())


@dataclass(frozen=True)
class F:
    """A fork as written: its name, its branches (name, steps), and its join step."""

    name: str
    branches: tuple[tuple[str, tuple[S, ...]], ...]
    join: S


@dataclass(frozen=True)
class Shape:
    name: str
    version: str
    items: tuple[S | F, ...]


def make_step(spec: S, body: int) -> Step[Any, Any]:
    """A fresh function for every step, with one of two different bodies."""
    if body == 0:

        def fn(x):  # type: ignore[no-untyped-def]
            return x

    else:

        def fn(x):  # type: ignore[no-untyped-def]
            return [x, "a different body"]

    return step(name=spec.name, version=spec.version, retries=spec.retries, timeout=spec.timeout)(fn)


def build(shape: Shape, body: int = 0) -> Workflow:
    wf = Workflow(shape.name, version=shape.version)
    for item in shape.items:
        if isinstance(item, S):
            wf = wf.then(make_step(item, body))
        else:
            fb = wf.fork(name=item.name)
            for branch_name, steps in item.branches:
                fb = fb.branch(*(make_step(s, body) for s in steps), name=branch_name)
            wf = fb.join(make_step(item.join, body))
    return wf.build()


POOL = [f"{ch}{i}" if i else ch for i in range(3) for ch in "abcdefghijklmnopqrst"]  # 60 node names
versions = st.sampled_from(["1", "2", "10"])
retry_options = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=3),
    st.builds(
        RetryPolicy,
        max_attempts=st.integers(min_value=1, max_value=5),
        initial=st.sampled_from([0.5, 1, "2s"]),
        jitter=st.sampled_from([0.0, 0.1, 0.5]),
    ),
)
timeouts = st.one_of(st.none(), st.sampled_from([1, 2.5, "30s", "1m", timedelta(hours=1)]))


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    # layout: None for a step, or the sizes of a fork's branches
    layout = draw(
        st.lists(
            st.none() | st.lists(st.integers(min_value=1, max_value=2), min_size=1, max_size=3),
            min_size=1,
            max_size=4,
        )
    )
    names = iter(draw(st.permutations(POOL)))

    def spec() -> S:
        return S(next(names), draw(versions), draw(retry_options), draw(timeouts))

    items: list[S | F] = []
    for entry in layout:
        if entry is None:
            items.append(spec())
        else:
            fork_name = next(names)
            branch_names = draw(st.permutations("xyzw"))[: len(entry)]
            branches = tuple(
                (bn, tuple(spec() for _ in range(size))) for bn, size in zip(branch_names, entry, strict=True)
            )
            items.append(F(fork_name, branches, spec()))
    return Shape(draw(st.sampled_from(["checkout", "refund"])), draw(versions), tuple(items))


def all_steps(shape: Shape) -> list[S]:
    out: list[S] = []
    for item in shape.items:
        if isinstance(item, S):
            out.append(item)
        else:
            out.extend(s for _, steps in item.branches for s in steps)
            out.append(item.join)
    return out


def replace_step(shape: Shape, old: S, new: S) -> Shape:
    def swap(s: S) -> S:
        return new if s == old else s

    items = tuple(
        swap(i)
        if isinstance(i, S)
        else F(i.name, tuple((bn, tuple(swap(s) for s in ss)) for bn, ss in i.branches), swap(i.join))
        for i in shape.items
    )
    return replace(shape, items=items)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Shape, Shape, str]:
    """A shape, a copy with exactly one hashed field changed, and what changed."""
    shape = draw(shapes())
    steps = all_steps(shape)
    forks = [(i, item) for i, item in enumerate(shape.items) if isinstance(item, F)]
    kinds = ["name", "version", "step_version", "retry", "timeout", "rename_node"]
    if len(shape.items) >= 2:
        kinds.append("order")
    if forks:
        kinds += ["rename_branch", "unfork", "branch_structure"]
    kind = draw(st.sampled_from(kinds))
    s = draw(st.sampled_from(steps))
    if kind == "name":
        return shape, replace(shape, name=shape.name + "-2"), kind
    if kind == "version":
        return shape, replace(shape, version=shape.version + "1"), kind
    if kind == "step_version":
        return shape, replace_step(shape, s, replace(s, version=s.version + "1")), kind
    if kind == "retry":
        attempts = RetryPolicy.of(s.retries).max_attempts
        return shape, replace_step(shape, s, replace(s, retries=attempts)), kind  # one more attempt
    if kind == "timeout":
        new_timeout = 7 if s.timeout is None else (s.seconds() or 0) + 1
        return shape, replace_step(shape, s, replace(s, timeout=new_timeout)), kind
    if kind == "rename_node":
        unused = next(n for n in POOL if n not in {x.name for x in steps} | {f.name for _, f in forks})
        return shape, replace_step(shape, s, replace(s, name=unused)), kind
    if kind == "order":
        i = draw(st.integers(min_value=0, max_value=len(shape.items) - 2))
        items = list(shape.items)
        items[i], items[i + 1] = items[i + 1], items[i]
        return shape, replace(shape, items=tuple(items)), kind
    i, fork = draw(st.sampled_from(forks))
    items = list(shape.items)
    if kind == "rename_branch":
        (bn, ss), *rest = fork.branches
        items[i] = replace(fork, branches=((bn + "_renamed", ss), *rest))
    elif kind == "unfork":  # the fork's steps become a plain chain: kinds and structure change
        items[i : i + 1] = [*(s for _, ss in fork.branches for s in ss), fork.join]
    else:  # branch structure: merge the first two branches, or split the first one
        if len(fork.branches) >= 2:
            (bn1, ss1), (_, ss2), *rest = fork.branches
            items[i] = replace(fork, branches=((bn1, ss1 + ss2), *rest))
        else:
            ((bn, ss),) = fork.branches
            split = (bn, ss[:1]), ("other", ss[1:] or (replace(ss[0], name="extra"),))
            items[i] = replace(fork, branches=split)
    return shape, replace(shape, items=tuple(items)), kind


def canonical_json(wf: Workflow) -> str:
    return json.dumps(wf.canonical(), sort_keys=True, separators=(",", ":"))


@settings(max_examples=60, deadline=None)
@given(shapes())
def test_hash_is_stable_and_independent_of_function_bodies(shape: Shape) -> None:
    first, again, other_bodies = build(shape), build(shape), build(shape, body=1)
    assert first.definition_hash == again.definition_hash == other_bodies.definition_hash
    assert first.canonical() == other_bodies.canonical()
    assert re.fullmatch(r"[0-9a-f]{64}", first.definition_hash)
    assert first.definition_hash == hashlib.sha256(canonical_json(first).encode()).hexdigest()
    # the canonical form is what RunStarted records: it must survive JSON unchanged
    assert json.loads(json.dumps(first.canonical(), allow_nan=False)) == first.canonical()
    assert definition_changes(first.canonical(), other_bodies.canonical()) == []


@settings(max_examples=60, deadline=None)
@given(shapes())
def test_node_ids_follow_the_shape(shape: Shape) -> None:
    wf = build(shape)
    expected: list[str] = []
    for item in shape.items:
        if isinstance(item, S):
            expected.append(item.name)
        else:
            expected += [item.name, *(s.name for _, ss in item.branches for s in ss), item.join.name]
    assert list(wf.node_ids()) == expected
    assert list(wf.step_nodes()) == [s.name for s in all_steps(shape)]
    for s in all_steps(shape):
        node = wf.step_nodes()[s.name]
        assert (node.step.version, node.step.retry, node.step.timeout) == (
            s.version,
            RetryPolicy.of(s.retries),
            s.seconds(),
        )


@settings(max_examples=100, deadline=None)
@given(mutated())
def test_hash_changes_when_any_hashed_field_changes(case: tuple[Shape, Shape, str]) -> None:
    old_shape, new_shape, kind = case
    old, new = build(old_shape), build(new_shape)
    assert old.canonical() != new.canonical(), kind
    assert old.definition_hash != new.definition_hash, kind
    changes = definition_changes(old.canonical(), new.canonical())
    assert changes, kind
    if kind in ("name", "version"):
        assert len(changes) == 1
        assert changes[0].startswith(f"workflow {kind} changed")


def expected_layout(shape: Shape) -> dict[str, tuple[Any, Any]]:
    """Node id -> (where it stands, what it is), straight from the shape."""
    out: dict[str, tuple[Any, Any]] = {}
    for i, item in enumerate(shape.items):
        if isinstance(item, S):
            out[item.name] = (("top", i), item.fields("join" if i and isinstance(shape.items[i - 1], F) else "step"))
        else:
            out[item.name] = (("top", i), ("fork", tuple(bn for bn, _ in item.branches)))
            for bn, ss in item.branches:
                for j, s in enumerate(ss):
                    out[s.name] = (("branch", item.name, bn, j), s.fields("step"))
    return out


def flat_items(shape: Shape) -> Shape:
    """The shape with each fork's join step listed as a top-level item after it (as the builder stores it)."""
    items: list[S | F] = []
    for item in shape.items:
        items.append(item)
        if isinstance(item, F):
            items.append(item.join)
    return replace(shape, items=tuple(items))


LINE = re.compile(r"^node '([^']+)' (was added|was removed|changed)\b")


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        shapes().map(lambda s: (s, s)),
        mutated().map(lambda m: (m[0], m[1])),
        st.tuples(shapes(), shapes()),
    )
)
def test_definition_changes_name_exactly_what_differs(pair: tuple[Shape, Shape]) -> None:
    old_shape, new_shape = pair
    old, new = build(old_shape).canonical(), build(new_shape).canonical()
    changes = definition_changes(old, new)
    assert (changes == []) == (old == new)

    a, b = expected_layout(flat_items(old_shape)), expected_layout(flat_items(new_shape))
    found: dict[str, set[str]] = {"was added": set(), "was removed": set(), "changed": set()}
    workflow_lines = []
    for line in changes:
        match = LINE.match(line)
        if match:
            assert match.group(1) not in set().union(*found.values()), f"{match.group(1)} reported twice"
            found[match.group(2)].add(match.group(1))
        else:
            workflow_lines.append(line)
    assert found["was added"] == b.keys() - a.keys()
    assert found["was removed"] == a.keys() - b.keys()
    assert found["changed"] == {n for n in a.keys() & b.keys() if a[n] != b[n]}
    assert len(workflow_lines) == (old["name"] != new["name"]) + (old["version"] != new["version"])
    assert all(line.startswith("workflow ") for line in workflow_lines)


# -- canonical form and hash: examples ---------------------------------------------------------


def test_equivalent_spellings_hash_the_same() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x

    spellings = [
        {"timeout": "1m", "retries": 3, "version": 2},
        {"timeout": 60, "retries": RetryPolicy(max_attempts=4), "version": "2"},
        {"timeout": timedelta(minutes=1), "retries": RetryPolicy(max_attempts=4, initial="1s"), "version": "2"},
    ]
    hashes = {Workflow("w", version=1).then(step(**opts)(f)).definition_hash for opts in spellings}
    assert len(hashes) == 1
    assert Workflow("w", version=1).then(a).definition_hash == Workflow("w", version="1").then(a).definition_hash
    assert Workflow("w").then(a).definition_hash == Workflow("w").then(step(retries=0)(a)).definition_hash


def test_canonical_form_of_a_small_workflow() -> None:
    wf = Workflow("w", version=3).then(step(version=2, timeout="30s")(a)).fork(name="f").branch(b).join(c)
    default_retry = {"max_attempts": 1, "initial": 1.0, "backoff": 2.0, "max_delay": 60.0, "jitter": 0.1}

    def node(id_: str, kind: str, version: str = "1", timeout: float | None = None) -> dict[str, Any]:
        return {
            "id": id_,
            "kind": kind,
            "step": id_,
            "step_version": version,
            "retry": default_retry,
            "timeout": timeout,
        }

    assert wf.canonical() == {
        "name": "w",
        "version": "3",
        "nodes": [
            node("a", "step", "2", 30.0),
            {"id": "f", "kind": "fork", "branches": [{"name": "b", "nodes": [node("b", "step")]}]},
            node("c", "join"),
        ],
    }


def test_definition_hash_is_pinned() -> None:
    # Every run records the hash of its definition and is only resumed under the same hash: if
    # this value changes, every run already in a journal stops being resumable. Change it only
    # on purpose, with a note in the CHANGELOG.
    wf = Workflow("checkout", version=1).then(a).fork().branch(b).join(c)
    assert wf.definition_hash == hashlib.sha256(canonical_json(wf).encode()).hexdigest()
    assert wf.definition_hash == "e8c47d99f40ddcebf032e23eeb3d84bff23e9e6d54e837c069c048444f3c350f"


def test_definition_changes_reads_well() -> None:
    old = Workflow("checkout", version=1).then(a).then(b).canonical()
    new = Workflow("checkout", version=2).then(a).then(step(retries=3)(b)).then(c).canonical()
    changes = definition_changes(old, new)
    assert changes[0] == "workflow version changed: 1 -> 2"
    assert "node 'c' was added at position 3" in changes
    assert any(line.startswith("node 'b' changed:") and "max_attempts" in line and "1 -> 4" in line for line in changes)
    assert definition_changes(new, old)[1:] == sorted(definition_changes(new, old)[1:])
    assert "node 'c' was removed (it stood at position 3)" in definition_changes(new, old)


def _same(x: Any) -> Any:
    return x


def test_branch_step_names_cannot_contain_a_slash() -> None:
    with pytest.raises(DefinitionError, match="no '/'"):
        Workflow("w").fork().branch(step(name="a/b")(_same))


def test_join_name_clash_suggests_join_with_a_name() -> None:
    with pytest.raises(DefinitionError, match=r"\.join\(_same, name="):
        Workflow("w").then(_same).fork().branch(step(name="b")(_same)).join(_same)


def test_step_called_on_a_function_honours_every_option() -> None:
    from durable import RetryPolicy

    def work(x: int) -> int:
        return x

    s = step(work, name="renamed", retries=RetryPolicy(max_attempts=4), timeout="30s", version=3)
    assert (s.name, s.retry.max_attempts, s.timeout, s.version) == ("renamed", 4, 30.0, "3")
    named = step(lambda x: x, name="from_a_lambda")  # what the lambda error message recommends
    assert named.name == "from_a_lambda"
    plain = step(work)
    assert (plain.name, plain.retry.max_attempts, plain.timeout, plain.version) == ("work", 1, None, "1")


# -- a definition hash that does not depend on how the file was run ---------------------------

FLOW_FILE = """
from pydantic import BaseModel
from durable import Workflow, step

class Order(BaseModel):
    id: str
    lines: list["Line"] = []
    note: "str | None" = None

class Line(BaseModel):
    sku: str

class Shared(BaseModel):
    order: Order | None = None
    seen: dict[str, list[Order]] = {}

@step
def first(x: int) -> int:
    return x

wf = Workflow("flow", state=Shared).then(first)

if __name__ == "__main__":
    print(wf.definition_hash)
"""


def test_the_hash_is_the_same_whether_the_file_runs_as_a_script_or_is_imported(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(FLOW_FILE)
    as_script = subprocess.run([sys.executable, "flow.py"], cwd=tmp_path, capture_output=True, text=True, check=True)
    imported = subprocess.run(
        [sys.executable, "-c", "import flow; print(flow.wf.definition_hash)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert as_script.stdout == imported.stdout and len(as_script.stdout.strip()) == 64


def _build(shape: list[int], cls: type) -> Any:
    """An annotation tree drawn from ``shape`` (the same shape gives the same tree for any ``cls``)."""
    picks = iter(shape)

    def pick(depth: int) -> Any:
        k = next(picks, 0) if depth else next(picks, 0) % 2
        if k == 0:
            return int
        if k == 1:
            return cls
        if k == 2:
            return list[pick(depth - 1)]  # type: ignore[misc]
        if k == 3:
            return dict[str, pick(depth - 1)]  # type: ignore[misc]
        if k == 4:
            return pick(depth - 1) | None
        return Literal["a", 1]

    return pick(3)


@given(shape=st.lists(st.integers(0, 5), min_size=12, max_size=12))
def test_type_text_ignores_the_module_and_keeps_the_structure(shape: list[int]) -> None:
    here = type("Order", (), {"__module__": "__main__"})
    there = type("Order", (), {"__module__": "shop.flow"})
    a, b = _build(shape, here), _build(shape, there)
    assert type_text(a) == type_text(b)  # the module does not count
    assert "__main__" not in type_text(a) and "shop" not in type_text(b)
    if "Order" in type_text(a):  # but the type's name does
        assert type_text(_build(shape, type("Invoice", (), {"__module__": "__main__"}))) != type_text(a)


def test_a_state_field_that_changed_type_is_listed_as_such() -> None:
    class V1(BaseModel):
        total: int = 0
        note: str = ""

    class V2(BaseModel):
        total: float = 0
        tags: list[str] = []

    @step
    def s(x: int) -> int:
        return x

    old = Workflow("w", state=V1).then(s)
    new = Workflow("w", state=V2).then(s)
    changes = definition_changes(old.canonical(), new.canonical())
    assert "state field 'total' changed type: int -> float" in changes
    assert "state field 'note' was removed (it was str)" in changes
    assert "state field 'tags' was added (list[str])" in changes
    assert "the shared state model changed: V1 -> V2" in changes


def test_generators_and_iterators_are_refused_as_step_outputs() -> None:
    def gen(x: int):  # type: ignore[no-untyped-def]
        yield x

    async def agen(x: int):  # type: ignore[no-untyped-def]
        yield x

    def annotated(x: int) -> Generator[int, None, None]:
        return (i for i in range(x))

    def iterator(x: int) -> Iterator[int]:
        return iter([x])

    def async_iterator(x: int) -> AsyncIterator[int]:
        raise NotImplementedError

    for fn, needle in [(gen, "generator function"), (agen, "generator function"), (annotated, "Generator"),
                       (iterator, "Iterator"), (async_iterator, "AsyncIterator")]:  # fmt: skip
        with pytest.raises(DefinitionError, match=needle):
            step(fn)

    def fine(x: int) -> list[int]:
        return [x]

    assert step(fine).name == "fine"


def test_type_text_names_types_the_same_way_on_every_python() -> None:
    from typing import Optional, Union

    class Line(BaseModel):
        sku: str

    assert type_text(Optional[str]) == type_text(str | None) == "str | None"  # noqa: UP045
    assert type_text(Union[int, str]) == "int | str"  # noqa: UP007
    assert type_text(Literal["a", "b"]) == "Literal['a', 'b']"
    assert type_text(list[Line]) == "list[Line]"
    assert type_text(dict[str, int | None]) == "dict[str, int | None]"
    assert type_text(Any) == "Any" and type_text(None) == "None"
