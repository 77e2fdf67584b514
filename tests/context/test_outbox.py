"""The outbox for the relay: pending messages, publish outcomes, statuses on the turns."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from metaagent.common.v1 import conversation_pb2

from services.context.store import SessionStore, open_store
from services.mesh.errors import MeshError
from tests.support.postgres import ThrowawayDatabase

PENDING, SENT, FAILED = (
    conversation_pb2.ACTION_STATUS_PENDING,
    conversation_pb2.ACTION_STATUS_SENT,
    conversation_pb2.ACTION_STATUS_FAILED,
)


async def _with_actions(store: SessionStore, tenant: str, *kinds: str) -> list[str]:
    await store.create_session(tenant, "s1", "u1", 1)
    turn = conversation_pb2.ConversationTurn(
        role=conversation_pb2.TURN_ROLE_AGENT,
        text="ok",
        actions=[conversation_pb2.Action(type=kind) for kind in kinds],
    )
    stored = await store.commit_turns(tenant, "s1", [turn], None)
    return [action.action_id for action in stored[0].actions]


async def test_publish_outcomes_move_pending_messages_and_show_on_the_turn(
    store: SessionStore, tenant: str
) -> None:
    order, link, ticket = await _with_actions(
        store, tenant, "create_order", "payment_link", "create_ticket"
    )
    assert len(await store.mark_outbox(tenant, [order], PENDING, "broker timeout")) == 1
    retried = {m.message_id: m for m in await store.pending_outbox(tenant, 10)}
    assert (retried[order].attempts, retried[order].last_error) == (1, "broker timeout")
    assert len(await store.mark_outbox(tenant, [order, link], SENT, "")) == 2
    assert await store.mark_outbox(tenant, [ticket, "no-such-id"], FAILED, "dead-lettered") == [
        (tenant, "s1")
    ]
    assert await store.mark_outbox(tenant, [order], FAILED, "too late") == [], "final is final"
    assert await store.pending_outbox(tenant, 10) == []
    [turn] = await store.transcript(tenant, "s1", 1)
    assert [a.status for a in turn.actions] == [SENT, SENT, FAILED]


async def test_a_tenant_scoped_mark_cannot_touch_another_tenants_messages(
    store: SessionStore, tenant: str
) -> None:
    [theirs] = await _with_actions(store, f"{tenant}-other", "create_order")
    assert await store.mark_outbox(tenant, [theirs], SENT, "") == []
    assert [m.message_id for m in await store.pending_outbox(f"{tenant}-other", 10)] == [theirs]


async def test_the_sqlite_relay_sweep_sees_every_tenant(tmp_path, tenant: str) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'context.db'}")
    await store.open()
    try:
        [a] = await _with_actions(store, tenant, "create_order")
        [b] = await _with_actions(store, f"{tenant}-b", "create_ticket")
        swept = await store.pending_outbox(None, 100)
        assert {(m.tenant_id, m.message_id) for m in swept} == {(tenant, a), (f"{tenant}-b", b)}
        assert len(await store.mark_outbox(None, [a, b], SENT, "")) == 2
    finally:
        await store.close()


@pytest.fixture
async def relay_store(postgres_database: ThrowawayDatabase) -> AsyncIterator[SessionStore]:
    store = open_store(postgres_database.app_dsn, postgres_database.relay_dsn)
    await store.open()
    yield store
    await store.close()


async def test_the_postgres_relay_sweeps_every_tenant_through_its_own_login(
    relay_store: SessionStore, postgres_database: ThrowawayDatabase
) -> None:
    a, b = (f"relay-{uuid.uuid4().hex[:8]}" for _ in range(2))
    [first] = await _with_actions(relay_store, a, "create_order")
    [second] = await _with_actions(relay_store, b, "create_ticket")
    swept = {(m.tenant_id, m.message_id) for m in await relay_store.pending_outbox(None, 1000)}
    assert {(a, first), (b, second)} <= swept
    assert len(await relay_store.mark_outbox(None, [first, second], SENT, "")) == 2
    assert [t.actions[0].status for t in await relay_store.transcript(a, "s1", 1)] == [SENT]
    without_relay = open_store(postgres_database.app_dsn)
    await without_relay.open()
    try:
        with pytest.raises(MeshError) as refused:
            await without_relay.pending_outbox(None, 10)
    finally:
        await without_relay.close()
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RELAY_ACCESS_NOT_CONFIGURED",
    )


async def test_the_relay_login_reaches_the_outbox_and_nothing_else(
    postgres_database: ThrowawayDatabase,
) -> None:
    relay = await asyncpg.connect(postgres_database.relay_dsn)
    try:
        for table in (
            "session_contexts",
            "conversation_turns",
            "tenants",
            "audit_logs",
            "user_consents",
        ):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await relay.fetch(f"SELECT * FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await relay.execute("UPDATE outbox SET payload = '{}'")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await relay.execute("DELETE FROM outbox")
    finally:
        await relay.close()
