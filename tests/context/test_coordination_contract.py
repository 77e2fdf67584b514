"""Cache, session locks and idempotency claims: one suite, every adapter (memory, Redis)."""

import asyncio

import grpc
import pytest

from services.context.coordination import Coordination
from services.context.idempotency import ClaimState
from services.mesh.errors import MeshError


async def test_the_cache_stores_expires_and_deletes(
    coordination: Coordination, tenant: str
) -> None:
    cache = coordination.cache
    await cache.set(f"{tenant}:a", b"alpha", 60)
    await cache.set(f"{tenant}:b", b"beta", 1)
    assert await cache.get(f"{tenant}:a") == b"alpha"
    await cache.delete(f"{tenant}:a")
    assert await cache.get(f"{tenant}:a") is None
    await asyncio.sleep(1.2)
    assert await cache.get(f"{tenant}:b") is None


async def test_a_lease_excludes_others_until_released(
    coordination: Coordination, tenant: str
) -> None:
    locks = coordination.locks
    first = await locks.acquire(tenant, "s1", ttl=5, wait=0)
    assert first is not None
    assert await locks.acquire(tenant, "s1", ttl=5, wait=0.1) is None
    assert await locks.acquire(f"{tenant}-other", "s1", ttl=5, wait=0) is not None
    assert await locks.release(tenant, "s1", first.fencing_token) is True
    second = await locks.acquire(tenant, "s1", ttl=5, wait=0)
    assert second is not None
    assert second.fencing_token > first.fencing_token


async def test_racing_callers_never_both_hold_the_lease(
    coordination: Coordination, tenant: str
) -> None:
    locks = coordination.locks
    holding, most, tokens = 0, 0, []

    async def worker() -> None:
        nonlocal holding, most
        lease = await locks.acquire(tenant, "s1", ttl=5, wait=10)
        assert lease is not None
        holding += 1
        most = max(most, holding)
        tokens.append(lease.fencing_token)
        await asyncio.sleep(0.005)
        holding -= 1
        assert await locks.release(tenant, "s1", lease.fencing_token)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert most == 1
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 20


async def test_an_expired_lease_passes_on_and_its_stale_token_is_refused(
    coordination: Coordination, tenant: str
) -> None:
    locks = coordination.locks
    stale = await locks.acquire(tenant, "s1", ttl=0.2, wait=0)
    await asyncio.sleep(0.3)
    fresh = await locks.acquire(tenant, "s1", ttl=5, wait=0)
    assert stale is not None
    assert fresh is not None
    assert fresh.fencing_token > stale.fencing_token
    assert await locks.release(tenant, "s1", stale.fencing_token) is False
    assert await locks.acquire(tenant, "s1", ttl=5, wait=0) is None


async def test_one_hundred_concurrent_claims_one_proceeds_the_rest_replay(
    coordination: Coordination, tenant: str
) -> None:
    claims = coordination.idempotency
    first_wave = await asyncio.gather(
        *(claims.begin(tenant, "corr-1", lease=30, fingerprint="fp") for _ in range(100))
    )
    winners = [c for c in first_wave if c.state is ClaimState.CLAIMED]
    assert len(winners) == 1
    assert {c.state for c in first_wave} == {ClaimState.CLAIMED, ClaimState.IN_FLIGHT}
    assert await claims.complete(tenant, "corr-1", winners[0].claim_id, b"first answer", 60)
    second_wave = await asyncio.gather(
        *(claims.begin(tenant, "corr-1", lease=30, fingerprint="fp") for _ in range(100))
    )
    assert {(c.state, c.response) for c in second_wave} == {(ClaimState.COMPLETED, b"first answer")}


async def test_a_key_reused_for_another_request_is_already_exists(
    coordination: Coordination, tenant: str
) -> None:
    claims = coordination.idempotency
    claim = await claims.begin(tenant, "k", lease=30, fingerprint="request-a")
    for _ in range(2):
        with pytest.raises(MeshError) as reused:
            await claims.begin(tenant, "k", lease=30, fingerprint="request-b")
        assert reused.value.code == grpc.StatusCode.ALREADY_EXISTS
        await claims.complete(tenant, "k", claim.claim_id, b"done", 60)


async def test_abandoned_or_expired_claims_can_be_taken_again(
    coordination: Coordination, tenant: str
) -> None:
    claims = coordination.idempotency
    first = await claims.begin(tenant, "k", lease=30, fingerprint="")
    assert await claims.abandon(tenant, "k", "not-the-claim") is False
    assert await claims.abandon(tenant, "k", first.claim_id) is True
    second = await claims.begin(tenant, "k", lease=0.2, fingerprint="")
    assert second.state is ClaimState.CLAIMED
    await asyncio.sleep(0.3)
    third = await claims.begin(tenant, "k", lease=30, fingerprint="")
    assert third.state is ClaimState.CLAIMED
    assert await claims.complete(tenant, "k", second.claim_id, b"late", 60) is False
    assert await claims.complete(tenant, "k", third.claim_id, b"ok", 60) is True
    assert await claims.abandon(tenant, "k", third.claim_id) is False


async def test_claims_of_two_tenants_never_meet(coordination: Coordination, tenant: str) -> None:
    claims = coordination.idempotency
    mine = await claims.begin(tenant, "corr-1", lease=30, fingerprint="a")
    theirs = await claims.begin(f"{tenant}-other", "corr-1", lease=30, fingerprint="b")
    assert (mine.state, theirs.state) == (ClaimState.CLAIMED, ClaimState.CLAIMED)


async def test_tokens_keep_growing_when_the_counter_is_lost(
    coordination: Coordination, tenant: str, request: pytest.FixtureRequest
) -> None:
    locks = coordination.locks
    first = await locks.acquire(tenant, "s1", ttl=5, wait=0)
    assert first is not None
    await locks.release(tenant, "s1", first.fencing_token)
    if request.node.callspec.params["coordination"] == "memory":
        from services.context.locks import MemoryLocks

        locks = MemoryLocks()
    else:
        from redis import asyncio as redis_asyncio

        admin = redis_asyncio.from_url(request.getfixturevalue("redis_url"))
        await admin.delete(f"metaagent:fence:{{{tenant}:s1}}")
        await admin.aclose()
    second = await locks.acquire(tenant, "s1", ttl=5, wait=0)
    assert second is not None
    assert second.fencing_token > first.fencing_token
