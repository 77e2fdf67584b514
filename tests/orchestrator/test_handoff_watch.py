"""WatchHandoffs / AckHandoff: the hand-overs of a tenant streamed to human agents (through the
gateway's WebSocket), each to one connection, in flight until its agent acknowledges it, kept
for the connection across a watch that reached its deadline, queued again (first) when the
connection is gone; an erased user's hand-overs dropped."""

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from services.orchestrator.app import OrchestratorServer, session_still_there
from services.orchestrator.consumers.handoff import HandoffEvent, HandoffHeldElsewhere, HandoffHub
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


async def test_a_watch_that_reached_its_deadline_keeps_its_events_for_its_connection() -> None:
    """A re-watch of the same connection gets its unacknowledged events again, first; another
    agent's watch, open all along, gets none of them, only what comes next."""
    hub = HandoffHub(resume_grace=30)
    for n in (1, 2):
        await hub.offer(_event(n))
    async with hub.watch("demo", agent_id="bob", connection_id="sock-b") as other:
        async with hub.watch("demo", agent_id="ana", connection_id="sock-a") as first:
            assert (await anext(first)).event_id == "e-demo-1"
            first.expired = True  # the deadline passed: the socket will watch again
        assert hub.agents("demo") == 1 and hub.reserved("demo") == 1
        assert (await anext(other)).event_id == "e-demo-2", "not e-demo-1: it is reserved"
        taking = asyncio.ensure_future(anext(other))
        async with hub.watch("demo", agent_id="ana", connection_id="sock-a") as again:
            assert (await anext(again)).event_id == "e-demo-1", "again, to the same socket"
            assert again.in_flight == ["e-demo-1"] and hub.reserved("demo") == 0
            await hub.offer(_event(3))
            assert (await taking).event_id == "e-demo-3"
            assert hub.acknowledge("demo", "e-demo-1", agent_id="ana", connection_id="sock-a")
        assert other.in_flight == ["e-demo-2", "e-demo-3"]
    assert (hub.pending("demo"), hub.reserved("demo")) == (2, 0), "bob left: his go back"


async def test_a_connection_that_does_not_come_back_gives_its_events_back_after_the_grace() -> None:
    hub = HandoffHub(resume_grace=0.05)
    await hub.offer(_event(1))
    async with hub.watch("demo", agent_id="ana", connection_id="sock-a") as watch:
        await anext(watch)
        watch.expired = True
    assert (hub.pending("demo"), hub.reserved("demo")) == (0, 1)
    await _until(lambda: hub.pending("demo") == 1)
    assert hub.reserved("demo") == 0
    async with hub.watch("demo", agent_id="bob", connection_id="sock-b") as other:
        assert (await anext(other)).event_id == "e-demo-1"


async def test_a_connection_that_left_before_its_deadline_gives_its_events_back_at_once() -> None:
    hub = HandoffHub(resume_grace=30)
    await hub.offer(_event(1))
    async with hub.watch("demo", agent_id="ana", connection_id="sock-a") as watch:
        await anext(watch)  # not expired: the caller went away
    assert (hub.pending("demo"), hub.reserved("demo"), hub.agents("demo")) == (1, 0, 0)


async def test_overlapping_watches_of_one_connection_share_its_events() -> None:
    """The next watch of a socket may open before the last one has ended on the server: both
    deliver the connection's events (the socket sends each once), nobody else gets them."""
    hub = HandoffHub()
    old_watch = hub.watch("demo", agent_id="ana", connection_id="sock-a")
    new_watch = hub.watch("demo", agent_id="ana", connection_id="sock-a")
    old = await old_watch.__aenter__()
    new = await new_watch.__aenter__()
    waiting = asyncio.ensure_future(anext(new))
    await asyncio.sleep(0)
    await hub.offer(_event(1))
    assert (await anext(old)).event_id == "e-demo-1"
    assert (await waiting).event_id == "e-demo-1"
    assert hub.agents("demo") == 1
    old.expired = True
    await old_watch.__aexit__(None, None, None)
    assert hub.agents("demo") == 1 and new.in_flight == ["e-demo-1"]
    await new_watch.__aexit__(None, None, None)  # the socket left
    assert hub.pending("demo") == 1, "the connection's last watch left: given back"


