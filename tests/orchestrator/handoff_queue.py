"""What waits in the context service's hand-over queue (test_handoff_feed.py,
test_handoff_replicas.py)."""

from metaagent.context.v1 import context_service_pb2 as context_pb

from services.mesh import correlation
from services.mesh.clients import MeshClients


async def waiting_handoffs(clients: MeshClients, tenant_id: str = "demo") -> list[str]:
    """The event ids a fresh connection could claim from `tenant_id`'s queue now (claimed,
    then given back, all of them)."""
    call = correlation.CallContext(correlation_id="corr-peek", tenant_id=tenant_id)
    with correlation.bound(call):
        claimed = await clients.context.ClaimHandoffs(
            context_pb.ClaimHandoffsRequest(
                agent_id="peek", connection_id="peek", lease_seconds=1, max_events=100
            )
        )
        released = await clients.context.ReleaseHandoffs(
            context_pb.ReleaseHandoffsRequest(agent_id="peek", connection_id="peek")
        )
    assert released.released == len(claimed.handoffs)
    return [h.event_id for h in claimed.handoffs]
