"""The human agents' WebSocket `/v2/tenants/{tenantId}/handoff`, the real gateway app under
uvicorn over the in-process mesh, with the `websockets` client: authentication (header or
subprotocol), roles and tenant, hand-overs out (each once per socket, across re-watches),
replies and acknowledgements in, error frames that leave the socket open, a disconnect that
ends the orchestrator's watch, the token's expiry, rate limits and the per-agent socket cap.

`served` and `AgentClient` serve the gateway end-to-end tests too."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as orchestrator_pb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gateway.app import create_app, uvicorn_config
from gateway.auth import issue_token
from gateway.routes.handoff import SUBPROTOCOL, AgentConnection
from gateway.settings import GatewaySettings
from services.mesh import correlation
from services.mesh.settings import MeshSettings
from services.orchestrator.app import OrchestratorServer
from services.orchestrator.consumers.handoff import HandoffEvent, HandoffHub
from services.orchestrator.servicer import OrchestratorServicer
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.public_api import PublicApi, public_api_over
from tests.support.servers import orchestrator_binding, running

pytestmark = pytest.mark.timeout(60)

PROCESS = "/v2/agents/meta-agent/process"
HANDOFF = "/v2/tenants/{tenant}/handoff"


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` (its lifespan already entered) under uvicorn on a free port of this event loop;
    yields `host:port`."""
    config = uvicorn_config(
        app,
        app.state.settings,
        host="127.0.0.1",
        port=0,
        loop="none",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises why it could not start
            raise RuntimeError("uvicorn stopped before starting")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class AgentClient:
    """A human agent's socket: frames as dicts, read in order or picked by type."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._unread: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def next(self, kind: str, **expected: Any) -> dict[str, Any]:
        """The next frame of type `kind` whose fields hold `expected`; others stay unread."""

        def matches(frame: dict[str, Any]) -> bool:
            return frame.get("type") == kind and all(frame.get(k) == v for k, v in expected.items())

        for frame in self._unread:
            if matches(frame):
                self._unread.remove(frame)
                return frame
        while True:
            frame = json.loads(await self.socket.recv())
            if matches(frame):
                return frame
            self._unread.append(frame)

    async def handoffs(self, count: int) -> list[dict[str, Any]]:
        return [(await self.next("handoff"))["handoff"] for _ in range(count)]

    async def rest(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame left unread and every frame arriving within `seconds`."""
        frames, self._unread = self._unread, []
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                frames.append(json.loads(await asyncio.wait_for(self.socket.recv(), left)))
            except TimeoutError:
                break
        return frames

    async def closed(self) -> tuple[int, str]:
        """The close code and reason, once the gateway closes the socket."""
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await self.socket.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason


@asynccontextmanager
async def agent_socket(
    address: str,
    token: str | None,
    *,
    tenant: str = "demo",
    via: str = "header",
) -> AsyncIterator[AgentClient]:
    """A connected agent, authenticated through the header or the subprotocol."""
    headers = {"Authorization": f"Bearer {token}"} if token and via == "header" else {}
    protocols = [Subprotocol(SUBPROTOCOL)]
    if token and via == "subprotocol":
        protocols.append(Subprotocol(f"bearer.{token}"))
    async with connect(
        f"ws://{address}{HANDOFF.format(tenant=tenant)}",
        additional_headers=headers,
        subprotocols=protocols,
        proxy=None,
    ) as socket:
        yield AgentClient(socket)


async def problem(agent: AgentClient, correlation_id: str | None = None) -> dict[str, Any]:
    """The problem document of the next error frame (for `correlation_id`, when given)."""
    expected = {"correlationId": correlation_id} if correlation_id else {}
    frame = await agent.next("error", **expected)
    assert frame["problem"]["correlationId"] == frame["correlationId"]
    body: dict[str, Any] = frame["problem"]
    return body


def token_of(api: PublicApi, **claims: str) -> str:
    return api.headers(**claims)["Authorization"].removeprefix("Bearer ")


async def until(condition: Callable[[], bool]) -> None:
    """Wait (within the test's timeout) until `condition` holds."""
    while not condition():
        await asyncio.sleep(0.01)


def hub_of(mesh: InProcessMesh) -> HandoffHub:
    server = mesh.servers["orchestrator"]
    assert isinstance(server, OrchestratorServer) and server.handoff_hub is not None
    return server.handoff_hub


async def say(
    api: PublicApi, session: str, text: str, corr: str, user: str = "user-c"
) -> dict[str, Any]:
    """One customer turn through the public API."""
    body = {
        "tenantId": "demo",
        "sessionId": session,
        "correlationId": corr,
        "channel": "web",
        "input": {"type": "text", "text": text},
    }
    reply = await api.client.post(PROCESS, json=body, headers=api.headers(subject=user))
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def transcript(mesh: InProcessMesh, session: str) -> list[tuple[int, str]]:
    """(role, text) of every turn of `session`, read from the context service."""
    clients = mesh.clients("gateway")
    try:
        with correlation.bound(correlation.CallContext(correlation_id="read", tenant_id="demo")):
            found = await clients.context.GetSession(
                context_pb.GetSessionRequest(session_id=session, include_transcript=True)
            )
    finally:
        await clients.close()
    return [(turn.role, turn.text) for turn in found.transcript]


@pytest.fixture
async def address(public_api: PublicApi) -> AsyncIterator[str]:
    async with served(public_api.app) as bound:
        yield bound


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["header", "subprotocol"])
@pytest.mark.parametrize(
    ("role", "tenant"), [("agent", "demo"), ("tenant-admin", "demo"), ("platform-admin", "ops")]
)
async def test_an_agent_connects_with_a_header_or_a_subprotocol_token(
    public_api: PublicApi, address: str, via: str, role: str, tenant: str
) -> None:
    token = token_of(public_api, role=role, tenant=tenant, subject="agent-ana")
    async with agent_socket(address, token, via=via) as agent:
        assert agent.socket.subprotocol == SUBPROTOCOL, "the token is never echoed"
        ready = await agent.next("ready")
        assert ready == {"type": "ready", "tenantId": "demo", "agentId": "agent-ana"}


