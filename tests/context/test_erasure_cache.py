"""Erased text never comes back through the session cache, whatever the interleaving."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2

from services.context.audit import AuditLog
from services.context.consents import ConsentBook
from services.context.coordination import Coordination, open_coordination
from services.context.demo import demo_tenant
from services.context.sessions import ContextBook
from services.context.sqlite import SqliteStore
from services.mesh.errors import MeshError
from tests.support.ports import free_port


class PausingStore:
    """The real store; `load_session` can be held after it has read, to force a race."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.loaded = asyncio.Event()
        self.resume = asyncio.Event()
        self.pause = False

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def load_session(self, *args, **kwargs):
        result = await self._store.load_session(*args, **kwargs)
        if self.pause:
            self.loaded.set()
            await self.resume.wait()
        return result


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "context.db")
    await opened.open()
    await opened.put_tenant(demo_tenant())
    yield opened
    await opened.close()


async def test_a_reader_that_loaded_before_the_erasure_cannot_cache_the_erased_text(
    store: SqliteStore, coordination: Coordination, tenant: str
) -> None:
    await store.put_tenant(demo_tenant().__class__(tenant_id=tenant, name="t"))
    pausing = PausingStore(store)
    book = ContextBook(pausing, coordination.cache, ttl_seconds=900, recent_turns=5)
    consents = ConsentBook(pausing, coordination.cache, AuditLog(store))
    await book.get_or_create(tenant, "s1", "alice", 1)
    secret = conversation_pb2.ConversationTurn(role=1, text="mi tarjeta es 4111")
    await book.commit_turn(tenant, "s1", [secret], None)
    pausing.pause = True
    reader = asyncio.create_task(book.get_or_create(tenant, "s1", "alice", 1))
    await pausing.loaded.wait()
    pausing.pause = False
    await consents.erase(tenant, "alice", "corr-erase")
    pausing.resume.set()
    stale, _, _ = await reader
    assert [t.text for t in stale.recent_turns] == ["mi tarjeta es 4111"], "it read before"
    after, _, cache_hit = await book.get_or_create(tenant, "s1", "", 1)
    assert cache_hit is False
    assert after.recent_turns == []


async def test_erasure_with_the_cache_down_fails_before_erasing_anything(
    store: SqliteStore,
) -> None:
    coordination = open_coordination(f"redis://127.0.0.1:{free_port()}/0")
    try:
        book = ContextBook(store, coordination.cache, ttl_seconds=900, recent_turns=5)
        consents = ConsentBook(store, coordination.cache, AuditLog(store))
        await book.get_or_create("demo", "s1", "alice", 1)
        with pytest.raises(MeshError) as failed:
            await consents.erase("demo", "alice", "corr-erase")
    finally:
        await coordination.close()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert await store.load_session("demo", "s1", 1) is not None
