"""ContextService over gRPC: validate, call ContextBook, return. Storage lives elsewhere."""

from typing import Any

from metaagent.context.v1 import context_service_pb2 as pb
from metaagent.context.v1 import context_service_pb2_grpc

from services.context.sessions import ContextBook
from services.mesh import correlation
from services.mesh.errors import FieldViolation, invalid_argument

TRANSCRIPT_LIMIT = 500


def _session_id(value: str, field: str = "session_id") -> str:
    if not value:
        raise invalid_argument(FieldViolation(field, "is required"))
    if not correlation.ID_PATTERN.match(value):
        raise invalid_argument(FieldViolation(field, "must be 1-128 of [A-Za-z0-9._:-]"))
    return value


class ContextServicer(context_service_pb2_grpc.ContextServiceServicer):
    def __init__(self, book: ContextBook) -> None:
        self._book = book

    async def GetOrCreateSession(
        self, request: pb.GetOrCreateSessionRequest, context: Any
    ) -> pb.GetOrCreateSessionResponse:
        session_id = _session_id(request.session_id)
        session, created, cache_hit = await self._book.get_or_create(
            correlation.current().tenant_id, session_id, request.user_id, request.channel
        )
        return pb.GetOrCreateSessionResponse(context=session, created=created, cache_hit=cache_hit)

    async def CommitTurn(
        self, request: pb.CommitTurnRequest, context: Any
    ) -> pb.CommitTurnResponse:
        session_id = _session_id(request.session_id)
        short = request.short_context if request.HasField("short_context") else None
        stored = await self._book.commit_turn(
            correlation.current().tenant_id, session_id, request.turns, short
        )
        return pb.CommitTurnResponse(turns=stored)

    async def GetSession(
        self, request: pb.GetSessionRequest, context: Any
    ) -> pb.GetSessionResponse:
        session_id = _session_id(request.session_id)
        limit = TRANSCRIPT_LIMIT if request.include_transcript else 0
        session, transcript = await self._book.session(
            correlation.current().tenant_id, session_id, limit
        )
        return pb.GetSessionResponse(
            context=session,
            transcript=transcript,
            transcript_truncated=len(transcript) >= limit > 0,
        )

    async def GetTenant(self, request: pb.GetTenantRequest, context: Any) -> pb.GetTenantResponse:
        return pb.GetTenantResponse(tenant=await self._book.tenant(correlation.current().tenant_id))

    async def PutTenant(self, request: pb.PutTenantRequest, context: Any) -> pb.PutTenantResponse:
        if not request.HasField("tenant"):
            raise invalid_argument(FieldViolation("tenant", "is required"))
        tenant_id = correlation.current().tenant_id
        created = await self._book.put_tenant(tenant_id, request.tenant)
        return pb.PutTenantResponse(tenant=await self._book.tenant(tenant_id), created=created)
