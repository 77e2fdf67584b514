"""Context, retrieval, LLM and orchestrator services in this process, over real mTLS.

A pytest plugin (tests/conftest.py): the fixtures `mesh` (the four services, ready) and
`gateway` (clients with the gateway's identity) serve every test that needs the mesh."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.context.app import build_server as build_context
from services.context.settings import ContextSettings
from services.llm.app import build_server as build_llm
from services.llm.settings import LlmSettings
from services.mesh.clients import MeshClients
from services.mesh.server import MeshServer
from services.mesh.settings import MeshSettings
from services.orchestrator.app import build_server as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.retrieval.app import build_server as build_retrieval
from services.retrieval.settings import RetrievalSettings
from tests.support.ports import free_ports


@dataclass
class InProcessMesh:
    settings: MeshSettings
    servers: dict[str, MeshServer]

    def clients(self, caller: str) -> MeshClients:
        return MeshClients(self.settings, caller)


@asynccontextmanager
async def inprocess_mesh(state_dir: Path, data_dir: Path) -> AsyncIterator[InProcessMesh]:
    names = ("context", "retrieval", "llm", "orchestrator")
    addresses = {
        f"{name}_addr": f"127.0.0.1:{port}"
        for name, port in zip(names, free_ports(len(names)), strict=True)
    }
    common = {"state_dir": state_dir, **addresses}
    servers = {
        "context": build_context(
            ContextSettings(
                **common,
                grpc_listen_addr=addresses["context_addr"],
                store_url=f"sqlite:///{data_dir / 'context.db'}",
            )
        ),
        "retrieval": build_retrieval(
            RetrievalSettings(**common, grpc_listen_addr=addresses["retrieval_addr"])
        ),
        "llm": build_llm(LlmSettings(**common, grpc_listen_addr=addresses["llm_addr"])),
        "orchestrator": build_orchestrator(
            OrchestratorSettings(**common, grpc_listen_addr=addresses["orchestrator_addr"])
        ),
    }
    async with AsyncExitStack() as stack:
        for server in servers.values():
            await server.start()
            stack.push_async_callback(server.stop, 0.5)
        for server in servers.values():
            await server.ready.wait()
        yield InProcessMesh(MeshSettings(**common), servers)


@pytest.fixture
async def mesh(state_dir: Path, tmp_path: Path) -> AsyncIterator[InProcessMesh]:
    async with inprocess_mesh(state_dir, tmp_path) as running:
        yield running


@pytest.fixture
async def gateway(mesh: InProcessMesh) -> AsyncIterator[MeshClients]:
    clients = mesh.clients("gateway")
    yield clients
    await clients.close()