async def _refusal(address: str, token: str | None, **options: Any) -> tuple[int, str]:
    async with agent_socket(address, token, **options) as agent:
        with pytest.raises(ConnectionClosed) as closed:
            await agent.socket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"role": "user"}, "Forbidden: this route needs the role agent or tenant-admin"),
        ({"role": "agent", "tenant": "acme"}, "Tenant mismatch"),
    ],
)
async def test_a_token_without_the_role_or_for_another_tenant_is_closed_with_1008(
    public_api: PublicApi, address: str, claims: dict[str, str], reason: str
) -> None:
    code, said = await _refusal(address, token_of(public_api, **claims))
    assert code == 1008 and said.startswith(reason)


@pytest.mark.parametrize("token", [None, "not-a-jwt"])
async def test_a_missing_or_garbled_token_is_closed_with_1008(
    address: str, token: str | None
) -> None:
    code, reason = await _refusal(address, token)
    assert code == 1008 and reason.startswith("Unauthorized")


async def test_a_token_in_the_query_string_is_not_accepted(
    public_api: PublicApi, address: str
) -> None:
    token = token_of(public_api, role="agent")
    uri = f"ws://{address}{HANDOFF.format(tenant='demo')}?access_token={token}"
    async with connect(uri, proxy=None) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_malformed_tenant_is_closed_with_1008(public_api: PublicApi, address: str) -> None:
    token = token_of(public_api, role="platform-admin")
    code, reason = await _refusal(address, token, tenant="bad%20tenant")
    assert code == 1008 and "tenant" in reason


async def test_a_plain_request_to_the_socket_is_426(public_api: PublicApi) -> None:
    reply = await public_api.client.get(HANDOFF.format(tenant="demo"))
    assert reply.status_code == 426
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["Upgrade"] == "websocket"
    assert HANDOFF.replace("{tenant}", "{tenantId}") in public_api.app.openapi()["paths"]


