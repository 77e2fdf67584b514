"""WatchHandoffs / AckHandoff: the hand-overs of a tenant streamed to human agents (through the
gateway's WebSocket), each to one watcher, in flight until acknowledged, queued again (first)
when a watch ends without acknowledging them."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from services.orchestrator.app import OrchestratorServer
from services.orchestrator.consumers.handoff import HandoffEvent, HandoffHub
from services.orchestrator.servicer import WATCH_REGISTERED, OrchestratorServicer
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.servers import orchestrator_binding, running

pytestmark = pytest.mark.timeout(60)

USER = conversation_pb2.TURN_ROLE_USER
AGENT = conversation_pb2.TURN_ROLE_AGENT


def _event(n: int, tenant: str = "demo") -> HandoffEvent:
    return HandoffEvent(
        event_id=f"e-{tenant}-{n}", kind="handoff", tenant_id=tenant, session_id=f"s-{n}",
        correlation_id=f"c-{n}",
    )  # fmt: skip


# --- the hub -------------------------------------------------------------------------------------


async def test_a_watch_holds_its_events_until_acknowledged_and_gives_back_the_rest() -> None:
    hub = HandoffHub()
    for n in (1, 2, 3):
        await hub.offer(_event(n))
    async with hub.watch("demo") as watch:
        got = [(await anext(watch)).event_id for _ in range(3)]
        assert got == ["e-demo-1", "e-demo-2", "e-demo-3"]
        assert hub.acknowledge("demo", "e-demo-2")
        assert not hub.acknowledge("demo", "e-demo-2"), "once"
        assert not hub.acknowledge("acme", "e-demo-1"), "another tenant's id means nothing"
        assert watch.in_flight == ["e-demo-1", "e-demo-3"]
        assert hub.agents("demo") == 1
    assert hub.agents("demo") == 0
    assert hub.pending("demo") == 2, "the unacknowledged ones are queued again"
    async with hub.watch("demo") as again:
        assert [(await anext(again)).event_id for _ in range(2)] == ["e-demo-1", "e-demo-3"]
        await hub.offer(_event(4))
        assert (await anext(again)).event_id == "e-demo-4", "the given-back ones came first"


async def test_an_acknowledgement_after_the_watch_closed_still_settles_the_event() -> None:
    hub = HandoffHub()
    await hub.offer(_event(1))
    async with hub.watch("demo") as watch:
        await anext(watch)
    assert hub.pending("demo") == 1
    assert hub.acknowledge("demo", "e-demo-1")
    assert hub.pending("demo") == 0
    await hub.offer(_event(2))
    assert not hub.acknowledge("demo", "e-demo-2"), "never handed to anyone: not settled"
    assert hub.pending("demo") == 1


async def test_each_event_goes_to_one_of_the_watches_and_tenants_stay_apart() -> None:
    hub = HandoffHub()
    async with hub.watch("demo") as first, hub.watch("demo") as second, hub.watch("acme") as other:
        waiting = [asyncio.ensure_future(anext(w)) for w in (first, second, other)]
        for n in (1, 2):
            await hub.offer(_event(n))
        await hub.offer(_event(1, tenant="acme"))
        got = await asyncio.gather(*waiting)
        assert sorted(e.event_id for e in got[:2]) == ["e-demo-1", "e-demo-2"]
        assert got[2].event_id == "e-acme-1"


async def test_a_watch_cancelled_while_waiting_loses_nothing() -> None:
    hub = HandoffHub()

    async def watcher(started: asyncio.Event) -> None:
        async with hub.watch("demo") as watch:
            started.set()
            await anext(watch)

    started = asyncio.Event()
    task = asyncio.create_task(watcher(started))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await hub.offer(_event(1))
    async with hub.watch("demo") as watch:
        assert (await anext(watch)).event_id == "e-demo-1"


def test_the_event_as_the_rpc_streams_it() -> None:
    event = HandoffEvent(
        event_id="a-1",
        kind="ticket",
        tenant_id="demo",
        session_id="s-1",
        correlation_id="c-1",
        reason="order_support",
        summary="El pedido 12345 no llegó",
        transcript=({"role": "user", "text": "hola"}, {"role": "agent", "text": "¿sí?"}),
        entities={"order_id": "12345", "quantity": 2},
        user={"userId": "u-1"},
        order_id="12345",
        language="es",
        created_at="2025-12-04T10:00:00Z",
        params={"reason": "order_support"},
    )
    proto = event.as_proto()
    assert proto.kind == pb.HANDOFF_KIND_TICKET
    assert [(t.role, t.text) for t in proto.transcript] == [(USER, "hola"), (AGENT, "¿sí?")]
    assert proto.entities["order_id"] == "12345" and proto.user["userId"] == "u-1"
    assert proto.created_at.ToJsonString() == "2025-12-04T10:00:00Z"
    assert not HandoffEvent("a-2", "handoff", "demo", "s", "c").as_proto().HasField("created_at")


# --- over gRPC, on the in-process mesh -----------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (within the test's timeout) until `condition` holds."""
    while not condition():
        await asyncio.sleep(0.01)


def _call(corr: str, tenant: str = "demo") -> correlation.CallContext:
    return correlation.CallContext(correlation_id=corr, tenant_id=tenant)


