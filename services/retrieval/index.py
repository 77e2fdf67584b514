"""The vector store port and its in-memory adapter, partitioned by tenant.

A search reads only the caller's partition and, when asked, the global one: another tenant's
vectors are never scanned, let alone returned.
"""

from dataclasses import dataclass
from typing import Protocol

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.retrieval.embedder import cosine

GLOBAL_PARTITION = "__global__"


@dataclass(frozen=True)
class IndexedChunk:
    document: pb.Document
    vector: list[float]
    content_hash: str


class VectorStore(Protocol):
    dimension: int

    async def upsert(self, partition: str, chunk: IndexedChunk) -> None: ...
    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None: ...
    async def delete_document(self, partition: str, doc_id: str) -> int: ...
    async def search(
        self, partitions: list[str], vector: list[float], top_k: int, min_score: float
    ) -> list[tuple[IndexedChunk, float]]: ...


class MemoryIndex:
    """Exact cosine search over per-tenant dictionaries."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._partitions: dict[str, dict[str, IndexedChunk]] = {}

    async def upsert(self, partition: str, chunk: IndexedChunk) -> None:
        if len(chunk.vector) != self.dimension:
            raise ValueError(
                f"vector has {len(chunk.vector)} dimensions; this index holds {self.dimension}"
            )
        self._partitions.setdefault(partition, {})[chunk.document.chunk_id] = chunk

    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None:
        return self._partitions.get(partition, {}).get(chunk_id)

    async def delete_document(self, partition: str, doc_id: str) -> int:
        chunks = self._partitions.get(partition, {})
        doomed = [key for key, chunk in chunks.items() if chunk.document.doc_id == doc_id]
        for key in doomed:
            del chunks[key]
        return len(doomed)

    async def search(
        self, partitions: list[str], vector: list[float], top_k: int, min_score: float
    ) -> list[tuple[IndexedChunk, float]]:
        scored = [
            (chunk, cosine(vector, chunk.vector))
            for partition in partitions
            for chunk in self._partitions.get(partition, {}).values()
        ]
        scored = [item for item in scored if item[1] >= min_score]
        scored.sort(key=lambda item: item[1], reverse=True)
        return scored[:top_k]