# --- hand-overs, replies and acknowledgements ----------------------------------------------------


async def test_the_agent_gets_the_hand_over_replies_into_the_session_and_acknowledges(
    public_api: PublicApi, mesh: InProcessMesh, address: str
) -> None:
    hub = hub_of(mesh)
    first = await say(public_api, "s-ws-1", "Quiero comprar la zapatilla Kobe", "corr-ws-1")
    escalated = await say(public_api, "s-ws-1", "quiero hablar con una persona", "corr-ws-2")
    token = token_of(public_api, role="agent", subject="agent-ana")
    async with agent_socket(address, token) as agent:
        handoffs = await agent.handoffs(2)
        assert {h["kind"] for h in handoffs} == {"handoff", "ticket"}
        assert {h["eventId"] for h in handoffs} == {a["actionId"] for a in escalated["actions"]}
        for handoff in handoffs:
            assert handoff["sessionId"] == "s-ws-1" and handoff["tenantId"] == "demo"
            assert handoff["user"] == {"userId": "user-c"}
            assert handoff["reason"] == "customer_request" and handoff["summary"]
            assert handoff["entities"]["product"]
            assert handoff["transcript"] == [
                {"role": "user", "text": "Quiero comprar la zapatilla Kobe"},
                {"role": "agent", "text": first["responseText"]},
                {"role": "user", "text": "quiero hablar con una persona"},
                {"role": "agent", "text": escalated["responseText"]},
            ]
            assert handoff["createdAt"] and handoff["correlationId"] == "corr-ws-2"

        await agent.send(
            {
                "type": "reply",
                "sessionId": "s-ws-1",
                "text": "Hola, soy Ana. ¿Qué talla necesitas?",
                "correlationId": "corr-ana-1",
            }
        )
        ack = await agent.next("ack", correlationId="corr-ana-1")
        assert ack["for"] == "reply"
        assert ack["turn"]["role"] == "human" and ack["turn"]["sessionId"] == "s-ws-1"
        assert ack["turn"]["text"] == "Hola, soy Ana. ¿Qué talla necesitas?"

        for handoff in handoffs:
            await agent.send({"type": "ack", "eventId": handoff["eventId"]})
            done = await agent.next("ack", eventId=handoff["eventId"])
            assert done["acknowledged"] is True and done["for"] == "ack"
        assert hub.agents("demo") == 1
    await until(lambda: hub.agents("demo") == 0)
    assert hub.pending("demo") == 0, "acknowledged: never delivered again"
    assert (await transcript(mesh, "s-ws-1"))[-1] == (3, "Hola, soy Ana. ¿Qué talla necesitas?")


async def test_a_retried_reply_is_stored_once(
    public_api: PublicApi, mesh: InProcessMesh, address: str
) -> None:
    await say(public_api, "s-ws-retry", "quiero hablar con una persona", "corr-r-1")
    token = token_of(public_api, role="agent", subject="agent-ana")
    reply = {
        "type": "reply",
        "sessionId": "s-ws-retry",
        "text": "Aquí estoy",
        "correlationId": "r1",
    }
    async with agent_socket(address, token) as agent:
        await agent.send(reply)
        first = await agent.next("ack", correlationId="r1")
        await agent.send(reply)
        again = await agent.next("ack", correlationId="r1")
    assert first["turn"]["turnId"] == again["turn"]["turnId"]
    assert [role for role, _ in await transcript(mesh, "s-ws-retry")] == [1, 2, 3]


