"""Encoding values to JSON and back, driven by the annotations of steps. Never pickle."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, JsonValue, TypeAdapter
from pydantic_core import PydanticSerializationError

from .errors import SerializationError

__all__ = ["Codec", "encode_any"]

# Infinity and NaN are not JSON: keep them as constants when dumping, so that the strict
# json.dumps check below refuses them instead of silently storing null.
_ANY: TypeAdapter[Any] = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="constants"))


def _strict_json(data: Any) -> JsonValue:
    json.dumps(data, allow_nan=False)  # ValueError on inf/nan, TypeError on non-JSON leftovers
    return data  # type: ignore[no-any-return]


def _type_name(value: object) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def encode_any(value: Any, *, what: str, node: str | None = None) -> JsonValue:
    """Encode a value of any type (a run's input) to JSON, inferring from its runtime type."""
    try:
        return _strict_json(_ANY.dump_python(value, mode="json", warnings="error"))
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise SerializationError(
            f"{what} of type {_type_name(value)} cannot be encoded as JSON ({exc}); "
            "use JSON types, dataclasses or pydantic models",
            node=node,
            type_name=_type_name(value),
        ) from None


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
            # common case of small steps, kept off pydantic's serializer.
            return value  # type: ignore[no-any-return]
        if self._ret is None:
            return encode_any(value, what=f"the output of step {self._name!r}", node=self._name)
        try:
            return _strict_json(self._ret.dump_python(value, mode="json", warnings="error"))
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise SerializationError(
                f"step {self._name!r} returned a value of type {_type_name(value)} that cannot be encoded as JSON "
                f"by its return annotation ({exc}); return JSON types, dataclasses or pydantic models, "
                "and keep the annotation true",
                node=self._name,
                type_name=_type_name(value),
            ) from None

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
