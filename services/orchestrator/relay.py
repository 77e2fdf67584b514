"""The outbox relay: publishes the actions the context service committed with their turns.

A turn's actions and their outbox rows are written in one transaction (CommitTurn), whether or
not the bus is up. The relay sweeps the pending rows (ListOutbox, oldest first, every tenant,
claimed under a lease so that several replicas never hold the same message or session),
publishes them in order on the action bus with the action id as message id, and records the
outcome (MarkOutbox):

- published -> SENT (the action's status becomes sent);
- the bus failed -> PENDING with the error (attempts + 1), retried on a later sweep; a message
  whose attempts reach `max_attempts` -> FAILED instead (dead-lettered: the action's status
  becomes failed; logged at warning without customer text, and counted);
- the bus refused one message for good (too large) -> FAILED at once;
- the bus is misconfigured (unknown topic, bad credentials) -> nothing is marked, so no attempt
  is spent on a fault only an operator can fix; the relay keeps retrying with backoff.

Delivery is at least once: a crash between publishing and MarkOutbox(SENT) republishes the same
message ids on the next sweep, and the broker's duplicate detection (or the local bus, or an
idempotent consumer) drops the copies.

    relay = OutboxRelay(clients, bus)           # clients: MeshClients of the orchestrator
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    ...
    stop.set(); await task

ListOutbox and MarkOutbox are platform-level RPCs callable by the orchestrator identity only;
the relay calls them outside any inbound call, under a call context of its own: a fresh
correlation id per sweep and no tenant.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import grpc
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from prometheus_client import Counter

from services.mesh import correlation, tracing
from services.mesh.backoff import RetryPolicy
from services.orchestrator.background import BackgroundTask
from services.orchestrator.bus import (
    ActionBus,
    BusError,
    BusMessageRejected,
    BusMisconfigured,
    bus_message_from_outbox,
    redact,
)
from services.orchestrator.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST

if TYPE_CHECKING:
    from metaagent.context.v1 import context_service_pb2_grpc, outbox_pb2

    from services.mesh.clients import MeshClients
    from services.orchestrator.consumers import Consumer

__all__ = ["OutboxRelay", "RelayReport", "RelayRunner"]

log = logging.getLogger(__name__)

SENT: Final = conversation_pb2.ACTION_STATUS_SENT
PENDING: Final = conversation_pb2.ACTION_STATUS_PENDING
FAILED: Final = conversation_pb2.ACTION_STATUS_FAILED
MAX_ERROR_CHARS: Final = 500
DEFAULT_BACKOFF = RetryPolicy(attempts=1_000_000, base_delay=0.5, max_delay=60.0)
"""Between sweeps while the bus or the context service is down (full jitter: ~30 s on average
once at the cap)."""

PUBLISHED = Counter(
    "meta_agent_outbox_published_total", "Outbox messages published on the action bus."
)
PUBLISH_FAILURES = Counter(
    "meta_agent_outbox_publish_failures_total",
    "Failed publish attempts of outbox messages, by cause.",
    ["cause"],
)
DEAD_LETTERED = Counter(
    "meta_agent_outbox_dead_lettered_total",
    "Outbox messages given up on (marked FAILED): their actions failed.",
    ["reason"],
)


@dataclass
class RelayReport:
    """What one sweep did."""

    listed: int = 0
    published: int = 0
    """Marked SENT."""
    retried: int = 0
    """Marked PENDING after a failed attempt (to be retried)."""
    dead_lettered: int = 0
    """Marked FAILED (attempts exhausted or refused by the broker)."""
    bus_error: str = ""
    """The bus failure's type, when publishing failed."""
    bus_down: bool = False
    """The bus is unavailable or misconfigured (not: it refused one message)."""
    context_error: str = ""
    """The gRPC status of a failed ListOutbox / MarkOutbox."""

    @property
    def failed(self) -> bool:
        """The sweep hit an outage: the bus or the context service is down or refusing, so the
        next sweep should wait (backoff)."""
        return self.bus_down or bool(self.context_error)


