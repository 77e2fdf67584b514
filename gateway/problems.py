"""RFC 9457 problem+json responses, including the mapping from gRPC status codes."""

from typing import Any

import grpc
from fastapi.responses import JSONResponse

from services.mesh.errors import MeshError

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
