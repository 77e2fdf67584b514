"""UpdateShortContext over gRPC: replaces what a cached session shows; clear errors otherwise."""

from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.context_service import context_service


async def test_update_short_context_over_grpc(state_dir: Path, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as reach:
        clients = MeshClients(reach, "orchestrator")
        call = correlation.CallContext(correlation_id="corr-sc", tenant_id="demo")
        try:
            with correlation.bound(call):
                for _ in range(2):
                    await clients.context.GetOrCreateSession(
                        pb.GetOrCreateSessionRequest(session_id="s-sc", user_id="u", channel=1)
                    )
                update = conversation_pb2.ShortContext(last_intent="address_fix")
                update.entities.update({"address": "Calle Mayor 1"})
                updated = await clients.context.UpdateShortContext(
                    pb.UpdateShortContextRequest(session_id="s-sc", short_context=update)
                )
                seen = await clients.context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id="s-sc")
                )
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await clients.context.UpdateShortContext(
                        pb.UpdateShortContextRequest(session_id="nope", short_context=update)
                    )
                with pytest.raises(grpc.aio.AioRpcError) as empty:
                    await clients.context.UpdateShortContext(
                        pb.UpdateShortContextRequest(session_id="s-sc")
                    )
        finally:
            await clients.close()
    assert updated.context.short_context.entities["address"] == "Calle Mayor 1"
    assert seen.context.short_context.last_intent == "address_fix"
    assert MeshError.from_rpc_error(missing.value).reason == "SESSION_NOT_FOUND"
    assert [v.field for v in MeshError.from_rpc_error(empty.value).violations] == ["short_context"]
