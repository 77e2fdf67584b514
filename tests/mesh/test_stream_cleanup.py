"""A server stream that ends while its handler is paused at `yield` (the deadline passes, or the
client goes away, while a response is being written) is cleaned up at once, in the call's own
task and context: the servicer's `finally` runs with the call's correlation ids bound, and
nothing fails later in asyncio's async-generator finaliser ("Token was created in a different
Context", "Task exception was never retrieved")."""

import asyncio
import contextvars
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.settings import MeshSettings
from services.orchestrator.servicer import OrchestratorServicer
from tests.support.servers import orchestrator_binding, running

pytestmark = pytest.mark.timeout(30)

CHUNK = "x" * 16_384


class Flooding(OrchestratorServicer):
    """ProcessStream writes deltas faster than the client reads: its writes stall on flow
    control, so the deadline finds the generator paused at `yield`."""

    def __init__(self) -> None:
        super().__init__(None, None, None)  # type: ignore[arg-type]
        self.started_in: asyncio.Task[Any] | None = None
        self.cleaned_in: asyncio.Task[Any] | None = None
        self.cleaned_with: correlation.CallContext | None = None
        self.cleaned = asyncio.Event()
        self.yields = 0

    async def ProcessStream(
        self, request: pb.ProcessStreamRequest, context: Any
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        self.started_in = asyncio.current_task()
        try:
            while True:
                self.yields += 1
                yield pb.ProcessStreamResponse(delta=CHUNK)
        finally:
            self.cleaned_in = asyncio.current_task()
            self.cleaned_with = correlation.current()
            self.cleaned.set()


async def test_a_stream_abandoned_at_yield_is_closed_in_its_own_task_and_context(
    state_dir: Path,
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, details: errors.append(details))
    servicer = Flooding()
    settings = MeshSettings(state_dir=state_dir)
    gc.disable()  # only a deterministic close may clean up, not a collection
    try:
        async with running("orchestrator", settings, [orchestrator_binding(servicer)]) as (_, a):
            clients = MeshClients(MeshSettings(state_dir=state_dir, orchestrator_addr=a), "gateway")
            try:
                call_context = correlation.CallContext(correlation_id="c-flood", tenant_id="demo")
                with correlation.bound(call_context):
                    call = clients.orchestrator.ProcessStream(
                        pb.ProcessStreamRequest(), timeout=0.5
                    )
                assert (await call.read()).delta == CHUNK
                await asyncio.sleep(1.0)  # read nothing more: the server's writes stall
                assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                async with asyncio.timeout(5):
                    await servicer.cleaned.wait()
            finally:
                await clients.close()
        await asyncio.sleep(0.1)  # let any stray finaliser task run and fail
        gc.collect()
        await asyncio.sleep(0.1)
    finally:
        gc.enable()
        loop.set_exception_handler(previous)
    assert servicer.yields > 1, "the stream wrote until flow control stalled it"
    assert servicer.cleaned_in is servicer.started_in, "closed by the call's own task"
    assert servicer.cleaned_with is not None
    assert servicer.cleaned_with.correlation_id == "c-flood", "with the call's ids bound"
    assert errors == [], [e.get("message") for e in errors]


def test_a_binding_closed_from_another_context_does_not_raise() -> None:
    """`correlation.bound` left from a context other than the one that entered it (a generator
    finalised elsewhere) leaves both contexts alone instead of raising ValueError."""
    outer = correlation.CallContext(correlation_id="outer")

    def entering() -> Iterator[None]:
        with correlation.bound(correlation.CallContext(correlation_id="inner")):
            yield

    holder = contextvars.copy_context()
    generator = entering()
    holder.run(next, generator)
    assert holder.run(correlation.current).correlation_id == "inner"
    with correlation.bound(outer):
        generator.close()  # exits the `with` here, in another context
        assert correlation.current().correlation_id == "outer", "this context untouched"
    assert correlation.current().correlation_id == ""
