"""The replay cache port: in-process and Redis (`SET NX EX`) adapters, and fail-closed."""

import json
import uuid
from pathlib import Path

import pytest
from redis import asyncio as redis_asyncio

from gateway.replay import (
    KEY_PREFIX,
    MemoryReplayCache,
    RedisReplayCache,
    ReplayCacheUnavailable,
    open_replay_cache,
)
from tests.gateway.test_process_api import SEED_REQUEST
from tests.gateway.test_security import secure_gateway
from tests.support.ports import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_cache_accepts_a_key_once_within_its_window() -> None:
    clock = Clock()
    cache = MemoryReplayCache(clock)
    assert await cache.first_use("crm:a", 10)
    assert not await cache.first_use("crm:a", 10)
    assert await cache.first_use("crm:b", 20)
    clock.now += 10
    assert await cache.first_use("crm:a", 10)  # its window has passed
    assert not await cache.first_use("crm:b", 20)
    clock.now += 100
    assert await cache.first_use("crm:c", 5)
    assert len(cache) == 1  # expired keys are forgotten
    await cache.close()
    assert len(cache) == 0


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_redis_cache_accepts_a_key_once_and_expires_it(redis_url: str, key: str) -> None:
    cache = open_replay_cache(redis_url)
    assert isinstance(cache, RedisReplayCache)
    inspector = redis_asyncio.from_url(redis_url)
    try:
        assert await cache.first_use(key, 120)
        assert not await cache.first_use(key, 120)
        assert 0 < await inspector.ttl(KEY_PREFIX + key) <= 120
        await inspector.delete(KEY_PREFIX + key)  # as if its window had passed
        assert await cache.first_use(key, 120)
    finally:
        await inspector.delete(KEY_PREFIX + key)
        await inspector.aclose()
        await cache.close()


async def test_an_unreachable_redis_fails_closed() -> None:
    cache = open_replay_cache(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ReplayCacheUnavailable):
            await cache.first_use("crm:x", 10)
    finally:
        await cache.close()


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported replay cache URL"):
        open_replay_cache("memcached://127.0.0.1")
    assert isinstance(open_replay_cache("memory://"), MemoryReplayCache)


async def test_replicas_sharing_redis_refuse_a_replay_sent_to_the_other(
    state_dir: Path, redis_url: str
) -> None:
    tenant = f"t{uuid.uuid4().hex[:12]}"
    clients = {"crm": {"secret": "r" * 40, "tenantId": tenant}}
    raw = json.dumps({**SEED_REQUEST, "tenantId": tenant}).encode()
    overrides = {"hmac_clients": clients, "replay_cache_url": redis_url}
    async with (
        secure_gateway(state_dir, **overrides) as first,
        secure_gateway(state_dir, **overrides) as second,
    ):
        headers = first.signed(raw, secret=b"r" * 40)
        assert (await first.process(headers, raw)).status_code == 200
        problem = await second.refused(await second.process(headers, raw), 401)
        assert problem["detail"] == "the signature was already used"
