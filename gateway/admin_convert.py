"""Between the administration API's JSON models and the context and retrieval messages, and
from an HTTP request to the call context its gRPC calls carry."""

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import audit_pb2, consent_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

from gateway.admin_models import (
    AuditEntry,
    AuditPage,
    AuditVerification,
    Consent,
    DeletedDocument,
    Erasure,
    IngestRejection,
    IngestResult,
    KnowledgeDocument,
    SearchHit,
    SearchResult,
    SessionTranscript,
    ShortContext,
    TenantConfig,
    Turn,
    TurnAction,
    TurnMetadata,
    TurnRole,
)
from gateway.auth import Principal
from gateway.convert import enum_name, role_name
from services.mesh import correlation
from services.mesh.errors import FieldViolation

_PATH_PART = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\.')


@contextmanager
def admin_call(request: Request, tenant_id: str, session_id: str = "") -> Iterator[None]:
    """Bind the request's correlation id and the path's tenant (and session) for the gRPC calls
    made inside, and name them in the request's log line."""
    request.state.tenant_id, request.state.session_id = tenant_id, session_id
    call = correlation.CallContext(
        correlation_id=request.state.correlation_id, tenant_id=tenant_id, session_id=session_id
    )
    with correlation.bound(call):
        yield


def on_behalf_of(principal: Principal) -> context_pb.Principal:
    """Who the gateway acts for, for the context service's audit entries (which keep the role
    and a non-reversible reference to the subject)."""
    return context_pb.Principal(role=principal.role, subject=principal.subject)


def json_location(field: str) -> tuple[str | int, ...]:
    """A protobuf field path (`intents[0].action_types`, `slot_prompts["size"].ask`) as the
    location of the same field in the JSON body (`intents.0.actionTypes`, `slotPrompts.size.ask`).
    """
    location: list[str | int] = []
    for match in _PATH_PART.finditer(field):
        name, index, key = match.groups()
        if name is not None:
            head, *rest = name.split("_")
            location.append(head + "".join(part.title() for part in rest))
        elif index is not None:
            location.append(int(index))
        elif key is not None:
            location.append(re.sub(r"\\(.)", r"\1", key))
    return tuple(location)


def body_errors(violations: Sequence[FieldViolation]) -> list[tuple[tuple[str | int, ...], str]]:
    """Field violations as `(location in the JSON body, message)` pairs."""
    return [(json_location(violation.field), violation.description) for violation in violations]


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def _plain(value: Any) -> Any:
    """Struct numbers are doubles: whole ones are returned as integers (stock 12, not 12.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _plain(json_format.MessageToDict(struct))
    return result


def _time(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


# --- tenant configuration ------------------------------------------------------------------


def tenant_config(body: TenantConfig, tenant_id: str) -> tenant_pb2.TenantConfig:
    return tenant_pb2.TenantConfig(
        tenant_id=tenant_id,
        name=body.name.strip(),
        language=body.language,
        adn=body.adn,
        safety_policy=body.safety_policy,
        allowed_actions=body.allowed_actions,
        intents=[
            tenant_pb2.Intent(
                name=intent.name,
                examples=intent.examples,
                reply_template=intent.reply_template,
                reply_templates=intent.reply_templates,
                action_types=intent.action_types,
                required_slots=intent.required_slots,
                follows=intent.follows,
            )
            for intent in body.intents
        ],
        escalation_threshold=body.escalation_threshold,
        dedup_window_seconds=body.dedup_window_seconds,
        daily_token_budget=body.daily_token_budget,
        turns_per_minute=body.turns_per_minute,
        slot_prompts={
            key: tenant_pb2.SlotPrompt(ask=prompt.ask, invalid=prompt.invalid)
            for key, prompt in body.slot_prompts.items()
        },
    )


def tenant_json(config: tenant_pb2.TenantConfig) -> dict[str, Any]:
    """The stored configuration as returned (camelCase; float32 noise rounded off)."""
    return {
        "tenantId": config.tenant_id,
        "name": config.name,
        "language": config.language,
        "adn": config.adn,
        "safetyPolicy": config.safety_policy,
        "allowedActions": list(config.allowed_actions),
        "intents": [
            {
                "name": intent.name,
                "examples": list(intent.examples),
                "replyTemplate": intent.reply_template,
                "replyTemplates": dict(intent.reply_templates),
                "actionTypes": list(intent.action_types),
                "requiredSlots": list(intent.required_slots),
                "follows": list(intent.follows),
            }
            for intent in config.intents
        ],
        "escalationThreshold": round(config.escalation_threshold, 6),
        "dedupWindowSeconds": config.dedup_window_seconds,
        "dailyTokenBudget": config.daily_token_budget,
        "turnsPerMinute": config.turns_per_minute,
        "slotPrompts": {
            key: {"ask": dict(prompt.ask), "invalid": dict(prompt.invalid)}
            for key, prompt in config.slot_prompts.items()
        },
    }


# --- knowledge -----------------------------------------------------------------------------


def document(body: KnowledgeDocument) -> retrieval_pb.Document:
    fields = dict(body.metadata)
    if body.title is not None:
        fields["title"] = body.title
    return retrieval_pb.Document(
        doc_id=body.doc_id,
        text=body.text,
        metadata=retrieval_pb.DocumentMetadata(
            source=body.source,
            lang=body.lang or "",
            category=body.category,
            tags=body.tags,
            fields=_struct(fields),
        ),
    )


def upserted(reply: retrieval_pb.UpsertDocumentsResponse) -> IngestResult:
    return IngestResult(upserted=reply.upserted, unchanged=reply.unchanged)


def ingested(reply: retrieval_pb.BulkIngestResponse, lines: Sequence[int]) -> IngestResult:
    """A stream's outcome, its rejections named by catalogue line (`lines[index]`)."""
    return IngestResult(
        upserted=reply.upserted,
        unchanged=reply.unchanged,
        rejected=reply.rejected,
        rejections=[
            IngestRejection(
                line=lines[r.index] if 0 <= r.index < len(lines) else None,
                doc_id=r.doc_id,
                reason=r.reason,
            )
            for r in reply.rejections
        ],
    )


