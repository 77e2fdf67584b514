"""Page tokens of ListTurns and ListAudit: only what the service could have issued (the decimal
position of a page's last item, within int64) is taken; anything else is INVALID_ARGUMENT
naming page_token, on every store, and never reaches a store driver (which would make it an
INTERNAL error)."""

from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.context.audit import AuditLog
from services.context.cache import MemoryCache
from services.context.sessions import ContextBook
from services.context.store import AuditFilters, SessionStore
from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.context_service import context_service

MALFORMED = [
    "9223372036854775808",  # int64 + 1
    "99999999999999999999999999999999",  # far beyond int64
    "00000000000000000001",  # 20 digits
    "-1",
    "+1",
    " 1",
    "1 ",
    "1\n",
    "1e3",
    "0x10",
    "1.0",
    "²",  # a digit to str.isdigit, not to int()
    "١٢",  # Arabic-Indic digits: int() takes them, no token of ours has them
    "abc",
]
BEYOND_THE_END = ["2147483648", "9223372036854775807"]  # past int32, and int64's maximum


async def _session(store: SessionStore, tenant: str) -> ContextBook:
    await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=tenant, name=tenant))
    book = ContextBook(store, MemoryCache(), ttl_seconds=60, recent_turns=5)
    await book.get_or_create(tenant, "s1", "u1", 1)
    await book.commit_turn(
        tenant, "s1", [conversation_pb2.ConversationTurn(role=1, text=t) for t in "abc"], None
    )
    return book


@pytest.mark.parametrize("token", MALFORMED)
async def test_a_malformed_turns_token_names_page_token(
    store: SessionStore, tenant: str, token: str
) -> None:
    book = await _session(store, tenant)
    with pytest.raises(MeshError) as refused:
        await book.turns_page(tenant, "s1", 2, token)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == ["page_token"]


@pytest.mark.parametrize("token", MALFORMED)
async def test_a_malformed_audit_token_names_page_token(
    store: SessionStore, tenant: str, token: str
) -> None:
    log = AuditLog(store)
    await log.append(tenant, "checked", struct_pb2.Struct())
    with pytest.raises(MeshError) as refused:
        await log.page(tenant, 10, token, AuditFilters())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == ["page_token"]


async def test_a_bad_page_size_and_token_are_named_together(
    store: SessionStore, tenant: str
) -> None:
    book = await _session(store, tenant)
    with pytest.raises(MeshError) as turns:
        await book.turns_page(tenant, "s1", -1, "-1")
    with pytest.raises(MeshError) as audit:
        await AuditLog(store).page(tenant, -1, "-1", AuditFilters())
    for refused in (turns, audit):
        assert [v.field for v in refused.value.violations] == ["page_size", "page_token"]


@pytest.mark.parametrize("token", BEYOND_THE_END)
async def test_a_well_formed_token_past_the_end_is_an_empty_last_page(
    store: SessionStore, tenant: str, token: str
) -> None:
    book = await _session(store, tenant)
    assert await book.turns_page(tenant, "s1", 2, token) == ([], "")
    assert await AuditLog(store).page(tenant, 10, token, AuditFilters()) == ([], "")
    first, following = await book.turns_page(tenant, "s1", 2, "")
    assert ([t.text for t in first], following) == (["a", "b"], "2")
    rest, last = await book.turns_page(tenant, "s1", 2, following)
    assert ([t.text for t in rest], last) == (["c"], "")


async def test_over_grpc_a_token_beyond_int64_is_invalid_argument_not_internal(
    state_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    huge = "9" * 30
    async with context_service(state_dir, store_url=store_url) as reach:
        clients = MeshClients(reach, "orchestrator")
        call = correlation.CallContext(correlation_id="corr-token", tenant_id="demo")
        refusals = []
        try:
            with correlation.bound(call):
                await clients.context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id="s-token", channel=1)
                )
                for rpc in (
                    clients.context.ListTurns(
                        pb.ListTurnsRequest(session_id="s-token", page_token=huge)
                    ),
                    clients.context.ListAudit(pb.ListAuditRequest(page_token=huge)),
                    clients.context.ListTurns(
                        pb.ListTurnsRequest(session_id="s-token", page_token="²")
                    ),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await rpc
                    refusals.append(MeshError.from_rpc_error(refused.value))
        finally:
            await clients.close()
    for refusal in refusals:
        assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [(v.field, v.description) for v in refusal.violations] == [
            ("page_token", "is not a token from this API")
        ]
