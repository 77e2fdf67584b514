"""Deadlines: an outbound call never gets more time than the inbound call has left."""

import asyncio
from typing import Any

import grpc
import pytest
from metaagent.llm.v1 import llm_service_pb2 as llm_pb

from services.mesh.clients import MeshClients
from services.mesh.settings import MeshSettings
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
    remaining, back = _recording_remaining_time()
    async with chain(settings, back) as mesh:
        reply = await mesh.process(timeout=0.05)
    assert reply.response_text == "ok"
    assert remaining and 0 < remaining[0] <= 0.05


async def test_without_an_inbound_deadline_the_default_timeout_applies(
    settings: MeshSettings,
) -> None:
    remaining, back = _recording_remaining_time()
    async with chain(settings, back) as mesh:
        await mesh.process()
    assert remaining and 1.0 < remaining[0] <= 2.0


async def test_an_expired_inbound_deadline_never_reaches_downstream(settings: MeshSettings) -> None:
    async def back(context: Any) -> llm_pb.GenerateResponse:
        return llm_pb.GenerateResponse()

    async def slow_front(clients: MeshClients) -> None:
        await asyncio.sleep(0.15)

    async with chain(settings, back, front=slow_front) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await mesh.process(timeout=0.1)
        await asyncio.sleep(0.1)
        assert mesh.back.calls == 0
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
