"""Knowledge bases: embed on ingestion (skipping unchanged content), search, delete.

Each tenant's chunks live in the tenant's partition of the vector store; platform documents
marked global live in GLOBAL_PARTITION, PII-scrubbed, and reach a tenant's search only when it
asks for them. Tenant calls are refused for tenants the platform does not know.
"""

import asyncio
import hashlib
import re
import weakref
from collections.abc import Sequence

from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import FieldViolation, invalid_argument, not_found
from services.mesh.metrics import tenant_label
from services.mesh.redaction import scrub_pii
from services.retrieval.catalogue import finite_struct, product_document, validate_product
from services.retrieval.chunking import chunk, visible_text
from services.retrieval.embedders import Embedder
from services.retrieval.metrics import vector_search_results
from services.retrieval.stores import GLOBAL_PARTITION, IndexedChunk, VectorStore
from services.retrieval.tenants import TenantDirectory

MAX_DOCUMENT_CHARS = 1_000_000
MAX_BATCH_ITEMS = 100
MARKDOWN_HINT = re.compile(r"^#{1,6} \S", re.MULTILINE)


def _content_hash(document: pb.Document, embedder: str) -> str:
    """Changes with the text, the metadata and the model: a new model re-embeds everything."""
    digest = hashlib.sha256(embedder.encode() + b"\0" + document.text.encode())
    digest.update(document.metadata.SerializeToString(deterministic=True))
    return digest.hexdigest()


def validate_document(
    document: pb.Document, field: str = "documents", max_chars: int = MAX_DOCUMENT_CHARS
) -> None:
    violations = []
    if not document.doc_id:
        violations.append(FieldViolation(f"{field}.doc_id", "is required"))
    if not document.text.strip():
        violations.append(FieldViolation(f"{field}.text", "is required"))
    elif len(document.text) > max_chars:
        violations.append(
            FieldViolation(
                f"{field}.text",
                f"has {len(document.text)} characters, more than {max_chars}: split it",
            )
        )
    if not finite_struct(document.metadata.fields):
        violations.append(FieldViolation(f"{field}.metadata.fields", "numbers must be finite"))
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


def _scrub_struct(fields: struct_pb2.Struct) -> None:
    for key, value in fields.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            fields[key] = scrub_pii(value.string_value)
        elif kind == "struct_value":
            _scrub_struct(value.struct_value)


def _scrubbed(document: pb.Document) -> pb.Document:
    """A global document without personal data: its visible text (HTML entities and tags cannot
    hide an address), tags and string fields scrubbed."""
    if media_type(document) == "text/html":
        document.text = visible_text(document.text)
        document.metadata.fields["mediaType"] = "text/plain"
    document.text = scrub_pii(document.text)
    document.metadata.tags[:] = [scrub_pii(tag) for tag in document.metadata.tags]
    _scrub_struct(document.metadata.fields)
    return document


