"""Reference consumer of `action.handoff_human` and `action.create_ticket`: the hand-over to a
human agent.

Each action becomes one `HandoffEvent` (kind "handoff" or "ticket") carrying what the action's
parameters hold (reason, summary, transcript or customer text, entities, user, order id,
language) and the session it belongs to, so the agent can read the whole conversation (the
context service's GetSession with the transcript) and reply into the same session.

`HandoffHub` keeps the events of each tenant until a human agent connects, then hands each
event to exactly one connected agent of that tenant, oldest first. Idempotent by action id: a
redelivered action neither queues nor delivers its hand-over twice. Two ways to connect:

- `watch(tenant_id, agent_id=, connection_id=)` (OrchestratorService.WatchHandoffs, behind the
  gateway's agent WebSocket): an event handed to the watch stays in flight with its
  *connection* until that connection's agent acknowledges it (`acknowledge`; another agent or
  connection is refused with `HandoffHeldElsewhere`). Watches naming the same connection (the
  gateway's id for one agent socket, which watches again each time a watch reaches its
  deadline) share its in-flight events: a new watch of the connection delivers them again,
  first, to the same socket (the gateway sends each event once per socket), and to no one else.
  When a connection's last watch ends, its unacknowledged events go back to the front of the
  queue for the next agent: at once when the agent left (the call was cancelled before its
  deadline, or the watch names no connection), or after `resume_grace` seconds without a new
  watch when the watch only reached its deadline (`HandoffWatch.expired`). Delivery to a person
  is at least once: an agent who dropped mid-delivery may have seen an event another agent gets
  next, which its id tells.
- `connect(tenant_id)`: an event counts as delivered once yielded (`requeue` puts one back).

`still_wanted` (optional) is asked before an event leaves the queue for an agent; an event it
answers False for is dropped. The orchestrator's answers False once the event's session is gone
(the user was erased), so an erased user's transcript and text reach no agent afterwards.

`HandoffQueue` is the port the orchestrator's WatchHandoffs / AckHandoff and the consumer use:
`HandoffHub` keeps events in memory (the embedded profile, one process: a restart loses
undelivered hand-overs, which the turns' transcripts and the ticket actions' statuses still
record); `handoff_context.ContextHandoffQueue` keeps them in the context service's durable
hand-over queue, shared by every orchestrator replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

from services.orchestrator.bus import BusMessage
from services.orchestrator.consumers.handoff_event import (
    HANDOFF,
    TICKET,
    HandoffEvent,
    HandoffHeldElsewhere,
)

__all__ = [
    "HandoffConsumer",
    "HandoffEvent",
    "HandoffHeldElsewhere",
    "HandoffHub",
    "HandoffQueue",
    "HandoffStream",
    "HandoffWatch",
    "StillWanted",
]

log = logging.getLogger(__name__)

StillWanted = Callable[[HandoffEvent], Awaitable[bool]]
"""Asked before an event is delivered; False drops it (module docstring)."""


class HandoffStream(Protocol):
    """One watch's events (`HandoffQueue.watch`): iterate it; each event stays in flight with
    the watch's connection until its agent acknowledges it."""

    expired: bool
    """Set by the caller when the watch ends because its deadline passed (its connection is
    expected to watch again): its in-flight events are kept for it a while."""

    def __aiter__(self) -> HandoffStream: ...

    async def __anext__(self) -> HandoffEvent: ...


