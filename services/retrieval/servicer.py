"""RetrievalService over gRPC: validate, call KnowledgeBase, return."""

from collections.abc import AsyncIterator
from typing import Any

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb
from metaagent.retrieval.v1 import retrieval_service_pb2_grpc

from services.mesh import correlation
from services.mesh.errors import FieldViolation, MeshError, invalid_argument
from services.retrieval.knowledge import KnowledgeBase, validate_document
from services.retrieval.settings import RetrievalSettings

MAX_QUERY_CHARS = 4000


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
        if not request.documents:
            raise invalid_argument(FieldViolation("documents", "at least one is required"))
        upserted, unchanged = await self._knowledge.upsert(
            correlation.current().tenant_id, request.documents
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
        response = pb.BulkIngestResponse()
        index = 0
        async for item in request_iterator:
            try:
                validate_document(item.document, field="document")
                upserted, unchanged = await self._knowledge.upsert(tenant_id, [item.document])
                response.upserted += upserted
                response.unchanged += unchanged
            except MeshError as error:
                response.rejected += 1
                response.rejections.add(
                    index=index, doc_id=item.document.doc_id, reason=error.message
                )
            index += 1
        return response
