"""Cache, locks and idempotency claims, chosen together by `CONTEXT_CACHE_URL`.

`memory://` (embedded default) keeps them in this process; `redis://` / `rediss://` puts them
on Redis, with the cache behind `FallbackCache`: when Redis fails, reads go to the store and
the service stays up; locks and claims fail closed (UNAVAILABLE) instead.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.context.cache import MemoryCache, SessionCache
from services.context.idempotency import IdempotencyClaims, MemoryIdempotency
from services.context.locks import MemoryLocks, SessionLocks
from services.mesh.errors import MeshError

log = logging.getLogger("metaagent.context.cache")
WARN_EVERY_SECONDS = 60.0
UNKNOWN_GENERATION = -1


class FallbackCache:
    """A cache whose outage is a miss: logged (at most once a minute) and counted.

    A key whose invalidation failed is remembered and not read from the cache again until a
    later delete succeeds, so a stale entry cannot resurface when the cache comes back.
    """

    def __init__(self, inner: SessionCache) -> None:
        self._inner = inner
        self._unsure: set[str] = set()
        self._last_warning = 0.0
        self.fallbacks = 0

    def _fell_back(self, operation: str, error: MeshError) -> None:
        if error.code != grpc.StatusCode.UNAVAILABLE:
            raise error
        self.fallbacks += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(
                "session cache unavailable, reading through to the store (%s): %s",
                operation,
                error.message,
                extra={"fallbacks": self.fallbacks},
            )

    async def get(self, key: str) -> bytes | None:
        try:
            if key in self._unsure:
                await self._inner.delete(key)
                self._unsure.discard(key)
                return None
            return await self._inner.get(key)
        except MeshError as error:
            self._fell_back("get", error)
            return None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if key in self._unsure:
            return
        try:
            await self._inner.set(key, value, ttl_seconds)
        except MeshError as error:
            self._fell_back("set", error)

    async def generation(self, key: str) -> int:
        try:
            return await self._inner.generation(key)
        except MeshError as error:
            self._fell_back("generation", error)
            return UNKNOWN_GENERATION

    async def set_if_generation(
        self, key: str, value: bytes, ttl_seconds: int, generation: int
    ) -> bool:
        if key in self._unsure or generation == UNKNOWN_GENERATION:
            return False
        try:
            return await self._inner.set_if_generation(key, value, ttl_seconds, generation)
        except MeshError as error:
            self._fell_back("set", error)
            return False

    async def delete(self, key: str, *, required: bool = False) -> None:
        try:
            await self._inner.delete(key)
            self._unsure.discard(key)
        except MeshError as error:
            self._unsure.add(key)
            if required:
                raise
            self._fell_back("delete", error)

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Coordination:
    cache: SessionCache
    locks: SessionLocks
    idempotency: IdempotencyClaims
    client: Any = field(default=None, repr=False)

    async def close(self) -> None:
        for part in (self.cache, self.locks, self.idempotency):
            await part.close()
        if self.client is not None:
            await self.client.aclose()


def open_coordination(url: str) -> Coordination:
    """The adapters for `url`; the Redis driver is imported only when Redis is chosen."""
    scheme = url.split(":", 1)[0]
    if scheme == "memory":
        return Coordination(MemoryCache(), MemoryLocks(), MemoryIdempotency())
    if scheme in ("redis", "rediss"):
        from services.context.redis_adapters import (
            RedisCache,
            RedisIdempotency,
            RedisLocks,
            connect,
        )

        client = connect(url)
        return Coordination(
            FallbackCache(RedisCache(client)), RedisLocks(client), RedisIdempotency(client), client
        )
    raise ValueError(
        f"unsupported CONTEXT_CACHE_URL scheme '{scheme}' (supported: memory://, redis://)"
    )
