"""RetrievalService over gRPC: validate, call KnowledgeBase, return."""

from collections.abc import AsyncIterator
from typing import Any

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb
from metaagent.retrieval.v1 import retrieval_service_pb2_grpc

from services.mesh import correlation
from services.mesh.errors import FieldViolation, MeshError, invalid_argument
from services.retrieval.catalogue import product_document, validate_product
from services.retrieval.knowledge import KnowledgeBase
from services.retrieval.settings import RetrievalSettings

MAX_QUERY_CHARS = 4000
MAX_REJECTIONS_REPORTED = 100
BULK_BATCH = 32


class RetrievalServicer(retrieval_service_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, knowledge: KnowledgeBase, settings: RetrievalSettings) -> None:
        self._knowledge = knowledge
        self._settings = settings

    async def Search(self, request: pb.SearchRequest, context: Any) -> pb.SearchResponse:
        violations = []
        if not request.query.strip():
            violations.append(FieldViolation("query", "is required"))
        elif len(request.query) > MAX_QUERY_CHARS:
            violations.append(FieldViolation("query", f"exceeds {MAX_QUERY_CHARS} characters"))
        if not 0 <= request.top_k <= self._settings.max_top_k:
            violations.append(
                FieldViolation("top_k", f"must be in [0, {self._settings.max_top_k}]")
            )
        if not 0.0 <= request.min_score <= 1.0:
            violations.append(FieldViolation("min_score", "must be in [0, 1]"))
        if violations:
            raise invalid_argument(*violations)
        hits = await self._knowledge.search(
            correlation.current().tenant_id,
            request.query,
            request.top_k or self._settings.default_top_k,
            request.min_score,
            request.include_global,
        )
        return pb.SearchResponse(hits=hits, embedder=self._knowledge.embedder.name)

    async def UpsertDocuments(
        self, request: pb.UpsertDocumentsRequest, context: Any
    ) -> pb.UpsertDocumentsResponse:
        upserted, unchanged = await self._knowledge.upsert(
            correlation.current().tenant_id, request.documents, request.products
        )
        return pb.UpsertDocumentsResponse(upserted=upserted, unchanged=unchanged)

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Any
    ) -> pb.DeleteDocumentResponse:
        if not request.doc_id:
            raise invalid_argument(FieldViolation("doc_id", "is required"))
        deleted = await self._knowledge.delete(correlation.current().tenant_id, request.doc_id)
        return pb.DeleteDocumentResponse(deleted_chunks=deleted)

    async def BulkIngest(
        self, request_iterator: AsyncIterator[pb.BulkIngestRequest], context: Any
    ) -> pb.BulkIngestResponse:
        tenant_id = correlation.current().tenant_id
        await self._knowledge.require_tenant(tenant_id)
        response = pb.BulkIngestResponse()
        batch: list[pb.Document] = []

        async def flush() -> None:
            upserted, unchanged = await self._knowledge.index(tenant_id, batch)
            response.upserted += upserted
            response.unchanged += unchanged
            batch.clear()

        index = 0
        async for item in request_iterator:
            if index >= self._settings.max_stream_items:
                raise invalid_argument(
                    FieldViolation("stream", f"at most {self._settings.max_stream_items} items")
                )
            try:
                document = self._bulk_document(item, tenant_id)
            except MeshError as error:
                response.rejected += 1
                if len(response.rejections) < MAX_REJECTIONS_REPORTED:
                    response.rejections.add(
                        index=index,
                        doc_id=item.document.doc_id or item.product.id,
                        reason="; ".join(f"{v.field} {v.description}" for v in error.violations)
                        or error.message,
                    )
            else:
                if any(queued.doc_id == document.doc_id for queued in batch):
                    await flush()
                batch.append(document)
                if len(batch) >= BULK_BATCH:
                    await flush()
            index += 1
        if batch:
            await flush()
        return response

    def _bulk_document(self, item: pb.BulkIngestRequest, tenant_id: str) -> pb.Document:
        if item.HasField("document") == item.HasField("product"):
            raise invalid_argument(FieldViolation("item", "exactly one of document and product"))
        if item.HasField("product"):
            validate_product(item.product, field="product")
            return product_document(item.product)
        self._knowledge.validate(item.document, field="document", tenant_id=tenant_id)
        return item.document

    async def UpsertGlobalDocuments(
        self, request: pb.UpsertGlobalDocumentsRequest, context: Any
    ) -> pb.UpsertGlobalDocumentsResponse:
        upserted, unchanged = await self._knowledge.upsert_global(request.documents)
        return pb.UpsertGlobalDocumentsResponse(upserted=upserted, unchanged=unchanged)

    async def DeleteGlobalDocument(
        self, request: pb.DeleteGlobalDocumentRequest, context: Any
    ) -> pb.DeleteGlobalDocumentResponse:
        if not request.doc_id:
            raise invalid_argument(FieldViolation("doc_id", "is required"))
        deleted = await self._knowledge.delete_global(request.doc_id)
        return pb.DeleteGlobalDocumentResponse(deleted_chunks=deleted)
