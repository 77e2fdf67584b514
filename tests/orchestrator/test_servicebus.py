"""The Service Bus adapter: message mapping on the SDK's real message types, batches split when
full, error mapping, settlement by the subscriber, and (with a namespace configured) a real
publish and receive."""

import asyncio
import json
import os
import random
import uuid
from typing import Any

import pytest

pytest.importorskip("azure.servicebus")

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus import exceptions as sb_errors
from google.protobuf import struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import outbox_pb2

from services.mesh.backoff import RetryPolicy
from services.orchestrator.bus import (
    BusMessage,
    BusMessageRejected,
    BusMisconfigured,
    BusUnavailable,
    HandlerRejected,
    bus_message_from_outbox,
    open_action_bus,
)
from services.orchestrator.bus.servicebus import (
    ServiceBusActionBus,
    ServiceBusSubscriber,
    bus_message_from_received,
    map_error,
    to_service_bus_message,
)
from tests.orchestrator.servicebus_fakes import FakeReceiver

SECRET = "c2VjcmV0LWtleS1ub3QtcmVhbA=="
CONNECTION = (
    "Endpoint=sb://unit-test.servicebus.windows.net/;"
    f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={SECRET}"
)
NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0)


def outbox_message(n: int = 1, *, size: int = 0, session: str = "s-1") -> outbox_pb2.OutboxMessage:
    params = struct_pb2.Struct()
    params.update({"productId": "kobe-6", "quantity": 2, "unitPrice": "189.99", "note": "x" * size})
    created = timestamp_pb2.Timestamp()
    created.FromJsonString("2025-12-04T10:00:00Z")
    return outbox_pb2.OutboxMessage(
        message_id=f"00000000-0000-4000-8000-{n:012d}",
        tenant_id="demo",
        session_id=session,
        correlation_id=f"corr-{n}",
        topic="action.create_order",
        action=conversation_pb2.Action(
            action_id=f"00000000-0000-4000-8000-{n:012d}", type="create_order", params=params
        ),
        created_at=created,
    )


def test_an_outbox_message_maps_to_a_service_bus_message_field_by_field() -> None:
    sent = to_service_bus_message(bus_message_from_outbox(outbox_message(7)))
    assert isinstance(sent, ServiceBusMessage)
    assert sent.message_id == "00000000-0000-4000-8000-000000000007"
    assert sent.session_id == "s-1"
    assert sent.correlation_id == "corr-7"
    assert sent.subject == "action.create_order"
    assert sent.content_type == "application/json"
    assert sent.application_properties == {
        "tenantId": "demo",
        "actionType": "create_order",
        "correlationId": "corr-7",
    }
    body = json.loads(b"".join(sent.body))
    assert body == {
        "actionId": "00000000-0000-4000-8000-000000000007",
        "type": "create_order",
        "params": {"productId": "kobe-6", "quantity": 2, "unitPrice": "189.99", "note": ""},
        "tenantId": "demo",
        "sessionId": "s-1",
        "correlationId": "corr-7",
        "createdAt": "2025-12-04T10:00:00Z",
    }


def test_a_service_bus_message_maps_back_to_the_same_bus_message() -> None:
    original = bus_message_from_outbox(outbox_message(3))
    back = bus_message_from_received(to_service_bus_message(original))
    assert back == original
    assert back.delivery_count == 1
    bare = to_service_bus_message(original)
    bare.application_properties = None  # a publisher that set no properties
    assert bus_message_from_received(bare).tenant_id == "demo", "falls back to the body"
    assert back.params()["quantity"] == 2


class RecordingBatch(ServiceBusMessageBatch):
    """The SDK's batch, remembering which message ids it accepted."""

    def __init__(self, max_size_in_bytes: int) -> None:
        super().__init__(max_size_in_bytes=max_size_in_bytes)
        self.ids: list[str] = []

    def add_message(self, message: Any) -> None:
        super().add_message(message)
        self.ids.append(message.message_id)


