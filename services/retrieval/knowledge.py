"""Tenant knowledge: embed on ingestion (skipping unchanged content), search, delete."""

import hashlib
import re
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import FieldViolation, invalid_argument
from services.retrieval.chunking import chunk
from services.retrieval.embedders import Embedder
from services.retrieval.stores import GLOBAL_PARTITION, IndexedChunk, VectorStore

MAX_DOCUMENT_CHARS = 200_000
MARKDOWN_HINT = re.compile(r"^#{1,6} \S", re.MULTILINE)


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


def media_type(document: pb.Document) -> str:
    """`metadata.fields.mediaType` when given, else a guess: HTML, Markdown or plain text."""
    fields = document.metadata.fields
    declared = fields["mediaType"] if "mediaType" in fields else ""  # noqa: SIM401 - a Struct
    if declared in ("text/html", "text/markdown", "text/plain"):
        return str(declared)
    head = document.text.lstrip()[:200].lower()
    if head.startswith("<") and ("</" in document.text or "<p" in head):
        return "text/html"
    if MARKDOWN_HINT.search(document.text):
        return "text/markdown"
    return "text/plain"


class KnowledgeBase:
    def __init__(self, embedder: Embedder, store: VectorStore) -> None:
        self.embedder = embedder
        self._store = store

    async def upsert(self, tenant_id: str, documents: Sequence[pb.Document]) -> tuple[int, int]:
        """Index `documents` for `tenant_id` in chunks; returns (documents changed, unchanged).
        Every document is validated and every new chunk embedded before anything is written."""
        for document in documents:
            validate_document(document)
        fresh: list[tuple[pb.Document, str]] = []
        stale: list[str] = []
        changed_docs: set[str] = set()
        for document in documents:
            wanted: list[str] = []
            for piece in chunk(document.text, media_type(document)):
                stored = pb.Document()
                stored.CopyFrom(document)
                stored.text = piece.text
                stored.tenant_id = tenant_id
                stored.visibility = pb.VISIBILITY_TENANT
                stored.chunk_id = f"{document.doc_id}#{piece.index}"
                wanted.append(stored.chunk_id)
                content_hash = _content_hash(stored)
                existing = await self._store.get(tenant_id, stored.chunk_id)
                if existing is None or existing.content_hash != content_hash:
                    fresh.append((stored, content_hash))
                    changed_docs.add(document.doc_id)
            leftovers = set(await self._store.chunk_ids_of(tenant_id, document.doc_id))
            leftovers -= set(wanted)
            if leftovers:
                stale.extend(sorted(leftovers))
                changed_docs.add(document.doc_id)
        vectors = await self.embedder.embed([d.text for d, _ in fresh]) if fresh else []
        now = Timestamp()
        now.GetCurrentTime()
        chunks = []
        for (document, content_hash), vector in zip(fresh, vectors, strict=True):
            if not document.HasField("created_at"):
                document.created_at.CopyFrom(now)
            chunks.append(IndexedChunk(document, vector, content_hash))
        if chunks:
            await self._store.upsert_many(tenant_id, chunks)
        if stale:
            await self._store.delete_chunks(tenant_id, stale)
        distinct = {document.doc_id for document in documents}
        return len(changed_docs), len(distinct - changed_docs)

    async def search(
        self, tenant_id: str, query: str, top_k: int, min_score: float, include_global: bool
    ) -> list[pb.SearchHit]:
        [vector] = await self.embedder.embed([query])
        partitions = [tenant_id, GLOBAL_PARTITION] if include_global else [tenant_id]
        threshold = min_score or self.embedder.default_threshold
        found = await self._store.search(partitions, vector, top_k, threshold)
        return [pb.SearchHit(document=c.document, score=score) for c, score in found]

    async def delete(self, tenant_id: str, doc_id: str) -> int:
        return await self._store.delete_chunks(
            tenant_id, await self._store.chunk_ids_of(tenant_id, doc_id)
        )
