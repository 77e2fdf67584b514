"""Per-client and per-tenant request limits at the gateway, in fixed one-minute windows.

The counters are the mesh's `RateCounters` port (services/mesh/counters.py): in-process by
default, Redis (shared by every replica) when `GATEWAY_RATE_LIMIT_URL` is `redis://…`. Limits:
`GATEWAY_RATE_LIMIT_CLIENT_PER_MINUTE` per caller (token subject or HMAC client, within its
tenant) and `GATEWAY_RATE_LIMIT_TENANT_PER_MINUTE` per tenant; 0 disables either. The caller's
own window is counted first, so one noisy caller is refused before it eats its tenant's budget.
A refusal is 429 with `Retry-After` (the seconds left in the window).

Failed signatures: `GATEWAY_RATE_LIMIT_SIGNATURE_FAILURES_PER_MINUTE` per HMAC client id and
network address (a signature that does not match, a replay; gateway/signatures.py). Once a
client id has used them up from an address, its signed requests from that address are refused
(429) before their body is read or their signature checked, until the window ends: signatures
cannot be tried without limit, and someone who knows a client id and sends bad signatures
holds off only their own address, not the real client calling from its own. The address is the
ASGI peer (`request.client.host`); behind a reverse proxy it is the client's only when uvicorn
trusts that proxy's X-Forwarded-For (`FORWARDED_ALLOW_IPS`, loopback by default), otherwise
every caller shares the proxy's address and so its window.

Fail-open: when the counters cannot answer (Redis down) the request passes unlimited; a warning
is logged once per outage and `meta_agent_gateway_rate_limit_unchecked_total` counts them.
"""

import logging
import math
from typing import Final

from prometheus_client import Counter
from starlette.requests import HTTPConnection

from gateway.auth import AuthError, Principal
from gateway.settings import GatewaySettings
from services.mesh.counters import RateCounters
from services.mesh.errors import MeshError
from services.mesh.metrics import RATE_LIMITED

log = logging.getLogger("metaagent.gateway.ratelimit")
WINDOW_SECONDS: Final = 60.0
UNCHECKED = Counter(
    "meta_agent_gateway_rate_limit_unchecked_total",
    "Requests let through unlimited because the rate counters could not answer.",
)


def caller_address(connection: HTTPConnection) -> str:
    """The network address a request comes from (see the module docstring for proxies); ""
    when the server reports none."""
    return connection.client.host if connection.client is not None else ""


class RateLimiter:
    def __init__(self, settings: GatewaySettings, counters: RateCounters) -> None:
        self._settings = settings
        self._counters = counters
        self._failing = False

    async def limit_signature_failures(
        self, tenant_id: str, client_id: str, address: str, *, failed: bool
    ) -> None:
        """The client's failed signatures from `address`: `failed=False` checks, before the
        signature is (AuthError 429 while they have used up their window; counts nothing);
        `failed=True` counts one (AuthError 429 when it is past the limit; the caller answers
        401 otherwise)."""
        limit = self._settings.rate_limit_signature_failures_per_minute
        if limit <= 0:
            return
        key = f"gateway:signature-failures:{tenant_id}:{client_id}:{address}"
        try:
            window = await self._counters.hit(key, limit, WINDOW_SECONDS, cost=int(failed))
        except MeshError as error:
            self._fail_open(error)
            return
        # a check (cost 0) is refused once the window is full; a failure, once past it
        if not window.allowed or (not failed and window.used >= limit):
            RATE_LIMITED.labels("gateway_signature_failures").inc()
            raise self._too_many(self._failed_signatures(limit), window.retry_after)

    @staticmethod
    def _failed_signatures(limit: int) -> str:
        return (
            f"{limit} bad signatures from this client at this address within a minute: "
            "wait for Retry-After"
        )

    @staticmethod
    def _too_many(detail: str, retry_after: float) -> AuthError:
        return AuthError(
            429,
            "Too Many Requests",
            detail,
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )

    async def check(self, principal: Principal) -> None:
        """Count the request against its caller and tenant; AuthError(429) past a limit."""
        tenant = principal.tenant_id
        windows = (
            (
                "gateway_client",
                f"gateway:client:{tenant}:{principal.credential}:{principal.subject}",
                self._settings.rate_limit_client_per_minute,
                "this caller",
            ),
            (
                "gateway_tenant",
                f"gateway:tenant:{tenant}",
                self._settings.rate_limit_tenant_per_minute,
                "this tenant",
            ),
        )
        for scope, key, limit, whom in windows:
            if limit <= 0:
                continue
            try:
                decision = await self._counters.hit(key, limit, WINDOW_SECONDS)
            except MeshError as error:
                self._fail_open(error)
                return
            if self._failing:
                self._failing = False
                log.info("gateway rate counters answer again")
            if not decision.allowed:
                RATE_LIMITED.labels(scope).inc()
                raise self._too_many(
                    f"{whom} may make {limit} requests per minute", decision.retry_after
                )

    def _fail_open(self, error: MeshError) -> None:
        UNCHECKED.inc()
        if not self._failing:
            self._failing = True
            log.warning("gateway rate counters unavailable, not limiting: %s", error.message)

    async def close(self) -> None:
        await self._counters.close()
