"""Local servers that speak the telemetry back ends' protocols, for testing exporters at the wire:
an OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf, what an OpenTelemetry Collector
accepts) and an Application Insights ingestion endpoint (`POST /v2.1/track`, JSON envelopes,
possibly gzip-compressed, what Azure Monitor's exporter sends). Each runs on a thread of its
own on a free loopback port and keeps what it received. The tests check the exporters against
it; the telemetry benchmark exports to it (bench/telemetry.py)."""

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]


@dataclass
class Sink:
    url: str
    spans: list[ReceivedSpan] = field(default_factory=list)
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _spans_of(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return found


@contextmanager
def telemetry_sink() -> Iterator[Sink]:
    """Both receivers on one port: `url` is the OTLP endpoint and the ingestion endpoint."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                spans = _spans_of(body)
                with sink.lock:
                    sink.spans.extend(spans)
                self._answer(
                    200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString()
                )
            elif self.path.startswith("/v2.1/track"):
                envelopes = json.loads(body)
                envelopes = envelopes if isinstance(envelopes, list) else [envelopes]
                with sink.lock:
                    sink.envelopes.extend(envelopes)
                accepted = {
                    "itemsReceived": len(envelopes),
                    "itemsAccepted": len(envelopes),
                    "errors": [],
                }
                self._answer(200, "application/json", json.dumps(accepted).encode())
            else:
                self._answer(404, "text/plain", b"not found")

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink = Sink(f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, name="telemetry-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
