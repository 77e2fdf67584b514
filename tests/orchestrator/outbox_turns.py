"""Turns with actions committed through the real context service, and the outbox they leave."""

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.context.v1 import outbox_pb2

from services.mesh import correlation
from services.mesh.clients import MeshClients

Actions = Sequence[tuple[str, Mapping[str, Any]]]

# Parameters as the action schemas have them (services/orchestrator/actions/registry.py): money
# as two-decimal strings, quantities as integers.

ORDER_PARAMS = {"productId": "kobe-6", "quantity": 2, "unitPrice": "189.99", "currency": "EUR"}
LINK_PARAMS = {"amount": "379.98", "currency": "EUR", "email": "ana@example.com"}
TICKET_PARAMS = {
    "reason": "low_confidence",
    "summary": "el pedido no llegó",
    "customerText": "Mi pedido 4411 no llegó, estoy harta",
    "language": "es",
}
HANDOFF_PARAMS = {"reason": "customer_request", "summary": "quiere hablar con una persona"}
CHECKOUT: Actions = (("create_order", ORDER_PARAMS), ("payment_link", LINK_PARAMS))
ESCALATION: Actions = (("create_ticket", TICKET_PARAMS), ("handoff_human", HANDOFF_PARAMS))


def as_tenant(tenant: str, correlation_id: str) -> correlation.CallContext:
    return correlation.CallContext(correlation_id=correlation_id, tenant_id=tenant)


def platform() -> correlation.CallContext:
    return correlation.CallContext(correlation_id="test-sweep")


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(dict(values))
    return result


async def commit_turn(
    clients: MeshClients, tenant: str, session_id: str, correlation_id: str, actions: Actions
) -> list[str]:
    """Commit a user turn and an agent turn proposing `actions`, as the orchestrator does;
    return the action ids the context service assigned."""
    with correlation.bound(as_tenant(tenant, correlation_id)):
        await clients.context.GetOrCreateSession(
            context_pb.GetOrCreateSessionRequest(
                session_id=session_id, user_id="u-1", channel=conversation_pb2.CHANNEL_WEB
            )
        )
        user = conversation_pb2.ConversationTurn(
            role=conversation_pb2.TURN_ROLE_USER,
            text="quiero comprar",
            correlation_id=correlation_id,
        )
        agent = conversation_pb2.ConversationTurn(
            role=conversation_pb2.TURN_ROLE_AGENT,
            text="hecho",
            correlation_id=correlation_id,
            actions=[
                conversation_pb2.Action(type=kind, params=_struct(params))
                for kind, params in actions
            ],
        )
        committed = await clients.context.CommitTurn(
            context_pb.CommitTurnRequest(session_id=session_id, turns=[user, agent])
        )
    return [action.action_id for action in committed.turns[-1].actions]


async def pending(clients: MeshClients) -> dict[str, outbox_pb2.OutboxMessage]:
    """Every pending outbox message of the platform, by id."""
    with correlation.bound(platform()):
        listed = await clients.context.ListOutbox(context_pb.ListOutboxRequest(page_size=500))
    return {m.message_id: m for m in listed.messages}


async def statuses(clients: MeshClients, tenant: str, session_id: str) -> dict[str, int]:
    """The status of every action of a session, by action id, as its transcript shows it."""
    with correlation.bound(as_tenant(tenant, "test-read")):
        found = await clients.context.GetSession(
            context_pb.GetSessionRequest(session_id=session_id, include_transcript=True)
        )
    return {a.action_id: a.status for turn in found.transcript for a in turn.actions}
