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
from gateway.signatures import sign
from tests.gateway.test_process_api import SEED_REQUEST
from tests.gateway.test_security import secure_gateway
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.ports import free_port
from tests.support.public_api import public_api_over


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


OPS_SECRET = uuid.uuid4().hex * 2  # of this run only: the replay cache in Redis outlives it
OPS = {"ops": {"secret": OPS_SECRET, "tenantId": "demo", "role": "tenant-admin"}}
VERIFY = "/v2/tenants/demo/audit/verify"
ERASE = "/v2/tenants/demo/users/user-c"


async def test_a_v2_signature_is_not_replayed_on_another_route_or_replica(
    mesh: InProcessMesh, redis_url: str
) -> None:
    """The review's case: a signature made for GET …/audit/verify, sent again as DELETE
    …/users/… (erasure) to a second replica. With v2 it signs the method and the path, and the
    replicas share the replay cache."""
    overrides = {"hmac_clients": OPS, "replay_cache_url": redis_url}
    signed = {"X-Client-Id": "ops"}
    signed["X-Signature"] = sign(OPS_SECRET.encode(), b"", method="GET", target=VERIFY)
    async with (
        public_api_over(mesh, **overrides) as one,
        public_api_over(mesh, **overrides) as two,
    ):
        legit = await one.client.get(VERIFY, headers=signed)
        assert legit.status_code == 200, legit.text
        erase = await two.client.delete(ERASE, headers=signed)
        assert erase.status_code == 401, erase.text
        assert erase.headers["content-type"] == "application/problem+json"
        assert erase.json()["detail"] == "the signature does not match the request"
        again = await two.client.get(VERIFY, headers=signed)
        assert again.status_code == 401
        assert again.json()["detail"] == "the signature was already used"


async def test_with_v2_required_the_reviews_v1_replay_is_refused(
    mesh: InProcessMesh, redis_url: str
) -> None:
    overrides = {"hmac_clients": OPS, "replay_cache_url": redis_url, "hmac_require_v2": True}
    v1 = {"X-Client-Id": "ops", "X-Signature": sign(OPS_SECRET.encode(), b"")}
    async with public_api_over(mesh, **overrides) as one:
        for method, path in (("GET", VERIFY), ("DELETE", ERASE)):
            reply = await one.client.request(method, path, headers=v1)
            assert reply.status_code == 401, reply.text
            assert "requires a v2 signature" in reply.json()["detail"]


async def test_a_v1_signature_replayed_to_another_replica_is_refused(
    mesh: InProcessMesh, redis_url: str
) -> None:
    """v1 (kept for existing clients) signs no route: only the shared replay cache stops the
    same empty-body signature from erasing a user through another replica."""
    overrides = {"hmac_clients": OPS, "replay_cache_url": redis_url}
    v1 = {"X-Client-Id": "ops", "X-Signature": sign(OPS_SECRET.encode(), b"")}
    async with (
        public_api_over(mesh, **overrides) as one,
        public_api_over(mesh, **overrides) as two,
    ):
        assert (await one.client.get(VERIFY, headers=v1)).status_code == 200
        erase = await two.client.delete(ERASE, headers=v1)
        assert erase.status_code == 401, erase.text
        assert erase.json()["detail"] == "the signature was already used"
