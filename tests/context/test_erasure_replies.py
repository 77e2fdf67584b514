"""Erasure also forgets the replies stored for idempotent replay: a completed idempotency record
holds the turn's response (the customer's words echoed, the agent's answer) until the dedup
window ends, so an erased user's turns must not be replayable afterwards. On every store (the
turns name the keys) and every idempotency backend (memory, Redis)."""

from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.context.audit import AuditLog
from services.context.cache import MemoryCache
from services.context.consents import ConsentBook
from services.context.coordination import Coordination
from services.context.guards import TurnGuards
from services.context.idempotency import ClaimState
from services.context.redis_adapters import RedisIdempotency, connect
from services.context.sessions import ContextBook
from services.context.store import AuditFilters, SessionStore
from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.context_service import context_service
from tests.support.ports import free_port

TURNS = [
    ("alice", "c-alice-1", "mi tarjeta es 4111 1111 1111 1111"),
    ("alice", "c-alice-2", "vivo en la calle Mayor 3"),
    ("bob", "c-bob-1", "hola"),
]


async def _converse(
    store: SessionStore, coordination: Coordination, tenant: str
) -> tuple[ContextBook, TurnGuards]:
    """Each turn as the orchestrator runs it: claim, commit, store the reply."""
    await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=tenant, name=tenant))
    book = ContextBook(store, coordination.cache, ttl_seconds=60, recent_turns=5)
    guards = TurnGuards(coordination.locks, coordination.idempotency)
    for user, key, text in TURNS:
        await book.get_or_create(tenant, f"s-{user}", user, 1)
        claim = await guards.begin(tenant, key, 30, "fp")
        turns = [
            conversation_pb2.ConversationTurn(role=1, text=text, correlation_id=key),
            conversation_pb2.ConversationTurn(role=2, text=f"anotado: {text}", correlation_id=key),
        ]
        await book.commit_turn(tenant, f"s-{user}", turns, None)
        await guards.complete(tenant, key, claim.claim_id, f"anotado: {text}".encode(), 60)
    return book, guards


async def test_erasure_forgets_the_stored_replies_of_the_users_turns_only(
    store: SessionStore, coordination: Coordination, tenant: str
) -> None:
    _, guards = await _converse(store, coordination, tenant)
    before = await guards.begin(tenant, "c-alice-1", 30, "fp")
    assert before.state is ClaimState.COMPLETED and b"4111" in before.response
    consents = ConsentBook(store, coordination.cache, AuditLog(store))
    erasure = await consents.erase(tenant, "alice", "c-erase", replies=guards)
    assert erasure.correlation_ids == ["c-alice-1", "c-alice-2"]
    for key in ("c-alice-1", "c-alice-2"):
        again = await guards.begin(tenant, key, 30, "fp")
        assert (again.state, again.response) == (ClaimState.CLAIMED, b"")  # nothing to replay
    kept = await guards.begin(tenant, "c-bob-1", 30, "fp")
    assert (kept.state, kept.response) == (ClaimState.COMPLETED, b"anotado: hola")
    [entry] = await store.audit_entries(tenant, 0, 10, AuditFilters(action="user_erased"))
    assert entry.payload["replies"] == 2
    retried = await consents.erase(tenant, "alice", "c-erase-2", replies=guards)
    assert retried.correlation_ids == []


async def test_a_turn_in_flight_during_the_erasure_cannot_store_its_reply_after_it(
    store: SessionStore, coordination: Coordination, tenant: str
) -> None:
    book, guards = await _converse(store, coordination, tenant)
    claim = await guards.begin(tenant, "c-alice-3", 30, "fp")
    await book.commit_turn(
        tenant,
        "s-alice",
        [conversation_pb2.ConversationTurn(role=1, text="y mi DNI", correlation_id="c-alice-3")],
        None,
    )
    consents = ConsentBook(store, coordination.cache, AuditLog(store))
    await consents.erase(tenant, "alice", "c-erase", replies=guards)
    with pytest.raises(MeshError) as lost:
        await guards.complete(tenant, "c-alice-3", claim.claim_id, b"y mi DNI: anotado", 60)
    assert lost.value.reason == "IDEMPOTENCY_CLAIM_LOST"
    assert (await guards.begin(tenant, "c-alice-3", 30, "fp")).state is ClaimState.CLAIMED


