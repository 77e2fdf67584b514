"""The shared retry policy and Retry-After parsing (services/mesh/backoff.py)."""

import math
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from services.mesh.backoff import RetryPolicy, retry_after

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()


class Ceiling(random.Random):
    """An rng whose `uniform` always returns its upper bound, to read the jitter's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


# -- RetryPolicy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"attempts": 0}, {"base_delay": -1}, {"max_delay": -0.1}, {"max_wait": -5}],
)
def test_nonsense_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_the_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.base_delay, policy.max_delay, policy.max_wait) == (
        4,
        0.5,
        8.0,
        20.0,
    )


def test_the_backoff_ceiling_doubles_up_to_max_delay() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [policy.backoff(retry, Ceiling()) for retry in range(1, 6)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]


def test_the_backoff_is_full_jitter_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    rng = random.Random(7)
    waits = [policy.backoff(3, rng) for _ in range(500)]
    assert all(0.0 <= wait <= 4.0 for wait in waits)
    assert min(waits) < 0.5 and max(waits) > 3.5  # spread over the whole range
    seeded = policy.backoff(3, random.Random(1))
    assert policy.backoff(3, random.Random(1)) == seeded  # deterministic for a seeded rng


def test_delay_is_the_servers_advice_when_there_is_one() -> None:
    policy = RetryPolicy(base_delay=0.5)
    assert policy.delay(1, 2.5, Ceiling()) == 2.5
    assert policy.delay(1, -3.0, Ceiling()) == 0.0
    assert policy.delay(2, None, Ceiling()) == 1.0  # backoff(2)


def test_gives_up_when_the_attempts_are_used_up() -> None:
    policy = RetryPolicy(attempts=3)
    assert not policy.gives_up(1, None, 0.1, None)
    assert not policy.gives_up(2, None, 0.1, None)
    assert policy.gives_up(3, None, 0.1, None)


def test_gives_up_at_once_when_the_server_asks_for_more_than_max_wait() -> None:
    policy = RetryPolicy(attempts=5, max_wait=20)
    assert not policy.gives_up(1, 20.0, 20.0, None)  # the cap itself is honoured
    assert policy.gives_up(1, 20.5, 20.5, None)
    assert policy.gives_up(1, math.inf, math.inf, None)


def test_gives_up_when_the_wait_would_outlive_the_deadline() -> None:
    policy = RetryPolicy(attempts=5)
    assert not policy.gives_up(1, None, 0.4, 0.5)
    assert policy.gives_up(1, None, 0.5, 0.5)
    assert policy.gives_up(1, 2.0, 2.0, 1.0)
    assert policy.gives_up(1, None, 0.0, -0.1)  # the deadline has passed


# -- retry_after -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "5", "retry-after-ms": "300"}, 0.3),  # milliseconds win
        ({"retry-after": "5", "retry-after-ms": "soon"}, 5.0),  # unreadable ms: fall back
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "inf"}, math.inf),
        ({"retry-after": "nan"}, math.inf),
        ({"retry-after": "later"}, None),
        ({"retry-after": ""}, None),
        ({"Retry-After": "7"}, 7.0),  # any case
        ({"Retry-After-Ms": "20"}, 0.02),
    ],
)
def test_retry_after_seconds_and_milliseconds(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert later.endswith("GMT")
    assert retry_after({"retry-after": later}, now=lambda: NOW) == pytest.approx(90.0)


def test_a_date_in_the_past_means_now() -> None:
    earlier = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert retry_after({"retry-after": earlier}, now=lambda: NOW) == 0.0


def test_a_date_without_a_zone_is_utc() -> None:
    # RFC 5322's "-0000": parsedate_to_datetime gives a naive datetime, which is UTC.
    assert retry_after({"retry-after": "Sun, 01 Jun 2025 12:01:00 -0000"}, now=lambda: NOW) == (
        pytest.approx(60.0)
    )


def test_httpx_headers_are_read_as_they_come_from_the_sdk() -> None:
    headers = httpx.Headers({"Retry-After-Ms": "250", "Content-Type": "application/json"})
    assert retry_after(headers) == 0.25
