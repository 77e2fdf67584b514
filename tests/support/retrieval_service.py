"""The real retrieval service in-process, beside a real context service (its tenant registry)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services.mesh.settings import MeshSettings
from services.retrieval.app import build_server
from services.retrieval.settings import RetrievalSettings
from tests.support.context_service import context_service
from tests.support.servers import started


@asynccontextmanager
async def retrieval_service(state_dir: Path, **settings: Any) -> AsyncIterator[MeshSettings]:
    """Context and retrieval on free ports, ready; yields client settings reaching both."""
    async with context_service(state_dir) as reach:
        server = build_server(
            RetrievalSettings(
                state_dir=state_dir,
                context_addr=reach.context_addr,
                grpc_listen_addr="127.0.0.1:0",
                **{"vector_store_url": "memory://", **settings},
            )
        )
        async with started(server) as address:
            await server.ready.wait()
            yield MeshSettings(
                state_dir=state_dir, context_addr=reach.context_addr, retrieval_addr=address
            )
