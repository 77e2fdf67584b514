"""The orchestrator process: SERVING once context, retrieval and LLM are."""

from metaagent.orchestrator.v1 import orchestrator_service_pb2, orchestrator_service_pb2_grpc

from services.mesh import identity, logs
from services.mesh.clients import MeshClients, check_serving
from services.mesh.server import MeshServer, ServiceBinding
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.turn import TurnProcessor

DEPENDENCIES = (identity.CONTEXT, identity.RETRIEVAL, identity.LLM)


def build_server(settings: OrchestratorSettings) -> MeshServer:
    clients = MeshClients(settings, identity.ORCHESTRATOR)

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
        readiness=[dependencies_serving],
        cleanup=[clients.close],
    )


async def serve() -> None:
    settings = OrchestratorSettings()
    logs.configure(identity.ORCHESTRATOR, settings.log_level)
    await build_server(settings).run()
