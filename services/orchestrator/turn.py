"""One turn of the conversation, DESIGN section 5.

1 validation; 2 the correlation id claimed once (a repeat gets the first response); 3 the
session's lease; 4-5 context, tenant configuration and retrieval fetched concurrently (retrieval
down: the turn goes on without documents, flagged degraded); 6-7 the prompt and the model; 8
the actions validated; 9 the user and agent turns, actions and outbox rows committed in one call
under the lease's fencing token; 10 the answer, stored for replays.

Turn and action ids are derived from the tenant, session and correlation id, so a retry after a
crash between the commit and the stored response finds its turn already committed
(ALREADY_EXISTS) and answers from it: one consistent result, no second set of actions.
"""

import asyncio
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from metaagent.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError, failed_precondition
from services.orchestrator.actions import ConfirmationState, validate_actions
from services.orchestrator.actions.validation import AWAITING
from services.orchestrator.escalation import escalate
from services.orchestrator.guard import TurnGuard, committed_turn
from services.orchestrator.metrics import DEGRADED_TURNS, DROPPED_ACTIONS, answered_turns
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
    degraded_dependencies: list[str] = dataclasses.field(default_factory=list)


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


log = logging.getLogger(__name__)
ID_NAMESPACE = uuid.UUID("5b4c7f8e-2f0a-4c55-9d3b-6a1f0e8c2d71")