async def test_bad_messages_get_error_frames_and_the_socket_stays_open(
    public_api: PublicApi, address: str
) -> None:
    await say(public_api, "s-ws-bad", "quiero hablar con una persona", "corr-b-1")
    limit = public_api.settings.max_ws_message_bytes
    token = token_of(public_api, role="agent")
    async with agent_socket(address, token) as agent:
        await agent.next("ready")
        await agent.socket.send("{not json")
        assert (await problem(agent))["detail"] == "the message is not valid JSON"
        await agent.socket.send(b'{"type": "ack"}')
        assert "binary" in (await problem(agent))["detail"]
        await agent.send({"type": "reply", "sessionId": "s-ws-bad", "text": "x" * (limit + 1)})
        too_large = await problem(agent)
        assert too_large["status"] == 413 and str(limit) in too_large["detail"]
        await agent.send({"type": "dance", "correlationId": "c-dance"})
        unknown = await problem(agent, "c-dance")
        assert unknown["status"] == 400 and unknown["type"] == "about:blank"
        await agent.send({"type": "reply", "sessionId": "has space", "correlationId": "c-2"})
        invalid = await problem(agent, "c-2")
        assert {e["field"] for e in invalid["errors"]} >= {"reply.sessionId", "reply.text"}

        await agent.send({"type": "reply", "sessionId": "s-nobody", "text": "¿Hola?"})
        missing = await problem(agent)
        assert missing["status"] == 404 and missing["reason"] == "SESSION_NOT_FOUND"
        bad_action = {"type": "refund_everything", "params": {}}
        await agent.send(
            {"type": "reply", "sessionId": "s-ws-bad", "text": "Hecho", "actions": [bad_action]}
        )
        rejected = await problem(agent)
        assert rejected["status"] == 400 and rejected["errors"][0]["field"] == "actions[0]"

        await agent.send({"type": "reply", "sessionId": "s-ws-bad", "text": "Sigo aquí"})
        assert (await agent.next("ack"))["turn"]["text"] == "Sigo aquí", "still open"


async def test_a_frame_far_over_the_limit_closes_the_socket_before_it_is_buffered(
    public_api: PublicApi, address: str
) -> None:
    limit = public_api.settings.max_ws_message_bytes
    token = token_of(public_api, role="agent")
    async with agent_socket(address, token) as agent:
        await agent.next("ready")
        await agent.send({"type": "reply", "sessionId": "s-ws-huge", "text": "x" * (3 * limit)})
        with pytest.raises(ConnectionClosed) as closed:
            await agent.socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_only_the_agent_holding_a_hand_over_acknowledges_it(
    public_api: PublicApi, address: str
) -> None:
    await say(public_api, "s-ws-own", "quiero hablar con una persona", "corr-own-1")
    ana_token = token_of(public_api, role="agent", subject="agent-ana")
    async with agent_socket(address, ana_token) as ana:
        held = [h["eventId"] for h in await ana.handoffs(2)]
        bob_token = token_of(public_api, role="agent", subject="agent-bob")
        async with agent_socket(address, bob_token) as bob:
            await bob.next("ready")
            await bob.send({"type": "ack", "eventId": held[0], "correlationId": "bob-ack"})
            refused = await problem(bob, "bob-ack")
        await ana.send({"type": "ack", "eventId": held[0]})
        done = await ana.next("ack", eventId=held[0])
    assert refused["status"] == 400 and refused["reason"] == "HANDOFF_HELD_ELSEWHERE"
    assert done["acknowledged"] is True, "still ana's to acknowledge"


async def test_another_reply_with_a_used_correlation_id_is_refused(
    public_api: PublicApi, mesh: InProcessMesh, address: str
) -> None:
    await say(public_api, "s-ws-cid", "quiero hablar con una persona", "corr-cid-1")
    ana_reply = {"type": "reply", "sessionId": "s-ws-cid", "text": "Soy Ana", "correlationId": "c"}
    async with agent_socket(address, token_of(public_api, role="agent", subject="ana")) as ana:
        await ana.send(ana_reply)
        stored = await ana.next("ack", correlationId="c")
    async with agent_socket(address, token_of(public_api, role="agent", subject="bob")) as bob:
        await bob.send(ana_reply | {"text": "Soy Bob, te reembolso"})
        refused = await problem(bob, "c")
        await bob.send(ana_reply)  # the same reply under ana's id, by bob: another reply too
        also_refused = await problem(bob, "c")
    async with agent_socket(address, token_of(public_api, role="agent", subject="ana")) as ana:
        await ana.send(ana_reply)
        retried = await ana.next("ack", correlationId="c")
    assert retried["turn"] == stored["turn"], "a retry is idempotent"
    for problem_body in (refused, also_refused):
        assert problem_body["status"] == 409 and problem_body["reason"] == "IDEMPOTENCY_KEY_REUSED"
    humans = [text for role, text in await transcript(mesh, "s-ws-cid") if role == 3]
    assert humans == ["Soy Ana"]


