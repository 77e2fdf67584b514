"""The session cache port and its embedded adapter (an in-process TTL cache)."""

import time
from typing import Protocol


class SessionCache(Protocol):
    """Bytes by key with a time to live."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """In-process cache; entries expire lazily on read and are bounded in number."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if len(self._entries) >= self._max_entries and key not in self._entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + ttl_seconds, value)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()