class FakeSender:
    """Our seam in place of the SDK's sender: real ServiceBusMessageBatch objects, sends
    recorded (or failing on the n-th send)."""

    def __init__(self, max_batch_bytes: int, fail_on: int = 0, error: Exception | None = None):
        self.max_batch_bytes = max_batch_bytes
        self.sent: list[list[str]] = []
        self.fail_on = fail_on
        self.error = error
        self.closed = False

    async def create_message_batch(self, max_size_in_bytes: int | None = None) -> Any:
        return RecordingBatch(max_size_in_bytes or self.max_batch_bytes)

    async def send_messages(self, batch: RecordingBatch, *, timeout: float) -> None:
        assert isinstance(batch, ServiceBusMessageBatch) and timeout > 0
        assert len(batch) == len(batch.ids) > 0
        if self.error is not None and len(self.sent) + 1 == self.fail_on:
            error, self.error = self.error, None  # fails once
            raise error
        self.sent.append(batch.ids)

    async def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self, sender: FakeSender) -> None:
        self.sender = sender
        self.senders_opened = 0
        self.closed = False

    def get_topic_sender(self, topic_name: str) -> FakeSender:
        assert topic_name == "meta-agent-actions"
        self.senders_opened += 1
        return self.sender

    async def close(self) -> None:
        self.closed = True


def _bus(sender: FakeSender) -> tuple[ServiceBusActionBus, FakeClient]:
    client = FakeClient(sender)
    return ServiceBusActionBus(CONNECTION, client_factory=lambda: client), client


def _messages(count: int, size: int = 400) -> list[BusMessage]:
    return [bus_message_from_outbox(outbox_message(n, size=size)) for n in range(count)]


async def test_publishes_in_order_in_batches_split_when_full_on_one_sender() -> None:
    sender = FakeSender(max_batch_bytes=1_500)
    bus, client = _bus(sender)
    messages = _messages(7)
    await bus.publish(messages[:5])
    await bus.publish(messages[5:])
    await bus.close()
    ids = [m.message_id for m in messages]
    assert [i for batch in sender.sent for i in batch] == ids
    assert len(sender.sent) > 2 and all(sender.sent), "split into several non-empty batches"
    assert client.senders_opened == 1, "one sender, reused"
    assert sender.closed and client.closed


async def test_a_message_too_large_for_an_empty_batch_is_rejected_after_the_ones_before() -> None:
    sender = FakeSender(max_batch_bytes=2_000)
    bus, _ = _bus(sender)
    small = _messages(2, size=10)
    huge = bus_message_from_outbox(outbox_message(9, size=5_000))
    with pytest.raises(BusMessageRejected) as raised:
        await bus.publish([*small, huge, *_messages(1, size=10)])
    assert raised.value.message_id == huge.message_id
    assert raised.value.published == tuple(m.message_id for m in small)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sb_errors.ServiceBusConnectionError(message="link detached"), BusUnavailable),
        (sb_errors.OperationTimeoutError(message="timed out"), BusUnavailable),
        (sb_errors.ServiceBusServerBusyError(message="busy"), BusUnavailable),
        (sb_errors.ServiceBusQuotaExceededError(message="topic full"), BusUnavailable),
        (OSError("network unreachable"), BusUnavailable),
        (sb_errors.MessagingEntityNotFoundError(message="no topic"), BusMisconfigured),
        (sb_errors.MessagingEntityDisabledError(message="disabled"), BusMisconfigured),
        (sb_errors.ServiceBusAuthorizationError(message="unauthorized"), BusMisconfigured),
        (sb_errors.ServiceBusAuthenticationError(message="bad token"), BusMisconfigured),
        (ValueError("invalid connection string"), BusMisconfigured),
    ],
)
async def test_sdk_errors_map_to_transient_or_configuration_errors(
    error: Exception, expected: type[Exception]
) -> None:
    sender = FakeSender(max_batch_bytes=1_500, fail_on=2, error=error)
    bus, _ = _bus(sender)
    messages = _messages(5)
    with pytest.raises(expected) as raised:
        await bus.publish(messages)
    assert type(raised.value) is expected
    assert list(raised.value.published) == sender.sent[0], "the first batch went out"  # type: ignore[attr-defined]


