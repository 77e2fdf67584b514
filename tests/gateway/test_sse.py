"""`POST /v2/agents/meta-agent/process` with `Accept: text/event-stream`: the reply as
server-sent events (deltas, then the final answer, or an error event midway), the first delta
on the wire before the final exists, and a client that leaves cancelling the orchestrator's
ProcessStream. The gateway runs under uvicorn (httpx's ASGI transport would buffer the body)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.streaming import wants_event_stream
from services.mesh import correlation
from services.mesh.errors import FieldViolation, invalid_argument, unavailable
from services.mesh.settings import MeshSettings
from services.orchestrator.escalation import NOTICE
from tests.gateway.test_handoff_ws import served
from tests.support.public_api import PublicApi
from tests.support.servers import orchestrator_binding, running

pytestmark = pytest.mark.timeout(60)

PATH = "/v2/agents/meta-agent/process"
STREAM = {"Accept": "text/event-stream"}
REQUEST = {
    "tenantId": "demo",
    "sessionId": "sess-sse",
    "correlationId": "corr-sse-1",
    "channel": "web",
    "input": {"type": "text", "text": "Quiero comprar la zapatilla Kobe, la dejé en el carrito."},
}

Script = Callable[[pb.ProcessRequest, Any], AsyncIterator[pb.ProcessStreamResponse]]


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) of a server-sent event stream, as they arrive."""
    name, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and name:
            yield name, json.loads(data)
            name, data = "", ""


