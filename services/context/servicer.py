"""ContextService over gRPC: validate, call ContextBook, return. Storage lives elsewhere."""

import time
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as pb
from metaagent.context.v1 import context_service_pb2_grpc

from services.context.audit import Actor, AuditLog, principal_violations
from services.context.consents import ConsentBook
from services.context.guards import TurnGuards
from services.context.handoffs import HandoffDesk, id_violations
from services.context.idempotency import ClaimState
from services.context.sessions import ContextBook
from services.context.store import AuditFilters
from services.mesh import correlation
from services.mesh.errors import FieldViolation, MeshError, invalid_argument

TRANSCRIPT_LIMIT = 500
DEFAULT_OUTBOX_PAGE, MAX_OUTBOX_PAGE = 100, 500
MAX_OUTBOX_LEASE_SECONDS, MAX_CLAIMANT_CHARS = 3600, 128
OUTBOX_OUTCOMES = (
    conversation_pb2.ACTION_STATUS_PENDING,
    conversation_pb2.ACTION_STATUS_SENT,
    conversation_pb2.ACTION_STATUS_FAILED,
)
CLAIM_STATES = {
    ClaimState.CLAIMED: pb.IDEMPOTENCY_STATE_CLAIMED,
    ClaimState.IN_FLIGHT: pb.IDEMPOTENCY_STATE_IN_FLIGHT,
    ClaimState.COMPLETED: pb.IDEMPOTENCY_STATE_COMPLETED,
}


def _session_id(value: str, field: str = "session_id") -> str:
    violations = id_violations(field, value)
    if violations:
        raise invalid_argument(*violations)
    return value


def _actor(request: Any) -> Actor:
    """Who acts in an audited call: the calling service (its mTLS identity) and the person it
    names in `on_behalf_of`, if any (INVALID_ARGUMENT when that is malformed)."""
    service = correlation.current().caller
    if not request.HasField("on_behalf_of"):
        return Actor(service)
    principal: pb.Principal = request.on_behalf_of
    violations = principal_violations(principal.role, principal.subject, "on_behalf_of")
    if violations:
        raise invalid_argument(*violations)
    return Actor(service, principal.role, principal.subject)


def _seconds(duration: duration_pb2.Duration) -> float:
    return float(duration.ToNanoseconds()) / 1e9


