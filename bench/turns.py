"""Turns per second of the embedded profile, against a bare baseline of the same plumbing.

Mesh: the gateway app (JWT, validation, problem mapping) driven in-process through httpx's
ASGITransport, then the orchestrator, context (SQLite in a temporary directory, in-process
cache, leases and claims), retrieval (`memory://` vectors, offline embedder) and LLM servers,
all in this process and event loop, over real mTLS. The LLM service's one deployment is an
instant provider (a canned structured answer, no network): the mesh pays for its engine
(prompt building, limits, breaker, parsing) but not for a model. Baseline (bench/baseline.py):
a FastAPI endpoint, driven the same way, making the same ten gRPC hops (plaintext, raw bytes)
and the same core SQLite calls, with the same aiosqlite idioms.

Both get WARMUP turns, then TURNS turns from CONCURRENCY clients; each turn has a fresh
correlation id, tenant "demo" and the seed's case A first message, on one of two sessions owned
by its client (so no two turns in flight share a session and the per-session lease never
waits). The goal is at least 0.6 of the baseline's throughput; it is reported, not asserted.
"""

import asyncio
import json
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from bench.baseline import HOPS_PER_TURN, bare_baseline
from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import GatewaySettings
from services.context.app import build_server as build_context
from services.context.settings import ContextSettings
from services.llm.app import build_server as build_llm
from services.llm.providers import ChatCompletion, ChatDelta, ChatRequest, ChatUsage
from services.llm.settings import LlmSettings
from services.mesh import correlation
from services.mesh.certs import ensure_dev_pki
from services.mesh.server import MeshServer
from services.orchestrator.app import build_server as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.retrieval.app import build_server as build_retrieval
from services.retrieval.settings import RetrievalSettings
from tools.ports import free_ports

CONCURRENCY, WARMUP, TURNS = 32, 160, 1500
SESSIONS_PER_CLIENT = 2
TENANT = "demo"
TEXT = "Quiero comprar la zapatilla Kobe, la dejé en el carrito."
GOAL = 0.6
MESH_PATH, BASELINE_PATH = "/v2/agents/meta-agent/process", "/turn"


INSTANT_ANSWER = json.dumps(
    {
        "reply": "La Kobe 6 Protro cuesta 189,99 EUR. ¿En qué talla la quieres?",
        "intent": "checkout_flow",
        "confidence": 0.92,
        "actions": [],
        "entities_json": json.dumps({"product": "Kobe 6 Protro"}),
    }
)


class InstantProvider:
    """A chat deployment that answers at once with a canned structured answer."""

    name, model, context_tokens = "instant/bench", "instant", 16_000

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        return ChatCompletion(INSTANT_ANSWER, ChatUsage(120, 30, 150), self.model, "stop")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatCompletion]:
        yield ChatDelta(INSTANT_ANSWER)
        yield await self.complete(request)

    async def aclose(self) -> None:
        pass


@dataclass
class Run:
    seconds: float
    latencies_ms: list[float]
    failures: dict[str, int]

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    def row(self, name: str) -> str:
        quantiles = statistics.quantiles(self.latencies_ms, n=100)
        return (
            f"  {name:<9} {self.throughput:7.1f} turns/s   "
            f"p50 {quantiles[49]:7.2f} ms   p99 {quantiles[98]:7.2f} ms"
        )


@asynccontextmanager
async def embedded_mesh(state_dir: Path) -> AsyncIterator[FastAPI]:
    """Context, retrieval, LLM and orchestrator over mTLS, and the gateway app calling them
    (as tests/support/inprocess_mesh.py starts them, with the embedded profile pinned)."""
    ensure_dev_pki(state_dir / "certs")
    names = ("context", "retrieval", "llm", "orchestrator")
    addresses = {
        f"{name}_addr": f"127.0.0.1:{port}"
        for name, port in zip(names, free_ports(len(names)), strict=True)
    }
    common: dict[str, Any] = {"state_dir": state_dir, **addresses}
    servers: list[MeshServer] = [
        build_context(
            ContextSettings(
                **common,
                grpc_listen_addr=addresses["context_addr"],
                store_url=f"sqlite:///{state_dir / 'context.db'}",
                cache_url="memory://",
            )
        ),
        build_retrieval(
            RetrievalSettings(
                **common,
                grpc_listen_addr=addresses["retrieval_addr"],
                vector_store_url="memory://",
                embedder="offline",
                embedding_cache_url="",
            )
        ),
        build_llm(
            LlmSettings(
                **common,
                grpc_listen_addr=addresses["llm_addr"],
                requests_per_minute=0,
            ),
            [InstantProvider()],
        ),
        build_orchestrator(
            OrchestratorSettings(**common, grpc_listen_addr=addresses["orchestrator_addr"])
        ),
    ]
    gateway = GatewaySettings(
        **common,
        jwt_secret="bench-" + "k" * 40,
        rate_limit_client_per_minute=0,
        rate_limit_tenant_per_minute=0,
    )
    app = create_app(gateway)
    app.state.bench_token = issue_token(
        gateway, tenant_id=TENANT, role="agent", subject="bench-agent", ttl=3600
    )
    async with AsyncExitStack() as stack:
        for server in servers:
            await server.start()
            stack.push_async_callback(server.stop, 0.5)
        for server in servers:
            await asyncio.wait_for(server.ready.wait(), 30)
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield app


