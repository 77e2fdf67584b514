"""The retrieval service process: configured embedder and vector store, demo knowledge."""

from metaagent.retrieval.v1 import retrieval_service_pb2, retrieval_service_pb2_grpc

from services.mesh import identity, logs
from services.mesh.clients import MeshClients
from services.mesh.server import MeshServer, ServiceBinding
from services.retrieval.catalogue import product_document
from services.retrieval.demo import DEMO_TENANT_ID, demo_documents, demo_products
from services.retrieval.embedders import open_embedder
from services.retrieval.knowledge import KnowledgeBase
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.settings import RetrievalSettings
from services.retrieval.stores import open_vector_store
from services.retrieval.tenants import ContextTenantDirectory


def build_server(settings: RetrievalSettings) -> MeshServer:
    embedder = open_embedder(settings)
    clients = MeshClients(settings, identity.RETRIEVAL)
    knowledge = KnowledgeBase(
        embedder,
        open_vector_store(settings, embedder.dimension),
        ContextTenantDirectory(clients),
        settings.max_document_chars,
        settings.hybrid,
    )

    async def load_demo() -> None:
        if settings.seed_demo:
            products = [product_document(product) for product in demo_products()]
            await knowledge.index(DEMO_TENANT_ID, [*products, *demo_documents()])

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
        cleanup=[clients.close],
    )


async def serve() -> None:
    settings = RetrievalSettings()
    logs.configure(identity.RETRIEVAL, settings.log_level)
    await build_server(settings).run()
