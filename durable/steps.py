"""Steps: plain sync or async functions, made durable with ``@step``."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._codec import Codec
from .errors import DefinitionError
from .retry import Duration, RetryPolicy, parse_duration

__all__ = ["Step", "as_step", "step"]

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
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise DefinitionError(
                f"step {self.name!r} is a generator function: a step returns one value, stored once; "
                "return a list instead of yielding"
            )
        _refuse_one_shot_return(fn, self.name)
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


_ONE_SHOT = (
    collections.abc.Iterator,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
)


def _refuse_one_shot_return(fn: Callable[..., Any], name: str) -> None:
    """Refuse a return annotation of an iterator or generator: the next step would get a one-shot value."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable annotations (forward references): the codec falls back to JSON
        return
    origin = typing.get_origin(ret) or ret
    if isinstance(origin, type) and issubclass(origin, _ONE_SHOT):
        raise DefinitionError(
            f"step {name!r} is annotated to return {origin.__name__}: an iterator can be read once, so a resumed "
            "run would hand on something else than a live one; annotate and return a list"
        )


@overload
def step(
    fn: Callable[P, R],
    /,
    *,
    name: str | None = None,
    retries: RetryPolicy | int | None = None,
    timeout: Duration | None = None,
    version: str | int = "1",
) -> Step[P, R]: ...
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
    """Mark a sync or async function as a durable step: ``@step``, ``@step(...)`` or ``step(fn, ...)``.

    Args:
        fn: the function, when used bare as ``@step`` or called as ``step(fn, name=...)``.
        name: the step's name in the journal; defaults to the function's name.
        retries: a ``RetryPolicy``, or a number of retries (``retries=3`` means up to four attempts).
        timeout: the longest one attempt may run (``"30s"``, seconds, or a timedelta).
        version: bump it when the step's meaning changes; it is part of the definition hash.
    """
    if fn is not None:  # @step, or step(fn, name=..., retries=...): the options apply either way
        return Step(fn, name=name, retries=retries, timeout=timeout, version=version)

    def decorate(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, name=name, retries=retries, timeout=timeout, version=version)

    return decorate


def as_step(obj: Any) -> Step[Any, Any]:
    """``obj`` as a step: an ``@step`` as it is, a plain function wrapped with default options."""
    if isinstance(obj, Step):
        return obj
    if callable(obj) and not hasattr(obj, "canonical"):
        return Step(obj)
    raise DefinitionError(f"{obj!r} is not a step: pass a function or an @step (a workflow only where it says so)")
