"""The correlation middleware, as plain ASGI (Starlette's BaseHTTPMiddleware costs an extra task
and stream per request): every request gets a correlation id (the client's `X-Correlation-Id`
when well formed, else a new uuid) in `request.state.correlation_id`; responses echo the final
one (a route may adopt the body's). Each request is logged once and timed into
`meta_agent_request_duration_seconds` under its route template, never its path (paths hold
user ids), without customer text. With tracing on each request is a SERVER span named
`METHOD route`, carrying the ids, the route and the status but not the URL: the FastAPI
instrumentation would record the path (user ids) and costs about a millisecond a request."""

import logging
import time
import uuid
from typing import Any, Final

from opentelemetry.trace import Span
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.mesh import correlation, metrics, tracing

log = logging.getLogger("metaagent.gateway")
CORRELATION_HEADER: Final = "X-Correlation-Id"
UNMATCHED: Final = "unmatched"
UNTRACED_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_HEADER_KEY: Final = CORRELATION_HEADER.lower().encode()


def _valid_id(value: str) -> bool:
    return bool(value) and correlation.ID_PATTERN.match(value) is not None


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        supplied = traceparent = ""
        for key, value in scope.get("headers", ()):
            if key == _HEADER_KEY and not supplied:
                supplied = value.decode("latin-1")
            elif key == b"traceparent" and not traceparent:
                traceparent = value.decode("latin-1")
        state: dict[str, Any] = scope.setdefault("state", {})
        state["correlation_id"] = supplied if _valid_id(supplied) else str(uuid.uuid4())
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        span = _request_span(scope, traceparent)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_KEY]
                headers.append((_HEADER_KEY, state["correlation_id"].encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if span is None:
                await self.app(scope, receive, send_with_id)
            else:
                with tracing.active(span):
                    await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            tenant_id, session_id = state.get("tenant_id", ""), state.get("session_id", "")
            route = getattr(scope.get("route"), "path", UNMATCHED)
            metrics.request_duration(
                scope["method"], route, str(status), metrics.tenant_label(tenant_id)
            ).observe(elapsed)
            call = correlation.CallContext(
                correlation_id=state["correlation_id"], tenant_id=tenant_id, session_id=session_id
            )
            if span is not None:
                tracing.end_http_span(span, scope["method"], route, status, call)
            with correlation.bound(call):
                log.info(
                    "http %s %s %s",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "httpMethod": scope["method"],
                        "route": route,
                        "status": status,
                        "durationMs": round(elapsed * 1000, 2),
                    },
                )


def _request_span(scope: Scope, traceparent: str) -> Span | None:
    """The request's SERVER span, child of the client's `traceparent` when it sent a valid one;
    None when tracing is off and for the probes and the scrape."""
    if not tracing.enabled() or scope["path"] in UNTRACED_PATHS:
        return None
    return tracing.start_http_span(scope["method"], traceparent)
