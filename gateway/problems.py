"""RFC 9457 problem+json responses: the mapping from gRPC status codes and the app's
exception handlers, so that no route builds an error by hand and no trace reaches a client;
and the OpenAPI document made to say so (`document_problems`).

A request that fails validation is a 400 problem, never FastAPI's 422 `HTTPValidationError`:
the document drops the 422 FastAPI adds to every route with parameters or a body, documents the
400 problem there instead, and lists problem responses under `application/problem+json` only.
"""

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final, Literal

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from gateway.admin_models import Problem
from gateway.auth import AuthError
from gateway.preconditions import strong_etag
from gateway.requests import PayloadTooLarge
from services.mesh.errors import MeshError
from services.mesh.tenant_rules import TENANT_REVISION_MISMATCH

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
HTTP_STATUS_FOR_REASON = {
    (grpc.StatusCode.FAILED_PRECONDITION, TENANT_REVISION_MISMATCH): 412,
}
"""Refusals whose reason says more than their code: a write conditioned on a revision the
resource no longer has is 412 Precondition Failed (its `currentRevision` is the ETag)."""

COMPONENTS: Final = "#/components/schemas/"
PROBLEM_DESCRIPTION: Final = "An RFC 9457 problem"
PROBLEM_RESPONSE: dict[str, Any] = {
    "description": PROBLEM_DESCRIPTION,
    "model": Problem,  # puts the Problem schema in components/schemas
    "content": {PROBLEM_JSON: {"schema": {"$ref": f"{COMPONENTS}Problem"}}},
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's documented refusals: each of `statuses` answered with a problem."""
    return {status: PROBLEM_RESPONSE for status in statuses}


FASTAPI_VALIDATION_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")
"""The schemas of FastAPI's default 422, which this app never sends."""

_BODY_MODELS: dict[str, type[BaseModel]] = {}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """`{"$ref": "#/components/schemas/<model>"}` for a model FastAPI never sees, such as the
    body of a route that reads and validates it itself (under its own size limit):
    `document_problems` puts the model, and the models it nests, in `components/schemas`."""
    _BODY_MODELS[model.__name__] = model
    return {"$ref": f"{COMPONENTS}{model.__name__}"}


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of such a route: required, `application/json`, `model`."""
    return {"required": True, "content": {"application/json": {"schema": schema_ref(model)}}}


def title_of(status: int) -> str:
    """The problem title of an HTTP status: its reason phrase ("Unsupported Media Type")."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_document(
    status: int,
    title: str,
    detail: str,
    *,
    correlation_id: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem+json document itself, for a body that is not a response of its own (an SSE
    `error` event, a WebSocket error frame)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if correlation_id:
        body["correlationId"] = correlation_id
    body.update(extra or {})
    return body


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    correlation_id: str = "",
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_document(status, title, detail, correlation_id=correlation_id, extra=extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def from_mesh_error(error: MeshError, correlation_id: str) -> JSONResponse:
    """The problem a downstream gRPC failure becomes; 5xx never echo internal details."""
    body, headers = mesh_problem(error, correlation_id)
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def mesh_problem(error: MeshError, correlation_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """`from_mesh_error`'s document and headers (same mapping, same redaction)."""
    status = HTTP_STATUS_FOR_REASON.get((error.code, error.reason))
    title = title_of(status) if status else error.code.name.replace("_", " ").title()
    status = status or HTTP_STATUS_FOR_GRPC.get(error.code, 500)
    extra: dict[str, Any] = {"reason": error.reason}
    if error.violations:
        extra["errors"] = [{"field": v.field, "detail": v.description} for v in error.violations]
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    current = error.metadata.get("currentRevision", "")
    if status == 412 and current.isascii() and current.isdigit() and int(current) > 0:
        headers["ETag"] = strong_etag(int(current))
    detail = error.message if status < 500 or status in (503, 504) else "internal error"
    body = problem_document(status, title, detail, correlation_id=correlation_id, extra=extra)
    return body, headers


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

    @app.exception_handler(MeshError)
    async def _refused(request: Request, error: MeshError) -> JSONResponse:
        """A refusal the gateway decided itself in the mesh's terms (e.g. an If-Match that
        names another revision): mapped as a downstream one would be."""
        return from_mesh_error(error, _cid(request))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        return problem(
            error.status_code,
            title_of(error.status_code),
            str(error.detail),
            correlation_id=_cid(request),
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return problem(500, "Internal Server Error", "internal error", correlation_id=_cid(request))

    document_problems(app)


# --- the OpenAPI document ------------------------------------------------------------------


def document_problems(app: FastAPI) -> None:
    """Make `app.openapi()` (and so `/openapi.json` and `/docs`) document the errors this app
    sends: see the module's docstring and `tidy_openapi`."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tidy_openapi(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def tidy_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with, in place:
    - the models of `schema_ref` (request bodies FastAPI never saw) in the components;
    - every 422 that is FastAPI's default replaced by the 400 problem (validation failures are
      400s here), and the default's schemas dropped when nothing refers to them any more;
    - problem responses documented as `application/problem+json` only, each described by its
      status ("Unsupported Media Type: an RFC 9457 problem").
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    text = json.dumps(document)
    referenced = [m for m in _BODY_MODELS.values() if f'"{COMPONENTS}{m.__name__}"' in text]
    _add_models(schemas, referenced, "validation")
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _tidy_responses(operation["responses"])
    text = json.dumps(document)
    if f'"{COMPONENTS}Problem"' in text:  # a 400 added where no route had a problem yet
        _add_models(schemas, [Problem], "serialization")
    for name in FASTAPI_VALIDATION_SCHEMAS:  # HTTPValidationError refers to ValidationError
        if f'"{COMPONENTS}{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    return document


def _add_models(
    schemas: dict[str, Any],
    models: list[type[BaseModel]],
    mode: Literal["validation", "serialization"],
) -> None:
    """`models` and the models they nest, under their names; a name FastAPI already used for a
    different schema is a bug in the document."""
    if not models:
        return
    _, generated = models_json_schema(
        [(model, mode) for model in models], ref_template=COMPONENTS + "{model}"
    )
    for name, schema in generated.get("$defs", {}).items():
        if name in schemas and mode == "serialization":
            continue  # FastAPI's own (response models are its business)
        if schemas.setdefault(name, schema) != schema:
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")


def _is_fastapi_validation_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == f"{COMPONENTS}HTTPValidationError")


def _tidy_responses(responses: dict[str, Any]) -> None:
    default_422 = responses.get("422")
    if isinstance(default_422, dict) and _is_fastapi_validation_error(default_422):
        del responses["422"]
        responses.setdefault("400", _problem_response())
    for status, response in responses.items():
        content = response.get("content", {})
        if PROBLEM_JSON not in content:
            continue
        # `"model": Problem` documents application/json too; problems are never sent as that
        if content.get("application/json") == content[PROBLEM_JSON]:
            del content["application/json"]
        if response.get("description") == PROBLEM_DESCRIPTION and status.isdigit():
            response["description"] = f"{title_of(int(status))}: an RFC 9457 problem"


def _problem_response() -> dict[str, Any]:
    return {
        "description": PROBLEM_DESCRIPTION,
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"{COMPONENTS}Problem"}}},
    }
