"""The exporters the settings choose, tested at the wire against local receivers: OTLP/HTTP
protobuf (`OTEL_EXPORTER_OTLP_ENDPOINT`) and Application Insights' ingestion API
(`APPLICATIONINSIGHTS_CONNECTION_STRING`); with neither, tracing stays off. A real Application
Insights resource is used when `METAAGENT_TEST_APPINSIGHTS_CONNECTION_STRING` is set."""

import os
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanKind,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.mesh import correlation, tracing
from services.mesh.settings import MeshSettings
from tools.telemetry_sink import Sink, telemetry_sink

pytestmark = pytest.mark.timeout(60)

APP_ID = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    # the Azure exporter's own usage reports: to Microsoft (statsbeat) and, at exit, to the
    # ingestion endpoint (SDK stats), which is gone by then
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    monkeypatch.setenv("APPLICATIONINSIGHTS_SDKSTATS_DISABLED", "true")
    with telemetry_sink() as running:
        yield running
    tracing.shutdown_tracing()


def one_span(name: str) -> None:
    call = correlation.CallContext(correlation_id="corr-exp-1", tenant_id="demo", session_id="s-1")
    span, _ = tracing.start_server_span(name, call, tracing.rpc_attributes("svc.v1.Svc", "Do"))
    tracing.end_rpc_span(span, grpc.StatusCode.UNAVAILABLE)


def test_nothing_is_recorded_or_exported_by_default() -> None:
    assert tracing.configure_tracing("test", MeshSettings()) is None
    assert not tracing.enabled()


def test_otlp_receives_the_spans_with_the_service_and_the_ids(sink: Sink) -> None:
    settings = MeshSettings(otlp_endpoint=sink.url)
    assert tracing.configure_tracing("context", settings) is not None
    one_span("svc.v1.Svc/Do")
    tracing.shutdown_tracing()  # flushes the batch
    [span] = sink.spans
    assert (span.service, span.name, span.kind) == ("metaagent-context", "svc.v1.Svc/Do", 2)
    assert span.attributes["metaagent.correlation_id"] == "corr-exp-1"
    assert span.attributes["metaagent.tenant_id"] == "demo"
    assert span.attributes["rpc.grpc.status_code"] == 14


def test_azure_monitor_receives_the_spans_as_requests(sink: Sink) -> None:
    connection = f"InstrumentationKey={APP_ID};IngestionEndpoint={sink.url}/"
    settings = MeshSettings(applicationinsights_connection_string=connection)
    assert tracing.configure_tracing("llm", settings) is not None
    one_span("svc.v1.Svc/Do")
    tracing.shutdown_tracing()
    requests = [e for e in sink.envelopes if e["data"]["baseType"] == "RequestData"]
    assert len(requests) == 1, sink.envelopes
    envelope = requests[0]
    assert envelope["iKey"] == APP_ID
    assert envelope["tags"]["ai.cloud.role"].endswith("metaagent-llm")
    data = envelope["data"]["baseData"]
    assert data["name"] == "svc.v1.Svc/Do" and data["success"] is False
    assert data["properties"]["metaagent.correlation_id"] == "corr-exp-1"


def test_both_exporters_at_once(sink: Sink) -> None:
    connection = f"InstrumentationKey={APP_ID};IngestionEndpoint={sink.url}/"
    settings = MeshSettings(
        otlp_endpoint=sink.url, applicationinsights_connection_string=connection
    )
    tracing.configure_tracing("gateway", settings)
    one_span("both")
    tracing.shutdown_tracing()
    assert [s.name for s in sink.spans] == ["both"]
    assert [e["data"]["baseData"]["name"] for e in sink.envelopes] == ["both"]


def test_a_client_span_is_the_child_of_the_current_one(sink: Sink) -> None:
    tracing.configure_tracing("orchestrator", MeshSettings(otlp_endpoint=sink.url))
    call = correlation.CallContext(correlation_id="corr-exp-2")
    server, _ = tracing.start_server_span("in", call, {})
    with tracing.active(server):
        assert tracing.current_span().is_recording()
        client = tracing.client_span("out", call, {})
        tracing.end_rpc_span(client, grpc.StatusCode.OK)
    tracing.end_rpc_span(server, grpc.StatusCode.OK)
    tracing.shutdown_tracing()
    spans = {s.name: s for s in sink.spans}
    assert spans["out"].parent_span_id == spans["in"].span_id
    assert spans["out"].kind == SpanKind.CLIENT.value + 1  # OTLP numbers kinds from 1


@pytest.mark.skipif(
    not os.environ.get("METAAGENT_TEST_APPINSIGHTS_CONNECTION_STRING"),
    reason="needs METAAGENT_TEST_APPINSIGHTS_CONNECTION_STRING (a real Application Insights)",
)
def test_a_real_application_insights_accepts_the_spans() -> None:
    connection = os.environ["METAAGENT_TEST_APPINSIGHTS_CONNECTION_STRING"]
    settings = MeshSettings(applicationinsights_connection_string=connection)
    provider = tracing.configure_tracing("test", settings)
    assert provider is not None
    one_span("metaagent.integration-test")
    assert provider.force_flush(30_000)
    tracing.shutdown_tracing()


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
    ],
)
def test_traceparents_are_read_and_written_as_the_w3c_propagator_does(traceparent: str) -> None:
    w3c = TraceContextTextMapPropagator()
    expected = get_current_span(w3c.extract({"traceparent": traceparent})).get_span_context()
    found = tracing._parent_of(traceparent)
    ours = get_current_span(found).get_span_context() if found is not None else None
    assert (ours if ours is not None else INVALID_SPAN_CONTEXT) == expected
    if expected.is_valid:
        carrier: dict[str, str] = {}
        w3c.inject(carrier, context=set_span_in_context(NonRecordingSpan(expected)))
        assert tracing.traceparent_of(NonRecordingSpan(expected)) == carrier["traceparent"]


def test_an_unsampled_trace_is_passed_on_without_spans(sink: Sink) -> None:
    tracing.configure_tracing("orchestrator", MeshSettings(otlp_endpoint=sink.url))
    assert tracing.sampled("") and tracing.sampled("00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert not tracing.sampled("00-" + "1" * 32 + "-" + "2" * 16 + "-00")
    assert not tracing.sampled("00-" + "1" * 32 + "-" + "2" * 16 + "-02")
    with tracing.untraced():
        current = tracing.current_span()
        assert not current.is_recording() and current.get_span_context().is_valid
        assert not tracing.sampled(tracing.traceparent_of(current))
    tracing.shutdown_tracing()
    assert sink.spans == []
