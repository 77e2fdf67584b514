"""Tenant administration: `/v2/tenants/{tenantId}` and, through the routers included below, its
knowledge base (`knowledge.py`), users and sessions (`users.py`) and audit log (`audit.py`).

Every route first applies the tenant guard (a token acts only for its own tenant; a
platform-admin for any), then a role gate (platform-admin passes every gate):

    PUT    /v2/tenants/{t}                      tenant-admin replaces (not the quotas); only
                                                platform-admin creates and sets the quotas
                                                (If-Match honoured, ETag returned)
    GET    /v2/tenants/{t}                      tenant-admin, agent (ETag returned)
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

The configuration has a revision (1 when created, one more on every write): its ETag is `"n"`.
A PUT with `If-Match` replaces only that revision (gateway/preconditions.py), checked by the
context service in the write's transaction, else 412 with the current ETag.
"""

import logging

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from metaagent.common.v1 import tenant_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway import admin_convert as convert
from gateway.admin_models import PLATFORM_QUOTAS, TenantConfig, invalid
from gateway.auth import AuthError
from gateway.preconditions import (
    CURRENT_ETAG_HEADER,
    ETAG_HEADER,
    IF_MATCH_PARAMETER,
    IfMatch,
    etag_headers,
    if_match,
)
from gateway.problems import PROBLEM_RESPONSE, problem_responses
from gateway.requests import body_limit, json_body
from gateway.routes import audit, knowledge, users
from gateway.routes.common import TENANT_PROBLEMS, TenantId
from gateway.security import Caller
from services.mesh.errors import MeshError
from services.mesh.tenant_rules import (
    TENANT_REVISION_MISMATCH,
    revision_mismatch,
    tenant_config_violations,
)

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["tenants"])