def search_result(reply: retrieval_pb.SearchResponse) -> SearchResult:
    return SearchResult(
        hits=[
            SearchHit(
                doc_id=hit.document.doc_id,
                chunk_id=hit.document.chunk_id,
                text=hit.document.text,
                score=round(hit.score, 4),
                source=hit.document.metadata.source,
                lang=hit.document.metadata.lang,
                category=hit.document.metadata.category,
                tags=list(hit.document.metadata.tags),
                fields=_dict(hit.document.metadata.fields),
                visibility=(
                    "global"
                    if hit.document.visibility == retrieval_pb.VISIBILITY_GLOBAL
                    else "tenant"
                ),
            )
            for hit in reply.hits
        ],
        embedder=reply.embedder,
    )


def deleted_document(doc_id: str, reply: retrieval_pb.DeleteDocumentResponse) -> DeletedDocument:
    return DeletedDocument(doc_id=doc_id, deleted_chunks=reply.deleted_chunks)


# --- users ---------------------------------------------------------------------------------


def consent(user_id: str, record: consent_pb2.UserConsent) -> Consent:
    return Consent(
        user_id=user_id,
        voice_recording=record.voice_recording_consent,
        data_learning=record.data_learning_consent,
        consent_date=_time(record.consent_date),
        revoked_date=_time(record.revoked_date),
    )


def erasure(user_id: str, reply: context_pb.EraseUserResponse) -> Erasure:
    return Erasure(
        user_id=user_id,
        sessions_erased=reply.sessions_erased,
        turns_erased=reply.turns_erased,
        consent_erased=reply.consent_erased,
    )


# --- sessions ------------------------------------------------------------------------------


def _turn(turn: conversation_pb2.ConversationTurn) -> Turn:
    meta = turn.metadata
    return Turn(
        turn_id=turn.turn_id,
        role=TurnRole(role_name(turn.role)),
        text=turn.text,
        actions=[
            TurnAction(
                action_id=action.action_id,
                type=action.type,
                params=_dict(action.params),
                status=enum_name(
                    conversation_pb2.ActionStatus.Name(action.status), "ACTION_STATUS_"
                ),
            )
            for action in turn.actions
        ],
        metadata=TurnMetadata(
            channel=enum_name(conversation_pb2.Channel.Name(meta.channel), "CHANNEL_"),
            tokens_used=meta.tokens_used,
            embeddings_retrieved=meta.embeddings_retrieved,
            latency_ms=meta.latency_ms,
            intent=meta.intent,
            confidence=round(meta.confidence, 4),
            model=meta.model,
            degraded=meta.degraded,
            human_agent_id=meta.human_agent_id,
        ),
        timestamp=_time(turn.timestamp),
        correlation_id=turn.correlation_id,
    )


def session_transcript(
    session: conversation_pb2.SessionContext, page: context_pb.ListTurnsResponse
) -> SessionTranscript:
    short = session.short_context
    return SessionTranscript(
        session_id=session.session_id,
        tenant_id=session.tenant_id,
        user_id=session.user_id,
        channel=enum_name(conversation_pb2.Channel.Name(session.channel), "CHANNEL_"),
        short_context=ShortContext(
            summary=short.summary, last_intent=short.last_intent, entities=_dict(short.entities)
        ),
        created_at=_time(session.created_at),
        updated_at=_time(session.updated_at),
        expires_at=_time(session.expires_at),
        turns=[_turn(turn) for turn in page.turns],
        next_page_token=page.next_page_token,
    )


# --- audit ---------------------------------------------------------------------------------


def _audit_entry(entry: audit_pb2.AuditEntry) -> AuditEntry:
    return AuditEntry(
        entry_id=entry.entry_id,
        sequence=entry.sequence,
        action=entry.action,
        correlation_id=entry.correlation_id,
        session_id=entry.session_id,
        actor=entry.actor,
        payload=_dict(entry.payload),
        timestamp=_time(entry.timestamp),
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )


def audit_page(reply: context_pb.ListAuditResponse) -> AuditPage:
    return AuditPage(
        entries=[_audit_entry(entry) for entry in reply.entries],
        next_page_token=reply.next_page_token,
    )


def audit_verification(reply: context_pb.VerifyAuditResponse) -> AuditVerification:
    return AuditVerification(
        valid=reply.valid,
        entries_checked=reply.entries_checked,
        first_invalid_sequence=reply.first_invalid_sequence,
        first_invalid_reason=reply.first_invalid_reason,
        head_hash=reply.head_hash,
    )