class KnowledgeBase:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        tenants: TenantDirectory,
        max_document_chars: int = MAX_DOCUMENT_CHARS,
        hybrid: bool = True,
    ) -> None:
        self.embedder = embedder
        self._store = store
        self._tenants = tenants
        self._max_chars = max_document_chars
        self.hybrid = hybrid
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def require_tenant(self, tenant_id: str) -> None:
        await self._tenants.require(tenant_id)

    def validate(
        self, document: pb.Document, field: str = "documents", tenant_id: str = ""
    ) -> None:
        """A tenant's document as validate_document checks it, naming no other tenant."""
        validate_document(document, field, self._max_chars)
        if tenant_id and document.tenant_id not in ("", tenant_id):
            raise invalid_argument(
                FieldViolation(f"{field}.tenant_id", "must be empty or the caller's tenant")
            )

    async def upsert(
        self,
        tenant_id: str,
        documents: Sequence[pb.Document],
        products: Sequence[pb.Product] = (),
    ) -> tuple[int, int]:
        """Index a tenant's documents and products; returns (documents changed, unchanged).
        The batch is validated and embedded as a whole before anything is written."""
        violations = []
        if not documents and not products:
            violations.append(FieldViolation("documents", "at least one document or product"))
        if len(documents) + len(products) > MAX_BATCH_ITEMS:
            violations.append(FieldViolation("documents", f"at most {MAX_BATCH_ITEMS} items"))
        ids = [d.doc_id for d in documents] + [p.id for p in products]
        if len(set(ids)) < len(ids):
            violations.append(FieldViolation("documents.doc_id", "a doc_id appears twice"))
        if violations:
            raise invalid_argument(*violations)
        for document in documents:
            self.validate(document, tenant_id=tenant_id)
        for product in products:
            validate_product(product)
        await self.require_tenant(tenant_id)
        return await self.index(tenant_id, [*documents, *map(product_document, products)])

    async def upsert_global(self, documents: Sequence[pb.Document]) -> tuple[int, int]:
        """Index platform documents every tenant may retrieve, PII-scrubbed."""
        if not documents or len(documents) > MAX_BATCH_ITEMS:
            raise invalid_argument(FieldViolation("documents", f"1 to {MAX_BATCH_ITEMS} items"))
        copies = []
        for document in documents:
            copy = pb.Document()
            copy.CopyFrom(document)
            copy.visibility = pb.VISIBILITY_UNSPECIFIED
            self.validate(copy)
            copies.append(copy)
        scrubbed = await asyncio.to_thread(lambda: [_scrubbed(copy) for copy in copies])
        return await self.index(GLOBAL_PARTITION, scrubbed)

    async def index(self, partition: str, documents: Sequence[pb.Document]) -> tuple[int, int]:
        """Chunk, embed and store validated documents in `partition`, embedding only new or
        changed chunks and removing chunks a shorter version no longer has. Writes to one
        partition are serialised, so two versions of a document never interleave."""
        async with self._writing(partition):
            return await self._index(partition, documents)

    def _writing(self, partition: str) -> asyncio.Lock:
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

    async def _index(self, partition: str, documents: Sequence[pb.Document]) -> tuple[int, int]:
        visibility = pb.VISIBILITY_GLOBAL if partition == GLOBAL_PARTITION else pb.VISIBILITY_TENANT
        fresh: list[tuple[pb.Document, str]] = []
        stale: list[str] = []
        changed_docs: set[str] = set()
        for document in documents:
            wanted: list[str] = []
            for piece in chunk(document.text, media_type(document)):
                stored = pb.Document()
                stored.CopyFrom(document)
                stored.text = piece.text
                stored.tenant_id = partition
                stored.visibility = visibility
                stored.chunk_id = f"{document.doc_id}#{piece.index}"
                wanted.append(stored.chunk_id)
                content_hash = _content_hash(stored, self.embedder.name)
                existing = await self._store.get(partition, stored.chunk_id)
                if existing is None or existing.content_hash != content_hash:
                    fresh.append((stored, content_hash))
                    changed_docs.add(document.doc_id)
            leftovers = set(await self._store.chunk_ids_of(partition, document.doc_id))
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
            await self._store.upsert_many(partition, chunks)
        if stale:
            await self._store.delete_chunks(partition, stale)
        distinct = {document.doc_id for document in documents}
        return len(changed_docs), len(distinct - changed_docs)

    async def search(
        self, tenant_id: str, query: str, top_k: int, min_score: float, include_global: bool
    ) -> list[pb.SearchHit]:
        await self._tenants.require(tenant_id)
        [vector] = await self.embedder.embed([query])
        partitions = [tenant_id, GLOBAL_PARTITION] if include_global else [tenant_id]
        threshold = min_score or self.embedder.default_threshold
        found = await self._store.search(
            partitions, vector, top_k, threshold, query if self.hybrid else ""
        )
        vector_search_results(tenant_label(tenant_id)).observe(len(found))
        return [pb.SearchHit(document=c.document, score=score) for c, score in found]

    async def delete(self, tenant_id: str, doc_id: str) -> int:
        """Delete every chunk of one of the tenant's documents; how many there were.
        NOT_FOUND (DOCUMENT_NOT_FOUND) when the tenant has no document with that id."""
        await self._tenants.require(tenant_id)
        deleted = await self._delete(tenant_id, doc_id)
        if not deleted:
            raise not_found(
                f"the tenant has no document {doc_id[:128]!r} in its knowledge base",
                "DOCUMENT_NOT_FOUND",
            )
        return deleted

    async def delete_global(self, doc_id: str) -> int:
        return await self._delete(GLOBAL_PARTITION, doc_id)

    async def _delete(self, partition: str, doc_id: str) -> int:
        async with self._writing(partition):
            return await self._store.delete_chunks(
                partition, await self._store.chunk_ids_of(partition, doc_id)
            )
