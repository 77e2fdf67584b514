"""A tenant's append-only, hash-chained audit log: pages of entries and the chain's
verification (tenant-admin; see `tenants.py`)."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway import admin_convert as convert
from gateway.admin_models import NAME_PATTERN, PAGE_CURSOR_PATTERN, AuditPage, AuditVerification
from gateway.models import ID_PATTERN, TENANT_PATTERN
from gateway.problems import PROBLEM_RESPONSE
from gateway.security import Caller

router = APIRouter(tags=["audit"])
TenantId = Annotated[str, Path(alias="tenantId", pattern=TENANT_PATTERN)]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: PROBLEM_RESPONSE for status in (400, 401, 403, 404, 429, 503, 504)
}


@router.get(
    "/v2/tenants/{tenantId}/audit",
    response_model=AuditPage,
    summary="Page through the tenant's audit log",
    responses=PROBLEMS,
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
        await context.GetTenant(context_pb.GetTenantRequest())
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
    responses=PROBLEMS,
)
async def verify_audit(
    request: Request, tenant_id: TenantId, principal: Caller
) -> AuditVerification:
    """Recompute every hash and link; `valid: false` names the first broken entry."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    context = request.app.state.clients.context
    with convert.admin_call(request, tenant_id):
        await context.GetTenant(context_pb.GetTenantRequest())
        reply = await context.VerifyAudit(context_pb.VerifyAuditRequest())
    return convert.audit_verification(reply)
