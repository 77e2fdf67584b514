"""Reading request bodies under a size limit and validating them into models."""

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel


class PayloadTooLarge(Exception):
    """A body or a field past its limit: 413."""


Model = TypeVar("Model", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` bytes (declared or streamed)."""
    declared = request.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    return bytes(received)


async def json_body(request: Request, model: type[Model], limit: int) -> Model:
    """The body validated as `model`; pydantic's ValidationError becomes a 400 problem."""
    raw = await read_body(request, limit)
    request.state.raw_body = raw
    return model.model_validate_json(raw or b"null")
