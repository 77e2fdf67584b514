"""Reference consumer of `action.handoff_human` and `action.create_ticket`: the hand-over to a
human agent.

Each action becomes one `HandoffEvent` (kind "handoff" or "ticket") carrying what the action's
parameters hold (reason, summary, transcript or customer text, entities, user, order id,
language) and the session it belongs to, so the agent can read the whole conversation (the
context service's GetSession with the transcript) and reply into the same session.

`HandoffHub` keeps the events of each tenant until a human agent connects, then hands each
event to exactly one connected agent of that tenant, oldest first. Idempotent by action id: a
redelivered action neither queues nor delivers its hand-over twice. Two ways to connect:

- `watch(tenant_id)` (OrchestratorService.WatchHandoffs, behind the gateway's agent WebSocket):
  an event handed to the watch stays in flight with it until `acknowledge(tenant_id, event_id)`;
  when the watch closes (the agent disconnected, the stream was cancelled), the events it did
  not acknowledge go back to the front of the queue, in order, for the next agent. Delivery to
  a person is at least once: an agent who dropped mid-delivery may have seen an event it gets
  again, which its id tells.
- `connect(tenant_id)`: an event counts as delivered once yielded (`requeue` puts one back).

Events live in memory (embedded profile): a restart loses undelivered hand-overs, which the
turns' transcripts and the ticket actions' failed/sent statuses still record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from google.protobuf import struct_pb2, timestamp_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.orchestrator.bus import BusMessage

__all__ = ["HandoffConsumer", "HandoffEvent", "HandoffHub", "HandoffWatch"]

log = logging.getLogger(__name__)

HANDOFF: Final = "action.handoff_human"
TICKET: Final = "action.create_ticket"
KINDS: Final = {HANDOFF: "handoff", TICKET: "ticket"}
PROTO_KINDS: Final = {"handoff": pb.HANDOFF_KIND_HANDOFF, "ticket": pb.HANDOFF_KIND_TICKET}
PROTO_ROLES: Final = {
    "user": conversation_pb2.TURN_ROLE_USER,
    "agent": conversation_pb2.TURN_ROLE_AGENT,
    "human": conversation_pb2.TURN_ROLE_HUMAN,
}


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


class HandoffHub:
    """Per-tenant queues of hand-overs waiting for human agents; see the module docstring."""

    def __init__(self, *, max_pending: int = 10_000, remember: int = 100_000) -> None:
        """`max_pending`: hand-overs kept per tenant without an agent (the oldest is dropped,
        with a warning, beyond it). `remember`: event ids kept for idempotency."""
        self._max_pending = max_pending
        self._remember = remember
        self._pending: dict[str, deque[HandoffEvent]] = {}
        self._ready: dict[str, asyncio.Condition] = {}
        self._agents: dict[str, int] = {}
        self._watches: dict[str, set[HandoffWatch]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._returned: set[str] = set()
        """Ids of queued events a watch put back: a late acknowledgement still settles them."""
        self.delivered: list[str] = []
        """Event ids handed to an agent, in order (a requeued one is taken out again; the
        oldest beyond `remember` are forgotten)."""

    async def offer(self, event: HandoffEvent) -> bool:
        """Queue `event` for its tenant's agents; False (and nothing queued) when an event with
        its id was offered before."""
        if event.event_id in self._seen:
            return False
        self._seen[event.event_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        queue = self._queue(event.tenant_id)
        if len(queue) >= self._max_pending:
            dropped = queue.popleft()
            self._returned.discard(dropped.event_id)
            log.warning(
                "hand-over dropped: too many waiting without an agent",
                extra={"eventId": dropped.event_id, "tenantId": dropped.tenant_id},
            )
        queue.append(event)
        await self._notify(event.tenant_id)
        return True

    async def requeue(self, event: HandoffEvent) -> None:
        """Put back an event an agent's connection could not deliver (it goes first)."""
        self._put_back(event.tenant_id, [event])
        await self._notify(event.tenant_id)

    def pending(self, tenant_id: str) -> int:
        return len(self._pending.get(tenant_id, ()))

    def agents(self, tenant_id: str) -> int:
        """Agents of `tenant_id` connected now (watches included)."""
        return self._agents.get(tenant_id, 0)

    async def connect(self, tenant_id: str) -> AsyncGenerator[HandoffEvent, None]:
        """The hand-overs of `tenant_id` for one connected agent: those waiting first, then
        each new one, until the iterator is closed. Each event goes to one agent only and
        counts as delivered once yielded."""
        self._agents[tenant_id] = self._agents.get(tenant_id, 0) + 1
        try:
            while True:
                event = await self._take(tenant_id)
                yield event
        finally:
            self._agents[tenant_id] -= 1

    @asynccontextmanager
    async def watch(self, tenant_id: str) -> AsyncIterator[HandoffWatch]:
        """One agent's acknowledged view of `tenant_id`'s hand-overs (module docstring); on
        exit, whatever it did not acknowledge is queued again, first."""
        watch = HandoffWatch(self, tenant_id)
        self._watches.setdefault(tenant_id, set()).add(watch)
        self._agents[tenant_id] = self._agents.get(tenant_id, 0) + 1
        try:
            yield watch
        finally:
            self._agents[tenant_id] -= 1
            self._watches[tenant_id].discard(watch)
            unacknowledged = watch.release()
            if unacknowledged:
                self._put_back(tenant_id, unacknowledged)
                self._returned.update(e.event_id for e in unacknowledged)
                log.info(
                    "hand-overs not acknowledged, queued again",
                    extra={"eventIds": [e.event_id for e in unacknowledged]},
                )
                await asyncio.shield(self._notify(tenant_id))

    def acknowledge(self, tenant_id: str, event_id: str) -> bool:
        """Mark `event_id` handled: it leaves the watch holding it (or the queue, when that
        watch already closed and put it back). False when nothing of the tenant holds it."""
        for watch in self._watches.get(tenant_id, ()):
            if watch.settle(event_id):
                return True
        if event_id in self._returned:  # acknowledged after its watch closed
            self._returned.discard(event_id)
            queue = self._queue(tenant_id)
            for event in queue:
                if event.event_id == event_id:
                    queue.remove(event)
                    return True
        return False

    def _queue(self, tenant_id: str) -> deque[HandoffEvent]:
        return self._pending.setdefault(tenant_id, deque())

    async def _take(self, tenant_id: str) -> HandoffEvent:
        """The oldest waiting event of `tenant_id`, once there is one."""
        ready = self._condition(tenant_id)
        queue = self._queue(tenant_id)
        async with ready:
            await ready.wait_for(lambda: bool(queue))
            event = queue.popleft()
        self._returned.discard(event.event_id)
        self.delivered.append(event.event_id)
        if len(self.delivered) > 2 * self._remember:
            del self.delivered[: -self._remember]
        log.info("hand-over delivered", extra={"eventId": event.event_id})
        return event

    def _put_back(self, tenant_id: str, events: Iterable[HandoffEvent]) -> None:
        """Queue `events` again at the front, in their order (no await: safe while
        cancelled)."""
        queue = self._queue(tenant_id)
        for event in reversed(list(events)):
            if event.event_id in self.delivered:
                self.delivered.remove(event.event_id)
            queue.appendleft(event)

    def _condition(self, tenant_id: str) -> asyncio.Condition:
        if tenant_id not in self._ready:
            self._ready[tenant_id] = asyncio.Condition()
        return self._ready[tenant_id]

    async def _notify(self, tenant_id: str) -> None:
        ready = self._condition(tenant_id)
        async with ready:
            ready.notify_all()  # waiters re-check the queue; a cancelled one loses nothing


