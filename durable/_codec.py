"""Encoding values to JSON and back, driven by the annotations of steps. Never pickle.

This is the one encoding boundary: every value that enters the journal (a run's input, a
step's output, a shared-state patch, a signal's payload) is encoded here, and checked by
:func:`storable` against exactly what the event encoder will accept: valid Unicode (no lone
surrogates), finite numbers, JSON types, and at most :data:`MAX_DEPTH` levels of nesting.
What fails is refused here, naming the path inside the value, before anything is written.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, JsonValue, TypeAdapter
from pydantic_core import PydanticSerializationError

from .errors import SerializationError

__all__ = ["MAX_DEPTH", "Codec", "encode_any", "storable", "valid_unicode"]

MAX_DEPTH = 200
"""How deep a stored value may nest. The event encoder (pydantic-core) stops at about 254
levels, and a value sits a few levels down inside its event: 200 leaves room for that."""

# Infinity and NaN are not JSON: keep them as constants when dumping, so that the strict
# json.dumps check below refuses them instead of silently storing null.
_ANY: TypeAdapter[Any] = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="constants"))


_PROBE: TypeAdapter[Any] = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="constants"))
_MARGIN = 254 - MAX_DEPTH  # wrapped this deep, a value too deep for an event fails the probe


def storable(data: Any, *, what: str, node: str | None = None) -> JsonValue:
    """Return ``data`` (JSON types) if the journal can store it exactly; raise :class:`SerializationError` if not.

    The check is the encoder's own, run in Rust: the value is serialized once, wrapped as
    deep as an event would hold it. Only when it fails does a walk in Python find the path
    to name in the message.
    """
    wrapped = data
    for _ in range(_MARGIN):
        wrapped = [wrapped]
    try:
        text = _PROBE.dump_json(wrapped)
    except (PydanticSerializationError, ValueError, RecursionError):
        text = None
    if text is not None and (b"NaN" in text or b"Infinity" in text):  # maybe a number JSON has no word for
        try:
            json.dumps(data, allow_nan=False)
        except ValueError:
            text = None
    if text is None:
        problem = _find_problem(data) or f"it nests more than {MAX_DEPTH} levels deep"
        raise SerializationError(f"{what} cannot be stored: {problem}", node=node, type_name=_type_name(data))
    return data  # type: ignore[no-any-return]


def _refuse_plain(value: Any, what: str, node: str | None) -> None:
    """For a value of JSON types that the serializer refused: name the path of what is wrong, if it can."""
    problem = _find_problem(value)
    if problem is not None and "not a JSON type" not in problem:
        raise SerializationError(f"{what} cannot be stored: {problem}", node=node, type_name=_type_name(value))


def _find_problem(data: Any) -> str | None:
    """Where in ``data`` the first part that cannot be stored is, and why (for the message)."""
    stack: list[tuple[Any, str, int]] = [(data, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"it nests more than {MAX_DEPTH} levels deep (at {path[:80]}...)"
        if isinstance(value, str):
            if not valid_unicode(value):
                return (
                    f"the string at {path} is not valid Unicode ({value!r} holds a lone surrogate, as os.listdir "
                    "gives for a file name that is not UTF-8); decode such names with errors='replace', or store bytes "
                    "as base64"
                )
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return f"the number at {path} is {value}, which JSON cannot hold; store it as a string or None"
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    return f"the key {key!r} at {path} is not a string"
                if not valid_unicode(key):
                    return f"the key {key!r} at {path} is not valid Unicode (a lone surrogate)"
            stack.extend((v, f"{path}.{k}", depth + 1) for k, v in reversed(list(value.items())))
        elif not (value is None or isinstance(value, bool | int)):
            return f"the value at {path} is a {_type_name(value)}, not a JSON type"
    return None


def valid_unicode(text: str) -> bool:
    """Whether ``text`` can be stored: no lone surrogate (what os.listdir gives for a non-UTF-8 name)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _type_name(value: object) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def encode_any(value: Any, *, what: str, node: str | None = None) -> JsonValue:
    """Encode a value of any type (a run's input) to JSON, inferring from its runtime type."""
    try:
        data = _ANY.dump_python(value, mode="json", warnings="error")
    except (PydanticSerializationError, ValueError, TypeError, RecursionError) as exc:
        _refuse_plain(value, what, node)
        raise SerializationError(
            f"{what} of type {_type_name(value)} cannot be encoded as JSON ({exc}); "
            "use JSON types, dataclasses or pydantic models",
            node=node,
            type_name=_type_name(value),
        ) from None
    return storable(data, what=what, node=node)