class HandoffQueue(Protocol):
    """Where hand-overs wait for human agents: offered by the consumer, watched and
    acknowledged through OrchestratorService.WatchHandoffs / AckHandoff."""

    still_wanted: StillWanted | None

    async def offer(self, event: HandoffEvent) -> bool:
        """Queue `event` for its tenant's agents; False when its id was offered before."""

    def watch(
        self, tenant_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> AbstractAsyncContextManager[HandoffStream]:
        """One agent connection's watch of `tenant_id`'s hand-overs."""

    async def complete(
        self, tenant_id: str, event_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> bool:
        """`event_id` handled by `agent_id`: never delivered again. False when nothing held it;
        `HandoffHeldElsewhere` when another agent or connection holds it."""


@dataclass(eq=False)
class _Connection:
    """One agent socket's watches of a tenant and the events in flight with it."""

    tenant_id: str
    agent_id: str
    connection_id: str
    """The gateway's id for the socket; empty for a watch of its own."""
    in_flight: OrderedDict[str, HandoffEvent] = field(default_factory=OrderedDict)
    checking: set[str] = field(default_factory=set)
    """Events taken from the queue whose `still_wanted` answer is awaited (not yet delivered)."""
    watches: int = 0
    expiry: asyncio.TimerHandle | None = None
    """Set while no watch is open: when it fires, the in-flight events are queued again."""


class HandoffHub:
    """Per-tenant queues of hand-overs waiting for human agents; see the module docstring."""

    def __init__(
        self,
        *,
        max_pending: int = 10_000,
        remember: int = 100_000,
        resume_grace: float = 10.0,
        still_wanted: StillWanted | None = None,
    ) -> None:
        """`max_pending`: hand-overs kept per tenant without an agent (the oldest is dropped,
        with a warning, beyond it). `remember`: event ids kept for idempotency.
        `resume_grace`: how long a connection whose watch reached its deadline keeps its
        unacknowledged events for its next watch. `still_wanted`: see the module docstring."""
        self._max_pending = max_pending
        self._remember = remember
        self.resume_grace = resume_grace
        self.still_wanted = still_wanted
        self._pending: dict[str, deque[HandoffEvent]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listeners: dict[str, int] = {}
        """Agents on `connect` (not watches), per tenant."""
        self._connections: dict[str, dict[tuple[str, str], _Connection]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._returned: dict[str, str] = {}
        """Queued events a connection gave back, with the agent that held them: that agent's
        late acknowledgement still settles them."""
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
            self._returned.pop(dropped.event_id, None)
            log.warning(
                "hand-over dropped: too many waiting without an agent",
                extra={"eventId": dropped.event_id, "tenantId": dropped.tenant_id},
            )
        queue.append(event)
        self._wake(event.tenant_id)
        return True

    async def requeue(self, event: HandoffEvent) -> None:
        """Put back an event an agent's connection could not deliver (it goes first)."""
        self._put_back(event.tenant_id, [event])
        self._wake(event.tenant_id)

    def pending(self, tenant_id: str) -> int:
        return len(self._pending.get(tenant_id, ()))

    def agents(self, tenant_id: str) -> int:
        """Agents of `tenant_id` connected now: connections with an open watch, and
        `connect` iterators."""
        watching = sum(1 for c in self._connections.get(tenant_id, {}).values() if c.watches)
        return watching + self._listeners.get(tenant_id, 0)

    def reserved(self, tenant_id: str) -> int:
        """Events in flight with connections of `tenant_id` that have no open watch (kept for
        their next watch, within the grace period)."""
        return sum(
            len(c.in_flight) for c in self._connections.get(tenant_id, {}).values() if not c.watches
        )

    async def connect(self, tenant_id: str) -> AsyncGenerator[HandoffEvent, None]:
        """The hand-overs of `tenant_id` for one connected agent: those waiting first, then
        each new one, until the iterator is closed. Each event goes to one agent only and
        counts as delivered once yielded."""
        self._listeners[tenant_id] = self._listeners.get(tenant_id, 0) + 1
        try:
            while True:
                queue = self._queue(tenant_id)
                if not queue:
                    await self._wait(tenant_id)
                    continue
                event = self._pop(tenant_id)
                try:
                    wanted = await self._wanted(event)
                except BaseException:
                    self._put_back(tenant_id, [event])
                    self._wake(tenant_id)
                    raise
                if wanted:
                    yield event
        finally:
            self._listeners[tenant_id] -= 1

    @asynccontextmanager
    async def watch(
        self, tenant_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> AsyncIterator[HandoffWatch]:
        """One agent's acknowledged view of `tenant_id`'s hand-overs (module docstring)."""
        connections = self._connections.setdefault(tenant_id, {})
        key = (agent_id, connection_id)
        connection = connections.get(key) if connection_id else None
        if connection is None:
            connection = _Connection(tenant_id, agent_id, connection_id)
            if connection_id:
                connections[key] = connection
            else:  # a watch of its own: keyed by itself
                connections[(agent_id, f"\0{id(connection)}")] = connection
        elif connection.expiry is not None:
            connection.expiry.cancel()
            connection.expiry = None
        connection.watches += 1
        watch = HandoffWatch(self, connection)
        try:
            yield watch
        finally:
            watch.close()
            connection.watches -= 1
            if not connection.watches:
                if watch.expired and connection.connection_id and connection.in_flight:
                    connection.expiry = asyncio.get_running_loop().call_later(
                        self.resume_grace, self._expire, connection
                    )
                else:
                    self._release(connection)

    async def complete(
        self, tenant_id: str, event_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> bool:
        """`acknowledge`, as the `HandoffQueue` port has it."""
        return self.acknowledge(tenant_id, event_id, agent_id=agent_id, connection_id=connection_id)

    def acknowledge(
        self, tenant_id: str, event_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> bool:
        """Mark `event_id` handled by `agent_id` (on `connection_id`, when given): it leaves the
        connection holding it (or the queue, when that connection already gave it back).
        False when nothing of the tenant holds it (unknown, or acknowledged already);
        `HandoffHeldElsewhere` when another agent or connection holds it."""
        for connection in self._connections.get(tenant_id, {}).values():
            if event_id in connection.in_flight:
                if connection.agent_id != agent_id or (
                    connection_id and connection.connection_id != connection_id
                ):
                    raise HandoffHeldElsewhere(event_id)
                del connection.in_flight[event_id]
                return True
        holder = self._returned.get(event_id)
        if holder is None:
            return False
        queue = self._queue(tenant_id)
        for event in queue:
            if event.event_id == event_id:  # acknowledged after its connection gave it back
                if holder != agent_id:
                    raise HandoffHeldElsewhere(event_id)
                del self._returned[event_id]
                queue.remove(event)
                return True
        return False

    def _queue(self, tenant_id: str) -> deque[HandoffEvent]:
        return self._pending.setdefault(tenant_id, deque())

    def _pop(self, tenant_id: str) -> HandoffEvent:
        """The oldest waiting event of `tenant_id` (there is one), counted as delivered."""
        event = self._queue(tenant_id).popleft()
        self._returned.pop(event.event_id, None)
        self.delivered.append(event.event_id)
        if len(self.delivered) > 2 * self._remember:
            del self.delivered[: -self._remember]
        log.info("hand-over delivered", extra={"eventId": event.event_id})
        return event

    async def _wanted(self, event: HandoffEvent) -> bool:
        """`still_wanted`'s answer (True without one); an unwanted event is dropped here."""
        if self.still_wanted is None or await self.still_wanted(event):
            return True
        if event.event_id in self.delivered:
            self.delivered.remove(event.event_id)
        log.info("hand-over dropped: no longer wanted", extra={"eventId": event.event_id})
        return False

    async def _wait(self, tenant_id: str) -> None:
        """Until something changes for `tenant_id` (an event queued or taken by a sibling
        watch); callers re-check what they wait for. A cancelled waiter loses nothing."""
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(tenant_id, set())
        waiters.add(waiter)
        try:
            await waiter
        finally:
            waiters.discard(waiter)

    def _wake(self, tenant_id: str) -> None:
        for waiter in self._waiters.pop(tenant_id, set()):
            if not waiter.done():
                waiter.set_result(None)

    def _expire(self, connection: _Connection) -> None:
        """The grace period of a connection without a watch ran out."""
        connection.expiry = None
        if not connection.watches:
            self._release(connection)

    def _release(self, connection: _Connection) -> None:
        """Forget `connection`; its unacknowledged events go back to the front of the queue."""
        if connection.expiry is not None:
            connection.expiry.cancel()
            connection.expiry = None
        connections = self._connections.get(connection.tenant_id, {})
        for key, found in list(connections.items()):
            if found is connection:
                del connections[key]
        unacknowledged = list(connection.in_flight.values())
        connection.in_flight.clear()
        if unacknowledged:
            self._put_back(connection.tenant_id, unacknowledged)
            for event in unacknowledged:
                self._returned[event.event_id] = connection.agent_id
            log.info(
                "hand-overs not acknowledged, queued again",
                extra={"eventIds": [e.event_id for e in unacknowledged]},
            )
            self._wake(connection.tenant_id)

    def _put_back(self, tenant_id: str, events: Iterable[HandoffEvent]) -> None:
        """Queue `events` again at the front, in their order (no await: safe while
        cancelled)."""
        queue = self._queue(tenant_id)
        for event in reversed(list(events)):
            if event.event_id in self.delivered:
                self.delivered.remove(event.event_id)
            queue.appendleft(event)


class HandoffWatch:
    """One watch on a tenant's hand-overs (`HandoffHub.watch`): iterate it for the events;
    each stays in flight with the watch's connection until acknowledged."""

    def __init__(self, hub: HandoffHub, connection: _Connection) -> None:
        self._hub = hub
        self._connection = connection
        self.tenant_id = connection.tenant_id
        self._sent: set[str] = set()
        self._closed = False
        self.expired = False
        """Set by the caller when the watch ends because its deadline passed (its connection
        is expected to watch again): the in-flight events are kept for it a while."""

    def __aiter__(self) -> HandoffWatch:
        return self

    async def __anext__(self) -> HandoffEvent:
        connection, tenant_id = self._connection, self.tenant_id
        while not self._closed:
            for event_id, event in connection.in_flight.items():
                if event_id not in self._sent and event_id not in connection.checking:
                    self._sent.add(event_id)  # the connection's, delivered again by this watch
                    return event
            if not self._hub._queue(tenant_id):
                await self._hub._wait(tenant_id)
                continue
            event = self._hub._pop(tenant_id)
            # no await since the pop: in flight with the connection, so never lost
            connection.in_flight[event.event_id] = event
            connection.checking.add(event.event_id)
            try:
                wanted = await self._hub._wanted(event)
            finally:
                connection.checking.discard(event.event_id)
            if not wanted:
                connection.in_flight.pop(event.event_id, None)
                continue
            self._sent.add(event.event_id)
            self._hub._wake(tenant_id)  # sibling watches of the connection deliver it too
            return event
        raise StopAsyncIteration

    @property
    def in_flight(self) -> list[str]:
        """Ids of the events in flight with this watch's connection, oldest first."""
        return list(self._connection.in_flight)

    def close(self) -> None:
        self._closed = True


class HandoffConsumer:
    """Turns handoff_human / create_ticket actions into hand-over events on a hand-over queue
    (`hub`: in memory, or the context service's). A queue that cannot take the event raises,
    so the bus delivers the message again."""

    subjects: Final = frozenset({HANDOFF, TICKET})

    def __init__(self, hub: HandoffQueue) -> None:
        self.hub = hub

    async def handle(self, message: BusMessage) -> None:
        if message.subject not in self.subjects:
            return
        if not await self.hub.offer(HandoffEvent.from_message(message)):
            log.info("hand-over already queued", extra={"eventId": message.message_id})

    __call__ = handle
