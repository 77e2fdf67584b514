"""One turn of the conversation, DESIGN section 5 (this increment: steps 1, 4-7, 9-10).

Context, tenant configuration and retrieval are fetched concurrently; the prompt carries the
tenant ADN, safety policy, retrieved documents, summary and recent turns; the model's actions
are kept only when the tenant allows their type; the user and agent turns (and the actions'
outbox rows) are committed in one call to the context service.
"""

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from metaagent.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError, failed_precondition
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.validation import validate_process_request


@dataclasses.dataclass
class PreparedTurn:
    request: pb.ProcessRequest
    session: conversation_pb2.SessionContext
    tenant: tenant_pb2.TenantConfig
    hits: list[retrieval_pb.SearchHit]
    prompt: llm_pb.Prompt
    started: float


def build_prompt(
    tenant: tenant_pb2.TenantConfig,
    session: conversation_pb2.SessionContext,
    hits: list[retrieval_pb.SearchHit],
    user_text: str,
) -> llm_pb.Prompt:
    return llm_pb.Prompt(
        system=f"{tenant.adn}\n\n{tenant.safety_policy}".strip(),
        documents=[
            llm_pb.RetrievedDocument(
                doc_id=hit.document.doc_id,
                text=hit.document.text,
                score=hit.score,
                fields=hit.document.metadata.fields,
            )
            for hit in hits
        ],
        recent_turns=session.recent_turns,
        summary=session.short_context.summary,
        entities=session.short_context.entities,
        user_text=user_text,
        tenant=tenant,
    )


class TurnProcessor:
    def __init__(self, clients: MeshClients, settings: OrchestratorSettings) -> None:
        self._clients = clients
        self._settings = settings

    async def process(self, request: pb.ProcessRequest) -> pb.ProcessResponse:
        validate_process_request(request, self._settings.max_text_chars)
        with correlation.bound(self._call_for(request)):
            turn = await self._prepare(request)
            reply = await self._clients.llm.Generate(llm_pb.GenerateRequest(prompt=turn.prompt))
            return await self._finish(turn, reply.generation)

    async def process_stream(
        self, request: pb.ProcessRequest
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        validate_process_request(request, self._settings.max_text_chars)
        with correlation.bound(self._call_for(request)):
            turn = await self._prepare(request)
            generation: llm_pb.Generation | None = None
            stream = self._clients.llm.GenerateStream(
                llm_pb.GenerateStreamRequest(prompt=turn.prompt)
            )
            async for event in stream:
                if event.HasField("final"):
                    generation = event.final
                else:
                    yield pb.ProcessStreamResponse(delta=event.delta)
            if generation is None:
                raise RuntimeError("the LLM stream ended without a final generation")
            yield pb.ProcessStreamResponse(final=await self._finish(turn, generation))

    @staticmethod
    def _call_for(request: pb.ProcessRequest) -> correlation.CallContext:
        return dataclasses.replace(correlation.current(), session_id=request.session_id)

    async def _prepare(self, request: pb.ProcessRequest) -> PreparedTurn:
        started = time.perf_counter()
        context = self._clients.context
        gathered = asyncio.gather(
            context.GetOrCreateSession(
                context_pb.GetOrCreateSessionRequest(
                    session_id=request.session_id,
                    user_id=request.user_id,
                    channel=request.channel,
                )
            ),
            context.GetTenant(context_pb.GetTenantRequest()),
            self._clients.retrieval.Search(
                retrieval_pb.SearchRequest(
                    query=request.input.text,
                    top_k=self._settings.retrieval_top_k,
                    include_global=True,
                )
            ),
        )
        try:
            session_reply, tenant_reply, search_reply = await gathered
        except grpc.aio.AioRpcError as error:
            if MeshError.from_rpc_error(error).reason == "TENANT_NOT_FOUND":
                raise failed_precondition(
                    "this tenant is not configured", "TENANT_NOT_CONFIGURED"
                ) from None
            raise
        hits = list(search_reply.hits)
        prompt = build_prompt(tenant_reply.tenant, session_reply.context, hits, request.input.text)
        return PreparedTurn(
            request, session_reply.context, tenant_reply.tenant, hits, prompt, started
        )

    async def _finish(
        self, turn: PreparedTurn, generation: llm_pb.Generation
    ) -> pb.ProcessResponse:
        call = correlation.current()
        allowed = set(turn.tenant.allowed_actions)
        actions = [
            conversation_pb2.Action(
                action_id=str(uuid.uuid4()),
                type=action.type,
                params=action.params,
                status=conversation_pb2.ACTION_STATUS_PENDING,
            )
            for action in generation.actions
            if action.type in allowed
        ]
        latency_ms = int((time.perf_counter() - turn.started) * 1000)
        user_turn = conversation_pb2.ConversationTurn(
            role=conversation_pb2.TURN_ROLE_USER,
            text=turn.request.input.text,
            correlation_id=call.correlation_id,
            metadata=conversation_pb2.TurnMetadata(channel=turn.request.channel),
        )
        agent_turn = conversation_pb2.ConversationTurn(
            role=conversation_pb2.TURN_ROLE_AGENT,
            text=generation.reply_text,
            actions=actions,
            correlation_id=call.correlation_id,
            metadata=conversation_pb2.TurnMetadata(
                channel=turn.request.channel,
                tokens_used=generation.usage.total_tokens,
                embeddings_retrieved=len(turn.hits),
                latency_ms=latency_ms,
                intent=generation.intent,
                confidence=generation.confidence,
                model=generation.model,
                degraded=generation.degraded,
            ),
        )
        short = conversation_pb2.ShortContext(entities=turn.session.short_context.entities)
        short.last_intent = generation.intent
        short.entities.update(dict(generation.entities.items()))
        committed = await self._clients.context.CommitTurn(
            context_pb.CommitTurnRequest(
                session_id=turn.request.session_id,
                turns=[user_turn, agent_turn],
                short_context=short,
            )
        )
        stored_actions = committed.turns[-1].actions if committed.turns else actions
        return pb.ProcessResponse(
            response_text=generation.reply_text,
            actions=stored_actions,
            embeddings_used=len(turn.hits),
            tokens_consumed=generation.usage.total_tokens,
            degraded=generation.degraded,
            intent=generation.intent,
            confidence=generation.confidence,
            correlation_id=call.correlation_id,
        )
