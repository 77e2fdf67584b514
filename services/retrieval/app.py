"""The retrieval service process: offline embedder, in-memory index, demo knowledge."""

from metaagent.retrieval.v1 import retrieval_service_pb2, retrieval_service_pb2_grpc

from services.mesh import identity, logs
from services.mesh.server import MeshServer, ServiceBinding
from services.retrieval.demo import demo_documents
from services.retrieval.embedders.hashing import HashingEmbedder
from services.retrieval.knowledge import KnowledgeBase
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.settings import RetrievalSettings
from services.retrieval.stores.local import DiskIndex

DEMO_TENANT_ID = "demo"


def build_server(settings: RetrievalSettings) -> MeshServer:
    embedder = HashingEmbedder()
    index = DiskIndex(settings.resolved_index_dir(), embedder.dimension)
    knowledge = KnowledgeBase(embedder, index)

    async def load_demo() -> None:
        if settings.seed_demo:
            await knowledge.upsert(DEMO_TENANT_ID, demo_documents())

    return MeshServer(
        identity.RETRIEVAL,
        settings,
        [
            ServiceBinding(
                retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
                retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server,
                RetrievalServicer(knowledge, settings),
            )
        ],
        readiness=[load_demo],
    )


async def serve() -> None:
    settings = RetrievalSettings()
    logs.configure(identity.RETRIEVAL, settings.log_level)
    await build_server(settings).run()
