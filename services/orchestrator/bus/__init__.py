"""The action bus port: what the outbox relay publishes and downstream agents consume.

A validated action leaves the orchestrator as one `BusMessage`: its message id is the action id
(the broker's duplicate detection drops a republished copy), its session id is the conversation
session (delivery in order per session), its subject is `action.<type>` and its body is the
action as JSON.

    bus = open_action_bus(connection_string, topic=topic)   # Service Bus, or the local bus
    await bus.publish([bus_message_from_outbox(m) for m in pending])
    await bus.close()

Adapters: `local.LocalBus` (embedded profile, in-process, with subscribers) and
`servicebus.ServiceBusActionBus` (Azure Service Bus topic; `ServiceBusSubscriber` consumes a
subscription). `publish` raises a `BusError`: `BusUnavailable` when the broker cannot take
messages now (retry later), `BusMisconfigured` when it never will as configured (unknown topic,
bad credentials), `BusMessageRejected` when one message can never be sent (too large). Each
names the messages it did publish before failing, so the relay marks exactly those sent.

Handlers (`Handler`) raise to have a message redelivered, or `HandlerRejected` to have it
dead-lettered at once (it can never be handled, e.g. invalid parameters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

from google.protobuf import json_format
from pydantic import SecretStr

if TYPE_CHECKING:
    from metaagent.context.v1 import outbox_pb2

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_TOPIC",
    "SUBJECT_PREFIX",
    "ActionBus",
    "BusError",
    "BusMessage",
    "BusMessageRejected",
    "BusMisconfigured",
    "BusUnavailable",
    "Handler",
    "HandlerRejected",
    "Router",
    "broker_connection",
    "bus_message_from_outbox",
    "open_action_bus",
    "redact",
    "subject_matcher",
    "whole_numbers",
]

CONTENT_TYPE: Final = "application/json"
SUBJECT_PREFIX: Final = "action."
DEFAULT_TOPIC: Final = "meta-agent-actions"
"""`SERVICE_BUS_TOPIC_ACTIONS` when unset (the seed's value)."""
MEMORY_URL: Final = "memory://"
MAX_ERROR_CHARS: Final = 500


@dataclass(frozen=True)
class BusMessage:
    """One action on the bus."""

    message_id: str
    """The action id: the broker's duplicate detection key."""
    subject: str
    """`action.<type>`."""
    session_id: str
    """The conversation session: messages of one session are delivered in order."""
    correlation_id: str
    """x-correlation-id of the turn that produced the action."""
    tenant_id: str
    body: bytes
    """The action as JSON: actionId, type, params, tenantId, sessionId, correlationId,
    createdAt."""
    content_type: str = CONTENT_TYPE
    delivery_count: int = field(default=0, compare=False)
    """Set on delivery: 1 for the first delivery, more for redeliveries."""

    @property
    def action_type(self) -> str:
        return self.subject.removeprefix(SUBJECT_PREFIX)

    @property
    def application_properties(self) -> dict[str, str]:
        """Broker-side properties subscription filters can match on."""
        return {
            "tenantId": self.tenant_id,
            "actionType": self.action_type,
            "correlationId": self.correlation_id,
        }

    def payload(self) -> dict[str, Any]:
        """The body decoded; JSON numbers with a fraction become `Decimal`, never floats."""
        decoded = json.loads(self.body, parse_float=Decimal)
        if not isinstance(decoded, dict):
            raise HandlerRejected(f"message {self.message_id}: the body is not a JSON object")
        return decoded

    def params(self) -> dict[str, Any]:
        """The action's parameters (an empty dict when absent)."""
        params = self.payload().get("params") or {}
        if not isinstance(params, dict):
            raise HandlerRejected(f"message {self.message_id}: params is not a JSON object")
        return params


def bus_message_from_outbox(message: outbox_pb2.OutboxMessage) -> BusMessage:
    """The bus message of an outbox row (the relay's mapping)."""
    action = message.action
    action_id = message.message_id or action.action_id
    action_type = action.type or message.topic.removeprefix(SUBJECT_PREFIX)
    body = {
        "actionId": action_id,
        "type": action_type,
        "params": whole_numbers(json_format.MessageToDict(action.params))
        if action.HasField("params")
        else {},
        "tenantId": message.tenant_id,
        "sessionId": message.session_id,
        "correlationId": message.correlation_id,
        "createdAt": message.created_at.ToJsonString() if message.HasField("created_at") else "",
    }
    return BusMessage(
        message_id=action_id,
        subject=message.topic or f"{SUBJECT_PREFIX}{action_type}",
        session_id=message.session_id,
        correlation_id=message.correlation_id,
        tenant_id=message.tenant_id,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    )


def whole_numbers(value: Any) -> Any:
    """`value` with whole floats as ints: Struct numbers are doubles, but a quantity of 2
    should read `2`, not `2.0`, on the bus (and in a hand-over read back from a Struct)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [whole_numbers(item) for item in value]
    return value


class BusError(Exception):
    """Publishing failed; `published` names the messages that did go out before the failure."""

    def __init__(self, message: str, *, published: Sequence[str] = ()) -> None:
        super().__init__(redact(message)[:MAX_ERROR_CHARS])
        self.published: tuple[str, ...] = tuple(published)


class BusUnavailable(BusError):
    """The broker cannot take messages now (network, timeout, throttling): retry later."""


class BusMisconfigured(BusError):
    """The broker will not take messages as configured (unknown topic, bad or missing
    credentials, disabled entity): retrying without an operator's fix is pointless."""


class BusMessageRejected(BusError):
    """One message can never be published (e.g. larger than the broker accepts)."""

    def __init__(self, message: str, message_id: str, *, published: Sequence[str] = ()) -> None:
        super().__init__(message, published=published)
        self.message_id = message_id


class HandlerRejected(Exception):
    """Raised by a handler for a message it will never accept: dead-letter it now instead of
    redelivering it."""


Handler = Callable[[BusMessage], Awaitable[None]]


class ActionBus(Protocol):
    """Where the relay publishes actions."""

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Publish `messages` in order; raise a `BusError` when not all of them went out."""

    async def close(self) -> None: ...


def subject_matcher(match: str | Collection[str]) -> Callable[[str], bool]:
    """A predicate on subjects: a string is a prefix (`"action."` matches every action, a
    subject like `"action.create_order"` matches itself); a collection lists exact subjects."""
    if isinstance(match, str):
        prefix = match
        return lambda subject: subject.startswith(prefix)
    subjects = frozenset(match)
    return lambda subject: subject in subjects


class Router:
    """One handler over several: each message goes to the handlers whose subjects match it
    (a Service Bus subscription feeds one handler; several consumers can share it)."""

    def __init__(self) -> None:
        self._routes: list[tuple[Callable[[str], bool], Handler]] = []

    def add(self, match: str | Collection[str], handler: Handler) -> Router:
        self._routes.append((subject_matcher(match), handler))
        return self

    def handles(self, subject: str) -> bool:
        return any(matches(subject) for matches, _ in self._routes)

    async def __call__(self, message: BusMessage) -> None:
        for matches, handler in self._routes:
            if matches(message.subject):
                await handler(message)


_SECRETS = re.compile(r"(SharedAccessKey|SharedAccessSignature|sig|AccessKey)=[^;&\s\"']*", re.I)


def redact(text: str) -> str:
    """`text` without the key or signature of a Service Bus connection string or SAS token."""
    return _SECRETS.sub(r"\1=***", text)


def open_action_bus(
    connection: str | SecretStr | None,
    *,
    topic: str = DEFAULT_TOPIC,
    require_broker: bool = False,
    **options: Any,
) -> ActionBus:
    """The action bus named by `connection` (`AZURE_SERVICE_BUS_CONNECTION_STRING`): a
    Service Bus connection string (`Endpoint=sb://...`) opens the topic `topic`
    (`SERVICE_BUS_TOPIC_ACTIONS`); empty, None or `memory://` opens the in-process local bus.
    `require_broker` (production) refuses the local bus. `options` go to the adapter."""
    raw = broker_connection(connection)
    if raw is None:
        if require_broker:
            raise BusMisconfigured(
                "an action bus broker is required: set AZURE_SERVICE_BUS_CONNECTION_STRING"
            )
        from services.orchestrator.bus.local import LocalBus

        return LocalBus(**options)
    if _is_service_bus(raw):
        try:
            from services.orchestrator.bus.servicebus import ServiceBusActionBus
        except ImportError as error:
            raise BusMisconfigured(
                f"the Service Bus adapter needs the azure-servicebus package ({error.name})"
            ) from error
        return ServiceBusActionBus(raw, topic=topic or DEFAULT_TOPIC, **options)
    raise BusMisconfigured(
        "unrecognised action bus: expected a Service Bus connection string "
        "(Endpoint=sb://...) or memory://"
    )


def broker_connection(connection: str | SecretStr | None) -> str | None:
    """The broker's connection string `connection` names, or None for the in-process bus
    (empty, None or `memory://`)."""
    raw = connection.get_secret_value() if isinstance(connection, SecretStr) else connection
    raw = (raw or "").strip()
    return None if raw in ("", MEMORY_URL) else raw


def _is_service_bus(raw: str) -> bool:
    parts = dict(
        part.split("=", 1) for part in raw.split(";") if "=" in part
    )  # Endpoint=sb://x/;SharedAccessKeyName=...;SharedAccessKey=...
    endpoint = {key.lower(): value for key, value in parts.items()}.get("endpoint", "")
    return endpoint.lower().startswith("sb://")


def as_text_mapping(values: Mapping[Any, Any]) -> dict[str, str]:
    """A broker's property map with str keys and values (received AMQP keys may be bytes)."""
    result: dict[str, str] = {}
    for key, value in values.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        result[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return result
