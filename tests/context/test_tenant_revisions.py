"""Tenant configuration revisions (optimistic concurrency): every write adds one to the
revision, and a write conditioned on a revision happens only while the store holds that
revision, checked atomically with the write, on every store and over gRPC."""

import asyncio
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import tenant_pb2
from metaagent.context.v1 import audit_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.context.audit import AuditLog
from services.context.cache import MemoryCache
from services.context.sessions import ContextBook
from services.context.store import (
    AuditFilters,
    SessionStore,
    TenantAudit,
    open_store,
)
from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.tenant_rules import TENANT_REVISION_MISMATCH
from tests.support.calls import refusal
from tests.support.context_service import context_service


def _config(tenant: str, name: str = "Shop", **quotas: int) -> tenant_pb2.TenantConfig:
    return tenant_pb2.TenantConfig(tenant_id=tenant, name=name, language="es", **quotas)


def _audited(action: str = "tenant_configured") -> TenantAudit:
    def audit(created: bool) -> audit_pb2.AuditEntry:
        entry = audit_pb2.AuditEntry(action=action, actor="gateway")
        entry.payload.update({"created": created})
        return entry

    return audit


def _mismatch(error: MeshError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    return error.code, error.reason, dict(error.metadata)


# --- the store port ---------------------------------------------------------------------------


async def test_the_revision_starts_at_one_and_every_write_adds_one(
    store: SessionStore, tenant: str
) -> None:
    assert await store.load_tenant(tenant) is None
    created = await store.put_tenant(_config(tenant))
    assert (created.created, created.revision) == (True, 1)
    loaded = await store.load_tenant(tenant)
    assert loaded is not None and (loaded.revision, loaded.config) == (1, _config(tenant))
    for expected in (2, 3):
        written = await store.put_tenant(_config(tenant, f"Shop {expected}"))
        assert (written.created, written.revision) == (False, expected)
    loaded = await store.load_tenant(tenant)
    assert loaded is not None and (loaded.revision, loaded.config.name) == (3, "Shop 3")


async def test_a_conditional_write_happens_only_on_the_expected_revision(
    store: SessionStore, tenant: str
) -> None:
    await store.put_tenant(_config(tenant), _audited())
    written = await store.put_tenant(_config(tenant, "Mine"), _audited(), expected_revision=1)
    assert (written.created, written.revision) == (False, 2)

    with pytest.raises(MeshError) as stale:
        await store.put_tenant(_config(tenant, "Stale"), _audited(), expected_revision=1)
    assert _mismatch(stale.value) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        TENANT_REVISION_MISMATCH,
        {"currentRevision": "2", "expectedRevision": "1"},
    )
    with pytest.raises(MeshError) as ahead:
        await store.put_tenant(_config(tenant, "Ahead"), expected_revision=7)
    assert ahead.value.metadata["currentRevision"] == "2"

    loaded = await store.load_tenant(tenant)
    assert loaded is not None and (loaded.revision, loaded.config.name) == (2, "Mine")
    entries = await store.audit_entries(tenant, 0, 10, AuditFilters())
    assert len(entries) == 2, "a refused write is not audited"
    assert (await AuditLog(store).verify(tenant)).valid


async def test_a_conditional_write_never_creates_a_tenant(store: SessionStore, tenant: str) -> None:
    with pytest.raises(MeshError) as missing:
        await store.put_tenant(_config(tenant), _audited(), expected_revision=1)
    assert _mismatch(missing.value) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        TENANT_REVISION_MISMATCH,
        {"currentRevision": "0", "expectedRevision": "1"},
    )
    assert await store.load_tenant(tenant) is None
    assert await store.audit_entries(tenant, 0, 10, AuditFilters()) == []


async def test_of_concurrent_writers_from_the_same_read_exactly_one_wins(
    store: SessionStore, tenant: str
) -> None:
    """Half of them audited (which serialises them on the audit chain's lock), half not: the
    revision check alone must keep them apart."""
    await store.put_tenant(_config(tenant), _audited())
    names = [f"writer {n}" for n in range(8)]
    results = await asyncio.gather(
        *(
            store.put_tenant(
                _config(tenant, name), _audited() if n % 2 else None, expected_revision=1
            )
            for n, name in enumerate(names)
        ),
        return_exceptions=True,
    )
    won = [
        (name, r) for name, r in zip(names, results, strict=True) if not isinstance(r, Exception)
    ]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1, results
    winner, written = won[0]
    assert written.revision == 2
    assert all(isinstance(e, MeshError) and e.reason == TENANT_REVISION_MISMATCH for e in lost)
    assert {e.metadata["currentRevision"] for e in lost if isinstance(e, MeshError)} == {"2"}
    loaded = await store.load_tenant(tenant)
    assert loaded is not None and (loaded.revision, loaded.config.name) == (2, winner)
    audited = 2 if names.index(winner) % 2 else 1
    assert len(await store.audit_entries(tenant, 0, 20, AuditFilters())) == audited


