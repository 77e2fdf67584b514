"""Which tenants exist: retrieval refuses to index or search for a tenant the platform does not
know, so a typo in a tenant id is a clear NOT_FOUND instead of a new, silent knowledge base.

The registry is the context service's tenant configuration (GetTenant). Answers are cached for
a short while (a known tenant for a minute, an unknown one for a few seconds, so a tenant just
created is usable almost at once). When the context service cannot answer and nothing is cached,
the check fails closed with UNAVAILABLE.
"""

import dataclasses
import time
import uuid
from collections.abc import Collection
from typing import Protocol

import grpc
from metaagent.context.v1 import context_service_pb2 as context_pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import not_found, unavailable

TENANT_NOT_FOUND = "TENANT_NOT_FOUND"
MAX_CACHED = 10_000


class TenantDirectory(Protocol):
    async def require(self, tenant_id: str) -> None:
        """Return when the tenant exists; raise NOT_FOUND or UNAVAILABLE otherwise."""


def unknown_tenant(tenant_id: str) -> Exception:
    return not_found(f"tenant '{tenant_id}' is not registered", reason=TENANT_NOT_FOUND)


class StaticTenantDirectory:
    """A fixed set of tenants (tests, single-tenant tools)."""

    def __init__(self, tenant_ids: Collection[str]) -> None:
        self._tenant_ids = frozenset(tenant_ids)

    async def require(self, tenant_id: str) -> None:
        if tenant_id not in self._tenant_ids:
            raise unknown_tenant(tenant_id)


class ContextTenantDirectory:
    """Tenants as the context service knows them, cached for `known_ttl` / `unknown_ttl` s."""

    def __init__(
        self, clients: MeshClients, known_ttl: float = 60.0, unknown_ttl: float = 5.0
    ) -> None:
        self._clients = clients
        self._ttl = {True: known_ttl, False: unknown_ttl}
        self._answers: dict[str, tuple[bool, float]] = {}

    async def require(self, tenant_id: str) -> None:
        now = time.monotonic()
        answer = self._answers.get(tenant_id)
        if answer is None or answer[1] <= now:
            exists = await self._ask(tenant_id)
            if len(self._answers) >= MAX_CACHED:
                self._answers.clear()
            answer = self._answers[tenant_id] = (exists, now + self._ttl[exists])
        if not answer[0]:
            raise unknown_tenant(tenant_id)

    async def _ask(self, tenant_id: str) -> bool:
        call = correlation.current()
        call = dataclasses.replace(
            call,
            tenant_id=tenant_id,
            correlation_id=call.correlation_id or str(uuid.uuid4()),
        )
        with correlation.bound(call):
            try:
                await self._clients.context.GetTenant(context_pb.GetTenantRequest())
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                raise unavailable("the tenant directory (context service) is unavailable") from None
        return True