async def test_an_erased_users_hand_overs_are_not_delivered(
    public_api: PublicApi, mesh: InProcessMesh, address: str
) -> None:
    hub = hub_of(mesh)
    await say(public_api, "s-ws-erased", "quiero hablar con una persona", "c-er-1", user="u-er")
    await until(lambda: hub.pending("demo") == 2)
    admin = public_api.headers(role="tenant-admin", subject="admin")
    erased = await public_api.client.delete("/v2/tenants/demo/users/u-er", headers=admin)
    assert erased.status_code == 200, erased.text
    kept = await say(public_api, "s-ws-kept", "quiero hablar con una persona", "c-er-2")
    async with agent_socket(address, token_of(public_api, role="agent")) as agent:
        got = await agent.handoffs(2)
        rest = [f for f in await agent.rest(0.3) if f["type"] == "handoff"]
    assert {h["eventId"] for h in got} == {a["actionId"] for a in kept["actions"]}
    assert rest == [] and {h["sessionId"] for h in got} == {"s-ws-kept"}


async def test_a_deeply_nested_message_gets_an_error_frame_and_the_socket_stays_open(
    public_api: PublicApi, address: str
) -> None:
    await say(public_api, "s-ws-deep", "quiero hablar con una persona", "corr-deep-1")
    async with agent_socket(address, token_of(public_api, role="agent")) as agent:
        await agent.next("ready")
        await agent.socket.send("[" * 30000)
        unparsable = await problem(agent)
        await agent.socket.send('{"type": "ack", "x": ' + "[" * 30000 + "]" * 30000 + "}")
        valid_but_deep = await problem(agent)
        await agent.send({"type": "reply", "sessionId": "s-ws-deep", "text": "Sigo aquí"})
        still = await agent.next("ack")
    for body in (unparsable, valid_but_deep):
        assert body["status"] == 400 and body["detail"] == "the message is nested too deeply"
    assert still["turn"]["text"] == "Sigo aquí"


async def test_a_disconnect_ends_the_watch_and_the_next_agent_gets_what_was_unacknowledged(
    public_api: PublicApi, mesh: InProcessMesh, address: str
) -> None:
    hub = hub_of(mesh)
    await say(public_api, "s-ws-drop", "quiero hablar con una persona", "corr-d-1")
    token = token_of(public_api, role="agent", subject="agent-1")
    async with agent_socket(address, token) as first:
        seen = await first.handoffs(2)
        await first.send({"type": "ack", "eventId": seen[0]["eventId"]})
        await first.next("ack", eventId=seen[0]["eventId"])
        assert hub.agents("demo") == 1
    # the socket closed with seen[1] unacknowledged: the watch ends, the event is queued again
    await until(lambda: hub.agents("demo") == 0 and hub.pending("demo") == 1)
    async with agent_socket(address, token_of(public_api, role="agent")) as second:
        again = (await second.handoffs(1))[0]
    assert again["eventId"] == seen[1]["eventId"]


