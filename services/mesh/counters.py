"""Rate counters: fixed windows with a cost per hit, on Redis or in-process.

One primitive serves request rate limits (cost 1 per request, a window of seconds) and token
budgets (cost = tokens, a window of a day). Keys should carry the tenant; callers answer a
refusal with RESOURCE_EXHAUSTED and `retry_after`. A hit of cost 0 counts nothing and reads the
window: `used >= limit` then says the next hit would be refused.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from services.mesh.errors import unavailable
from services.mesh.redis_client import redis_client

WINDOW_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
if count > tonumber(ARGV[3]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return {0, count - tonumber(ARGV[1]), ttl}
end
return {1, count, ttl}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    used: int
    """What the window has consumed, this hit included when allowed."""
    retry_after: float
    """Seconds until the window resets."""


class RateCounters(Protocol):
    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> RateDecision:
        """Count `cost` against `key` unless it would pass `limit` within the window."""

    async def close(self) -> None: ...


SWEEP_EVERY: Final = 1024
"""MemoryCounters drops expired windows once per this many hits (or per as many hits as it
holds windows, when more: a sweep costs one pass over them)..."""
SWEEP_ABOVE: Final = 4096
"""...and as soon as it holds more windows than this, or than twice those the last sweep left,
so memory follows the keys in use, not every key ever seen."""


class MemoryCounters:
    """In-process windows (embedded profile: one process). Expired windows are swept out,
    amortised over the hits (SWEEP_EVERY, SWEEP_ABOVE): one key per token subject must not make
    a long-running process grow without bound."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._hits_since_sweep = 0
        self._sweep_above = SWEEP_ABOVE

    def __len__(self) -> int:
        """The windows held, expired ones not yet swept included."""
        return len(self._windows)

    def _sweep(self, now: float) -> None:
        self._windows = {key: kept for key, kept in self._windows.items() if kept[0] > now}
        self._hits_since_sweep = 0
        self._sweep_above = max(SWEEP_ABOVE, 2 * len(self._windows))

    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> RateDecision:
        now = self._clock()
        self._hits_since_sweep += 1
        held = len(self._windows)
        if self._hits_since_sweep >= max(SWEEP_EVERY, held) or held > self._sweep_above:
            self._sweep(now)
        ends, used = self._windows.get(key, (0.0, 0))
        if ends <= now:
            ends, used = now + window, 0
        if used + cost > limit:
            self._windows[key] = (ends, used)
            return RateDecision(False, used, ends - now)
        self._windows[key] = (ends, used + cost)
        return RateDecision(True, used + cost, ends - now)

    async def close(self) -> None:
        self._windows.clear()


class RedisCounters:
    """Windows in Redis, shared by every replica; one atomic script per hit."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._script = client.register_script(WINDOW_SCRIPT)

    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> RateDecision:
        from redis.exceptions import RedisError

        try:
            allowed, used, ttl_ms = await self._script(
                keys=[f"metaagent:rate:{key}"], args=[cost, max(int(window * 1000), 1), limit]
            )
        except (RedisError, OSError) as error:
            raise unavailable(f"rate counters unavailable: {type(error).__name__}") from None
        return RateDecision(bool(allowed), int(used), max(int(ttl_ms), 0) / 1000)

    async def close(self) -> None:
        await self._client.aclose()


def open_counters(url: str) -> RateCounters:
    """`memory://` (embedded default) or `redis://...`; the driver is imported only for Redis."""
    scheme = url.split(":", 1)[0]
    if scheme == "memory":
        return MemoryCounters()
    if scheme in ("redis", "rediss"):
        return RedisCounters(redis_client(url))
    raise ValueError(f"unsupported rate counter URL scheme '{scheme}' (memory://, redis://)")
