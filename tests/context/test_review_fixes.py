"""Edge cases found in review: ownerless sessions, audit numbers, NUL text, tiny durations."""

import asyncio
import math

import grpc
import pytest
from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2

from services.context.audit import AuditLog
from services.context.cache import MemoryCache
from services.context.consents import ConsentBook
from services.context.coordination import open_coordination
from services.context.guards import TurnGuards
from services.context.sessions import ContextBook
from services.context.store import AuditFilters, SessionStore
from services.mesh.errors import MeshError


async def _configured(store: SessionStore, tenant: str) -> ContextBook:
    await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=tenant, name=tenant))
    return ContextBook(store, MemoryCache(), ttl_seconds=900, recent_turns=5)


async def test_an_ownerless_session_is_claimed_by_its_first_user_and_erased_with_them(
    store: SessionStore, tenant: str
) -> None:
    book = await _configured(store, tenant)
    await book.get_or_create(tenant, "s-anon", "", 1)
    await book.get_or_create(tenant, "s-anon", "alice", 1)
    await book.commit_turn(
        tenant, "s-anon", [conversation_pb2.ConversationTurn(role=1, text="a")], None
    )
    with pytest.raises(MeshError) as taken:
        await book.get_or_create(tenant, "s-anon", "mallory", 1)
    assert taken.value.reason == "SESSION_OWNED_BY_ANOTHER_USER"
    erasure = await ConsentBook(store, MemoryCache(), AuditLog(store)).erase(tenant, "alice", "c")
    assert erasure.session_ids == ["s-anon"]


async def test_audit_payload_numbers_survive_every_store_unaltered(
    store: SessionStore, tenant: str
) -> None:
    log = AuditLog(store)
    payload = struct_pb2.Struct()
    payload.update({"delta": -0.0, "amount": 189.99, "nested": {"items": [1, -0.0, 2.5]}})
    await log.append(tenant, "price_check", payload)
    assert (await log.verify(tenant)).valid
    for bad in ({"x": math.nan}, {"x": math.inf}, {"note": "nul\x00here"}):
        refused = struct_pb2.Struct()
        refused.update(bad)
        with pytest.raises(MeshError) as invalid:
            await log.append(tenant, "price_check", refused)
        assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    entries, _ = await log.page(tenant, 10, "", AuditFilters())
    assert len(entries) == 1


async def test_nul_in_text_or_ids_is_invalid_argument_on_every_store(
    store: SessionStore, tenant: str
) -> None:
    book = await _configured(store, tenant)
    await book.get_or_create(tenant, "s1", "u1", 1)
    with pytest.raises(MeshError) as text:
        await book.commit_turn(
            tenant, "s1", [conversation_pb2.ConversationTurn(role=1, text="a\x00b")], None
        )
    assert [v.field for v in text.value.violations] == ["turns[0].text"]
    consents = ConsentBook(store, MemoryCache(), AuditLog(store))
    with pytest.raises(MeshError) as user:
        await consents.get(tenant, "al\x00ice")
    assert user.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_sub_millisecond_leases_round_up_instead_of_failing(
    backend: str, request: pytest.FixtureRequest, tenant: str
) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("redis_url")
    coordination = open_coordination(url)
    try:
        guards = TurnGuards(coordination.locks, coordination.idempotency)
        lease = await guards.acquire(tenant, "s1", ttl=0.0004, wait=0, time_left=None)
        claim = await guards.begin(tenant, "k", lease=0.0002, fingerprint="")
    finally:
        await coordination.close()
    assert lease.fencing_token > 0
    assert claim.claim_id


async def test_two_users_racing_for_an_ownerless_session_one_wins(
    store: SessionStore, tenant: str
) -> None:
    book = await _configured(store, tenant)
    await book.get_or_create(tenant, "s-race", "", 1)
    outcomes = await asyncio.gather(
        *(book.get_or_create(tenant, "s-race", user, 1) for user in ("alice", "bob")),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, MeshError)]
    assert len(winners) == 1
    assert [error.reason for error in losers] == ["SESSION_OWNED_BY_ANOTHER_USER"]
    owner = (await store.load_session(tenant, "s-race", 0)).user_id
    assert winners[0][0].user_id == owner