async def test_forget_drops_any_state_of_the_given_keys_of_one_tenant(
    coordination: Coordination, tenant: str
) -> None:
    claims = coordination.idempotency
    done = await claims.begin(tenant, "done", 30, "")
    await claims.complete(tenant, "done", done.claim_id, b"reply", 60)
    await claims.begin(tenant, "pending", 30, "")
    other = await claims.begin(f"{tenant}-other", "done", 30, "")
    await claims.complete(f"{tenant}-other", "done", other.claim_id, b"theirs", 60)
    assert await claims.forget(tenant, []) == 0
    assert await claims.forget(tenant, ["done", "pending", "unknown", "done"]) == 2
    assert (await claims.begin(tenant, "done", 30, "")).state is ClaimState.CLAIMED
    assert (await claims.begin(tenant, "pending", 30, "")).state is ClaimState.CLAIMED
    theirs = await claims.begin(f"{tenant}-other", "done", 30, "")
    assert (theirs.state, theirs.response) == (ClaimState.COMPLETED, b"theirs")


async def test_with_the_idempotency_backend_down_nothing_is_erased(
    store: SessionStore, tenant: str
) -> None:
    await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=tenant, name=tenant))
    book = ContextBook(store, MemoryCache(), ttl_seconds=60, recent_turns=5)
    await book.get_or_create(tenant, "s1", "alice", 1)
    await book.commit_turn(
        tenant,
        "s1",
        [conversation_pb2.ConversationTurn(role=1, text="x", correlation_id="c")],
        None,
    )
    client = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        consents = ConsentBook(store, MemoryCache(), AuditLog(store))
        with pytest.raises(MeshError) as failed:
            await consents.erase(tenant, "alice", "c-erase", replies=RedisIdempotency(client))
    finally:
        await client.aclose()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert await store.load_session(tenant, "s1", 5) is not None
    assert await store.audit_entries(tenant, 0, 10, AuditFilters(action="user_erased")) == []


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_erase_user_over_grpc_leaves_nothing_to_replay(
    state_dir: Path, tmp_path: Path, request: pytest.FixtureRequest, cache: str
) -> None:
    cache_url = "memory://" if cache == "memory" else request.getfixturevalue("redis_url")
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    session = f"s-{tmp_path.name[-12:]}"
    key = f"corr-{cache}-{tmp_path.name[-12:]}"
    begin = pb.BeginIdempotentRequest(key=key, fingerprint="fp")
    async with context_service(state_dir, store_url=store_url, cache_url=cache_url) as reach:
        orchestrator, gateway = MeshClients(reach, "orchestrator"), MeshClients(reach, "gateway")
        call = correlation.CallContext(correlation_id=key, tenant_id="demo", session_id=session)
        try:
            with correlation.bound(call):
                context = orchestrator.context
                await context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id=session, user_id="alice", channel=1)
                )
                claimed = await context.BeginIdempotent(begin)
                turn = conversation_pb2.ConversationTurn(
                    role=1, text="mi tarjeta es 4111", correlation_id=key
                )
                await context.CommitTurn(pb.CommitTurnRequest(session_id=session, turns=[turn]))
                await context.CompleteIdempotent(
                    pb.CompleteIdempotentRequest(
                        completion=pb.IdempotencyCompletion(
                            key=key, claim_id=claimed.claim_id, response=b"tarjeta 4111 anotada"
                        )
                    )
                )
                replayed = await context.BeginIdempotent(begin)
                erased = await gateway.context.EraseUser(pb.EraseUserRequest(user_id="alice"))
                after = await context.BeginIdempotent(begin)
        finally:
            await orchestrator.close()
            await gateway.close()
    assert (replayed.state, replayed.response) == (
        pb.IDEMPOTENCY_STATE_COMPLETED,
        b"tarjeta 4111 anotada",
    )
    assert erased.turns_erased == 1
    assert (after.state, after.response) == (pb.IDEMPOTENCY_STATE_CLAIMED, b"")
