"""Hand-overs across orchestrator replicas (ORCHESTRATOR_HANDOFF_QUEUE=context): two
orchestrators share one context service, whose durable hand-over queue every replica serves.
Replica A runs the outbox relay on the in-process bus, whose hand-over consumer queues into the
context service; replica B runs no relay and still serves the agents' watches."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.context.app import build_server as build_context
from services.context.settings import ContextSettings
from services.llm.app import build_server as build_llm
from services.llm.settings import LlmSettings
from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from services.orchestrator.app import OrchestratorServer
from services.orchestrator.app import build_server as build_orchestrator
from services.orchestrator.consumers.handoff_context import ContextHandoffQueue
from services.orchestrator.servicer import WATCH_REGISTERED, OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.retrieval.app import build_server as build_retrieval
from services.retrieval.settings import RetrievalSettings
from tests.orchestrator.handoff_queue import waiting_handoffs
from tests.support.ports import free_ports
from tests.support.servers import orchestrator_binding, running

pytestmark = pytest.mark.timeout(60)

ESCALATE = "quiero hablar con una persona"


@dataclass
class Replicas:
    settings: MeshSettings
    a: MeshClients
    """The gateway's clients of replica A (runs the relay)."""
    b: MeshClients
    """The gateway's clients of replica B (no relay)."""
    orchestrator: MeshClients
    """The orchestrator's own clients, to look into the context service's queue."""
    servers: dict[str, OrchestratorServer]


@pytest.fixture
async def replicas(state_dir: Path, tmp_path: Path) -> AsyncIterator[Replicas]:
    names = ("context", "retrieval", "llm", "orchestrator_a", "orchestrator_b")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    common: dict[str, Any] = {
        "state_dir": state_dir,
        "context_addr": address["context"],
        "retrieval_addr": address["retrieval"],
        "llm_addr": address["llm"],
    }
    handoffs: dict[str, Any] = {
        "handoff_queue": "context",
        "handoff_poll_seconds": 0.2,
        "handoff_resume_grace_seconds": 30,
        "outbox_poll_seconds": 0.1,
    }
    orchestrators = {
        name: build_orchestrator(
            OrchestratorSettings(
                **common,
                **handoffs,
                orchestrator_addr=address[name],
                grpc_listen_addr=address[name],
                run_relay=name == "orchestrator_a",
            )
        )
        for name in ("orchestrator_a", "orchestrator_b")
    }
    servers = [
        build_context(
            ContextSettings(
                **common,
                grpc_listen_addr=address["context"],
                store_url=f"sqlite:///{tmp_path / 'context.db'}",
            )
        ),
        build_retrieval(RetrievalSettings(**common, grpc_listen_addr=address["retrieval"])),
        build_llm(LlmSettings(**common, grpc_listen_addr=address["llm"])),
        *orchestrators.values(),
    ]
    async with AsyncExitStack() as stack:
        for server in servers:
            await server.start()
            stack.push_async_callback(server.stop, 0.5)
        for server in servers:
            await server.ready.wait()
        clients = {
            name: MeshClients(
                MeshSettings(**common, orchestrator_addr=address[f"orchestrator_{name}"]),
                "gateway",
            )
            for name in ("a", "b")
        }
        own = MeshClients(MeshSettings(**common), "orchestrator")
        for client in (*clients.values(), own):
            stack.push_async_callback(client.close)
        assert all(isinstance(s, OrchestratorServer) for s in orchestrators.values())
        yield Replicas(
            MeshSettings(**common),
            clients["a"],
            clients["b"],
            own,
            {"a": orchestrators["orchestrator_a"], "b": orchestrators["orchestrator_b"]},  # type: ignore[dict-item]
        )


def _call(corr: str) -> correlation.CallContext:
    return correlation.CallContext(correlation_id=corr, tenant_id="demo")


