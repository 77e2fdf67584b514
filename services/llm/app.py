"""The LLM service process (embedded profile: the offline responder)."""

from metaagent.llm.v1 import llm_service_pb2, llm_service_pb2_grpc

from services.llm.offline import OfflineResponder
from services.llm.servicer import LlmServicer
from services.llm.settings import LlmSettings
from services.mesh import identity, logs
from services.mesh.server import MeshServer, ServiceBinding


def build_server(settings: LlmSettings) -> MeshServer:
    return MeshServer(
        identity.LLM,
        settings,
        [
            ServiceBinding(
                llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
                llm_service_pb2_grpc.add_LlmServiceServicer_to_server,
                LlmServicer(OfflineResponder(settings.intent_threshold), settings),
            )
        ],
    )


async def serve() -> None:
    settings = LlmSettings()
    logs.configure(identity.LLM, settings.log_level)
    await build_server(settings).run()
