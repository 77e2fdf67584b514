"""SIGTERM: in-flight calls finish within the grace period, new calls are refused."""

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from metaagent.llm.v1 import llm_service_pb2_grpc

from services.mesh.clients import check_serving, open_channel
from services.mesh.settings import MeshSettings
from tests.support.calls import METADATA, demo_prompt
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


async def _start_slow_llm(state_dir: Path, delay: float, grace: float):
    port = free_port()
    env = {
        **os.environ,
        "METAAGENT_STATE_DIR": str(state_dir),
        "GRPC_SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.slow_llm",
        "--port",
        str(port),
        "--delay",
        str(delay),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    settings = MeshSettings(
        state_dir=state_dir, llm_addr=f"127.0.0.1:{port}", grpc_retry_attempts=1
    )
    channel = open_channel(settings, "orchestrator", "llm")
    async with asyncio.timeout(15):
        while True:
            try:
                await check_serving(channel)
                break
            except (grpc.aio.AioRpcError, ConnectionError):
                await asyncio.sleep(0.1)
    return process, channel


async def test_sigterm_lets_an_in_flight_call_finish(state_dir: Path) -> None:
    process, channel = await _start_slow_llm(state_dir, delay=1.0, grace=5.0)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    in_flight = asyncio.ensure_future(stub.Generate(demo_prompt(), metadata=METADATA, timeout=10))
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Generate(demo_prompt(), metadata=METADATA, timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    reply = await in_flight
    assert reply.generation.reply_text == "finished"
    assert await asyncio.wait_for(process.wait(), 5) == 0
    await channel.close()


async def test_a_call_longer_than_the_grace_period_is_cut_at_its_end(state_dir: Path) -> None:
    process, channel = await _start_slow_llm(state_dir, delay=30.0, grace=1.0)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    in_flight = asyncio.ensure_future(stub.Generate(demo_prompt(), metadata=METADATA, timeout=20))
    await asyncio.sleep(0.3)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.aio.AioRpcError):
        await in_flight
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert time.monotonic() - signalled < 5.0
    await channel.close()
