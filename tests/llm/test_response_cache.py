"""Response cache: one suite over the in-process LRU and Redis."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis import asyncio as redis_asyncio

from services.llm.response_cache import (
    MemoryResponseCache,
    RedisResponseCache,
    ResponseCache,
    open_response_cache,
    prompt_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Advance = Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def cache_and_advance(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ResponseCache, Advance]]:
    """A cache and a way to let `seconds` pass for it (the clock in process, real time in Redis)."""
    if request.param == "memory":
        clock = FakeClock()

        async def tick(seconds: float) -> None:
            clock.now += seconds

        cache: ResponseCache = MemoryResponseCache(max_entries=100, clock=clock)
        yield cache, tick
    else:
        cache = open_response_cache(request.getfixturevalue("redis_url"))
        yield cache, asyncio.sleep
    await cache.close()


@pytest.fixture
def cache(cache_and_advance: tuple[ResponseCache, Advance]) -> ResponseCache:
    return cache_and_advance[0]


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def test_a_stored_response_is_a_hit_and_others_miss(
    cache: ResponseCache, tenant: str
) -> None:
    key = prompt_key("what are your opening hours?")
    assert await cache.get(tenant, key) is None
    await cache.put(tenant, key, b"9 to 5", ttl_seconds=60)
    assert await cache.get(tenant, key) == b"9 to 5"
    assert await cache.get(tenant, prompt_key("something else")) is None
    await cache.put(tenant, key, b"8 to 6", ttl_seconds=60)
    assert await cache.get(tenant, key) == b"8 to 6"


async def test_entries_expire_after_their_ttl(
    cache_and_advance: tuple[ResponseCache, Advance], tenant: str
) -> None:
    cache, advance = cache_and_advance
    key = prompt_key("faq")
    await cache.put(tenant, key, b"answer", ttl_seconds=0.3)
    await advance(0.1)
    assert await cache.get(tenant, key) == b"answer"
    await advance(0.3)
    assert await cache.get(tenant, key) is None


async def test_tenants_never_share_an_entry(cache: ResponseCache, tenant: str) -> None:
    key = prompt_key("same prompt")
    await cache.put(tenant, key, b"for tenant one", ttl_seconds=60)
    other = f"{tenant}-2"
    assert await cache.get(other, key) is None
    await cache.put(other, key, b"for tenant two", ttl_seconds=60)
    assert await cache.get(tenant, key) == b"for tenant one"
    assert await cache.get(other, key) == b"for tenant two"


async def test_bad_tenants_keys_and_ttls_are_refused(cache: ResponseCache, tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        await cache.get("a:b", prompt_key("x"))
    with pytest.raises(ValueError, match="key"):
        await cache.get(tenant, "has spaces")
    with pytest.raises(ValueError, match="ttl"):
        await cache.put(tenant, prompt_key("x"), b"v", ttl_seconds=0)


async def test_the_lru_keeps_at_most_max_entries_evicting_the_least_recent() -> None:
    cache = MemoryResponseCache(max_entries=3, clock=FakeClock())
    for name in "abc":
        await cache.put("t", name, name.encode(), 60)
    assert await cache.get("t", "a") == b"a"
    await cache.put("t", "d", b"d", 60)
    assert len(cache) == 3
    assert await cache.get("t", "b") is None
    assert [await cache.get("t", k) for k in "acd"] == [b"a", b"c", b"d"]


async def test_redis_keeps_entries_under_the_tenant_with_a_ttl(redis_url: str, tenant: str) -> None:
    cache = open_response_cache(redis_url)
    raw = redis_asyncio.from_url(redis_url)
    key = prompt_key("hours")
    try:
        assert isinstance(cache, RedisResponseCache)
        await cache.put(tenant, key, b"9 to 5", ttl_seconds=30)
        name = f"metaagent:llm:response:{tenant}:{key}"
        assert await raw.get(name) == b"9 to 5"
        assert 29_000 < await raw.pttl(name) <= 30_000
    finally:
        await raw.aclose()
        await cache.close()


async def test_redis_down_is_a_miss_logged_once(
    caplog: pytest.LogCaptureFixture, tenant: str
) -> None:
    cache = open_response_cache("redis://127.0.0.1:1/0")
    try:
        with caplog.at_level(logging.INFO, "metaagent.llm.response_cache"):
            for _ in range(3):
                await cache.put(tenant, prompt_key("q"), b"a", ttl_seconds=60)
                assert await cache.get(tenant, prompt_key("q")) is None
    finally:
        await cache.close()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "q" not in caplog.records[0].getMessage().split()


def test_prompt_keys_are_canonical_hashes() -> None:
    key = prompt_key("system", "user text")
    assert key == prompt_key("system", "user text")
    assert len(key) == 64 and int(key, 16) >= 0
    assert prompt_key("ab", "c") != prompt_key("a", "bc")
    assert prompt_key("a", "b") != prompt_key("b", "a")
    assert prompt_key("") != prompt_key()


def test_urls_choose_the_adapter() -> None:
    assert isinstance(open_response_cache(""), MemoryResponseCache)
    assert isinstance(open_response_cache("memory://"), MemoryResponseCache)
    with pytest.raises(ValueError, match="scheme"):
        open_response_cache("sqlite:///x")