async def test_only_the_agent_and_connection_holding_an_event_acknowledge_it() -> None:
    hub = HandoffHub()
    await hub.offer(_event(1))
    async with hub.watch("demo", agent_id="ana", connection_id="sock-a") as watch:
        await anext(watch)
        with pytest.raises(HandoffHeldElsewhere):
            hub.acknowledge("demo", "e-demo-1", agent_id="bob")
        with pytest.raises(HandoffHeldElsewhere):
            hub.acknowledge("demo", "e-demo-1", agent_id="ana", connection_id="sock-other")
        assert watch.in_flight == ["e-demo-1"], "still ana's"
    assert hub.pending("demo") == 1
    with pytest.raises(HandoffHeldElsewhere):  # given back: a late ack is the holder's only
        hub.acknowledge("demo", "e-demo-1", agent_id="bob")
    assert hub.acknowledge("demo", "e-demo-1", agent_id="ana")
    assert hub.pending("demo") == 0


async def test_events_no_longer_wanted_are_dropped_and_a_cancelled_check_loses_nothing() -> None:
    gone = {"s-1"}
    checking = asyncio.Event()
    release = asyncio.Event()

    async def still_wanted(event: HandoffEvent) -> bool:
        if event.session_id == "s-3":
            checking.set()
            await release.wait()
        return event.session_id not in gone

    hub = HandoffHub(still_wanted=still_wanted)
    for n in (1, 2, 3):
        await hub.offer(_event(n))
    async with hub.watch("demo", agent_id="ana") as watch:
        assert (await anext(watch)).event_id == "e-demo-2", "e-demo-1's session is gone"
        assert hub.delivered == ["e-demo-2"]
        checking.clear()
        stuck = asyncio.ensure_future(anext(watch))
        await checking.wait()
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    assert hub.pending("demo") == 2, "e-demo-2 and e-demo-3 back; e-demo-1 dropped"
    release.set()
    agent = hub.connect("demo")
    assert [(await anext(agent)).event_id for _ in range(2)] == ["e-demo-2", "e-demo-3"]
    gone.add("s-4")
    await hub.offer(_event(4))
    await hub.offer(_event(5))
    assert (await anext(agent)).event_id == "e-demo-5", "connect drops them too"
    await agent.aclose()


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


async def _turn(
    clients: MeshClients, session_id: str, text: str, corr: str, user: str = "u-9"
) -> pb.ProcessResponse:
    with correlation.bound(_call(corr)):
        return await clients.orchestrator.Process(
            pb.ProcessRequest(
                session_id=session_id,
                user_id=user,
                channel=conversation_pb2.CHANNEL_WEB,
                input=pb.Input(type=pb.INPUT_TYPE_TEXT, text=text),
            )
        )


def _watch(
    clients: MeshClients,
    corr: str = "corr-watch",
    agent: str = "agent-ana",
    connection: str = "",
    timeout: float = 30,
) -> Any:
    with correlation.bound(_call(corr)):
        return clients.orchestrator.WatchHandoffs(
            pb.WatchHandoffsRequest(agent_id=agent, connection_id=connection), timeout=timeout
        )


async def _ack(
    clients: MeshClients, event_id: str, agent: str = "agent-ana", connection: str = ""
) -> bool:
    with correlation.bound(_call("corr-ack")):
        reply = await clients.orchestrator.AckHandoff(
            pb.AckHandoffRequest(event_id=event_id, agent_id=agent, connection_id=connection)
        )
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
        assert await _ack(gateway, one.event_id, "agent-1") is True
        assert await _ack(gateway, one.event_id, "agent-1") is False, "harmless twice"
    finally:
        first.cancel()  # the agent drops with `two` unacknowledged
    second = _watch(gateway, agent="agent-2")
    try:
        again = (await second.read()).handoff
        assert again.event_id == two.event_id
        assert await _ack(gateway, again.event_id, "agent-2") is True
    finally:
        second.cancel()
    assert {one.event_id, two.event_id} == {a.action_id for a in reply.actions}


async def test_a_watch_at_its_deadline_leaves_its_hand_overs_to_its_connections_next_watch(
    gateway: MeshClients, hub: HandoffHub
) -> None:
    """The gateway's socket watches again when a watch reaches its deadline: what it had not
    acknowledged comes back to it, first, and another agent watching meanwhile gets none of it
    (the flaky "watches again" case of the WebSocket, made deterministic)."""
    reply = await _turn(gateway, "s-dl", "quiero hablar con una persona", "corr-dl-1")
    escalated = {a.action_id for a in reply.actions}
    await _until(lambda: hub.pending("demo") == 2)
    first = _watch(gateway, agent="agent-ana", connection="sock-a", timeout=0.5)
    seen = {(await first.read()).handoff.event_id for _ in range(2)}
    assert seen == escalated
    assert await first.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(lambda: hub.agents("demo") == 0)
    assert (hub.reserved("demo"), hub.pending("demo")) == (2, 0), "kept for sock-a"
    other = _watch(gateway, corr="corr-bob", agent="agent-bob", connection="sock-b")
    again = _watch(gateway, agent="agent-ana", connection="sock-a")
    try:
        assert WATCH_REGISTERED in tuple(await other.initial_metadata())
        resumed = {(await again.read()).handoff.event_id for _ in range(2)}
        assert resumed == escalated
        for event_id in resumed:
            assert await _ack(gateway, event_id, "agent-ana", "sock-a") is True
    finally:
        other.cancel()
        again.cancel()
    await _until(lambda: hub.agents("demo") == 0)
    assert (hub.pending("demo"), hub.reserved("demo")) == (0, 0), "agent-bob never held one"
    assert sorted(hub.delivered) == sorted(escalated), "each handed out once"


