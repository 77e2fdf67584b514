"""A tenant's end users and sessions: consent, erasure, and a session with its transcript (role
gates: `tenants.py`). A `user` token reaches only its own consent and its own sessions."""

import logging
from typing import Annotated, Final

import grpc
from fastapi import APIRouter, HTTPException, Path, Query, Request
from metaagent.context.v1 import consent_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway import admin_convert as convert
from gateway.admin_models import (
    PAGE_CURSOR_PATTERN,
    USER_PATTERN,
    Consent,
    ConsentUpdate,
    Erasure,
    SessionTranscript,
    invalid,
)
from gateway.auth import AuthError, Principal
from gateway.models import ID_PATTERN
from gateway.problems import PROBLEM_RESPONSE, json_request_body
from gateway.requests import body_limit, json_body
from gateway.routes.common import TENANT_PROBLEMS, TenantId, known_tenant
from gateway.security import Caller

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["users"])
UserId = Annotated[str, Path(alias="userId", pattern=USER_PATTERN)]
SessionId = Annotated[str, Path(alias="sessionId", pattern=ID_PATTERN)]
USER_SOURCE: Final = "self_service"
"""The consent source of a user's own change (the only one a user gets)."""
ADMIN_SOURCE: Final = "admin_api"
"""The consent source of an administrator's change that names none."""


def _self_or_admin(principal: Principal, tenant_id: str, user_id: str) -> None:
    """Consent is the user's own business, or the tenant administrator's."""
    principal.require_tenant(tenant_id)
    if principal.role == "user":
        if principal.subject != user_id:
            raise AuthError(403, "User mismatch", "a user token acts only for its subject")
        return
    principal.require_role("tenant-admin")


@router.get(
    "/v2/tenants/{tenantId}/users/{userId}/consent",
    response_model=Consent,
    summary="Read a user's consent",
    responses=TENANT_PROBLEMS,
)
async def get_consent(
    request: Request, tenant_id: TenantId, user_id: UserId, principal: Caller
) -> Consent:
    """A user with no record has consented to nothing."""
    _self_or_admin(principal, tenant_id, user_id)
    with convert.admin_call(request, tenant_id):
        await known_tenant(request)
        reply = await request.app.state.clients.context.GetConsent(
            context_pb.GetConsentRequest(user_id=user_id)
        )
    return convert.consent(user_id, reply.consent)


@router.put(
    "/v2/tenants/{tenantId}/users/{userId}/consent",
    response_model=Consent,
    summary="Grant or revoke a user's consent",
    openapi_extra={"requestBody": json_request_body(ConsentUpdate)},
    responses=TENANT_PROBLEMS | {413: PROBLEM_RESPONSE},
)
@body_limit(lambda settings: settings.max_body_bytes)
async def put_consent(
    request: Request, tenant_id: TenantId, user_id: UserId, principal: Caller
) -> Consent:
    """`true` grants a kind, `false` revokes it, a kind left out is unchanged (each change is
    audited by the context service, with its source: `self_service` for a user's own change,
    else the administrator's `source`, `admin_api` by default; a user may not choose one).

    Revocations are applied first, then grants (the context service has no single call for
    both): when the grant fails after the revocation was stored, the answer is the failure
    (e.g. 503, nothing granted) and the revocation stays, which errs on the side of less
    consent; sending the same request again completes it."""
    _self_or_admin(principal, tenant_id, user_id)
    body = await json_body(request, ConsentUpdate)
    if principal.role == "user" and body.source not in ("", USER_SOURCE):
        raise AuthError(
            403,
            "Forbidden",
            f"a user's own consent change is recorded as {USER_SOURCE}: only a tenant-admin "
            "chooses the source",
        )
    kinds = {
        consent_pb2.CONSENT_KIND_VOICE_RECORDING: body.voice_recording,
        consent_pb2.CONSENT_KIND_DATA_LEARNING: body.data_learning,
    }
    granted = [kind for kind, value in kinds.items() if value is True]
    revoked = [kind for kind, value in kinds.items() if value is False]
    if not granted and not revoked:
        raise invalid([(("body",), "set voiceRecording or dataLearning to true or false")])
    context = request.app.state.clients.context
    with convert.admin_call(request, tenant_id):
        await known_tenant(request)
        record = consent_pb2.UserConsent()
        if revoked:  # first: a failure after it leaves less consent, never more
            revoke = context_pb.RevokeConsentRequest(
                user_id=user_id, kinds=revoked, on_behalf_of=convert.on_behalf_of(principal)
            )
            record = (await context.RevokeConsent(revoke)).consent
        if granted:
            source = USER_SOURCE if principal.role == "user" else body.source or ADMIN_SOURCE
            grant = context_pb.GrantConsentRequest(
                user_id=user_id,
                kinds=granted,
                source=source,
                on_behalf_of=convert.on_behalf_of(principal),
            )
            try:
                record = (await context.GrantConsent(grant)).consent
            except grpc.aio.AioRpcError:
                if revoked:
                    log.warning(
                        "consent change half applied: revoked, grant failed",
                        extra={"granted": 0, "revoked": len(revoked)},
                    )
                raise
        log.info("consent changed", extra={"granted": len(granted), "revoked": len(revoked)})
    return convert.consent(user_id, record)


@router.delete(
    "/v2/tenants/{tenantId}/users/{userId}",
    response_model=Erasure,
    summary="Erase a user's data",
    responses=TENANT_PROBLEMS,
)
async def erase_user(
    request: Request, tenant_id: TenantId, user_id: UserId, principal: Caller
) -> Erasure:
    """Deletes the user's sessions (with their turns and pending actions), consent record and
    the replies kept for retried requests; the audit log keeps a `user_erased` entry naming the
    user (and the administrator) by a non-reversible reference. Idempotent: erasing an unknown
    user erases nothing."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    with convert.admin_call(request, tenant_id):
        await known_tenant(request)
        reply = await request.app.state.clients.context.EraseUser(
            context_pb.EraseUserRequest(
                user_id=user_id, on_behalf_of=convert.on_behalf_of(principal)
            )
        )
        log.info(
            "user erased",
            extra={"sessions": reply.sessions_erased, "turns": reply.turns_erased},
        )
    return convert.erasure(user_id, reply)


@router.get(
    "/v2/tenants/{tenantId}/sessions/{sessionId}",
    response_model=SessionTranscript,
    summary="Read a session's context and transcript",
    responses=TENANT_PROBLEMS,
)
async def get_session(
    request: Request,
    tenant_id: TenantId,
    session_id: SessionId,
    principal: Caller,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=500)] = 50,
    page_token: Annotated[str | None, Query(alias="pageToken", pattern=PAGE_CURSOR_PATTERN)] = None,
) -> SessionTranscript:
    """The session and one page of its turns, oldest first (`nextPageToken` for the next)."""
    principal.require_tenant(tenant_id)
    if principal.role != "user":
        principal.require_role("agent", "tenant-admin")
    context = request.app.state.clients.context
    with convert.admin_call(request, tenant_id, session_id):
        found = await context.GetSession(context_pb.GetSessionRequest(session_id=session_id))
        if principal.role == "user" and found.context.user_id != principal.subject:
            raise HTTPException(404, "no such session")
        page = await context.ListTurns(
            context_pb.ListTurnsRequest(
                session_id=session_id, page_size=page_size, page_token=page_token or ""
            )
        )
    return convert.session_transcript(found.context, page)