_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def turn_id(call: correlation.CallContext, session_id: str, part: str) -> str:
    """A stable id for one part of the turn of `call` (the user turn, the reply, an action):
    `str(uuid.uuid5(ID_NAMESPACE, name))`, spelt out without the UUID object, which costs
    several times the hash."""
    name = f"{call.tenant_id}/{session_id}/{call.correlation_id}/{part}"
    hashed = hashlib.sha1(_NAMESPACE_BYTES + name.encode())  # noqa: S324 - uuid5 is SHA-1
    digest = bytearray(hashed.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _unstreamed(final: str, streamed: str) -> str:
    """The end of the final reply that the deltas have not shown yet, so that the deltas add
    up to it; nothing when the final text does not continue what was streamed (the final
    response is what counts)."""
    return final[len(streamed) :] if final.startswith(streamed) else ""


class TurnProcessor:
    def __init__(self, clients: MeshClients, settings: OrchestratorSettings) -> None:
        self._clients = clients
        self._settings = settings
        self._guard = TurnGuard(clients, settings.turn_lease_seconds, settings.lock_wait_seconds)

    async def process(self, request: pb.ProcessRequest) -> pb.ProcessResponse:
        validate_process_request(request, self._settings.max_text_chars)
        with correlation.bound(self._call_for(request)):
            claim = await self._guard.claim(request)
            if isinstance(claim, pb.ProcessResponse):
                return claim
            try:
                async with self._guard.session_lock(request.session_id) as fencing:
                    turn = await self._prepare(request)
                    reply = await self._clients.llm.Generate(
                        llm_pb.GenerateRequest(prompt=turn.prompt)
                    )
                    response = await self._finish(turn, reply.generation, fencing)
                await self._guard.complete(claim, response)
            except BaseException:
                await self._guard.abandon(claim)
                raise
            return response

    async def process_stream(
        self, request: pb.ProcessRequest
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        validate_process_request(request, self._settings.max_text_chars)
        with correlation.bound(self._call_for(request)):
            claim = await self._guard.claim(request)
            if isinstance(claim, pb.ProcessResponse):
                if claim.response_text:  # a replay: the stored text, so the deltas add up
                    yield pb.ProcessStreamResponse(delta=claim.response_text)
                yield pb.ProcessStreamResponse(final=claim)
                return
            try:
                async with self._guard.session_lock(request.session_id) as fencing:
                    turn = await self._prepare(request)
                    generation: llm_pb.Generation | None = None
                    streamed: list[str] = []
                    stream = self._clients.llm.GenerateStream(
                        llm_pb.GenerateStreamRequest(prompt=turn.prompt)
                    )
                    async for event in stream:
                        if event.HasField("final"):
                            generation = event.final
                        else:
                            streamed.append(event.delta)
                            yield pb.ProcessStreamResponse(delta=event.delta)
                    if generation is None:
                        raise RuntimeError("the LLM stream ended without a final generation")
                    response = await self._finish(turn, generation, fencing)
                    rest = _unstreamed(response.response_text, "".join(streamed))
                    if rest:  # what the turn added after the model (the hand-over notice)
                        yield pb.ProcessStreamResponse(delta=rest)
                await self._guard.complete(claim, response)
            except BaseException:
                await self._guard.abandon(claim)
                raise
            yield pb.ProcessStreamResponse(final=response)

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
        )
        search = asyncio.ensure_future(self._search(request.input.text))
        try:
            session_reply, tenant_reply = await gathered
        except grpc.aio.AioRpcError as error:
            search.cancel()
            if MeshError.from_rpc_error(error).code == grpc.StatusCode.NOT_FOUND:
                raise failed_precondition(
                    "this tenant is not configured", "TENANT_NOT_CONFIGURED"
                ) from None
            raise
        hits, degraded = await search
        prompt = build_prompt(tenant_reply.tenant, session_reply.context, hits, request.input.text)
        return PreparedTurn(
            request, session_reply.context, tenant_reply.tenant, hits, prompt, started, degraded
        )

    async def _search(self, text: str) -> tuple[list[retrieval_pb.SearchHit], list[str]]:
        """The tenant's closest documents; none (and "retrieval" degraded) when it is down."""
        try:
            found = await self._clients.retrieval.Search(
                retrieval_pb.SearchRequest(
                    query=text, top_k=self._settings.retrieval_top_k, include_global=True
                )
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ):
                raise
            log.warning("retrieval unavailable, answering without documents: %s", error.code())
            DEGRADED_TURNS.labels("retrieval").inc()
            return [], ["retrieval"]
        return list(found.hits), []

    async def _finish(
        self, turn: PreparedTurn, generation: llm_pb.Generation, fencing: int
    ) -> pb.ProcessResponse:
        call = correlation.current()
        session_id = turn.request.session_id
        generation = escalate(turn.request, turn.session, turn.tenant, generation)
        actions = await self._validated(turn, generation.actions)
        for n, action in enumerate(actions):
            action.action_id = turn_id(call, session_id, f"action/{n}")
            action.status = conversation_pb2.ACTION_STATUS_PENDING
        latency_ms = int((time.perf_counter() - turn.started) * 1000)
        user_turn = conversation_pb2.ConversationTurn(
            turn_id=turn_id(call, session_id, "user"),
            role=conversation_pb2.TURN_ROLE_USER,
            text=turn.request.input.text,
            correlation_id=call.correlation_id,
            metadata=conversation_pb2.TurnMetadata(channel=turn.request.channel),
        )
        degraded = generation.degraded or bool(turn.degraded_dependencies)
        agent_turn = conversation_pb2.ConversationTurn(
            turn_id=turn_id(call, session_id, "agent"),
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
                degraded=degraded,
            ),
        )
        short = conversation_pb2.ShortContext(entities=turn.session.short_context.entities)
        short.last_intent = generation.intent
        short.entities.update(dict(generation.entities.items()))
        if AWAITING not in generation.entities:
            short.entities[AWAITING] = ""  # a question of an earlier turn is not pending now
        try:
            committed = await self._clients.context.CommitTurn(
                context_pb.CommitTurnRequest(
                    session_id=session_id,
                    turns=[user_turn, agent_turn],
                    short_context=short,
                    fencing_token=fencing,
                )
            )
            stored = committed.turns[-1] if committed.turns else agent_turn
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            stored = await committed_turn(self._clients, session_id, agent_turn.turn_id)
        if generation.degraded:
            DEGRADED_TURNS.labels("llm").inc()
        answered_turns(
            conversation_pb2.Channel.Name(turn.request.channel).removeprefix("CHANNEL_").lower(),
            "true" if stored.metadata.degraded else "false",
        ).inc()
        dependencies = list(turn.degraded_dependencies)
        if generation.degraded:
            dependencies.append("llm")
        return pb.ProcessResponse(
            response_text=stored.text,
            actions=stored.actions,
            embeddings_used=stored.metadata.embeddings_retrieved,
            tokens_consumed=stored.metadata.tokens_used,
            degraded=stored.metadata.degraded,
            intent=stored.metadata.intent,
            confidence=stored.metadata.confidence,
            correlation_id=call.correlation_id,
            degraded_dependencies=dependencies if stored.metadata.degraded else [],
        )

    async def _validated(
        self, turn: PreparedTurn, proposed: Sequence[conversation_pb2.Action]
    ) -> list[conversation_pb2.Action]:
        """The proposed actions the registry, the tenant and the confirmation rule allow; each
        dropped one is audited (type and reason, never the customer's words) and counted."""
        confirmation = ConfirmationState.from_session(
            turn.session, turn.tenant, turn.request.input.text
        )
        result = validate_actions(proposed, turn.tenant, confirmation)
        for dropped in result.dropped:
            DROPPED_ACTIONS.labels(dropped.reason).inc()
            payload = struct_pb2.Struct()
            payload.update(dropped.audit())
            try:
                await self._clients.context.AppendAudit(
                    context_pb.AppendAuditRequest(
                        action="action_dropped",
                        payload=payload,
                        session_id=turn.request.session_id,
                    )
                )
            except grpc.aio.AioRpcError as error:
                log.warning("could not audit a dropped action: %s", error.code())
        return [self._copy(action) for action in result.actions]

    @staticmethod
    def _copy(action: conversation_pb2.Action) -> conversation_pb2.Action:
        copy = conversation_pb2.Action()
        copy.CopyFrom(action)
        return copy
