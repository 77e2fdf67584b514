"""The real context service in-process, for tests that talk to it over gRPC."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services.context.app import build_server
from services.context.settings import ContextSettings
from services.mesh.settings import MeshSettings
from tests.support.servers import started


@asynccontextmanager
async def context_service(state_dir: Path, **settings: Any) -> AsyncIterator[MeshSettings]:
    """The context service on a free port, ready; yields client settings that reach it."""
    server = build_server(
        ContextSettings(state_dir=state_dir, grpc_listen_addr="127.0.0.1:0", **settings)
    )
    async with started(server) as address:
        await server.ready.wait()
        yield MeshSettings(state_dir=state_dir, context_addr=address)
