"""Retrieval service settings: which embedder, which vector store, which cache, and limits.

Nothing set means the embedded profile: the offline embedder, the on-disk local index under the
state directory and an in-process embedding cache. Variable names follow the seed where it has
them (`MONGODB_VECTOR_INDEX_NAME`, `MONGODB_EMBEDDING_DIMENSIONS`).
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from services.mesh.settings import MeshSettings

EmbedderKind = Literal["offline", "azure-openai", "openai", "minilm"]


class RetrievalSettings(MeshSettings):
    default_top_k: int = Field(5, ge=1, le=50, validation_alias="RETRIEVAL_TOP_K")
    max_top_k: int = Field(50, ge=1, validation_alias="RETRIEVAL_MAX_TOP_K")
    seed_demo: bool = Field(True, validation_alias="RETRIEVAL_SEED_DEMO")
    max_document_chars: int = Field(
        1_000_000, ge=1000, validation_alias="RETRIEVAL_MAX_DOCUMENT_CHARS"
    )
    max_stream_items: int = Field(100_000, ge=1, validation_alias="RETRIEVAL_MAX_STREAM_ITEMS")

    vector_store_url: str = Field("", validation_alias="RETRIEVAL_VECTOR_STORE_URL")
    """`memory://`, `file:///path`, `mongodb://…` or `mongodb+srv://…`; empty = on-disk local
    index under `RETRIEVAL_INDEX_DIR` (default `<state dir>/vectors`)."""
    index_dir: Path | None = Field(None, validation_alias="RETRIEVAL_INDEX_DIR")
    mongodb_database: str = Field("metaagent", validation_alias="MONGODB_DATABASE")
    mongodb_collection: str = Field("vector_documents", validation_alias="MONGODB_COLLECTION")
    mongodb_index_name: str = Field(
        "tenant_embeddings_index", validation_alias="MONGODB_VECTOR_INDEX_NAME"
    )
    mongodb_dialect: Literal["auto", "atlas", "cosmos"] = Field(
        "auto", validation_alias="MONGODB_DIALECT"
    )
    """`auto`: Cosmos DB vCore when the host ends in `.mongocluster.cosmos.azure.com`."""

    hybrid: bool = Field(True, validation_alias="RETRIEVAL_HYBRID")
    """Rank with BM25 and vectors together (local stores; README: Retrieval quality)."""
    embedder: EmbedderKind = Field("offline", validation_alias="RETRIEVAL_EMBEDDER")
    embedding_dimensions: int = Field(1536, ge=1, validation_alias="MONGODB_EMBEDDING_DIMENSIONS")
    """Dimension of the remote embedders' vectors (text-embedding-3-small: 1536)."""
    azure_embedding_endpoint: str = Field("", validation_alias="AZURE_OPENAI_EMBEDDING_ENDPOINT")
    azure_embedding_key: SecretStr = Field(
        SecretStr(""), validation_alias="AZURE_OPENAI_EMBEDDING_KEY"
    )
    """Empty = Entra ID (azure-identity's DefaultAzureCredential, the `azure` extra)."""
    azure_embedding_deployment: str = Field(
        "text-embedding-3-small", validation_alias="AZURE_OPENAI_EMBEDDING_DEPLOYMENT"
    )
    azure_embedding_api_version: str = Field(
        "2024-10-21", validation_alias="AZURE_OPENAI_EMBEDDING_API_VERSION"
    )
    openai_embedding_base_url: str = Field("", validation_alias="OPENAI_EMBEDDING_BASE_URL")
    openai_embedding_key: SecretStr = Field(SecretStr(""), validation_alias="OPENAI_API_KEY")
    openai_embedding_model: str = Field(
        "text-embedding-3-small", validation_alias="OPENAI_EMBEDDING_MODEL"
    )
    embedding_threshold: float | None = Field(
        None, ge=0.0, le=1.0, validation_alias="RETRIEVAL_MIN_SCORE"
    )
    """Overrides the embedder's calibrated cosine threshold."""
    embedding_cache_url: str = Field("", validation_alias="RETRIEVAL_EMBEDDING_CACHE_URL")
    """`redis://…` shares the cache between replicas; empty = in-process LRU."""
    embedding_cache_size: int = Field(
        20_000, ge=0, validation_alias="RETRIEVAL_EMBEDDING_CACHE_SIZE"
    )
    embedding_cache_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=1, validation_alias="RETRIEVAL_EMBEDDING_CACHE_TTL_SECONDS"
    )

    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.state_dir / "vectors"
