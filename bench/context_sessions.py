"""Get-session latency: cache hit versus cache miss, on real Redis and PostgreSQL.

The seed asks for in-session context in under 100 ms; we aim for a p99 under 2 ms on a hit.
Each path runs WARMUP + ROUNDS calls of `ContextBook.get_or_create` for a session holding ten
turns; a miss is forced by deleting the cache entry (outside the timed call).
"""

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from metaagent.common.v1 import conversation_pb2, tenant_pb2

from services.context.cache import MemoryCache, SessionCache
from services.context.coordination import open_coordination
from services.context.sessions import ContextBook, cache_key
from services.context.store import SessionStore, open_store
from tools.throwaway_postgres import create_test_database, drop_test_database

WARMUP, ROUNDS = 100, 2000
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def _prepare(store: SessionStore, tenant: str) -> None:
    await store.put_tenant(tenant_pb2.TenantConfig(tenant_id=tenant, name="bench"))
    await store.create_session(tenant, "s1", "u1", 1)
    turns = [
        conversation_pb2.ConversationTurn(role=1 + n % 2, text=f"mensaje número {n} " * 8)
        for n in range(10)
    ]
    await store.commit_turns(tenant, "s1", turns, None)


async def _timed(
    call: Callable[[], Awaitable[object]], before: Callable[[], Awaitable[None]] | None
) -> list[float]:
    samples = []
    for round_number in range(WARMUP + ROUNDS):
        if before is not None:
            await before()
        started = time.perf_counter()
        await call()
        if round_number >= WARMUP:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _measure(store: SessionStore, cache: SessionCache, tenant: str) -> dict[str, list[float]]:
    book = ContextBook(store, cache, ttl_seconds=900, recent_turns=10)

    async def get() -> object:
        return await book.get_or_create(tenant, "s1", "u1", 1)

    async def evict() -> None:
        await cache.delete(cache_key(tenant, "s1"))

    await get()
    return {"hit": await _timed(get, None), "miss": await _timed(get, evict)}


def _row(name: str, samples: list[float]) -> str:
    quantiles = statistics.quantiles(samples, n=100)
    return f"  {name:<34} p50 {quantiles[49]:7.3f} ms   p99 {quantiles[98]:7.3f} ms"


async def run() -> None:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    database = create_test_database(POSTGRES_DSN)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            for store_name, url in (
                ("postgres", database.app_dsn),
                ("sqlite", f"sqlite:///{Path(directory) / 'bench.db'}"),
            ):
                store = open_store(url)
                await store.open()
                await _prepare(store, tenant)
                for cache_name in ("redis", "memory"):
                    coordination = open_coordination(
                        REDIS_URL if cache_name == "redis" else "memory://"
                    )
                    cache = coordination.cache if cache_name == "redis" else MemoryCache()
                    results[f"{store_name} + {cache_name} cache"] = await _measure(
                        store, cache, tenant
                    )
                    await coordination.close()
                await store.close()
    finally:
        drop_test_database(database)
    print(f"get-session latency, {ROUNDS} calls each (session with 10 turns)")
    for name, paths in results.items():
        print(_row(f"{name}, hit", paths["hit"]))
        print(_row(f"{name}, miss", paths["miss"]))
        ratio = statistics.median(paths["miss"]) / statistics.median(paths["hit"])
        print(f"  {'':<34} miss/hit at p50: {ratio:5.1f}x")
    redis_hit = statistics.quantiles(results["postgres + redis cache"]["hit"], n=100)[98]
    print(
        f"goal: p99 under 2 ms on a Redis hit -> {redis_hit:.3f} ms "
        f"({'met' if redis_hit < 2 else 'NOT met'}); seed: under 100 ms in-session"
    )
