"""The action bus port: the outbox-to-bus mapping, decoding, routing, redaction, the factory."""

import json
from decimal import Decimal

import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import outbox_pb2

from services.orchestrator.bus import (
    BusMessage,
    BusMisconfigured,
    BusUnavailable,
    HandlerRejected,
    Router,
    bus_message_from_outbox,
    open_action_bus,
    redact,
)
from services.orchestrator.bus.local import LocalBus


def _outbox() -> outbox_pb2.OutboxMessage:
    params = struct_pb2.Struct()
    params.update({"amount": 379.98, "currency": "EUR", "items": [{"qty": 2}]})
    created = timestamp_pb2.Timestamp()
    created.FromJsonString("2025-12-04T10:00:00.250Z")
    return outbox_pb2.OutboxMessage(
        message_id="6f1c1f8e-0000-4000-8000-000000000001",
        tenant_id="demo",
        session_id="s-1",
        correlation_id="corr-1",
        topic="action.payment_link",
        action=conversation_pb2.Action(
            action_id="6f1c1f8e-0000-4000-8000-000000000001",
            type="payment_link",
            params=params,
            status=conversation_pb2.ACTION_STATUS_PENDING,
        ),
        created_at=created,
        attempts=3,
        last_error="BusUnavailable: earlier",
    )


def test_an_outbox_message_becomes_a_bus_message_keyed_by_its_action_id() -> None:
    message = bus_message_from_outbox(_outbox())
    assert (message.message_id, message.subject, message.session_id) == (
        "6f1c1f8e-0000-4000-8000-000000000001",
        "action.payment_link",
        "s-1",
    )
    assert (message.correlation_id, message.tenant_id, message.content_type) == (
        "corr-1",
        "demo",
        "application/json",
    )
    assert message.action_type == "payment_link"
    assert message.application_properties == {
        "tenantId": "demo",
        "actionType": "payment_link",
        "correlationId": "corr-1",
    }
    assert json.loads(message.body) == {
        "actionId": "6f1c1f8e-0000-4000-8000-000000000001",
        "type": "payment_link",
        "params": {"amount": 379.98, "currency": "EUR", "items": [{"qty": 2}]},
        "tenantId": "demo",
        "sessionId": "s-1",
        "correlationId": "corr-1",
        "createdAt": "2025-12-04T10:00:00.250Z",
    }, "the relay's bookkeeping (status, attempts, errors) stays out of the body"


def test_the_payload_decodes_fractions_as_decimals_and_refuses_non_objects() -> None:
    message = bus_message_from_outbox(_outbox())
    assert message.params()["amount"] == Decimal("379.98")
    assert isinstance(message.params()["items"][0]["qty"], int)
    broken = BusMessage("m", "action.x", "s", "c", "t", b"[1, 2]")
    with pytest.raises(HandlerRejected):
        broken.payload()
    with pytest.raises(HandlerRejected):
        BusMessage("m", "action.x", "s", "c", "t", b'{"params": 3}').params()


async def test_a_router_sends_each_message_to_the_handlers_of_its_subject() -> None:
    got: list[tuple[str, str]] = []

    def record(name: str):  # type: ignore[no-untyped-def]
        async def handler(message: BusMessage) -> None:
            got.append((name, message.subject))

        return handler

    routes = Router().add({"action.create_order"}, record("orders")).add("action.", record("all"))
    for subject in ("action.create_order", "action.handoff_human"):
        await routes(BusMessage("m", subject, "s", "c", "t", b"{}"))
    assert got == [
        ("orders", "action.create_order"),
        ("all", "action.create_order"),
        ("all", "action.handoff_human"),
    ]
    assert routes.handles("action.x") and not Router().handles("action.x")


def test_redaction_removes_keys_and_signatures() -> None:
    text = (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;"
        "SharedAccessKey=abc+/=;EntityPath=t sr=x&sig=s1g%3D&se=1"
    )
    cleaned = redact(text)
    assert "abc+/=" not in cleaned and "s1g%3D" not in cleaned
    assert "SharedAccessKeyName=root" in cleaned and "SharedAccessKey=***" in cleaned


def test_errors_carry_what_was_published_and_never_a_key() -> None:
    error = BusUnavailable("failed with SharedAccessKey=topsecret", published=["a", "b"])
    assert error.published == ("a", "b")
    assert "topsecret" not in str(error)


def test_the_factory_opens_the_local_bus_without_a_connection_string() -> None:
    assert isinstance(open_action_bus(None), LocalBus)
    assert isinstance(open_action_bus(" memory:// "), LocalBus)
    with pytest.raises(BusMisconfigured):
        open_action_bus(None, require_broker=True)
    with pytest.raises(BusMisconfigured, match="unrecognised"):
        open_action_bus("Endpoint=https://not-service-bus/")