async def test_two_agents_never_get_the_same_hand_over(
    public_api: PublicApi, mesh: InProcessMesh, address: str
) -> None:
    hub = hub_of(mesh)
    token = token_of(public_api, role="agent")
    async with agent_socket(address, token) as one, agent_socket(address, token) as two:
        await one.next("ready")
        await two.next("ready")
        escalated = await say(public_api, "s-ws-two", "quiero hablar con una persona", "c-t-1")
        got: list[str] = []

        async def collect(agent: AgentClient) -> None:
            while True:
                got.append((await agent.next("handoff"))["handoff"]["eventId"])

        readers = [asyncio.create_task(collect(agent)) for agent in (one, two)]
        await until(lambda: len(got) >= 2)
        for reader in readers:
            reader.cancel()
        assert hub.pending("demo") == 0
    assert sorted(got) == sorted(a["actionId"] for a in escalated["actions"])


async def _acknowledged_as_they_come(agent: AgentClient, wanted: set[str]) -> list[str]:
    """Acknowledge each hand-over as it arrives, until every id of `wanted` came; the ids in
    the order they came (a repeat included)."""
    got: list[str] = []
    while not wanted <= set(got):
        event_id = (await agent.next("handoff"))["handoff"]["eventId"]
        got.append(event_id)
        await agent.send({"type": "ack", "eventId": event_id, "correlationId": f"ack-{event_id}"})
    return got


def _expired_watch(caplog: pytest.LogCaptureFixture) -> Callable[[], bool]:
    def expired() -> bool:  # the orchestrator logs a call when it ends
        return any(str(getattr(r, "rpc", "")).endswith("/WatchHandoffs") for r in caplog.records)

    return expired


async def test_the_socket_watches_again_when_a_watch_reaches_its_deadline(
    mesh: InProcessMesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        public_api_over(mesh, handoff_watch_seconds=0.2) as api,
        served(api.app) as address,
        agent_socket(address, token_of(api, role="agent")) as agent,
    ):
        await agent.next("ready")
        await until(_expired_watch(caplog))
        escalated = await say(api, "s-ws-again", "quiero hablar con una persona", "c-again")
        wanted = {a["actionId"] for a in escalated["actions"]}
        got = await _acknowledged_as_they_come(agent, wanted)
        rest = await agent.rest(1.0)  # five more watch periods
    assert sorted(got) == sorted(wanted), "each hand-over once"
    acks = [f for f in rest if f["type"] == "ack"]
    assert {f["eventId"] for f in acks} == wanted and all(f["acknowledged"] for f in acks)
    assert [f for f in rest if f["type"] != "ack"] == [], "seamless: no ready, error or repeat"


