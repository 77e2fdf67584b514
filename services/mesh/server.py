"""Server bootstrap: grpc.aio over mTLS with health, reflection, readiness and graceful stop.

Health starts NOT_SERVING for every service; it turns SERVING once each readiness check has
passed (checks are retried with backoff), and back to NOT_SERVING when shutdown begins. Until
then every RPC but health and reflection answers UNAVAILABLE (reason NOT_READY). On
SIGTERM or SIGINT new calls are refused and in-flight calls get the grace period to finish.
`run()` also serves the process's Prometheus metrics and sets up tracing.
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.mesh import metrics, tracing
from services.mesh.interceptors import MeshServerInterceptor
from services.mesh.policy import MethodPolicy, policies_for
from services.mesh.probes import ReadinessCheck
from services.mesh.settings import MeshSettings
from services.mesh.tls import MeshTls

log = logging.getLogger("metaagent.server")

Cleanup = Callable[[], Awaitable[None]]

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to serve: its descriptor, the generated `add_*_to_server`, the servicer.

    A servicer may leave RPCs to the generated base class; they answer UNIMPLEMENTED (the
    mypy-protobuf stubs mark them abstract, hence `# type: ignore[abstract]` at such sites).
    """

    descriptor: ServiceDescriptor
    register: Callable[[Any, grpc.aio.Server], None]
    servicer: object


class MeshServer:
    """A component's gRPC server; `run()` serves until SIGTERM/SIGINT."""

    def __init__(
        self,
        identity: str,
        settings: MeshSettings,
        bindings: Sequence[ServiceBinding],
        *,
        readiness: Sequence[ReadinessCheck] = (),
        cleanup: Sequence[Cleanup] = (),
        listen: str | None = None,
        policies: Mapping[str, MethodPolicy] | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.health = HealthServicer()
        self._bindings = bindings
        self._readiness = readiness
        self._cleanup = cleanup
        self._listen = listen or settings.listen_address(identity)
        self._policies = (
            policies if policies is not None else policies_for(b.descriptor for b in bindings)
        )
        self._server: grpc.aio.Server | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    @property
    def service_names(self) -> list[str]:
        return [binding.descriptor.full_name for binding in self._bindings]

    async def start(self) -> int:
        """Bind and start serving (NOT_SERVING until ready); return the bound port."""
        tls = MeshTls.load(self.settings.certs_dir, self.identity)
        server = grpc.aio.server(
            interceptors=[MeshServerInterceptor(self._policies, self.ready, self.identity)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                # clients ping every 30 s (services/mesh/clients.py); without these the server
                # answers a long idle stream's pings with GOAWAY "too_many_pings"
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        for binding in self._bindings:
            binding.register(binding.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            port = server.add_secure_port(self._listen, tls.server_credentials())
        except RuntimeError as error:
            raise OSError(f"{self.identity} cannot listen on {self._listen}: {error}") from None
        if port == 0:
            raise OSError(f"{self.identity} cannot listen on {self._listen}")
        await server.start()
        self._server = server
        self._ready_task = asyncio.create_task(self._become_ready(), name="readiness")
        log.info("%s listening on %s (mTLS)", self.identity, self._listen)
        return port

    async def _become_ready(self) -> None:
        for check in self._readiness:
            delay = 0.05
            while True:
                try:
                    await check()
                    break
                except Exception as error:
                    log.info("%s waiting for a dependency: %s", self.identity, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.ready.set()
        log.info("%s is serving", self.identity)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give in-flight ones `grace` seconds, then release resources."""
        grace = self.settings.grpc_shutdown_grace_seconds if grace is None else grace
        if self._ready_task is not None:
            self._ready_task.cancel()
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            log.info("%s stopping, grace %.1fs", self.identity, grace)
            await self._server.stop(grace)
            self._server = None
        for cleanup in self._cleanup:
            await cleanup()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully. The process's telemetry comes
        with it: `/metrics` on the metrics port, and tracing when an exporter is configured."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        metrics.tenant_label.limit = self.settings.metrics_tenant_labels
        port = self.settings.metrics_port_of(self.identity)
        stop_metrics = metrics.serve_metrics(port, self.settings.metrics_host) if port else None
        tracing.configure_tracing(self.identity, self.settings)
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()
            tracing.shutdown_tracing()
            if stop_metrics is not None:
                stop_metrics()
