"""Redis down: reads go to the store, the service stays up, nothing stale comes back."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from redis import asyncio as redis_asyncio

from services.context.coordination import Coordination, FallbackCache, open_coordination
from services.context.demo import demo_tenant
from services.context.sessions import ContextBook
from services.context.sqlite import SqliteStore
from services.mesh.errors import MeshError
from tests.support.ports import free_port
from tests.support.redis_server import throwaway_redis


def _turn(text: str) -> conversation_pb2.ConversationTurn:
    return conversation_pb2.ConversationTurn(role=conversation_pb2.TURN_ROLE_USER, text=text)


BookFactory = Callable[[str], Awaitable[tuple[ContextBook, Coordination]]]


@pytest.fixture
async def make_book(tmp_path: Path) -> AsyncIterator[BookFactory]:
    """ContextBooks on SQLite and the given cache URL, all closed at teardown whatever happens."""
    opened: list[SqliteStore | Coordination] = []

    async def make(cache_url: str) -> tuple[ContextBook, Coordination]:
        store = SqliteStore(tmp_path / "context.db")
        await store.open()
        opened.append(store)
        await store.put_tenant(demo_tenant())
        coordination = open_coordination(cache_url)
        opened.append(coordination)
        return ContextBook(
            store, coordination.cache, ttl_seconds=900, recent_turns=10
        ), coordination

    yield make
    for resource in reversed(opened):
        await resource.close()


async def test_with_redis_unreachable_sessions_are_served_from_the_store(
    make_book: BookFactory, redis_url: str
) -> None:
    book, coordination = await make_book(f"redis://127.0.0.1:{free_port()}/0")
    _, created, cache_hit = await book.get_or_create("demo", "s1", "u1", 1)
    await book.commit_turn("demo", "s1", [_turn("hola")], None)
    again, _, hit_again = await book.get_or_create("demo", "s1", "u1", 1)
    assert (created, cache_hit, hit_again) == (True, False, False)
    assert [t.text for t in again.recent_turns] == ["hola"]
    assert isinstance(coordination.cache, FallbackCache)
    assert coordination.cache.fallbacks >= 3
    with pytest.raises(MeshError) as locked_out:
        await coordination.locks.acquire("demo", "s1", ttl=5, wait=0)
    assert locked_out.value.code == grpc.StatusCode.UNAVAILABLE


async def test_an_invalidation_lost_to_an_outage_never_serves_stale_context(
    make_book: BookFactory, tmp_path: Path, redis_url: str
) -> None:
    with throwaway_redis(tmp_path) as url:
        book, _ = await make_book(url)
        await book.get_or_create("demo", "s1", "u1", 1)
        admin = redis_asyncio.from_url(url)
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        await book.commit_turn("demo", "s1", [_turn("after the outage")], None)
        fresh, _, cache_hit = await book.get_or_create("demo", "s1", "u1", 1)
        assert cache_hit is False
        assert [t.text for t in fresh.recent_turns] == ["after the outage"]
        await admin.execute_command("CLIENT", "UNPAUSE")
        again, _, _ = await book.get_or_create("demo", "s1", "u1", 1)
        assert [t.text for t in again.recent_turns] == ["after the outage"]
        third, _, hit = await book.get_or_create("demo", "s1", "u1", 1)
        assert hit is True
        assert [t.text for t in third.recent_turns] == ["after the outage"]
        await admin.aclose()