async def test_a_hand_over_in_flight_at_a_watch_deadline_stays_with_its_socket(
    mesh: InProcessMesh, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's reproduction: the second hand-over of an escalation comes more than a
    watch period after the first, which ana's socket has and has not acknowledged. Her
    re-watches must neither send the first again nor let bob's watch take it; the second goes
    to one of them, once."""
    caplog.set_level(logging.INFO)
    original = HandoffHub.offer
    offers = 0

    async def slow_second_offer(self: HandoffHub, event: HandoffEvent) -> bool:
        nonlocal offers
        offers += 1
        if offers == 2:
            await asyncio.sleep(0.5)  # more than two watch periods (0.2 s)
        return await original(self, event)

    monkeypatch.setattr(HandoffHub, "offer", slow_second_offer)
    async with (
        public_api_over(mesh, handoff_watch_seconds=0.2) as api,
        served(api.app) as address,
        agent_socket(address, token_of(api, role="agent", subject="agent-ana")) as ana,
    ):
        await ana.next("ready")
        await until(_expired_watch(caplog))
        escalated = await say(api, "s-ws-slow", "quiero hablar con una persona", "c-slow")
        first = (await ana.next("handoff"))["handoff"]["eventId"]
        async with agent_socket(address, token_of(api, role="agent", subject="agent-bob")) as bob:
            await bob.next("ready")
            # the second comes to one of them; more re-watches of both sockets meanwhile
            anas, bobs = await asyncio.gather(ana.rest(1.5), bob.rest(1.5))
    later = [f["handoff"]["eventId"] for f in anas + bobs if f["type"] == "handoff"]
    ids = {a["actionId"] for a in escalated["actions"]}
    assert first in ids and later == list(ids - {first}), "each once, to one socket"
    assert first not in [f["handoff"]["eventId"] for f in bobs if f["type"] == "handoff"]


# --- token expiry, limits --------------------------------------------------------------------


async def test_the_socket_closes_when_the_token_expires(mesh: InProcessMesh) -> None:
    async with public_api_over(mesh, jwt_leeway_seconds=0) as api, served(api.app) as address:
        token = issue_token(api.settings, tenant_id="demo", role="agent", subject="ag", ttl=2)
        async with agent_socket(address, token) as agent:
            await agent.next("ready")
            started = time.monotonic()
            code, reason = await agent.closed()
    assert (code, reason) == (1008, "Unauthorized: the token has expired")
    assert time.monotonic() - started < 5.0, "when it expires, not later"


@pytest.fixture
def no_expiry_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket's expiry timer never fires: the other checks must hold on their own."""

    async def never(self: AgentConnection) -> None:
        await asyncio.Future()

    monkeypatch.setattr(AgentConnection, "_expire", never)


@pytest.mark.usefixtures("no_expiry_timer")
async def test_a_message_after_the_token_expired_closes_the_socket_and_does_nothing(
    mesh: InProcessMesh,
) -> None:
    async with public_api_over(mesh, jwt_leeway_seconds=0) as api, served(api.app) as address:
        await say(api, "s-ws-late", "quiero hablar con una persona", "c-late-1")
        before = await transcript(mesh, "s-ws-late")
        token = issue_token(api.settings, tenant_id="demo", role="agent", subject="ag", ttl=1)
        async with agent_socket(address, token) as agent:
            await agent.next("ready")
            await asyncio.sleep(1.5)
            reply = {
                "type": "reply",
                "sessionId": "s-ws-late",
                "text": "sigo",
                "correlationId": "l",
            }
            await agent.send(reply)
            code, reason = await agent.closed()
    assert (code, reason) == (1008, "Unauthorized: the token has expired")
    assert await transcript(mesh, "s-ws-late") == before, "the reply was not stored"


@pytest.mark.usefixtures("no_expiry_timer")
async def test_the_socket_does_not_watch_again_with_an_expired_token(mesh: InProcessMesh) -> None:
    async with (
        public_api_over(mesh, jwt_leeway_seconds=0, handoff_watch_seconds=0.2) as api,
        served(api.app) as address,
    ):
        token = issue_token(api.settings, tenant_id="demo", role="agent", subject="ag", ttl=1)
        async with agent_socket(address, token) as agent:
            await agent.next("ready")
            code, reason = await agent.closed()
    assert (code, reason) == (1008, "Unauthorized: the token has expired")


async def test_replies_count_against_the_rate_limit_and_a_refusal_leaves_the_socket_open(
    mesh: InProcessMesh,
) -> None:
    async with (
        public_api_over(mesh, rate_limit_client_per_minute=3) as api,
        served(api.app) as address,
    ):
        await say(api, "s-ws-rate", "quiero hablar con una persona", "c-rate-1")
        async with agent_socket(address, token_of(api, role="agent", subject="ag")) as agent:
            handoffs = await agent.handoffs(2)  # the socket counted once
            for n in (1, 2):
                reply = {"type": "reply", "sessionId": "s-ws-rate", "text": f"{n}"}
                await agent.send(reply | {"correlationId": f"r-{n}"})
                await agent.next("ack", correlationId=f"r-{n}")
            await agent.send(reply | {"text": "3", "correlationId": "r-3"})
            refused = await problem(agent, "r-3")
            await agent.send({"type": "ack", "eventId": handoffs[0]["eventId"]})
            acked = await agent.next("ack", eventId=handoffs[0]["eventId"])
    assert refused["status"] == 429 and refused["title"] == "Too Many Requests"
    assert refused["retryAfter"] >= 1
    assert acked["acknowledged"] is True, "still open"
    texts = [text for role, text in await transcript(mesh, "s-ws-rate") if role == 3]
    assert texts == ["1", "2"]


async def test_opening_a_socket_counts_against_the_rate_limit(mesh: InProcessMesh) -> None:
    async with (
        public_api_over(mesh, rate_limit_client_per_minute=1) as api,
        served(api.app) as address,
    ):
        token = token_of(api, role="agent", subject="ag")
        async with agent_socket(address, token) as first:
            await first.next("ready")
            code, reason = await _refusal(address, token)
    assert code == 1008 and reason.startswith("Too Many Requests")


async def test_an_agent_keeps_a_limited_number_of_sockets(
    public_api: PublicApi, address: str
) -> None:
    token = token_of(public_api, role="agent", subject="agent-many")
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(agent_socket(address, token))
            for _ in range(public_api.settings.max_handoff_sockets_per_agent)
        ]
        for agent in sockets:
            await agent.next("ready")
        code, reason = await _refusal(address, token)
        other = token_of(public_api, role="agent", subject="agent-other")
        async with agent_socket(address, other) as someone_else:
            await someone_else.next("ready")
        await sockets[0].socket.close()
        async with agent_socket(address, token) as again:
            assert (await again.next("ready"))["agentId"] == "agent-many", "one was freed"
    assert code == 1008 and reason.startswith("Too many sockets")


