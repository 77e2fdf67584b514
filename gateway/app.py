"""The gateway application: `POST /v2/agents/meta-agent/process`, health and readiness."""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from gateway import convert
from gateway.auth import AuthError, Principal, authenticate, ensure_dev_jwt_secret
from gateway.models import ProcessRequest, ProcessResponse
from gateway.problems import from_mesh_error, problem
from gateway.settings import GatewaySettings
from services.mesh import correlation, identity, logs
from services.mesh.clients import MeshClients, check_serving
from services.mesh.errors import MeshError

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

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        try:
            await check_serving(request.app.state.clients.channel(identity.ORCHESTRATOR))
        except (ConnectionError, grpc.aio.AioRpcError):
            return JSONResponse({"status": "not ready"}, 503)
        return JSONResponse({"status": "ready"})

    @app.post(
        "/v2/agents/meta-agent/process",
        response_model=ProcessResponse,
        response_model_by_alias=True,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ProcessRequest.model_json_schema()}},
            }
        },
        responses={400: {"description": "problem+json"}, 401: {}, 403: {}, 413: {}, 503: {}},
    )
    async def process(request: Request) -> Response:
        cid = request.state.correlation_id
        try:
            principal = _principal(request)
            body = await _process_request(request, settings)
        except AuthError as error:
            return problem(error.status, error.title, error.detail, correlation_id=cid)
        except ValidationError as error:
            return _validation_problem(error, cid)
        except _TooLarge as error:
            return problem(413, "Payload Too Large", str(error), correlation_id=cid)
        try:
            principal.require_tenant(body.tenant_id)
            grpc_request = convert.process_request(body, principal)
        except AuthError as error:
            return problem(error.status, error.title, error.detail, correlation_id=cid)
        if body.correlation_id:
            cid = request.state.correlation_id = body.correlation_id
        request.state.tenant_id, request.state.session_id = body.tenant_id, body.session_id
        call = correlation.CallContext(
            correlation_id=cid, tenant_id=body.tenant_id, session_id=body.session_id
        )
        with correlation.bound(call):
            log.info(
                "process request",
                extra={"channel": body.channel.value, "inputType": body.input.type.value},
            )
            try:
                reply = await request.app.state.clients.orchestrator.Process(
                    grpc_request, timeout=settings.process_timeout_seconds
                )
            except grpc.aio.AioRpcError as error:
                return from_mesh_error(MeshError.from_dependency(error), cid)
        payload = convert.process_response(reply, cid)
        return JSONResponse(payload.model_dump(by_alias=True))

    return app


class _TooLarge(Exception):
    pass


def _valid_id(value: str) -> bool:
    return bool(value) and correlation.ID_PATTERN.match(value) is not None


def _principal(request: Request) -> Principal:
    settings: GatewaySettings = request.app.state.settings
    return authenticate(request.headers.get("Authorization"), settings, request.app.state.jwt_key)


async def _process_request(request: Request, settings: GatewaySettings) -> ProcessRequest:
    raw = await _read_body(request, settings.max_body_bytes)
    body = ProcessRequest.model_validate_json(raw or b"null")
    if body.input.text is not None and len(body.input.text) > settings.max_text_chars:
        raise _TooLarge(f"input.text exceeds {settings.max_text_chars} characters")
    return body


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` bytes (declared or streamed)."""
    declared = request.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"the body exceeds {limit} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _TooLarge(f"the body exceeds {limit} bytes")
    return bytes(received)


def _validation_problem(error: ValidationError, correlation_id: str) -> JSONResponse:
    errors = [
        {"field": ".".join(str(p) for p in item["loc"]) or "body", "detail": item["msg"]}
        for item in error.errors(include_url=False, include_input=False)
    ]
    return problem(
        400,
        "Bad Request",
        "the request body is not a valid ProcessRequest",
        correlation_id=correlation_id,
        extra={"errors": errors},
    )


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
