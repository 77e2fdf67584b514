"""The vector store port: chunks with their vectors, kept in one partition per tenant.

`GLOBAL_PARTITION` holds the platform's documents marked VISIBILITY_GLOBAL; a search names the
partitions it may read, so a tenant's search reads its own and, when asked, the global one.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import MeshError, failed_precondition

if TYPE_CHECKING:
    from services.retrieval.settings import RetrievalSettings

GLOBAL_PARTITION = "__global__"
DIMENSION_MISMATCH = "DIMENSION_MISMATCH"


@dataclass(frozen=True)
class IndexedChunk:
    document: pb.Document
    vector: list[float]
    content_hash: str


def dimension_mismatch(found: int, expected: int, what: str = "vector") -> MeshError:
    """FAILED_PRECONDITION: the embedder and the index disagree (a deployment mistake, never the
    caller's), so nothing is written."""
    return failed_precondition(
        f"{what} has {found} dimensions; this index holds {expected}", reason=DIMENSION_MISMATCH
    )


def check_dimensions(chunks: Sequence["IndexedChunk"], dimension: int) -> None:
    for chunk in chunks:
        if len(chunk.vector) != dimension:
            raise dimension_mismatch(len(chunk.vector), dimension)


class VectorStore(Protocol):
    dimension: int

    async def upsert_many(self, partition: str, chunks: Sequence[IndexedChunk]) -> None:
        """Insert or replace chunks by chunk id; refuses vectors of another dimension."""

    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None: ...
    async def chunk_ids_of(self, partition: str, doc_id: str) -> list[str]: ...
    async def delete_chunks(self, partition: str, chunk_ids: Iterable[str]) -> int: ...
    async def search(
        self,
        partitions: list[str],
        vector: list[float],
        top_k: int,
        min_score: float,
        query_text: str = "",
    ) -> list[tuple[IndexedChunk, float]]:
        """The best `top_k` chunks of `partitions` scoring at least `min_score`, best first.
        With `query_text`, stores that can rank hybrid (the local ones) raise each cosine with
        the chunk's BM25 evidence (`services.retrieval.lexical.fuse`); others ignore it."""
        ...


def open_vector_store(settings: "RetrievalSettings", dimension: int) -> VectorStore:
    """The store named by `RETRIEVAL_VECTOR_STORE_URL`: `memory://`, `file:///dir`,
    `mongodb://…` / `mongodb+srv://…`; empty = the on-disk local index under the state dir."""
    url = settings.vector_store_url
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from services.retrieval.stores.mongo import MongoVectorStore, dialect_of

        dialect = (
            dialect_of(url) if settings.mongodb_dialect == "auto" else settings.mongodb_dialect
        )
        return MongoVectorStore.connect(
            url,
            settings.mongodb_database,
            settings.mongodb_collection,
            dimension,
            dialect,
            index_name=settings.mongodb_index_name,
        )
    from services.retrieval.stores.local import DiskIndex, MemoryIndex

    if url == "memory://":
        return MemoryIndex(dimension)
    if url.startswith("file://"):
        return DiskIndex(Path(url.removeprefix("file://")), dimension)
    if url:
        raise ValueError(f"RETRIEVAL_VECTOR_STORE_URL: unsupported scheme in {url!r}")
    return DiskIndex(settings.resolved_index_dir(), dimension)
