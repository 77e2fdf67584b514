"""A human agent's reply into a session after a hand-over (OrchestratorService.SubmitHumanReply),
and the checks of the agents' WatchHandoffs / AckHandoff requests.

The reply is stored as a TURN_ROLE_HUMAN turn of the same session, so the customer keeps one
conversation: the transcript shows it between the agent's turns, and the next turn's prompt
has it among the recent turns.

1. the request is validated (session_id, agent_id, text; every problem at once, as field
   violations) and nothing is read or written when it is bad;
2. the session must exist (GetSession, which never creates one: NOT_FOUND otherwise);
3. the actions the human triggers go through the turn's validation (registry schema, the
   tenant's allow-list, cross-action consistency). The human is the confirmation: a person
   who sends a payment link has agreed it with the customer, so the confirmation rule (which
   guards against a model moving money on its own) is granted. Any dropped action rejects the
   whole reply (INVALID_ARGUMENT, one violation per action; details name rules, never values);
4. under the session lease (one turn at a time per session) the turn, its actions and their
   outbox rows are committed in one CommitTurn with the fencing token.

The turn and action ids derive from the tenant, session and correlation id (as in the turn):
a retry with the same correlation id finds its reply committed and returns it, when it is the
same reply (agent, text and actions); a different reply under that correlation id is refused
with ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED), never answered with what another reply stored.
"""

import dataclasses
import logging
import re

import grpc
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import (
    FieldViolation,
    MeshError,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
)
from services.orchestrator.actions import ConfirmationState, validate_actions
from services.orchestrator.guard import TurnGuard, committed_turn
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.turn import turn_id
from services.orchestrator.validation import session_id_violations

__all__ = [
    "HumanReplies",
    "validate_ack_request",
    "validate_human_reply",
    "validate_watch_request",
]

log = logging.getLogger(__name__)

MAX_AGENT_ID_CHARS = 128
MAX_ACTIONS = 10
SINGLE_LINE = re.compile(r"^[^\x00-\x1f\x7f]+\Z")
HUMAN_CONFIRMS = ConfirmationState(asked=True, confirmed=True)
"""A person triggers the action: the confirmation rule is theirs (module doc)."""


def _agent_id_violations(agent_id: str) -> list[FieldViolation]:
    if not agent_id.strip():
        return [FieldViolation("agent_id", "is required")]
    if len(agent_id) > MAX_AGENT_ID_CHARS:
        return [FieldViolation("agent_id", f"exceeds {MAX_AGENT_ID_CHARS} characters")]
    if not SINGLE_LINE.match(agent_id):
        return [FieldViolation("agent_id", "must not contain control characters")]
    return []


def _connection_id_violations(connection_id: str) -> list[FieldViolation]:
    if connection_id and not correlation.ID_PATTERN.match(connection_id):
        return [FieldViolation("connection_id", "must be 1-128 of [A-Za-z0-9._:-]")]
    return []


def validate_watch_request(request: pb.WatchHandoffsRequest) -> None:
    """Raise INVALID_ARGUMENT when the watching agent's id is missing or malformed, or the
    connection id is malformed."""
    violations = _agent_id_violations(request.agent_id)
    violations += _connection_id_violations(request.connection_id)
    if violations:
        raise invalid_argument(*violations)


def validate_ack_request(request: pb.AckHandoffRequest) -> None:
    """Raise INVALID_ARGUMENT listing a missing or malformed event id or agent id, and a
    malformed connection id."""
    violations = []
    if not request.event_id:
        violations.append(FieldViolation("event_id", "is required"))
    elif not correlation.ID_PATTERN.match(request.event_id):
        violations.append(FieldViolation("event_id", "must be 1-128 of [A-Za-z0-9._:-]"))
    violations += _agent_id_violations(request.agent_id)
    violations += _connection_id_violations(request.connection_id)
    if violations:
        raise invalid_argument(*violations)


def validate_human_reply(request: pb.SubmitHumanReplyRequest, max_text_chars: int) -> None:
    """Raise INVALID_ARGUMENT listing every bad field of the request (actions aside)."""
    violations = session_id_violations(request.session_id)
    violations += _agent_id_violations(request.agent_id)
    if not request.text.strip():
        violations.append(FieldViolation("text", "is required"))
    elif len(request.text) > max_text_chars:
        violations.append(FieldViolation("text", f"exceeds {max_text_chars} characters"))
    elif "\x00" in request.text:
        violations.append(FieldViolation("text", "must not contain NUL"))
    if len(request.actions) > MAX_ACTIONS:
        violations.append(FieldViolation("actions", f"at most {MAX_ACTIONS} per reply"))
    if violations:
        raise invalid_argument(*violations)