class HandoffWatch:
    """One agent's watch on a tenant's hand-overs (`HandoffHub.watch`): iterate it for the
    events; each stays in flight until acknowledged."""

    def __init__(self, hub: HandoffHub, tenant_id: str) -> None:
        self._hub = hub
        self.tenant_id = tenant_id
        self._in_flight: OrderedDict[str, HandoffEvent] = OrderedDict()
        self._closed = False

    def __aiter__(self) -> HandoffWatch:
        return self

    async def __anext__(self) -> HandoffEvent:
        if self._closed:
            raise StopAsyncIteration
        event = await self._hub._take(self.tenant_id)
        self._in_flight[event.event_id] = event  # no await since the take: never lost
        return event

    @property
    def in_flight(self) -> list[str]:
        """Ids of the events handed to this watch and not acknowledged, oldest first."""
        return list(self._in_flight)

    def settle(self, event_id: str) -> bool:
        return self._in_flight.pop(event_id, None) is not None

    def release(self) -> list[HandoffEvent]:
        """Close the watch; the events it did not acknowledge, oldest first."""
        self._closed = True
        events = list(self._in_flight.values())
        self._in_flight.clear()
        return events


class HandoffConsumer:
    """Turns handoff_human / create_ticket actions into hand-over events on a hub."""

    subjects: Final = frozenset({HANDOFF, TICKET})

    def __init__(self, hub: HandoffHub) -> None:
        self.hub = hub

    async def handle(self, message: BusMessage) -> None:
        if message.subject not in self.subjects:
            return
        if not await self.hub.offer(HandoffEvent.from_message(message)):
            log.info("hand-over already queued", extra={"eventId": message.message_id})

    __call__ = handle


def _text(value: Any) -> str:
    return "" if value is None else str(value)


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
