"""Workflow definitions: ``@step``, the ``Workflow`` builder, node kinds, canonical form and hash.

A definition is built once, validated as it is built, and never changes afterwards: every
builder method returns a new ``Workflow``. Its canonical form is plain data (no function
bodies) and its SHA-256 is the *definition hash* recorded in every run it starts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._codec import Codec
from .errors import DefinitionError
from .retry import Duration, RetryPolicy, parse_duration

__all__ = [
    "Branch",
    "ForkBuilder",
    "ForkNode",
    "Step",
    "StepNode",
    "Workflow",
    "definition_changes",
    "step",
]

P = ParamSpec("P")
R = TypeVar("R")


class Step(Generic[P, R]):
    """A plain function made into a durable step. Calling it calls the function, untouched."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retries: RetryPolicy | int | None = None,
        timeout: Duration | None = None,
        version: str | int = "1",
    ) -> None:
        if isinstance(fn, Step):  # re-wrapping a step (to rename it, say) wraps its function
            fn = fn.fn  # type: ignore[has-type]
        if not callable(fn):
            raise DefinitionError(f"@step needs a function, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or ""
        if not self.name or self.name == "<lambda>":
            raise DefinitionError(f"step {fn!r} has no usable name; pass one: step(fn, name='...')")
        self.retry = RetryPolicy.of(retries)
        self.timeout = parse_duration(timeout, what=f"step {self.name!r} timeout") if timeout is not None else None
        if self.timeout == 0:
            raise DefinitionError(f"step {self.name!r}: timeout must be longer than 0s")
        self.version = str(version)
        self.is_async = inspect.iscoroutinefunction(fn)
        required = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if len(required) > 1 or any(p.kind is p.KEYWORD_ONLY for p in required):
            raise DefinitionError(
                f"step {self.name!r} takes {len(required)} required arguments; a step receives exactly one value "
                "(the previous node's output): take one argument, or bundle several into a model or dict"
            )
        self.codec = Codec(fn, self.name)
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name!r} v{self.version}>"


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: RetryPolicy | int | None = None,
    timeout: Duration | None = None,
    version: str | int = "1",
) -> Callable[[Callable[P, R]], Step[P, R]]: ...
def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: RetryPolicy | int | None = None,
    timeout: Duration | None = None,
    version: str | int = "1",
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Mark a sync or async function as a durable step, bare (``@step``) or with options.

    Args:
        fn: the function, when used bare as ``@step``.
        name: the step's name in the journal; defaults to the function's name.
        retries: a ``RetryPolicy``, or a number of retries (``retries=3`` means up to four attempts).
        timeout: the longest one attempt may run (``"30s"``, seconds, or a timedelta).
        version: bump it when the step's meaning changes; it is part of the definition hash.
    """
    if fn is not None:
        return Step(fn)

    def decorate(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, name=name, retries=retries, timeout=timeout, version=version)

    return decorate


def _as_step(obj: Any) -> Step[Any, Any]:
    if isinstance(obj, Step):
        return obj
    if isinstance(obj, (Workflow, ForkBuilder)):
        raise DefinitionError("a workflow cannot be used as a step here; pass a function or an @step")
    if callable(obj):
        return Step(obj)
    raise DefinitionError(f"{obj!r} is not a step: pass a function or an @step")


@dataclass(frozen=True)
class StepNode:
    """A step at a position in the workflow. ``kind`` is ``"step"``, or ``"join"`` after a fork."""

    id: str
    step: Step[Any, Any]
    kind: str = "step"

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "step": self.step.name,
            "step_version": self.step.version,
            "retry": self.step.retry.canonical(),
            "timeout": self.step.timeout,
        }


@dataclass(frozen=True)
class Branch:
    """One lane of a fork: a chain of steps run in order."""

    name: str
    nodes: tuple[StepNode, ...]

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": [n.canonical() for n in self.nodes]}


@dataclass(frozen=True)
class ForkNode:
    """Branches that run concurrently; the node's output is ``{branch_name: branch_output}``."""

    id: str
    branches: tuple[Branch, ...]
    kind: str = field(default="fork", init=False)

    def canonical(self) -> dict[str, Any]:
        return {"id": self.id, "kind": "fork", "branches": [b.canonical() for b in self.branches]}


