"""Between the public JSON models and the orchestrator's protobuf messages."""

from typing import Any

from google.protobuf import json_format, struct_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from gateway.auth import Principal
from gateway.models import ActionOut, ProcessRequest, ProcessResponse


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


def process_response(reply: pb.ProcessResponse, correlation_id: str) -> ProcessResponse:
    return ProcessResponse(
        response_text=reply.response_text,
        actions=[
            ActionOut(
                action_id=action.action_id,
                type=action.type,
                params=json_format.MessageToDict(action.params),
                status=conversation_pb2.ActionStatus.Name(action.status)
                .removeprefix("ACTION_STATUS_")
                .lower(),
            )
            for action in reply.actions
        ],
        embeddings_used=reply.embeddings_used,
        tokens_consumed=reply.tokens_consumed,
        degraded=reply.degraded,
        intent=reply.intent,
        confidence=round(reply.confidence, 4),
        correlation_id=reply.correlation_id or correlation_id,
    )
