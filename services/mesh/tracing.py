"""Tracing: OpenTelemetry, set up once per process (README: Observability).

Nothing is exported by default, and then nothing is recorded either: the mesh only passes the
caller's W3C `traceparent` on, at no cost. `configure_tracing` turns recording on when
`OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over HTTP) or `APPLICATIONINSIGHTS_CONNECTION_STRING`
(Azure Monitor, extra `azure-monitor`) is set, or when a test hands it an exporter. Then every
RPC a server handles is a SERVER span and every RPC a component makes a CLIENT span (the
interceptor and the outbound channel make them: one place each, without the extra task per
call that grpc.aio's interceptors cost), the gateway's requests are spans of the FastAPI
instrumentation, and asyncpg and redis calls are spans of theirs. Spans carry the tenant,
session and correlation ids, never customer text.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from services.mesh.correlation import TRACEPARENT_PATTERN, CallContext
from services.mesh.errors import SERVER_FAULTS

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from services.mesh.settings import MeshSettings

log = logging.getLogger("metaagent.tracing")

INSTRUMENTATION = "metaagent"
FAULT_CODES = SERVER_FAULTS | {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
"""The codes that mark an RPC span an error: the server's faults and a hop it could not reach."""


class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()
    instrumentors: list[Any] = []


def enabled() -> bool:
    """Whether this process records spans."""
    return _State.provider is not None


def provider() -> TracerProvider | None:
    return _State.provider


def exporters_for(settings: MeshSettings) -> list[SpanExporter]:
    """The exporters the settings ask for: OTLP, Azure Monitor, both or none."""
    found: list[SpanExporter] = []
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        found.append(OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces"))
    if settings.applicationinsights_connection_string is not None:
        try:
            from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "APPLICATIONINSIGHTS_CONNECTION_STRING needs the 'azure-monitor' extra: "
                "pip install 'metaagent[azure-monitor]'"
            ) from error
        found.append(
            AzureMonitorTraceExporter(
                connection_string=settings.applicationinsights_connection_string.get_secret_value()
            )
        )
    return found


def configure_tracing(
    service: str, settings: MeshSettings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Record and export spans when the settings (or a test's `exporter`) say where to; else
    leave tracing off. Returns the provider, which `shutdown_tracing` flushes and closes."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporters = exporters_for(settings)
    if exporter is None and not exporters:
        return None
    shutdown_tracing()
    created = TracerProvider(
        resource=Resource.create(
            {
                "service.name": f"metaagent-{service}",
                "service.namespace": "metaagent",
                "service.instance.id": socket.gethostname(),
            }
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
    )
    if exporter is not None:
        created.add_span_processor(SimpleSpanProcessor(exporter))
    for chosen in exporters:
        created.add_span_processor(BatchSpanProcessor(chosen))
    _State.provider, _State.tracer = created, created.get_tracer(INSTRUMENTATION)
    _instrument_drivers(created)
    log.info("tracing on: %s", ", ".join(type(e).__name__ for e in exporters) or "test exporter")
    return created


def _instrument_drivers(created: TracerProvider) -> None:
    """asyncpg and redis calls as spans, where the instrumentations are installed."""
    for module, name in (
        ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
        ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
    ):
        try:
            instrumentor = getattr(__import__(module, fromlist=[name]), name)()
        except ImportError:
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=created)
        _State.instrumentors.append(instrumentor)


def shutdown_tracing() -> None:
    """Flush and close the provider and undo the driver instrumentations; tracing is off
    afterwards."""
    created, _State.provider, _State.tracer = _State.provider, None, trace.NoOpTracer()
    while _State.instrumentors:
        _State.instrumentors.pop().uninstrument()
    if created is not None:
        created.shutdown()


def call_attributes(call: CallContext) -> dict[str, str]:
    attributes = {"metaagent.correlation_id": call.correlation_id}
    if call.tenant_id:
        attributes["metaagent.tenant_id"] = call.tenant_id
    if call.session_id:
        attributes["metaagent.session_id"] = call.session_id
    return attributes


def rpc_attributes(service: str, method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def start_server_span(
    name: str, call: CallContext, attributes: Mapping[str, Any]
) -> tuple[Span, CallContext]:
    """A SERVER span, child of the caller's `traceparent`, and the call context whose
    `traceparent` names it (what outbound calls pass on). Make it current with `active` and
    end it with `end_rpc_span`."""
    span = _State.tracer.start_span(
        name,
        context=_parent_of(call.traceparent),
        kind=SpanKind.SERVER,
        attributes={**attributes, **call_attributes(call)},
    )
    return span, replace(call, traceparent=traceparent_of(span))


def active(span: Span) -> AbstractContextManager[Span]:
    """`span` as the current span for the block, left open at its end."""
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


@contextmanager
def untraced() -> Iterator[None]:
    """Calls made in the block carry an unsampled `traceparent`, so no hop records them
    (background loops: a trace per outbox sweep would bury the turns)."""
    if not enabled():
        yield
        return
    ids = RandomIdGenerator()
    unsampled = SpanContext(
        ids.generate_trace_id(), ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(0)
    )
    with trace.use_span(NonRecordingSpan(unsampled)):
        yield


def current_span() -> Span:
    return trace.get_current_span()


def sampled(traceparent: str) -> bool:
    """False when a (validated) `traceparent` says its trace is not sampled: the hop then makes
    no span at all instead of a non-recording one (the sampler would drop it anyway)."""
    return not traceparent or int(traceparent[-2:], 16) & 1 == 1


def start_http_span(method: str, traceparent: str) -> Span:
    """The SERVER span of an HTTP request (named `method` until `end_http_span` knows the
    route), child of the client's `traceparent` when it is well formed."""
    if traceparent and not TRACEPARENT_PATTERN.match(traceparent):
        traceparent = ""
    return _State.tracer.start_span(
        method,
        context=_parent_of(traceparent),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
    )


def end_http_span(span: Span, method: str, route: str, status: int, call: CallContext) -> None:
    """Name the span after its route, record the status and the ids, and end it; a 5xx marks
    it an error."""
    span.update_name(f"{method} {route}")
    span.set_attributes(
        {"http.route": route, "http.response.status_code": status, **call_attributes(call)}
    )
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(status)))
    span.end()


def client_span(name: str, call: CallContext, attributes: Mapping[str, Any]) -> Span:
    """A CLIENT span, child of the current span, started now; the caller ends it."""
    return _State.tracer.start_span(
        name, kind=SpanKind.CLIENT, attributes={**attributes, **call_attributes(call)}
    )


def traceparent_of(span: Span) -> str:
    """The W3C `traceparent` naming `span` (what the propagator writes, without its detour
    through a context and a carrier)."""
    ids = span.get_span_context()
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}"


def _parent_of(traceparent: str) -> Context | None:
    """The remote parent a validated `traceparent` names (the interceptor checked its shape);
    None for none or the all-zero ids the standard calls invalid."""
    if not traceparent:
        return None
    version, trace_id, span_id, flags = traceparent.split("-")
    ids = SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )
    if version == "ff" or not ids.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(ids))


def end_rpc_span(span: Span, code: grpc.StatusCode) -> None:
    """Record the status code on an RPC span and end it; server faults mark it an error."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in FAULT_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def current_ids() -> tuple[str, str] | None:
    """The current span's (trace id, span id) in hex, when there is a valid one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
