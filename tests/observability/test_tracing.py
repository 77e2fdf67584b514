"""One turn, one trace: with an in-memory exporter, a process call through the real gateway and
the in-process mesh yields spans from the gateway and every service it reaches, all under one
trace id and carrying the correlation id; background loops make no traces; tracing off records
nothing."""

from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.mesh import correlation, tracing
from services.mesh.redis_client import redis_client
from services.mesh.settings import MeshSettings
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.public_api import PublicApi, public_api_over

pytestmark = pytest.mark.timeout(60)

PROCESS = "/v2/agents/meta-agent/process"
TEXT = "Quiero comprar la zapatilla Kobe, la dejé en el carrito."


def turn(session: str, correlation_id: str) -> dict[str, object]:
    return {
        "tenantId": "demo",
        "sessionId": session,
        "correlationId": correlation_id,
        "channel": "web",
        "input": {"type": "text", "text": TEXT},
    }


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    assert tracing.configure_tracing("test", MeshSettings(), exporter=found) is not None
    yield found
    tracing.shutdown_tracing()


@pytest.fixture
async def traced_api(
    exporter: InMemorySpanExporter, mesh: InProcessMesh
) -> AsyncIterator[PublicApi]:
    async with public_api_over(mesh) as api:
        exporter.clear()
        yield api


def components(spans: tuple[ReadableSpan, ...]) -> set[str]:
    return {
        str(s.attributes.get("metaagent.component"))
        for s in spans
        if s.attributes and s.kind == SpanKind.SERVER
    }


async def test_one_process_call_is_one_trace_across_every_service(
    traced_api: PublicApi, exporter: InMemorySpanExporter
) -> None:
    reply = await traced_api.client.post(
        PROCESS, json=turn("s-trace-1", "corr-trace-1"), headers=traced_api.headers()
    )
    assert reply.status_code == 200, reply.text
    finished = exporter.get_finished_spans()
    gateway = [s for s in finished if s.kind == SpanKind.SERVER and s.parent is None]
    assert len(gateway) == 1 and gateway[0].name.startswith("POST /v2/agents/meta-agent/process")
    assert gateway[0].attributes is not None
    assert gateway[0].attributes["metaagent.correlation_id"] == "corr-trace-1"
    assert gateway[0].attributes["metaagent.tenant_id"] == "demo"
    spans = tuple(s for s in finished if s.context.trace_id == gateway[0].context.trace_id)
    of_this_turn = {
        s.context.trace_id
        for s in finished
        if s.attributes and s.attributes.get("metaagent.correlation_id") == "corr-trace-1"
    }
    assert of_this_turn == {gateway[0].context.trace_id}, "one trace per turn"
    assert all(s.context.trace_id == gateway[0].context.trace_id for s in finished), (
        "nothing else traced: the relay's sweeps are background work"
    )
    assert components(spans) >= {"orchestrator", "context", "retrieval", "llm"}

    rpc_spans = [s for s in spans if s.attributes and s.attributes.get("rpc.system") == "grpc"]
    for span in rpc_spans:
        assert span.attributes is not None
        assert span.attributes["metaagent.correlation_id"] == "corr-trace-1", span.name
        assert span.attributes["metaagent.tenant_id"] == "demo", span.name
        assert span.attributes["metaagent.session_id"] == "s-trace-1", span.name
    by_id = {span.context.span_id: span for span in spans}
    for server in (s for s in rpc_spans if s.kind == SpanKind.SERVER):
        assert server.parent is not None
        client = by_id[server.parent.span_id]
        assert client.kind == SpanKind.CLIENT and client.name == server.name, (
            "every server span is the child of the client span that called it"
        )
    orchestrator = next(s for s in rpc_spans if s.name.endswith("OrchestratorService/Process"))
    assert orchestrator.kind == SpanKind.SERVER
    assert orchestrator.parent is not None
    calling = by_id[orchestrator.parent.span_id]
    assert calling.parent is not None and calling.parent.span_id == gateway[0].context.span_id
    assert all(TEXT not in str(span.attributes) for span in spans), "no customer text in spans"


async def test_two_calls_are_two_traces_and_a_client_traceparent_is_continued(
    traced_api: PublicApi, exporter: InMemorySpanExporter
) -> None:
    upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**traced_api.headers(), "traceparent": upstream}
    first = await traced_api.client.post(PROCESS, json=turn("s-trace-2", "c-2a"), headers=headers)
    second = await traced_api.client.post(
        PROCESS, json=turn("s-trace-2", "c-2b"), headers=traced_api.headers()
    )
    assert first.status_code == second.status_code == 200
    traces: dict[str, set[int]] = {}
    for span in exporter.get_finished_spans():
        assert span.attributes is not None
        key = str(span.attributes.get("metaagent.correlation_id", ""))
        if key:
            traces.setdefault(key, set()).add(span.context.trace_id)
    assert len(traces["c-2a"]) == len(traces["c-2b"]) == 1
    assert traces["c-2a"] == {0x4BF92F3577B34DA6A3CE929D0E0E4736}, "the caller's trace goes on"
    assert traces["c-2a"] != traces["c-2b"]


async def test_a_failed_rpc_marks_its_spans(
    traced_api: PublicApi, exporter: InMemorySpanExporter
) -> None:
    reply = await traced_api.client.get(
        "/v2/tenants/demo/sessions/s-never", headers=traced_api.headers(role="agent")
    )
    assert reply.status_code == 404
    spans = [s for s in exporter.get_finished_spans() if s.name.endswith("Service/GetSession")]
    assert {s.kind for s in spans} == {SpanKind.CLIENT, SpanKind.SERVER}
    assert all(s.attributes and s.attributes["rpc.grpc.status_code"] == 5 for s in spans)
    assert all(s.status.status_code != StatusCode.ERROR for s in spans), "NOT_FOUND is no fault"


async def test_tracing_off_records_nothing(public_api: PublicApi) -> None:
    assert not tracing.enabled()
    reply = await public_api.client.post(
        PROCESS, json=turn("s-trace-off", "c-off"), headers=public_api.headers()
    )
    assert reply.status_code == 200
    assert tracing.provider() is None


async def test_postgres_and_redis_calls_are_spans_of_the_turns_trace(
    exporter: InMemorySpanExporter, postgres_dsn: str, redis_url: str
) -> None:
    call = correlation.CallContext(correlation_id="c-drivers", tenant_id="demo")
    server, call = tracing.start_server_span("svc.v1.Svc/Do", call, {})
    with tracing.active(server):
        connection = await asyncpg.connect(postgres_dsn)
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()
        client = redis_client(redis_url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    tracing.end_rpc_span(server, grpc.StatusCode.OK)
    drivers = {
        str(s.attributes.get("db.system", s.attributes.get("db.system.name"))): s
        for s in exporter.get_finished_spans()
        if s.attributes
        and s.parent is not None
        and s.parent.span_id == server.get_span_context().span_id
    }
    assert {"postgresql", "redis"} <= drivers.keys()
    assert all(span.kind == SpanKind.CLIENT for span in drivers.values())


async def test_a_caller_that_does_not_sample_gets_no_spans_on_any_hop(
    traced_api: PublicApi, exporter: InMemorySpanExporter
) -> None:
    unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    headers = {**traced_api.headers(), "traceparent": unsampled}
    reply = await traced_api.client.post(PROCESS, json=turn("s-trace-u", "c-u"), headers=headers)
    assert reply.status_code == 200
    assert exporter.get_finished_spans() == ()
