"""The reference consumers: orders and payment links (idempotent, Decimal money), hand-overs
kept until an agent connects and delivered once."""

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import outbox_pb2

from services.mesh.backoff import RetryPolicy
from services.orchestrator.bus import BusMessage, HandlerRejected, bus_message_from_outbox
from services.orchestrator.bus.local import LocalBus
from services.orchestrator.consumers import EmbeddedConsumers, router, subscribe_local
from services.orchestrator.consumers.handoff import HandoffConsumer, HandoffEvent, HandoffHub
from services.orchestrator.consumers.orders import OrdersConsumer
from services.orchestrator.consumers.payments import (
    LocalPayments,
    Payable,
    PaymentLink,
    money,
)
from tests.orchestrator.outbox_turns import (
    HANDOFF_PARAMS,
    LINK_PARAMS,
    ORDER_PARAMS,
    TICKET_PARAMS,
)

QUICK = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.005)
NOW = datetime(2025, 12, 4, 10, 0, tzinfo=UTC)


def action(
    kind: str,
    params: Mapping[str, Any],
    n: int = 1,
    *,
    tenant: str = "demo",
    session: str = "s-1",
    turn: str = "corr-1",
) -> BusMessage:
    """The bus message the relay would publish for an action (the real outbox mapping)."""
    struct = struct_pb2.Struct()
    struct.update(dict(params))
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(NOW)
    action_id = f"{turn}-{kind}-{n}"
    return bus_message_from_outbox(
        outbox_pb2.OutboxMessage(
            message_id=action_id,
            tenant_id=tenant,
            session_id=session,
            correlation_id=turn,
            topic=f"action.{kind}",
            action=conversation_pb2.Action(action_id=action_id, type=kind, params=struct),
            created_at=created,
        )
    )


def redelivered(message: BusMessage) -> BusMessage:
    return dataclasses.replace(message, delivery_count=message.delivery_count + 1)


def test_money_is_decimal_rounded_to_the_currencys_minor_units() -> None:
    assert money(189.99, "EUR") == Decimal("189.99")
    assert money(0.1 + 0.2, "EUR") == Decimal("0.30")
    assert money("12.345", "usd") == Decimal("12.35")
    assert money(Decimal("1500.5"), "JPY") == Decimal("1501")
    assert money(3, "COP") == Decimal("3.00")
    for bad in (-1, "abc", float("nan"), float("inf"), True, None):
        with pytest.raises(ValueError, match="amount"):
            money(bad, "EUR")


async def test_local_payments_give_a_deterministic_link_with_a_decimal_amount() -> None:
    payments = LocalPayments(clock=NOW.timestamp)
    order = OrdersConsumer(payments)
    await order.handle(action("create_order", ORDER_PARAMS))
    [recorded] = order.orders.values()
    link = await payments.create_link(recorded)
    assert link == PaymentLink(
        url="http://127.0.0.1/pay/corr-1-create_order-1",
        amount=Decimal("379.98"),
        currency="EUR",
        expires_at=NOW + timedelta(hours=24),
    )
    assert link.as_dict()["amount"] == "379.98"
    assert json.dumps(link.as_dict())


async def test_an_order_then_its_payment_link_each_once_despite_redeliveries() -> None:
    payments = LocalPayments()
    orders = OrdersConsumer(payments)
    create = action("create_order", {**ORDER_PARAMS, "email": "ana@example.com"})
    link = action("payment_link", {**LINK_PARAMS, "amount": "1.00"})  # the model's arithmetic
    for message in (create, redelivered(create), link, redelivered(link), redelivered(link)):
        await orders.handle(message)

    [order] = orders.orders.values()
    assert (order.order_id, order.quantity, order.unit_price, order.total) == (
        create.message_id,
        2,
        Decimal("189.99"),
        Decimal("379.98"),
    )
    assert order.details == {"email": "ana@example.com"}
    assert order.as_dict()["total"] == "379.98"
    assert payments.created == [order.order_id], "one link, however often it was delivered"
    record = orders.links[link.message_id]
    assert record.order_id == order.order_id
    assert record.link.amount == Decimal("379.98"), "the order's total, not the model's amount"


async def test_a_payment_link_without_an_order_charges_the_actions_amount() -> None:
    payments = LocalPayments()
    orders = OrdersConsumer(payments)
    link = action("payment_link", LINK_PARAMS, turn="corr-solo")
    await orders.handle(link)
    record = orders.links[link.message_id]
    assert record.order_id == link.message_id
    assert (record.link.amount, record.link.currency) == (Decimal("379.98"), "EUR")


