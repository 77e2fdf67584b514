"""The context service process: store, cache, demo tenant, gRPC server."""

from metaagent.context.v1 import context_service_pb2, context_service_pb2_grpc

from services.context.audit import AuditLog
from services.context.consents import ConsentBook
from services.context.coordination import open_coordination
from services.context.demo import DEMO_TENANT_ID, demo_tenant
from services.context.guards import TurnGuards
from services.context.handoffs import HandoffDesk
from services.context.migrations.runner import migrate_postgres
from services.context.servicer import ContextServicer
from services.context.sessions import ContextBook
from services.context.settings import ContextSettings
from services.context.store import open_store
from services.mesh import identity, logs
from services.mesh.server import MeshServer, ServiceBinding


def build_server(settings: ContextSettings) -> MeshServer:
    store = open_store(settings.resolved_store_url(), settings.relay_store_url)
    coordination = open_coordination(settings.cache_url)
    book = ContextBook(
        store,
        coordination.cache,
        ttl_seconds=settings.session_cache_ttl_seconds,
        recent_turns=settings.recent_turns,
        locks=coordination.locks,
    )
    guards = TurnGuards(coordination.locks, coordination.idempotency)
    audit = AuditLog(store)

    async def open_and_seed() -> None:
        if settings.migrations_url:
            await migrate_postgres(settings.migrations_url)
        await store.open()
        if await store.get_tenant(DEMO_TENANT_ID) is None:
            await store.put_tenant(demo_tenant())

    return MeshServer(
        identity.CONTEXT,
        settings,
        [
            ServiceBinding(
                context_service_pb2.DESCRIPTOR.services_by_name["ContextService"],
                context_service_pb2_grpc.add_ContextServiceServicer_to_server,
                ContextServicer(
                    book,
                    guards,
                    audit,
                    ConsentBook(store, coordination.cache, audit),
                    HandoffDesk(store),
                ),
            )
        ],
        readiness=[open_and_seed],
        cleanup=[store.close, coordination.close],
    )


async def serve() -> None:
    settings = ContextSettings()
    logs.configure(identity.CONTEXT, settings.log_level)
    await build_server(settings).run()
