"""Tenant knowledge: embed on ingestion (skipping unchanged content), search, delete."""

import asyncio
import hashlib
from collections.abc import Sequence

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import FieldViolation, invalid_argument
from services.retrieval.embedder import Embedder
from services.retrieval.index import GLOBAL_PARTITION, IndexedChunk, VectorStore

MAX_DOCUMENT_CHARS = 200_000


def _content_hash(document: pb.Document) -> str:
    digest = hashlib.sha256(document.text.encode())
    digest.update(document.metadata.SerializeToString(deterministic=True))
    return digest.hexdigest()


def validate_document(document: pb.Document, field: str = "documents") -> None:
    violations = []
    if not document.doc_id:
        violations.append(FieldViolation(f"{field}.doc_id", "is required"))
    if not document.text.strip():
        violations.append(FieldViolation(f"{field}.text", "is required"))
    elif len(document.text) > MAX_DOCUMENT_CHARS:
        violations.append(FieldViolation(f"{field}.text", f"exceeds {MAX_DOCUMENT_CHARS} chars"))
    if document.visibility == pb.VISIBILITY_GLOBAL:
        violations.append(
            FieldViolation(f"{field}.visibility", "global documents are not ingested by tenants")
        )
    if violations:
        raise invalid_argument(*violations)


class KnowledgeBase:
    def __init__(self, embedder: Embedder, store: VectorStore) -> None:
        self.embedder = embedder
        self._store = store

    async def upsert(self, tenant_id: str, documents: Sequence[pb.Document]) -> tuple[int, int]:
        """Index `documents` for `tenant_id`; returns (upserted, unchanged)."""
        for document in documents:
            validate_document(document)
        fresh: list[tuple[pb.Document, str]] = []
        for document in documents:
            stored = pb.Document()
            stored.CopyFrom(document)
            stored.tenant_id = tenant_id
            stored.visibility = pb.VISIBILITY_TENANT
            stored.chunk_id = stored.chunk_id or f"{stored.doc_id}#0"
            content_hash = _content_hash(stored)
            existing = await self._store.get(tenant_id, stored.chunk_id)
            if existing is None or existing.content_hash != content_hash:
                fresh.append((stored, content_hash))
        vectors = await asyncio.to_thread(self.embedder.embed, [d.text for d, _ in fresh])
        for (document, content_hash), vector in zip(fresh, vectors, strict=True):
            if not document.HasField("created_at"):
                document.created_at.GetCurrentTime()
            await self._store.upsert(tenant_id, IndexedChunk(document, vector, content_hash))
        return len(fresh), len(documents) - len(fresh)

    async def search(
        self, tenant_id: str, query: str, top_k: int, min_score: float, include_global: bool
    ) -> list[pb.SearchHit]:
        [vector] = await asyncio.to_thread(self.embedder.embed, [query])
        partitions = [tenant_id, GLOBAL_PARTITION] if include_global else [tenant_id]
        threshold = min_score or self.embedder.default_threshold
        found = await self._store.search(partitions, vector, top_k, threshold)
        return [pb.SearchHit(document=chunk.document, score=score) for chunk, score in found]

    async def delete(self, tenant_id: str, doc_id: str) -> int:
        return await self._store.delete_document(tenant_id, doc_id)
