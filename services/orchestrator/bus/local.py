"""The in-process action bus of the embedded profile, with Service Bus's delivery semantics.

- Every subscription gets its own copy of each message whose subject it matches; a message
  published while nobody subscribes is gone (like a topic without subscriptions).
- Messages of one session reach a subscription one at a time, in publish order; messages
  without a session are delivered independently.
- A handler that raises gets the message again after a jittered backoff, up to
  `max_deliveries` deliveries; then (or at once when it raises `HandlerRejected`) the message
  goes to `dead_letters`.
- A message id seen within `duplicate_window` seconds is dropped (`duplicates` counts them), so
  the relay republishing after a crash delivers nothing twice.
- `failing = True` makes `publish` raise `BusUnavailable` (tests, chaos drills).

Nothing survives the process: the outbox, not this bus, is what makes actions durable.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from services.mesh import correlation
from services.mesh.backoff import RetryPolicy
from services.orchestrator.bus import (
    BusMessage,
    BusUnavailable,
    Handler,
    HandlerRejected,
    subject_matcher,
)

__all__ = ["DeadLetter", "LocalBus", "LocalSubscription"]

log = logging.getLogger(__name__)

DEFAULT_REDELIVERY = RetryPolicy(attempts=5, base_delay=0.05, max_delay=2.0)


@dataclass(frozen=True)
class DeadLetter:
    """A message a subscription gave up on."""

    subscription: str
    message: BusMessage
    reason: str
    """`HandlerRejected`, or `MaxDeliveryCountExceeded` (Service Bus's reason)."""
    error: str
    """The exception type of the last failure (never its text: it may quote customer data)."""


@dataclass
class LocalSubscription:
    name: str
    matches: Callable[[str], bool]
    handler: Handler
    delivered: int = 0
    """Successful deliveries."""


class LocalBus:
    """In-process topic with subscriptions; see the module docstring."""

    def __init__(
        self,
        *,
        max_deliveries: int | None = None,
        redelivery: RetryPolicy = DEFAULT_REDELIVERY,
        duplicate_window: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        history: int = 10_000,
    ) -> None:
        self._redelivery = redelivery
        self.max_deliveries = max_deliveries or redelivery.attempts
        self._window = duplicate_window
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._subscriptions: list[LocalSubscription] = []
        self._queues: dict[tuple[str, str], deque[BusMessage]] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._closed = False
        self.failing = False
        """When true, `publish` raises BusUnavailable and accepts nothing."""
        self.published: deque[str] = deque(maxlen=history)
        """Ids accepted (not dropped as duplicates), in order (the latest `history`)."""
        self.duplicates = 0
        self.dead_letters: deque[DeadLetter] = deque(maxlen=history)
        """Messages given up on (the latest `history`)."""

    async def subscribe(
        self, match: str | Collection[str], handler: Handler, *, name: str | None = None
    ) -> LocalSubscription:
        """Deliver the messages whose subject matches `match` (a prefix such as `"action."`, or
        a collection of exact subjects) to `handler`, from the next publish on."""
        subscription = LocalSubscription(
            name or f"subscription-{len(self._subscriptions) + 1}",
            subject_matcher(match),
            handler,
        )
        if any(s.name == subscription.name for s in self._subscriptions):
            raise ValueError(f"subscription '{subscription.name}' already exists")
        self._subscriptions.append(subscription)
        return subscription

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        if self._closed:
            raise BusUnavailable("the local bus is closed")
        if self.failing:
            raise BusUnavailable("the local bus is failing (switched off)")
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) <= now - self._window:
            self._seen.popitem(last=False)
        for message in messages:
            if message.message_id in self._seen:
                self.duplicates += 1
                log.info("duplicate message dropped", extra={"messageId": message.message_id})
                continue
            self._seen[message.message_id] = now
            self.published.append(message.message_id)
            for subscription in self._subscriptions:
                if subscription.matches(message.subject):
                    self._enqueue(subscription, message)

    async def drain(self) -> None:
        """Return when every accepted message has been handled or dead-lettered (wrap it in
        `asyncio.timeout` to bound the wait)."""
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting messages; let deliveries in progress finish for up to `grace`
        seconds, then cancel them."""
        self._closed = True
        try:
            async with asyncio.timeout(grace):
                await self.drain()
        except TimeoutError:
            log.warning(
                "local bus closed with deliveries pending", extra={"queues": len(self._workers)}
            )
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()

    def _enqueue(self, subscription: LocalSubscription, message: BusMessage) -> None:
        # Without a session a message is its own ordering group (delivered independently).
        key = (subscription.name, message.session_id or f"\0{message.message_id}")
        queue = self._queues.setdefault(key, deque())
        queue.append(message)
        if key not in self._workers:
            # Deliveries run outside the publisher's call context.
            self._workers[key] = asyncio.get_running_loop().create_task(
                self._deliver_queue(key, subscription, queue),
                name=f"local-bus:{subscription.name}",
                context=contextvars.Context(),
            )

    async def _deliver_queue(
        self, key: tuple[str, str], subscription: LocalSubscription, queue: deque[BusMessage]
    ) -> None:
        try:
            while queue:
                await self._deliver(subscription, queue[0])
                queue.popleft()
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]
                if not queue:
                    self._queues.pop(key, None)

    async def _deliver(self, subscription: LocalSubscription, message: BusMessage) -> None:
        for delivery in range(1, self.max_deliveries + 1):
            attempt = dataclasses.replace(message, delivery_count=delivery)
            call = correlation.CallContext(
                correlation_id=message.correlation_id,
                tenant_id=message.tenant_id,
                session_id=message.session_id,
            )
            try:
                with correlation.bound(call):
                    await subscription.handler(attempt)
            except HandlerRejected:
                self._dead_letter(subscription, message, "HandlerRejected", "HandlerRejected")
                return
            except Exception as error:
                log.warning(
                    "handler failed; message will be redelivered",
                    extra={
                        "subscription": subscription.name,
                        "messageId": message.message_id,
                        "deliveryCount": delivery,
                        "error": type(error).__name__,
                    },
                )
                if delivery >= self.max_deliveries:
                    self._dead_letter(
                        subscription, message, "MaxDeliveryCountExceeded", type(error).__name__
                    )
                    return
                await asyncio.sleep(self._redelivery.backoff(delivery, self._rng))
            else:
                subscription.delivered += 1
                return

    def _dead_letter(
        self, subscription: LocalSubscription, message: BusMessage, reason: str, error: str
    ) -> None:
        log.warning(
            "message dead-lettered",
            extra={
                "subscription": subscription.name,
                "messageId": message.message_id,
                "subject": message.subject,
                "reason": reason,
            },
        )
        self.dead_letters.append(DeadLetter(subscription.name, message, reason, error))