class HumanReplies:
    """SubmitHumanReply: see the module docstring."""

    def __init__(self, clients: MeshClients, settings: OrchestratorSettings) -> None:
        self._clients = clients
        self._settings = settings
        self._guard = TurnGuard(clients, settings.turn_lease_seconds, settings.lock_wait_seconds)

    async def submit(self, request: pb.SubmitHumanReplyRequest) -> pb.SubmitHumanReplyResponse:
        validate_human_reply(request, self._settings.max_text_chars)
        call = dataclasses.replace(correlation.current(), session_id=request.session_id)
        with correlation.bound(call):
            session = await self._session(request.session_id)
            actions = await self._validated(request)
            for n, action in enumerate(actions):
                action.action_id = turn_id(call, request.session_id, f"human-action/{n}")
                action.status = conversation_pb2.ACTION_STATUS_PENDING
            turn = conversation_pb2.ConversationTurn(
                turn_id=turn_id(call, request.session_id, "human"),
                role=conversation_pb2.TURN_ROLE_HUMAN,
                text=request.text,
                actions=actions,
                correlation_id=call.correlation_id,
                metadata=conversation_pb2.TurnMetadata(
                    channel=session.channel, human_agent_id=request.agent_id
                ),
            )
            async with self._guard.session_lock(request.session_id) as fencing:
                stored = await self._commit(request.session_id, turn, fencing)
            log.info(
                "human reply stored",
                extra={"agentId": request.agent_id, "actions": [a.type for a in stored.actions]},
            )
            return pb.SubmitHumanReplyResponse(turn=stored)

    async def _session(self, session_id: str) -> conversation_pb2.SessionContext:
        try:
            found = await self._clients.context.GetSession(
                context_pb.GetSessionRequest(session_id=session_id)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found("the session does not exist", "SESSION_NOT_FOUND") from None
            raise
        return found.context

    async def _validated(
        self, request: pb.SubmitHumanReplyRequest
    ) -> list[conversation_pb2.Action]:
        if not request.actions:
            return []
        try:
            tenant = (await self._clients.context.GetTenant(context_pb.GetTenantRequest())).tenant
        except grpc.aio.AioRpcError as error:
            if MeshError.from_rpc_error(error).code == grpc.StatusCode.NOT_FOUND:
                raise failed_precondition(
                    "this tenant is not configured", "TENANT_NOT_CONFIGURED"
                ) from None
            raise
        result = validate_actions(request.actions, tenant, HUMAN_CONFIRMS)
        if result.dropped:
            raise invalid_argument(
                *(
                    FieldViolation(
                        f"actions[{d.index}]" + (f".params{d.path}" if d.path else ""),
                        f"{d.type}: {d.reason}: {d.detail}",
                    )
                    for d in result.dropped
                ),
                message="the reply has an invalid action; nothing was stored",
            )
        kept = []
        for action in result.actions:
            copy = conversation_pb2.Action()
            copy.CopyFrom(action)
            kept.append(copy)
        return kept

    async def _commit(
        self, session_id: str, turn: conversation_pb2.ConversationTurn, fencing: int
    ) -> conversation_pb2.ConversationTurn:
        try:
            committed = await self._clients.context.CommitTurn(
                context_pb.CommitTurnRequest(
                    session_id=session_id, turns=[turn], fencing_token=fencing
                )
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found("the session does not exist", "SESSION_NOT_FOUND") from None
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            stored = await committed_turn(self._clients, session_id, turn.turn_id)
            if _reply_of(stored) != _reply_of(turn):
                raise already_exists(
                    "this correlation id already stored a different reply in the session",
                    "IDEMPOTENCY_KEY_REUSED",
                ) from None
            return stored
        return committed.turns[-1] if committed.turns else turn


def _reply_of(turn: conversation_pb2.ConversationTurn) -> tuple[object, ...]:
    """What makes two human replies the same one: the agent, the text and the actions."""
    return (
        turn.metadata.human_agent_id,
        turn.text,
        [(a.type, a.params) for a in turn.actions],
    )
