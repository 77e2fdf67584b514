"""Rate counters: one suite over every adapter (in-process, Redis)."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from services.mesh.counters import (
    SWEEP_ABOVE,
    SWEEP_EVERY,
    MemoryCounters,
    RateCounters,
    open_counters,
)
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


async def test_a_hit_of_cost_zero_reads_the_window_without_counting(
    counters: RateCounters, key: str
) -> None:
    empty = await counters.hit(key, limit=2, window=60, cost=0)
    assert (empty.allowed, empty.used) == (True, 0)
    for _ in range(2):
        await counters.hit(key, limit=2, window=60)
    full = await counters.hit(key, limit=2, window=60, cost=0)
    assert full.used >= 2, "used >= limit: the next hit would be refused"
    assert 0 < full.retry_after <= 60
    assert not (await counters.hit(key, limit=2, window=60)).allowed
    assert (await counters.hit(key, limit=2, window=60, cost=0)).used == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_counters_forget_expired_windows() -> None:
    clock = Clock()
    counters = MemoryCounters(clock)
    for n in range(10 * SWEEP_ABOVE):  # one window per subject, each used once, ~600 open
        assert (await counters.hit(f"gateway:client:t:bearer:user-{n}", 5, 60)).allowed
        clock.now += 0.1
    assert len(counters) <= SWEEP_ABOVE + 1, "full of windows long expired"
    clock.now += 61  # every window has ended
    for _ in range(SWEEP_EVERY):
        await counters.hit("gateway:tenant:t", 10**6, 60)
    assert len(counters) == 1
    assert (await counters.hit("gateway:tenant:t", 10**6, 60)).used == SWEEP_EVERY + 1


async def test_memory_counters_keep_the_windows_still_open() -> None:
    clock = Clock()
    counters = MemoryCounters(clock)
    for n in range(SWEEP_ABOVE + 10):
        await counters.hit(f"k{n}", 1, 3600)
    assert len(counters) == SWEEP_ABOVE + 10  # nothing expired, nothing dropped
    for n in range(SWEEP_ABOVE + 10):
        assert not (await counters.hit(f"k{n}", 1, 3600)).allowed, "a window was forgotten"


async def test_redis_down_is_unavailable_not_unlimited() -> None:
    counters = open_counters(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(MeshError) as failed:
            await counters.hit("k", limit=1, window=1)
    finally:
        await counters.close()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