async def test_a_payment_link_never_charges_another_tenants_order() -> None:
    orders = OrdersConsumer(LocalPayments())
    theirs = action("create_order", ORDER_PARAMS, tenant="acme", session="s-x", turn="t-x")
    await orders.handle(theirs)
    mine = action(
        "payment_link", {**LINK_PARAMS, "orderId": theirs.message_id, "amount": "10.00"}, turn="t-y"
    )
    await orders.handle(mine)
    record = orders.links[mine.message_id]
    assert record.order_id == mine.message_id and record.link.amount == Decimal("10.00")


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("create_order", {**ORDER_PARAMS, "quantity": 0}),
        ("create_order", {**ORDER_PARAMS, "quantity": 1.5}),
        ("create_order", {**ORDER_PARAMS, "unitPrice": -3}),
        ("create_order", {**ORDER_PARAMS, "currency": "euros"}),
        ("payment_link", {"currency": "EUR"}),
        ("payment_link", {"amount": "0.00", "currency": "EUR"}),
    ],
)
async def test_invalid_parameters_are_rejected_for_the_dead_letter_queue(
    kind: str, params: dict[str, Any]
) -> None:
    orders = OrdersConsumer(LocalPayments())
    with pytest.raises(HandlerRejected):
        await orders.handle(action(kind, params, turn="corr-bad"))
    assert orders.orders == {} and orders.links == {}


class FlakyPayments(LocalPayments):
    """Fails the first `failures` calls, like a provider having a bad minute."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def create_link(self, order: Payable) -> PaymentLink:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("provider timeout")
        return await super().create_link(order)


async def test_on_the_local_bus_a_provider_failure_is_retried_and_the_flow_completes() -> None:
    payments = FlakyPayments(failures=2)
    consumers = EmbeddedConsumers.create(payments)
    bus = LocalBus(redelivery=QUICK)
    await subscribe_local(bus, consumers.all)
    await bus.publish(
        [action("create_order", ORDER_PARAMS, 1), action("payment_link", LINK_PARAMS, 2)]
    )
    await asyncio.wait_for(bus.drain(), 5)
    assert payments.calls == 3 and payments.created == ["corr-1-create_order-1"]
    assert not bus.dead_letters


async def _next(agent: Any, timeout: float = 1.0) -> HandoffEvent:
    event: HandoffEvent = await asyncio.wait_for(anext(agent), timeout)
    return event


async def test_a_hand_over_waits_for_an_agent_and_is_delivered_once() -> None:
    consumers = EmbeddedConsumers.create()
    hub = consumers.hub
    handle = router(consumers.all)
    ticket = action("create_ticket", {**TICKET_PARAMS, "entities": {"order_id": "4411"}}, 1)
    handoff = action("handoff_human", {**HANDOFF_PARAMS, "user": {"userId": "u-1"}}, 2)
    for message in (ticket, handoff, redelivered(ticket), redelivered(handoff)):
        await handle(message)
    assert hub.pending("demo") == 2, "kept, once each, until an agent connects"

    agent = hub.connect("demo")
    first, second = await _next(agent), await _next(agent)
    assert (first.kind, second.kind) == ("ticket", "handoff")
    assert first.customer_text == TICKET_PARAMS["customerText"]
    assert first.summary == "el pedido no llegó" and first.entities == {"order_id": "4411"}
    assert (first.session_id, first.correlation_id, first.tenant_id) == ("s-1", "corr-1", "demo")
    assert first.created_at == "2025-12-04T10:00:00Z"
    assert second.user == {"userId": "u-1"} and second.reason == "customer_request"
    assert json.loads(json.dumps(second.as_dict()))["eventId"] == handoff.message_id
    assert hub.agents("demo") == 1 and hub.pending("demo") == 0

    await handle(redelivered(handoff))  # a late redelivery after delivery: still nothing new
    with pytest.raises(TimeoutError):
        await _next(agent, 0.05)
    assert hub.delivered == [ticket.message_id, handoff.message_id]
    await agent.aclose()
    assert hub.agents("demo") == 0


async def test_connected_agents_share_the_queue_and_tenants_stay_apart() -> None:
    hub = HandoffHub()
    handoff = HandoffConsumer(hub)
    first, second, other = hub.connect("demo"), hub.connect("demo"), hub.connect("acme")
    waiting = [asyncio.ensure_future(_next(agent)) for agent in (first, second)]
    await asyncio.sleep(0)
    for n in (1, 2):
        await handoff.handle(action("handoff_human", HANDOFF_PARAMS, n, turn=f"t-{n}"))
    got = sorted(e.event_id for e in await asyncio.gather(*waiting))
    assert got == ["t-1-handoff_human-1", "t-2-handoff_human-2"], "each to one agent"
    with pytest.raises(TimeoutError):
        await _next(other, 0.05)
    for agent in (first, second, other):
        await agent.aclose()


async def test_a_hand_over_the_gateway_could_not_send_is_requeued_first() -> None:
    hub = HandoffHub()
    handoff = HandoffConsumer(hub)
    for n in (1, 2):
        await handoff.handle(action("handoff_human", HANDOFF_PARAMS, n, turn=f"t-{n}"))
    agent = hub.connect("demo")
    lost = await _next(agent)
    await agent.aclose()  # the WebSocket dropped before the event reached the human
    await hub.requeue(lost)
    again = hub.connect("demo")
    assert [(await _next(again)).event_id for _ in range(2)] == [
        "t-1-handoff_human-1",
        "t-2-handoff_human-2",
    ]
    await again.aclose()
