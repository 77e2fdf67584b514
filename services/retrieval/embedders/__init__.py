"""The embedder port: text in, L2-normalised vectors of a fixed dimension out."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from services.mesh.entra import entra_token_provider

if TYPE_CHECKING:
    from services.retrieval.settings import RetrievalSettings


class Embedder(Protocol):
    name: str
    """Stable name of the model; scores are comparable only within one name."""
    dimension: int
    default_threshold: float
    """The cosine threshold calibrated for this embedder (README: Retrieval quality)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. CPU-bound adapters do their work off the event loop;
        remote ones raise MeshError UNAVAILABLE when the provider cannot be reached."""
        ...


def open_embedder(settings: "RetrievalSettings") -> Embedder:
    """The configured embedder behind the embedding cache (`RETRIEVAL_EMBEDDER`; default
    `offline`). Remote embedders need their endpoint; a missing one is a clear error."""
    from services.retrieval.embedders.cache import (
        CachedEmbedder,
        EmbeddingCache,
        MemoryEmbeddingCache,
        RedisEmbeddingCache,
    )

    embedder = _open_bare(settings)
    if settings.embedding_threshold is not None:
        embedder.default_threshold = settings.embedding_threshold
    url = settings.embedding_cache_url
    cache: EmbeddingCache
    if url.startswith(("redis://", "rediss://", "unix://")):
        cache = RedisEmbeddingCache.from_url(url, settings.embedding_cache_ttl_seconds)
    elif url in ("", "memory://"):
        cache = MemoryEmbeddingCache(settings.embedding_cache_size)
    else:
        raise ValueError(f"RETRIEVAL_EMBEDDING_CACHE_URL: unsupported scheme in {url!r}")
    return CachedEmbedder(embedder, cache)


def _open_bare(settings: "RetrievalSettings") -> Embedder:
    if settings.embedder == "offline":
        from services.retrieval.embedders.hashing import HashingEmbedder

        return HashingEmbedder()
    if settings.embedder == "minilm":
        from services.retrieval.embedders.minilm import MiniLmEmbedder

        return MiniLmEmbedder()
    from services.retrieval.embedders.openai import OpenAIEmbedder

    if settings.embedder == "azure-openai":
        if not settings.azure_embedding_endpoint:
            raise ValueError(
                "RETRIEVAL_EMBEDDER=azure-openai needs AZURE_OPENAI_EMBEDDING_ENDPOINT"
            )
        key = settings.azure_embedding_key.get_secret_value()
        return OpenAIEmbedder.azure(
            endpoint=settings.azure_embedding_endpoint,
            deployment=settings.azure_embedding_deployment,
            api_version=settings.azure_embedding_api_version,
            api_key=key or None,
            azure_ad_token_provider=None
            if key
            else entra_token_provider("AZURE_OPENAI_EMBEDDING_KEY"),
            dimension=settings.embedding_dimensions,
        )
    if not settings.openai_embedding_base_url:
        raise ValueError("RETRIEVAL_EMBEDDER=openai needs OPENAI_EMBEDDING_BASE_URL")
    return OpenAIEmbedder.compatible(
        base_url=settings.openai_embedding_base_url,
        model=settings.openai_embedding_model,
        api_key=settings.openai_embedding_key.get_secret_value() or "unused",
        dimension=settings.embedding_dimensions,
    )
