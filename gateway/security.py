"""The request's principal, as a FastAPI dependency: every protected route declares it."""

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Principal, authenticate
from gateway.settings import GatewaySettings


async def current_principal(request: Request) -> Principal:
    """The caller behind the request's Bearer token; AuthError (401) otherwise."""
    settings: GatewaySettings = request.app.state.settings
    return authenticate(request.headers.get("Authorization"), settings, request.app.state.jwt_key)


Caller = Annotated[Principal, Depends(current_principal)]
