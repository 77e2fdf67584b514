"""Reference consumer of `action.handoff_human` and `action.create_ticket`: the hand-over to a
human agent.

Each action becomes one `HandoffEvent` (kind "handoff" or "ticket") carrying what the action's
parameters hold (reason, summary, transcript or customer text, entities, user, order id,
language) and the session it belongs to, so the agent can read the whole conversation (the
context service's GetSession with the transcript) and reply into the same session.

`HandoffHub` keeps the events of each tenant until a human agent connects
(`connect(tenant_id)`: an async iterator, used by the gateway's WebSocket), then hands each
event to exactly one connected agent of that tenant, oldest first. Idempotent by action id: a
redelivered action neither queues nor delivers its hand-over twice.

Events live in memory (embedded profile): a restart loses undelivered hand-overs, which the
turns' transcripts and the ticket actions' failed/sent statuses still record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from services.orchestrator.bus import BusMessage

__all__ = ["HandoffConsumer", "HandoffEvent", "HandoffHub"]

log = logging.getLogger(__name__)

HANDOFF: Final = "action.handoff_human"
TICKET: Final = "action.create_ticket"
KINDS: Final = {HANDOFF: "handoff", TICKET: "ticket"}


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
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.delivered: list[str] = []
        """Event ids handed to an agent, in order."""

    async def offer(self, event: HandoffEvent) -> bool:
        """Queue `event` for its tenant's agents; False (and nothing queued) when an event with
        its id was offered before."""
        if event.event_id in self._seen:
            return False
        self._seen[event.event_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        queue = self._pending.setdefault(event.tenant_id, deque())
        if len(queue) >= self._max_pending:
            dropped = queue.popleft()
            log.warning(
                "hand-over dropped: too many waiting without an agent",
                extra={"eventId": dropped.event_id, "tenantId": dropped.tenant_id},
            )
        queue.append(event)
        await self._notify(event.tenant_id)
        return True

    async def requeue(self, event: HandoffEvent) -> None:
        """Put back an event an agent's connection could not deliver (it goes first)."""
        if event.event_id in self.delivered:
            self.delivered.remove(event.event_id)
        self._pending.setdefault(event.tenant_id, deque()).appendleft(event)
        await self._notify(event.tenant_id)

    def pending(self, tenant_id: str) -> int:
        return len(self._pending.get(tenant_id, ()))

    def agents(self, tenant_id: str) -> int:
        """Agents of `tenant_id` connected now."""
        return self._agents.get(tenant_id, 0)

    async def connect(self, tenant_id: str) -> AsyncGenerator[HandoffEvent, None]:
        """The hand-overs of `tenant_id` for one connected agent: those waiting first, then
        each new one, until the iterator is closed. Each event goes to one agent only."""
        ready = self._condition(tenant_id)
        queue = self._pending.setdefault(tenant_id, deque())
        self._agents[tenant_id] = self._agents.get(tenant_id, 0) + 1
        try:
            while True:
                async with ready:
                    await ready.wait_for(lambda: bool(queue))
                    event = queue.popleft()
                self.delivered.append(event.event_id)
                log.info("hand-over delivered", extra={"eventId": event.event_id})
                yield event
        finally:
            self._agents[tenant_id] -= 1

    def _condition(self, tenant_id: str) -> asyncio.Condition:
        if tenant_id not in self._ready:
            self._ready[tenant_id] = asyncio.Condition()
        return self._ready[tenant_id]

    async def _notify(self, tenant_id: str) -> None:
        ready = self._condition(tenant_id)
        async with ready:
            ready.notify()


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


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
