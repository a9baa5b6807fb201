"""Durations as users write them, RetryPolicy validation, and the pure backoff computation."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from durable.errors import DefinitionError
from durable.retry import RetryPolicy, backoff_delay, parse_duration

# -- parse_duration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1m", 60.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 30 s ", 30.0),
        (10, 10.0),
        (0.25, 0.25),
        (0, 0.0),
        (timedelta(minutes=2), 120.0),
        (timedelta(milliseconds=1), 0.001),
    ],
)
def test_parse_duration_accepts_the_documented_forms(value: object, seconds: float) -> None:
    result = parse_duration(value)  # type: ignore[arg-type]
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["abc", "", "30", "30 seconds", "1w", "1e3s", "s", "-1s", "30S", "1.s", True, False, None, [1], {"s": 1}],
)
def test_parse_duration_rejects_what_it_does_not_understand(value: object) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_duration(value, what="step 'charge' timeout")  # type: ignore[arg-type]
    message = str(info.value)
    assert "step 'charge' timeout" in message  # says where the bad value was written
    assert repr(value) in message
    assert "'30s'" in message  # shows an accepted form


@pytest.mark.parametrize("value", [-1, -0.001, timedelta(seconds=-1), float("nan")])
def test_parse_duration_rejects_negative_and_nan(value: object) -> None:
    with pytest.raises(DefinitionError, match="negative"):
        parse_duration(value)  # type: ignore[arg-type]


@given(n=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_parse_duration_scales_every_unit(n: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.integers(min_value=0, max_value=10**12))
def test_parse_duration_passes_non_negative_numbers_through(value: float) -> None:
    assert parse_duration(value) == float(value)


@given(st.timedeltas(min_value=timedelta(0)))
def test_parse_duration_of_a_timedelta_is_its_total_seconds(value: timedelta) -> None:
    assert parse_duration(value) == value.total_seconds()


# -- RetryPolicy -------------------------------------------------------------------------------


def test_default_policy_means_no_retry() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.initial, p.backoff, p.max_delay, p.jitter) == (1, 1.0, 2.0, 60.0, 0.1)


def test_policy_delays_accept_durations() -> None:
    p = RetryPolicy(initial="500ms", max_delay=timedelta(minutes=2))
    assert p.initial == 0.5
    assert p.max_delay == 120.0


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"backoff": 0.5}, "backoff"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"initial": 10, "max_delay": 5}, "max_delay"),
        ({"max_atempts": 3}, "max_atempts"),  # a typo is refused, not ignored
        ({"max_attempts": "many"}, "max_attempts"),
    ],
)
def test_bad_policy_is_a_definition_error(kwargs: dict[str, object], mentions: str) -> None:
    with pytest.raises(DefinitionError) as info:
        RetryPolicy(**kwargs)
    assert "RetryPolicy" in str(info.value)
    assert mentions in str(info.value)


@pytest.mark.parametrize("kwargs", [{"initial": -1}, {"initial": "abc"}, {"max_delay": "soon"}, {"max_delay": -5}])
def test_bad_policy_delay_is_a_definition_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(DefinitionError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    p = RetryPolicy(max_attempts=3)
    with pytest.raises(ValidationError):
        p.max_attempts = 5  # type: ignore[misc]
    assert p.max_attempts == 3


@pytest.mark.parametrize(("retries", "attempts"), [(None, 1), (0, 1), (1, 2), (3, 4), (10, 11)])
def test_of_counts_retries_not_attempts(retries: int | None, attempts: int) -> None:
    assert RetryPolicy.of(retries).max_attempts == attempts


def test_of_returns_a_policy_unchanged() -> None:
    p = RetryPolicy(max_attempts=7, initial=0.1)
    assert RetryPolicy.of(p) is p


@pytest.mark.parametrize("retries", [-1, True, 1.5, "3", [3]])
def test_of_rejects_other_values(retries: object) -> None:
    with pytest.raises(DefinitionError, match="retries="):
        RetryPolicy.of(retries)  # type: ignore[arg-type]


def test_canonical_is_plain_data_with_every_field() -> None:
    p = RetryPolicy(max_attempts=4, initial="2s", backoff=3, max_delay="1m", jitter=0)
    assert p.canonical() == {"max_attempts": 4, "initial": 2.0, "backoff": 3.0, "max_delay": 60.0, "jitter": 0.0}


# -- backoff_delay -----------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn, jitter: st.SearchStrategy[float] | None = None) -> RetryPolicy:
    initial = draw(st.floats(min_value=0, max_value=100))
    return RetryPolicy(
        max_attempts=draw(st.integers(min_value=1, max_value=100)),
        initial=initial,
        backoff=draw(st.floats(min_value=1, max_value=10)),
        max_delay=initial + draw(st.floats(min_value=0, max_value=1000)),
        jitter=draw(jitter if jitter is not None else st.floats(min_value=0, max_value=1)),
    )


# Up to 60 failures: far beyond the exponent at which any policy here reaches max_delay. (Larger
# counts overflow backoff ** n; see the report that accompanies these tests.)
failed_attempts = st.integers(min_value=1, max_value=60)
rands = st.floats(min_value=0, max_value=1, exclude_max=True)


def unjittered(policy: RetryPolicy, failed: int) -> float:
    return min(policy.max_delay, policy.initial * policy.backoff ** (failed - 1))


@settings(max_examples=100)
@given(policy=policies(), failed=failed_attempts, rand=rands)
def test_backoff_is_within_zero_and_max_delay(policy: RetryPolicy, failed: int, rand: float) -> None:
    delay = backoff_delay(policy, failed, rand)
    assert 0 <= delay <= policy.max_delay


@settings(max_examples=100)
@given(policy=policies(), failed=failed_attempts, rand=rands)
def test_backoff_is_within_jitter_bounds(policy: RetryPolicy, failed: int, rand: float) -> None:
    base = unjittered(policy, failed)
    delay = backoff_delay(policy, failed, rand)
    low = base * (1 - policy.jitter)
    high = min(policy.max_delay, base * (1 + policy.jitter))
    assert low - 1e-9 * max(1.0, base) <= delay <= high + 1e-9 * max(1.0, base)


@settings(max_examples=100)
@given(policy=policies(jitter=st.just(0.0)), failed=failed_attempts, rand=rands, other=rands)
def test_backoff_without_jitter_is_deterministic_and_non_decreasing(
    policy: RetryPolicy, failed: int, rand: float, other: float
) -> None:
    delay = backoff_delay(policy, failed, rand)
    assert delay == backoff_delay(policy, failed, other)  # no jitter: rand does not matter
    assert delay == pytest.approx(unjittered(policy, failed))
    assert delay <= backoff_delay(policy, failed + 1, rand)


@given(policy=policies(), failed=failed_attempts)
def test_backoff_at_the_middle_of_the_jitter_range_is_the_base(policy: RetryPolicy, failed: int) -> None:
    assert backoff_delay(policy, failed, 0.5) == pytest.approx(unjittered(policy, failed))


def test_backoff_doubles_from_initial_and_stops_at_max_delay() -> None:
    p = RetryPolicy(max_attempts=10, initial=1, backoff=2, max_delay=10, jitter=0)
    assert [backoff_delay(p, n, 0.3) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_backoff_jitter_spreads_both_ways() -> None:
    p = RetryPolicy(initial=10, max_delay=100, jitter=0.5)
    assert backoff_delay(p, 1, 0.0) == pytest.approx(5.0)
    assert backoff_delay(p, 1, 0.999999) == pytest.approx(15.0, rel=1e-5)


def test_backoff_zero_or_negative_failures_waits_initial() -> None:
    p = RetryPolicy(initial=3, max_delay=100, jitter=0)
    assert backoff_delay(p, 0, 0.5) == 3
    assert backoff_delay(p, 1, 0.5) == 3


def test_backoff_result_is_finite() -> None:
    p = RetryPolicy(max_attempts=100, initial=1, backoff=10, max_delay=3600, jitter=1)
    assert all(math.isfinite(backoff_delay(p, n, 0.99)) for n in range(1, 100))


def test_backoff_does_not_overflow_after_many_failures() -> None:
    assert backoff_delay(RetryPolicy(max_attempts=2000), 1100, 0.5) == 60.0
    assert backoff_delay(RetryPolicy(max_attempts=2000, initial=0, max_delay=0), 5000, 0.5) == 0.0


def test_infinite_duration_is_refused() -> None:
    with pytest.raises(DefinitionError, match="finite"):
        parse_duration(float("inf"))


def test_bad_delay_names_its_field() -> None:
    with pytest.raises(DefinitionError, match="initial"):
        RetryPolicy(initial=-1)
