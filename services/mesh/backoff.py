"""Retrying calls to external providers (Azure OpenAI, OpenAI-compatible servers): how often, how
long to wait, and what the server asked for.

    policy = RetryPolicy(attempts=4)
    wait = policy.delay(attempt, retry_after(error.response.headers), rng)
    if policy.gives_up(attempt, advised, wait, correlation.current().time_remaining()):
        raise ...
    await sleep(wait)

`delay` is the server's advice when it gave one (`retry-after-ms`, then `Retry-After` in seconds
or as an HTTP date), otherwise exponential backoff with full jitter. `gives_up` ends the retries
when the attempts are used up, when the server asks for longer than `max_wait` (waiting that
long would outlive any caller, and a sibling deployment may answer now), or when the wait would
not end before the inbound call's deadline.
"""

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC

__all__ = ["RetryPolicy", "retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a request a provider could not serve."""

    attempts: int = 4
    """Tries per request, the first included."""
    base_delay: float = 0.5
    """Backoff before the first retry, doubled on each one (full jitter)."""
    max_delay: float = 8.0
    """Cap on one computed backoff."""
    max_wait: float = 20.0
    """Longest server-advised wait honoured; a server asking for more is given up on at once."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.max_wait < 0:
            raise ValueError("attempts must be >= 1 and delays >= 0")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The jittered wait before retry number `retry` (1-based): uniform in
        [0, min(max_delay, base_delay * 2 ** (retry - 1))]."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return rng.uniform(0.0, ceiling)

    def delay(self, attempt: int, advised: float | None, rng: random.Random) -> float:
        """The wait after failed attempt `attempt` (1-based): the server's advice when given,
        else `backoff(attempt)`."""
        if advised is not None:
            return max(advised, 0.0)
        return self.backoff(attempt, rng)

    def gives_up(
        self, attempt: int, advised: float | None, wait: float, remaining: float | None
    ) -> bool:
        """Whether to stop after failed attempt `attempt` instead of waiting `wait` seconds:
        the attempts are used up, the server advised more than `max_wait`, or `remaining`
        seconds (the inbound deadline; None = no deadline) end before the wait does."""
        return (
            attempt >= self.attempts
            or (advised is not None and advised > self.max_wait)
            or (remaining is not None and wait >= remaining)
        )


def retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said nothing
    readable): `retry-after-ms` (Azure OpenAI), then `Retry-After` as seconds or as an HTTP
    date (RFC 9110). Never negative; `inf` for an infinite or NaN value. Header names match
    case-insensitively. `now` is the wall clock an HTTP date is measured against."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
        return math.inf
    value = lowered.get("retry-after")
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322, not local time
            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - now(), 0.0)
    return None
