"""Tenant administration: `/v2/tenants/{tenantId}` and, through the routers included below, its
knowledge base (`knowledge.py`), users and sessions (`users.py`) and audit log (`audit.py`).

Every route first applies the tenant guard (a token acts only for its own tenant; a
platform-admin for any), then a role gate (platform-admin passes every gate):

    PUT    /v2/tenants/{t}                      tenant-admin replaces (not the quotas); only
                                                platform-admin creates and sets the quotas
    GET    /v2/tenants/{t}                      tenant-admin, agent
    POST   /v2/tenants/{t}/knowledge            tenant-admin
    DELETE /v2/tenants/{t}/knowledge/{docId}    tenant-admin
    GET    /v2/tenants/{t}/knowledge/search     tenant-admin, agent
    GET    /v2/tenants/{t}/users/{u}/consent    tenant-admin; a user (role user) when sub == u
    PUT    /v2/tenants/{t}/users/{u}/consent    tenant-admin; a user (role user) when sub == u
    DELETE /v2/tenants/{t}/users/{u}            tenant-admin (erasure)
    GET    /v2/tenants/{t}/sessions/{s}         tenant-admin, agent; a user: own sessions only
    GET    /v2/tenants/{t}/audit[/verify]       tenant-admin

Routes on users and the audit log first check that the tenant exists (the context service
answers those RPCs for any tenant id), so an unknown tenant is a 404 everywhere.
"""

import logging
from typing import Annotated

import grpc
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from metaagent.common.v1 import tenant_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway import admin_convert as convert
from gateway.admin_models import PLATFORM_QUOTAS, TenantConfig, invalid
from gateway.auth import AuthError
from gateway.models import TENANT_PATTERN
from gateway.problems import PROBLEM_RESPONSE
from gateway.requests import body_limit, json_body
from gateway.routes import audit, knowledge, users
from gateway.security import Caller
from services.mesh.tenant_rules import tenant_config_violations

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["tenants"])
TenantId = Annotated[str, Path(alias="tenantId", pattern=TENANT_PATTERN)]


@router.put(
    "/v2/tenants/{tenantId}",
    response_model=TenantConfig,
    summary="Create or replace a tenant's configuration",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TenantConfig"}}
            },
        }
    },
    responses={
        201: {"model": TenantConfig, "description": "The tenant was created"},
        **{status: PROBLEM_RESPONSE for status in (400, 401, 403, 413, 429, 503, 504)},
    },
)
@body_limit(lambda settings: settings.max_tenant_config_bytes)
async def put_tenant(request: Request, tenant_id: TenantId, principal: Caller) -> JSONResponse:
    """Replace the tenant's configuration (200), or create the tenant (201, platform-admin).
    The quotas (`dailyTokenBudget`, `turnsPerMinute`) are the platform's: a tenant-admin's
    write keeps the stored ones when it leaves them out, and is refused (403) when it sets
    them to anything else."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    body = await json_body(request, TenantConfig)
    # The cross references (the path's tenant, repeated names, intents' actions and follows)
    # by the rules the context service applies to every caller.
    config = convert.tenant_config(body, body.tenant_id or tenant_id)
    violations = tenant_config_violations(config, tenant_id)
    if violations:
        raise invalid(convert.body_errors(violations))
    context = request.app.state.clients.context
    with convert.admin_call(request, tenant_id):
        if principal.role != "platform-admin":
            stored = await _existing_or_forbidden(request)
            _keep_platform_quotas(body, config, stored)
        reply = await context.PutTenant(
            context_pb.PutTenantRequest(tenant=config, on_behalf_of=convert.on_behalf_of(principal))
        )
        log.info("tenant configured", extra={"tenantCreated": reply.created})
    return JSONResponse(
        convert.tenant_json(reply.tenant), status_code=201 if reply.created else 200
    )


async def _existing_or_forbidden(request: Request) -> tenant_pb2.TenantConfig:
    """The stored configuration: a tenant-admin replaces its tenant's configuration; creating a
    tenant is the platform's."""
    try:
        reply = await request.app.state.clients.context.GetTenant(context_pb.GetTenantRequest())
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise AuthError(403, "Forbidden", "only a platform-admin creates a tenant") from None
        raise
    stored: tenant_pb2.TenantConfig = reply.tenant
    return stored


def _keep_platform_quotas(
    body: TenantConfig, config: tenant_pb2.TenantConfig, stored: tenant_pb2.TenantConfig
) -> None:
    """Give `config` the stored quotas; AuthError(403) when `body` sets one to another value.

    The context service writes whole configurations, with no condition on what it holds: a
    platform-admin's quota change landing between this read and the tenant-admin's write is
    overwritten by the values read here (both writes are in the audit log)."""
    changed = [
        alias
        for name, alias in PLATFORM_QUOTAS
        if name in body.model_fields_set and getattr(config, name) != getattr(stored, name)
    ]
    if changed:
        raise AuthError(
            403,
            "Forbidden",
            f"only a platform-admin changes {' or '.join(changed)}: leave them out to keep "
            "the current values",
        )
    for name, _ in PLATFORM_QUOTAS:
        setattr(config, name, getattr(stored, name))


@router.get(
    "/v2/tenants/{tenantId}",
    response_model=TenantConfig,
    summary="Read a tenant's configuration",
    responses={status: PROBLEM_RESPONSE for status in (400, 401, 403, 404, 429, 503, 504)},
)
async def get_tenant(request: Request, tenant_id: TenantId, principal: Caller) -> JSONResponse:
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin", "agent")
    with convert.admin_call(request, tenant_id):
        reply = await request.app.state.clients.context.GetTenant(context_pb.GetTenantRequest())
    return JSONResponse(convert.tenant_json(reply.tenant))


for area in (knowledge.router, users.router, audit.router):
    router.include_router(area)
