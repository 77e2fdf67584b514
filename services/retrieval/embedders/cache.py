"""The embedding cache: a text embedded once by a model is never paid for again.

Entries are keyed by (model name, dimension, SHA-256 of the text), so a cache shared by several
embedders or dimensions never mixes their vectors. The in-process LRU is the default; Redis
shares the cache between replicas and restarts. The cache is an optimisation, never a point of
failure: a Redis error counts as a miss and is logged once per outage.
"""

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from services.retrieval.embedders import Embedder

log = logging.getLogger(__name__)


class EmbeddingCache(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[list[float] | None]: ...
    async def put_many(self, entries: dict[str, list[float]]) -> None: ...


class MemoryEmbeddingCache:
    """Least-recently-used cache of at most `capacity` vectors in this process."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, list[float]] = OrderedDict()

    async def get_many(self, keys: Sequence[str]) -> list[list[float] | None]:
        found: list[list[float] | None] = []
        for key in keys:
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
            found.append(vector)
        return found

    async def put_many(self, entries: dict[str, list[float]]) -> None:
        for key, vector in entries.items():
            self._entries[key] = vector
            self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RedisEmbeddingCache:
    """Vectors as float32 bytes under `metaagent:embedding:<key>`, expiring after `ttl` s."""

    PREFIX = "metaagent:embedding:"

    def __init__(self, client: Any, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._failing = False

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int) -> "RedisEmbeddingCache":
        import redis.asyncio as redis

        return cls(redis.from_url(url, socket_timeout=0.5), ttl_seconds)

    async def get_many(self, keys: Sequence[str]) -> list[list[float] | None]:
        try:
            raw = await self._client.mget([self.PREFIX + key for key in keys])
        except Exception as error:
            self._failed(error)
            return [None] * len(keys)
        self._failing = False
        return [
            None if blob is None or len(blob) % 4 else np.frombuffer(blob, np.float32).tolist()
            for blob in raw
        ]

    async def put_many(self, entries: dict[str, list[float]]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, vector in entries.items():
                    blob = np.asarray(vector, np.float32).tobytes()
                    pipe.set(self.PREFIX + key, blob, ex=self._ttl)
                await pipe.execute()
        except Exception as error:
            self._failed(error)

    def _failed(self, error: Exception) -> None:
        if not self._failing:
            log.warning(
                "embedding cache unavailable, embedding without it: %s", type(error).__name__
            )
        self._failing = True

    async def close(self) -> None:
        await self._client.aclose()


class CachedEmbedder:
    """An embedder that asks `cache` first and embeds only what it misses, once per text."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.dimension = inner.dimension
        self.default_threshold = inner.default_threshold
        self.hits = 0
        self.misses = 0

    def key(self, text: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()
        return f"{self.name}:{self.dimension}:{digest}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        keys = [self.key(text) for text in texts]
        cached = await self.cache.get_many(keys)
        known = {
            key: vector
            for key, vector in zip(keys, cached, strict=True)
            if vector is not None and len(vector) == self.dimension
        }
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in known}
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vectors = await self.inner.embed(list(missing.values()))
            fresh = dict(zip(missing, vectors, strict=True))
            await self.cache.put_many(fresh)
            known |= fresh
        return [known[key] for key in keys]
