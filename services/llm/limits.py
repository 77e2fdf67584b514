"""Per-tenant request rate limits and daily token budgets, shared by every LLM replica.

Both limits sit on `RateCounters` (Redis for replicas, in-process for the embedded profile):

- rate: `llm:rate:<tenant>`, a fixed window of 60 s from the window's first request, cost 1;
- budget: `llm:tokens:<tenant>:<UTC date>`, a window ending at the next UTC midnight (the date is
  in the key, so a new day starts from zero at midnight, not 24 h after first use).

`RedisCounters` namespaces its keys, so in Redis they read `metaagent:rate:llm:rate:<tenant>`
and `metaagent:rate:llm:tokens:<tenant>:<date>`.

Reservation scheme: `admit` reserves the estimate on the day's counter in one atomic step (a
request whose estimate does not fit is refused), and `settle` charges the difference between
the actual usage and the reservation (a refund when the call used less). Two concurrent requests
therefore cannot both pass a budget that covers only one of them, while the day's counter ends
up holding what was really used. The budget is checked first: a refused request reserves
nothing, and one refused by the rate limit gets its reservation back, so no refusal consumes
anything.

Redis outage: limits fail OPEN by default. A counter that is UNAVAILABLE lets the request
through, unreserved and flagged `enforced=False`, with a warning at most once a minute; the
provider's own quotas still apply, and refusing every customer during a Redis blip is worse than
a few minutes of unmetered traffic. `fail_open=False` turns that into the UNAVAILABLE error.

Per-model accounting: `settle` also adds the actual tokens to a (tenant, UTC day) ledger keyed
by model (`metaagent:llm:usage:<tenant>:<date>`, a hash kept for a week in Redis), which
`usage()` reads back for reporting.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import grpc

from services.mesh.correlation import TENANT_PATTERN
from services.mesh.counters import MemoryCounters, RateCounters, open_counters
from services.mesh.errors import MeshError, unavailable
from services.mesh.metrics import RATE_LIMITED
from services.mesh.redis_client import redis_client

log = logging.getLogger("metaagent.llm.limits")

RATE_WINDOW_SECONDS = 60.0
UNBOUNDED = 1 << 53
"""A limit no counter reaches: used for unlimited budgets and for settling adjustments."""
USAGE_RETENTION_SECONDS = 7 * 86_400
WARN_EVERY_SECONDS = 60.0


@dataclass
class Admission:
    """A request let through by `TenantLimits.admit`; hand it back to `settle` exactly once."""

    tenant_id: str
    day: str
    """UTC date (ISO) whose budget the request was charged to."""
    day_ends: float
    """Clock time of the UTC midnight that ends `day`."""
    reserved: int
    """Tokens reserved on the day's counter (0 when the counter was unavailable)."""
    enforced: bool
    """False when a counter was unavailable and the request was let through unchecked."""
    settled: bool = False


class UsageLedger(Protocol):
    """Tokens used per (tenant, UTC day, model), for reporting."""

    async def record(self, tenant_id: str, day: str, model: str, tokens: int) -> None: ...
    async def read(self, tenant_id: str, day: str) -> dict[str, int]: ...
    async def close(self) -> None: ...


class MemoryUsage:
    """The ledger in this process; days older than the retention are dropped on write."""

    def __init__(self, retention_days: int = 7) -> None:
        self._retention = timedelta(days=retention_days)
        self._days: dict[tuple[str, str], dict[str, int]] = {}

    async def record(self, tenant_id: str, day: str, model: str, tokens: int) -> None:
        models = self._days.setdefault((tenant_id, day), {})
        models[model] = models.get(model, 0) + tokens
        oldest = (date.fromisoformat(day) - self._retention).isoformat()
        for stale in [k for k in self._days if k[1] < oldest]:
            del self._days[stale]

    async def read(self, tenant_id: str, day: str) -> dict[str, int]:
        return dict(self._days.get((tenant_id, day), {}))

    async def close(self) -> None:
        self._days.clear()


