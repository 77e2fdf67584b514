"""The gateway application: middleware, error handlers and the routers of the public API."""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response

from gateway.auth import ensure_dev_jwt_secret
from gateway.problems import install_handlers
from gateway.routes import handoff, health, process, tenants
from gateway.settings import GatewaySettings
from services.mesh import correlation, identity, logs
from services.mesh.clients import MeshClients

log = logging.getLogger("metaagent.gateway")
CORRELATION_HEADER = "X-Correlation-Id"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.jwt_key = ensure_dev_jwt_secret(settings)
        app.state.clients = MeshClients(settings, identity.GATEWAY)
        yield
        await app.state.clients.close()

    app = FastAPI(
        title="Meta-Agent gateway",
        version="2.0",
        lifespan=lifespan,
        description="Public REST API of the Meta-Agent platform. Errors are RFC 9457 "
        "problem+json documents carrying the request's correlationId.",
    )
    app.state.settings = settings
    install_handlers(app)
    for router in (health.router, process.router, tenants.router, handoff.router):
        app.include_router(router)

    @app.middleware("http")
    async def correlate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        supplied = request.headers.get(CORRELATION_HEADER, "")
        request.state.correlation_id = supplied if _valid_id(supplied) else str(uuid.uuid4())
        started = time.perf_counter()
        response = await call_next(request)
        response.headers[CORRELATION_HEADER] = request.state.correlation_id
        call = correlation.CallContext(
            correlation_id=request.state.correlation_id,
            tenant_id=getattr(request.state, "tenant_id", ""),
            session_id=getattr(request.state, "session_id", ""),
        )
        with correlation.bound(call):
            log.info(
                "http %s %s %s",
                request.method,
                request.url.path,
                response.status_code,
                extra={
                    "httpMethod": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "durationMs": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response

    return app


def _valid_id(value: str) -> bool:
    return bool(value) and correlation.ID_PATTERN.match(value) is not None


async def serve() -> None:
    """Run the gateway with uvicorn on uvloop until SIGTERM/SIGINT."""
    settings = GatewaySettings()
    logs.configure(identity.GATEWAY, settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.grpc_shutdown_grace_seconds),
    )
    log.info("gateway listening on %s", settings.gateway_url)
    await uvicorn.Server(config).serve()
