"""Rate counters: one suite over every adapter (in-process, Redis)."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from services.mesh.counters import RateCounters, open_counters
from services.mesh.errors import MeshError
from tests.support.ports import free_port


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[RateCounters]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    opened = open_counters(url)
    yield opened
    await opened.close()


@pytest.fixture
def key() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}:requests"


async def test_hits_within_the_limit_pass_and_the_next_is_refused(
    counters: RateCounters, key: str
) -> None:
    decisions = [await counters.hit(key, limit=3, window=60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.used for d in decisions] == [1, 2, 3, 3]
    assert 0 < decisions[-1].retry_after <= 60


async def test_a_refused_hit_consumes_nothing_and_the_window_resets(
    counters: RateCounters, key: str
) -> None:
    assert (await counters.hit(key, limit=100, window=0.3, cost=80)).allowed
    assert not (await counters.hit(key, limit=100, window=0.3, cost=30)).allowed
    assert (await counters.hit(key, limit=100, window=0.3, cost=20)).used == 100
    await asyncio.sleep(0.4)
    assert (await counters.hit(key, limit=100, window=0.3, cost=30)).used == 30


async def test_concurrent_hits_never_pass_the_limit(counters: RateCounters, key: str) -> None:
    decisions = await asyncio.gather(*(counters.hit(key, limit=10, window=60) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


async def test_keys_are_counted_apart(counters: RateCounters, key: str) -> None:
    assert (await counters.hit(key, limit=1, window=60)).allowed
    assert (await counters.hit(f"{key}-other", limit=1, window=60)).allowed


async def test_redis_down_is_unavailable_not_unlimited() -> None:
    counters = open_counters(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(MeshError) as failed:
            await counters.hit("k", limit=1, window=1)
    finally:
        await counters.close()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
