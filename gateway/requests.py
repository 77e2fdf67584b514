"""Reading request bodies under a size limit and validating them into models.

The body is read once and kept in `request.state.raw_body`: the HMAC check (gateway/signatures.py)
reads it before the route, and the route then sees the very bytes that were signed. A body read
under a larger limit is still refused by a route whose own limit it passes.
"""

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel

from gateway.settings import GatewaySettings


class PayloadTooLarge(Exception):
    """A body or a field past its limit: 413."""


Model = TypeVar("Model", bound=BaseModel)


def largest_body_limit(settings: GatewaySettings) -> int:
    """The largest body any route accepts: the limit under which a signed body is read."""
    return max(
        settings.max_body_bytes, settings.max_knowledge_bytes, settings.max_tenant_config_bytes
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body (read once, then cached), refused as soon as it passes `limit` bytes."""
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


async def json_body(request: Request, model: type[Model], limit: int) -> Model:
    """The body validated as `model`; pydantic's ValidationError becomes a 400 problem."""
    raw = await read_body(request, limit)
    return model.model_validate_json(raw or b"null")
