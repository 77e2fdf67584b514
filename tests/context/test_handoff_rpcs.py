"""The hand-over queue's RPCs over gRPC: the orchestrator only, bad requests refused field by
field before the store is touched, the holder's refusal carried as an ErrorInfo reason, and
EraseUser counting (and auditing) the hand-overs it deleted."""

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from tests.support.context_service import context_service

pytestmark = pytest.mark.timeout(60)

DEMO = correlation.CallContext(correlation_id="corr-handoff", tenant_id="demo")
RPCS = ("EnqueueHandoff", "ClaimHandoffs", "CompleteHandoff", "ReleaseHandoffs")


@pytest.fixture
async def served(state_dir: Path, tmp_path: Path) -> AsyncIterator[MeshSettings]:
    async with context_service(
        state_dir, store_url=f"sqlite:///{tmp_path / 'context.db'}"
    ) as settings:
        yield settings


@pytest.fixture
async def orchestrator(served: MeshSettings) -> AsyncIterator[MeshClients]:
    clients = MeshClients(served, "orchestrator")
    yield clients
    await clients.close()


def _payload() -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update({"customerText": "quiero hablar con una persona"})
    return payload


async def _violations(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    error = MeshError.from_rpc_error(refused.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    return sorted(v.field for v in error.violations)


async def test_bad_requests_name_every_bad_field(orchestrator: MeshClients) -> None:
    context = orchestrator.context
    with correlation.bound(DEMO):
        assert await _violations(
            context.EnqueueHandoff(
                pb.EnqueueHandoffRequest(event_id="has space", kind="Hand Off", user_id="a\nb")
            )
        ) == ["event_id", "kind", "payload", "session_id", "user_id"]
        big = struct_pb2.Struct()
        big.update({"text": "x" * (1 << 20)})
        assert await _violations(
            context.EnqueueHandoff(
                pb.EnqueueHandoffRequest(
                    event_id="e1", session_id="s1", kind="handoff", payload=big
                )
            )
        ) == ["payload"]
        assert await _violations(
            context.ClaimHandoffs(
                pb.ClaimHandoffsRequest(
                    agent_id="x" * 129,
                    lease_seconds=0,
                    max_events=101,
                    skip_event_ids=["e"] * 1001,
                )
            )
        ) == ["agent_id", "connection_id", "lease_seconds", "max_events", "skip_event_ids"]
        assert await _violations(
            context.CompleteHandoff(pb.CompleteHandoffRequest(connection_id="has space"))
        ) == ["agent_id", "connection_id", "event_id"]
        assert await _violations(context.ReleaseHandoffs(pb.ReleaseHandoffsRequest())) == [
            "agent_id",
            "connection_id",
        ]


async def test_the_holders_refusal_travels_as_an_error_info_reason(
    orchestrator: MeshClients,
) -> None:
    context = orchestrator.context
    with correlation.bound(DEMO):
        await context.GetOrCreateSession(
            pb.GetOrCreateSessionRequest(session_id="s1", user_id="u1", channel=1)
        )
        queued = await context.EnqueueHandoff(
            pb.EnqueueHandoffRequest(
                event_id="e1", session_id="s1", user_id="u1", kind="ticket", payload=_payload()
            )
        )
        again = await context.EnqueueHandoff(
            pb.EnqueueHandoffRequest(
                event_id="e1", session_id="s1", user_id="u1", kind="ticket", payload=_payload()
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await context.EnqueueHandoff(
                pb.EnqueueHandoffRequest(
                    event_id="e2", session_id="s-none", kind="ticket", payload=_payload()
                )
            )
        claimed = await context.ClaimHandoffs(
            pb.ClaimHandoffsRequest(
                agent_id="ana", connection_id="sock-a", lease_seconds=30, max_events=10
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await context.CompleteHandoff(pb.CompleteHandoffRequest(event_id="e1", agent_id="bob"))
        done = await context.CompleteHandoff(
            pb.CompleteHandoffRequest(event_id="e1", agent_id="ana", connection_id="sock-a")
        )
        released = await context.ReleaseHandoffs(
            pb.ReleaseHandoffsRequest(agent_id="ana", connection_id="sock-a")
        )
    assert (queued.enqueued, again.enqueued) == (True, False)
    assert MeshError.from_rpc_error(gone.value).reason == "SESSION_NOT_FOUND"
    assert [(h.event_id, h.kind, h.payload["customerText"]) for h in claimed.handoffs] == [
        ("e1", "ticket", "quiero hablar con una persona")
    ]
    error = MeshError.from_rpc_error(refused.value)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HANDOFF_HELD_ELSEWHERE",
    )
    assert (done.completed, released.released) == (True, 0)


@pytest.mark.parametrize("caller", ["gateway", "retrieval", "speech"])
async def test_only_the_orchestrator_may_call_the_queue(served: MeshSettings, caller: str) -> None:
    clients = MeshClients(served, caller)
    requests = {
        "EnqueueHandoff": pb.EnqueueHandoffRequest(),
        "ClaimHandoffs": pb.ClaimHandoffsRequest(),
        "CompleteHandoff": pb.CompleteHandoffRequest(),
        "ReleaseHandoffs": pb.ReleaseHandoffsRequest(),
    }
    try:
        with correlation.bound(DEMO):
            for rpc in RPCS:
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await getattr(clients.context, rpc)(requests[rpc])
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
    finally:
        await clients.close()


async def test_erasure_counts_and_audits_the_hand_overs_it_deleted(
    served: MeshSettings, orchestrator: MeshClients
) -> None:
    gateway = MeshClients(served, "gateway")
    try:
        with correlation.bound(DEMO):
            await orchestrator.context.GetOrCreateSession(
                pb.GetOrCreateSessionRequest(session_id="s-ana", user_id="ana", channel=1)
            )
            for n in (1, 2):
                await orchestrator.context.EnqueueHandoff(
                    pb.EnqueueHandoffRequest(
                        event_id=f"e{n}", session_id="s-ana", kind="handoff", payload=_payload()
                    )
                )
            erased = await gateway.context.EraseUser(pb.EraseUserRequest(user_id="ana"))
            again = await gateway.context.EraseUser(pb.EraseUserRequest(user_id="ana"))
            audit = await gateway.context.ListAudit(pb.ListAuditRequest(action="user_erased"))
            left = await orchestrator.context.ClaimHandoffs(
                pb.ClaimHandoffsRequest(
                    agent_id="ana", connection_id="sock-a", lease_seconds=30, max_events=10
                )
            )
    finally:
        await gateway.close()
    assert (erased.sessions_erased, erased.handoffs_erased, again.handoffs_erased) == (1, 2, 0)
    first, second = audit.entries
    assert first.payload["handoffs"] == 2
    assert "handoffs" not in second.payload, "counted only when there were some"
    assert list(left.handoffs) == []
