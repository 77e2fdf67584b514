"""A Service Bus subscription feeding a consumer, as a background task of a server.

    feed = handoff_feed(connection, consumer, subscription="handoffs", topic=topic)
    MeshServer(..., readiness=[..., feed.start], cleanup=[feed.stop, ...])

The subscriber (`ServiceBusSubscriber`) completes a message only once the consumer returned, and
abandons it (the broker redelivers it, then dead-letters it after the subscription's maximum
delivery count) when the consumer raised: for hand-overs, when the context service could not
queue it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.orchestrator.background import BackgroundTask
from services.orchestrator.bus import BusMisconfigured

if TYPE_CHECKING:
    from services.orchestrator.bus.servicebus import ClientFactory, ServiceBusSubscriber
    from services.orchestrator.consumers import Consumer

__all__ = ["SubscriberRunner", "handoff_feed"]


class SubscriberRunner(BackgroundTask):
    """`subscriber.run` as a background task (`BackgroundTask`: `start` after the dependency
    checks, `stop` before the clients close: the message in hand is finished)."""

    def __init__(
        self, subscriber: ServiceBusSubscriber, subscription: str, *, grace: float = 10.0
    ) -> None:
        super().__init__(
            subscriber.run,
            name=f"subscriber-{subscription}",
            label="subscription feed",
            grace=grace,
            extra={"subscription": subscription},
        )
        self.subscriber = subscriber
        self.subscription = subscription


def handoff_feed(
    connection_string: str,
    consumer: Consumer,
    *,
    subscription: str,
    topic: str,
    client_factory: ClientFactory | None = None,
    **options: Any,
) -> SubscriberRunner:
    """The subscription `subscription` of `topic` handed to `consumer` (the hand-over
    consumer on the context queue): messages of other subjects are completed untouched."""
    try:
        from services.orchestrator.bus.servicebus import ServiceBusSubscriber
    except ImportError as error:
        raise BusMisconfigured(
            f"the Service Bus feed needs the azure-servicebus package ({error.name})"
        ) from error
    from services.orchestrator.consumers import router

    subscriber = ServiceBusSubscriber(
        connection_string,
        subscription,
        router([consumer]),
        topic=topic,
        client_factory=client_factory,
        **options,
    )
    return SubscriberRunner(subscriber, subscription)