async def test_two_replicas_writing_from_the_same_read_one_wins(
    store_backend: tuple[str, str], tenant: str
) -> None:
    """Two store instances on one database (two context replicas): the check holds across
    connections, not only within one process's lock."""
    first, second = open_store(store_backend[1]), open_store(store_backend[1])
    await first.open()
    await second.open()
    try:
        await first.put_tenant(_config(tenant, daily_token_budget=100))
        results = await asyncio.gather(
            first.put_tenant(_config(tenant, "A", daily_token_budget=500), expected_revision=1),
            second.put_tenant(_config(tenant, "B", daily_token_budget=100), expected_revision=1),
            return_exceptions=True,
        )
        loaded = await second.load_tenant(tenant)
    finally:
        await first.close()
        await second.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1, results
    assert isinstance(failures[0], MeshError) and failures[0].reason == TENANT_REVISION_MISMATCH
    winner = "A" if not isinstance(results[0], BaseException) else "B"
    assert loaded is not None and (loaded.revision, loaded.config.name) == (2, winner)


# --- the book: a stale cached read is dropped ------------------------------------------------


async def test_the_book_refuses_a_negative_revision_and_forgets_a_stale_read(
    store: SessionStore, tenant: str
) -> None:
    book = ContextBook(store, MemoryCache(), ttl_seconds=60, recent_turns=5)
    replica = ContextBook(store, MemoryCache(), ttl_seconds=60, recent_turns=5)
    await book.put_tenant(tenant, _config(""))
    assert (await book.tenant_revision(tenant))[1] == 1
    await replica.put_tenant(tenant, _config("", "Elsewhere"), expected_revision=1)
    assert (await book.tenant_revision(tenant))[1] == 1, "cached for a few seconds"
    with pytest.raises(MeshError) as stale:
        await book.put_tenant(tenant, _config("", "Mine"), expected_revision=1)
    assert stale.value.metadata["currentRevision"] == "2"
    config, revision = await book.tenant_revision(tenant)
    assert (config.name, revision) == ("Elsewhere", 2), "the mismatch dropped the stale copy"
    with pytest.raises(MeshError) as negative:
        await book.put_tenant(tenant, _config(""), expected_revision=-1)
    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in negative.value.violations] == ["expected_revision"]


# --- over gRPC --------------------------------------------------------------------------------


async def test_get_and_put_tenant_carry_the_revision_over_grpc(
    state_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as reach:
        gateway = MeshClients(reach, "gateway")
        stub = gateway.context
        call = correlation.CallContext(correlation_id="corr-rev", tenant_id="acme")
        try:
            with correlation.bound(call):
                missing = await refusal(
                    stub.PutTenant(pb.PutTenantRequest(tenant=_config(""), expected_revision=1))
                )
                created = await stub.PutTenant(pb.PutTenantRequest(tenant=_config("")))
                read = await stub.GetTenant(pb.GetTenantRequest())
                mine = await stub.PutTenant(
                    pb.PutTenantRequest(
                        tenant=_config("", "Mine", turns_per_minute=5), expected_revision=1
                    )
                )
                stale = await refusal(
                    stub.PutTenant(
                        pb.PutTenantRequest(tenant=_config("", "Stale"), expected_revision=1)
                    )
                )
                negative = await refusal(
                    stub.PutTenant(pb.PutTenantRequest(tenant=_config(""), expected_revision=-3))
                )
                after = await stub.GetTenant(pb.GetTenantRequest())
                audit = await stub.ListAudit(pb.ListAuditRequest())
        finally:
            await gateway.close()
    assert _mismatch(missing) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        TENANT_REVISION_MISMATCH,
        {"currentRevision": "0", "expectedRevision": "1"},
    )
    assert (created.created, created.revision, read.revision) == (True, 1, 1)
    assert created.tenant == read.tenant == _config("acme")
    assert (mine.created, mine.revision) == (False, 2)
    assert mine.tenant == _config("acme", "Mine", turns_per_minute=5)
    assert _mismatch(stale) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        TENANT_REVISION_MISMATCH,
        {"currentRevision": "2", "expectedRevision": "1"},
    )
    assert "revision 2" in stale.message
    assert negative.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in negative.violations] == ["expected_revision"]
    assert (after.revision, after.tenant.name) == (2, "Mine")
    assert len(audit.entries) == 2, "refused writes leave no audit entry"