async def _turn(clients: MeshClients, session_id: str, text: str, corr: str) -> pb.ProcessResponse:
    with correlation.bound(_call(corr)):
        return await clients.orchestrator.Process(
            pb.ProcessRequest(
                session_id=session_id,
                user_id="u-9",
                channel=conversation_pb2.CHANNEL_WEB,
                input=pb.Input(type=pb.INPUT_TYPE_TEXT, text=text),
            )
        )


def _watch(clients: MeshClients, corr: str = "corr-watch", agent: str = "agent-ana") -> Any:
    with correlation.bound(_call(corr)):
        return clients.orchestrator.WatchHandoffs(
            pb.WatchHandoffsRequest(agent_id=agent), timeout=30
        )


async def _ack(clients: MeshClients, event_id: str) -> bool:
    with correlation.bound(_call("corr-ack")):
        reply = await clients.orchestrator.AckHandoff(pb.AckHandoffRequest(event_id=event_id))
    return reply.acknowledged


@pytest.fixture
def hub(mesh: InProcessMesh) -> HandoffHub:
    server = mesh.servers["orchestrator"]
    assert isinstance(server, OrchestratorServer) and server.handoff_hub is not None
    return server.handoff_hub


async def test_a_watch_streams_the_hand_over_with_the_whole_context(
    gateway: MeshClients, hub: HandoffHub
) -> None:
    earlier = await _turn(gateway, "s-w", "Quiero comprar la zapatilla Kobe", "corr-w-1")
    reply = await _turn(gateway, "s-w", "quiero hablar con una persona", "corr-w-2")
    assert sorted(a.type for a in reply.actions) == ["create_ticket", "handoff_human"]
    call = _watch(gateway)
    try:
        assert WATCH_REGISTERED in tuple(await call.initial_metadata())
        events = [(await call.read()).handoff for _ in range(2)]
    finally:
        call.cancel()
    assert sorted(e.event_id for e in events) == sorted(a.action_id for a in reply.actions)
    assert {e.kind for e in events} == {pb.HANDOFF_KIND_HANDOFF, pb.HANDOFF_KIND_TICKET}
    for event in events:
        assert (event.tenant_id, event.session_id, event.correlation_id) == (
            "demo",
            "s-w",
            "corr-w-2",
        )
        assert event.reason == "customer_request" and event.summary
        assert [(t.role, t.text) for t in event.transcript] == [
            (USER, "Quiero comprar la zapatilla Kobe"),
            (AGENT, earlier.response_text),
            (USER, "quiero hablar con una persona"),
            (AGENT, reply.response_text),
        ]
        assert event.entities["product"] and event.user["userId"] == "u-9"
        assert event.language == "es" and event.HasField("created_at")
    await _until(lambda: hub.pending("demo") == 2)  # cancelled unacknowledged: queued again


async def test_acknowledged_hand_overs_are_not_delivered_again_and_the_rest_are(
    gateway: MeshClients, hub: HandoffHub
) -> None:
    reply = await _turn(gateway, "s-a", "quiero hablar con una persona", "corr-a-1")
    first = _watch(gateway, agent="agent-1")
    try:
        one, two = [(await first.read()).handoff for _ in range(2)]
        assert await _ack(gateway, one.event_id) is True
        assert await _ack(gateway, one.event_id) is False, "harmless twice"
    finally:
        first.cancel()  # the agent drops with `two` unacknowledged
    second = _watch(gateway, agent="agent-2")
    try:
        again = (await second.read()).handoff
        assert again.event_id == two.event_id
        assert await _ack(gateway, again.event_id) is True
    finally:
        second.cancel()
    assert {one.event_id, two.event_id} == {a.action_id for a in reply.actions}


async def test_watch_and_ack_reject_bad_input(gateway: MeshClients) -> None:
    for agent in ("", "a\nb", "x" * 129):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _watch(gateway, agent=agent).read()
        error = MeshError.from_rpc_error(info.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["agent_id"]
    for event_id in ("", "has space"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _ack(gateway, event_id)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("caller", ["speech", "operator"])
async def test_only_the_gateway_may_watch_or_acknowledge(mesh: InProcessMesh, caller: str) -> None:
    clients = mesh.clients(caller)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as watching:
            await _watch(clients).read()
        with pytest.raises(grpc.aio.AioRpcError) as acking:
            await _ack(clients, "e-1")
    finally:
        await clients.close()
    assert watching.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert acking.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def relayless(state_dir: Path) -> AsyncIterator[MeshClients]:
    """An orchestrator replica without the outbox relay (so without hand-overs)."""
    servicer = OrchestratorServicer(None, None, None)  # type: ignore[arg-type]
    settings = MeshSettings(state_dir=state_dir)
    async with running("orchestrator", settings, [orchestrator_binding(servicer)]) as (_, addr):
        clients = MeshClients(MeshSettings(state_dir=state_dir, orchestrator_addr=addr), "gateway")
        yield clients
        await clients.close()


async def test_a_replica_without_the_relay_says_the_hand_overs_are_elsewhere(
    relayless: MeshClients,
) -> None:
    call = _watch(relayless)
    assert WATCH_REGISTERED not in tuple(await call.initial_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    error = MeshError.from_rpc_error(info.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HANDOFFS_NOT_HERE")
    with pytest.raises(grpc.aio.AioRpcError) as acking:
        await _ack(relayless, "e-1")
    assert acking.value.code() == grpc.StatusCode.FAILED_PRECONDITION
