"""Bad input to the context service: a clear code with details, and nothing written."""

from pathlib import Path

import grpc
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from tests.support.calls import refusal
from tests.support.context_service import context_service


def _call(tenant: str) -> correlation.CallContext:
    return correlation.CallContext(correlation_id="corr-bad", tenant_id=tenant)


async def test_bad_input_is_refused_with_details_and_writes_nothing(
    state_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as reach:
        clients = MeshClients(reach, "orchestrator")
        gateway = MeshClients(reach, "gateway")
        stub = clients.context
        try:
            with correlation.bound(_call("demo")):
                malformed = await refusal(
                    stub.GetOrCreateSession(pb.GetOrCreateSessionRequest(session_id="bad id!"))
                )
                await stub.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id="s-demo", user_id="u", channel=1)
                )
                oversized = await refusal(
                    stub.CommitTurn(
                        pb.CommitTurnRequest(
                            session_id="s-demo",
                            turns=[conversation_pb2.ConversationTurn(role=1, text="x" * 16_001)],
                        )
                    )
                )
            with correlation.bound(_call("ghost")):
                unknown_tenant = await refusal(
                    stub.GetOrCreateSession(pb.GetOrCreateSessionRequest(session_id="s-ghost"))
                )
            with correlation.bound(_call("acme")):
                await gateway.context.PutTenant(
                    pb.PutTenantRequest(tenant=tenant_pb2.TenantConfig(name="Acme"))
                )
                cross_tenant = await refusal(
                    stub.CommitTurn(
                        pb.CommitTurnRequest(
                            session_id="s-demo",
                            turns=[conversation_pb2.ConversationTurn(role=1, text="intrusion")],
                        )
                    )
                )
            with correlation.bound(_call("demo")):
                transcript = await stub.GetSession(
                    pb.GetSessionRequest(session_id="s-demo", include_transcript=True)
                )
                never_created = await refusal(
                    stub.GetSession(pb.GetSessionRequest(session_id="s-ghost"))
                )
        finally:
            await clients.close()
            await gateway.close()
    assert (malformed.code, [v.field for v in malformed.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["session_id"],
    )
    assert (oversized.code, [v.field for v in oversized.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["turns[0].text"],
    )
    assert (unknown_tenant.code, unknown_tenant.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "TENANT_NOT_FOUND",
    )
    assert (cross_tenant.code, cross_tenant.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    assert transcript.transcript == []
    assert never_created.code == grpc.StatusCode.NOT_FOUND
