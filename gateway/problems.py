"""RFC 9457 problem+json responses: the mapping from gRPC status codes and the app's
exception handlers, so that no route builds an error by hand and no trace reaches a client."""

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from gateway.admin_models import Problem
from gateway.auth import AuthError
from gateway.requests import PayloadTooLarge
from services.mesh.errors import MeshError

log = logging.getLogger("metaagent.gateway")
PROBLEM_JSON = "application/problem+json"

HTTP_STATUS_FOR_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "An RFC 9457 problem",
    "model": Problem,  # puts the Problem schema in components/schemas
    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    correlation_id: str = "",
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if correlation_id:
        body["correlationId"] = correlation_id
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def from_mesh_error(error: MeshError, correlation_id: str) -> JSONResponse:
    """The problem a downstream gRPC failure becomes; 5xx never echo internal details."""
    status = HTTP_STATUS_FOR_GRPC.get(error.code, 500)
    extra: dict[str, Any] = {"reason": error.reason}
    if error.violations:
        extra["errors"] = [{"field": v.field, "detail": v.description} for v in error.violations]
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    detail = error.message if status < 500 or status in (503, 504) else "internal error"
    return problem(
        status,
        error.code.name.replace("_", " ").title(),
        detail,
        correlation_id=correlation_id,
        extra=extra,
        headers=headers,
    )


def field_errors(error: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    items = (
        error.errors(include_url=False, include_input=False)
        if isinstance(error, ValidationError)
        else error.errors()
    )
    return [
        {
            "field": ".".join(str(p) for p in item["loc"] if p not in ("body", "query", "path"))
            or "body",
            "detail": item["msg"],
        }
        for item in items
    ]


def _cid(request: Request) -> str:
    return str(getattr(request.state, "correlation_id", ""))


def install_handlers(app: FastAPI) -> None:
    """Every failure a route raises, as problem+json carrying the correlation id."""

    @app.exception_handler(AuthError)
    async def _auth(request: Request, error: AuthError) -> JSONResponse:
        return problem(
            error.status,
            error.title,
            error.detail,
            correlation_id=_cid(request),
            headers=error.headers,
        )

    async def _invalid(
        request: Request, error: ValidationError | RequestValidationError
    ) -> JSONResponse:
        return problem(
            400,
            "Bad Request",
            "the request is not valid",
            correlation_id=_cid(request),
            extra={"errors": field_errors(error)},
        )

    for invalid in (ValidationError, RequestValidationError):
        app.add_exception_handler(invalid, _invalid)  # type: ignore[arg-type]

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(request: Request, error: PayloadTooLarge) -> JSONResponse:
        return problem(413, "Payload Too Large", str(error), correlation_id=_cid(request))

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _downstream(request: Request, error: grpc.aio.AioRpcError) -> JSONResponse:
        return from_mesh_error(MeshError.from_dependency(error), _cid(request))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(error.status_code, "Error")
        return problem(
            error.status_code,
            title,
            str(error.detail),
            correlation_id=_cid(request),
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return problem(500, "Internal Server Error", "internal error", correlation_id=_cid(request))
