"""A tenant's knowledge base: ingestion, search and deletion (role gates: `tenants.py`).

`POST …/knowledge` takes either a JSON array of documents (`application/json`, at most 100,
stored all-or-nothing through UpsertDocuments) or a JSON Lines product catalogue
(`application/x-ndjson` or `application/jsonl`), which is parsed and validated whole first: any
bad line is a 400 naming every bad line and nothing is sent; a good catalogue is streamed as
products over BulkIngest, one message per product (no gRPC message limit applies to the body).
Ingestion is idempotent: unchanged documents are not re-embedded, so a catalogue whose stream
failed half-way (503: the products before the failure stay stored) is simply sent again.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request
from google.protobuf import message
from metaagent.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from pydantic import Field, TypeAdapter, ValidationError

from gateway import admin_convert as convert
from gateway.admin_models import (
    MAX_DOCUMENTS,
    DeletedDocument,
    IngestResult,
    KnowledgeDocument,
    SearchResult,
    invalid,
)
from gateway.models import ID_PATTERN
from gateway.problems import problem_responses
from gateway.requests import PayloadTooLarge, body_limit, read_body
from gateway.routes.common import TENANT_PROBLEMS, TenantId
from gateway.security import Caller
from gateway.settings import GatewaySettings
from services.mesh import correlation
from services.mesh.catalogue import CatalogueLine, check_catalogue
from services.mesh.server import MAX_MESSAGE_BYTES

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["knowledge"])
DocId = Annotated[str, Path(alias="docId", pattern=ID_PATTERN)]

JSON: Final = "application/json"
JSON_LINES: Final = ("application/x-ndjson", "application/jsonl")
MAX_LINE_ERRORS: Final = 100
DOCUMENTS: Final = TypeAdapter(
    Annotated[list[KnowledgeDocument], Field(min_length=1, max_length=MAX_DOCUMENTS)]
)
DOCUMENT_SCHEMA: Final = KnowledgeDocument.model_json_schema(by_alias=True)


def _line_errors(lines: list[CatalogueLine]) -> ValidationError:
    shown: list[tuple[tuple[str | int, ...], str]] = [
        ((f"line {bad.line}",), bad.error) for bad in lines[:MAX_LINE_ERRORS]
    ]
    if len(lines) > MAX_LINE_ERRORS:
        shown.append((("body",), f"{len(lines) - MAX_LINE_ERRORS} more bad lines"))
    return invalid(shown)


def _media_type(request: Request) -> str:
    media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media != JSON and media not in JSON_LINES:
        raise HTTPException(
            415, f"send {JSON} (documents) or {' or '.join(JSON_LINES)} (a product catalogue)"
        )
    return media


@router.post(
    "/v2/tenants/{tenantId}/knowledge",
    response_model=IngestResult,
    summary="Ingest documents or a JSON Lines product catalogue",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "array",
                        "items": DOCUMENT_SCHEMA,
                        "minItems": 1,
                        "maxItems": MAX_DOCUMENTS,
                    }
                },
                **{
                    media: {
                        "schema": {
                            "type": "string",
                            "description": "one product per line: "
                            '{"id", "name", "price", "currency", "stock", "description", ...}',
                        }
                    }
                    for media in JSON_LINES
                },
            },
        }
    },
    responses=problem_responses(400, 401, 403, 404, 413, 415, 429, 503, 504),
)
@body_limit(lambda settings: settings.max_knowledge_bytes)
async def ingest(request: Request, tenant_id: TenantId, principal: Caller) -> IngestResult:
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    settings: GatewaySettings = request.app.state.settings
    media = _media_type(request)
    raw = await read_body(request)
    with convert.admin_call(request, tenant_id):
        if media == JSON:
            return await _documents(request, raw, settings)
        return await _catalogue(request, raw, settings)


async def _documents(request: Request, raw: bytes, settings: GatewaySettings) -> IngestResult:
    documents = DOCUMENTS.validate_json(raw or b"null")
    first: dict[str, int] = {}
    duplicates: list[tuple[tuple[str | int, ...], str]] = []
    for index, document in enumerate(documents):
        if first.setdefault(document.doc_id, index) != index:
            duplicates.append(((index, "docId"), f"is also document {first[document.doc_id]}"))
    if duplicates:
        raise invalid(duplicates)
    upsert = retrieval_pb.UpsertDocumentsRequest(documents=[convert.document(d) for d in documents])
    if upsert.ByteSize() > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge("the documents exceed one batch: send fewer per request")
    reply = await request.app.state.clients.retrieval.UpsertDocuments(
        upsert, timeout=settings.knowledge_timeout_seconds
    )
    log.info(
        "documents ingested",
        extra={"documents": len(documents), "upserted": reply.upserted},
    )
    return convert.upserted(reply)


async def _catalogue(request: Request, raw: bytes, settings: GatewaySettings) -> IngestResult:
    checked = check_catalogue(raw.split(b"\n"), id_pattern=correlation.ID_PATTERN)
    if len(checked.products) + len(checked.errors) > settings.max_catalogue_items:
        raise PayloadTooLarge(f"the catalogue exceeds {settings.max_catalogue_items} products")
    if checked.errors:
        raise _line_errors(checked.errors)
    if not checked.products:
        raise invalid([(("body",), "the catalogue has no products")])
    lines = [line for line, _ in checked.products]
    reply = await _bulk_ingest(request, checked.products, settings)
    log.info(
        "catalogue ingested",
        extra={"products": len(lines), "upserted": reply.upserted, "rejected": reply.rejected},
    )
    return convert.ingested(reply, lines)


class _Stream:
    """The products of a catalogue as BulkIngest's request stream, remembering a failure raised
    into it: grpc.aio cancels a call whose request iterator fails, and the caller then sees only
    a CancelledError, which no exception handler answers."""

    def __init__(self, products: list[tuple[int, retrieval_pb.Product]]) -> None:
        self._products = products
        self.line = 0
        self.failure: Exception | None = None

    async def requests(self) -> AsyncIterator[retrieval_pb.BulkIngestRequest]:
        try:
            for line, product in self._products:
                self.line = line
                yield retrieval_pb.BulkIngestRequest(product=product)
        except Exception as error:  # raised at the yield, by the transport sending it
            self.failure = error
            raise


async def _bulk_ingest(
    request: Request, products: list[tuple[int, retrieval_pb.Product]], settings: GatewaySettings
) -> retrieval_pb.BulkIngestResponse:
    """Stream `products` over BulkIngest; a failure inside the stream is a problem response:
    400 naming the line for a product the contract cannot carry, else the failure itself
    (500), and 503 for a call cancelled under the request for no reason it gives."""
    stream = _Stream(products)
    try:
        retrieval = request.app.state.clients.retrieval
        reply: retrieval_pb.BulkIngestResponse = await retrieval.BulkIngest(
            stream.requests(), timeout=settings.knowledge_timeout_seconds
        )
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this request itself is being cancelled (the client went away)
        if isinstance(stream.failure, message.Error):
            reason = "the product cannot be encoded for the retrieval service"
            raise invalid([((f"line {stream.line}",), reason)]) from None
        if stream.failure is not None:
            raise stream.failure from None
        raise HTTPException(
            503,
            "the catalogue stream was cut off: send the catalogue again (unchanged products "
            "are not stored twice)",
            headers={"Retry-After": "1"},
        ) from None
    return reply


@router.get(
    "/v2/tenants/{tenantId}/knowledge/search",
    response_model=SearchResult,
    summary="Search the tenant's knowledge as the agent does",
    responses=TENANT_PROBLEMS,
)
async def search(
    request: Request,
    tenant_id: TenantId,
    principal: Caller,
    q: Annotated[str, Query(min_length=1, max_length=4000, pattern=r"\S")],
    top_k: Annotated[int, Query(alias="topK", ge=1, le=50)] = 5,
    min_score: Annotated[float, Query(alias="minScore", ge=0.0, le=1.0)] = 0.0,
    include_global: Annotated[bool, Query(alias="includeGlobal")] = False,
) -> SearchResult:
    """Best chunks first; minScore 0 uses the embedder's calibrated threshold."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin", "agent")
    with convert.admin_call(request, tenant_id):
        reply = await request.app.state.clients.retrieval.Search(
            retrieval_pb.SearchRequest(
                query=q, top_k=top_k, min_score=min_score, include_global=include_global
            )
        )
    return convert.search_result(reply)


@router.delete(
    "/v2/tenants/{tenantId}/knowledge/{docId}",
    response_model=DeletedDocument,
    summary="Delete a document (every chunk of it)",
    responses=TENANT_PROBLEMS,
)
async def delete_document(
    request: Request, tenant_id: TenantId, doc_id: DocId, principal: Caller
) -> DeletedDocument:
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    with convert.admin_call(request, tenant_id):
        reply = await request.app.state.clients.retrieval.DeleteDocument(
            retrieval_pb.DeleteDocumentRequest(doc_id=doc_id)
        )
    if reply.deleted_chunks == 0:
        raise HTTPException(404, "the tenant has no such document")
    log.info("document deleted", extra={"chunks": reply.deleted_chunks})
    return convert.deleted_document(doc_id, reply)