async def _turn(clients: MeshClients, session: str, corr: str, user: str = "u-9") -> set[str]:
    """An escalating turn; the ids of its two hand-overs (ticket and handoff)."""
    with correlation.bound(_call(corr)):
        reply = await clients.orchestrator.Process(
            pb.ProcessRequest(
                session_id=session,
                user_id=user,
                channel=conversation_pb2.CHANNEL_WEB,
                input=pb.Input(type=pb.INPUT_TYPE_TEXT, text=ESCALATE),
            )
        )
    assert sorted(a.type for a in reply.actions) == ["create_ticket", "handoff_human"]
    return {a.action_id for a in reply.actions}


def _watch(
    clients: MeshClients, agent: str, connection: str = "", timeout: float = 30, corr: str = "w"
) -> Any:
    with correlation.bound(_call(f"corr-{corr}-{agent}")):
        return clients.orchestrator.WatchHandoffs(
            pb.WatchHandoffsRequest(agent_id=agent, connection_id=connection), timeout=timeout
        )


async def _ack(clients: MeshClients, event_id: str, agent: str, connection: str = "") -> bool:
    with correlation.bound(_call("corr-ack")):
        reply = await clients.orchestrator.AckHandoff(
            pb.AckHandoffRequest(event_id=event_id, agent_id=agent, connection_id=connection)
        )
    return reply.acknowledged


async def _read(call: Any, count: int) -> list[pb.HandoffEvent]:
    return [(await call.read()).handoff for _ in range(count)]


async def _nothing_within(call: Any, seconds: float) -> "asyncio.Future[Any]":
    """Assert that `call` streams nothing within `seconds`; the read still waiting (cancelling
    a read would cancel the call)."""
    reading = asyncio.ensure_future(call.read())
    done, _ = await asyncio.wait([reading], timeout=seconds)
    assert not done, "nothing more is delivered"
    return reading


async def _drop(call: Any, reading: "asyncio.Future[Any] | None" = None) -> None:
    """Cancel `call` (the agent leaves), and the read left waiting on it."""
    call.cancel()
    if reading is not None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await reading


async def _until_left(replicas: Replicas, expected: set[str]) -> None:
    """Until the queue holds exactly `expected` waiting (a release is sent after the watch)."""
    while set(await waiting_handoffs(replicas.orchestrator)) != expected:
        await asyncio.sleep(0.05)


async def test_every_replica_serves_the_durable_queue(replicas: Replicas) -> None:
    for server in replicas.servers.values():
        assert isinstance(server.handoff_hub, ContextHandoffQueue)
        assert server.handoff_feed is None, "the in-process bus feeds it, where the relay runs"


async def test_a_hand_over_from_replica_a_reaches_an_agent_on_replica_b_once(
    replicas: Replicas,
) -> None:
    escalated = await _turn(replicas.a, "s-ab", "corr-ab-1")
    on_b = _watch(replicas.b, "agent-ana", "sock-a")
    try:
        assert WATCH_REGISTERED in tuple(await on_b.initial_metadata())
        events = await _read(on_b, 2)
        assert {e.event_id for e in events} == escalated
        assert {(e.tenant_id, e.session_id, e.correlation_id) for e in events} == {
            ("demo", "s-ab", "corr-ab-1")
        }
        assert all(e.transcript and e.user["userId"] == "u-9" for e in events)
        for event in events:
            assert await _ack(replicas.b, event.event_id, "agent-ana", "sock-a") is True
        assert await _ack(replicas.a, events[0].event_id, "agent-ana") is False, "done, anywhere"
    finally:
        await _drop(on_b)
    on_a = _watch(replicas.a, "agent-bob", "sock-b")
    try:
        assert WATCH_REGISTERED in tuple(await on_a.initial_metadata())
        waiting = await _nothing_within(on_a, 1.0)
        later = await _turn(replicas.b, "s-ba", "corr-ba-1")  # a turn on B, relayed by A
        events = [(await waiting).handoff, *await _read(on_a, 1)]
        assert {e.event_id for e in events} == later, "the next ones, only"
    finally:
        await _drop(on_a)
    await _until_left(replicas, later)  # bob did not acknowledge his: given back