@router.put(
    "/v2/tenants/{tenantId}",
    response_model=TenantConfig,
    summary="Create or replace a tenant's configuration",
    openapi_extra={
        "parameters": [IF_MATCH_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TenantConfig"}}
            },
        },
    },
    responses={
        200: {"description": "The configuration was replaced", "headers": ETAG_HEADER},
        201: {
            "model": TenantConfig,
            "description": "The tenant was created",
            "headers": ETAG_HEADER,
        },
        412: {**PROBLEM_RESPONSE, "headers": CURRENT_ETAG_HEADER},
        **problem_responses(400, 401, 403, 413, 429, 503, 504),
    },
)
@body_limit(lambda settings: settings.max_tenant_config_bytes)
async def put_tenant(request: Request, tenant_id: TenantId, principal: Caller) -> JSONResponse:
    """Replace the tenant's configuration (200), or create the tenant (201, platform-admin).
    The quotas (`dailyTokenBudget`, `turnsPerMinute`) are the platform's: a tenant-admin's
    write keeps the stored ones when it leaves them out, and is refused (403) when it sets
    them to anything else. With `If-Match`, only the revision it names is replaced (412
    otherwise); the response's ETag is the revision written."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin")
    condition = if_match(request.headers.getlist("if-match"))
    body = await json_body(request, TenantConfig)
    # The cross references (the path's tenant, repeated names, intents' actions and follows)
    # by the rules the context service applies to every caller.
    config = convert.tenant_config(body, body.tenant_id or tenant_id)
    violations = tenant_config_violations(config, tenant_id)
    if violations:
        raise invalid(convert.body_errors(violations))
    write = _TenantWrite(request, tenant_id, config, convert.on_behalf_of(principal))
    with convert.admin_call(request, tenant_id):
        if principal.role == "platform-admin":
            reply = await write.as_platform(condition)
        else:
            reply = await write.keeping_quotas(body, condition)
        log.info(
            "tenant configured",
            extra={"tenantCreated": reply.created, "tenantRevision": reply.revision},
        )
    return JSONResponse(
        convert.tenant_json(reply.tenant),
        status_code=201 if reply.created else 200,
        headers=etag_headers(reply.revision),
    )


class _TenantWrite:
    """One PUT's write of `config`, under the caller's condition (If-Match)."""

    def __init__(
        self,
        request: Request,
        tenant_id: str,
        config: tenant_pb2.TenantConfig,
        actor: context_pb.Principal,
    ) -> None:
        self._request, self._tenant_id = request, tenant_id
        self._config, self._actor = config, actor
        self._context = request.app.state.clients.context

    async def _put(self, expected_revision: int) -> context_pb.PutTenantResponse:
        reply: context_pb.PutTenantResponse = await self._context.PutTenant(
            context_pb.PutTenantRequest(
                tenant=self._config,
                on_behalf_of=self._actor,
                expected_revision=expected_revision,
            )
        )
        return reply

    def _refuse(self, condition: IfMatch, current: int) -> MeshError:
        return revision_mismatch(self._tenant_id, current, condition.single)

    async def as_platform(self, condition: IfMatch | None) -> context_pb.PutTenantResponse:
        """A platform-admin's write, which may create the tenant and sets the quotas. One
        revision named: the context service checks it in the write's transaction (a tenant
        that does not exist has none). `*` or a list: checked against a read first; a list's
        write is then conditioned on the revision read, `*`'s on nothing (a tenant, once
        created, is never deleted: it still exists at the write)."""
        if condition is None:
            return await self._put(0)
        if condition.single is not None:
            return await self._put(condition.single)
        current = await _current_revision(self._request)
        if not condition.holds(current):
            raise self._refuse(condition, current)
        return await self._put(0 if condition.any else current)

    async def keeping_quotas(
        self, body: TenantConfig, condition: IfMatch | None
    ) -> context_pb.PutTenantResponse:
        """A tenant-admin's write: read the stored configuration, give the write its quotas
        (403 when the body changes one), and write it conditioned on the revision read, so a
        quota change landing in between is never overwritten. When the caller named a
        revision, that is a 412. Without one (or with `*`), the tenant-admin's own fields are
        written over the new configuration: read again once, with its quotas, and write
        conditioned on that revision; a body setting a quota that changed in between, or a
        further change, is a 412 (nothing written, never a silent loss)."""
        stored, revision = await _existing_or_forbidden(self._request)
        if condition is not None and not condition.holds(revision):
            raise self._refuse(condition, revision)
        _keep_platform_quotas(body, self._config, stored)
        try:
            return await self._put(revision)
        except grpc.aio.AioRpcError as error:
            if not _revision_mismatch(error) or (condition is not None and not condition.any):
                raise
        stored, revision = await _existing_or_forbidden(self._request)
        try:
            _keep_platform_quotas(body, self._config, stored)
        except AuthError:
            raise revision_mismatch(self._tenant_id, revision) from None
        return await self._put(revision)


def _revision_mismatch(error: grpc.aio.AioRpcError) -> bool:
    refused = MeshError.from_rpc_error(error)
    return (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        TENANT_REVISION_MISMATCH,
    )


async def _current_revision(request: Request) -> int:
    """The stored configuration's revision; 0 when the tenant has none."""
    try:
        reply = await request.app.state.clients.context.GetTenant(context_pb.GetTenantRequest())
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    revision: int = reply.revision
    return revision


async def _existing_or_forbidden(request: Request) -> tuple[tenant_pb2.TenantConfig, int]:
    """The stored configuration and its revision: a tenant-admin replaces its tenant's
    configuration; creating a tenant is the platform's."""
    try:
        reply = await request.app.state.clients.context.GetTenant(context_pb.GetTenantRequest())
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise AuthError(403, "Forbidden", "only a platform-admin creates a tenant") from None
        raise
    stored: tenant_pb2.TenantConfig = reply.tenant
    return stored, reply.revision


def _keep_platform_quotas(
    body: TenantConfig, config: tenant_pb2.TenantConfig, stored: tenant_pb2.TenantConfig
) -> None:
    """Give `config` the stored quotas; AuthError(403) when `body` sets one to another value.
    The write that follows is conditioned on the revision `stored` was read at."""
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
    responses={
        200: {"description": "The configuration", "headers": ETAG_HEADER},
        **TENANT_PROBLEMS,
    },
)
async def get_tenant(request: Request, tenant_id: TenantId, principal: Caller) -> JSONResponse:
    """The tenant's configuration; its ETag names the revision, for a PUT's If-Match."""
    principal.require_tenant(tenant_id)
    principal.require_role("tenant-admin", "agent")
    with convert.admin_call(request, tenant_id):
        reply = await request.app.state.clients.context.GetTenant(context_pb.GetTenantRequest())
    return JSONResponse(convert.tenant_json(reply.tenant), headers=etag_headers(reply.revision))


for area in (knowledge.router, users.router, audit.router):
    router.include_router(area)