# --- the orchestrator cannot be watched ---------------------------------------------------------


async def test_a_replica_without_hand_overs_gets_an_error_frame_and_1011(state_dir: Path) -> None:
    servicer = OrchestratorServicer(None, None, None)  # type: ignore[arg-type]
    mesh = MeshSettings(state_dir=state_dir)
    async with running("orchestrator", mesh, [orchestrator_binding(servicer)]) as (_, addr):
        settings = GatewaySettings(state_dir=state_dir, orchestrator_addr=addr, jwt_secret="k" * 40)
        app = create_app(settings)
        async with app.router.lifespan_context(app), served(app) as address:
            api = PublicApi(httpx.AsyncClient(), app, settings)
            token = token_of(api, role="agent")
            async with agent_socket(address, token) as agent:
                error = await problem(agent)
                with pytest.raises(ConnectionClosed) as closed:
                    await agent.socket.recv()
            await api.client.aclose()
    assert error["status"] == 400 and error["reason"] == "HANDOFFS_NOT_HERE"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


class HeaderlessOrchestrator(OrchestratorServicer):
    """An orchestrator whose healthy watch sends no `x-handoff-watch` header (an older one, or
    a proxy that drops it): two hand-overs, then the stream stays open."""

    def __init__(self) -> None:
        super().__init__(None, None, None)  # type: ignore[arg-type]

    async def WatchHandoffs(
        self, request: orchestrator_pb.WatchHandoffsRequest, context: Any
    ) -> AsyncIterator[orchestrator_pb.WatchHandoffsResponse]:
        for n in (1, 2):
            event = orchestrator_pb.HandoffEvent(
                event_id=f"e-{n}", tenant_id="demo", session_id=f"s-{n}", reason="r"
            )
            yield orchestrator_pb.WatchHandoffsResponse(handoff=event)
        await asyncio.Future()


async def test_a_watch_without_the_registration_header_loses_no_hand_over(
    state_dir: Path,
) -> None:
    mesh = MeshSettings(state_dir=state_dir)
    servicer = HeaderlessOrchestrator()
    async with running("orchestrator", mesh, [orchestrator_binding(servicer)]) as (_, addr):
        settings = GatewaySettings(state_dir=state_dir, orchestrator_addr=addr, jwt_secret="k" * 40)
        app = create_app(settings)
        async with app.router.lifespan_context(app), served(app) as address:
            api = PublicApi(httpx.AsyncClient(), app, settings)
            async with agent_socket(address, token_of(api, role="agent")) as agent:
                async with asyncio.timeout(10):
                    await agent.next("ready")
                    got = [h["eventId"] for h in await agent.handoffs(2)]
            await api.client.aclose()
    assert got == ["e-1", "e-2"]
