"""Retry policies and the pure backoff computation; durations as users write them."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import DefinitionError

__all__ = ["Duration", "RetryPolicy", "backoff_delay", "parse_duration"]

Duration = float | int | str | timedelta
"""Seconds as a number, a ``timedelta``, or a string such as ``"500ms"``, ``"30s"``, ``"1m"``, ``"2h"``, ``"1d"``."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Duration, *, what: str = "duration") -> float:
    """Return ``value`` in seconds.

    Raises:
        DefinitionError: the value is negative or not understood; the message shows the accepted forms.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):  # bool is an int; True seconds is a mistake
        raise DefinitionError(f"{what}: {value!r} is not a duration; write seconds, a timedelta, or '30s', '1m', '2h'")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise DefinitionError(
                f"{what}: {value!r} is not a duration; write a number and a unit (ms, s, m, h, d), e.g. '30s' or '1m'"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise DefinitionError(f"{what}: {value!r} is not a duration; write seconds, a timedelta, or '30s', '1m', '2h'")
    if not math.isfinite(seconds) or seconds < 0:
        raise DefinitionError(f"{what}: {value!r} must be a finite duration, not negative")
    return seconds


class RetryPolicy(BaseModel):
    """How often a failing step is tried, and how long to wait in between.

    A frozen value, validated when built: a bad policy fails where the step is defined.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=1, ge=1, description="Attempts in all, the first included. Default 1: no retry.")
    initial: float = Field(default=1.0, ge=0, description="Delay before the second attempt, in seconds. Default 1s.")
    backoff: float = Field(default=2.0, ge=1.0, description="Factor applied to the delay after each retry. Default 2.")
    max_delay: float = Field(default=60.0, ge=0, description="Upper bound of one delay, in seconds. Default 1m.")
    jitter: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Each delay is scaled by a random factor in [1-jitter, 1+jitter]."
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in exc.errors())
            raise DefinitionError(f"invalid RetryPolicy: {problems}") from None

    @field_validator("initial", "max_delay", mode="before")
    @classmethod
    def _duration(cls, value: Any, info: ValidationInfo) -> float:
        return parse_duration(value, what=f"RetryPolicy {info.field_name}")

    @model_validator(mode="after")
    def _bounds(self) -> RetryPolicy:
        if self.max_delay < self.initial:
            raise ValueError(f"max_delay ({self.max_delay:g}s) is shorter than initial ({self.initial:g}s)")
        return self

    @classmethod
    def of(cls, retries: RetryPolicy | int | None) -> RetryPolicy:
        """Normalise the ``retries=`` argument of ``@step``: ``retries=3`` means three retries, four attempts."""
        if retries is None:
            return cls()
        if isinstance(retries, RetryPolicy):
            return retries
        if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
            return cls(max_attempts=retries + 1)
        raise DefinitionError(f"retries={retries!r}: pass a RetryPolicy(...) or a number of retries (0 or more)")

    def canonical(self) -> dict[str, Any]:
        """The policy as plain data, for the definition hash."""
        return self.model_dump()


def backoff_delay(policy: RetryPolicy, failed_attempts: int, rand: float) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure. Pure: the caller supplies randomness.

    Args:
        policy: the step's retry policy.
        failed_attempts: how many attempts have failed so far (1 after the first failure).
        rand: a number in [0, 1) that picks the jitter.
    """
    try:
        grown = policy.initial * policy.backoff ** max(0, failed_attempts - 1)
    except OverflowError:  # beyond the float range: the cap applies
        grown = math.inf if policy.initial > 0 else 0.0
    base = min(policy.max_delay, grown)
    factor = 1.0 + policy.jitter * (2.0 * rand - 1.0)
    return max(0.0, min(policy.max_delay, base * factor))
