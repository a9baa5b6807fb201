"""Workflow definitions: the ``Workflow`` builder, its canonical form, hash and diff.

A definition is built once, validated as it is built, and never changes afterwards: every
builder method returns a new ``Workflow``. Its canonical form is plain data (no function
bodies) and its SHA-256 is the *definition hash* recorded in every run it starts. The node
kinds live in :mod:`durable.nodes`, steps in :mod:`durable.steps`.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel

from .errors import DefinitionError
from .nodes import (
    _NO_DEFAULT,
    Branch,
    ChildNode,
    ForkNode,
    LoopNode,
    MapNode,
    Node,
    RouteNode,
    SleepNode,
    StepNode,
    WaitNode,
    inner_ids,
    lanes,
    map_steps,
)
from .retry import Duration, parse_duration
from .steps import Step, as_step, step

__all__ = [
    "Branch",
    "ForkBuilder",
    "ForkNode",
    "RouteBuilder",
    "Step",
    "StepNode",
    "Workflow",
    "definition_changes",
    "step",
]


class Workflow:
    """An immutable workflow definition, built step by step.

    ::

        checkout = (
            Workflow("checkout", version=1)
            .then(fetch)
            .fork()
                .branch(email_customer)
                .branch(reserve_stock, notify_warehouse, name="stock")
            .join(summarize)
            .then(finish)
        )

    Every method returns a new ``Workflow``; mistakes raise ``DefinitionError`` at once.
    """

    def __init__(
        self,
        name: str,
        version: str | int = 1,
        *,
        state: type[BaseModel] | None = None,
        _nodes: tuple[Node, ...] = (),
    ) -> None:
        """Start a definition.

        Args:
            name: the workflow's name, recorded in every run.
            version: bump it when you restructure the workflow (part of the definition hash).
            state: a pydantic model for the run's shared context: steps read and update it
                through ``durable.context().state`` (see ``docs/language.md``).
            _nodes: internal.
        """
        if state is not None and not (isinstance(state, type) and issubclass(state, BaseModel)):
            raise DefinitionError(f"workflow {name!r}: state= must be a pydantic model class, got {state!r}")
        self.state_model = state
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError("a workflow needs a non-empty name: Workflow('checkout')")
        if "/" in name:
            raise DefinitionError(f"workflow name {name!r} must contain no '/'")
        self.name = name
        self.version = str(version)
        self.nodes = _nodes
        self._hash: str | None = None
        self._canonical: str | None = None

    # -- building ---------------------------------------------------------------------------

    def then(self, fn: Callable[..., Any] | Step[Any, Any] | Workflow, *, name: str | None = None) -> Workflow:
        """Append a step, or a workflow to run as a child; it receives the previous node's output.

        The first node receives the run's input. A child workflow runs as a run of its own,
        ``"<parent run id>/<node>"``, linked to this one in the journal; its result is the output.
        """
        if isinstance(fn, Workflow):
            return self._with(ChildNode(name or fn.name, fn.build()))
        s = as_step(fn)
        return self._with(StepNode(name or s.name, s))

    def fork(self, *, name: str | None = None) -> ForkBuilder:
        """Open a fork; add lanes with ``.branch(...)`` and close it with ``.join(step)``."""
        fork_id = name or self._next_id("fork")
        self._check_new_id(fork_id, "fork")
        return ForkBuilder(self, fork_id, ())

    def route(
        self, key: Callable[[Any], Any], *, keys: typing.Iterable[str] | None = None, name: str | None = None
    ) -> RouteBuilder:
        """Open a route: ``key(input)`` names the branch to run. Close it with ``.default(...)`` or ``.end()``.

        The declared keys come from ``keys=`` or from ``key``'s return annotation (a ``Literal``
        or an ``Enum``); each must have a branch unless there is a default, and no branch may be
        named for a key that is not declared.
        """
        route_id = name or self._next_id("route")
        self._check_new_id(route_id, "route")
        if not callable(key):
            raise DefinitionError(f"workflow {self.name!r}: .route() needs a function that returns the branch key")
        declared = tuple(keys) if keys is not None else _declared_keys(key)
        key_name = getattr(key, "__name__", None) or "key"
        return RouteBuilder(self, route_id, key, key_name, declared, ())

    def loop(
        self,
        *body: Callable[..., Any] | Step[Any, Any],
        max_iterations: int,
        on_max: Literal["fail", "exit"] = "fail",
        name: str | None = None,
    ) -> Workflow:
        """Run ``body`` (one step, or several in order) again and again.

        The body's last step returns ``durable.again(value)`` to go on with ``value`` or
        ``durable.done(value)`` to stop; the loop's output is that value. After
        ``max_iterations`` the run fails (``on_max="fail"``) or the loop ends with the last
        value (``on_max="exit"``). Every iteration is journaled: a crash in iteration 37
        resumes at iteration 37.
        """
        loop_id = name or self._next_id("loop")
        self._check_new_id(loop_id, "loop")
        if not body:
            raise DefinitionError(f"workflow {self.name!r}: loop {loop_id!r} needs a body: .loop(step, ...)")
        if not isinstance(max_iterations, int) or isinstance(max_iterations, bool) or max_iterations < 1:
            raise DefinitionError(f"workflow {self.name!r}: loop {loop_id!r}: max_iterations must be 1 or more")
        if on_max not in ("fail", "exit"):
            raise DefinitionError(f"workflow {self.name!r}: loop {loop_id!r}: on_max must be 'fail' or 'exit'")
        lane = self._lane(f"loop {loop_id!r}", "body", body, taken={loop_id})
        return self._with(LoopNode(loop_id, lane, max_iterations, on_max))

    def map(
        self, fn: Callable[..., Any] | Step[Any, Any], *, concurrency: int | None = None, name: str | None = None
    ) -> Workflow:
        """Run ``fn`` once per item of the incoming list, at most ``concurrency`` at a time.

        The output is the list of results, in the order of the items. After a crash, items
        already completed are not run again.
        """
        s = as_step(fn)
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise DefinitionError(f"workflow {self.name!r}: map {s.name!r}: concurrency must be 1 or more (or None)")
        return self._with(MapNode(name or s.name, s, concurrency))

    def sleep(self, duration: Duration, *, name: str | None = None) -> Workflow:
        """Park the run for ``duration`` ("10m", seconds, or a timedelta); it passes its input on.

        While it sleeps, the run holds no task, thread or connection; the wake-up time is
        journaled, and a restarted engine's ``recover()`` wakes it on time.
        """
        sleep_id = name or self._next_id("sleep")
        seconds = _bounded(parse_duration(duration, what=f"workflow {self.name!r}: sleep {sleep_id!r}"))
        return self._with(SleepNode(sleep_id, seconds))

    def wait_for(
        self, signal: str, *, timeout: Duration | None = None, default: Any = _NO_DEFAULT, name: str | None = None
    ) -> Workflow:
        """Park the run until ``engine.signal(run_id, signal, payload)``; the payload is the output.

        A signal sent before the run gets here is kept and delivered when it does; several
        are delivered in the order sent. After ``timeout`` the run fails with ``SignalTimeout``,
        or goes on with ``default`` if one is given (it must be JSON).
        """
        if not isinstance(signal, str) or not signal or signal.startswith("__"):
            raise DefinitionError(f"workflow {self.name!r}: a signal name is a non-empty string not starting with '__'")
        wait_id = name or signal
        seconds = (
            _bounded(parse_duration(timeout, what=f"workflow {self.name!r}: wait_for({signal!r}) timeout"))
            if timeout is not None
            else None
        )
        if default is not _NO_DEFAULT:
            try:
                json.dumps(default, allow_nan=False)
            except (TypeError, ValueError):
                raise DefinitionError(
                    f"workflow {self.name!r}: wait_for({signal!r}) default {default!r} is not JSON"
                ) from None
        return self._with(WaitNode(wait_id, signal, seconds, default))

    def join(self, fn: Any = None, **_: Any) -> Workflow:
        """Refused: a join closes a fork, so it must follow ``.fork().branch(...)``."""
        raise DefinitionError(
            f"workflow {self.name!r}: .join() without a fork; open one first: .fork().branch(a).branch(b).join(step)"
        )

    def branch(self, *fns: Any, **_: Any) -> Workflow:
        """Refused: branches belong to a fork or a route."""
        raise DefinitionError(f"workflow {self.name!r}: .branch() outside a fork or route; call .fork() first")

    def build(self) -> Workflow:
        """Return the workflow itself (building is never required; this exists for readability)."""
        if not self.nodes:
            raise DefinitionError(f"workflow {self.name!r} has no steps; add one with .then(step)")
        return self

    def _copy(self, nodes: tuple[Node, ...]) -> Workflow:
        return Workflow(self.name, self.version, state=self.state_model, _nodes=nodes)

    def _next_id(self, kind: str) -> str:
        return f"{kind}-{1 + sum(n.kind == kind for n in self.nodes)}"

    def _with(self, node: Node) -> Workflow:
        self._check_new_id(node.id, "join" if getattr(node, "kind", "") == "join" else node.kind)
        return self._copy((*self.nodes, node))

    def _lane(self, where: str, lane_name: str, fns: typing.Sequence[Any], taken: set[str]) -> Branch:
        """Build a lane of steps, checking each id against the workflow and ``taken``."""
        used = set(self.node_ids()) | taken
        nodes: list[StepNode] = []
        for s in (as_step(f) for f in fns):
            if not s.name or "/" in s.name or "#" in s.name or "[" in s.name:
                raise DefinitionError(
                    f"workflow {self.name!r}, {where}: step name {s.name!r} must contain no '/', '#' or '['"
                )
            if s.name in used:
                raise DefinitionError(
                    f"workflow {self.name!r}, {where}: a node named {s.name!r} already exists; node names must be "
                    f"unique. Wrap the function in another step: step(name='{s.name}_2')({s.fn.__name__})"
                )
            used.add(s.name)
            nodes.append(StepNode(s.name, s))
        return Branch(lane_name, tuple(nodes))

    def _check_new_id(self, node_id: str, what: str) -> None:
        if not node_id or any(c in node_id for c in "/#["):
            raise DefinitionError(
                f"workflow {self.name!r}: {what} name {node_id!r} must be non-empty and contain none of '/', '#', '['"
            )
        if node_id in set(self.node_ids()):
            hint = {
                "step": f".then({node_id}, name='{node_id}_2')",
                "join": f".join({node_id}, name='{node_id}_2')",
                "map": f".map({node_id}, name='{node_id}_2')",
                "child": f".then(workflow, name='{node_id}_2')",
                "fork": ".fork(name='...')",
                "route": ".route(key, name='...')",
                "loop": ".loop(body, ..., name='...')",
                "sleep": ".sleep(duration, name='...')",
                "wait": ".wait_for(signal, name='...')",
            }.get(what, f"name='{node_id}_2'")
            raise DefinitionError(
                f"workflow {self.name!r}: a node named {node_id!r} already exists; node names must be unique. "
                f"Give this {what} another name: {hint}"
            )

    def with_steps(self, wrap: Callable[[StepNode], Step[Any, Any]]) -> Workflow:
        """A copy of this workflow whose every step is replaced by ``wrap(node)``.

        The structure and ids are kept. If ``wrap`` keeps each step's name, version, retry
        and timeout, the copy has the same definition hash: this is how ``durable.testing``
        instruments a user's steps without changing what the journal sees.
        """
        return self._copy(tuple(map_steps(n, wrap) for n in self.nodes))

    # -- reading ----------------------------------------------------------------------------

    def node_ids(self) -> Iterator[str]:
        """Every node id, in definition order (a node before the steps of its lanes)."""
        for node in self.nodes:
            yield from inner_ids(node)

    def step_nodes(self) -> dict[str, StepNode]:
        """Every step node by id, lanes included (a map's step under the map's id)."""
        out: dict[str, StepNode] = {}
        for node in self.nodes:
            if isinstance(node, StepNode):
                out[node.id] = node
            elif isinstance(node, MapNode):
                out[node.id] = StepNode(node.id, node.step)
            for lane in lanes(node):
                for n in lane.nodes:
                    out[n.id] = n
        return out

    def canonical(self) -> dict[str, Any]:
        """The definition as plain data: structure, names, versions, retry and timeout; no function bodies."""
        data: dict[str, Any] = json.loads(self._canonical_text())  # a fresh copy: callers may change theirs
        return data

    def _canonical_text(self) -> str:
        """The canonical form as sorted, compact JSON, built once (it is what the hash hashes)."""
        if self._canonical is None:
            self._canonical = json.dumps(self._build_canonical(), sort_keys=True, separators=(",", ":"))
        return self._canonical

    def _build_canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "nodes": [n.canonical() for n in self.nodes]}
        if self.state_model is not None:  # the shared context's shape is part of the definition
            fields = self.state_model.model_fields
            out["state"] = {
                "model": self.state_model.__name__,
                "fields": {k: type_text(f.annotation) for k, f in sorted(fields.items())},
            }
        return out

    @property
    def definition_hash(self) -> str:
        """SHA-256 (hex) of the canonical form, serialised with sorted keys and no whitespace."""
        if self._hash is None:
            self._hash = hashlib.sha256(self._canonical_text().encode()).hexdigest()
        return self._hash

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} v{self.version} {self.definition_hash[:12]}>"


_LONGEST_WAIT = 100 * 365 * 86400.0  # a hundred years: beyond, a wall-clock deadline is a mistake


def _bounded(seconds: float) -> float:
    if seconds > _LONGEST_WAIT:
        raise DefinitionError(f"a durable wait of {seconds:g}s is longer than a hundred years; give a shorter one")
    return seconds


def _declared_keys(key: Callable[[Any], Any]) -> tuple[str, ...] | None:
    """The keys a route function declares by its return annotation (Literal or Enum), if any."""
    try:
        ret = typing.get_type_hints(key).get("return")
    except Exception:
        return None
    if typing.get_origin(ret) is Literal:
        return tuple(str(k) for k in typing.get_args(ret))
    if isinstance(ret, type) and issubclass(ret, Enum):
        return tuple(str(m.value) for m in ret)
    return None


class ForkBuilder:
    """A fork being built: add branches, then close it with ``.join(step)``."""

    def __init__(self, parent: Workflow, fork_id: str, branches: tuple[Branch, ...]) -> None:
        self._parent = parent
        self._id = fork_id
        self._branches = branches

    def branch(self, *fns: Callable[..., Any] | Step[Any, Any], name: str | None = None) -> ForkBuilder:
        """Add a lane: one step, or several chained in order. Its name defaults to its first step's."""
        where = f"fork {self._id!r}"
        if not fns:
            raise DefinitionError(f"workflow {self._parent.name!r}, {where}: .branch() needs at least one step")
        branch_name = name or as_step(fns[0]).name
        if any(b.name == branch_name for b in self._branches):
            raise DefinitionError(
                f"workflow {self._parent.name!r}, {where}: two branches are named {branch_name!r}; "
                "pass .branch(..., name='...')"
            )
        taken = {n.id for b in self._branches for n in b.nodes} | {self._id}
        lane = self._parent._lane(where, branch_name, fns, taken)
        return ForkBuilder(self._parent, self._id, (*self._branches, lane))

    def join(self, fn: Callable[..., Any] | Step[Any, Any], *, name: str | None = None) -> Workflow:
        """Close the fork with a step that receives ``{branch_name: branch_output}``."""
        if not self._branches:
            raise DefinitionError(
                f"workflow {self._parent.name!r}: fork {self._id!r} has no branches; add .branch(step) before .join()"
            )
        fork = ForkNode(self._id, self._branches)
        with_fork = self._parent._copy((*self._parent.nodes, fork))
        s = as_step(fn)
        return with_fork._with(StepNode(name or s.name, s, kind="join"))

    def fork(self, **_: Any) -> ForkBuilder:
        """Refused: forks cannot be opened inside an open fork."""
        raise DefinitionError(f"fork {self._id!r} is still open; close it with .join(step) before opening another")

    def then(self, *_: Any, **__: Any) -> Workflow:
        """Refused: a fork must be closed before the workflow goes on."""
        raise DefinitionError(f"fork {self._id!r} is still open; close it with .join(step) before .then(...)")


