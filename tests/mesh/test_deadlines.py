"""Deadlines: an outbound call never gets more time than the inbound call has left."""

import dataclasses
import time
from typing import Any

import grpc
from metaagent.llm.v1 import llm_service_pb2 as llm_pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.settings import MeshSettings
from tests.support.calls import demo_prompt
from tests.support.chain import BackBehaviour, chain


def _recording_remaining_time() -> tuple[list[float], BackBehaviour]:
    """A back end that answers "ok" and records the time each call had left."""
    remaining: list[float] = []

    async def back(context: Any) -> llm_pb.GenerateResponse:
        remaining.append(context.time_remaining())
        return llm_pb.GenerateResponse(generation=llm_pb.Generation(reply_text="ok"))

    return remaining, back


async def test_a_50ms_inbound_deadline_reaches_downstream_with_at_most_50ms_left(
    settings: MeshSettings,
) -> None:
    """Every downstream call gets at most the 50 ms its caller had. On a loaded machine the
    50 ms may run out before the downstream call (DEADLINE_EXCEEDED, also correct), so the
    call is tried a few times until one gets through."""
    remaining, back = _recording_remaining_time()
    answered, expired = 0, []
    async with chain(settings, back) as mesh:
        for _ in range(10):
            try:
                reply = await mesh.process(timeout=0.05)
            except grpc.aio.AioRpcError as error:
                expired.append(error.code())
                continue
            assert reply.response_text == "ok"
            answered += 1
            if answered == 3:
                break
    assert answered >= 1
    assert set(expired) <= {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert remaining
    assert all(left is not None and left <= 0.05 for left in remaining), remaining


async def test_without_an_inbound_deadline_the_default_timeout_applies(
    settings: MeshSettings,
) -> None:
    remaining, back = _recording_remaining_time()
    async with chain(settings, back) as mesh:
        await mesh.process()
    assert remaining and 1.0 < remaining[0] <= 2.0


async def test_an_expired_inbound_deadline_never_reaches_downstream(settings: MeshSettings) -> None:
    """The handler is still alive, but the time its caller allowed is spent: the outbound call
    must fail at once with DEADLINE_EXCEEDED instead of using the default timeout."""
    codes: list[grpc.StatusCode] = []
    back_calls_then: list[int] = []

    async def back(context: Any) -> llm_pb.GenerateResponse:
        return llm_pb.GenerateResponse(generation=llm_pb.Generation(reply_text="ok"))

    async def front_with_spent_deadline(clients: MeshClients) -> None:
        spent = dataclasses.replace(correlation.current(), deadline=time.monotonic() - 0.01)
        with correlation.bound(spent):
            try:
                await clients.llm.Generate(demo_prompt())
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
        back_calls_then.append(mesh.back.calls)

    async with chain(settings, back, front=front_with_spent_deadline) as mesh:
        await mesh.process(timeout=5)
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED]
    assert back_calls_then == [0]
