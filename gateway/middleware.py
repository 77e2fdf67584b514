"""The correlation middleware, as plain ASGI (Starlette's BaseHTTPMiddleware costs an extra task
and stream per request): every request gets a correlation id (the client's `X-Correlation-Id`
when well formed, else a new uuid) in `request.state.correlation_id`; responses echo the final
one (a route may adopt the body's) and each request is logged once, without customer text."""

import logging
import time
import uuid
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.mesh import correlation

log = logging.getLogger("metaagent.gateway")
CORRELATION_HEADER: Final = "X-Correlation-Id"
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
        supplied = ""
        for key, value in scope.get("headers", ()):
            if key == _HEADER_KEY:
                supplied = value.decode("latin-1")
                break
        state: dict[str, Any] = scope.setdefault("state", {})
        state["correlation_id"] = supplied if _valid_id(supplied) else str(uuid.uuid4())
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_KEY]
                headers.append((_HEADER_KEY, state["correlation_id"].encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            call = correlation.CallContext(
                correlation_id=state["correlation_id"],
                tenant_id=state.get("tenant_id", ""),
                session_id=state.get("session_id", ""),
            )
            with correlation.bound(call):
                log.info(
                    "http %s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "httpMethod": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "durationMs": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
