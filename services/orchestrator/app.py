"""The orchestrator process: SERVING once context, retrieval and LLM are."""

import logging
from collections.abc import Awaitable, Callable

import grpc
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2, orchestrator_service_pb2_grpc

from services.mesh import correlation, identity, logs
from services.mesh.clients import MeshClients, check_serving
from services.mesh.server import MeshServer, ServiceBinding
from services.orchestrator.bus import open_action_bus
from services.orchestrator.consumers import EmbeddedConsumers
from services.orchestrator.consumers.feed import SubscriberRunner, handoff_feed
from services.orchestrator.consumers.handoff import HandoffEvent, HandoffHub, HandoffQueue
from services.orchestrator.consumers.handoff_context import ContextHandoffQueue, lease_for
from services.orchestrator.human import HumanReplies
from services.orchestrator.relay import OutboxRelay, RelayRunner
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.turn import TurnProcessor

DEPENDENCIES = (identity.CONTEXT, identity.RETRIEVAL, identity.LLM)
SESSION_CHECK_SECONDS = 5.0
"""The deadline of the session check before a hand-over is delivered."""

log = logging.getLogger(__name__)


class OrchestratorServer(MeshServer):
    handoff_hub: HandoffQueue | None = None
    """Where this replica serves WatchHandoffs / AckHandoff from: the in-memory hub of the
    process that runs the relay, or the context service's queue (every replica); None when
    it serves no hand-overs."""
    handoff_feed: SubscriberRunner | None = None
    """The Service Bus subscription feeding the context queue, when the bus is Service Bus."""


def build_relay(
    settings: OrchestratorSettings,
    clients: MeshClients,
    consumers: EmbeddedConsumers | None = None,
) -> RelayRunner:
    """The outbox relay and, on the embedded bus, the reference consumers."""
    bus = open_action_bus(
        settings.azure_service_bus_connection_string,
        topic=settings.service_bus_topic_actions,
        require_broker=settings.environment == "production",
    )
    relay = OutboxRelay(
        clients,
        bus,
        max_attempts=settings.outbox_max_attempts,
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_seconds,
        lease_seconds=settings.outbox_lease_seconds,
        claimant=settings.outbox_relay_id,
    )
    consumers = consumers or EmbeddedConsumers.create()
    return RelayRunner(relay, bus, local_consumers=consumers.all)


def session_still_there(clients: MeshClients) -> Callable[[HandoffEvent], Awaitable[bool]]:
    """The hub's `still_wanted`: a hand-over whose session is gone (its user was erased:
    EraseUser deletes the user's sessions) is not delivered to anyone. When the context service
    cannot answer, the hand-over is delivered (an agent replying into an erased session gets
    NOT_FOUND anyway), with a warning."""

    async def still_wanted(event: HandoffEvent) -> bool:
        if not event.session_id:
            return True
        call = correlation.CallContext(
            correlation_id=event.correlation_id or f"handoff-{event.event_id}",
            tenant_id=event.tenant_id,
            session_id=event.session_id,
        )
        try:
            with correlation.bound(call):
                await clients.context.GetSession(
                    context_pb.GetSessionRequest(session_id=event.session_id),
                    timeout=SESSION_CHECK_SECONDS,
                )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            log.warning(
                "hand-over session could not be checked; delivered",
                extra={"eventId": event.event_id, "code": error.code().name},
            )
        return True

    return still_wanted


def build_handoff_queue(settings: OrchestratorSettings, clients: MeshClients) -> HandoffQueue:
    """The hand-over queue `ORCHESTRATOR_HANDOFF_QUEUE` names (see the settings)."""
    still_wanted = session_still_there(clients)
    if settings.handoff_queue_kind() == "context":
        return ContextHandoffQueue(
            clients,
            poll_seconds=settings.handoff_poll_seconds,
            lease_seconds=lease_for(
                settings.handoff_resume_grace_seconds, settings.handoff_poll_seconds
            ),
            still_wanted=still_wanted,
        )
    return HandoffHub(
        resume_grace=settings.handoff_resume_grace_seconds,
        still_wanted=still_wanted,
    )


def build_server(settings: OrchestratorSettings) -> OrchestratorServer:
    clients = MeshClients(settings, identity.ORCHESTRATOR)
    queue = build_handoff_queue(settings, clients)
    consumers = EmbeddedConsumers.create(hub=queue)
    relay = build_relay(settings, clients, consumers) if settings.run_relay else None
    durable = queue if isinstance(queue, ContextHandoffQueue) else None
    connection = settings.service_bus_connection()
    feed = None
    if durable is not None and connection:
        feed = handoff_feed(
            connection,
            consumers.handoff,
            subscription=settings.service_bus_subscription_handoffs,
            topic=settings.service_bus_topic_actions,
        )
    serving = queue if durable is not None or relay else None

    async def dependencies_serving() -> None:
        for dependency in DEPENDENCIES:
            await check_serving(clients.channel(dependency))

    server = OrchestratorServer(
        identity.ORCHESTRATOR,
        settings,
        [
            ServiceBinding(
                orchestrator_service_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
                orchestrator_service_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                OrchestratorServicer(
                    TurnProcessor(clients, settings),
                    HumanReplies(clients, settings),
                    serving,
                ),
            )
        ],
        readiness=[
            dependencies_serving,
            *([relay.start] if relay else []),
            *([feed.start] if feed else []),
        ],
        cleanup=[
            *([feed.stop] if feed else []),
            *([relay.stop] if relay else []),
            *([durable.aclose] if durable is not None else []),
            clients.close,
        ],
    )
    server.handoff_hub = serving
    server.handoff_feed = feed
    return server


async def serve() -> None:
    settings = OrchestratorSettings()
    logs.configure(identity.ORCHESTRATOR, settings.log_level)
    await build_server(settings).run()
