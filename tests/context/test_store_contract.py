"""The relational store port: one suite, run against every adapter (SQLite, PostgreSQL)."""

import asyncio
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2

from services.context.store import SessionStore, open_store
from services.mesh.errors import MeshError
from tests.support.ports import free_port

USER, AGENT = conversation_pb2.TURN_ROLE_USER, conversation_pb2.TURN_ROLE_AGENT


def _turn(
    role: int, text: str, *actions: str, correlation: str = "c-1"
) -> conversation_pb2.ConversationTurn:
    return conversation_pb2.ConversationTurn(
        role=role,
        text=text,
        correlation_id=correlation,
        actions=[conversation_pb2.Action(type=kind) for kind in actions],
        metadata=conversation_pb2.TurnMetadata(intent="checkout_flow", tokens_used=12),
    )


async def test_tenant_configuration_round_trips(store: SessionStore, tenant: str) -> None:
    config = tenant_pb2.TenantConfig(
        tenant_id=tenant,
        name="Shop",
        language="es",
        allowed_actions=["create_order"],
        intents=[tenant_pb2.Intent(name="buy", examples=["quiero comprar"])],
        escalation_threshold=0.6,
    )
    assert await store.get_tenant(tenant) is None
    assert (await store.put_tenant(config)).created is True
    assert await store.get_tenant(tenant) == config
    config.name = "Shop 2"
    assert (await store.put_tenant(config)).created is False
    assert (await store.get_tenant(tenant)).name == "Shop 2"


async def test_a_session_is_created_once_even_by_racing_callers(
    store: SessionStore, tenant: str
) -> None:
    created = await asyncio.gather(
        *(store.create_session(tenant, "s-race", f"u{n}", 1) for n in range(10))
    )
    assert len({c.user_id for c in created}) == 1
    loaded = await store.load_session(tenant, "s-race", 10)
    assert loaded is not None
    assert (loaded.session_id, loaded.tenant_id, loaded.recent_turns) == ("s-race", tenant, [])
    assert loaded.created_at.seconds > 0
    assert await store.load_session(tenant, "missing", 10) is None


