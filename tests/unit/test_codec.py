"""Values to JSON and back, driven by step annotations (durable._codec), seen through @step."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from durable import SerializationError, step
from durable._codec import Codec, encode_any


class Item(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    id: int
    items: list[Item]
    placed: datetime


@dataclass
class Point:
    x: int
    y: int


ORDER = Order(id=7, items=[Item(sku="a", qty=1), Item(sku="b", qty=2)], placed=datetime(2024, 5, 1, 12, tzinfo=UTC))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def roundtrip(fn: Any, value: Any) -> tuple[Any, Any]:
    """Encode ``value`` as the output of step ``fn``, check it is JSON, and decode it back."""
    codec = step(fn).codec
    data = codec.encode_output(value)
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # plain JSON, nothing else
    return data, codec.decode_output(data)


def test_a_pydantic_model_comes_back_as_the_model() -> None:
    def make() -> Order:
        return ORDER

    data, back = roundtrip(make, make())
    assert data == {
        "id": 7,
        "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
        "placed": "2024-05-01T12:00:00Z",
    }
    assert isinstance(back, Order)
    assert back == ORDER


def test_list_of_models() -> None:
    def make() -> list[Item]:
        return ORDER.items

    data, back = roundtrip(make, make())
    assert data == [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]
    assert back == ORDER.items
    assert all(isinstance(i, Item) for i in back)


def test_dict_of_str_to_int() -> None:
    def make() -> dict[str, int]:
        return {"a": 1, "b": 2}

    assert roundtrip(make, make()) == ({"a": 1, "b": 2}, {"a": 1, "b": 2})


def test_datetime_and_date() -> None:
    when = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))

    def make() -> datetime:
        return when

    def day() -> date:
        return date(2024, 2, 29)

    data, back = roundtrip(make, when)
    assert isinstance(data, str)
    assert back == when
    assert back.utcoffset() == timedelta(hours=2)
    assert roundtrip(day, date(2024, 2, 29)) == ("2024-02-29", date(2024, 2, 29))


def test_tuple_comes_back_as_a_tuple() -> None:
    def make() -> tuple[int, str]:
        return (1, "x")

    data, back = roundtrip(make, (1, "x"))
    assert data == [1, "x"]
    assert back == (1, "x")
    assert isinstance(back, tuple)


def test_dataclass_comes_back_as_the_dataclass() -> None:
    def make() -> Point:
        return Point(1, 2)

    assert roundtrip(make, Point(1, 2)) == ({"x": 1, "y": 2}, Point(1, 2))


def test_optional_annotation_accepts_none() -> None:
    def maybe() -> int | None:
        return None

    assert roundtrip(maybe, None) == (None, None)
    assert roundtrip(maybe, 3) == (3, 3)


def test_async_step_annotations_are_used() -> None:
    async def make() -> Item:
        return Item(sku="z", qty=3)

    data, back = roundtrip(make, Item(sku="z", qty=3))
    assert data == {"sku": "z", "qty": 3}
    assert back == Item(sku="z", qty=3)


@given(json_values)
def test_unannotated_steps_pass_json_through(value: Any) -> None:
    def passthrough(x):  # type: ignore[no-untyped-def]
        return x

    data, back = roundtrip(passthrough, value)
    assert data == value
    assert back == value


@given(json_values)
def test_any_annotated_steps_pass_json_through(value: Any) -> None:
    def passthrough(x: Any) -> Any:
        return x

    assert roundtrip(passthrough, value) == (value, value)


@given(st.lists(st.integers()))
def test_list_of_int_roundtrips(value: list[int]) -> None:
    def ints() -> list[int]:
        return value

    assert roundtrip(ints, value) == (value, value)


def test_unannotated_model_output_is_stored_as_its_json() -> None:
    def make():  # type: ignore[no-untyped-def]
        return Item(sku="a", qty=1)

    data, back = roundtrip(make, make())
    assert data == {"sku": "a", "qty": 1}
    assert back == data  # without an annotation there is nothing to rebuild the model from


@step
def returns_later() -> Later:  # decorated while ``Later`` is not defined yet
    return Later(n=1)


class Later(BaseModel):
    n: int


def test_forward_references_resolve_on_first_use() -> None:
    codec = returns_later.codec
    assert codec.encode_output(Later(n=1)) == {"n": 1}
    assert codec.decode_output({"n": 1}) == Later(n=1)


# -- what cannot be encoded --------------------------------------------------------------------


def test_unserialisable_output_names_the_step_and_the_type() -> None:
    @step(name="make_thing")
    def make():  # type: ignore[no-untyped-def]
        return object()

    with pytest.raises(SerializationError) as info:
        make.codec.encode_output(make())
    err = info.value
    assert err.node == "make_thing"
    assert err.type_name == "object"
    assert "'make_thing'" in str(err)
    assert "object" in str(err)


def test_a_socket_cannot_be_encoded() -> None:
    @step
    def connect():  # type: ignore[no-untyped-def]
        return None

    with socket.socket() as sock:
        with pytest.raises(SerializationError) as info:
            connect.codec.encode_output(sock)
    assert info.value.node == "connect"
    assert info.value.type_name == "socket.socket"
    assert "socket.socket" in str(info.value)


def test_output_that_contradicts_its_annotation_is_refused() -> None:
    @step
    def count() -> int:
        return {1, 2}  # type: ignore[return-value]

    with pytest.raises(SerializationError) as info:
        count.codec.encode_output(count())
    err = info.value
    assert err.node == "count"
    assert err.type_name == "set"
    assert "'count'" in str(err)
    assert "set" in str(err)
    assert "annotation" in str(err)  # says what to fix


def test_wrong_model_for_the_annotation_is_refused() -> None:
    @step
    def make() -> Item:
        return {"sku": "a", "qty": 1}  # type: ignore[return-value]

    with pytest.raises(SerializationError) as info:
        make.codec.encode_output(make())
    assert info.value.node == "make"
    assert info.value.type_name == "dict"


def test_stored_output_that_no_longer_matches_the_annotation() -> None:
    @step
    def make() -> Item:
        return Item(sku="a", qty=1)

    with pytest.raises(SerializationError) as info:
        make.codec.decode_output({"sku": "a"})
    assert info.value.node == "make"
    assert "'make'" in str(info.value)


def test_encode_any_names_the_value_and_its_type() -> None:
    assert encode_any({"a": [1, 2]}, what="the run's input") == {"a": [1, 2]}
    with pytest.raises(SerializationError) as info:
        encode_any(object(), what="the run's input")
    assert info.value.node is None
    assert info.value.type_name == "object"
    assert str(info.value).startswith("the run's input of type object")


# -- inputs ------------------------------------------------------------------------------------


def test_prepare_input_builds_the_annotated_model() -> None:
    @step
    def total(order: Order) -> int:
        return sum(i.qty for i in order.items)

    value = total.codec.prepare_input(ORDER.model_dump(mode="json"))
    assert isinstance(value, Order)
    assert value == ORDER
    assert total(value) == 3


def test_prepare_input_validates_against_the_annotation() -> None:
    @step
    def total(order: Order) -> int:
        return 0

    with pytest.raises(SerializationError) as info:
        total.codec.prepare_input({"id": "not a number"})
    assert info.value.node == "total"
    assert info.value.type_name == "dict"
    assert "'total'" in str(info.value)


def test_prepare_input_without_annotation_passes_the_value_itself() -> None:
    @step
    def take(x):  # type: ignore[no-untyped-def]
        return x

    value = {"a": object()}
    assert take.codec.prepare_input(value) is value


def test_prepare_input_of_a_list_annotation() -> None:
    @step
    def take(xs: list[Item]) -> int:
        return len(xs)

    assert take.codec.prepare_input([{"sku": "a", "qty": 1}]) == [Item(sku="a", qty=1)]


def test_takes_input() -> None:
    @step
    def zero() -> int:
        return 1

    @step
    def one(x: int) -> int:
        return x

    zero.codec.prepare_input(None)
    one.codec.prepare_input(1)
    assert zero.codec.takes_input is False
    assert one.codec.takes_input is True


def test_codec_can_be_built_for_any_callable() -> None:
    def f(x: int) -> str:
        return str(x)

    codec = Codec(f, "f")
    assert codec.prepare_input("5") == 5
    assert codec.encode_output("5") == "5"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), [1.0, float("inf")]])
def test_unannotated_non_finite_output_is_refused(value: Any) -> None:
    @step
    def make():  # type: ignore[no-untyped-def]
        return value

    with pytest.raises(SerializationError, match="make"):
        make.codec.encode_output(value)


def test_float_annotated_nan_is_refused() -> None:
    @step
    def ratio() -> float:
        return float("nan")

    with pytest.raises(SerializationError, match="ratio"):
        ratio.codec.encode_output(ratio())


def test_run_input_inf_is_refused() -> None:
    with pytest.raises(SerializationError):
        encode_any(float("inf"), what="the run's input")


def test_takes_input_is_right_before_first_use() -> None:
    @step
    def zero() -> int:
        return 1

    assert zero.codec.takes_input is False
