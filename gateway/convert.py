"""Between the public JSON models and the orchestrator's protobuf messages."""

from typing import Any

from google.protobuf import json_format, struct_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from gateway.auth import Principal
from gateway.models import (
    ActionOut,
    AgentReply,
    HandoffOut,
    HumanTurnOut,
    ProcessRequest,
    ProcessResponse,
    TranscriptTurnOut,
)


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    result = struct_pb2.Struct()
    result.update(value)
    return result


def process_request(body: ProcessRequest, principal: Principal) -> pb.ProcessRequest:
    return pb.ProcessRequest(
        session_id=body.session_id,
        user_id=principal.acting_user(body.user_id),
        channel=conversation_pb2.Channel.Value(f"CHANNEL_{body.channel.name}"),
        input=pb.Input(
            type=pb.InputType.Value(f"INPUT_TYPE_{body.input.type.name}"),
            text=body.input.text or "",
            speech_url=body.input.speech_url or "",
            metadata=_struct(body.input.metadata),
        ),
        context_hints=_struct(body.context_hints),
    )


def enum_name(name: str, prefix: str) -> str:
    """A protobuf enum value's name as the JSON gives it (`CHANNEL_WEB` -> `web`)."""
    return name.removeprefix(prefix).lower()


def action_out(action: conversation_pb2.Action) -> ActionOut:
    return ActionOut(
        action_id=action.action_id,
        type=action.type,
        params=json_format.MessageToDict(action.params),
        status=enum_name(conversation_pb2.ActionStatus.Name(action.status), "ACTION_STATUS_"),
    )


def role_name(role: conversation_pb2.TurnRole.ValueType) -> str:
    return enum_name(conversation_pb2.TurnRole.Name(role), "TURN_ROLE_")


def process_response(reply: pb.ProcessResponse, correlation_id: str) -> ProcessResponse:
    return ProcessResponse(
        response_text=reply.response_text,
        actions=[action_out(action) for action in reply.actions],
        embeddings_used=reply.embeddings_used,
        tokens_consumed=reply.tokens_consumed,
        degraded=reply.degraded,
        intent=reply.intent,
        confidence=round(reply.confidence, 4),
        correlation_id=reply.correlation_id or correlation_id,
    )


def handoff_out(event: pb.HandoffEvent) -> HandoffOut:
    return HandoffOut(
        event_id=event.event_id,
        kind=enum_name(pb.HandoffKind.Name(event.kind), "HANDOFF_KIND_"),
        tenant_id=event.tenant_id,
        session_id=event.session_id,
        correlation_id=event.correlation_id,
        reason=event.reason,
        summary=event.summary,
        transcript=[
            TranscriptTurnOut(role=role_name(turn.role), text=turn.text)
            for turn in event.transcript
        ],
        customer_text=event.customer_text,
        entities=json_format.MessageToDict(event.entities),
        user=json_format.MessageToDict(event.user),
        order_id=event.order_id,
        language=event.language,
        created_at=event.created_at.ToJsonString() if event.HasField("created_at") else "",
        params=json_format.MessageToDict(event.params),
    )


def human_reply_request(message: AgentReply, agent_id: str) -> pb.SubmitHumanReplyRequest:
    return pb.SubmitHumanReplyRequest(
        session_id=message.session_id,
        agent_id=agent_id,
        text=message.text,
        actions=[
            conversation_pb2.Action(type=action.type, params=_struct(action.params))
            for action in message.actions
        ],
    )


def human_turn_out(turn: conversation_pb2.ConversationTurn) -> HumanTurnOut:
    return HumanTurnOut(
        turn_id=turn.turn_id,
        session_id=turn.session_id,
        role=role_name(turn.role),
        text=turn.text,
        actions=[action_out(action) for action in turn.actions],
        correlation_id=turn.correlation_id,
    )
