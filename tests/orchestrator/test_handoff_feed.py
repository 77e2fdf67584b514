"""The Service Bus feed of the context hand-over queue: the subscription's messages go to the
hand-over consumer, which queues each in the context service (once per action id) before the
message is completed; a context service that cannot queue it leaves the message to the broker
(abandoned, redelivered). Tested as test_servicebus.py tests the SDK side: the SDK's own message
types, our seams (receiver, client factory) in place of a namespace, and the real context
service."""

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.servicebus")

from azure.servicebus import ServiceBusMessage
from google.protobuf import struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.context.v1 import outbox_pb2
from pydantic import ValidationError

from services.mesh import correlation
from services.mesh.backoff import RetryPolicy
from services.mesh.clients import MeshClients
from services.mesh.settings import MeshSettings
from services.orchestrator.app import build_server
from services.orchestrator.bus import bus_message_from_outbox
from services.orchestrator.bus.servicebus import to_service_bus_message
from services.orchestrator.consumers.feed import SubscriberRunner, handoff_feed
from services.orchestrator.consumers.handoff import HandoffConsumer, HandoffHub
from services.orchestrator.consumers.handoff_context import ContextHandoffQueue
from services.orchestrator.settings import OrchestratorSettings
from tests.orchestrator.handoff_queue import waiting_handoffs
from tests.orchestrator.servicebus_fakes import FakeReceiver
from tests.support.context_service import context_service

pytestmark = pytest.mark.timeout(60)

SECRET = "c2VjcmV0LWtleS1ub3QtcmVhbA=="
CONNECTION = (
    "Endpoint=sb://unit-test.servicebus.windows.net/;"
    f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={SECRET}"
)
NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0)
DEMO = correlation.CallContext(correlation_id="corr-feed", tenant_id="demo")


def action(n: int, kind: str = "handoff_human", session: str = "s-feed") -> ServiceBusMessage:
    """An action as the relay puts it on the topic."""
    params = struct_pb2.Struct()
    params.update(
        {
            "reason": "customer_request",
            "summary": "quiere hablar con una persona",
            "transcript": [{"role": "user", "text": "quiero hablar con una persona"}],
            "user": {"userId": "u-feed"},
            "language": "es",
            "entities": {"quantity": 2},
        }
    )
    created = timestamp_pb2.Timestamp()
    created.FromJsonString("2025-12-04T10:00:00Z")
    action_id = f"00000000-0000-4000-8000-{n:012d}"
    outbox = outbox_pb2.OutboxMessage(
        message_id=action_id,
        tenant_id="demo",
        session_id=session,
        correlation_id=f"corr-{n}",
        topic=f"action.{kind}",
        action=conversation_pb2.Action(action_id=action_id, type=kind, params=params),
        created_at=created,
    )
    return to_service_bus_message(bus_message_from_outbox(outbox))


class FakeClient:
    """Our seam in place of the SDK's client: one receiver, the options it was opened with."""

    def __init__(self, receiver: FakeReceiver) -> None:
        self.receiver = receiver
        self.options: list[dict[str, Any]] = []
        self.closed = False

    def get_subscription_receiver(self, **options: Any) -> FakeReceiver:
        self.options.append(options)
        return self.receiver

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def orchestrator(state_dir: Path, tmp_path: Path) -> AsyncIterator[MeshClients]:
    """The orchestrator's clients of a real context service, with the demo session s-feed."""
    async with context_service(
        state_dir, store_url=f"sqlite:///{tmp_path / 'context.db'}"
    ) as settings:
        clients = MeshClients(settings, "orchestrator")
        with correlation.bound(DEMO):
            await clients.context.GetOrCreateSession(
                context_pb.GetOrCreateSessionRequest(
                    session_id="s-feed", user_id="u-feed", channel=1
                )
            )
        yield clients
        await clients.close()


def _feed(queue: ContextHandoffQueue, client: FakeClient | None = None) -> SubscriberRunner:
    return handoff_feed(
        CONNECTION,
        HandoffConsumer(queue),
        subscription="handoffs",
        topic="meta-agent-actions",
        redelivery=NO_WAIT,
        max_wait_time=0.05,
        client_factory=(lambda: client) if client else None,
    )