Node = StepNode | ForkNode


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

    def __init__(self, name: str, version: str | int = 1, *, _nodes: tuple[Node, ...] = ()) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError("a workflow needs a non-empty name: Workflow('checkout')")
        self.name = name
        self.version = str(version)
        self.nodes = _nodes
        self._hash: str | None = None

    # -- building ---------------------------------------------------------------------------

    def then(self, fn: Callable[..., Any] | Step[Any, Any], *, name: str | None = None) -> Workflow:
        """Append a step; it receives the previous node's output (the first receives the run's input)."""
        s = _as_step(fn)
        return self._with(StepNode(name or s.name, s))

    def fork(self, *, name: str | None = None) -> ForkBuilder:
        """Open a fork; add lanes with ``.branch(...)`` and close it with ``.join(step)``."""
        fork_id = name or f"fork-{1 + sum(isinstance(n, ForkNode) for n in self.nodes)}"
        self._check_new_id(fork_id, "fork")
        return ForkBuilder(self, fork_id, ())

    def join(self, fn: Any = None, **_: Any) -> Workflow:
        """Refused: a join closes a fork, so it must follow ``.fork().branch(...)``."""
        raise DefinitionError(
            f"workflow {self.name!r}: .join() without a fork; open one first: .fork().branch(a).branch(b).join(step)"
        )

    def branch(self, *fns: Any, **_: Any) -> Workflow:
        """Refused: branches belong to a fork."""
        raise DefinitionError(f"workflow {self.name!r}: .branch() outside a fork; call .fork() first")

    def build(self) -> Workflow:
        """Return the workflow itself (building is never required; this exists for readability)."""
        if not self.nodes:
            raise DefinitionError(f"workflow {self.name!r} has no steps; add one with .then(step)")
        return self

    def _with(self, node: Node) -> Workflow:
        if isinstance(node, StepNode):
            self._check_new_id(node.id, "step")
        return Workflow(self.name, self.version, _nodes=(*self.nodes, node))

    def _check_new_id(self, node_id: str, what: str) -> None:
        if not node_id or "/" in node_id:
            raise DefinitionError(
                f"workflow {self.name!r}: {what} name {node_id!r} must be non-empty and contain no '/'"
            )
        if node_id in set(self.node_ids()):
            method = {"step": "then", "join": "join"}.get(what)
            hint = f".{method}({node_id}, name='{node_id}_2')" if method else ".fork(name='...')"
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

        def swap(node: StepNode) -> StepNode:
            return StepNode(node.id, wrap(node), node.kind)

        nodes: list[Node] = []
        for node in self.nodes:
            if isinstance(node, StepNode):
                nodes.append(swap(node))
            else:
                branches = tuple(Branch(b.name, tuple(swap(n) for n in b.nodes)) for b in node.branches)
                nodes.append(ForkNode(node.id, branches))
        return Workflow(self.name, self.version, _nodes=tuple(nodes))

    # -- reading ----------------------------------------------------------------------------

    def node_ids(self) -> Iterator[str]:
        """Every node id, in definition order (fork ids before their branches' steps)."""
        for node in self.nodes:
            yield node.id
            if isinstance(node, ForkNode):
                for b in node.branches:
                    for n in b.nodes:
                        yield n.id

    def step_nodes(self) -> dict[str, StepNode]:
        """Every step node by id, branches included."""
        out: dict[str, StepNode] = {}
        for node in self.nodes:
            if isinstance(node, StepNode):
                out[node.id] = node
            else:
                for b in node.branches:
                    for n in b.nodes:
                        out[n.id] = n
        return out

    def canonical(self) -> dict[str, Any]:
        """The definition as plain data: structure, names, versions, retry and timeout; no function bodies."""
        return {"name": self.name, "version": self.version, "nodes": [n.canonical() for n in self.nodes]}

    @property
    def definition_hash(self) -> str:
        """SHA-256 (hex) of the canonical form, serialised with sorted keys and no whitespace."""
        if self._hash is None:
            text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
            self._hash = hashlib.sha256(text.encode()).hexdigest()
        return self._hash

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} v{self.version} {self.definition_hash[:12]}>"