async def test_a_watch_its_caller_cancels_gives_its_hand_overs_back_at_once(
    gateway: MeshClients, hub: HandoffHub
) -> None:
    await _turn(gateway, "s-cx", "quiero hablar con una persona", "corr-cx-1")
    call = _watch(gateway, connection="sock-a")
    try:
        [(await call.read()).handoff for _ in range(2)]
    finally:
        call.cancel()  # the agent's socket closed, long before the deadline
    async with asyncio.timeout(hub.resume_grace / 2):
        await _until(lambda: hub.pending("demo") == 2)
    assert hub.reserved("demo") == 0


async def test_only_the_agent_holding_a_hand_over_acknowledges_it(
    gateway: MeshClients, hub: HandoffHub
) -> None:
    await _turn(gateway, "s-own", "quiero hablar con una persona", "corr-own-1")
    call = _watch(gateway, agent="agent-ana", connection="sock-a")
    try:
        event_id = (await call.read()).handoff.event_id
        for agent, connection in (("agent-bob", ""), ("agent-bob", "sock-a"), ("agent-ana", "x")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _ack(gateway, event_id, agent, connection)
            error = MeshError.from_rpc_error(info.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "HANDOFF_HELD_ELSEWHERE",
            )
        assert await _ack(gateway, event_id, "agent-ana", "sock-a") is True
    finally:
        call.cancel()


async def test_an_erased_users_hand_overs_reach_no_agent(
    gateway: MeshClients, hub: HandoffHub
) -> None:
    """Erasure deletes the user's sessions; their queued hand-overs (transcript, customer
    text) are dropped instead of delivered."""
    await _turn(gateway, "s-erased", "quiero hablar con una persona", "corr-er-1", user="u-gone")
    await _until(lambda: hub.pending("demo") == 2)
    with correlation.bound(_call("corr-erase")):
        erased = await gateway.context.EraseUser(context_pb.EraseUserRequest(user_id="u-gone"))
    assert erased.sessions_erased == 1
    kept = await _turn(gateway, "s-kept", "quiero hablar con una persona", "corr-er-2")
    call = _watch(gateway)
    try:
        events = [(await call.read()).handoff for _ in range(2)]
    finally:
        call.cancel()
    assert {e.session_id for e in events} == {"s-kept"}
    assert {e.event_id for e in events} == {a.action_id for a in kept.actions}
    await _until(lambda: hub.agents("demo") == 0)
    assert hub.pending("demo") == 2, "only s-kept's, given back; s-erased's are gone"


async def test_watch_and_ack_reject_bad_input(gateway: MeshClients) -> None:
    for agent in ("", "a\nb", "x" * 129):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _watch(gateway, agent=agent).read()
        error = MeshError.from_rpc_error(info.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["agent_id"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _watch(gateway, connection="has space").read()
    assert [v.field for v in MeshError.from_rpc_error(info.value).violations] == ["connection_id"]
    for event_id, agent, connection, fields in (
        ("", "agent-ana", "", ["event_id"]),
        ("has space", "agent-ana", "", ["event_id"]),
        ("e-1", "", "", ["agent_id"]),
        ("e-1", "agent-ana", "has space", ["connection_id"]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _ack(gateway, event_id, agent, connection)
        error = MeshError.from_rpc_error(info.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == fields


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


async def test_a_session_check_that_cannot_reach_the_context_service_delivers(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The orchestrator's `still_wanted`: when the context service cannot answer, the
    hand-over is delivered (an agent's reply into an erased session is refused anyway), with a
    warning naming the event and the code, never its text."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    clients = MeshClients(MeshSettings(state_dir=state_dir, context_addr=address), "orchestrator")
    event = HandoffEvent("e-x", "handoff", "demo", "s-x", "c-x", customer_text="mi tarjeta es 4111")
    try:
        assert await session_still_there(clients)(event) is True
    finally:
        await clients.close()
    warned = [r for r in caplog.records if r.getMessage().startswith("hand-over session")]
    assert [(r.eventId, r.code) for r in warned] == [("e-x", "UNAVAILABLE")]  # type: ignore[attr-defined]
    assert "4111" not in caplog.text
