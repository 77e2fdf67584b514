"""A long conversation stays bounded: old turns fold into the summary, recent ones stay."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from metaagent.common.v1 import conversation_pb2

from services.context.cache import MemoryCache
from services.context.demo import demo_tenant
from services.context.folding import LINE_CHARS, SUMMARY_CHARS, fold_lines
from services.context.sessions import FOLD_BATCH, ContextBook
from services.context.sqlite import SqliteStore
from services.mesh.errors import unavailable


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[ContextBook]:
    store = SqliteStore(tmp_path / "context.db")
    await store.open()
    await store.put_tenant(demo_tenant())
    yield ContextBook(store, MemoryCache(), ttl_seconds=900, recent_turns=4)
    await store.close()


def _turn(role: int, text: str) -> conversation_pb2.ConversationTurn:
    return conversation_pb2.ConversationTurn(role=role, text=text)


async def test_a_long_conversation_keeps_recent_turns_and_folds_the_rest(book: ContextBook) -> None:
    await book.get_or_create("demo", "s1", "u1", 1)
    for n in range(40):
        await book.commit_turn(
            "demo",
            "s1",
            [_turn(1, f"pregunta {n} " + "detalle " * 8), _turn(2, f"respuesta {n}")],
            conversation_pb2.ShortContext(last_intent=f"intent-{n}"),
        )
        context, _, _ = await book.get_or_create("demo", "s1", "u1", 1)
        assert len(context.recent_turns) == min(4, 2 * (n + 1))
        assert context.short_context.last_intent == f"intent-{n}"
        assert len(context.short_context.summary) <= SUMMARY_CHARS
    summary = context.short_context.summary
    assert "user: pregunta 30 detalle" in summary
    assert "agent: respuesta 30" in summary
    assert "pregunta 0 " not in summary, "the oldest lines leave a full summary first"
    assert [" ".join(t.text.split()[:2]) for t in context.recent_turns] == [
        "pregunta 38",
        "respuesta 38",
        "pregunta 39",
        "respuesta 39",
    ]


def test_fold_lines_shortens_long_turns_and_keeps_the_newest_lines() -> None:
    long_turn = _turn(1, "palabra " * 100)
    folded = fold_lines("", [long_turn])
    assert folded.startswith("user: palabra")
    assert len(folded) <= len("user: ") + LINE_CHARS
    many = fold_lines("", [_turn(2, f"línea {n} " + "x" * 100) for n in range(100)])
    assert len(many) <= SUMMARY_CHARS
    assert many.splitlines()[-1].startswith("agent: línea 99")
    assert FOLD_BATCH > 1


class FoldingFails:
    """The real store, except that folding fails (a store hiccup after the commit landed)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def fold_candidates(self, *args, **kwargs):
        raise unavailable("lock timeout")


async def test_a_failed_fold_neither_fails_the_commit_nor_leaves_the_cache_stale(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "fold.db")
    await store.open()
    try:
        await store.put_tenant(demo_tenant())
        book = ContextBook(FoldingFails(store), MemoryCache(), ttl_seconds=900, recent_turns=4)
        await book.get_or_create("demo", "s1", "u1", 1)
        await book.get_or_create("demo", "s1", "u1", 1)
        stored = await book.commit_turn("demo", "s1", [_turn(1, "hello")], None)
        context, _, cache_hit = await book.get_or_create("demo", "s1", "u1", 1)
    finally:
        await store.close()
    assert [t.text for t in stored] == ["hello"]
    assert cache_hit is False
    assert [t.text for t in context.recent_turns] == ["hello"]


class CountingDecodes:
    """The real store, counting the fold candidates it hands back (each one decoded)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.decoded = 0

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def fold_candidates(self, *args, **kwargs):
        candidates = await self._store.fold_candidates(*args, **kwargs)
        self.decoded += len(candidates)
        return candidates


async def test_commits_decode_old_turns_only_when_a_batch_folds(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fold.db")
    await store.open()
    try:
        await store.put_tenant(demo_tenant())
        counting = CountingDecodes(store)
        book = ContextBook(counting, MemoryCache(), ttl_seconds=900, recent_turns=4)
        await book.get_or_create("demo", "s1", "u1", 1)
        for n in range(4 + FOLD_BATCH - 1):
            await book.commit_turn("demo", "s1", [_turn(1, f"m{n}")], None)
        assert counting.decoded == 0
        await book.commit_turn("demo", "s1", [_turn(1, "last")], None)
        assert counting.decoded == FOLD_BATCH
        context, _, _ = await book.get_or_create("demo", "s1", "u1", 1)
    finally:
        await store.close()
    assert context.short_context.summary.splitlines()[0] == "user: m0"
    assert len(context.short_context.summary.splitlines()) == FOLD_BATCH
    recent = [f"m{n}" for n in range(FOLD_BATCH, FOLD_BATCH + 3)]
    assert [t.text for t in context.recent_turns] == [*recent, "last"]
