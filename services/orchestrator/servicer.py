"""OrchestratorService over gRPC."""

import logging
from collections.abc import AsyncIterator
from typing import Any

from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

from services.mesh import correlation
from services.mesh.errors import failed_precondition
from services.orchestrator.consumers.handoff import HandoffHeldElsewhere, HandoffQueue
from services.orchestrator.human import (
    HumanReplies,
    validate_ack_request,
    validate_watch_request,
)
from services.orchestrator.turn import TurnProcessor

log = logging.getLogger(__name__)
WATCH_REGISTERED = ("x-handoff-watch", "registered")
"""The response headers of a watch once the hub has it (the proto's WatchHandoffs)."""
DEADLINE_SLACK_SECONDS = 0.5
"""A watch that ends with no more time left than this ended by its deadline (its connection
is expected to watch again), not because its caller left. The caller's own deadline fires
first (the server's starts when the request arrives), and its cancellation may reach a busy
server a little before the server's deadline: hence the slack."""


class OrchestratorServicer(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self, turns: TurnProcessor, human: HumanReplies, hub: HandoffQueue | None = None
    ) -> None:
        """`hub`: the hand-over queue this replica serves (the in-memory hub where the relay
        runs, or the context service's queue); None when it serves none."""
        self._turns = turns
        self._human = human
        self._hub = hub

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

    async def WatchHandoffs(
        self, request: pb.WatchHandoffsRequest, context: Any
    ) -> AsyncIterator[pb.WatchHandoffsResponse]:
        validate_watch_request(request)
        hub = self._hub_here()
        async with hub.watch(
            correlation.current().tenant_id,
            agent_id=request.agent_id,
            connection_id=request.connection_id,
        ) as watch:
            await context.send_initial_metadata((WATCH_REGISTERED,))
            log.info("agent watching hand-overs", extra={"agentId": request.agent_id})
            try:
                async for event in watch:
                    yield pb.WatchHandoffsResponse(handoff=event.as_proto())
            finally:
                # the deadline passed (the caller watches again) or the caller left
                remaining = context.time_remaining()
                watch.expired = remaining is not None and remaining <= DEADLINE_SLACK_SECONDS

    async def AckHandoff(
        self, request: pb.AckHandoffRequest, context: Any
    ) -> pb.AckHandoffResponse:
        validate_ack_request(request)
        hub = self._hub_here()
        try:
            acknowledged = await hub.complete(
                correlation.current().tenant_id,
                request.event_id,
                agent_id=request.agent_id,
                connection_id=request.connection_id,
            )
        except HandoffHeldElsewhere:
            raise failed_precondition(
                "another agent or connection holds this hand-over", "HANDOFF_HELD_ELSEWHERE"
            ) from None
        return pb.AckHandoffResponse(acknowledged=acknowledged)

    def _hub_here(self) -> HandoffQueue:
        if self._hub is None:
            raise failed_precondition(
                "this orchestrator replica runs no outbox relay and holds no hand-overs "
                "(ORCHESTRATOR_HANDOFF_QUEUE=context serves them on every replica)",
                "HANDOFFS_NOT_HERE",
            )
        return self._hub
