"""The orchestrator process: SERVING once context, retrieval and LLM are."""

from metaagent.orchestrator.v1 import orchestrator_service_pb2, orchestrator_service_pb2_grpc

from services.mesh import identity, logs
from services.mesh.clients import MeshClients, check_serving
from services.mesh.server import MeshServer, ServiceBinding
from services.orchestrator.bus import open_action_bus
from services.orchestrator.consumers import EmbeddedConsumers
from services.orchestrator.relay import OutboxRelay, RelayRunner
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.turn import TurnProcessor

DEPENDENCIES = (identity.CONTEXT, identity.RETRIEVAL, identity.LLM)


def build_relay(settings: OrchestratorSettings, clients: MeshClients) -> RelayRunner:
    """The outbox relay and, on the embedded bus, the reference consumers."""
    secret = settings.azure_service_bus_connection_string
    bus = open_action_bus(
        secret.get_secret_value() if secret else None,
        topic=settings.service_bus_topic_actions,
        require_broker=settings.environment == "production",
    )
    relay = OutboxRelay(
        clients,
        bus,
        max_attempts=settings.outbox_max_attempts,
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_seconds,
    )
    return RelayRunner(relay, bus, local_consumers=EmbeddedConsumers.create().all)


def build_server(settings: OrchestratorSettings) -> MeshServer:
    clients = MeshClients(settings, identity.ORCHESTRATOR)
    relay = build_relay(settings, clients) if settings.run_relay else None

    async def dependencies_serving() -> None:
        for dependency in DEPENDENCIES:
            await check_serving(clients.channel(dependency))

    return MeshServer(
        identity.ORCHESTRATOR,
        settings,
        [
            ServiceBinding(
                orchestrator_service_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
                orchestrator_service_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                OrchestratorServicer(TurnProcessor(clients, settings)),  # type: ignore[abstract]
            )
        ],
        readiness=[dependencies_serving, *([relay.start] if relay else [])],
        cleanup=[*([relay.stop] if relay else []), clients.close],
    )


async def serve() -> None:
    settings = OrchestratorSettings()
    logs.configure(identity.ORCHESTRATOR, settings.log_level)
    await build_server(settings).run()