async def all_events(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> list[tuple[str, Any]]:
    async with client.stream("POST", PATH, json=body, headers={**headers, **STREAM}) as reply:
        assert reply.status_code == 200, await reply.aread()
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["cache-control"] == "no-cache"
        return [event async for event in events(reply)]


def split(received: list[tuple[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The delta texts and the final answer; the final comes last, once."""
    assert [name for name, _ in received[:-1]] == ["delta"] * (len(received) - 1)
    assert received[-1][0] == "final"
    return [data["text"] for _, data in received[:-1]], received[-1][1]


# --- against the real mesh -----------------------------------------------------------------------


@pytest.fixture
async def mesh_client(public_api: PublicApi) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        served(public_api.app) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client,
    ):
        yield client


async def test_the_reply_streams_as_deltas_then_the_same_final_as_the_unary_answer(
    public_api: PublicApi, mesh_client: httpx.AsyncClient
) -> None:
    headers = public_api.headers(subject="user-s")
    deltas, final = split(await all_events(mesh_client, REQUEST, headers))
    assert len(deltas) > 3
    assert "".join(deltas) == final["responseText"] and "Kobe" in final["responseText"]
    assert final["intent"] == "checkout_flow" and final["correlationId"] == "corr-sse-1"
    unary = await public_api.client.post(
        PATH, json={**REQUEST, "correlationId": "corr-sse-2", "sessionId": "sess-unary"},
        headers=headers,
    )  # fmt: skip
    assert unary.headers["content-type"] == "application/json"
    assert final.keys() == unary.json().keys()


async def test_a_streamed_escalation_ends_with_the_hand_over_notice(
    public_api: PublicApi, mesh_client: httpx.AsyncClient
) -> None:
    headers = public_api.headers(subject="user-s")
    unclear = {**REQUEST, "sessionId": "sess-sse-unclear"}
    for n, text in enumerate(("zxqv blorp fnord", "qwerty plugh xyzzy")):
        body = {**unclear, "correlationId": f"corr-u-{n}", "input": {"type": "text", "text": text}}
        deltas, final = split(await all_events(mesh_client, body, headers))
    assert [a["type"] for a in final["actions"]] == ["create_ticket", "handoff_human"]
    assert "".join(deltas) == final["responseText"]
    assert final["responseText"].endswith(NOTICE["es"])


async def test_a_replayed_turn_streams_the_first_answer(
    public_api: PublicApi, mesh_client: httpx.AsyncClient
) -> None:
    headers = public_api.headers(subject="user-s")
    body = {**REQUEST, "sessionId": "sess-sse-replay", "correlationId": "corr-replay"}
    _, first = split(await all_events(mesh_client, body, headers))
    deltas, again = split(await all_events(mesh_client, body, headers))
    assert again == first and deltas == [first["responseText"]]


async def test_bad_input_is_an_ordinary_problem_before_any_event(
    public_api: PublicApi, mesh_client: httpx.AsyncClient
) -> None:
    headers = {**public_api.headers(), **STREAM}
    reply = await mesh_client.post(PATH, json={**REQUEST, "sessionId": "bad id"}, headers=headers)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/problem+json"
    other = await mesh_client.post(PATH, json={**REQUEST, "tenantId": "acme"}, headers=headers)
    assert other.status_code == 403


# --- against a scripted orchestrator -------------------------------------------------------------


@dataclass
class ScriptedStream(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
    script: Script | None = None
    calls: list[correlation.CallContext] = field(default_factory=list)

    async def ProcessStream(
        self, request: pb.ProcessStreamRequest, context: Any
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        self.calls.append(correlation.current())
        assert self.script is not None
        async for event in self.script(request.request, context):
            yield event


@dataclass
class Scripted:
    client: httpx.AsyncClient
    orchestrator: ScriptedStream
    headers: dict[str, str]


@pytest.fixture
async def scripted(state_dir: Path) -> AsyncIterator[Scripted]:
    orchestrator = ScriptedStream()
    mesh = MeshSettings(state_dir=state_dir)
    async with running("orchestrator", mesh, [orchestrator_binding(orchestrator)]) as (_, addr):
        settings = GatewaySettings(
            state_dir=state_dir, orchestrator_addr=addr, jwt_secret="k" * 40, grpc_retry_attempts=1
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            served(app) as address,
            httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client,
        ):
            api = PublicApi(client, app, settings)
            yield Scripted(client, orchestrator, {**api.headers(), **STREAM})


def _final(text: str) -> pb.ProcessStreamResponse:
    return pb.ProcessStreamResponse(
        final=pb.ProcessResponse(response_text=text, intent="greeting", confidence=0.9)
    )


async def test_the_first_delta_arrives_before_the_final_exists(scripted: Scripted) -> None:
    delivered = asyncio.Event()

    async def script(request: pb.ProcessRequest, context: Any) -> AsyncIterator[Any]:
        yield pb.ProcessStreamResponse(delta="Hola")
        await delivered.wait()  # the final is only made once the client has the delta
        yield pb.ProcessStreamResponse(delta=", ¿qué tal?")
        yield _final("Hola, ¿qué tal?")

    scripted.orchestrator.script = script
    received: list[tuple[str, Any]] = []
    async with scripted.client.stream("POST", PATH, json=REQUEST, headers=scripted.headers) as r:
        async for event in events(r):
            received.append(event)
            if len(received) == 1:
                assert event == ("delta", {"text": "Hola"})
                delivered.set()
    deltas, final = split(received)
    assert "".join(deltas) == final["responseText"] == "Hola, ¿qué tal?"
    call = scripted.orchestrator.calls[0]
    assert (call.correlation_id, call.tenant_id, call.session_id) == (
        "corr-sse-1",
        "demo",
        "sess-sse",
    )


async def test_a_client_that_leaves_cancels_the_orchestrators_stream(scripted: Scripted) -> None:
    cancelled = asyncio.Event()

    async def script(request: pb.ProcessRequest, context: Any) -> AsyncIterator[Any]:
        yield pb.ProcessStreamResponse(delta="Pensando")
        try:
            await asyncio.Event().wait()  # a slow model: nothing more comes
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield _final("never")

    scripted.orchestrator.script = script
    async with scripted.client.stream("POST", PATH, json=REQUEST, headers=scripted.headers) as r:
        async for event in events(r):
            assert event == ("delta", {"text": "Pensando"})
            break  # the customer closes the tab
    await cancelled.wait()


def _failing(error: Exception, before: list[pb.ProcessStreamResponse]) -> Script:
    async def script(request: pb.ProcessRequest, context: Any) -> AsyncIterator[Any]:
        for event in before:
            yield event
        raise error

    return script


async def test_a_failure_midway_is_an_error_event_instead_of_the_final(scripted: Scripted) -> None:
    scripted.orchestrator.script = _failing(
        unavailable("the model failed mid-answer", retry_after=2, reason="MODEL_FAILED"),
        [pb.ProcessStreamResponse(delta="Hola")],
    )
    received = await all_events(scripted.client, REQUEST, scripted.headers)
    assert [name for name, _ in received] == ["delta", "error"]
    problem = received[1][1]
    assert problem["status"] == 503 and problem["reason"] == "MODEL_FAILED"
    assert problem["correlationId"] == "corr-sse-1"


async def test_a_failure_before_any_event_is_a_plain_problem_response(scripted: Scripted) -> None:
    scripted.orchestrator.script = _failing(
        invalid_argument(FieldViolation("input.text", "is required")), []
    )
    reply = await scripted.client.post(PATH, json=REQUEST, headers=scripted.headers)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["errors"] == [{"field": "input.text", "detail": "is required"}]


async def test_a_stream_without_a_final_ends_with_an_error_event(scripted: Scripted) -> None:
    async def script(request: pb.ProcessRequest, context: Any) -> AsyncIterator[Any]:
        yield pb.ProcessStreamResponse(delta="Hola")

    scripted.orchestrator.script = script
    received = await all_events(scripted.client, REQUEST, scripted.headers)
    assert [name for name, _ in received] == ["delta", "error"]
    assert received[1][1]["status"] == 502


# --- negotiation and the contract ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        (None, False),
        ("application/json", False),
        ("*/*", False),
        ("text/event-stream", True),
        ("text/event-stream, application/json;q=0.5", True),
        ("application/json, text/event-stream;q=0.5", False),
        ("text/event-stream;q=0", False),
        ("text/event-stream;q=abc", False),
    ],
)
def test_the_accept_header_chooses_the_stream(accept: str | None, stream: bool) -> None:
    assert wants_event_stream(accept) is stream


def test_the_openapi_document_names_the_event_stream(public_api: PublicApi) -> None:
    responses = public_api.app.openapi()["paths"][PATH]["post"]["responses"]
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
