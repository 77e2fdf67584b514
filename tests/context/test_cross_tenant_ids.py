"""Two tenants reusing the same ids never touch each other (SQLite's WHERE clauses are its only
guard; PostgreSQL adds row-level security)."""

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2

from services.context.audit import AuditLog
from services.context.cache import MemoryCache
from services.context.consents import ConsentBook
from services.context.store import SessionStore
from services.mesh.errors import MeshError

SENT = conversation_pb2.ACTION_STATUS_SENT


def _agent_turn(turn_id: str, action_id: str) -> conversation_pb2.ConversationTurn:
    return conversation_pb2.ConversationTurn(
        turn_id=turn_id,
        role=conversation_pb2.TURN_ROLE_AGENT,
        text=f"reply {turn_id}",
        actions=[conversation_pb2.Action(action_id=action_id, type="create_order")],
    )


async def _two_tenants(store: SessionStore, tenant: str) -> tuple[str, str]:
    a, b = tenant, f"{tenant}-b"
    for owner in (a, b):
        await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=owner, name=owner))
        await store.create_session(owner, "shared", "alice", 1)
        await store.commit_turns(owner, "shared", [_agent_turn("turn-1", "action-1")], None)
    return a, b


async def test_the_same_ids_in_two_tenants_are_two_rows(store: SessionStore, tenant: str) -> None:
    a, b = await _two_tenants(store, tenant)
    assert [t.turn_id for t in await store.transcript(b, "shared", 5)] == ["turn-1"]
    with pytest.raises(MeshError) as duplicate:
        await store.commit_turns(a, "shared", [_agent_turn("turn-1", "action-2")], None)
    assert duplicate.value.code == grpc.StatusCode.ALREADY_EXISTS


async def test_marking_and_status_lookups_stay_in_their_tenant(
    store: SessionStore, tenant: str
) -> None:
    a, b = await _two_tenants(store, tenant)
    assert await store.mark_outbox(a, ["action-1"], SENT, "") == [(a, "shared")]
    [mine] = await store.transcript(a, "shared", 1)
    [theirs] = await store.transcript(b, "shared", 1)
    assert mine.actions[0].status == SENT
    assert theirs.actions[0].status == conversation_pb2.ACTION_STATUS_PENDING
    assert [m.message_id for m in await store.pending_outbox(b, 10)] == ["action-1"]


async def test_folding_one_tenants_session_leaves_the_other_alone(
    store: SessionStore, tenant: str
) -> None:
    a, b = await _two_tenants(store, tenant)
    await store.commit_turns(a, "shared", [_agent_turn(f"t-{n}", f"x-{n}") for n in range(5)], None)
    [(through, _), *_] = (await store.fold_candidates(a, "shared", keep_last=1))[::-1]
    assert await store.apply_fold(a, "shared", through, "A's summary") is True
    other = await store.load_session(b, "shared", 5)
    assert other.short_context.summary == ""
    assert [t.turn_id for _, t in await store.fold_candidates(b, "shared", keep_last=0)] == [
        "turn-1"
    ]


async def test_erasing_a_user_in_one_tenant_keeps_the_same_user_id_elsewhere(
    store: SessionStore, tenant: str
) -> None:
    a, b = await _two_tenants(store, tenant)
    erasure = await ConsentBook(store, MemoryCache(), AuditLog(store)).erase(a, "alice", "c")
    assert erasure.session_ids == ["shared"]
    assert await store.load_session(a, "shared", 1) is None
    assert [t.text for t in (await store.load_session(b, "shared", 5)).recent_turns] == [
        "reply turn-1"
    ]
    assert [m.message_id for m in await store.pending_outbox(b, 10)] == ["action-1"]
