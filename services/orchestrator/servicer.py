"""OrchestratorService over gRPC."""

from collections.abc import AsyncIterator
from typing import Any

from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

from services.orchestrator.human import HumanReplies
from services.orchestrator.turn import TurnProcessor


class OrchestratorServicer(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, turns: TurnProcessor, human: HumanReplies) -> None:
        self._turns = turns
        self._human = human

    async def Process(self, request: pb.ProcessRequest, context: Any) -> pb.ProcessResponse:
        return await self._turns.process(request)

    async def ProcessStream(
        self, request: pb.ProcessStreamRequest, context: Any
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        async for event in self._turns.process_stream(request.request):
            yield event

    async def SubmitHumanReply(
        self, request: pb.SubmitHumanReplyRequest, context: Any
    ) -> pb.SubmitHumanReplyResponse:
        return await self._human.submit(request)