def _required_positional(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    return [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


_PLAIN: frozenset[type] = frozenset({str, int, bool, type(None)})


class Codec:
    """The annotations of one step function, turned into pydantic adapters.

    Adapters are built on first use, so that forward references resolve once the module that
    defines the step has finished importing.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self._name = name
        self._ready = False
        self.takes_input = bool(_required_positional(fn))
        self._param: TypeAdapter[Any] | None = None
        self._ret: TypeAdapter[Any] | None = None
        self._ret_plain: type | None = None

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            hints = typing.get_type_hints(self._fn)
        except Exception:  # unresolvable annotations: fall back to untyped JSON
            hints = {}
        params = _required_positional(self._fn)
        if params and params[0].name in hints and hints[params[0].name] is not Any:
            self._param = TypeAdapter(hints[params[0].name])
        ret = hints.get("return", Any)
        if ret is not Any:
            self._ret = TypeAdapter(ret)
            self._ret_plain = ret if ret in _PLAIN else None
        self._ready = True

    def encode_output(self, value: Any) -> JsonValue:
        """Encode the step's return value by its return annotation.

        Raises:
            SerializationError: naming the step and the type, when the value cannot be encoded.
        """
        self._prepare()
        kind = type(value)
        if kind in _PLAIN and (self._ret is None or self._ret_plain is kind):
            # A str, int, bool or None under its own annotation (or none) is its own JSON: the
            # common case of small steps, kept off pydantic's serializer (a str still has to be
            # valid Unicode).
            if kind is str and not valid_unicode(value):
                storable(value, what=f"the output of step {self._name!r}", node=self._name)
            return value  # type: ignore[no-any-return]
        if self._ret is None:
            return encode_any(value, what=f"the output of step {self._name!r}", node=self._name)
        try:
            data = self._ret.dump_python(value, mode="json", warnings="error")
        except (PydanticSerializationError, ValueError, TypeError, RecursionError) as exc:
            _refuse_plain(value, f"the output of step {self._name!r}", self._name)
            raise SerializationError(
                f"step {self._name!r} returned a value of type {_type_name(value)} that cannot be encoded as JSON "
                f"by its return annotation ({exc}); return JSON types, dataclasses or pydantic models, "
                "and keep the annotation true",
                node=self._name,
                type_name=_type_name(value),
            ) from None
        return storable(data, what=f"the output of step {self._name!r}", node=self._name)

    def decode_output(self, data: JsonValue) -> Any:
        """Rebuild the step's return value from its JSON (a pydantic model comes back as that model)."""
        self._prepare()
        if self._ret is None:
            return data
        try:
            return self._ret.validate_python(data)
        except ValueError as exc:
            raise SerializationError(
                f"the stored output of step {self._name!r} does not match its return annotation: {exc}",
                node=self._name,
            ) from None

    def prepare_input(self, value: Any) -> Any:
        """Validate the value a step receives against its parameter annotation."""
        self._prepare()
        if self._param is None:
            return value
        try:
            return self._param.validate_python(value)
        except ValueError as exc:
            raise SerializationError(
                f"step {self._name!r} cannot accept its input of type {_type_name(value)}: {exc}",
                node=self._name,
                type_name=_type_name(value),
            ) from None
