"""ListOutbox / MarkOutbox as the relay calls them: platform-level, no tenant in the metadata."""

from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.context_service import context_service


async def test_the_relay_sweeps_marks_and_the_session_shows_it(
    state_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as client_settings:
        relay = MeshClients(client_settings, "orchestrator")
        demo = correlation.CallContext(correlation_id="corr-turn", tenant_id="demo")
        sweep = correlation.CallContext(correlation_id="corr-sweep")
        try:
            with correlation.bound(demo):
                await relay.context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id="s-relay", user_id="u", channel=1)
                )
                agent = conversation_pb2.ConversationTurn(
                    role=conversation_pb2.TURN_ROLE_AGENT,
                    text="pedido creado",
                    actions=[conversation_pb2.Action(type="create_order")],
                )
                await relay.context.CommitTurn(
                    pb.CommitTurnRequest(session_id="s-relay", turns=[agent])
                )
                for _ in range(2):
                    cached = await relay.context.GetOrCreateSession(
                        pb.GetOrCreateSessionRequest(session_id="s-relay")
                    )
            with correlation.bound(sweep):
                pending = await relay.context.ListOutbox(pb.ListOutboxRequest(page_size=10))
                marked = await relay.context.MarkOutbox(
                    pb.MarkOutboxRequest(
                        message_ids=[m.message_id for m in pending.messages],
                        status=conversation_pb2.ACTION_STATUS_SENT,
                    )
                )
                after = await relay.context.ListOutbox(pb.ListOutboxRequest())
            with correlation.bound(demo):
                fresh = await relay.context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id="s-relay")
                )
        finally:
            await relay.close()
    assert cached.cache_hit is True
    assert [(m.tenant_id, m.topic) for m in pending.messages] == [("demo", "action.create_order")]
    assert marked.updated == 1
    assert after.messages == []
    assert fresh.cache_hit is False
    assert fresh.context.recent_turns[-1].actions[0].status == conversation_pb2.ACTION_STATUS_SENT


async def test_bad_lease_requests_are_invalid_argument_naming_each_field(
    state_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as client_settings:
        relay = MeshClients(client_settings, "orchestrator")
        try:
            with correlation.bound(correlation.CallContext(correlation_id="corr-sweep")):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await relay.context.ListOutbox(
                        pb.ListOutboxRequest(page_size=-1, lease_seconds=3601, claimant="x" * 129)
                    )
                claimed = await relay.context.ListOutbox(pb.ListOutboxRequest(lease_seconds=30))
        finally:
            await relay.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in MeshError.from_dependency(refused.value).violations}
    assert fields == {"page_size", "lease_seconds", "claimant"}
    assert claimed.messages == []