def _body(session_id: str) -> dict[str, Any]:
    return {
        "tenantId": TENANT,
        "sessionId": session_id,
        "correlationId": str(uuid.uuid4()),
        "userId": "bench-user",
        "channel": "web",
        "input": {"type": "text", "text": TEXT},
    }


async def _drive(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    turns: int,
    prefix: str,
    concurrency: int = CONCURRENCY,
) -> Run:
    """`turns` turns from `concurrency` clients, each alternating between its own sessions."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    remaining = turns

    async def one_client(number: int) -> None:
        nonlocal remaining
        done = 0
        while remaining > 0:
            remaining -= 1
            session = f"{prefix}-{number + concurrency * (done % SESSIONS_PER_CLIENT)}"
            done += 1
            started = time.perf_counter()
            reply = await client.post(path, json=_body(session), headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            if reply.status_code == 200:
                latencies.append(elapsed)
            else:
                key = f"{reply.status_code} {reply.text[:120]}"
                failures[key] = failures.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client(n) for n in range(concurrency)))
    return Run(time.perf_counter() - started, latencies, failures)


async def measure(
    app: FastAPI,
    path: str,
    headers: dict[str, str],
    warmup: int = WARMUP,
    turns: int = TURNS,
    concurrency: int = CONCURRENCY,
) -> Run:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await _drive(client, path, headers, warmup, "bench-s", concurrency)
        return await _drive(client, path, headers, turns, "bench-s", concurrency)


class _HopCounter(logging.Handler):
    """Counts the RPCs the mesh's servers log for one correlation id."""

    def __init__(self, correlation_id: str) -> None:
        super().__init__()
        self.correlation_id = correlation_id
        self.methods: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if correlation.current().correlation_id == self.correlation_id:
            method = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            self.methods.append(str(method).rsplit("/", 1)[-1])


async def _mesh_hops(app: FastAPI, headers: dict[str, str]) -> list[str]:
    """The RPCs of one steady-state turn, as the servers see them."""
    body = _body("bench-s-0")
    counter = _HopCounter(body["correlationId"])
    logger = logging.getLogger("metaagent.rpc")
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            reply = await client.post(MESH_PATH, json=body, headers=headers)
        reply.raise_for_status()
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
    return counter.methods


async def run() -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with embedded_mesh(Path(directory) / "mesh") as app:
            headers = {"Authorization": f"Bearer {app.state.bench_token}"}
            mesh = await measure(app, MESH_PATH, headers)
            hops = await _mesh_hops(app, headers)
        async with bare_baseline(Path(directory), TENANT) as app:
            baseline = await measure(app, BASELINE_PATH, {})
    ratio = mesh.throughput / baseline.throughput
    print(
        f"turns: {TURNS} turns after {WARMUP} warm-up, {CONCURRENCY} concurrent clients, "
        f"{CONCURRENCY * SESSIONS_PER_CLIENT} sessions, tenant {TENANT}, seed case A text"
    )
    print(mesh.row("mesh"))
    print(baseline.row("baseline"))
    print(
        "  mesh:     gateway app (httpx ASGITransport) -> orchestrator -> context (SQLite + "
        "memory cache), retrieval (memory://), LLM (instant provider); mTLS, one process"
    )
    print(
        f"  baseline: FastAPI endpoint (httpx ASGITransport) -> {HOPS_PER_TURN} plaintext "
        "grpc.aio bytes hops -> echo servers; session/tenant reads + commit transaction in SQLite"
    )
    print(f"  gRPC hops per mesh turn (observed): {len(hops)} ({', '.join(hops)})")
    if len(hops) != HOPS_PER_TURN:
        print(f"  WARNING: the baseline models {HOPS_PER_TURN} hops per turn")
    for name, result in (("mesh", mesh), ("baseline", baseline)):
        for failure, count in result.failures.items():
            print(f"  {name} failures: {count} x {failure}")
    print(f"  mesh/baseline throughput: {ratio:.2f}")
    print(
        f"goal: >= {GOAL} of the baseline's throughput -> {ratio:.2f} "
        f"({'met' if ratio >= GOAL else 'not met'})"
    )