class RouteBuilder:
    """A route being built: add ``.branch(key, *steps)``, then close with ``.default(*steps)`` or ``.end()``."""

    def __init__(
        self,
        parent: Workflow,
        route_id: str,
        key: Callable[[Any], Any],
        key_name: str,
        keys: tuple[str, ...] | None,
        branches: tuple[Branch, ...],
    ) -> None:
        self._parent = parent
        self._id = route_id
        self._key = key
        self._key_name = key_name
        self._keys = keys
        self._branches = branches

    def branch(self, key: Any, *fns: Callable[..., Any] | Step[Any, Any]) -> RouteBuilder:
        """Run these steps (none: pass the input on) when the route's key is ``key``."""
        where = f"route {self._id!r}"
        key = str(key.value if isinstance(key, Enum) else key)
        if any(b.name == key for b in self._branches):
            raise DefinitionError(f"workflow {self._parent.name!r}, {where}: two branches for key {key!r}")
        if self._keys is not None and key not in self._keys:
            raise DefinitionError(
                f"workflow {self._parent.name!r}, {where}: {key!r} is not one of the declared keys {list(self._keys)}"
            )
        taken = {n.id for b in self._branches for n in b.nodes} | {self._id}
        lane = self._parent._lane(where, key, fns, taken)
        return RouteBuilder(self._parent, self._id, self._key, self._key_name, self._keys, (*self._branches, lane))

    def default(self, *fns: Callable[..., Any] | Step[Any, Any]) -> Workflow:
        """Close the route: these steps (none: pass the input on) run for any key without a branch."""
        taken = {n.id for b in self._branches for n in b.nodes} | {self._id}
        lane = self._parent._lane(f"route {self._id!r}", "default", fns, taken)
        return self._close(lane)

    def end(self) -> Workflow:
        """Close the route without a default: a key with no branch fails the run."""
        if self._keys is not None:
            missing = [k for k in self._keys if k not in {b.name for b in self._branches}]
            if missing:
                raise DefinitionError(
                    f"workflow {self._parent.name!r}, route {self._id!r}: the declared keys {missing} have no "
                    "branch; add .branch(key, ...) for each, or close with .default(...)"
                )
        return self._close(None)

    def _close(self, default: Branch | None) -> Workflow:
        if not self._branches:
            raise DefinitionError(
                f"workflow {self._parent.name!r}: route {self._id!r} has no branches; add .branch(key, step)"
            )
        node = RouteNode(self._id, self._key, self._key_name, self._keys, self._branches, default)
        return self._parent._with(node)

    def then(self, *_: Any, **__: Any) -> Workflow:
        """Refused: a route must be closed before the workflow goes on."""
        raise DefinitionError(f"route {self._id!r} is still open; close it with .default(...) or .end()")


