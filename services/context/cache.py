"""The session cache port and its embedded adapter (an in-process TTL cache)."""

import time
from typing import Protocol


class SessionCache(Protocol):
    """Bytes by key with a time to live, and a generation per key.

    Every delete bumps the key's generation. A reader that fills the cache after reading the
    store passes the generation it saw *before* that read: if anything invalidated the key in
    between (a commit, an erasure), the fill is refused, so no stale copy is written back.
    """

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...
    async def generation(self, key: str) -> int: ...
    async def set_if_generation(
        self, key: str, value: bytes, ttl_seconds: int, generation: int
    ) -> bool: ...
    async def delete(self, key: str, *, required: bool = False) -> None:
        """Drop the key and bump its generation; `required` makes an outage an error."""

    async def close(self) -> None: ...


class MemoryCache:
    """In-process cache; entries expire lazily on read and are bounded in number."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._generations: dict[str, int] = {}
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

    async def generation(self, key: str) -> int:
        return self._generations.get(key, 0)

    async def set_if_generation(
        self, key: str, value: bytes, ttl_seconds: int, generation: int
    ) -> bool:
        if self._generations.get(key, 0) != generation:
            return False
        await self.set(key, value, ttl_seconds)
        return True

    async def delete(self, key: str, *, required: bool = False) -> None:
        self._entries.pop(key, None)
        self._generations[key] = self._generations.get(key, 0) + 1

    async def close(self) -> None:
        self._entries.clear()
        self._generations.clear()
