"""JWT authentication and the tenant guard.

Algorithm allow-list: HS256 verified with `JWT_SECRET` only, RS256/ES256 verified with a key of
the JWKS (gateway/jwks.py) whose type fixes the algorithm; `none` and anything else is refused,
and an HS256 token is never checked against a JWKS key (no HS/RS confusion). `exp`, `iat` and
`sub` are required, `nbf` checked when present, all with `JWT_LEEWAY_SECONDS`; `aud`/`iss` when
configured. Claims: `sub`, `tenantId`, `role` (user, agent, tenant-admin, platform-admin).

Outside production, when `JWT_SECRET` is not set, a random secret is kept in the state
directory so that `metaagent token` and the local gateway agree with no configuration. In
production without `JWT_SECRET` (allowed only with `JWT_JWKS_URL`), HS256 tokens are refused.
"""

import math
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

import jwt

from gateway.jwks import JwksKeys, JwksUnavailable
from gateway.settings import GatewaySettings

ALGORITHMS: Final = ["HS256"]
"""What `issue_token` signs with; `authenticate` also accepts JWKS_ALGORITHMS."""
JWKS_ALGORITHMS: Final = frozenset({"RS256", "ES256"})
ROLES: Final = frozenset({"user", "agent", "tenant-admin", "platform-admin"})
DEV_SECRET_FILE: Final = "jwt_secret"  # noqa: S105 - a file name, not a secret


class AuthError(Exception):
    """A request refused at the door: credentials that do not hold (401) or do not allow it
    (403), ambiguous ones (400), a rate limit (429), keys that cannot be checked now (503)."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = (
            headers
            if headers is not None
            else ({"WWW-Authenticate": "Bearer"} if status == 401 else None)
        )


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: str
    role: str
    credential: str = "bearer"
    """How the caller proved itself: "bearer" (a JWT) or "hmac" (a signed request)."""
    expires_at: float | None = None
    """The token's `exp` (Unix seconds); None for credentials without one (HMAC). Long-lived
    connections (the hand-over WebSocket) stop acting for it once past (with the leeway)."""

    def acting_user(self, requested: str | None) -> str:
        """The user a turn is for: a `user` token acts only as its own subject; agents and
        admins act for the user the request names (or themselves)."""
        if self.role == "user":
            if requested and requested != self.subject:
                raise AuthError(403, "User mismatch", "a user token acts only for its subject")
            return self.subject
        return requested or self.subject

    def require_tenant(self, tenant_id: str) -> None:
        """The tenant guard: a token acts only for its own tenant (platform-admin excepted)."""
        if self.role != "platform-admin" and self.tenant_id != tenant_id:
            raise AuthError(403, "Tenant mismatch", "the token does not belong to this tenant")

    def require_role(self, *roles: str) -> None:
        """Refuse (403) a principal whose role is not one of `roles`; platform-admin passes."""
        if self.role != "platform-admin" and self.role not in roles:
            raise AuthError(403, "Forbidden", f"this route needs the role {' or '.join(roles)}")


def hs256_key(settings: GatewaySettings) -> bytes | None:
    """The HS256 secret, or None in production when only JWKS tokens are accepted."""
    if settings.jwt_secret is None and settings.production and settings.jwt_jwks_url:
        return None
    return ensure_dev_jwt_secret(settings)


def ensure_dev_jwt_secret(settings: GatewaySettings) -> bytes:
    """The development signing secret: `JWT_SECRET`, else one kept in the state directory."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    if settings.production:
        raise RuntimeError("JWT_SECRET is required in production")
    path = settings.state_dir / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def issue_token(
    settings: GatewaySettings, *, tenant_id: str, role: str, subject: str, ttl: int
) -> str:
    """A signed token for the local gateway (development and tests)."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}'")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "tenantId": tenant_id,
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, ensure_dev_jwt_secret(settings), algorithm=ALGORITHMS[0])


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthError(401, "Unauthorized", "a Bearer token is required")
    return authorization[7:].strip()


async def _verification_key(
    token: str, hs_key: bytes | None, jwks: JwksKeys | None
) -> tuple[Any, str]:
    """The key and the one algorithm to verify `token` with, from its (unverified) header."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise AuthError(401, "Unauthorized", f"invalid token: {error}") from error
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm == "HS256":
        if hs_key is None:
            raise AuthError(401, "Unauthorized", "invalid token: HS256 tokens are not accepted")
        return hs_key, algorithm
    if not isinstance(algorithm, str) or algorithm not in JWKS_ALGORITHMS:
        raise AuthError(401, "Unauthorized", "invalid token: the algorithm is not allowed")
    if jwks is None:
        raise AuthError(401, "Unauthorized", "invalid token: no key set for this algorithm")
    if not isinstance(kid, str) or not kid:
        raise AuthError(401, "Unauthorized", "invalid token: the header names no kid")
    try:
        found = await jwks.key(kid)
    except JwksUnavailable:
        raise AuthError(
            503,
            "Service Unavailable",
            "the token's signing keys cannot be fetched now",
            headers={"Retry-After": str(max(1, round(jwks.retry_after())))},
        ) from None
    if found is None:
        raise AuthError(401, "Unauthorized", "invalid token: unknown signing key (kid)")
    if found.algorithm != algorithm:
        raise AuthError(401, "Unauthorized", "invalid token: the algorithm does not fit its key")
    return found.key, algorithm


