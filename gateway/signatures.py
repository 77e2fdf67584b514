"""Service-to-service callers: requests signed with HMAC-SHA256 over the raw body.

    X-Client-Id: <client id>
    X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

Clients come from `HMAC_CLIENTS` (JSON: client id -> {"secret", "tenantId", "role"}, role
defaulting to "agent"); `HMAC_SECRET`, when set, is the secret of the client `default` (tenant
`HMAC_DEFAULT_TENANT`, role agent) unless `HMAC_CLIENTS` defines `default` itself. A signed
request authenticates as that client: Principal(subject=client id, credential="hmac").

Checks, in order (every refusal a 401 unless noted): both headers well formed, a known client,
`t` within `HMAC_TOLERANCE_SECONDS` of now (either side), the body read under the gateway's
largest body limit (413; the route's own limit still applies, to the same cached bytes), the
signature compared in constant time, then the replay cache: a signature is accepted once while
its timestamp is within tolerance (a replay is 401; a cache that cannot answer is 503, fail
closed). The signature covers the body and time, not the method or path: the replay cache and
TLS are what stop a captured request from being sent again or elsewhere.
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
from gateway.replay import ReplayCache, ReplayCacheUnavailable
from gateway.requests import largest_body_limit, read_body
from gateway.settings import GatewaySettings

SIGNATURE_HEADER: Final = "X-Signature"
CLIENT_HEADER: Final = "X-Client-Id"
DEFAULT_CLIENT: Final = "default"
CHALLENGE: Final = {"WWW-Authenticate": 'HMAC-SHA256 realm="metaagent", headers="X-Signature"'}
CLIENT_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
HEX_DIGEST: Final = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HmacClient:
    client_id: str
    tenant_id: str
    role: str
    secret: bytes = field(repr=False)


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
    """The hex HMAC-SHA256 of `"<timestamp>." + body`."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """An `X-Signature` value for `body` (a client's side; tests)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


def _refuse(detail: str) -> AuthError:
    return AuthError(401, "Unauthorized", detail, headers=CHALLENGE)


def _parse(header: str) -> tuple[int, str]:
    """(t, v1) of an `X-Signature` value; unknown elements (future versions) are ignored."""
    elements: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in elements:
            raise _refuse("malformed X-Signature: expected t=<seconds>,v1=<hex>")
        elements[name] = value
    t, v1 = elements.get("t", ""), elements.get("v1", "").lower()
    if not (t.isascii() and t.isdigit() and len(t) <= 12) or HEX_DIGEST.match(v1) is None:
        raise _refuse("malformed X-Signature: expected t=<seconds>,v1=<hex>")
    return int(t), v1


async def authenticate_signature(
    request: Request,
    settings: GatewaySettings,
    replay: ReplayCache,
    clock: Callable[[], float] = time.time,
) -> Principal:
    """The client behind a signed request; AuthError (401, 503) or PayloadTooLarge otherwise."""
    client_id = request.headers.get(CLIENT_HEADER, "")
    header = request.headers.get(SIGNATURE_HEADER)
    if header is None:
        raise _refuse("a signed request needs an X-Signature header")
    if CLIENT_PATTERN.match(client_id) is None:
        raise _refuse("a signed request needs a well-formed X-Client-Id header")
    timestamp, given = _parse(header)
    client = hmac_clients(settings).get(client_id)
    if client is None:
        raise _refuse("unknown client")
    now = clock()
    tolerance = settings.hmac_tolerance_seconds
    if abs(now - timestamp) > tolerance:
        raise _refuse(f"the signature's timestamp is more than {tolerance} s from now")
    body = await read_body(request, largest_body_limit(settings))
    if not hmac.compare_digest(signature(client.secret, timestamp, body), given):
        raise _refuse("the signature does not match the body")
    ttl = max(1, int(timestamp + tolerance - now) + 1)
    try:
        first = await replay.first_use(f"{client_id}:{given}", ttl)
    except ReplayCacheUnavailable:
        raise AuthError(
            503,
            "Service Unavailable",
            "signed requests cannot be checked for replay now",
            headers={"Retry-After": "1"},
        ) from None
    if not first:
        raise _refuse("the signature was already used")
    return Principal(client_id, client.tenant_id, client.role, credential="hmac")
