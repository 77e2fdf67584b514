"""Row-level security in PostgreSQL, probed with raw SQL as the service's own login role."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import handoff_pb2

from services.context.postgres import PostgresStore
from services.mesh.errors import MeshError
from tests.support.postgres import APP_ROLE, ThrowawayDatabase

TENANT_TABLES = ("tenants", "session_contexts", "conversation_turns", "outbox")


@pytest.fixture
async def seeded(postgres_database: ThrowawayDatabase) -> tuple[str, str]:
    """Two tenants, each with a config, a session, a turn and an outbox row."""
    a, b = (f"rls-{uuid.uuid4().hex[:10]}" for _ in range(2))
    store = PostgresStore(postgres_database.app_dsn)
    await store.open()
    for tenant in (a, b):
        await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=tenant, name=tenant))
        await store.create_session(tenant, "s1", "u1", 1)
        turn = conversation_pb2.ConversationTurn(
            role=conversation_pb2.TURN_ROLE_AGENT,
            text=f"secret of {tenant}",
            actions=[conversation_pb2.Action(type="create_order")],
        )
        await store.commit_turns(tenant, "s1", [turn], None)
    await store.close()
    return a, b


@pytest.fixture
async def app_connection(postgres_database: ThrowawayDatabase) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_database.app_dsn)
    yield connection
    await connection.close()


async def _as_tenant(connection: asyncpg.Connection, tenant: str) -> None:
    await connection.execute("SELECT set_config('app.current_tenant_id', $1, true)", tenant)


async def test_a_raw_query_in_tenant_a_reads_only_tenant_a(
    seeded: tuple[str, str], app_connection: asyncpg.Connection
) -> None:
    a, b = seeded
    async with app_connection.transaction():
        await _as_tenant(app_connection, a)
        for table in TENANT_TABLES:
            tenants = {
                row[0] for row in await app_connection.fetch(f"SELECT tenant_id FROM {table}")
            }
            assert tenants == {a}, table
        texts = await app_connection.fetch("SELECT text FROM conversation_turns")
        assert [row["text"] for row in texts] == [f"secret of {a}"]
        assert (
            await app_connection.fetchval(
                "SELECT count(*) FROM conversation_turns WHERE tenant_id = $1", b
            )
            == 0
        )


async def test_a_raw_update_or_delete_in_tenant_a_cannot_touch_tenant_b(
    seeded: tuple[str, str],
    app_connection: asyncpg.Connection,
    postgres_database: ThrowawayDatabase,
) -> None:
    a, b = seeded
    async with app_connection.transaction():
        await _as_tenant(app_connection, a)
        updated = await app_connection.execute(
            "UPDATE conversation_turns SET text = 'tampered' WHERE tenant_id = $1", b
        )
        deleted = await app_connection.execute("DELETE FROM outbox WHERE tenant_id = $1", b)
        moved = await app_connection.execute(
            "UPDATE session_contexts SET user_id = 'x' WHERE tenant_id = $1", b
        )
    assert (updated, deleted, moved) == ("UPDATE 0", "DELETE 0", "UPDATE 0")
    owner = await asyncpg.connect(
        postgres_database.admin_dsn.rsplit("/", 1)[0] + f"/{postgres_database.name}"
    )
    try:
        assert (
            await owner.fetchval("SELECT text FROM conversation_turns WHERE tenant_id = $1", b)
            == f"secret of {b}"
        )
    finally:
        await owner.close()


async def test_a_raw_insert_for_tenant_b_inside_tenant_a_is_refused(
    seeded: tuple[str, str], app_connection: asyncpg.Connection
) -> None:
    a, b = seeded
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="row-level security"):
        async with app_connection.transaction():
            await _as_tenant(app_connection, a)
            await app_connection.execute(
                "INSERT INTO session_contexts (tenant_id, session_id) VALUES ($1, 'planted')", b
            )
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="row-level security"):
        async with app_connection.transaction():
            await _as_tenant(app_connection, a)
            await app_connection.execute(
                "UPDATE session_contexts SET tenant_id = $1 WHERE tenant_id = $2", b, a
            )


async def test_a_transaction_that_forgot_the_tenant_sees_zero_rows(
    seeded: tuple[str, str], app_connection: asyncpg.Connection
) -> None:
    async with app_connection.transaction():
        for table in TENANT_TABLES:
            assert await app_connection.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    async with app_connection.transaction():
        await _as_tenant(app_connection, seeded[0])
    assert await app_connection.fetchval("SELECT count(*) FROM session_contexts") == 0


async def test_an_injection_shaped_tenant_id_is_just_a_value(
    seeded: tuple[str, str], app_connection: asyncpg.Connection
) -> None:
    hostile = f"{seeded[0]}' OR '1'='1"
    async with app_connection.transaction():
        await _as_tenant(app_connection, hostile)
        assert await app_connection.fetchval("SELECT count(*) FROM conversation_turns") == 0


async def test_the_service_role_owns_nothing_and_cannot_bypass_rls(
    app_connection: asyncpg.Connection,
) -> None:
    role = await app_connection.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", APP_ROLE
    )
    assert (role["rolsuper"], role["rolbypassrls"]) == (False, False)
    tables = await app_connection.fetch(
        "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner, c.relrowsecurity, "
        "c.relforcerowsecurity FROM pg_class c JOIN information_schema.columns k "
        "ON k.table_name = c.relname AND k.column_name = 'tenant_id' "
        "WHERE c.relkind = 'r' AND k.table_schema = 'public'"
    )
    assert {t["relname"] for t in tables} == {
        *TENANT_TABLES,
        "audit_logs",
        "user_consents",
        "handoff_queue",
    }, "every table with a tenant_id column is listed here and checked below"
    for table in tables:
        assert table["owner"] != APP_ROLE
        assert table["relrowsecurity"] and table["relforcerowsecurity"], table["relname"]


async def test_a_store_behind_the_schema_refuses_to_start(
    postgres_database: ThrowawayDatabase,
) -> None:
    admin = await asyncpg.connect(postgres_database.admin_dsn)
    name = f"metaagent_empty_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        empty = postgres_database.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
        with pytest.raises(MeshError) as refused:
            await PostgresStore(empty).open()
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "metaagent migrate" in refused.value.message
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_the_handoff_queue_is_kept_per_tenant(
    postgres_database: ThrowawayDatabase, app_connection: asyncpg.Connection, tenant: str
) -> None:
    store = PostgresStore(postgres_database.app_dsn)
    await store.open()
    try:
        a, b = tenant, f"{tenant}-b"
        for owner, event_id in ((a, "e-a"), (b, "e-b")):
            await store.create_session(owner, "s1", "u1", 1)
            handoff = handoff_pb2.QueuedHandoff(
                event_id=event_id, session_id="s1", user_id="u1", kind="handoff"
            )
            handoff.payload.update({"reason": "customer_request"})
            assert await store.enqueue_handoff(owner, handoff)
    finally:
        await store.close()
    async with app_connection.transaction():
        await _as_tenant(app_connection, a)
        rows = await app_connection.fetch("SELECT tenant_id, event_id FROM handoff_queue")
        assert [tuple(row) for row in rows] == [(a, "e-a")], "no WHERE clause, still only a's"
        assert await app_connection.execute(
            "DELETE FROM handoff_queue WHERE tenant_id = $1", b
        ) == ("DELETE 0")
        assert await app_connection.execute(
            "UPDATE handoff_queue SET status = 'done' WHERE tenant_id = $1", b
        ) == ("UPDATE 0")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="row-level security"):
        async with app_connection.transaction():
            await _as_tenant(app_connection, a)
            await app_connection.execute(
                "INSERT INTO handoff_queue (tenant_id, event_id, session_id, kind, payload) "
                "VALUES ($1, 'planted', 's1', 'handoff', '{}')",
                b,
            )
    async with app_connection.transaction():
        assert await app_connection.fetchval("SELECT count(*) FROM handoff_queue") == 0, (
            "a transaction that forgot the tenant sees nothing"
        )
    forced = await app_connection.fetchrow(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'handoff_queue'"
    )
    assert tuple(forced) == (True, True)
