"""The action bus on an Azure Service Bus topic (`azure-servicebus`, async client).

Publishing: one sender on the topic (`SERVICE_BUS_TOPIC_ACTIONS`), opened on the first publish
and reused until `close()` (a sender that failed is closed and a fresh one opened on the next
publish; the client stays). The messages of a publish go out in order, in as few batches as
fit (`create_message_batch`, a new batch when one is full). Each message carries the
action id as message id (enable duplicate detection on the topic so a republished copy is
dropped), the conversation session as session id (session-enabled subscriptions deliver a
session in order), the turn's correlation id, the subject `action.<type>` and the properties
tenantId / actionType / correlationId for subscription filters.

Consuming: `ServiceBusSubscriber` reads one subscription (session-enabled or not), completes a
message once its handler returned, abandons it when the handler raised (the broker redelivers
it and dead-letters it after the subscription's max delivery count) and dead-letters it at
once when the handler raised `HandlerRejected`.

Errors become `BusUnavailable` (network, timeouts, throttling, quota: retry later) or
`BusMisconfigured` (unknown topic, bad credentials, disabled entity). The connection string is
never logged, and error texts pass through `redact`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Final

from azure.core.exceptions import ClientAuthenticationError
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusMessage
from azure.servicebus import exceptions as sb_errors
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient
from azure.servicebus.amqp import AmqpMessageBodyType

from services.mesh import correlation
from services.mesh.backoff import RetryPolicy
from services.orchestrator.bus import (
    DEFAULT_TOPIC,
    SUBJECT_PREFIX,
    BusError,
    BusMessage,
    BusMessageRejected,
    BusMisconfigured,
    BusUnavailable,
    Handler,
    HandlerRejected,
    as_text_mapping,
)

__all__ = [
    "ServiceBusActionBus",
    "ServiceBusSubscriber",
    "bus_message_from_received",
    "map_error",
    "to_service_bus_message",
]

log = logging.getLogger(__name__)

ClientFactory = Callable[[], Any]
"""Returns an `azure.servicebus.aio.ServiceBusClient` (or an object with the same methods)."""

MISCONFIGURED: Final = (
    sb_errors.MessagingEntityNotFoundError,
    sb_errors.MessagingEntityDisabledError,
    sb_errors.ServiceBusAuthenticationError,
    sb_errors.ServiceBusAuthorizationError,
    ClientAuthenticationError,
)
SETTLE_REDELIVERY = RetryPolicy(attempts=10, base_delay=0.5, max_delay=5.0)
"""Wait before abandoning a failed message (holding its lock), so redeliveries back off."""
RECONNECT = RetryPolicy(attempts=1_000_000, base_delay=1.0, max_delay=30.0)
"""Wait before reopening a receiver that failed."""


def to_service_bus_message(message: BusMessage) -> ServiceBusMessage:
    """The Service Bus message of a bus message."""
    properties: dict[str | bytes, Any] = {}
    properties.update(message.application_properties)
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        session_id=message.session_id or None,
        correlation_id=message.correlation_id or None,
        subject=message.subject,
        content_type=message.content_type,
        application_properties=properties,
    )


def bus_message_from_received(received: ServiceBusMessage) -> BusMessage:
    """The bus message of a received (or any) Service Bus message. `delivery_count` is 1 on
    the first delivery (the broker's count of earlier deliveries, plus one)."""
    if received.body_type == AmqpMessageBodyType.DATA:
        body = b"".join(bytes(part) for part in received.body)
    elif received.body_type == AmqpMessageBodyType.VALUE:
        value = received.body
        body = value if isinstance(value, bytes) else json.dumps(value).encode("utf-8")
    else:
        raise HandlerRejected("a sequence body is not an action")
    properties = as_text_mapping(received.application_properties or {})
    subject = received.subject or ""
    if not received.message_id or not subject.startswith(SUBJECT_PREFIX):
        raise HandlerRejected("not an action message (no message id or subject)")
    previous = getattr(received, "delivery_count", None) or 0
    tenant_id = properties.get("tenantId") or _body_field(body, "tenantId")
    return BusMessage(
        message_id=str(received.message_id),
        subject=subject,
        session_id=received.session_id or "",
        correlation_id=str(received.correlation_id or properties.get("correlationId", "")),
        tenant_id=tenant_id,
        body=body,
        content_type=received.content_type or "",
        delivery_count=previous + 1,
    )


def _body_field(body: bytes, name: str) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    value = decoded.get(name) if isinstance(decoded, dict) else None
    return value if isinstance(value, str) else ""


def map_error(error: BaseException, published: Sequence[str] = ()) -> BusError:
    """The port's error for an SDK (or transport) error."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, MISCONFIGURED):
        return BusMisconfigured(f"Service Bus refused the topic: {text}", published=published)
    if isinstance(error, ValueError) and not isinstance(error, sb_errors.ServiceBusError):
        return BusMisconfigured(f"Service Bus configuration: {text}", published=published)
    return BusUnavailable(f"Service Bus unavailable: {text}", published=published)


def _default_factory(connection_string: str, **client_options: Any) -> ClientFactory:
    def factory() -> Any:
        return ServiceBusClient.from_connection_string(connection_string, **client_options)

    return factory


class ServiceBusActionBus:
    """Publishes actions to a Service Bus topic; see the module docstring."""

    def __init__(
        self,
        connection_string: str,
        *,
        topic: str = DEFAULT_TOPIC,
        client_factory: ClientFactory | None = None,
        max_batch_bytes: int | None = None,
        send_timeout: float = 30.0,
        retry_total: int = 2,
    ) -> None:
        """`retry_total`: the SDK's own retries per send; the relay retries beyond that."""
        self._topic = topic
        self._factory = client_factory or _default_factory(
            connection_string, retry_total=retry_total
        )
        self._max_batch_bytes = max_batch_bytes
        self._send_timeout = send_timeout
        self._client: Any = None
        self._sender: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never the connection string
        return f"ServiceBusActionBus(topic={self._topic!r})"

    @property
    def topic(self) -> str:
        return self._topic

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        if not messages:
            return
        published: list[str] = []
        async with self._lock:
            try:
                await self._publish(messages, published)
            except BusError:
                raise
            except Exception as error:
                mapped = map_error(error, published)
                await self._drop_sender()  # reopened on the next publish
                log.warning(
                    "publish to Service Bus failed",
                    extra={"topic": self._topic, "error": type(error).__name__},
                )
                raise mapped from error

    async def _publish(self, messages: Sequence[BusMessage], published: list[str]) -> None:
        sender = self._open_sender()
        batch = await sender.create_message_batch(self._max_batch_bytes)
        in_batch: list[str] = []
        for message in messages:
            outgoing = to_service_bus_message(message)
            try:
                batch.add_message(outgoing)
            except sb_errors.MessageSizeExceededError:
                if in_batch:
                    await sender.send_messages(batch, timeout=self._send_timeout)
                    published.extend(in_batch)
                    in_batch = []
                    batch = await sender.create_message_batch(self._max_batch_bytes)
                    try:
                        batch.add_message(outgoing)
                    except sb_errors.MessageSizeExceededError:
                        raise self._too_large(message, published) from None
                else:
                    raise self._too_large(message, published) from None
            in_batch.append(message.message_id)
        if in_batch:
            await sender.send_messages(batch, timeout=self._send_timeout)
            published.extend(in_batch)

    def _too_large(self, message: BusMessage, published: Sequence[str]) -> BusMessageRejected:
        return BusMessageRejected(
            f"message of {len(message.body)} bytes exceeds what the topic accepts",
            message.message_id,
            published=published,
        )

    def _open_sender(self) -> Any:
        if self._sender is None:
            if self._client is None:
                self._client = self._factory()
            self._sender = self._client.get_topic_sender(topic_name=self._topic)
        return self._sender

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                await sender.close()
            except Exception as error:  # already broken: nothing more to release
                log.debug("closing a failed sender raised", extra={"error": type(error).__name__})

    async def close(self) -> None:
        sender, client = self._sender, self._client
        self._sender = self._client = None
        if sender is not None:
            await sender.close()
        if client is not None:
            await client.close()


class ServiceBusSubscriber:
    """Hands the messages of one topic subscription to `handler`, one at a time per worker.

    With `sessions=True` (a session-enabled subscription) each of the `concurrency` workers
    takes the next available session and handles its messages strictly in order, one message
    at a time, releasing the session when it has been idle for `max_wait_time` seconds.
    """

    def __init__(
        self,
        connection_string: str,
        subscription: str,
        handler: Handler,
        *,
        topic: str = DEFAULT_TOPIC,
        sessions: bool = False,
        concurrency: int = 1,
        max_wait_time: float = 5.0,
        max_lock_renewal: float = 300.0,
        redelivery: RetryPolicy = SETTLE_REDELIVERY,
        reconnect: RetryPolicy = RECONNECT,
        client_factory: ClientFactory | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._topic = topic
        self._subscription = subscription
        self._handler = handler
        self._sessions = sessions
        self._concurrency = concurrency
        self._max_wait = max_wait_time
        self._max_lock_renewal = max_lock_renewal
        self._redelivery = redelivery
        self._reconnect = reconnect
        self._factory = client_factory or _default_factory(connection_string)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.completed = 0
        self.abandoned = 0
        self.dead_lettered = 0

    def __repr__(self) -> str:  # never the connection string
        return (
            f"ServiceBusSubscriber(topic={self._topic!r}, subscription={self._subscription!r}, "
            f"sessions={self._sessions})"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and handle until `stop` is set (the message in hand is finished first)."""
        client = self._factory()
        renewer = AutoLockRenewer(max_lock_renewal_duration=self._max_lock_renewal)
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(self._concurrency):
                    group.create_task(self._worker(client, renewer, stop), name=f"sb-sub-{n}")
        finally:
            await renewer.close()
            await client.close()

    async def _worker(self, client: Any, renewer: Any, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                receiver = client.get_subscription_receiver(
                    topic_name=self._topic,
                    subscription_name=self._subscription,
                    session_id=NEXT_AVAILABLE_SESSION if self._sessions else None,
                    max_wait_time=self._max_wait,
                    auto_lock_renewer=renewer,
                    prefetch_count=0 if self._sessions else 10,
                )
                async with receiver:
                    failures = 0
                    await self._receive(receiver, stop)
            except sb_errors.OperationTimeoutError:
                continue  # no session became available within max_wait_time
            except (sb_errors.SessionLockLostError, sb_errors.SessionCannotBeLockedError):
                continue
            except Exception as error:
                failures += 1
                mapped = map_error(error)
                log.warning(
                    "Service Bus receiver failed; reconnecting",
                    extra={
                        "subscription": self._subscription,
                        "error": type(error).__name__,
                        "misconfigured": isinstance(mapped, BusMisconfigured),
                    },
                )
                wait = self._reconnect.backoff(failures, self._rng)
                try:
                    async with asyncio.timeout(wait):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def _receive(self, receiver: Any, stop: asyncio.Event) -> None:
        count = 1 if self._sessions else 10
        while not stop.is_set():
            batch = await receiver.receive_messages(
                max_message_count=count, max_wait_time=self._max_wait
            )
            if not batch:
                if self._sessions:
                    return  # the session is idle: release it and take the next one
                continue
            for received in batch:
                await self.settle(receiver, received)

    async def settle(self, receiver: Any, received: Any) -> str:
        """Handle one received message and settle it: "completed", "abandoned" or
        "dead-lettered"."""
        try:
            message = bus_message_from_received(received)
        except HandlerRejected as rejected:
            return await self._dead_letter(receiver, received, str(rejected))
        call = correlation.CallContext(
            correlation_id=message.correlation_id,
            tenant_id=message.tenant_id,
            session_id=message.session_id,
        )
        try:
            with correlation.bound(call):
                await self._handler(message)
        except HandlerRejected as rejected:
            return await self._dead_letter(receiver, received, str(rejected))
        except Exception as error:
            log.warning(
                "handler failed; abandoning the message for redelivery",
                extra={
                    "messageId": message.message_id,
                    "deliveryCount": message.delivery_count,
                    "error": type(error).__name__,
                },
            )
            await asyncio.sleep(self._redelivery.backoff(message.delivery_count, self._rng))
            await self._settle(receiver.abandon_message, received)
            self.abandoned += 1
            return "abandoned"
        await self._settle(receiver.complete_message, received)
        self.completed += 1
        return "completed"

    async def _dead_letter(self, receiver: Any, received: Any, description: str) -> str:
        log.warning(
            "message rejected by its handler; dead-lettering",
            extra={"messageId": getattr(received, "message_id", "")},
        )
        await self._settle(
            receiver.dead_letter_message,
            received,
            reason="HandlerRejected",
            error_description=description[:1000],
        )
        self.dead_lettered += 1
        return "dead-lettered"

    async def _settle(self, settle: Any, received: Any, **options: Any) -> None:
        try:
            await settle(received, **options)
        except (sb_errors.MessageLockLostError, sb_errors.SessionLockLostError) as error:
            # The broker redelivers it; consumers are idempotent by action id.
            log.warning(
                "lock lost before settling; the message will be redelivered",
                extra={"error": type(error).__name__},
            )
