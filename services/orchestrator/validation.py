"""Input validation of a turn: every problem at once, as field violations."""

import grpc
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.errors import FieldViolation, MeshError, invalid_argument


def session_id_violations(session_id: str) -> list[FieldViolation]:
    """What is wrong with a request's session id: missing, malformed, or not the metadata's."""
    call = correlation.current()
    if not session_id:
        return [FieldViolation("session_id", "is required")]
    if not correlation.ID_PATTERN.match(session_id):
        return [FieldViolation("session_id", "must be 1-128 of [A-Za-z0-9._:-]")]
    if call.session_id and call.session_id != session_id:
        return [FieldViolation("session_id", "differs from the x-session-id metadata")]
    return []


def validate_process_request(request: pb.ProcessRequest, max_text_chars: int) -> None:
    """Raise INVALID_ARGUMENT listing every bad field; UNIMPLEMENTED for event input."""
    violations = session_id_violations(request.session_id)
    if request.channel not in conversation_pb2.Channel.values() or request.channel == 0:
        violations.append(FieldViolation("channel", "must be web, whatsapp, voice or instagram"))
    if not request.HasField("input"):
        violations.append(FieldViolation("input", "is required"))
    elif request.input.type == pb.INPUT_TYPE_UNSPECIFIED:
        violations.append(FieldViolation("input.type", "must be text, speech or event"))
    elif request.input.type in (pb.INPUT_TYPE_TEXT, pb.INPUT_TYPE_SPEECH):
        if not request.input.text.strip():
            violations.append(FieldViolation("input.text", "is required for text and speech input"))
        elif len(request.input.text) > max_text_chars:
            violations.append(FieldViolation("input.text", f"exceeds {max_text_chars} characters"))
    if violations:
        raise invalid_argument(*violations)
    if request.input.type == pb.INPUT_TYPE_EVENT:
        raise MeshError(
            grpc.StatusCode.UNIMPLEMENTED, "event input is not handled yet", "EVENT_INPUT"
        )
