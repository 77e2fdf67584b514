"""Per-client and per-tenant request limits at the gateway, in fixed one-minute windows.

The counters are the mesh's `RateCounters` port (services/mesh/counters.py): in-process by
default, Redis (shared by every replica) when `GATEWAY_RATE_LIMIT_URL` is `redis://…`. Limits:
`GATEWAY_RATE_LIMIT_CLIENT_PER_MINUTE` per caller (token subject or HMAC client, within its
tenant) and `GATEWAY_RATE_LIMIT_TENANT_PER_MINUTE` per tenant; 0 disables either. The caller's
own window is counted first, so one noisy caller is refused before it eats its tenant's budget.
A refusal is 429 with `Retry-After` (the seconds left in the window).

Fail-open: when the counters cannot answer (Redis down) the request passes unlimited; a warning
is logged once per outage and `meta_agent_gateway_rate_limit_unchecked_total` counts them.
"""

import logging
import math
from typing import Final

from prometheus_client import Counter

from gateway.auth import AuthError, Principal
from gateway.settings import GatewaySettings
from services.mesh.counters import RateCounters
from services.mesh.errors import MeshError

log = logging.getLogger("metaagent.gateway.ratelimit")
WINDOW_SECONDS: Final = 60.0
UNCHECKED = Counter(
    "meta_agent_gateway_rate_limit_unchecked_total",
    "Requests let through unlimited because the rate counters could not answer.",
)


class RateLimiter:
    def __init__(self, settings: GatewaySettings, counters: RateCounters) -> None:
        self._settings = settings
        self._counters = counters
        self._failing = False

    async def check(self, principal: Principal) -> None:
        """Count the request against its caller and tenant; AuthError(429) past a limit."""
        tenant = principal.tenant_id
        windows = (
            (
                f"gateway:client:{tenant}:{principal.credential}:{principal.subject}",
                self._settings.rate_limit_client_per_minute,
                "this caller",
            ),
            (
                f"gateway:tenant:{tenant}",
                self._settings.rate_limit_tenant_per_minute,
                "this tenant",
            ),
        )
        for key, limit, whom in windows:
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
                raise AuthError(
                    429,
                    "Too Many Requests",
                    f"{whom} may make {limit} requests per minute",
                    headers={"Retry-After": str(max(1, math.ceil(decision.retry_after)))},
                )

    def _fail_open(self, error: MeshError) -> None:
        UNCHECKED.inc()
        if not self._failing:
            self._failing = True
            log.warning("gateway rate counters unavailable, not limiting: %s", error.message)

    async def close(self) -> None:
        await self._counters.close()
