"""The request's principal, as a FastAPI dependency: every protected route declares it.

`authenticate_bearer` is the one entry point for a token (routes and the hand-over WebSocket);
`current_principal` is the dependency HTTP routes declare through `Caller`: a Bearer token or an
HMAC signature (gateway/signatures.py, which counts a client's failed signatures in the rate
limiter too), then the rate limits (gateway/ratelimit.py). A request carrying both a Bearer
token and a signature is refused as ambiguous (400): the gateway never guesses which credential
the caller meant.

The verifiers, the replay cache and the rate counters live in one `Security` on `app.state`,
opened on first use (or by `open_security` in the app's lifespan) and closed by
`close_security`.
"""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp

from gateway.auth import AuthError, Principal, VerifiedTokens, authenticate, hs256_key
from gateway.jwks import JwksKeys, open_jwks
from gateway.ratelimit import RateLimiter
from gateway.replay import ReplayCache, open_replay_cache
from gateway.settings import GatewaySettings
from gateway.signatures import CLIENT_HEADER, SIGNATURE_HEADER, authenticate_signature
from services.mesh.counters import open_counters


@dataclass
class Security:
    hs_key: bytes | None
    jwks: JwksKeys | None
    replay: ReplayCache
    limiter: RateLimiter
    verified: VerifiedTokens = field(default_factory=VerifiedTokens)

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()
        await self.replay.close()
        await self.limiter.close()


def open_security(app: ASGIApp) -> Security:
    """The app's `Security`, made from its settings on first call."""
    state = app.state  # type: ignore[attr-defined]
    found: Security | None = getattr(state, "security", None)
    if found is None:
        settings: GatewaySettings = state.settings
        found = state.security = Security(
            hs_key=hs256_key(settings),
            jwks=open_jwks(settings),
            replay=open_replay_cache(settings.replay_cache_url),
            limiter=RateLimiter(settings, open_counters(settings.rate_limit_url)),
        )
    return found


async def close_security(app: ASGIApp) -> None:
    """Close what `open_security` opened (HTTP and Redis clients); it reopens on next use."""
    state = app.state  # type: ignore[attr-defined]
    found: Security | None = getattr(state, "security", None)
    if found is not None:
        state.security = None
        await found.close()


async def authenticate_bearer(app: ASGIApp, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer …` value; AuthError (401, 503) otherwise."""
    settings: GatewaySettings = app.state.settings  # type: ignore[attr-defined]
    security = open_security(app)
    return await authenticate(
        authorization, settings, security.hs_key, security.jwks, security.verified
    )


async def current_principal(request: Request) -> Principal:
    """The caller behind the request's credentials; AuthError (400/401/403/429/503) otherwise."""
    authorization = request.headers.get("Authorization")
    signed = SIGNATURE_HEADER in request.headers or CLIENT_HEADER in request.headers
    if signed and authorization is not None:
        raise AuthError(
            400, "Ambiguous credentials", "send a Bearer token or an HMAC signature, not both"
        )
    security = open_security(request.app)
    if signed:
        settings: GatewaySettings = request.app.state.settings
        principal = await authenticate_signature(
            request, settings, security.replay, security.limiter
        )
    else:
        principal = await authenticate_bearer(request.app, authorization)
    await security.limiter.check(principal)
    return principal


Caller = Annotated[Principal, Depends(current_principal)]