async def test_a_message_is_completed_once_its_hand_over_is_queued_and_only_once(
    orchestrator: MeshClients,
) -> None:
    feed = _feed(ContextHandoffQueue(orchestrator))
    receiver = FakeReceiver()
    handoff, ticket = action(1), action(2, "create_ticket")
    outcomes = [
        await feed.subscriber.settle(receiver, message)
        for message in (handoff, action(1), ticket, action(3, "create_order"))
    ]
    assert outcomes == ["completed"] * 4, "a redelivery and another subject complete too"
    assert await waiting_handoffs(orchestrator) == [handoff.message_id, ticket.message_id]
    with correlation.bound(DEMO):
        claimed = await orchestrator.context.ClaimHandoffs(
            context_pb.ClaimHandoffsRequest(
                agent_id="ana", connection_id="sock-a", lease_seconds=30, max_events=1
            )
        )
    [queued] = claimed.handoffs
    assert (queued.kind, queued.session_id, queued.user_id) == ("handoff", "s-feed", "u-feed")
    assert queued.payload["transcript"][0]["text"] == "quiero hablar con una persona"
    assert queued.payload["correlationId"] == "corr-1"


async def test_a_context_service_that_cannot_queue_it_leaves_the_message_to_the_broker(
    state_dir: Path,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    clients = MeshClients(MeshSettings(state_dir=state_dir, context_addr=address), "orchestrator")
    try:
        feed = _feed(ContextHandoffQueue(clients))
        receiver = FakeReceiver()
        assert await feed.subscriber.settle(receiver, action(1)) == "abandoned"
    finally:
        await clients.close()
    assert receiver.settled == [("abandon", action(1).message_id, {})]


async def test_a_hand_over_whose_session_is_gone_is_dropped(orchestrator: MeshClients) -> None:
    """Its user was erased after the action was published: nothing to hand over, and no
    point in redelivering it."""
    feed = _feed(ContextHandoffQueue(orchestrator))
    receiver = FakeReceiver()
    assert await feed.subscriber.settle(receiver, action(1, session="s-erased")) == "completed"
    assert await waiting_handoffs(orchestrator) == []


async def test_the_feed_runs_in_the_background_until_stopped(orchestrator: MeshClients) -> None:
    receiver = FakeReceiver([[action(1), action(2, "create_ticket")]])
    client = FakeClient(receiver)
    feed = _feed(ContextHandoffQueue(orchestrator), client)
    await feed.start()
    await feed.start()  # idempotent
    try:
        async with asyncio.timeout(10):
            while len(receiver.settled) < 2:
                await asyncio.sleep(0.01)
    finally:
        await feed.stop()
    assert [kind for kind, _, _ in receiver.settled] == ["complete", "complete"]
    assert len(await waiting_handoffs(orchestrator)) == 2
    assert {(o["topic_name"], o["subscription_name"]) for o in client.options} == {
        ("meta-agent-actions", "handoffs")
    }
    assert client.options[0]["session_id"] is None, "the hand-over subscription has no sessions"
    assert client.closed


def test_on_service_bus_every_replica_serves_the_context_queue_fed_by_its_subscription(
    state_dir: Path,
) -> None:
    settings = OrchestratorSettings(
        state_dir=state_dir,
        azure_service_bus_connection_string=CONNECTION,
        service_bus_subscription_handoffs="agents-desk",
        run_relay=False,
    )
    assert settings.handoff_queue_kind() == "context"
    server = build_server(settings)
    assert isinstance(server.handoff_hub, ContextHandoffQueue)
    assert server.handoff_feed is not None and server.handoff_feed.subscription == "agents-desk"
    assert SECRET not in repr(server.handoff_feed.subscriber)
    embedded = build_server(OrchestratorSettings(state_dir=state_dir))
    assert isinstance(embedded.handoff_hub, HandoffHub) and embedded.handoff_feed is None
    relayless = build_server(OrchestratorSettings(state_dir=state_dir, run_relay=False))
    assert relayless.handoff_hub is None, "in memory, only the relay's replica has hand-overs"
    on_context = build_server(
        OrchestratorSettings(state_dir=state_dir, run_relay=False, handoff_queue="context")
    )
    assert isinstance(on_context.handoff_hub, ContextHandoffQueue)
    assert on_context.handoff_feed is None, "the in-process bus of the relay's replica feeds it"


def test_an_in_memory_queue_cannot_be_fed_from_service_bus(state_dir: Path) -> None:
    with pytest.raises(ValidationError, match="cannot be fed from Service Bus") as refused:
        OrchestratorSettings(
            state_dir=state_dir,
            azure_service_bus_connection_string=CONNECTION,
            handoff_queue="memory",
        )
    assert SECRET not in str(refused.value)
