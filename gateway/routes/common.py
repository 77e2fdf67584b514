"""What the routes under `/v2/tenants/{tenantId}` share: the path's tenant id, the refusals
they document, and the check that the tenant exists."""

from typing import Annotated, Any, Final

from fastapi import Path, Request
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway.models import TENANT_PATTERN
from gateway.problems import problem_responses

TenantId = Annotated[str, Path(alias="tenantId", pattern=TENANT_PATTERN)]
TENANT_PROBLEMS: Final[dict[int | str, dict[str, Any]]] = problem_responses(
    400, 401, 403, 404, 429, 503, 504
)
"""The refusals of a tenant route that takes no body."""


async def known_tenant(request: Request) -> None:
    """NOT_FOUND (404) for a tenant the platform does not know (call inside `admin_call`)."""
    await request.app.state.clients.context.GetTenant(context_pb.GetTenantRequest())
