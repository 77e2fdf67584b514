"""Health: NOT_SERVING until dependencies are ready, SERVING after, NOT_SERVING on shutdown."""

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from metaagent.llm.v1 import llm_service_pb2_grpc

from services.context.app import build_server as build_context
from services.context.settings import ContextSettings
from services.llm.app import build_engine
from services.llm.app import build_server as build_llm
from services.llm.servicer import LlmServicer
from services.llm.settings import LlmSettings
from services.mesh.clients import open_channel, serving_status
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from services.orchestrator.app import build_server as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.retrieval.app import build_server as build_retrieval
from services.retrieval.settings import RetrievalSettings
from tests.support.calls import METADATA, demo_prompt
from tests.support.ports import free_ports
from tests.support.servers import llm_binding, running, started

LLM_SERVICE = "metaagent.llm.v1.LlmService"


async def _wait_for(channel, status: str, service: str = "", timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await serving_status(channel, service) != status:
            await asyncio.sleep(0.05)


async def test_health_turns_serving_once_readiness_passes(settings: MeshSettings) -> None:
    gate = asyncio.Event()

    async def dependency_ready() -> None:
        if not gate.is_set():
            raise ConnectionError("not yet")

    servicer = LlmServicer(build_engine(LlmSettings()), LlmSettings())
    async with running("llm", settings, [llm_binding(servicer)], [dependency_ready]) as (
        server,
        address,
    ):
        client = MeshSettings(state_dir=settings.state_dir, llm_addr=address)
        async with open_channel(client, "operator", "llm") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=LLM_SERVICE)
            )
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await serving_status(channel) == "NOT_SERVING"
            await asyncio.sleep(0.2)
            assert await serving_status(channel, LLM_SERVICE) == "NOT_SERVING"
            gate.set()
            second = await watch.read()
            assert second.status == health_pb2.HealthCheckResponse.SERVING
            assert await serving_status(channel) == "SERVING"
            stopping = asyncio.create_task(server.stop(1.0))
            third = await watch.read()
            assert third.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            await stopping


async def test_the_orchestrator_serves_only_once_its_dependencies_do(state_dir: Path) -> None:
    names = ("context", "retrieval", "llm")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    addresses = {f"{name}_addr": f"127.0.0.1:{port}" for name, port in ports.items()}
    common = {"state_dir": state_dir, **addresses}
    orchestrator = build_orchestrator(
        OrchestratorSettings(**common, grpc_listen_addr="127.0.0.1:0")
    )
    async with started(orchestrator) as address:
        client = MeshSettings(state_dir=state_dir, orchestrator_addr=address)
        async with open_channel(client, "operator", "orchestrator") as channel:
            await asyncio.sleep(0.3)
            assert await serving_status(channel) == "NOT_SERVING"
            context = build_context(
                ContextSettings(**common, grpc_listen_addr=addresses["context_addr"])
            )
            retrieval = build_retrieval(
                RetrievalSettings(**common, grpc_listen_addr=addresses["retrieval_addr"])
            )
            llm = build_llm(LlmSettings(**common, grpc_listen_addr=addresses["llm_addr"]))
            async with started(context), started(retrieval):
                await asyncio.sleep(0.3)
                assert await serving_status(channel) == "NOT_SERVING"
                async with started(llm):
                    await _wait_for(channel, "SERVING")


async def test_calls_before_readiness_are_unavailable_with_retry_advice(
    settings: MeshSettings,
) -> None:
    gate = asyncio.Event()

    async def dependency_ready() -> None:
        await gate.wait()

    servicer = LlmServicer(build_engine(LlmSettings()), LlmSettings())
    async with running("llm", settings, [llm_binding(servicer)], [dependency_ready]) as (_, addr):
        client = MeshSettings(state_dir=settings.state_dir, llm_addr=addr, grpc_retry_attempts=1)
        async with open_channel(client, "orchestrator", "llm") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            llm = llm_service_pb2_grpc.LlmServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as early:
                await llm.Generate(demo_prompt(), metadata=METADATA)
            error = MeshError.from_rpc_error(early.value)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")
            assert error.retry_after == 0.5
            gate.set()
            await _wait_for(channel, "SERVING")
            assert (await llm.Generate(demo_prompt(), metadata=METADATA)).generation.model
