"""In-process mesh servers for tests: real bootstrap, real mTLS, ephemeral ports."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from metaagent.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from metaagent.orchestrator.v1 import orchestrator_service_pb2, orchestrator_service_pb2_grpc

from services.mesh.server import MeshServer, ReadinessCheck, ServiceBinding
from services.mesh.settings import MeshSettings


def llm_binding(servicer: Any) -> ServiceBinding:
    return ServiceBinding(
        llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
        llm_service_pb2_grpc.add_LlmServiceServicer_to_server,
        servicer,
    )


def orchestrator_binding(servicer: Any) -> ServiceBinding:
    return ServiceBinding(
        orchestrator_service_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
        orchestrator_service_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        servicer,
    )


@asynccontextmanager
async def running(
    identity: str,
    settings: MeshSettings,
    bindings: Sequence[ServiceBinding],
    readiness: Sequence[ReadinessCheck] = (),
) -> AsyncIterator[tuple[MeshServer, str]]:
    """Start a MeshServer on a free port; yield it with its address."""
    server = MeshServer(identity, settings, bindings, readiness=readiness, listen="127.0.0.1:0")
    port = await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)


@asynccontextmanager
async def started(server: MeshServer) -> AsyncIterator[str]:
    """Start an already built MeshServer; yield its address."""
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)
