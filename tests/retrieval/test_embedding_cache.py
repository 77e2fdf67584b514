"""The embedding cache: one suite over the in-process LRU and real Redis."""

import uuid
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from services.retrieval.embedders.cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    RedisEmbeddingCache,
)
from services.retrieval.embedders.hashing import HashingEmbedder


class CountingEmbedder(HashingEmbedder):
    def __init__(self, name: str = "counting", dimension: int = 32) -> None:
        super().__init__(dimension)
        self.name = name
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return await super().embed(texts)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[EmbeddingCache]:
    if request.param == "memory":
        yield MemoryEmbeddingCache(capacity=100)
        return
    redis_cache = RedisEmbeddingCache.from_url(request.getfixturevalue("redis_url"), 60)
    yield redis_cache
    await redis_cache.close()


async def test_each_text_is_embedded_once_and_vectors_come_back_in_order(
    cache: EmbeddingCache,
) -> None:
    inner = CountingEmbedder(name=f"model-{uuid.uuid4().hex}")
    embedder = CachedEmbedder(inner, cache)
    first = await embedder.embed(["uno", "dos", "uno"])
    second = await embedder.embed(["tres", "dos", "uno"])
    assert inner.calls == [["uno", "dos"], ["tres"]]
    expected = await inner.embed(["uno", "dos", "tres"])
    np.testing.assert_allclose(first, [expected[0], expected[1], expected[0]], atol=1e-6)
    np.testing.assert_allclose(second, [expected[2], expected[1], expected[0]], atol=1e-6)
    assert (embedder.hits, embedder.misses) == (3, 3)


async def test_models_and_dimensions_never_share_entries(cache: EmbeddingCache) -> None:
    name = f"model-{uuid.uuid4().hex}"
    small, large = CountingEmbedder(name, 16), CountingEmbedder(name, 32)
    other = CountingEmbedder(f"{name}-other", 16)
    for inner in (small, large, other):
        [vector] = await CachedEmbedder(inner, cache).embed(["hola"])
        assert len(vector) == inner.dimension
        assert inner.calls == [["hola"]]


async def test_the_lru_keeps_only_its_capacity() -> None:
    cache = MemoryEmbeddingCache(capacity=2)
    inner = CountingEmbedder()
    embedder = CachedEmbedder(inner, cache)
    await embedder.embed(["a", "b"])
    await embedder.embed(["a"])
    await embedder.embed(["c"])
    await embedder.embed(["a", "b"])
    assert inner.calls == [["a", "b"], ["c"], ["b"]]
    assert len(cache) == 2


async def test_a_redis_outage_costs_the_cache_and_nothing_else() -> None:
    cache = RedisEmbeddingCache.from_url("redis://127.0.0.1:1/0", 60)
    inner = CountingEmbedder()
    embedder = CachedEmbedder(inner, cache)
    assert len(await embedder.embed(["hola", "adiós"])) == 2
    assert len(await embedder.embed(["hola"])) == 1
    assert inner.calls == [["hola", "adiós"], ["hola"]]
    await cache.close()