class ForkBuilder:
    """A fork being built: add branches, then close it with ``.join(step)``."""

    def __init__(self, parent: Workflow, fork_id: str, branches: tuple[Branch, ...]) -> None:
        self._parent = parent
        self._id = fork_id
        self._branches = branches

    def branch(self, *fns: Callable[..., Any] | Step[Any, Any], name: str | None = None) -> ForkBuilder:
        """Add a lane: one step, or several chained in order. Its name defaults to its first step's."""
        where = f"workflow {self._parent.name!r}, fork {self._id!r}"
        if not fns:
            raise DefinitionError(f"{where}: .branch() needs at least one step")
        steps = [_as_step(f) for f in fns]
        branch_name = name or steps[0].name
        if any(b.name == branch_name for b in self._branches):
            raise DefinitionError(f"{where}: two branches are named {branch_name!r}; pass .branch(..., name='...')")
        taken = set(self._parent.node_ids()) | {n.id for b in self._branches for n in b.nodes} | {self._id}
        nodes: list[StepNode] = []
        for s in steps:
            if "/" in s.name:
                raise DefinitionError(f"{where}: step name {s.name!r} must contain no '/'")
            if s.name in taken:
                raise DefinitionError(
                    f"{where}: a node named {s.name!r} already exists; node names must be unique. "
                    f"Wrap the function in another step: step(name='{s.name}_2')({s.fn.__name__})"
                )
            taken.add(s.name)
            nodes.append(StepNode(s.name, s))
        return ForkBuilder(self._parent, self._id, (*self._branches, Branch(branch_name, tuple(nodes))))

    def join(self, fn: Callable[..., Any] | Step[Any, Any], *, name: str | None = None) -> Workflow:
        """Close the fork with a step that receives ``{branch_name: branch_output}``."""
        if not self._branches:
            raise DefinitionError(
                f"workflow {self._parent.name!r}: fork {self._id!r} has no branches; add .branch(step) before .join()"
            )
        fork = ForkNode(self._id, self._branches)
        with_fork = Workflow(self._parent.name, self._parent.version, _nodes=(*self._parent.nodes, fork))
        s = _as_step(fn)
        node = StepNode(name or s.name, s, kind="join")
        with_fork._check_new_id(node.id, "join")
        return Workflow(with_fork.name, with_fork.version, _nodes=(*with_fork.nodes, node))

    def fork(self, **_: Any) -> ForkBuilder:
        """Refused: forks cannot be opened inside an open fork."""
        raise DefinitionError(f"fork {self._id!r} is still open; close it with .join(step) before opening another")

    def then(self, *_: Any, **__: Any) -> Workflow:
        """Refused: a fork must be closed before the workflow goes on."""
        raise DefinitionError(f"fork {self._id!r} is still open; close it with .join(step) before .then(...)")


def _flatten(canonical: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Map node id -> (where it stands, its own fields), for comparing two definitions."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, node in enumerate(canonical.get("nodes", [])):
        if node.get("kind") == "fork":
            names = [b["name"] for b in node.get("branches", [])]
            out[node["id"]] = (f"position {i + 1}", {"kind": "fork", "branches": names})
            for b in node.get("branches", []):
                for j, n in enumerate(b.get("nodes", [])):
                    out[n["id"]] = (f"branch {b['name']!r} of {node['id']!r}, position {j + 1}", _fields(n))
        else:
            out[node["id"]] = (f"position {i + 1}", _fields(node))
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
    return sorted(lines, key=lambda line: (not line.startswith("workflow"), line))