async def test_a_sender_that_failed_is_replaced_on_the_next_publish() -> None:
    sender = FakeSender(
        max_batch_bytes=100_000, fail_on=1, error=sb_errors.ServiceBusConnectionError()
    )
    bus, client = _bus(sender)
    with pytest.raises(BusUnavailable):
        await bus.publish(_messages(2))
    assert sender.closed and client.senders_opened == 1
    await bus.publish(_messages(2))
    assert client.senders_opened == 2 and len(sender.sent) == 1
    await bus.close()
    assert client.closed


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    leaked = sb_errors.ServiceBusAuthenticationError(message=f"rejected token for {CONNECTION}")
    assert SECRET not in str(map_error(leaked))
    bus = open_action_bus(CONNECTION)
    assert isinstance(bus, ServiceBusActionBus)
    assert SECRET not in repr(bus)
    subscriber = ServiceBusSubscriber(CONNECTION, "orders", _ok)
    assert SECRET not in repr(subscriber)


def test_open_action_bus_chooses_the_adapter_by_the_connection_value() -> None:
    assert type(open_action_bus(CONNECTION, topic="other")).__name__ == "ServiceBusActionBus"
    assert open_action_bus(CONNECTION, topic="other").topic == "other"  # type: ignore[attr-defined]
    for local in (None, "", "memory://"):
        assert type(open_action_bus(local)).__name__ == "LocalBus"
    with pytest.raises(BusMisconfigured, match="broker is required"):
        open_action_bus("", require_broker=True)
    with pytest.raises(BusMisconfigured, match="unrecognised"):
        open_action_bus("amqp://somewhere")


async def _ok(message: BusMessage) -> None:
    pass


async def test_the_subscriber_completes_abandons_or_dead_letters_by_the_handlers_outcome() -> None:
    seen: list[BusMessage] = []

    async def handler(message: BusMessage) -> None:
        seen.append(message)
        kind = message.payload()["correlationId"]
        if kind == "corr-2":
            raise RuntimeError("downstream unavailable")
        if kind == "corr-3":
            raise HandlerRejected("invalid params")

    subscriber = ServiceBusSubscriber(
        CONNECTION, "orders", handler, redelivery=NO_WAIT, rng=random.Random(0)
    )
    receiver = FakeReceiver()
    received = [
        to_service_bus_message(bus_message_from_outbox(outbox_message(n))) for n in (1, 2, 3)
    ]
    not_an_action = ServiceBusMessage(b"{}", message_id="stray")
    outcomes = [await subscriber.settle(receiver, m) for m in [*received, not_an_action]]
    assert outcomes == ["completed", "abandoned", "dead-lettered", "dead-lettered"]
    assert [(kind, options.get("reason")) for kind, _, options in receiver.settled] == [
        ("complete", None),
        ("abandon", None),
        ("dead-letter", "HandlerRejected"),
        ("dead-letter", "HandlerRejected"),
    ]
    assert [m.tenant_id for m in seen] == ["demo"] * 3
    assert (subscriber.completed, subscriber.abandoned, subscriber.dead_lettered) == (1, 1, 2)


class ScriptedReceiver(FakeReceiver):
    """A session receiver that fails to open, or hands out its batches then nothing."""

    def __init__(self, step: Exception | list[list[ServiceBusMessage]]) -> None:
        super().__init__([] if isinstance(step, Exception) else step)
        self.failure = step if isinstance(step, Exception) else None

    async def __aenter__(self) -> "ScriptedReceiver":
        if self.failure is not None:
            raise self.failure
        return self

    async def receive_messages(
        self, max_message_count: int, max_wait_time: float
    ) -> list[ServiceBusMessage]:
        assert max_message_count == 1, "a session is handled one message at a time"
        return await super().receive_messages(max_message_count, max_wait_time)


