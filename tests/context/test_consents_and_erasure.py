"""Consent grant/revoke (at once, audited) and erasure of one user's data, on every store."""

import sqlite3

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import consent_pb2

from services.context.audit import AuditLog, user_reference
from services.context.cache import MemoryCache
from services.context.consents import ConsentBook
from services.context.sessions import ContextBook
from services.context.store import AuditFilters, SessionStore
from services.mesh.errors import MeshError

VOICE, LEARNING = consent_pb2.CONSENT_KIND_VOICE_RECORDING, consent_pb2.CONSENT_KIND_DATA_LEARNING


@pytest.fixture
def consents(store: SessionStore) -> ConsentBook:
    return ConsentBook(store, MemoryCache(), AuditLog(store))


async def test_consent_starts_absent_then_grant_and_revoke_apply_at_once(
    consents: ConsentBook, store: SessionStore, tenant: str
) -> None:
    absent = await consents.get(tenant, "alice")
    assert (absent.voice_recording_consent, absent.data_learning_consent) == (False, False)
    granted = await consents.grant(tenant, "alice", [VOICE, LEARNING], "web_form", "c-1")
    assert (granted.voice_recording_consent, granted.data_learning_consent) == (True, True)
    assert granted.consent_date.seconds > 0
    revoked = await consents.revoke(tenant, "alice", [VOICE], "c-2")
    assert (revoked.voice_recording_consent, revoked.data_learning_consent) == (False, True)
    assert revoked.revoked_date.seconds > 0
    now = await consents.get(tenant, "alice")
    assert (now.voice_recording_consent, now.data_learning_consent) == (False, True)
    everything = await consents.revoke(tenant, "alice", [], "c-3")
    assert (everything.voice_recording_consent, everything.data_learning_consent) == (False, False)
    entries, _ = await AuditLog(store).page(tenant, 10, "", AuditFilters())
    assert [e.action for e in entries] == ["consent_granted", "consent_revoked", "consent_revoked"]
    assert entries[0].payload["userRef"] == user_reference(tenant, "alice")
    assert entries[0].payload["source"] == "web_form"
    assert "alice" not in str(entries)


async def test_consent_of_another_tenant_is_not_visible(consents: ConsentBook, tenant: str) -> None:
    await consents.grant(tenant, "alice", [VOICE], "ivr_prompt", "c")
    other = await consents.get(f"{tenant}-other", "alice")
    assert other.voice_recording_consent is False


@pytest.mark.parametrize(
    ("user_id", "kinds", "field"),
    [
        ("", [VOICE], "user_id"),
        ("x" * 129, [VOICE], "user_id"),
        ("bob", [], "kinds"),
        ("bob", [consent_pb2.CONSENT_KIND_UNSPECIFIED], "kinds"),
    ],
)
async def test_bad_consent_requests_name_the_field(
    consents: ConsentBook, tenant: str, user_id: str, kinds: list[int], field: str
) -> None:
    with pytest.raises(MeshError) as refused:
        await consents.grant(tenant, user_id, kinds, "", "c")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == [field]


async def _converse(store: SessionStore, tenant: str, user: str, secret: str) -> None:
    book = ContextBook(store, MemoryCache(), ttl_seconds=60, recent_turns=5)
    await store.create_session(tenant, f"s-{user}", user, 1)
    entities = struct_pb2.Struct()
    entities.update({"email": f"{secret}@example.com"})
    await book.commit_turn(
        tenant,
        f"s-{user}",
        [
            conversation_pb2.ConversationTurn(role=1, text=f"mi secreto es {secret}"),
            conversation_pb2.ConversationTurn(
                role=2, text="ok", actions=[conversation_pb2.Action(type="create_order")]
            ),
        ],
        conversation_pb2.ShortContext(summary=f"habló de {secret}", entities=entities),
    )


async def _raw_dump(kind: str, url: str) -> str:
    """Every row of every tenant table, as text, read past the application's views."""
    tables = ("session_contexts", "conversation_turns", "outbox", "user_consents")
    if kind == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return repr([connection.execute(f"SELECT * FROM {t}").fetchall() for t in tables])
        finally:
            connection.close()
    superuser = await asyncpg.connect(url.replace("metaagent_context_test@", "postgres@"))
    try:
        return repr([await superuser.fetch(f"SELECT * FROM {t}") for t in tables])
    finally:
        await superuser.close()


async def test_erasure_leaves_no_text_or_entity_of_the_user(
    consents: ConsentBook, store: SessionStore, store_backend: tuple[str, str], tenant: str
) -> None:
    await _converse(store, tenant, "alice", "zafiro-alice")
    await _converse(store, tenant, "bob", "rubi-bob")
    await consents.grant(tenant, "alice", [VOICE], "web_form", "c")
    assert "zafiro-alice" in await _raw_dump(*store_backend)
    erasure = await consents.erase(tenant, "alice", "corr-erase")
    assert (erasure.session_ids, erasure.turns, erasure.consent) == (["s-alice"], 2, True)
    dump = await _raw_dump(*store_backend)
    assert "zafiro-alice" not in dump
    assert "rubi-bob" in dump
    assert await store.load_session(tenant, "s-alice", 5) is None
    assert (await consents.get(tenant, "alice")).voice_recording_consent is False
    again = await consents.erase(tenant, "alice", "corr-erase-2")
    assert (again.session_ids, again.turns, again.consent) == ([], 0, False)
    entries, _ = await AuditLog(store).page(tenant, 10, "", AuditFilters(action="user_erased"))
    assert entries[0].payload["turns"] == 2
    assert entries[0].correlation_id == "corr-erase"
    assert (await AuditLog(store).verify(tenant)).valid
