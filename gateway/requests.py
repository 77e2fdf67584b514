"""Reading request bodies under a size limit and validating them into models.

Each route that reads a body declares its limit with `@body_limit(...)` (a function of the
settings, e.g. `GATEWAY_MAX_KNOWLEDGE_BYTES` for ingestion); a route that declares none takes
`GATEWAY_MAX_BODY_BYTES`. `route_body_limit` finds the limit of the route a request matched, so
the HMAC check (gateway/signatures.py), which runs before the route and must read the body to
verify it, never reads more of an unauthenticated request than its route accepts.

The body is read once and kept in `request.state.raw_body`: the route then sees the very bytes
that were signed.
"""

from collections.abc import Callable
from typing import Final, TypeVar

from fastapi import Request
from pydantic import BaseModel

from gateway.settings import GatewaySettings


class PayloadTooLarge(Exception):
    """A body or a field past its limit: 413."""


Model = TypeVar("Model", bound=BaseModel)
Endpoint = TypeVar("Endpoint", bound=Callable[..., object])
BodyLimit = Callable[[GatewaySettings], int]
"""A route's body limit, from the app's settings."""
_LIMIT_ATTRIBUTE: Final = "__gateway_body_limit__"


def body_limit(limit: BodyLimit) -> Callable[[Endpoint], Endpoint]:
    """Declare the body limit of the route whose endpoint this decorates (below the route
    decorator, so the route registers the marked function)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _LIMIT_ATTRIBUTE, limit)
        return endpoint

    return mark


def route_body_limit(request: Request) -> int:
    """The body limit of the route `request` matched: its declared one, else
    `GATEWAY_MAX_BODY_BYTES`."""
    settings: GatewaySettings = request.app.state.settings
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    declared: BodyLimit | None = getattr(endpoint, _LIMIT_ATTRIBUTE, None)
    return declared(settings) if declared is not None else settings.max_body_bytes


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The body (read once, then cached), refused as soon as it passes `limit` bytes (by
    default the route's limit)."""
    if limit is None:
        limit = route_body_limit(request)
    cached: bytes | None = getattr(request.state, "raw_body", None)
    if cached is None:
        declared = request.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > limit:
                raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        cached = request.state.raw_body = bytes(received)
    if len(cached) > limit:
        raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    return cached


async def json_body(request: Request, model: type[Model], limit: int | None = None) -> Model:
    """The body validated as `model` (under the route's limit unless `limit` is given);
    pydantic's ValidationError becomes a 400 problem."""
    raw = await read_body(request, limit)
    return model.model_validate_json(raw or b"null")
