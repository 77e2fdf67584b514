"""Reference consumers of the action bus: orders and payment links, hand-overs to humans.

A consumer names the subjects it handles and handles one message at a time; it is idempotent by
action id (the bus delivers at least once). Attach consumers to the local bus with
`subscribe_local`, or route a Service Bus subscription to them with `router`:

    consumers = EmbeddedConsumers.create()
    await subscribe_local(local_bus, consumers.all)
    # or
    ServiceBusSubscriber(conn, "orders", router(consumers.all), topic=topic, sessions=True)

Hand-overs go to an in-memory `HandoffHub` by default, or to the context service's durable
queue shared by every replica (`EmbeddedConsumers.create(hub=ContextHandoffQueue(clients))`,
fed from Service Bus by `feed.handoff_feed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.orchestrator.bus import BusMessage, Router
from services.orchestrator.bus.local import LocalBus
from services.orchestrator.consumers.handoff import HandoffConsumer, HandoffHub, HandoffQueue
from services.orchestrator.consumers.orders import OrdersConsumer
from services.orchestrator.consumers.payments import LocalPayments, PaymentsProvider

__all__ = ["Consumer", "EmbeddedConsumers", "router", "subscribe_local"]


class Consumer(Protocol):
    @property
    def subjects(self) -> frozenset[str]:
        """The subjects (`action.<type>`) it handles."""

    async def handle(self, message: BusMessage) -> None:
        """Handle one message; raise to have it redelivered, `HandlerRejected` to have it
        dead-lettered."""


async def subscribe_local(bus: LocalBus, consumers: Sequence[Consumer]) -> None:
    """One local-bus subscription per consumer, named after its class."""
    for consumer in consumers:
        await bus.subscribe(consumer.subjects, consumer.handle, name=type(consumer).__name__)


def router(consumers: Sequence[Consumer]) -> Router:
    """One handler dispatching to the consumers by subject (for one Service Bus subscription
    whose filter lets their subjects through)."""
    routes = Router()
    for consumer in consumers:
        routes.add(consumer.subjects, consumer.handle)
    return routes


@dataclass(frozen=True)
class EmbeddedConsumers:
    """The reference consumers of the embedded profile, wired together."""

    orders: OrdersConsumer
    handoff: HandoffConsumer

    @classmethod
    def create(
        cls, payments: PaymentsProvider | None = None, hub: HandoffQueue | None = None
    ) -> EmbeddedConsumers:
        """`hub`: where hand-overs go (an in-memory `HandoffHub` when None)."""
        return cls(
            OrdersConsumer(payments or LocalPayments()), HandoffConsumer(hub or HandoffHub())
        )

    @property
    def hub(self) -> HandoffQueue:
        """Where the gateway's agent WebSocket connects."""
        return self.handoff.hub

    @property
    def all(self) -> list[Consumer]:
        return [self.orders, self.handoff]
