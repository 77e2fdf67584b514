"""The vector store port: chunks with their vectors, kept in one partition per tenant.

`GLOBAL_PARTITION` holds the platform's documents marked VISIBILITY_GLOBAL; a search names the
partitions it may read, so a tenant's search reads its own and, when asked, the global one.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

GLOBAL_PARTITION = "__global__"


@dataclass(frozen=True)
class IndexedChunk:
    document: pb.Document
    vector: list[float]
    content_hash: str


class VectorStore(Protocol):
    dimension: int

    async def upsert_many(self, partition: str, chunks: Sequence[IndexedChunk]) -> None:
        """Insert or replace chunks by chunk id; refuses vectors of another dimension."""

    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None: ...
    async def chunk_ids_of(self, partition: str, doc_id: str) -> list[str]: ...
    async def delete_chunks(self, partition: str, chunk_ids: Iterable[str]) -> int: ...
    async def search(
        self, partitions: list[str], vector: list[float], top_k: int, min_score: float
    ) -> list[tuple[IndexedChunk, float]]: ...
