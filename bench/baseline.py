"""The bare baseline of `bench.turns`: the plumbing of one turn with nothing of the mesh.

A FastAPI endpoint makes one plaintext grpc.aio hop to an "orchestrator" server, which makes
the nine hops an orchestrator turn makes (services/orchestrator/turn.py and guard.py) to
"context", "retrieval" and "llm" servers, in the same order and with the same concurrency:

    BeginIdempotent, AcquireSessionLock,
    GetOrCreateSession | GetTenant | Search   (concurrently),
    Generate, CommitTurn, ReleaseSessionLock, CompleteIdempotent

Every server is a generic bytes method (no protobuf, no interceptors, no TLS, no validation).
Claims and leases are dicts. The context server does the SQLite work a plain implementation
needs, on one aiosqlite connection in WAL mode behind one lock, as the embedded store does:
GetOrCreateSession reads the session row and its last ten turns (the mesh reads them on every
turn too, since each commit drops the cached copy), GetTenant reads the tenant's configuration
(the real demo tenant, ~4.7 kB of JSON) and CommitTurn checks and bumps the fencing token, takes
the next sequence number, inserts both turns and updates the session in one transaction.
Search and Generate answer fixed payloads the size of the embedded mesh's answers to the seed's
first message (three hits, ~1.2 kB; a reply, ~0.7 kB); Generate is sent the tenant, the session,
the hits and the text, as the mesh's prompt carries them.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import grpc
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel

from services.context.demo import demo_tenant
from tools.ports import free_ports

HOPS_PER_TURN = 10
"""The gateway's Process hop and the orchestrator's nine (AppendAudit only drops actions)."""
CONTEXT_METHODS = (
    "BeginIdempotent",
    "AcquireSessionLock",
    "GetOrCreateSession",
    "GetTenant",
    "CommitTurn",
    "ReleaseSessionLock",
    "CompleteIdempotent",
)
RECENT_TURNS = 10
TIMEOUT = 5.0
SEARCH_REPLY = json.dumps(
    {"hits": [{"docId": f"doc-{n}", "score": 0.5, "text": "x" * 380} for n in range(3)]}
).encode()
GENERATE_REPLY = json.dumps(
    {
        "replyText": "y" * 230,
        "intent": "checkout_flow",
        "confidence": 0.78,
        "entities": {"product": "z" * 200},
        "actions": [],
    }
).encode()

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (tenant_id TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    short_context TEXT NOT NULL DEFAULT '{}',
    fence INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);
CREATE TABLE IF NOT EXISTS turns (
    turn_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role INTEGER NOT NULL,
    text TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (tenant_id, turn_id),
    UNIQUE (tenant_id, session_id, seq)
);
"""