def _stamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class ContextServicer(context_service_pb2_grpc.ContextServiceServicer):
    def __init__(
        self,
        book: ContextBook,
        guards: TurnGuards,
        audit: AuditLog,
        consents: ConsentBook,
        handoffs: HandoffDesk,
    ) -> None:
        self._book = book
        self._guards = guards
        self._audit = audit
        self._consents = consents
        self._handoffs = handoffs

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
        if request.HasField("idempotency"):
            raise MeshError(
                grpc.StatusCode.UNIMPLEMENTED,
                "completing a claim inside CommitTurn is not available yet; "
                "call CompleteIdempotent after the commit",
                "COMMIT_WITH_IDEMPOTENCY",
            )
        stored = await self._book.commit_turn(
            correlation.current().tenant_id,
            session_id,
            request.turns,
            short,
            request.fencing_token,
        )
        return pb.CommitTurnResponse(turns=stored)

    async def UpdateShortContext(
        self, request: pb.UpdateShortContextRequest, context: Any
    ) -> pb.UpdateShortContextResponse:
        session_id = _session_id(request.session_id)
        if not request.HasField("short_context"):
            raise invalid_argument(FieldViolation("short_context", "is required"))
        updated = await self._book.update_short_context(
            correlation.current().tenant_id, session_id, request.short_context
        )
        return pb.UpdateShortContextResponse(context=updated)

    async def AcquireSessionLock(
        self, request: pb.AcquireSessionLockRequest, context: Any
    ) -> pb.AcquireSessionLockResponse:
        call = correlation.current()
        lease = await self._guards.acquire(
            call.tenant_id,
            _session_id(request.session_id),
            _seconds(request.ttl),
            _seconds(request.wait_timeout),
            call.time_remaining(),
        )
        return pb.AcquireSessionLockResponse(
            fencing_token=lease.fencing_token, expires_at=_stamp(lease.expires_at)
        )

    async def ReleaseSessionLock(
        self, request: pb.ReleaseSessionLockRequest, context: Any
    ) -> pb.ReleaseSessionLockResponse:
        released = await self._guards.release(
            correlation.current().tenant_id,
            _session_id(request.session_id),
            request.fencing_token,
        )
        return pb.ReleaseSessionLockResponse(released=released)

    async def BeginIdempotent(
        self, request: pb.BeginIdempotentRequest, context: Any
    ) -> pb.BeginIdempotentResponse:
        claim = await self._guards.begin(
            correlation.current().tenant_id,
            request.key,
            _seconds(request.lease),
            request.fingerprint,
        )
        return pb.BeginIdempotentResponse(
            state=CLAIM_STATES[claim.state],
            claim_id=claim.claim_id,
            response=claim.response,
            expires_at=_stamp(claim.expires_at),
        )

    async def CompleteIdempotent(
        self, request: pb.CompleteIdempotentRequest, context: Any
    ) -> pb.CompleteIdempotentResponse:
        tenant_id = correlation.current().tenant_id
        completion = request.completion
        retention = _seconds(completion.retention) or await self._book.dedup_window(tenant_id)
        await self._guards.complete(
            tenant_id, completion.key, completion.claim_id, completion.response, retention
        )
        return pb.CompleteIdempotentResponse(expires_at=_stamp(time.time() + retention))

    async def AbandonIdempotent(
        self, request: pb.AbandonIdempotentRequest, context: Any
    ) -> pb.AbandonIdempotentResponse:
        abandoned = await self._guards.abandon(
            correlation.current().tenant_id, request.key, request.claim_id
        )
        return pb.AbandonIdempotentResponse(abandoned=abandoned)

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

    async def ListTurns(self, request: pb.ListTurnsRequest, context: Any) -> pb.ListTurnsResponse:
        turns, token = await self._book.turns_page(
            correlation.current().tenant_id,
            _session_id(request.session_id),
            request.page_size,
            request.page_token,
        )
        return pb.ListTurnsResponse(turns=turns, next_page_token=token)

    async def ListOutbox(
        self, request: pb.ListOutboxRequest, context: Any
    ) -> pb.ListOutboxResponse:
        violations = []
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        if not 0 <= request.lease_seconds <= MAX_OUTBOX_LEASE_SECONDS:
            violations.append(
                FieldViolation("lease_seconds", f"must be 0..{MAX_OUTBOX_LEASE_SECONDS}")
            )
        if len(request.claimant) > MAX_CLAIMANT_CHARS:
            violations.append(
                FieldViolation("claimant", f"must be at most {MAX_CLAIMANT_CHARS} characters")
            )
        if violations:
            raise invalid_argument(*violations)
        size = min(request.page_size or DEFAULT_OUTBOX_PAGE, MAX_OUTBOX_PAGE)
        tenant_id = correlation.current().tenant_id or None
        messages = await self._book.pending_outbox(
            tenant_id, size, request.lease_seconds, request.claimant or correlation.current().caller
        )
        response = pb.ListOutboxResponse(messages=messages)
        if request.report_backlog:
            pending, oldest = await self._book.outbox_backlog(tenant_id)
            response.backlog.pending = pending
            if oldest is not None:
                response.backlog.oldest_created_at.FromDatetime(oldest)
        return response

    async def MarkOutbox(
        self, request: pb.MarkOutboxRequest, context: Any
    ) -> pb.MarkOutboxResponse:
        violations = []
        if not request.message_ids:
            violations.append(FieldViolation("message_ids", "at least one id is required"))
        if request.status not in OUTBOX_OUTCOMES:
            violations.append(FieldViolation("status", "must be PENDING, SENT or FAILED"))
        if violations:
            raise invalid_argument(*violations)
        updated = await self._book.mark_outbox(
            correlation.current().tenant_id or None,
            list(request.message_ids),
            request.status,
            request.error,
        )
        return pb.MarkOutboxResponse(updated=updated)

    async def GetTenant(self, request: pb.GetTenantRequest, context: Any) -> pb.GetTenantResponse:
        config, revision = await self._book.tenant_revision(correlation.current().tenant_id)
        return pb.GetTenantResponse(tenant=config, revision=revision)

    async def PutTenant(self, request: pb.PutTenantRequest, context: Any) -> pb.PutTenantResponse:
        if not request.HasField("tenant"):
            raise invalid_argument(FieldViolation("tenant", "is required"))
        call = correlation.current()
        tenant_id = call.tenant_id
        written = await self._book.put_tenant(
            tenant_id,
            request.tenant,
            expected_revision=request.expected_revision,
            correlation_id=call.correlation_id,
            actor=_actor(request),
        )
        stored = pb.PutTenantResponse(created=written.created, revision=written.revision)
        stored.tenant.CopyFrom(request.tenant)
        stored.tenant.tenant_id = tenant_id
        return stored

    async def AppendAudit(
        self, request: pb.AppendAuditRequest, context: Any
    ) -> pb.AppendAuditResponse:
        call = correlation.current()
        session_id = _session_id(request.session_id) if request.session_id else ""
        entry = await self._audit.append(
            call.tenant_id,
            request.action,
            request.payload,
            session_id=session_id,
            correlation_id=call.correlation_id,
            actor=call.caller,
        )
        return pb.AppendAuditResponse(entry=entry)

    async def ListAudit(self, request: pb.ListAuditRequest, context: Any) -> pb.ListAuditResponse:
        filters = AuditFilters(
            correlation_id=request.correlation_id,
            action=request.action,
            session_id=request.session_id,
        )
        entries, token = await self._audit.page(
            correlation.current().tenant_id, request.page_size, request.page_token, filters
        )
        return pb.ListAuditResponse(entries=entries, next_page_token=token)

    async def VerifyAudit(
        self, request: pb.VerifyAuditRequest, context: Any
    ) -> pb.VerifyAuditResponse:
        verdict = await self._audit.verify(correlation.current().tenant_id)
        return pb.VerifyAuditResponse(
            valid=verdict.valid,
            entries_checked=verdict.entries_checked,
            first_invalid_sequence=verdict.first_invalid_sequence,
            head_hash=verdict.head_hash,
            first_invalid_reason=verdict.reason,
        )

    async def GetConsent(
        self, request: pb.GetConsentRequest, context: Any
    ) -> pb.GetConsentResponse:
        consent = await self._consents.get(correlation.current().tenant_id, request.user_id)
        return pb.GetConsentResponse(consent=consent)

    async def GrantConsent(
        self, request: pb.GrantConsentRequest, context: Any
    ) -> pb.GrantConsentResponse:
        call = correlation.current()
        consent = await self._consents.grant(
            call.tenant_id,
            request.user_id,
            list(request.kinds),
            request.source,
            call.correlation_id,
            actor=_actor(request),
        )
        return pb.GrantConsentResponse(consent=consent)

    async def RevokeConsent(
        self, request: pb.RevokeConsentRequest, context: Any
    ) -> pb.RevokeConsentResponse:
        call = correlation.current()
        consent = await self._consents.revoke(
            call.tenant_id,
            request.user_id,
            list(request.kinds),
            call.correlation_id,
            actor=_actor(request),
        )
        return pb.RevokeConsentResponse(consent=consent)

    async def EraseUser(self, request: pb.EraseUserRequest, context: Any) -> pb.EraseUserResponse:
        call = correlation.current()
        erasure = await self._consents.erase(
            call.tenant_id,
            request.user_id,
            call.correlation_id,
            actor=_actor(request),
            replies=self._guards,
        )
        return pb.EraseUserResponse(
            sessions_erased=len(erasure.session_ids),
            turns_erased=erasure.turns,
            consent_erased=erasure.consent,
            handoffs_erased=erasure.handoffs,
        )

    async def EnqueueHandoff(
        self, request: pb.EnqueueHandoffRequest, context: Any
    ) -> pb.EnqueueHandoffResponse:
        enqueued = await self._handoffs.enqueue(correlation.current().tenant_id, request)
        return pb.EnqueueHandoffResponse(enqueued=enqueued)

    async def ClaimHandoffs(
        self, request: pb.ClaimHandoffsRequest, context: Any
    ) -> pb.ClaimHandoffsResponse:
        claimed = await self._handoffs.claim(correlation.current().tenant_id, request)
        return pb.ClaimHandoffsResponse(handoffs=claimed)

    async def CompleteHandoff(
        self, request: pb.CompleteHandoffRequest, context: Any
    ) -> pb.CompleteHandoffResponse:
        completed = await self._handoffs.complete(correlation.current().tenant_id, request)
        return pb.CompleteHandoffResponse(completed=completed)

    async def ReleaseHandoffs(
        self, request: pb.ReleaseHandoffsRequest, context: Any
    ) -> pb.ReleaseHandoffsResponse:
        released = await self._handoffs.release(correlation.current().tenant_id, request)
        return pb.ReleaseHandoffsResponse(released=released)
