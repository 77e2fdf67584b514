"""The rows every store adapter writes and reads, as plain Python values.

Adapters differ only in how they encode these values (JSON text and ISO dates for SQLite,
jsonb and timestamptz for PostgreSQL), so the shape of a stored turn or outbox message is
defined once, here.
"""

import json
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

from services.mesh.freeform import struct_to_dict

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
_SHORT_CONTEXT_FIELDS = {"summary": "summary", "last_intent": "lastIntent", "entities": "entities"}
_SHORT_CONTEXT_KEYS = frozenset(_SHORT_CONTEXT_FIELDS.values())
_SHORT_CONTEXT_NESTING = 32
"""Objects and arrays a stored short context may have for `short_context_into` to decode it
itself: far below where json_format's recursion limit (100 messages) could be reached."""
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_TIMESTAMP_SECONDS = range(-62135596800, 253402300800)
"""The seconds a Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z."""

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
    """`Timestamp.FromDatetime(value)` (a naive datetime is UTC), by integer arithmetic from
    the epoch; anything out of its range goes to FromDatetime, for the same error."""
    if value is None:
        return None
    if isinstance(value, datetime):
        days = value.toordinal() - _EPOCH_ORDINAL
        seconds = days * 86400 + value.hour * 3600 + value.minute * 60 + value.second
        offset = value.utcoffset()
        if offset:
            # FromDatetime takes the whole seconds of `value - offset` (an offset may have
            # microseconds) and the microseconds of `value`.
            offset_seconds = offset.days * 86400 + offset.seconds
            if offset.microseconds:
                micros = value.microsecond - offset.microseconds
                seconds = (seconds - offset_seconds) + micros // 1_000_000
            else:
                seconds -= offset_seconds
        if seconds in _TIMESTAMP_SECONDS:
            return Timestamp(seconds=seconds, nanos=value.microsecond * 1000)
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
        result["params"] = struct_to_dict(action.params)
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
    values = short_context_dict(short_context)
    if not (replace_summary and short_context.summary):
        values["summary"] = stored_summary
    if not values["summary"]:
        del values["summary"]
    return values


def short_context_dict(short_context: conversation_pb2.ShortContext) -> dict[str, Any]:
    """`json_format.MessageToDict(short_context)`, without its generic walk; a field it does
    not know (the message grew) goes to json_format."""
    values: dict[str, Any] = {}
    for field, value in short_context.ListFields():
        name = _SHORT_CONTEXT_FIELDS.get(field.name)
        if name is None:
            return json_format.MessageToDict(short_context)
        values[name] = struct_to_dict(value) if name == "entities" else value
    return values


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    values = dict(pairs)
    if len(values) != len(pairs):
        raise ValueError("duplicate key")
    return values


def short_context_into(
    text: str, short_context: conversation_pb2.ShortContext
) -> conversation_pb2.ShortContext:
    """`json_format.Parse(text, short_context)` for an empty `short_context` and what
    `short_context_values` writes, several times faster; anything it does not recognise (other
    keys or types, duplicate keys, deep nesting, bad JSON) goes to json_format, for the same
    result or error."""
    if isinstance(text, str) and text.count("{") + text.count("[") <= _SHORT_CONTEXT_NESTING:
        try:
            values = json.loads(text, object_pairs_hook=_unique_keys)
            if not (isinstance(values, dict) and values.keys() <= _SHORT_CONTEXT_KEYS):
                raise ValueError("not a stored short context")
            summary = values.get("summary", "")
            last_intent = values.get("lastIntent", "")
            entities = values.get("entities", {})
            if not (type(summary) is str and type(last_intent) is str and type(entities) is dict):
                raise ValueError("not a stored short context")
            short_context.summary = summary
            short_context.last_intent = last_intent
            if "entities" in values:
                short_context.entities.Clear()
                short_context.entities.update(entities)
            return short_context
        except (ValueError, TypeError, OverflowError, RecursionError):
            short_context.Clear()
    return json_format.Parse(text, short_context)


def with_outbox_status(
    turns: list[conversation_pb2.ConversationTurn], statuses: dict[str, int]
) -> list[conversation_pb2.ConversationTurn]:
    """The turns with each action's status as the outbox now records it."""
    for turn in turns:
        for action in turn.actions:
            if action.action_id in statuses:
                action.status = conversation_pb2.ActionStatus.ValueType(statuses[action.action_id])
    return turns