def _flatten(canonical: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Map node id -> (where it stands, its own fields), for comparing two definitions."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, node in enumerate(canonical.get("nodes", [])):
        default = node.get("default") if node.get("kind") == "route" else None
        node_lanes = [*node.get("branches", []), *([default] if default else [])]
        fields = {k: v for k, v in node.items() if not (k == "branches" or (k == "default" and default is not None))}
        if node_lanes:
            fields["lanes"] = [lane["name"] for lane in node_lanes]
        out[node["id"]] = (f"position {i + 1}", _fields(fields))
        for lane in node_lanes:
            for j, n in enumerate(lane.get("nodes", [])):
                out[n["id"]] = (f"branch {lane['name']!r} of {node['id']!r}, position {j + 1}", _fields(n))
    return out


def _fields(node: dict[str, Any]) -> dict[str, Any]:
    """A node's fields with nested settings spread out (``retry.max_attempts``), for precise diffs."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def definition_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Describe how two canonical definitions differ, one line per difference (empty if equal)."""
    lines: list[str] = []
    if old.get("name") != new.get("name"):
        lines.append(f"workflow name changed: {old.get('name')!r} -> {new.get('name')!r}")
    if old.get("version") != new.get("version"):
        lines.append(f"workflow version changed: {old.get('version')} -> {new.get('version')}")
    a, b = _flatten(old), _flatten(new)
    for node_id in b.keys() - a.keys():
        lines.append(f"node {node_id!r} was added at {b[node_id][0]}")
    for node_id in a.keys() - b.keys():
        lines.append(f"node {node_id!r} was removed (it stood at {a[node_id][0]})")
    for node_id in a.keys() & b.keys():
        (where_a, fa), (where_b, fb) = a[node_id], b[node_id]
        diffs = [f"{k} {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]
        if where_a != where_b:
            diffs.append(f"moved from {where_a} to {where_b}")
        if diffs:
            lines.append(f"node {node_id!r} changed: " + "; ".join(diffs))
    lines += _state_changes(old.get("state"), new.get("state"))
    return sorted(lines, key=lambda line: (not line.startswith("workflow"), line))


def _state_changes(old: Any, new: Any) -> list[str]:
    """How the shared state's declaration differs (its model's name, and each field's type)."""
    if old == new:
        return []
    if old is None or new is None:
        return [f"the shared state model was {'added' if old is None else 'removed'}"]
    lines = []
    if old.get("model") != new.get("model"):
        lines.append(f"the shared state model changed: {old.get('model')} -> {new.get('model')}")
    a, b = old.get("fields", {}), new.get("fields", {})
    lines += [f"state field {k!r} was added ({b[k]})" for k in sorted(b.keys() - a.keys())]
    lines += [f"state field {k!r} was removed (it was {a[k]})" for k in sorted(a.keys() - b.keys())]
    lines += [f"state field {k!r} changed type: {a[k]} -> {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return lines or ["the shared state's declaration changed"]


def type_text(annotation: Any) -> str:
    """A type as the definition hash sees it: by name, never by the module it was imported from.

    ``__main__.Order`` and ``flow.Order`` are one type to the hash (the same file run as a script
    and imported by ``durable worker``), and the text is the same on every Python version.
    """
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, typing.ForwardRef):
        return annotation.__forward_arg__
    if isinstance(annotation, typing.TypeVar):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        name = (getattr(origin, "__qualname__", None) or str(origin)).rpartition("<locals>.")[2]
        return f"{name}[{', '.join(type_text(a) for a in args)}]" if args else name
    if isinstance(annotation, type):  # Outer.Inner, but not the function a class was defined in
        return annotation.__qualname__.rpartition("<locals>.")[2]
    return repr(annotation)
