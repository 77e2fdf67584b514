"""The outbox for the relay: pending messages, publish outcomes, statuses on the turns."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

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


async def test_the_backlog_counts_pending_messages_and_dates_the_oldest(
    store: SessionStore, tenant: str
) -> None:
    assert await store.outbox_backlog(tenant) == (0, None)
    before = datetime.now(UTC) - timedelta(seconds=5)
    order, link = await _with_actions(store, tenant, "create_order", "payment_link")
    await _with_actions(store, f"{tenant}-other", "create_ticket")
    pending, oldest = await store.outbox_backlog(tenant)
    assert pending == 2, "the other tenant's message is not this tenant's backlog"
    assert oldest is not None and before <= oldest <= datetime.now(UTC)
    await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-1")
    assert (await store.outbox_backlog(tenant))[0] == 2, "a claimed message is still pending"
    await store.mark_outbox(tenant, [order], PENDING, "broker timeout")
    await store.mark_outbox(tenant, [link], SENT, "")
    assert (await store.outbox_backlog(tenant))[0] == 1
    await store.mark_outbox(tenant, [order], FAILED, "dead-lettered")
    assert await store.outbox_backlog(tenant) == (0, None)


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
    assert (await relay_store.outbox_backlog(None))[0] >= 2
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


async def _actions_in_sessions(
    store: SessionStore, tenant: str, sessions: int, per_session: int
) -> dict[str, list[str]]:
    """`per_session` committed actions in each of `sessions` sessions, by session id."""
    ids: dict[str, list[str]] = {}
    for number in range(sessions):
        session = f"lease-{number}"
        await store.create_session(tenant, session, "u1", 1)
        for _ in range(per_session):
            turn = conversation_pb2.ConversationTurn(
                role=conversation_pb2.TURN_ROLE_AGENT,
                text="ok",
                actions=[conversation_pb2.Action(type="create_ticket")],
            )
            [stored] = await store.commit_turns(tenant, session, [turn], None)
            ids.setdefault(session, []).append(stored.actions[0].action_id)
    return ids


async def test_a_claim_hides_its_messages_and_their_sessions_from_other_claimants(
    store: SessionStore, tenant: str
) -> None:
    ids = await _actions_in_sessions(store, tenant, sessions=3, per_session=2)
    first = await store.pending_outbox(tenant, 3, lease_seconds=60, claimant="relay-a")
    # oldest first: both of lease-0's messages and the first of lease-1's
    assert [m.message_id for m in first] == [*ids["lease-0"], ids["lease-1"][0]]
    second = await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-b")
    assert [m.message_id for m in second] == ids["lease-2"], "lease-1 stays with relay-a"
    assert await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-c") == []
    listed = await store.pending_outbox(tenant, 10)
    assert len(listed) == 6, "a plain listing (no lease) still shows every pending message"
    again = await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-a")
    assert {m.message_id for m in again} == {*ids["lease-0"], *ids["lease-1"]}, (
        "a relay restarted under its own name takes its leases back, and the rest of them"
    )


async def test_marking_releases_a_lease(store: SessionStore, tenant: str) -> None:
    ids = await _actions_in_sessions(store, tenant, sessions=1, per_session=2)
    claimed = await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-a")
    assert len(claimed) == 2
    await store.mark_outbox(tenant, [ids["lease-0"][0]], SENT, "")
    await store.mark_outbox(tenant, [ids["lease-0"][1]], PENDING, "broker timeout")
    retried = await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-b")
    assert [(m.message_id, m.attempts) for m in retried] == [(ids["lease-0"][1], 1)]


async def test_an_expired_lease_lets_another_claimant_in(store: SessionStore, tenant: str) -> None:
    ids = await _actions_in_sessions(store, tenant, sessions=1, per_session=1)
    assert len(await store.pending_outbox(tenant, 10, lease_seconds=1, claimant="relay-a")) == 1
    assert await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-b") == []
    await asyncio.sleep(1.2)
    taken = await store.pending_outbox(tenant, 10, lease_seconds=60, claimant="relay-b")
    assert [m.message_id for m in taken] == ids["lease-0"]


async def test_concurrent_claims_never_share_a_message_or_split_a_session(
    store: SessionStore, tenant: str
) -> None:
    ids = await _actions_in_sessions(store, tenant, sessions=8, per_session=3)
    session_of = {mid: session for session, mids in ids.items() for mid in mids}
    claims = await asyncio.gather(
        *(
            store.pending_outbox(tenant, 5, lease_seconds=60, claimant=f"relay-{n}")
            for n in range(6)
        )
    )
    taken = [m.message_id for claim in claims for m in claim]
    assert len(taken) == len(set(taken)), "a message went to two claimants"
    owners: dict[str, set[int]] = {}
    for number, claim in enumerate(claims):
        for message in claim:
            owners.setdefault(session_of[message.message_id], set()).add(number)
    assert all(len(who) == 1 for who in owners.values()), owners
    for claim in claims:
        for session in {session_of[m.message_id] for m in claim}:
            mine = [m.message_id for m in claim if session_of[m.message_id] == session]
            assert mine == ids[session][: len(mine)], "a session's oldest messages come first"
