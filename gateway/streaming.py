"""Server-sent events for a streamed turn (`Accept: text/event-stream` on the process route).

The events, each a JSON `data` line:

    event: delta    data: {"text": "..."}      the next piece of responseText
    event: final    data: <ProcessResponse>     the same JSON as the unary answer; the last event
    event: error    data: <problem+json>        instead of the final, when the turn fails midway

The deltas add up to the final `responseText`. A failure before the first event is not an event:
the route answers with the usual problem response and status. A client that goes away cancels
the orchestrator's ProcessStream (and so the turn, which persists nothing unless it committed).
"""

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import anyio
import grpc
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import convert
from gateway.problems import mesh_problem, problem_document
from services.mesh.errors import MeshError

log = logging.getLogger("metaagent.gateway")

EVENT_STREAM: Final = "text/event-stream"
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def wants_event_stream(accept: str | None) -> bool:
    """True when `accept` prefers text/event-stream to JSON (a q of 0 refuses a type)."""
    weights: dict[str, float] = {}
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media.lower()] = weight
    stream = weights.get(EVENT_STREAM, 0.0)
    return stream > 0 and stream >= weights.get("application/json", 0.0)


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; JSON keeps the data on one line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """A streaming response that stops its body (closing the generator, hence the gRPC stream
    behind it) as soon as the client disconnects, whatever ASGI spec version the server
    speaks: it always listens for `http.disconnect` while streaming."""

    media_type = EVENT_STREAM

    def __init__(
        self, content: AsyncIterator[bytes], *, on_close: Callable[[], object] | None = None
    ) -> None:
        """`on_close` runs once the response is over, however it ended (the body may never
        have started: a generator's own `finally` would not run then)."""
        super().__init__(content, headers=HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away as we wrote
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            if self._on_close is not None:
                self._on_close()


async def open_process_stream(
    stub: Any, request: pb.ProcessRequest, deadline_seconds: float
) -> tuple[Any, pb.ProcessStreamResponse | None]:
    """Start ProcessStream (under the caller's bound correlation) and read its first event, so
    that a failure before any event raises here (an ordinary problem response)."""
    call = stub.ProcessStream(pb.ProcessStreamRequest(request=request), timeout=deadline_seconds)
    try:
        first = await call.read()
    except BaseException:
        call.cancel()
        raise
    return call, None if first is grpc.aio.EOF else first


async def process_events(
    call: Any, first: pb.ProcessStreamResponse | None, correlation_id: str
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed turn; cancels `call` when closed early."""
    message = first
    try:
        while message is not None:
            if message.HasField("final"):
                yield sse(
                    "final",
                    convert.process_response(message.final, correlation_id).model_dump(
                        by_alias=True
                    ),
                )
                return
            yield sse("delta", {"text": message.delta})
            read = await call.read()
            message = None if read is grpc.aio.EOF else read
        log.warning("the orchestrator's stream ended without a final response")
        cut_off = "the turn ended without an answer"
        yield sse(
            "error", problem_document(502, "Bad Gateway", cut_off, correlation_id=correlation_id)
        )
    except grpc.aio.AioRpcError as error:
        body, _ = mesh_problem(MeshError.from_dependency(error), correlation_id)
        yield sse("error", body)
    except Exception:
        log.exception("streamed turn failed")
        failed = problem_document(
            500, "Internal Server Error", "internal error", correlation_id=correlation_id
        )
        yield sse("error", failed)
    finally:
        call.cancel()  # a no-op once the call is over; otherwise the client left