class VerifiedTokens:
    """HS256 tokens already verified, with their principal: verifying one again gives the same
    principal while its time claims hold (`iat` and `nbf` reached, `exp` not passed, with the
    leeway), since every other check depends only on the token, the key and the settings, and
    a verification costs more than the rest of the gateway's work on a turn. A held token is
    used only a second inside that window; near its edges, and for any token not held (every
    refused one among them), the token is verified in full. JWKS tokens are never held (their
    keys rotate). Bounded: the oldest token goes first."""

    MARGIN_SECONDS: Final = 1.0

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._held: dict[str, tuple[bytes, tuple[Any, ...], Principal, float, float]] = {}

    @staticmethod
    def _checks(settings: GatewaySettings) -> tuple[Any, ...]:
        """The settings a verification depends on (settings can be changed in place)."""
        return (
            settings.jwt_audience,
            settings.jwt_issuer,
            settings.jwt_leeway_seconds,
            settings.jwt_max_lifetime_seconds,
        )

    def get(self, token: str, key: bytes, settings: GatewaySettings) -> Principal | None:
        held = self._held.get(token)
        if held is None or held[0] != key or held[1] != self._checks(settings):
            return None
        now = time.time()
        if held[3] + self.MARGIN_SECONDS <= now < held[4] - self.MARGIN_SECONDS:
            return held[2]
        del self._held[token]  # about to be verified in full
        return None

    def put(
        self,
        token: str,
        key: bytes,
        settings: GatewaySettings,
        principal: Principal,
        claims: dict[str, Any],
    ) -> None:
        leeway = settings.jwt_leeway_seconds
        starts = max(int(claims["iat"]), int(claims["nbf"]) if "nbf" in claims else -math.inf)
        if len(self._held) >= self._limit:
            del self._held[next(iter(self._held))]
        self._held[token] = (
            key,
            self._checks(settings),
            principal,
            starts - leeway,
            int(claims["exp"]) + leeway,
        )


async def authenticate(
    authorization: str | None,
    settings: GatewaySettings,
    hs_key: bytes | None,
    jwks: JwksKeys | None = None,
    verified: VerifiedTokens | None = None,
) -> Principal:
    """The principal of a `Bearer` token; AuthError(401) for anything that does not verify,
    503 when its JWKS cannot be fetched and no key is held. `verified`: the HS256 tokens this
    gateway has verified, consulted and filled (see VerifiedTokens)."""
    token = _bearer_token(authorization)
    if verified is not None and hs_key is not None:
        held = verified.get(token, hs_key, settings)
        if held is not None:
            return held
    key, algorithm = await _verification_key(token, hs_key, jwks)
    required = ["exp", "iat", "sub"]
    required += ["aud"] if settings.jwt_audience else []
    required += ["iss"] if settings.jwt_issuer else []
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": required, "verify_aud": bool(settings.jwt_audience)},
        )
    except jwt.PyJWTError as error:
        raise AuthError(401, "Unauthorized", f"invalid token: {error}") from error
    lifetime = int(claims["exp"]) - int(claims["iat"])
    if lifetime > settings.jwt_max_lifetime_seconds:
        raise AuthError(401, "Unauthorized", "the token lives longer than this gateway accepts")
    tenant_id, role = claims.get("tenantId"), claims.get("role", "user")
    known_role = isinstance(role, str) and role in ROLES
    if not isinstance(tenant_id, str) or not tenant_id or not known_role:
        raise AuthError(401, "Unauthorized", "the token lacks a tenantId or has an unknown role")
    principal = Principal(
        subject=str(claims["sub"]), tenant_id=tenant_id, role=role, expires_at=float(claims["exp"])
    )
    if verified is not None and algorithm == "HS256":
        verified.put(token, key, settings, principal, claims)
    return principal