class OutboxRelay:
    """Moves outbox rows onto the action bus; see the module docstring."""

    def __init__(
        self,
        context: MeshClients | Callable[[], context_service_pb2_grpc.ContextServiceAsyncStub],
        bus: ActionBus,
        *,
        max_attempts: int = 20,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        lease_seconds: int = 60,
        claimant: str = "",
        backoff: RetryPolicy = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        """`context`: the orchestrator's MeshClients, or a function returning a ContextService
        stub. `max_attempts`: publish attempts before a message is marked FAILED.
        `batch_size`: messages per sweep (ListOutbox caps it at 500). `poll_interval`: pause
        between sweeps when the outbox is empty; while the bus or the context service is down
        the pause grows by `backoff` (jittered, capped at its max_delay). `lease_seconds`: how
        long a sweep's messages are claimed, so that other relay replicas skip them (and their
        sessions); it must outlast a publish. `claimant`: this relay's name, unique per replica
        and kept across restarts (the pod name); a fresh uuid when not given."""
        if max_attempts < 1 or not 1 <= batch_size <= 500 or poll_interval < 0:
            raise ValueError("max_attempts >= 1, 1 <= batch_size <= 500, poll_interval >= 0")
        if not 1 <= lease_seconds <= 3600:
            raise ValueError("1 <= lease_seconds <= 3600")
        self._lease_seconds = lease_seconds
        self.claimant = claimant or f"relay-{uuid.uuid4().hex}"
        self._stub = context if callable(context) else _stub_of(context)
        self._bus = bus
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._backoff = backoff
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.totals = RelayReport()
        """Sums over every sweep of this relay."""

    async def run_once(self) -> RelayReport:
        """One sweep: list up to `batch_size` pending messages, publish them in order, mark
        the outcomes. Never raises for a bus or context failure: the report says what
        happened."""
        report = RelayReport()
        call = correlation.CallContext(correlation_id=f"relay-{uuid.uuid4().hex}")
        with correlation.bound(call), tracing.untraced():
            await self._sweep(report)
        for name in ("listed", "published", "retried", "dead_lettered"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(report, name))
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until `stop` is set: again at once while full batches come back, after
        `poll_interval` when the outbox is drained, with growing jittered backoff while the bus
        or the context service fails. Cancelling is safe at any point (at least once)."""
        failures = 0
        while not stop.is_set():
            try:
                report = await self.run_once()
            except Exception:  # a bug must not end the relay: back off and sweep again
                log.exception("outbox sweep failed unexpectedly")
                report = RelayReport(context_error="UNEXPECTED")
            if report.failed:
                failures += 1
                wait = max(self._poll_interval, self._backoff.backoff(failures, self._rng))
            else:
                failures = 0
                wait = 0.0 if report.listed >= self._batch_size else self._poll_interval
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await stop.wait()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)

    async def _sweep(self, report: RelayReport) -> None:
        stub = self._stub()
        try:
            listed = await stub.ListOutbox(
                context_pb.ListOutboxRequest(
                    page_size=self._batch_size,
                    lease_seconds=self._lease_seconds,
                    claimant=self.claimant,
                    report_backlog=True,
                )
            )
        except grpc.aio.AioRpcError as error:
            self._context_failed(report, "ListOutbox", error)
            return
        OUTBOX_BACKLOG.set(listed.backlog.pending)
        oldest = listed.backlog.oldest_created_at
        OUTBOX_OLDEST.set(
            max(time.time() - oldest.ToNanoseconds() / 1e9, 0.0) if listed.backlog.pending else 0.0
        )
        pending = list(listed.messages)
        report.listed = len(pending)
        if not pending:
            return
        failure: BusError | None = None
        try:
            await self._bus.publish([bus_message_from_outbox(m) for m in pending])
            published = {m.message_id for m in pending}
        except BusError as error:
            failure, published = error, set(error.published)
        except Exception as error:  # an adapter bug must not stop the relay
            log.exception("action bus raised an unexpected error")
            failure, published = BusError(f"{type(error).__name__}: {error}"), set()
        sent = [m.message_id for m in pending if m.message_id in published]
        if sent and not await self._mark(report, stub, sent, SENT):
            return
        report.published = len(sent)
        PUBLISHED.inc(len(sent))
        if failure is not None:
            await self._failed(
                report, stub, [m for m in pending if m.message_id not in published], failure
            )

    async def _failed(
        self,
        report: RelayReport,
        stub: context_service_pb2_grpc.ContextServiceAsyncStub,
        unsent: Sequence[outbox_pb2.OutboxMessage],
        failure: BusError,
    ) -> None:
        cause = type(failure).__name__
        report.bus_error = cause
        error = redact(f"{cause}: {failure}")[:MAX_ERROR_CHARS]
        report.bus_down = not isinstance(failure, BusMessageRejected)
        if isinstance(failure, BusMisconfigured):
            PUBLISH_FAILURES.labels(cause).inc()
            log.error(
                "action bus misconfigured; outbox messages stay pending",
                extra={"pending": len(unsent), "error": error},
            )
            return
        if isinstance(failure, BusMessageRejected):
            PUBLISH_FAILURES.labels(cause).inc()
            rejected = [m for m in unsent if m.message_id == failure.message_id]
            if rejected and await self._mark(report, stub, [failure.message_id], FAILED, error):
                self._dead_lettered(report, rejected, "rejected")
            return  # the others were not attempted: the next sweep takes them
        PUBLISH_FAILURES.labels(cause).inc(len(unsent))
        log.warning(
            "action bus unavailable; outbox messages stay pending",
            extra={"pending": len(unsent), "error": error},
        )
        exhausted = [m for m in unsent if m.attempts + 1 >= self._max_attempts]
        retry = [m for m in unsent if m.attempts + 1 < self._max_attempts]
        if retry and await self._mark(report, stub, [m.message_id for m in retry], PENDING, error):
            report.retried = len(retry)
        if exhausted and await self._mark(
            report, stub, [m.message_id for m in exhausted], FAILED, error
        ):
            self._dead_lettered(report, exhausted, "max_attempts")

    def _dead_lettered(
        self, report: RelayReport, messages: Sequence[outbox_pb2.OutboxMessage], reason: str
    ) -> None:
        report.dead_lettered += len(messages)
        DEAD_LETTERED.labels(reason).inc(len(messages))
        for message in messages:
            log.warning(
                "action dead-lettered: publishing gave up, the action failed",
                extra={
                    "messageId": message.message_id,
                    "tenantId": message.tenant_id,
                    "sessionId": message.session_id,
                    "actionType": message.action.type,
                    "attempts": message.attempts + 1,
                    "reason": reason,
                },
            )

    async def _mark(
        self,
        report: RelayReport,
        stub: context_service_pb2_grpc.ContextServiceAsyncStub,
        ids: Sequence[str],
        status: conversation_pb2.ActionStatus.ValueType,
        error: str = "",
    ) -> bool:
        try:
            await stub.MarkOutbox(
                context_pb.MarkOutboxRequest(message_ids=list(ids), status=status, error=error)
            )
        except grpc.aio.AioRpcError as failure:
            # Published but not marked: republished on a later sweep, dropped as a duplicate.
            self._context_failed(report, "MarkOutbox", failure)
            return False
        return True

    def _context_failed(self, report: RelayReport, rpc: str, error: grpc.aio.AioRpcError) -> None:
        report.context_error = error.code().name
        log.warning(
            "outbox relay could not reach the context service",
            extra={"rpc": rpc, "code": error.code().name},
        )


class RelayRunner:
    """The relay as a background task of a server: `start` (idempotent; fits a MeshServer
    readiness check placed after the dependency checks) subscribes the embedded consumers when
    the bus is the local one and starts `relay.run`; `stop` (a MeshServer cleanup, before the
    clients are closed) lets the current sweep finish, then closes the bus."""

    def __init__(
        self,
        relay: OutboxRelay,
        bus: ActionBus,
        *,
        local_consumers: Sequence[Consumer] = (),
        grace: float = 5.0,
    ) -> None:
        self.relay = relay
        self.bus = bus
        self._consumers = local_consumers
        self._task = BackgroundTask(
            relay.run,
            name="outbox-relay",
            label="outbox relay",
            grace=grace,
            extra={"bus": type(bus).__name__},
        )

    async def start(self) -> None:
        if self._task.started:
            return
        from services.orchestrator.bus.local import LocalBus
        from services.orchestrator.consumers import subscribe_local

        if isinstance(self.bus, LocalBus) and self._consumers:
            await subscribe_local(self.bus, self._consumers)
        await self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        await self.bus.close()


def _stub_of(
    clients: MeshClients,
) -> Callable[[], context_service_pb2_grpc.ContextServiceAsyncStub]:
    return lambda: clients.context
