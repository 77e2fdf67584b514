"""The audit log on every store: chained appends, and tampering that verify always catches."""

import asyncio
import sqlite3

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2

from services.context.audit import AuditLog, Verdict
from services.context.store import AuditFilters, SessionStore, open_store
from services.mesh.errors import MeshError
from tests.support.postgres import APP_ROLE, OWNER_ROLE, ThrowawayDatabase


def _payload(**values: object) -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update(values)
    return payload


async def _chain(store: SessionStore, tenant: str, count: int) -> AuditLog:
    log = AuditLog(store)
    for n in range(count):
        await log.append(tenant, "action_trigger", _payload(n=n), correlation_id=f"c-{n}")
    return log


async def _tamper(kind: str, url: str, tenant: str, *statements: str) -> None:
    """Change rows behind the application's back, as the owner role would: its triggers off,
    the raw statements, triggers back on."""
    if kind == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            connection.execute("DROP TRIGGER audit_logs_no_update")
            connection.execute("DROP TRIGGER audit_logs_no_delete")
            for statement in statements:
                connection.execute(statement, (tenant,))
            connection.commit()
        finally:
            connection.close()
        return
    owner = await asyncpg.connect(url.replace(f"{APP_ROLE}@", f"{OWNER_ROLE}@"))
    try:
        await owner.execute("ALTER TABLE audit_logs DISABLE TRIGGER USER")
        try:
            async with owner.transaction():
                await owner.execute("SELECT set_config('app.current_tenant_id', $1, true)", tenant)
                for statement in statements:
                    await owner.execute(statement.replace("?", "$1"), tenant)
        finally:
            await owner.execute("ALTER TABLE audit_logs ENABLE TRIGGER USER")
    finally:
        await owner.close()


async def test_appends_form_a_valid_chain(store: SessionStore, tenant: str) -> None:
    log = await _chain(store, tenant, 5)
    verdict = await log.verify(tenant)
    entries, token = await log.page(tenant, 2, "", AuditFilters())
    assert verdict.valid
    assert verdict.entries_checked == 5
    assert [e.sequence for e in entries] == [1, 2]
    assert entries[1].prev_hash == entries[0].hash
    assert entries[0].prev_hash == "0" * 64
    assert token == "2"
    rest, last = await log.page(tenant, 10, token, AuditFilters())
    assert ([e.sequence for e in rest], last) == ([3, 4, 5], "")
    assert verdict.head_hash == rest[-1].hash
    only = await log.page(tenant, 10, "", AuditFilters(correlation_id="c-3"))
    assert [e.sequence for e in only[0]] == [4]


async def test_concurrent_appends_stay_one_chain(store: SessionStore, tenant: str) -> None:
    log = AuditLog(store)
    await asyncio.gather(*(log.append(tenant, "llm_call", _payload(n=n)) for n in range(25)))
    verdict = await log.verify(tenant)
    assert verdict == Verdict(True, 25, head_hash=verdict.head_hash)


async def test_tenants_have_separate_chains(store: SessionStore, tenant: str) -> None:
    await _chain(store, tenant, 2)
    other = await _chain(store, f"{tenant}-b", 3)
    assert (await other.verify(tenant)).entries_checked == 2
    assert (await other.verify(f"{tenant}-b")).entries_checked == 3


@pytest.mark.parametrize(
    ("statements", "sequence", "reason"),
    [
        (
            ["UPDATE audit_logs SET payload = '{\"n\": 99}' WHERE tenant_id = ? AND sequence = 3"],
            3,
            "hash mismatch",
        ),
        (["DELETE FROM audit_logs WHERE tenant_id = ? AND sequence = 2"], 2, "sequence gap"),
        (
            [
                "UPDATE audit_logs SET sequence = 100 WHERE tenant_id = ? AND sequence = 2",
                "UPDATE audit_logs SET sequence = 2 WHERE tenant_id = ? AND sequence = 3",
                "UPDATE audit_logs SET sequence = 3 WHERE tenant_id = ? AND sequence = 100",
            ],
            2,
            "broken link",
        ),
        (["DELETE FROM audit_logs WHERE tenant_id = ? AND sequence = 5"], 0, ""),
    ],
    ids=["edited", "deleted", "reordered", "tail-truncated"],
)
async def test_tampering_is_detected_at_the_first_broken_link(
    store_backend: tuple[str, str],
    store: SessionStore,
    tenant: str,
    statements: list[str],
    sequence: int,
    reason: str,
) -> None:
    log = await _chain(store, tenant, 5)
    await _tamper(*store_backend, tenant, *statements)
    verdict = await log.verify(tenant)
    if sequence == 0:
        assert verdict.valid, "a truncated tail is only visible against an anchored head hash"
        assert verdict.entries_checked == 4
        return
    assert not verdict.valid
    assert verdict.first_invalid_sequence == sequence
    assert verdict.reason.startswith(reason)


async def test_the_application_cannot_update_or_delete_entries(
    store_backend: tuple[str, str], store: SessionStore, tenant: str
) -> None:
    kind, url = store_backend
    await _chain(store, tenant, 1)
    if kind == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            for statement in ("UPDATE audit_logs SET action = 'x'", "DELETE FROM audit_logs"):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    connection.execute(statement)
        finally:
            connection.close()
        return
    app = await asyncpg.connect(url)
    try:
        for statement in ("UPDATE audit_logs SET action = 'x'", "DELETE FROM audit_logs"):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                async with app.transaction():
                    await app.execute(
                        "SELECT set_config('app.current_tenant_id', $1, true)", tenant
                    )
                    await app.execute(statement)
    finally:
        await app.close()


async def test_the_owner_cannot_quietly_edit_either(
    postgres_database: ThrowawayDatabase, tenant: str
) -> None:
    store = open_store(postgres_database.app_dsn)
    await store.open()
    try:
        await _chain(store, tenant, 1)
    finally:
        await store.close()
    owner = await asyncpg.connect(postgres_database.owner_dsn)
    try:
        for statement in ("UPDATE audit_logs SET action = 'x'", "DELETE FROM audit_logs"):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
                async with owner.transaction():
                    await owner.execute(
                        "SELECT set_config('app.current_tenant_id', $1, true)", tenant
                    )
                    await owner.execute(statement)
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
            await owner.execute("TRUNCATE audit_logs")
    finally:
        await owner.close()


async def test_bad_audit_requests_are_refused(store: SessionStore, tenant: str) -> None:
    log = AuditLog(store)
    for action in ("", "Has Spaces", "x" * 65, "1starts_with_digit"):
        with pytest.raises(MeshError) as refused:
            await log.append(tenant, action, _payload())
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(MeshError):
        await log.page(tenant, 10, "not-a-token", AuditFilters())
    assert (await log.verify(tenant)).entries_checked == 0