class RedisUsage:
    """The ledger as one Redis hash per (tenant, day): field = model, value = tokens."""

    PREFIX = "metaagent:llm:usage:"

    def __init__(self, client: Any, retention_seconds: int = USAGE_RETENTION_SECONDS) -> None:
        self._client = client
        self._retention = retention_seconds

    async def record(self, tenant_id: str, day: str, model: str, tokens: int) -> None:
        from redis.exceptions import RedisError

        key = f"{self.PREFIX}{tenant_id}:{day}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, model, tokens)
                pipe.expire(key, self._retention)
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise unavailable(f"token usage unavailable: {type(error).__name__}") from None

    async def read(self, tenant_id: str, day: str) -> dict[str, int]:
        from redis.exceptions import RedisError

        try:
            raw = await self._client.hgetall(f"{self.PREFIX}{tenant_id}:{day}")
        except (RedisError, OSError) as error:
            raise unavailable(f"token usage unavailable: {type(error).__name__}") from None
        return {_text(model): int(tokens) for model, tokens in raw.items()}

    async def close(self) -> None:
        await self._client.aclose()


class TenantLimits:
    """Admits LLM requests against a tenant's request rate and daily token budget."""

    def __init__(
        self,
        counters: RateCounters,
        clock: Callable[[], float] = time.time,
        *,
        usage: UsageLedger | None = None,
        fail_open: bool = True,
    ) -> None:
        self._counters = counters
        self._clock = clock
        self._usage: UsageLedger = usage if usage is not None else MemoryUsage()
        self.fail_open = fail_open
        self.unenforced = 0
        """Requests let through (or settlements skipped) because a counter was unavailable."""
        self._last_warning = float("-inf")

    async def admit(
        self,
        tenant_id: str,
        requests_per_minute: int,
        daily_token_budget: int,
        estimated_tokens: int,
    ) -> Admission:
        """Reserve `estimated_tokens` (at least 1) and one request, or raise RESOURCE_EXHAUSTED.

        0 means unlimited for either limit; the day's tokens are counted regardless, so a
        budget set later in the day sees what was already used.
        """
        _check_tenant(tenant_id)
        if min(requests_per_minute, daily_token_budget, estimated_tokens) < 0:
            raise ValueError("limits and estimates must not be negative")
        now = self._clock()
        day, day_ends = _utc_day(now)
        tokens_key = _tokens_key(tenant_id, day)
        cost = max(estimated_tokens, 1)
        reserved, enforced = 0, True
        try:
            decision = await self._counters.hit(
                tokens_key, daily_token_budget or UNBOUNDED, day_ends - now, cost
            )
        except MeshError as error:
            self._unavailable(error, "token budget")
            enforced = False
        else:
            if not decision.allowed:
                RATE_LIMITED.labels("llm_token_budget").inc()
                raise MeshError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "the tenant's daily token budget is exhausted",
                    "TOKEN_BUDGET_EXHAUSTED",
                    retry_after=day_ends - now,
                    metadata={"tenantId": tenant_id, "dailyTokenBudget": str(daily_token_budget)},
                )
            reserved = cost
        if requests_per_minute:
            try:
                enforced = await self._count_request(tenant_id, requests_per_minute) and enforced
            except BaseException:
                await self._adjust(tokens_key, -reserved, day_ends)
                raise
        return Admission(tenant_id, day, day_ends, reserved, enforced)

    async def _count_request(self, tenant_id: str, requests_per_minute: int) -> bool:
        """Count one request in the tenant's minute; False when the counter was unavailable."""
        try:
            decision = await self._counters.hit(
                _rate_key(tenant_id), requests_per_minute, RATE_WINDOW_SECONDS
            )
        except MeshError as error:
            self._unavailable(error, "rate limit")
            return False
        if not decision.allowed:
            RATE_LIMITED.labels("llm_requests").inc()
            raise MeshError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the tenant's request rate limit is reached",
                "RATE_LIMITED",
                retry_after=max(decision.retry_after, 0.001),
                metadata={"tenantId": tenant_id, "requestsPerMinute": str(requests_per_minute)},
            )
        return True

    async def settle(self, admission: Admission, actual_tokens: int, *, model: str) -> None:
        """Charge `actual_tokens` used by `model`: the difference to the reservation goes to the
        day's budget (a refund when less was used) and the tokens to the per-model ledger.

        Never raises for an unavailable counter or ledger: the answer has already been produced.
        After the admission's UTC day has ended, only the ledger is written.
        """
        if actual_tokens < 0:
            raise ValueError("actual_tokens must not be negative")
        if actual_tokens and not model:
            raise ValueError("model is required to record usage")
        self._close(admission)
        await self._adjust(
            _tokens_key(admission.tenant_id, admission.day),
            actual_tokens - admission.reserved,
            admission.day_ends,
        )
        if actual_tokens:
            try:
                await self._usage.record(admission.tenant_id, admission.day, model, actual_tokens)
            except MeshError as error:
                self._tolerate(error, "token usage")

    async def release(self, admission: Admission) -> None:
        """Give the reservation back (the call never reached a model); same as settling 0."""
        self._close(admission)
        await self._adjust(
            _tokens_key(admission.tenant_id, admission.day), -admission.reserved, admission.day_ends
        )

    async def usage(self, tenant_id: str, day: date | str | None = None) -> dict[str, int]:
        """Tokens used per model by `tenant_id` on the UTC `day` (today when omitted)."""
        _check_tenant(tenant_id)
        if day is None:
            day = _utc_day(self._clock())[0]
        return await self._usage.read(tenant_id, day if isinstance(day, str) else day.isoformat())

    async def close(self) -> None:
        await self._counters.close()
        await self._usage.close()

    @staticmethod
    def _close(admission: Admission) -> None:
        if admission.settled:
            raise RuntimeError("admission already settled")
        admission.settled = True

    async def _adjust(self, tokens_key: str, delta: int, day_ends: float) -> None:
        """Move the day's counter by `delta` unconditionally, while the day lasts."""
        remaining = day_ends - self._clock()
        if delta == 0 or remaining <= 0:
            return
        try:
            await self._counters.hit(tokens_key, UNBOUNDED, remaining, delta)
        except MeshError as error:
            self._tolerate(error, "token budget")

    def _unavailable(self, error: MeshError, what: str) -> None:
        """Let the request through on an outage when failing open; re-raise otherwise."""
        if not self.fail_open:
            raise error
        self._tolerate(error, what)

    def _tolerate(self, error: MeshError, what: str) -> None:
        """Carry on past an outage (warned about); re-raise any other error."""
        if error.code != grpc.StatusCode.UNAVAILABLE:
            raise error
        self._warn(what, error)

    def _warn(self, what: str, error: MeshError) -> None:
        self.unenforced += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(
                "%s unavailable, carrying on unmetered: %s (%d times so far)",
                what,
                error.message,
                self.unenforced,
            )


def open_tenant_limits(
    url: str, *, fail_open: bool = True, clock: Callable[[], float] = time.time
) -> TenantLimits:
    """`memory://` or "" (in-process) or `redis://...` (shared by every replica)."""
    scheme = url.split(":", 1)[0] if url else "memory"
    if scheme == "memory":
        return TenantLimits(MemoryCounters(), clock, usage=MemoryUsage(), fail_open=fail_open)
    counters = open_counters(url)
    return TenantLimits(counters, clock, usage=RedisUsage(redis_client(url)), fail_open=fail_open)


def _utc_day(now: float) -> tuple[str, float]:
    """The UTC date of `now` and the timestamp of the midnight that ends it."""
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    return today.isoformat(), midnight.timestamp()


def _rate_key(tenant_id: str) -> str:
    return f"llm:rate:{tenant_id}"


def _tokens_key(tenant_id: str, day: str) -> str:
    return f"llm:tokens:{tenant_id}:{day}"


def _check_tenant(tenant_id: str) -> None:
    if not TENANT_PATTERN.match(tenant_id):
        raise ValueError("invalid tenant id")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
