"""The in-process mesh and the gateway under uvicorn, on an event loop of their own in a
background thread, for synchronous clients (schemathesis) that would otherwise block the loop
the services run on."""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.mesh.certs import ensure_dev_pki
from tests.support.inprocess_mesh import inprocess_mesh
from tests.support.ports import free_port
from tests.support.public_api import bearer_headers, gateway_settings


@dataclass
class RunningGateway:
    base_url: str
    settings: GatewaySettings

    def headers(
        self, tenant: str = "demo", role: str = "platform-admin", subject: str = "fuzzer"
    ) -> dict[str, str]:
        return bearer_headers(self.settings, tenant=tenant, role=role, subject=subject, ttl=3600)


@contextmanager
def gateway_in_thread(directory: Path, timeout: float = 60.0) -> Iterator[RunningGateway]:
    state_dir = directory / "state"
    ensure_dev_pki(state_dir / "certs")
    port = free_port()
    ready = threading.Event()
    found: dict[str, object] = {}
    server_box: dict[str, uvicorn.Server] = {}

    async def main() -> None:
        async with inprocess_mesh(state_dir, directory) as mesh:
            settings = gateway_settings(mesh)
            config = uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
            )
            server = uvicorn.Server(config)
            server_box["server"], found["settings"] = server, settings
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            ready.set()
            await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # reported to the waiting test
            found["error"] = error
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="gateway-under-test", daemon=True)
    thread.start()
    if not ready.wait(timeout) or "error" in found or "server" not in server_box:
        raise RuntimeError(f"the gateway did not start: {found.get('error')!r}")
    try:
        settings = found["settings"]
        assert isinstance(settings, GatewaySettings)
        yield RunningGateway(f"http://127.0.0.1:{port}", settings)
    finally:
        server_box["server"].should_exit = True
        thread.join(timeout)
