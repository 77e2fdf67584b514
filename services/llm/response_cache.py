"""Cached LLM responses for identical (tenant, prompt) pairs, with a time to live.

Used in degraded mode and, where a tenant enables it, for FAQ-style prompts. Entries are
scoped by tenant in the storage key itself (`metaagent:llm:response:<tenant>:<key>` in Redis,
`(tenant, key)` in process), so two tenants never share an entry even for the same key; build
keys with `prompt_key`. The cache is an optimisation, never a point of failure: a Redis error
is a miss (or a skipped write), logged once per outage.
"""

import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from services.mesh.correlation import TENANT_PATTERN
from services.mesh.redis_client import redis_client

log = logging.getLogger("metaagent.llm.response_cache")

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


def prompt_key(*parts: str) -> str:
    """SHA-256 (hex) of `parts` in a length-prefixed encoding: ("ab", "c") != ("a", "bc")."""
    digest = hashlib.sha256(b"metaagent.llm.response.v1")
    for part in parts:
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


class ResponseCache(Protocol):
    async def get(self, tenant_id: str, key: str) -> bytes | None:
        """The cached value, or None on a miss (expired, evicted, never stored, unavailable)."""

    async def put(self, tenant_id: str, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store `value` for `ttl_seconds` (> 0)."""

    async def close(self) -> None: ...


class MemoryResponseCache:
    """At most `max_entries` responses in this process, least recently used evicted first."""

    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def get(self, tenant_id: str, key: str) -> bytes | None:
        entry = _entry(tenant_id, key)
        found = self._entries.get(entry)
        if found is None:
            return None
        expires, value = found
        if expires <= self._clock():
            del self._entries[entry]
            return None
        self._entries.move_to_end(entry)
        return value

    async def put(self, tenant_id: str, key: str, value: bytes, ttl_seconds: float) -> None:
        entry = _entry(tenant_id, key, ttl_seconds)
        self._entries[entry] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(entry)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        self._entries.clear()


class RedisResponseCache:
    """Responses under `metaagent:llm:response:<tenant>:<key>`, expiring with the TTL."""

    PREFIX = "metaagent:llm:response:"

    def __init__(self, client: Any) -> None:
        self._client = client
        self._failing = False

    async def get(self, tenant_id: str, key: str) -> bytes | None:
        name = self.PREFIX + ":".join(_entry(tenant_id, key))
        try:
            value = await self._client.get(name)
        except Exception as error:
            self._failed(error)
            return None
        self._recovered()
        return None if value is None else bytes(value)

    async def put(self, tenant_id: str, key: str, value: bytes, ttl_seconds: float) -> None:
        name = self.PREFIX + ":".join(_entry(tenant_id, key, ttl_seconds))
        try:
            await self._client.set(name, value, px=max(int(ttl_seconds * 1000), 1))
        except Exception as error:
            self._failed(error)
            return
        self._recovered()

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, error: Exception) -> None:
        if not self._failing:
            log.warning(
                "response cache unavailable, answering without it: %s", type(error).__name__
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("response cache available again")
        self._failing = False


def open_response_cache(url: str, max_entries: int = 1024) -> ResponseCache:
    """`memory://` or "" (in-process LRU of `max_entries`) or `redis://...` (shared)."""
    scheme = url.split(":", 1)[0] if url else "memory"
    if scheme == "memory":
        return MemoryResponseCache(max_entries)
    if scheme in ("redis", "rediss"):
        return RedisResponseCache(redis_client(url, timeout=0.5))
    raise ValueError(f"unsupported response cache URL scheme '{scheme}' (memory://, redis://)")


def _entry(tenant_id: str, key: str, ttl_seconds: float | None = None) -> tuple[str, str]:
    """(tenant, key) once both are valid (a tenant never contains ':') and the TTL positive."""
    if not TENANT_PATTERN.match(tenant_id):
        raise ValueError("invalid tenant id")
    if not KEY_PATTERN.match(key):
        raise ValueError("invalid cache key")
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    return tenant_id, key
