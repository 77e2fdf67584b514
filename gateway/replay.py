"""The replay cache of HMAC signatures: a signature is accepted once within its validity window.

`open_replay_cache(url)`: `memory://` (embedded default, one process) or `redis://…` (shared by
every replica, `SET key NX EX`; the driver is imported only then). The cache fails closed: when
Redis cannot answer, `ReplayCacheUnavailable` is raised and the request is refused (503), since a
signed request that cannot be checked for replay must not pass.
"""

import heapq
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from services.mesh.redis_client import redis_client

KEY_PREFIX: Final = "metaagent:gateway:replay:"


class ReplayCacheUnavailable(Exception):
    """The cache cannot tell whether a signature was seen (Redis down)."""


class ReplayCache(Protocol):
    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        """Record `key` for `ttl_seconds`; False when it is already recorded (a replay)."""

    async def close(self) -> None: ...


class MemoryReplayCache:
    """Seen keys in this process, each forgotten once its window has passed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._queue: list[tuple[float, str]] = []

    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        now = self._clock()
        while self._queue and self._queue[0][0] <= now:
            expires, old = heapq.heappop(self._queue)
            if self._expiry.get(old) == expires:
                del self._expiry[old]
        if key in self._expiry:
            return False
        expires = now + ttl_seconds
        self._expiry[key] = expires
        heapq.heappush(self._queue, (expires, key))
        return True

    def __len__(self) -> int:
        return len(self._expiry)

    async def close(self) -> None:
        self._expiry.clear()
        self._queue.clear()


class RedisReplayCache:
    """Seen keys in Redis: one `SET key 1 NX EX ttl` per signed request."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        from redis.exceptions import RedisError

        try:
            stored = await self._client.set(KEY_PREFIX + key, b"1", nx=True, ex=ttl_seconds)
        except (RedisError, OSError) as error:
            raise ReplayCacheUnavailable(type(error).__name__) from None
        return bool(stored)

    async def close(self) -> None:
        await self._client.aclose()


def open_replay_cache(url: str) -> ReplayCache:
    """`memory://` or `redis://…` / `rediss://…`."""
    scheme = url.split(":", 1)[0]
    if scheme == "memory":
        return MemoryReplayCache()
    if scheme in ("redis", "rediss"):
        return RedisReplayCache(redis_client(url))
    raise ValueError(f"unsupported replay cache URL scheme '{scheme}' (memory://, redis://)")
