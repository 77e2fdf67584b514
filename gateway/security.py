"""The request's principal, as a FastAPI dependency: every protected route declares it.

`authenticate_bearer` is the one entry point for a token (routes and the hand-over WebSocket);
`current_principal` is the dependency HTTP routes declare through `Caller`."""

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp

from gateway.auth import Principal, authenticate
from gateway.settings import GatewaySettings


async def authenticate_bearer(app: ASGIApp, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer …` value; AuthError (401) otherwise."""
    settings: GatewaySettings = app.state.settings  # type: ignore[attr-defined]
    return authenticate(authorization, settings, app.state.jwt_key)  # type: ignore[attr-defined]


async def current_principal(request: Request) -> Principal:
    """The caller behind the request's credentials; AuthError (401/403/429) otherwise."""
    return await authenticate_bearer(request.app, request.headers.get("Authorization"))


Caller = Annotated[Principal, Depends(current_principal)]
