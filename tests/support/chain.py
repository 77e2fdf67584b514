"""A two-hop chain for tests: caller -> orchestrator (front) -> llm (back), all real gRPC."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.llm.v1 import llm_service_pb2_grpc
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as orch_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

from services.mesh.clients import MeshClients, open_channel
from services.mesh.settings import MeshSettings
from tests.support.calls import demo_prompt
from tests.support.servers import llm_binding, orchestrator_binding, running

BackBehaviour = Callable[[Any], Awaitable[llm_pb.GenerateResponse]]
FrontBehaviour = Callable[[MeshClients], Awaitable[None]]


class ScriptedLlm(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, behaviour: BackBehaviour) -> None:
        self.behaviour = behaviour
        self.calls = 0

    async def Generate(
        self, request: llm_pb.GenerateRequest, context: Any
    ) -> llm_pb.GenerateResponse:
        self.calls += 1
        return await self.behaviour(context)


class ScriptedOrchestrator(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, clients: MeshClients, before: FrontBehaviour | None) -> None:
        self.clients = clients
        self.before = before

    async def Process(
        self, request: orch_pb.ProcessRequest, context: Any
    ) -> orch_pb.ProcessResponse:
        if self.before is not None:
            await self.before(self.clients)
        reply = await self.clients.llm.Generate(demo_prompt())
        return orch_pb.ProcessResponse(response_text=reply.generation.reply_text)


@dataclass
class Chain:
    back: ScriptedLlm
    process: Callable[..., Awaitable[orch_pb.ProcessResponse]]


@asynccontextmanager
async def chain(
    settings: MeshSettings,
    back: BackBehaviour,
    *,
    front: FrontBehaviour | None = None,
    retry_attempts: int = 4,
) -> AsyncIterator[Chain]:
    llm = ScriptedLlm(back)
    async with running("llm", settings, [llm_binding(llm)]) as (_, llm_address):
        inner = MeshSettings(
            state_dir=settings.state_dir,
            llm_addr=llm_address,
            grpc_retry_attempts=retry_attempts,
            grpc_default_timeout_seconds=2.0,
        )
        clients = MeshClients(inner, "orchestrator")
        servicer = ScriptedOrchestrator(clients, front)
        async with running("orchestrator", settings, [orchestrator_binding(servicer)]) as (_, addr):
            outer = MeshSettings(
                state_dir=settings.state_dir, orchestrator_addr=addr, grpc_retry_attempts=1
            )
            async with open_channel(outer, "gateway", "orchestrator") as channel:
                stub = orchestrator_service_pb2_grpc.OrchestratorServiceStub(channel)

                async def process(**kwargs: Any) -> orch_pb.ProcessResponse:
                    metadata = (("x-correlation-id", "corr-chain"), ("x-tenant-id", "demo"))
                    return await stub.Process(orch_pb.ProcessRequest(), metadata=metadata, **kwargs)

                try:
                    yield Chain(llm, process)
                finally:
                    await clients.close()
