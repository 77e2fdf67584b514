"""The gateway application: middleware, error handlers and the routers of the public API."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from gateway.middleware import CorrelationMiddleware
from gateway.problems import install_handlers
from gateway.routes import handoff, health, metrics, process, tenants
from gateway.security import close_security, open_security
from gateway.settings import GatewaySettings
from services.mesh import identity, logs, tracing
from services.mesh import metrics as mesh_metrics
from services.mesh.clients import MeshClients

log = logging.getLogger("metaagent.gateway")


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        open_security(app)
        app.state.clients = MeshClients(settings, identity.GATEWAY)
        yield
        await app.state.clients.close()
        await close_security(app)

    app = FastAPI(
        title="Meta-Agent gateway",
        version="2.0",
        lifespan=lifespan,
        description="Public REST API of the Meta-Agent platform. Errors are RFC 9457 "
        "problem+json documents carrying the request's correlationId.",
    )
    app.state.settings = settings
    install_handlers(app)
    for router in (health.router, metrics.router, process.router, tenants.router, handoff.router):
        app.include_router(router)

    app.add_middleware(CorrelationMiddleware)
    return app


def uvicorn_config(app: FastAPI, settings: GatewaySettings, **overrides: Any) -> uvicorn.Config:
    """How uvicorn serves the gateway. A WebSocket frame may be up to twice the hand-over
    socket's message limit: between the two the route answers with an error frame and keeps
    the socket, above it the server closes it (1009) before buffering the frame."""
    options: dict[str, Any] = {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "loop": "uvloop",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "ws": "websockets-sansio",
        "ws_max_size": 2 * settings.max_ws_message_bytes,
        "timeout_graceful_shutdown": int(settings.grpc_shutdown_grace_seconds),
    }
    return uvicorn.Config(app, **(options | overrides))


async def serve() -> None:
    """Run the gateway with uvicorn on uvloop until SIGTERM/SIGINT."""
    settings = GatewaySettings()
    logs.configure(identity.GATEWAY, settings.log_level)
    mesh_metrics.tenant_label.limit = settings.metrics_tenant_labels
    tracing.configure_tracing(identity.GATEWAY, settings)
    log.info("gateway listening on %s", settings.gateway_url)
    try:
        await uvicorn.Server(uvicorn_config(create_app(settings), settings)).serve()
    finally:
        tracing.shutdown_tracing()