class BaselineStore:
    """The store calls of one turn, on one connection as in services/context/sqlite.py."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None
        return self._db

    async def open(self, tenant_id: str) -> None:
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self.db.executescript(SCHEMA)
        config = json_format.MessageToJson(demo_tenant())
        await self.db.execute(
            "INSERT OR REPLACE INTO tenants (tenant_id, config) VALUES (?, ?)", (tenant_id, config)
        )

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()

    async def session(self, tenant_id: str, session_id: str, user_id: str) -> bytes:
        async with self._lock:
            found = _first(
                await self.db.execute_fetchall(
                    "SELECT user_id, short_context FROM sessions "
                    "WHERE tenant_id = ? AND session_id = ?",
                    (tenant_id, session_id),
                )
            )
            row = (user_id, "{}") if found is None else (str(found[0]), str(found[1]))
            if found is None:
                await self.db.execute(
                    "INSERT INTO sessions (tenant_id, session_id, user_id, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (tenant_id, session_id, user_id, datetime.now(UTC).isoformat()),
                )
            turns = list(
                await self.db.execute_fetchall(
                    "SELECT role, text, correlation_id, timestamp FROM turns "
                    "WHERE tenant_id = ? AND session_id = ? ORDER BY seq DESC LIMIT ?",
                    (tenant_id, session_id, RECENT_TURNS),
                )
            )
        return json.dumps(
            {"userId": row[0], "shortContext": json.loads(row[1]), "recentTurns": turns[::-1]}
        ).encode()

    async def tenant(self, tenant_id: str) -> bytes:
        async with self._lock:
            row = _first(
                await self.db.execute_fetchall(
                    "SELECT config FROM tenants WHERE tenant_id = ?", (tenant_id,)
                )
            )
        assert row is not None
        return str(row[0]).encode()

    async def commit(self, tenant_id: str, session_id: str, commit: dict[str, Any]) -> None:
        now = datetime.now(UTC).isoformat()
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                row = _first(
                    await db.execute_fetchall(
                        "SELECT fence FROM sessions WHERE tenant_id = ? AND session_id = ?",
                        (tenant_id, session_id),
                    )
                )
                if row is None or int(row[0]) > commit["fence"]:
                    raise RuntimeError("the session's lease was taken over")
                await db.execute(
                    "UPDATE sessions SET fence = ? WHERE tenant_id = ? AND session_id = ?",
                    (commit["fence"], tenant_id, session_id),
                )
                seq_row = _first(
                    await db.execute_fetchall(
                        "SELECT COALESCE(MAX(seq), 0) FROM turns "
                        "WHERE tenant_id = ? AND session_id = ?",
                        (tenant_id, session_id),
                    )
                )
                seq = int(seq_row[0]) if seq_row else 0
                for turn in commit["turns"]:
                    seq += 1
                    await db.execute(
                        "INSERT INTO turns (turn_id, tenant_id, session_id, seq, role, text, "
                        "correlation_id, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            turn["id"],
                            tenant_id,
                            session_id,
                            seq,
                            turn["role"],
                            turn["text"],
                            commit["correlationId"],
                            now,
                        ),
                    )
                await db.execute(
                    "UPDATE sessions SET short_context = ?, updated_at = ? "
                    "WHERE tenant_id = ? AND session_id = ?",
                    (json.dumps(commit["shortContext"]), now, tenant_id, session_id),
                )
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise


def _first(rows: Any) -> Any:
    return next(iter(rows), None)


Ctx = grpc.aio.ServicerContext[bytes, bytes]
Handler = Callable[[bytes, Ctx], Awaitable[bytes]]


def _metadata(context: Ctx) -> dict[str, str]:
    return {key: str(value) for key, value in context.invocation_metadata() or ()}


class ContextEcho:
    """Claims and leases in dicts; sessions, tenants and commits in the store."""

    def __init__(self, store: BaselineStore) -> None:
        self._store = store
        self._claims: dict[tuple[str, str], str] = {}
        self._leases: dict[tuple[str, str], int] = {}
        self._fences = 0

    def handlers(self) -> dict[str, Handler]:
        handlers = (
            self.begin,
            self.acquire,
            self.session,
            self.tenant,
            self.commit,
            self.release,
            self.complete,
        )
        return dict(zip(CONTEXT_METHODS, handlers, strict=True))

    async def begin(self, request: bytes, context: Ctx) -> bytes:
        call = _metadata(context)
        self._claims.setdefault((call["x-tenant-id"], call["x-correlation-id"]), "claimed")
        return b"claimed"

    async def acquire(self, request: bytes, context: Ctx) -> bytes:
        call = _metadata(context)
        self._fences += 1
        self._leases[(call["x-tenant-id"], call["x-session-id"])] = self._fences
        return str(self._fences).encode()

    async def session(self, request: bytes, context: Ctx) -> bytes:
        call = _metadata(context)
        return await self._store.session(call["x-tenant-id"], call["x-session-id"], "bench")

    async def tenant(self, request: bytes, context: Ctx) -> bytes:
        return await self._store.tenant(_metadata(context)["x-tenant-id"])

    async def commit(self, request: bytes, context: Ctx) -> bytes:
        call = _metadata(context)
        await self._store.commit(call["x-tenant-id"], call["x-session-id"], json.loads(request))
        return b"committed"

    async def release(self, request: bytes, context: Ctx) -> bytes:
        call = _metadata(context)
        self._leases.pop((call["x-tenant-id"], call["x-session-id"]), None)
        return b"released"

    async def complete(self, request: bytes, context: Ctx) -> bytes:
        call = _metadata(context)
        self._claims[(call["x-tenant-id"], call["x-correlation-id"])] = "completed"
        return b"completed"


async def _search(request: bytes, context: Ctx) -> bytes:
    return SEARCH_REPLY


async def _generate(request: bytes, context: Ctx) -> bytes:
    return GENERATE_REPLY


class Hops:
    """The orchestrator's channels to the three servers, as raw bytes methods."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.channels = {
            name: grpc.aio.insecure_channel(address)
            for name, address in addresses.items()
            if name != "orchestrator"
        }

    def method(self, service: str, name: str) -> Any:
        return self.channels[service].unary_unary(f"/bench.{service}/{name}")

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def orchestrator_handler(hops: Hops) -> Handler:
    context, retrieval, llm = (
        {name: hops.method(service, name) for name in names}
        for service, names in (
            ("context", CONTEXT_METHODS),
            ("retrieval", ("Search",)),
            ("llm", ("Generate",)),
        )
    )

    async def process(request: bytes, call: Ctx) -> bytes:
        body = json.loads(request)
        metadata = tuple((k, v) for k, v in _metadata(call).items() if k.startswith("x-"))
        cid, session_id, text = body["correlationId"], body["sessionId"], body["input"]["text"]

        def hop(method: Any, payload: bytes) -> Awaitable[bytes]:
            result: Awaitable[bytes] = method(payload, metadata=metadata, timeout=TIMEOUT)
            return result

        await hop(context["BeginIdempotent"], cid.encode())
        fence = int(await hop(context["AcquireSessionLock"], session_id.encode()))
        session, tenant, hits = await asyncio.gather(
            hop(context["GetOrCreateSession"], request),
            hop(context["GetTenant"], b""),
            hop(retrieval["Search"], text.encode()),
        )
        prompt = b"\n".join((tenant, session, hits, text.encode()))
        generation = json.loads(await hop(llm["Generate"], prompt))
        commit = {
            "fence": fence,
            "correlationId": cid,
            "turns": [
                {"id": f"{cid}/user", "role": 1, "text": text},
                {"id": f"{cid}/agent", "role": 2, "text": generation["replyText"]},
            ],
            "shortContext": {"lastIntent": generation["intent"], **generation["entities"]},
        }
        await hop(context["CommitTurn"], json.dumps(commit).encode())
        await hop(context["ReleaseSessionLock"], str(fence).encode())
        reply = json.dumps(
            {
                "responseText": generation["replyText"],
                "actions": generation["actions"],
                "intent": generation["intent"],
                "confidence": generation["confidence"],
                "correlationId": cid,
            }
        ).encode()
        await hop(context["CompleteIdempotent"], reply)
        return reply

    return process