class ScriptedClient:
    def __init__(self, steps: list[Exception | list[list[ServiceBusMessage]]]) -> None:
        self.steps = steps
        self.receivers: list[ScriptedReceiver] = []
        self.options: list[dict[str, Any]] = []
        self.closed = False

    def get_subscription_receiver(self, **options: Any) -> ScriptedReceiver:
        self.options.append(options)
        receiver = ScriptedReceiver(self.steps.pop(0) if self.steps else [])
        self.receivers.append(receiver)
        return receiver

    async def close(self) -> None:
        self.closed = True


async def test_the_subscriber_takes_sessions_in_turn_reconnects_and_stops() -> None:
    from azure.servicebus import NEXT_AVAILABLE_SESSION

    wire = [to_service_bus_message(bus_message_from_outbox(outbox_message(n))) for n in (1, 2, 3)]
    client = ScriptedClient(
        [
            sb_errors.OperationTimeoutError(message="no session available"),
            sb_errors.ServiceBusConnectionError(message="link detached"),
            [[wire[0]], [wire[1]]],  # one session: two messages, then idle
            [[wire[2]]],  # the next session
        ]
    )
    handled: list[str] = []
    stop = asyncio.Event()

    async def handler(message: BusMessage) -> None:
        handled.append(message.correlation_id)
        if len(handled) == 3:
            stop.set()

    subscriber = ServiceBusSubscriber(
        CONNECTION,
        "orders",
        handler,
        sessions=True,
        reconnect=NO_WAIT,
        client_factory=lambda: client,
    )
    await asyncio.wait_for(subscriber.run(stop), 5)
    assert handled == ["corr-1", "corr-2", "corr-3"]
    assert [kind for r in client.receivers for kind, _, _ in r.settled] == ["complete"] * 3
    assert all(o["session_id"] is NEXT_AVAILABLE_SESSION for o in client.options)
    assert {o["subscription_name"] for o in client.options} == {"orders"}
    assert client.closed


INTEGRATION = os.environ.get("AZURE_SERVICE_BUS_CONNECTION_STRING", "")
SUBSCRIPTION = os.environ.get("SERVICE_BUS_TEST_SUBSCRIPTION", "")


@pytest.mark.skipif(
    not (INTEGRATION and SUBSCRIPTION),
    reason="needs AZURE_SERVICE_BUS_CONNECTION_STRING and SERVICE_BUS_TEST_SUBSCRIPTION",
)
async def test_publish_and_receive_one_action_on_a_real_namespace() -> None:
    topic = os.environ.get("SERVICE_BUS_TOPIC_ACTIONS", "meta-agent-actions")
    sessions = os.environ.get("SERVICE_BUS_TEST_SESSIONS", "").lower() in ("1", "true", "yes")
    mine = outbox_message(1, session=f"it-{uuid.uuid4().hex[:12]}")
    mine.message_id = mine.action.action_id = str(uuid.uuid4())
    outgoing = bus_message_from_outbox(mine)
    bus = ServiceBusActionBus(INTEGRATION, topic=topic)
    got: list[BusMessage] = []
    stop = asyncio.Event()

    async def handler(message: BusMessage) -> None:
        if message.message_id == outgoing.message_id:
            got.append(message)
            stop.set()

    subscriber = ServiceBusSubscriber(
        INTEGRATION, SUBSCRIPTION, handler, topic=topic, sessions=sessions, max_wait_time=2
    )
    try:
        await bus.publish([outgoing])
        await asyncio.wait_for(subscriber.run(stop), 60)
    finally:
        stop.set()
        await bus.close()
    [received] = got
    assert received == outgoing
    assert received.application_properties["tenantId"] == "demo"
