"""Service-to-service callers: requests signed with HMAC-SHA256.

    X-Client-Id: <client id>
    X-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret, "<t>.<METHOD>.<target>.<body hash>")>
    X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

`v2` signs the method (upper case), the target as sent (the raw path, percent-encoding kept,
plus `?` and the raw query string when there is one) and the hex SHA-256 of the raw body, so a
signature is good for one request only: not for another method or path, and two requests made
in the same second no longer share a signature because their bodies do (every GET's is empty).
`v1` (the first scheme, kept for existing clients) signs only the time and the body; it is
accepted unless `HMAC_REQUIRE_V2` is set (by default in production). A header may carry both
(a client moving to v2): then v2 is checked and v1 is ignored, except that the replay cache
records it too, so the same header with v2 cut off cannot be sent again as a v1 request.

Clients come from `HMAC_CLIENTS` (JSON: client id -> {"secret", "tenantId", "role"}, role
defaulting to "agent"); `HMAC_SECRET`, when set, is the secret of the client `default` (tenant
`HMAC_DEFAULT_TENANT`, role agent) unless `HMAC_CLIENTS` defines `default` itself. A signed
request authenticates as that client: Principal(subject=client id, credential="hmac").

Checks, in order (every refusal a 401 unless noted): both headers well formed, a known client,
`t` within `HMAC_TOLERANCE_SECONDS` of now (either side), a v2 element when v2 is required, the
client's failed signatures from the caller's address within their limit (429 otherwise, before
the body is read), the body read under the limit of the route the request is for (413;
gateway/requests.py), the signature compared in constant time, then the replay cache: a
signature is accepted once while its timestamp is within tolerance (a replay is 401; a cache
that cannot answer is 503, fail closed). A signature that does not match and a replay each
count as a failed signature of the client from that address
(`GATEWAY_RATE_LIMIT_SIGNATURE_FAILURES_PER_MINUTE`, gateway/ratelimit.py).
"""

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from fastapi import Request

from gateway.auth import AuthError, Principal
from gateway.ratelimit import RateLimiter, caller_address
from gateway.replay import ReplayCache, ReplayCacheUnavailable
from gateway.requests import read_body
from gateway.settings import GatewaySettings

SIGNATURE_HEADER: Final = "X-Signature"
CLIENT_HEADER: Final = "X-Client-Id"
DEFAULT_CLIENT: Final = "default"
CHALLENGE: Final = {"WWW-Authenticate": 'HMAC-SHA256 realm="metaagent", headers="X-Signature"'}
CLIENT_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
HEX_DIGEST: Final = re.compile(r"^[0-9a-f]{64}$")
MALFORMED: Final = "malformed X-Signature: expected t=<seconds>,v2=<hex> (or v1=<hex>)"


@dataclass(frozen=True)
class HmacClient:
    client_id: str
    tenant_id: str
    role: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class SignatureHeader:
    """An `X-Signature` value: its timestamp and the hex digests it carries."""

    timestamp: int
    v1: str | None
    v2: str | None


def hmac_clients(settings: GatewaySettings) -> dict[str, HmacClient]:
    """The configured clients by id: `HMAC_CLIENTS`, plus `default` from `HMAC_SECRET`."""
    clients = {
        client_id: HmacClient(
            client_id, config.tenant_id, config.role, config.secret.get_secret_value().encode()
        )
        for client_id, config in settings.hmac_clients.items()
    }
    if settings.hmac_secret is not None and DEFAULT_CLIENT not in clients:
        secret = settings.hmac_secret.get_secret_value().encode()
        clients[DEFAULT_CLIENT] = HmacClient(
            DEFAULT_CLIENT, settings.hmac_default_tenant, "agent", secret
        )
    return clients


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The v1 digest: the hex HMAC-SHA256 of `"<timestamp>." + body`."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_v2(secret: bytes, timestamp: int, method: str, target: str, body: bytes) -> str:
    """The v2 digest: the hex HMAC-SHA256 of `"<timestamp>.<METHOD>.<target>.<sha256(body)>"`,
    `target` being the path and query as sent (`/v2/tenants/t/audit?pageSize=5`)."""
    digest = hashlib.sha256(body).hexdigest()
    message = f"{timestamp}.{method.upper()}.{target}.{digest}"
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign(
    secret: bytes,
    body: bytes,
    timestamp: int | None = None,
    *,
    method: str | None = None,
    target: str | None = None,
) -> str:
    """An `X-Signature` value (a client's side; tests): v2 for `method` and `target` when they
    are given, else v1."""
    t = int(time.time()) if timestamp is None else timestamp
    if method is None or target is None:
        return f"t={t},v1={signature(secret, t, body)}"
    return f"t={t},v2={signature_v2(secret, t, method, target, body)}"


