"""A tenant's append-only, hash-chained audit log: pages of entries and the chain's
verification (tenant-admin; see `tenants.py`)."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway import admin_convert as convert
from gateway.admin_models import NAME_PATTERN, PAGE_CURSOR_PATTERN, AuditPage, AuditVerification
from gateway.models import ID_PATTERN
from gateway.routes.common import TENANT_PROBLEMS, TenantId, known_tenant
from gateway.security import Caller

router = APIRouter(tags=["audit"])


@router.get(
    "/v2/tenants/{tenantId}/audit",
    response_model=AuditPage,
    summary="Page through the tenant's audit log",
    responses=TENANT_PROBLEMS,
)
async def list_audit(
    request: Request,
    tenant_id: TenantId,
    principal: Caller,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(alias="pageToken", pattern=PAGE_CURSOR_PATTERN)] = None,
    correlation_id: Annotated[str | None, Query(alias="correlationId", pattern=ID_PATTERN)] = None,
    action: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    session_id: Annotated[str | None, Query(alias="sessionId", pattern=ID_PATTERN)] = None,
) -> AuditPage:
    """Entries in chain order, optionally only those of one correlation id, action or
    session; `nextPageToken` is empty on the last page."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    context = request.app.state.clients.context
    with convert.admin_call(request, tenant_id):
        await known_tenant(request)
        reply = await context.ListAudit(
            context_pb.ListAuditRequest(
                page_size=page_size,
                page_token=page_token or "",
                correlation_id=correlation_id or "",
                action=action or "",
                session_id=session_id or "",
            )
        )
    return convert.audit_page(reply)


@router.get(
    "/v2/tenants/{tenantId}/audit/verify",
    response_model=AuditVerification,
    summary="Verify the tenant's audit hash chain",
    responses=TENANT_PROBLEMS,
)
async def verify_audit(
    request: Request, tenant_id: TenantId, principal: Caller
) -> AuditVerification:
    """Recompute every hash and link; `valid: false` names the first broken entry."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    context = request.app.state.clients.context
    with convert.admin_call(request, tenant_id):
        await known_tenant(request)
        reply = await context.VerifyAudit(context_pb.VerifyAuditRequest())
    return convert.audit_verification(reply)
