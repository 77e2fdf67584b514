"""The rows every store adapter writes and reads, as plain Python values.

Adapters differ only in how they encode these values (JSON text and ISO dates for SQLite,
jsonb and timestamptz for PostgreSQL), so the shape of a stored turn or outbox message is
defined once, here.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import audit_pb2, consent_pb2, outbox_pb2

MessageT = TypeVar("MessageT", bound=Message)
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_ACTION_KEYS = frozenset({"actionId", "type", "params", "status"})

TURN_COLUMNS = (
    "turn_id",
    "tenant_id",
    "session_id",
    "seq",
    "role",
    "text",
    "actions",
    "metadata",
    "correlation_id",
    "timestamp",
)
OUTBOX_COLUMNS = (
    "message_id",
    "tenant_id",
    "session_id",
    "turn_id",
    "correlation_id",
    "action_type",
    "payload",
    "status",
)
TRANSCRIPT_COLUMNS = tuple(c for c in TURN_COLUMNS if c not in ("tenant_id", "session_id", "seq"))
PENDING_COLUMNS = (
    "tenant_id",
    "message_id",
    "session_id",
    "correlation_id",
    "action_type",
    "payload",
    "attempts",
    "last_error",
    "created_at",
)


AUDIT_COLUMNS = (
    "tenant_id",
    "sequence",
    "entry_id",
    "correlation_id",
    "actor",
    "action",
    "session_id",
    "payload",
    "timestamp",
    "prev_hash",
    "hash",
)


CONSENT_COLUMNS = (
    "user_id",
    "voice_recording_consent",
    "data_learning_consent",
    "consent_date",
    "revoked_date",
)


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def prepare_turn(
    turn: conversation_pb2.ConversationTurn, tenant_id: str, session_id: str, now: datetime
) -> conversation_pb2.ConversationTurn:
    """The turn as every adapter stores it: ids and timestamp filled in, actions PENDING."""
    record = conversation_pb2.ConversationTurn()
    record.CopyFrom(turn)
    record.turn_id = record.turn_id or str(uuid.uuid4())
    record.session_id, record.tenant_id = session_id, tenant_id
    if not record.HasField("timestamp"):
        record.timestamp.FromDatetime(now)
    for action in record.actions:
        action.action_id = action.action_id or str(uuid.uuid4())
        action.status = conversation_pb2.ACTION_STATUS_PENDING
    return record


def message_dict(message: Message) -> dict[str, Any]:
    """`json_format.MessageToDict` for a message of scalar and enum fields, several times
    faster (the turn path converts a few per call); anything else goes to json_format."""
    result: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            return json_format.MessageToDict(message)
        if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            known = field.enum_type.values_by_number.get(value)
            value = known.name if known is not None else value
        elif field.type == FieldDescriptor.TYPE_FLOAT:
            value = type_checkers.ToShortestFloat(value)
        elif field.type in _INT64_TYPES:
            value = str(value)
        result[field.json_name] = value
    return result


def message_into(values: dict[str, Any], message: MessageT) -> MessageT:
    """`json_format.ParseDict` for what `message_dict` writes, several times faster;
    anything it does not recognise goes to json_format."""
    fields = message.DESCRIPTOR.fields_by_camelcase_name
    try:
        for key, value in values.items():
            field = fields[key]
            if field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
                raise KeyError(key)
            if field.enum_type is not None and isinstance(value, str):
                value = field.enum_type.values_by_name[value].number
            elif field.type in _INT64_TYPES:
                value = int(value)
            setattr(message, field.name, value)
    except (KeyError, TypeError, ValueError):
        message.Clear()
        return json_format.ParseDict(values, message)
    return message


def action_dict(action: conversation_pb2.Action) -> dict[str, Any]:
    """`json_format.MessageToDict(action)`, without its generic walk."""
    result: dict[str, Any] = {}
    if action.action_id:
        result["actionId"] = action.action_id
    if action.type:
        result["type"] = action.type
    if action.HasField("params"):
        result["params"] = json_format.MessageToDict(action.params)
    if action.status:
        result["status"] = conversation_pb2.ActionStatus.Name(action.status)
    return result


def action_into(values: dict[str, Any], action: conversation_pb2.Action) -> conversation_pb2.Action:
    """`json_format.ParseDict` for an action as `action_dict` writes it."""
    if values.keys() <= _ACTION_KEYS:
        try:
            action.action_id = values.get("actionId", "")
            action.type = values.get("type", "")
            if "params" in values:
                action.params.update(values["params"])
            status = values.get("status", 0)
            action.status = (
                conversation_pb2.ActionStatus.Value(status) if isinstance(status, str) else status
            )
            return action
        except (AttributeError, TypeError, ValueError):
            action.Clear()
    return json_format.ParseDict(values, action)


def turn_values(record: conversation_pb2.ConversationTurn, seq: int) -> tuple[Any, ...]:
    """Values for TURN_COLUMNS."""
    return (
        record.turn_id,
        record.tenant_id,
        record.session_id,
        seq,
        record.role,
        record.text,
        [action_dict(action) for action in record.actions],
        message_dict(record.metadata),
        record.correlation_id,
        record.timestamp.ToDatetime(UTC),
    )


def outbox_values(record: conversation_pb2.ConversationTurn) -> list[tuple[Any, ...]]:
    """Values for OUTBOX_COLUMNS, one row per action of the turn."""
    return [
        (
            action.action_id,
            record.tenant_id,
            record.session_id,
            record.turn_id,
            record.correlation_id,
            action.type,
            action_dict(action),
            action.status,
        )
        for action in record.actions
    ]


def turn_from(
    values: dict[str, Any], tenant_id: str, session_id: str
) -> conversation_pb2.ConversationTurn:
    """A turn from TRANSCRIPT_COLUMNS values."""
    turn = conversation_pb2.ConversationTurn(
        turn_id=values["turn_id"],
        session_id=session_id,
        tenant_id=tenant_id,
        role=values["role"],
        text=values["text"],
        correlation_id=values["correlation_id"],
        timestamp=timestamp(values["timestamp"]),
    )
    for action in values["actions"]:
        action_into(action, turn.actions.add())
    message_into(values["metadata"], turn.metadata)
    return turn


def outbox_message_from(values: dict[str, Any]) -> outbox_pb2.OutboxMessage:
    """An outbox message from PENDING_COLUMNS values."""
    return outbox_pb2.OutboxMessage(
        message_id=values["message_id"],
        tenant_id=values["tenant_id"],
        session_id=values["session_id"],
        correlation_id=values["correlation_id"],
        topic=f"action.{values['action_type']}",
        action=action_into(values["payload"], conversation_pb2.Action()),
        attempts=values["attempts"],
        last_error=values["last_error"],
        created_at=timestamp(values["created_at"]),
    )


def audit_values(entry: audit_pb2.AuditEntry) -> tuple[Any, ...]:
    """Values for AUDIT_COLUMNS."""
    return (
        entry.tenant_id,
        entry.sequence,
        entry.entry_id,
        entry.correlation_id,
        entry.actor,
        entry.action,
        entry.session_id,
        json_format.MessageToDict(entry.payload),
        entry.timestamp.ToDatetime(UTC),
        entry.prev_hash,
        entry.hash,
    )


def audit_from(values: dict[str, Any]) -> audit_pb2.AuditEntry:
    """An audit entry from AUDIT_COLUMNS values."""
    entry = audit_pb2.AuditEntry(
        tenant_id=values["tenant_id"],
        sequence=values["sequence"],
        entry_id=values["entry_id"],
        correlation_id=values["correlation_id"],
        actor=values["actor"],
        action=values["action"],
        session_id=values["session_id"],
        timestamp=timestamp(values["timestamp"]),
        prev_hash=values["prev_hash"],
        hash=values["hash"],
    )
    json_format.ParseDict(values["payload"], entry.payload)
    return entry


def consent_from(values: dict[str, Any], tenant_id: str) -> consent_pb2.UserConsent:
    """A consent from CONSENT_COLUMNS values."""
    return consent_pb2.UserConsent(
        user_id=values["user_id"],
        tenant_id=tenant_id,
        voice_recording_consent=bool(values["voice_recording_consent"]),
        data_learning_consent=bool(values["data_learning_consent"]),
        consent_date=timestamp(values["consent_date"]),
        revoked_date=timestamp(values["revoked_date"]),
    )


def short_context_values(
    short_context: conversation_pb2.ShortContext, stored_summary: str, *, replace_summary: bool
) -> dict[str, Any]:
    """The short context to store. The summary is the context service's own (it folds old
    turns into it): a commit never changes it; an explicit update replaces it only with a
    non-empty one."""
    values = json_format.MessageToDict(short_context)
    if not (replace_summary and short_context.summary):
        values["summary"] = stored_summary
    if not values["summary"]:
        del values["summary"]
    return values


def with_outbox_status(
    turns: list[conversation_pb2.ConversationTurn], statuses: dict[str, int]
) -> list[conversation_pb2.ConversationTurn]:
    """The turns with each action's status as the outbox now records it."""
    for turn in turns:
        for action in turn.actions:
            if action.action_id in statuses:
                action.status = conversation_pb2.ActionStatus.ValueType(statuses[action.action_id])
    return turns