async def test_a_connection_that_reached_its_deadline_resumes_on_the_other_replica(
    replicas: Replicas,
) -> None:
    escalated = await _turn(replicas.a, "s-dl", "corr-dl-1")
    await _until_left(replicas, escalated)  # queued: the short watch has them at once
    first = _watch(replicas.a, "agent-ana", "sock-a", timeout=1.0)
    assert {e.event_id for e in await _read(first, 2)} == escalated
    assert await first.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    bob = _watch(replicas.a, "agent-bob", "sock-b")
    again = _watch(replicas.b, "agent-ana", "sock-a")
    waiting = None
    try:
        assert WATCH_REGISTERED in tuple(await bob.initial_metadata())
        resumed = await _read(again, 2)
        assert {e.event_id for e in resumed} == escalated, "the same socket gets them again"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _ack(replicas.a, resumed[0].event_id, "agent-bob")
        error = MeshError.from_rpc_error(refused.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "HANDOFF_HELD_ELSEWHERE",
        )
        waiting = await _nothing_within(bob, 0.8)
        for event in resumed:
            assert await _ack(replicas.a, event.event_id, "agent-ana", "sock-a") is True
    finally:
        await _drop(bob, waiting)
        await _drop(again)
    await _until_left(replicas, set())


async def test_an_agent_who_left_gives_the_hand_overs_back_at_once(replicas: Replicas) -> None:
    """The lease is 30 s here: the other agent gets them long before it would run out."""
    escalated = await _turn(replicas.a, "s-left", "corr-left-1")
    leaving = _watch(replicas.b, "agent-ana", "sock-a")
    assert {e.event_id for e in await _read(leaving, 2)} == escalated
    leaving.cancel()
    taking = _watch(replicas.a, "agent-bob", "sock-b")
    try:
        async with asyncio.timeout(10):
            taken = await _read(taking, 2)
        assert {e.event_id for e in taken} == escalated
        for event in taken:
            assert await _ack(replicas.b, event.event_id, "agent-bob", "sock-b") is True
    finally:
        await _drop(taking)


async def test_an_erased_users_queued_hand_overs_are_deleted(replicas: Replicas) -> None:
    gone = await _turn(replicas.a, "s-gone", "corr-gone-1", user="u-gone")
    await _until_left(replicas, gone)  # the relay has queued them
    with correlation.bound(_call("corr-erase")):
        erased = await replicas.a.context.EraseUser(context_pb.EraseUserRequest(user_id="u-gone"))
    assert (erased.sessions_erased, erased.handoffs_erased) == (1, 2)
    kept = await _turn(replicas.a, "s-kept", "corr-kept-1")
    call = _watch(replicas.b, "agent-ana")
    waiting = None
    try:
        events = await _read(call, 2)
        assert {e.event_id for e in events} == kept
        waiting = await _nothing_within(call, 0.8)
    finally:
        await _drop(call, waiting)


async def test_a_watch_the_context_service_cannot_serve_fails_before_it_is_registered(
    state_dir: Path,
) -> None:
    """The gateway tells the agent to come back later (no registration header, UNAVAILABLE),
    instead of a socket that silently never gets a hand-over."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{unused.getsockname()[1]}"
    own = MeshClients(MeshSettings(state_dir=state_dir, context_addr=nowhere), "orchestrator")
    queue = ContextHandoffQueue(own, poll_seconds=0.2)
    servicer = OrchestratorServicer(None, None, queue)  # type: ignore[arg-type]
    settings = MeshSettings(state_dir=state_dir)
    async with running("orchestrator", settings, [orchestrator_binding(servicer)]) as (_, addr):
        gateway = MeshClients(MeshSettings(state_dir=state_dir, orchestrator_addr=addr), "gateway")
        try:
            call = _watch(gateway, "agent-ana", "sock-a")
            assert WATCH_REGISTERED not in tuple(await call.initial_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call.read()
        finally:
            await gateway.close()
            await queue.aclose()
            await own.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