def request_target(request: Request) -> str:
    """The path and query the client sent, as the v2 signature covers them: the raw path
    (percent-encoding kept) and, when not empty, `?` and the raw query string."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.partition(b"?")[0].decode("latin-1") if raw_path else request.url.path
    query: bytes = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _refuse(detail: str) -> AuthError:
    return AuthError(401, "Unauthorized", detail, headers=CHALLENGE)


def _parse(header: str) -> SignatureHeader:
    """The elements of an `X-Signature` value; unknown elements (future versions) are
    ignored, a repeated one is malformed."""
    elements: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in elements:
            raise _refuse(MALFORMED)
        elements[name] = value
    t = elements.get("t", "")
    digests = {name: elements[name].lower() for name in ("v1", "v2") if name in elements}
    well_formed = all(HEX_DIGEST.match(value) for value in digests.values())
    if not (t.isascii() and t.isdigit() and len(t) <= 12) or not digests or not well_formed:
        raise _refuse(MALFORMED)
    return SignatureHeader(int(t), digests.get("v1"), digests.get("v2"))


async def authenticate_signature(
    request: Request,
    settings: GatewaySettings,
    replay: ReplayCache,
    limiter: RateLimiter | None = None,
    clock: Callable[[], float] = time.time,
) -> Principal:
    """The client behind a signed request; AuthError (401, 429, 503) or PayloadTooLarge."""
    client_id = request.headers.get(CLIENT_HEADER, "")
    header = request.headers.get(SIGNATURE_HEADER)
    if header is None:
        raise _refuse("a signed request needs an X-Signature header")
    if CLIENT_PATTERN.match(client_id) is None:
        raise _refuse("a signed request needs a well-formed X-Client-Id header")
    signed = _parse(header)
    client = hmac_clients(settings).get(client_id)
    if client is None:
        raise _refuse("unknown client")
    now = clock()
    tolerance = settings.hmac_tolerance_seconds
    if abs(now - signed.timestamp) > tolerance:
        raise _refuse(f"the signature's timestamp is more than {tolerance} s from now")
    if signed.v2 is None and settings.hmac_require_v2:
        raise _refuse("this gateway requires a v2 signature (method, path and body signed)")
    address = caller_address(request)
    if limiter is not None:
        await limiter.limit_signature_failures(client.tenant_id, client_id, address, failed=False)
    body = await read_body(request)
    if signed.v2 is not None:
        expected = signature_v2(
            client.secret, signed.timestamp, request.method, request_target(request), body
        )
        given, mismatch = signed.v2, "the signature does not match the request"
    else:
        expected = signature(client.secret, signed.timestamp, body)
        given, mismatch = signed.v1 or "", "the signature does not match the body"
    if not hmac.compare_digest(expected, given):
        await _failed(limiter, client, address)
        raise _refuse(mismatch)
    ttl = max(1, int(signed.timestamp + tolerance - now) + 1)
    try:
        if signed.v2 is None:
            first = await replay.first_use(_v1_key(client_id, given), ttl)
        else:
            first = await replay.first_use(f"{client_id}:v2:{given}", ttl)
            # the same header without its v2 element must not pass as a fresh v1 request
            if first and _v1_matches(signed, client, body):
                await replay.first_use(_v1_key(client_id, signed.v1 or ""), ttl)
    except ReplayCacheUnavailable:
        raise AuthError(
            503,
            "Service Unavailable",
            "signed requests cannot be checked for replay now",
            headers={"Retry-After": "1"},
        ) from None
    if not first:
        await _failed(limiter, client, address)
        raise _refuse("the signature was already used")
    return Principal(client_id, client.tenant_id, client.role, credential="hmac")


def _v1_key(client_id: str, digest: str) -> str:
    """The replay cache's key of a v1 signature (as before v2, so replicas of either agree)."""
    return f"{client_id}:{digest}"


def _v1_matches(signed: SignatureHeader, client: HmacClient, body: bytes) -> bool:
    expected = signature(client.secret, signed.timestamp, body)
    return signed.v1 is not None and hmac.compare_digest(expected, signed.v1)


async def _failed(limiter: RateLimiter | None, client: HmacClient, address: str) -> None:
    """Count a failed signature of `client` from `address` (AuthError 429 when past its
    limit)."""
    if limiter is not None:
        await limiter.limit_signature_failures(
            client.tenant_id, client.client_id, address, failed=True
        )
