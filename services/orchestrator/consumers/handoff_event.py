"""A hand-over to a human agent (`HandoffEvent`), built from a handoff_human or create_ticket
action on the bus, and its forms: the JSON an agent's WebSocket sends (`as_dict`, which is also
what the context service's hand-over queue keeps, `from_dict`) and the message WatchHandoffs
streams (`as_proto`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from google.protobuf import struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.orchestrator.bus import BusMessage, whole_numbers

__all__ = ["HANDOFF", "KINDS", "TICKET", "HandoffEvent", "HandoffHeldElsewhere"]

HANDOFF: Final = "action.handoff_human"
TICKET: Final = "action.create_ticket"
KINDS: Final = {HANDOFF: "handoff", TICKET: "ticket"}
PROTO_KINDS: Final = {"handoff": pb.HANDOFF_KIND_HANDOFF, "ticket": pb.HANDOFF_KIND_TICKET}
PROTO_ROLES: Final = {
    "user": conversation_pb2.TURN_ROLE_USER,
    "agent": conversation_pb2.TURN_ROLE_AGENT,
    "human": conversation_pb2.TURN_ROLE_HUMAN,
}


class HandoffHeldElsewhere(Exception):
    """An acknowledgement for an event another agent or connection holds."""


@dataclass(frozen=True)
class HandoffEvent:
    event_id: str
    """The action id."""
    kind: str
    """"handoff" (a person should take over) or "ticket" (a follow-up is needed)."""
    tenant_id: str
    session_id: str
    correlation_id: str
    reason: str = ""
    summary: str = ""
    transcript: tuple[Mapping[str, str], ...] = ()
    """The conversation as role/text pairs, oldest first (the escalation's `transcript`)."""
    customer_text: str = ""
    """The message that triggered it (`customerText`), when the action carried one."""
    entities: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] = field(default_factory=dict)
    order_id: str = ""
    language: str = ""
    created_at: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Every parameter of the action, as sent."""

    @classmethod
    def from_message(cls, message: BusMessage) -> HandoffEvent:
        payload = message.payload()
        params = message.params()
        user = params.get("user")
        if not isinstance(user, dict):
            user = {"userId": params["userId"]} if params.get("userId") else {}
        entities = params.get("entities")
        return cls(
            event_id=message.message_id,
            kind=KINDS.get(message.subject, message.action_type),
            tenant_id=message.tenant_id,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            reason=_text(params.get("reason")),
            summary=_text(params.get("summary")),
            transcript=_turns(params.get("transcript")),
            customer_text=_text(params.get("customerText")),
            entities=entities if isinstance(entities, dict) else {},
            user=user,
            order_id=_text(params.get("orderId")),
            language=_text(params.get("language")),
            created_at=_text(payload.get("createdAt")),
            params=params,
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HandoffEvent:
        """The event of its `as_dict` form (as the hand-over queue returns it, where numbers
        are doubles: whole ones become ints again)."""
        plain = whole_numbers(values)
        return cls(
            event_id=_text(plain.get("eventId")),
            kind=_text(plain.get("kind")),
            tenant_id=_text(plain.get("tenantId")),
            session_id=_text(plain.get("sessionId")),
            correlation_id=_text(plain.get("correlationId")),
            reason=_text(plain.get("reason")),
            summary=_text(plain.get("summary")),
            transcript=_turns(plain.get("transcript")),
            customer_text=_text(plain.get("customerText")),
            entities=_mapping(plain.get("entities")),
            user=_mapping(plain.get("user")),
            order_id=_text(plain.get("orderId")),
            language=_text(plain.get("language")),
            created_at=_text(plain.get("createdAt")),
            params=_mapping(plain.get("params")),
        )

    @property
    def user_id(self) -> str:
        """The customer's id, when the action named one."""
        return _text(self.user.get("userId"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings), for the agent's WebSocket."""
        result: dict[str, Any] = _plain(
            {
                "eventId": self.event_id,
                "kind": self.kind,
                "tenantId": self.tenant_id,
                "sessionId": self.session_id,
                "correlationId": self.correlation_id,
                "reason": self.reason,
                "summary": self.summary,
                "transcript": [dict(turn) for turn in self.transcript],
                "customerText": self.customer_text,
                "entities": dict(self.entities),
                "user": dict(self.user),
                "orderId": self.order_id,
                "language": self.language,
                "createdAt": self.created_at,
                "params": dict(self.params),
            }
        )
        return result

    def as_proto(self) -> pb.HandoffEvent:
        """The event as WatchHandoffs streams it."""
        created_at = None
        if self.created_at:
            created_at = timestamp_pb2.Timestamp()
            try:
                created_at.FromJsonString(self.created_at)
            except ValueError:
                created_at = None
        return pb.HandoffEvent(
            event_id=self.event_id,
            kind=PROTO_KINDS.get(self.kind, pb.HANDOFF_KIND_UNSPECIFIED),
            tenant_id=self.tenant_id,
            session_id=self.session_id,
            correlation_id=self.correlation_id,
            reason=self.reason,
            summary=self.summary,
            transcript=[
                pb.HandoffTurn(
                    role=PROTO_ROLES.get(
                        turn.get("role", ""), conversation_pb2.TURN_ROLE_UNSPECIFIED
                    ),
                    text=turn.get("text", ""),
                )
                for turn in self.transcript
            ],
            customer_text=self.customer_text,
            entities=_struct(self.entities),
            user=_struct(self.user),
            order_id=self.order_id,
            language=self.language,
            created_at=created_at,
            params=_struct(self.params),
        )


def _turns(value: Any) -> tuple[Mapping[str, str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        {"role": _text(item.get("role")), "text": _text(item.get("text"))}
        for item in value
        if isinstance(item, dict)
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(_plain(value))
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