async def test_a_commit_stores_turns_actions_outbox_and_short_context(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    stored = await store.commit_turns(
        tenant,
        "s1",
        [_turn(USER, "quiero comprar"), _turn(AGENT, "hecho", "create_order", "payment_link")],
        conversation_pb2.ShortContext(summary="compra", last_intent="checkout_flow"),
    )
    assert [t.role for t in stored] == [USER, AGENT]
    assert all(t.turn_id and t.timestamp.seconds for t in stored)
    actions = stored[1].actions
    assert [a.status for a in actions] == [conversation_pb2.ACTION_STATUS_PENDING] * 2
    loaded = await store.load_session(tenant, "s1", 10)
    assert [t.text for t in loaded.recent_turns] == ["quiero comprar", "hecho"]
    assert loaded.recent_turns[1].actions == actions
    assert loaded.recent_turns[1].metadata.tokens_used == 12
    assert loaded.short_context.last_intent == "checkout_flow"
    outbox = await store.pending_outbox(tenant, 10)
    assert [(m.message_id, m.topic) for m in outbox] == [
        (actions[0].action_id, "action.create_order"),
        (actions[1].action_id, "action.payment_link"),
    ]
    assert {m.correlation_id for m in outbox} == {"c-1"}
    assert outbox[0].action.type == "create_order"


async def test_the_transcript_is_the_last_turns_oldest_first(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    for n in range(6):
        await store.commit_turns(tenant, "s1", [_turn(USER, f"m{n}")], None)
    assert [t.text for t in await store.transcript(tenant, "s1", 3)] == ["m3", "m4", "m5"]
    assert await store.transcript(tenant, "s1", 0) == []


async def test_fifty_concurrent_commits_keep_their_order_and_lose_nothing(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    await asyncio.gather(
        *(
            store.commit_turns(tenant, "s1", [_turn(USER, f"q{n}"), _turn(AGENT, f"a{n}")], None)
            for n in range(50)
        )
    )
    texts = [t.text for t in await store.transcript(tenant, "s1", 200)]
    assert len(texts) == 100
    pairs = list(zip(texts[::2], texts[1::2], strict=True))
    assert all(q[1:] == a[1:] and q[0] == "q" and a[0] == "a" for q, a in pairs)
    assert {q for q, _ in pairs} == {f"q{n}" for n in range(50)}


async def test_tenants_never_see_each_others_sessions_turns_or_outbox(
    store: SessionStore, tenant: str
) -> None:
    other = f"{tenant}-other"
    await store.create_session(tenant, "shared", "alice", 1)
    await store.create_session(other, "shared", "bob", 1)
    await store.commit_turns(tenant, "shared", [_turn(AGENT, "secret of A", "create_order")], None)
    mine, theirs = (
        await store.load_session(tenant, "shared", 10),
        await store.load_session(other, "shared", 10),
    )
    assert [t.text for t in mine.recent_turns] == ["secret of A"]
    assert theirs.recent_turns == []
    assert theirs.user_id == "bob"
    assert await store.pending_outbox(other, 10) == []
    assert len(await store.pending_outbox(tenant, 10)) == 1


async def test_a_commit_into_another_tenants_session_writes_nothing(
    store: SessionStore, tenant: str
) -> None:
    other = f"{tenant}-other"
    await store.create_session(other, "theirs", "bob", 1)
    with pytest.raises(MeshError) as refused:
        await store.commit_turns(tenant, "theirs", [_turn(USER, "intruder", "create_order")], None)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    assert await store.transcript(other, "theirs", 10) == []
    assert await store.load_session(tenant, "theirs", 1) is None


async def test_a_duplicate_turn_id_is_already_exists_and_the_whole_commit_is_undone(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    first = _turn(USER, "first")
    first.turn_id = f"turn-{tenant}"
    await store.commit_turns(tenant, "s1", [first], None)
    fresh = _turn(AGENT, "would be lost", "create_order")
    with pytest.raises(MeshError) as duplicate:
        await store.commit_turns(tenant, "s1", [fresh, first], None)
    assert duplicate.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert [t.text for t in await store.transcript(tenant, "s1", 10)] == ["first"]
    assert await store.pending_outbox(tenant, 10) == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_unreachable_store_is_unavailable_with_retry_advice(
    kind: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = (
        f"sqlite:///{blocker / 'context.db'}"
        if kind == "sqlite"
        else f"postgresql://app:secret-pw@127.0.0.1:{free_port()}/db"
    )
    with pytest.raises(MeshError) as failed:
        await open_store(url).open()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert failed.value.retry_after is not None
    assert "secret-pw" not in failed.value.message


async def test_a_stale_fencing_token_is_refused_and_writes_nothing(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    await store.commit_turns(tenant, "s1", [_turn(USER, "with lease 5")], None, fencing_token=5)
    with pytest.raises(MeshError) as stale:
        await store.commit_turns(
            tenant, "s1", [_turn(USER, "late, lease 3")], None, fencing_token=3
        )
    assert (stale.value.code, stale.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "STALE_FENCING_TOKEN",
    )
    await store.commit_turns(tenant, "s1", [_turn(USER, "lease 5 again")], None, fencing_token=5)
    await store.commit_turns(tenant, "s1", [_turn(USER, "lease 6")], None, fencing_token=6)
    texts = [t.text for t in await store.transcript(tenant, "s1", 10)]
    assert texts == ["with lease 5", "lease 5 again", "lease 6"]


async def test_turns_page_through_the_whole_transcript(store: SessionStore, tenant: str) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    await store.commit_turns(tenant, "s1", [_turn(USER, f"m{n}") for n in range(7)], None)
    first = await store.turns_after(tenant, "s1", 0, 3)
    rest = await store.turns_after(tenant, "s1", first[-1][0], 10)
    assert [t.text for _, t in first + rest] == [f"m{n}" for n in range(7)]
    assert await store.turns_after(f"{tenant}-other", "s1", 0, 10) == []


async def test_fold_candidates_fewer_than_a_minimum_are_none(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    assert await store.fold_candidates(tenant, "s1", keep_last=3, min_count=1) == []
    await store.commit_turns(
        tenant, "s1", [_turn(USER, f"m{n}", "create_order") for n in range(8)], None
    )
    candidates = await store.fold_candidates(tenant, "s1", keep_last=3)
    assert [t.text for _, t in candidates] == ["m0", "m1", "m2", "m3", "m4"]
    assert await store.fold_candidates(tenant, "s1", keep_last=3, min_count=6) == []
    assert await store.fold_candidates(tenant, "s1", keep_last=3, min_count=5) == candidates
    assert await store.fold_candidates(tenant, "s1", keep_last=3, min_count=0) == candidates
    assert await store.fold_candidates(tenant, "s1", keep_last=8, min_count=0) == []


async def test_old_turns_fold_into_the_summary_once(store: SessionStore, tenant: str) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    await store.commit_turns(
        tenant,
        "s1",
        [_turn(USER, f"m{n}") for n in range(8)],
        conversation_pb2.ShortContext(summary="earlier", last_intent="greeting"),
    )
    candidates = await store.fold_candidates(tenant, "s1", keep_last=3)
    assert [t.text for _, t in candidates] == ["m0", "m1", "m2", "m3", "m4"]
    through = candidates[-1][0]
    assert await store.apply_fold(tenant, "s1", through, "earlier\nuser: m0") is True
    assert await store.apply_fold(tenant, "s1", through, "a racer's summary") is False
    assert await store.fold_candidates(tenant, "s1", keep_last=3) == []
    loaded = await store.load_session(tenant, "s1", 3)
    assert loaded.short_context.summary == "earlier\nuser: m0"
    assert loaded.short_context.last_intent == "greeting"
    assert [t.text for t in loaded.recent_turns] == ["m5", "m6", "m7"]


async def test_the_short_context_is_updated_outside_a_turn(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    folded = conversation_pb2.ShortContext(summary="folded")
    assert await store.update_short_context(tenant, "s1", folded) is True
    entities = conversation_pb2.ShortContext(last_intent="address_fix")
    entities.entities.update({"address": "Calle Mayor 1"})
    assert await store.update_short_context(tenant, "s1", entities) is True
    loaded = await store.load_session(tenant, "s1", 5)
    assert loaded.short_context.last_intent == "address_fix"
    assert loaded.short_context.entities["address"] == "Calle Mayor 1"
    assert loaded.short_context.summary == "folded"
    assert await store.update_short_context(f"{tenant}-other", "s1", entities) is False


async def test_a_commit_never_overwrites_the_stored_summary(
    store: SessionStore, tenant: str
) -> None:
    await store.create_session(tenant, "s1", "u1", 1)
    await store.update_short_context(tenant, "s1", conversation_pb2.ShortContext(summary="folded"))
    stale = conversation_pb2.ShortContext(summary="a caller's stale copy", last_intent="buy")
    await store.commit_turns(tenant, "s1", [_turn(USER, "hola")], stale)
    loaded = await store.load_session(tenant, "s1", 5)
    assert (loaded.short_context.summary, loaded.short_context.last_intent) == ("folded", "buy")