async def _serve(service: str, address: str, handlers: dict[str, Handler]) -> grpc.aio.Server:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                f"bench.{service}",
                {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in handlers.items()},
            ),
        )
    )
    server.add_insecure_port(address)
    await server.start()
    return server


class TurnBody(BaseModel):
    tenantId: str
    sessionId: str
    correlationId: str
    userId: str
    channel: str
    input: dict[str, str]


def baseline_app(orchestrator: grpc.aio.Channel) -> FastAPI:
    app = FastAPI()
    process: Any = orchestrator.unary_unary("/bench.orchestrator/Process")

    @app.post("/turn")
    async def turn(body: TurnBody) -> JSONResponse:
        metadata = (
            ("x-correlation-id", body.correlationId),
            ("x-tenant-id", body.tenantId),
            ("x-session-id", body.sessionId),
        )
        reply = await process(body.model_dump_json().encode(), metadata=metadata, timeout=15.0)
        return JSONResponse(json.loads(reply))

    return app


@asynccontextmanager
async def bare_baseline(directory: Path, tenant_id: str) -> AsyncIterator[FastAPI]:
    """The baseline's four gRPC servers and store, and its FastAPI app."""
    names = ("orchestrator", "context", "retrieval", "llm")
    addresses = {
        name: f"127.0.0.1:{port}" for name, port in zip(names, free_ports(len(names)), strict=True)
    }
    store = BaselineStore(directory / "baseline.db")
    await store.open(tenant_id)
    hops = Hops(addresses)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        stack.push_async_callback(hops.close)
        handlers: dict[str, dict[str, Handler]] = {
            "context": ContextEcho(store).handlers(),
            "retrieval": {"Search": _search},
            "llm": {"Generate": _generate},
            "orchestrator": {"Process": orchestrator_handler(hops)},
        }
        for service, table in handlers.items():
            server = await _serve(service, addresses[service], table)
            stack.push_async_callback(server.stop, 0.5)
        channel = grpc.aio.insecure_channel(addresses["orchestrator"])
        stack.push_async_callback(channel.close)
        for ready in (channel, *hops.channels.values()):
            await asyncio.wait_for(ready.channel_ready(), 5.0)
        yield baseline_app(channel)
