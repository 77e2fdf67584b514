"""ContextBook on the embedded SQLite store: cache first, store on a miss, one tenant at a time."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from metaagent.common.v1 import conversation_pb2, tenant_pb2

from services.context.cache import MemoryCache
from services.context.demo import demo_tenant
from services.context.sessions import ContextBook
from services.context.sqlite import SqliteStore
from services.context.store import open_store
from services.mesh.errors import MeshError


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "context.db")
    await store.open()
    await store.put_tenant(demo_tenant())
    acme = tenant_pb2.TenantConfig(tenant_id="acme", name="Acme", allowed_actions=["create_ticket"])
    await store.put_tenant(acme)
    yield store
    await store.close()


@pytest.fixture
def book(store: SqliteStore) -> ContextBook:
    return ContextBook(store, MemoryCache(), ttl_seconds=900, recent_turns=3)


def _turn(role: int, text: str, *actions: str) -> conversation_pb2.ConversationTurn:
    return conversation_pb2.ConversationTurn(
        role=role,
        text=text,
        correlation_id="corr-1",
        actions=[conversation_pb2.Action(type=kind) for kind in actions],
        metadata=conversation_pb2.TurnMetadata(intent="checkout_flow"),
    )


async def test_a_session_is_created_then_served_from_the_cache(book: ContextBook) -> None:
    context, created, cache_hit = await book.get_or_create("demo", "s1", "u1", 1)
    assert (created, cache_hit) == (True, False)
    assert (context.tenant_id, context.session_id, context.user_id) == ("demo", "s1", "u1")
    again, created, cache_hit = await book.get_or_create("demo", "s1", "u1", 1)
    assert (created, cache_hit) == (False, True)
    assert again == context


async def test_a_commit_refreshes_the_context_with_the_last_turns(book: ContextBook) -> None:
    await book.get_or_create("demo", "s1", "u1", 1)
    for n in range(3):
        await book.commit_turn(
            "demo",
            "s1",
            [
                _turn(conversation_pb2.TURN_ROLE_USER, f"q{n}"),
                _turn(conversation_pb2.TURN_ROLE_AGENT, f"a{n}", "create_order"),
            ],
            conversation_pb2.ShortContext(last_intent=f"intent-{n}"),
        )
    context, _, cache_hit = await book.get_or_create("demo", "s1", "u1", 1)
    assert cache_hit is False
    assert [t.text for t in context.recent_turns] == ["a1", "q2", "a2"]
    assert context.short_context.last_intent == "intent-2"
    agent = context.recent_turns[-1]
    assert agent.metadata.intent == "checkout_flow"
    assert agent.actions[0].type == "create_order"
    assert agent.actions[0].action_id
    assert agent.actions[0].status == conversation_pb2.ACTION_STATUS_PENDING


async def test_actions_get_outbox_rows_in_the_same_commit(
    book: ContextBook, store: SqliteStore
) -> None:
    await book.get_or_create("demo", "s1", "u1", 1)
    stored = await book.commit_turn(
        "demo",
        "s1",
        [_turn(conversation_pb2.TURN_ROLE_AGENT, "ok", "create_order", "payment_link")],
        None,
    )
    async with store.db.execute(
        "SELECT message_id, action_type, tenant_id, status FROM outbox ORDER BY action_type"
    ) as cursor:
        rows = await cursor.fetchall()
    ids = {a.action_id for a in stored[0].actions}
    assert {row[0] for row in rows} == ids
    assert [row[1] for row in rows] == ["create_order", "payment_link"]
    assert {row[2] for row in rows} == {"demo"}


async def test_sessions_with_the_same_id_in_two_tenants_stay_apart(book: ContextBook) -> None:
    await book.get_or_create("demo", "shared", "u1", 1)
    await book.get_or_create("acme", "shared", "u2", 1)
    await book.commit_turn("demo", "shared", [_turn(1, "demo secret")], None)
    acme, _ = await book.session("acme", "shared", 100)
    demo, transcript = await book.session("demo", "shared", 100)
    assert acme.user_id == "u2"
    assert acme.recent_turns == []
    assert [t.text for t in transcript] == ["demo secret"]
    assert demo.user_id == "u1"


async def test_no_session_is_created_for_an_unconfigured_tenant(
    book: ContextBook, store: SqliteStore
) -> None:
    with pytest.raises(MeshError) as refused:
        await book.get_or_create("ghost", "s1", "u1", 1)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    assert refused.value.reason == "TENANT_NOT_FOUND"
    assert await store.load_session("ghost", "s1", 0) is None


async def test_commit_refuses_unknown_sessions_and_empty_turns(book: ContextBook) -> None:
    with pytest.raises(MeshError) as unknown:
        await book.commit_turn("demo", "nope", [_turn(1, "x")], None)
    assert unknown.value.reason == "SESSION_NOT_FOUND"
    await book.get_or_create("demo", "s1", "u1", 1)
    with pytest.raises(MeshError) as empty:
        await book.commit_turn("demo", "s1", [], None)
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_tenant_configuration_is_validated_and_scoped(book: ContextBook) -> None:
    created = await book.put_tenant("newco", tenant_pb2.TenantConfig(name="NewCo"))
    assert created.created is True
    assert (await book.tenant("newco")).tenant_id == "newco"
    with pytest.raises(MeshError) as mismatch:
        await book.put_tenant("newco", tenant_pb2.TenantConfig(tenant_id="acme", name="x"))
    assert mismatch.value.violations[0].field == "tenant.tenant_id"
    with pytest.raises(MeshError) as invalid:
        await book.put_tenant("newco", tenant_pb2.TenantConfig(escalation_threshold=1.5))
    assert {v.field for v in invalid.value.violations} == {
        "tenant.name",
        "tenant.escalation_threshold",
    }
    replaced = await book.put_tenant("newco", tenant_pb2.TenantConfig(name="NewCo 2"))
    assert (replaced.created, replaced.revision) == (False, 2)
    assert (await book.tenant("newco")).name == "NewCo 2"


async def test_the_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    first = SqliteStore(path)
    await first.open()
    try:
        await first.put_tenant(demo_tenant())
        await first.create_session("demo", "s1", "u1", 1)
        await first.commit_turns("demo", "s1", [_turn(1, "hello")], None)
    finally:
        await first.close()
    second = SqliteStore(path)
    await second.open()
    try:
        context = await second.load_session("demo", "s1", 5)
    finally:
        await second.close()
    assert context is not None
    assert [t.text for t in context.recent_turns] == ["hello"]
    assert json_format.MessageToDict(context.recent_turns[0].metadata) == {
        "intent": "checkout_flow"
    }


async def test_concurrent_commits_on_one_connection_all_land(book: ContextBook) -> None:
    for session in ("s1", "s2"):
        await book.get_or_create("demo", session, "u1", 1)
    await asyncio.gather(
        *(book.commit_turn("demo", f"s{1 + n % 2}", [_turn(1, f"m{n}")], None) for n in range(20))
    )
    for session, parity in (("s1", 0), ("s2", 1)):
        _, transcript = await book.session("demo", session, 100)
        assert sorted(t.text for t in transcript) == sorted(
            f"m{n}" for n in range(20) if n % 2 == parity
        )


async def test_a_store_that_is_not_open_is_unavailable_with_retry_advice(tmp_path: Path) -> None:
    closed = SqliteStore(tmp_path / "never-opened.db")
    with pytest.raises(MeshError) as failed:
        await closed.load_session("demo", "s1", 5)
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert failed.value.retry_after == 1.0


async def test_a_duplicate_turn_id_is_already_exists(book: ContextBook) -> None:
    await book.get_or_create("demo", "s1", "u1", 1)
    turn = _turn(1, "once")
    turn.turn_id = "turn-fixed"
    await book.commit_turn("demo", "s1", [turn], None)
    with pytest.raises(MeshError) as duplicate:
        await book.commit_turn("demo", "s1", [turn], None)
    assert duplicate.value.code == grpc.StatusCode.ALREADY_EXISTS
    _, transcript = await book.session("demo", "s1", 10)
    assert [t.text for t in transcript] == ["once"]


@pytest.mark.parametrize("url", ["mongodb://app:pw@x/db", "redis://x", "context.db"])
def test_an_unknown_store_url_is_refused_not_guessed(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported CONTEXT_STORE_URL scheme") as refused:
        open_store(url)
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("turn", "field"),
    [
        (conversation_pb2.ConversationTurn(role=1, text="x" * 16_001), "turns[0].text"),
        (conversation_pb2.ConversationTurn(text="no role"), "turns[0].role"),
        (
            conversation_pb2.ConversationTurn(role=1, session_id="other", text="x"),
            "turns[0].session_id",
        ),
        (
            conversation_pb2.ConversationTurn(role=1, tenant_id="acme", text="x"),
            "turns[0].tenant_id",
        ),
    ],
)
async def test_bad_turns_are_refused_with_details_and_write_nothing(
    book: ContextBook, turn: conversation_pb2.ConversationTurn, field: str
) -> None:
    await book.get_or_create("demo", "s1", "u1", 1)
    with pytest.raises(MeshError) as refused:
        await book.commit_turn("demo", "s1", [_turn(1, "valid first"), turn], None)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == [field.replace("[0]", "[1]")]
    _, transcript = await book.session("demo", "s1", 10)
    assert transcript == []


async def test_the_transcript_pages_with_tokens(book: ContextBook) -> None:
    await book.get_or_create("demo", "s1", "u1", 1)
    for n in range(5):
        await book.commit_turn("demo", "s1", [_turn(1, f"m{n}")], None)
    first, token = await book.turns_page("demo", "s1", 2, "")
    second, token2 = await book.turns_page("demo", "s1", 2, token)
    third, token3 = await book.turns_page("demo", "s1", 2, token2)
    assert [t.text for t in first + second + third] == [f"m{n}" for n in range(5)]
    assert token3 == ""
    for size, bad_token in ((-1, ""), (2, "abc")):
        with pytest.raises(MeshError) as refused:
            await book.turns_page("demo", "s1", size, bad_token)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(MeshError) as missing:
        await book.turns_page("demo", "nope", 2, "")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_fencing_token_never_granted_is_refused_and_changes_nothing(
    store: SqliteStore,
) -> None:
    from services.context.locks import MemoryLocks

    locks = MemoryLocks()
    book = ContextBook(store, MemoryCache(), ttl_seconds=900, recent_turns=3, locks=locks)
    await book.get_or_create("demo", "s1", "u1", 1)
    lease = await locks.acquire("demo", "s1", ttl=5, wait=0)
    assert lease is not None
    with pytest.raises(MeshError) as forged:
        await book.commit_turn("demo", "s1", [_turn(1, "x")], None, fencing_token=10**18)
    assert forged.value.reason == "UNKNOWN_FENCING_TOKEN"
    await book.commit_turn("demo", "s1", [_turn(1, "holder")], None, lease.fencing_token)
    restarted = MemoryLocks()
    book_after_restart = ContextBook(
        store, MemoryCache(), ttl_seconds=900, recent_turns=3, locks=restarted
    )
    new_lease = await restarted.acquire("demo", "s1", ttl=5, wait=0)
    assert new_lease is not None
    await book_after_restart.commit_turn(
        "demo", "s1", [_turn(1, "after restart")], None, new_lease.fencing_token
    )
    _, transcript = await book_after_restart.session("demo", "s1", 10)
    assert [t.text for t in transcript] == ["holder", "after restart"]
