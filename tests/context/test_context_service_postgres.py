"""The context service over gRPC with PostgreSQL as its store (migrated at start-up)."""

import uuid
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.context_service import context_service
from tests.support.postgres import ThrowawayDatabase


async def test_sessions_and_turns_through_the_service_on_postgres(
    state_dir: Path, postgres_database: ThrowawayDatabase
) -> None:
    async with context_service(
        state_dir, store_url=postgres_database.app_dsn, migrations_url=postgres_database.owner_dsn
    ) as reach:
        clients = MeshClients(reach, "orchestrator")
        session_id = f"pg-{uuid.uuid4().hex[:8]}"
        call = correlation.CallContext(correlation_id="corr-pg", tenant_id="demo")
        try:
            with correlation.bound(call):
                first = await clients.context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id=session_id, user_id="u1", channel=1)
                )
                turn = conversation_pb2.ConversationTurn(
                    role=conversation_pb2.TURN_ROLE_USER, text="hola", correlation_id="corr-pg"
                )
                await clients.context.CommitTurn(
                    pb.CommitTurnRequest(session_id=session_id, turns=[turn])
                )
                again = await clients.context.GetOrCreateSession(
                    pb.GetOrCreateSessionRequest(session_id=session_id, user_id="u1")
                )
                ghost = correlation.CallContext(correlation_id="c", tenant_id="ghost")
                with pytest.raises(grpc.aio.AioRpcError) as unknown, correlation.bound(ghost):
                    await clients.context.GetOrCreateSession(
                        pb.GetOrCreateSessionRequest(session_id=session_id)
                    )
        finally:
            await clients.close()
    assert (first.created, again.created, again.cache_hit) == (True, False, False)
    assert [t.text for t in again.context.recent_turns] == ["hola"]
    assert MeshError.from_rpc_error(unknown.value).reason == "TENANT_NOT_FOUND"
