"""The hand-over queue in the context service (EnqueueHandoff, ClaimHandoffs, CompleteHandoff,
ReleaseHandoffs): durable, and shared by every orchestrator replica, so an agent watching on any
replica gets the hand-overs a turn on any other produced.

- `offer` queues an event once per action id (a redelivered action is not queued again); an
  event whose session is gone (its user was erased) is dropped. A context service that cannot
  take it raises: the bus delivers the action again.
- `watch` claims for the watch's connection (agent id + connection id; a watch naming no
  connection gets one of its own): at once, then every `poll_seconds`. Each claim renews the
  lease of what the connection holds and takes waiting hand-overs, oldest first, while the
  watch has none to deliver. A watch of the connection on any replica gets what the
  connection holds, first (the gateway sends each once per socket); no other connection gets
  it while the lease runs. `still_wanted` is asked before delivery; an event it refuses is
  completed (dropped). The first claim fails the watch (before it is registered) when the
  context service cannot answer; a later failure ends it with that error.
- When the last watch of a connection on this replica ends: if its agent left (cancelled
  before the deadline) or it named no connection, its hand-overs are given back at once
  (ReleaseHandoffs); if it reached its deadline, they stay with the connection until the
  lease (`lease_seconds`, at least the resume grace) runs out without a new watch, then go
  back to the queue.
- `complete` (AckHandoff) completes a hand-over for the agent holding it, on any replica.

Delivery to a person is at least once, as with the in-memory hub.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Final

import grpc
from google.protobuf import struct_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.context.v1 import handoff_pb2

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.freeform import struct_to_dict
from services.orchestrator.consumers.handoff import StillWanted
from services.orchestrator.consumers.handoff_event import HandoffEvent, HandoffHeldElsewhere

__all__ = ["ContextHandoffQueue", "ContextWatch", "lease_for"]

log = logging.getLogger(__name__)

HELD_ELSEWHERE: Final = "HANDOFF_HELD_ELSEWHERE"
MAX_LEASE_SECONDS: Final = 3600
MAX_ID_CHARS: Final = 128
MAX_SKIP: Final = 500
"""Event ids a watch tells each claim it has already (the most recent ones)."""


def lease_for(resume_grace: float, poll_seconds: float) -> int:
    """The lease of a connection's hand-overs: the resume grace (how long they wait for the
    connection's next watch), but at least three polls, so an open watch never loses them."""
    return min(MAX_LEASE_SECONDS, max(2, math.ceil(resume_grace), math.ceil(3 * poll_seconds)))


@contextmanager
def _bound(tenant_id: str, correlation_id: str) -> Iterator[None]:
    """The call context of a queue call: the tenant's, keeping the inbound deadline and
    correlation id when there is an inbound call."""
    current = correlation.current()
    call = dataclasses.replace(
        current,
        tenant_id=tenant_id,
        correlation_id=current.correlation_id or correlation_id[:MAX_ID_CHARS],
    )
    with correlation.bound(call):
        yield


class ContextHandoffQueue:
    """`HandoffQueue` over the context service; see the module docstring."""

    def __init__(
        self,
        clients: MeshClients,
        *,
        poll_seconds: float = 1.0,
        lease_seconds: int = 10,
        batch: int = 10,
        still_wanted: StillWanted | None = None,
    ) -> None:
        self._clients = clients
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.still_wanted = still_wanted
        self._watches: dict[tuple[str, str, str], int] = {}
        """Open watches on this replica per (tenant, agent, connection)."""
        self._background: set[asyncio.Task[None]] = set()

    async def offer(self, event: HandoffEvent) -> bool:
        payload = struct_pb2.Struct()
        payload.update(event.as_dict())
        request = context_pb.EnqueueHandoffRequest(
            event_id=event.event_id,
            session_id=event.session_id,
            user_id=event.user_id,
            kind=event.kind,
            payload=payload,
        )
        try:
            with _bound(event.tenant_id, event.correlation_id or f"handoff-{event.event_id}"):
                reply = await self._clients.context.EnqueueHandoff(request)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            log.info("hand-over dropped: its session is gone", extra={"eventId": event.event_id})
            return False
        return reply.enqueued

    @asynccontextmanager
    async def watch(
        self, tenant_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> AsyncIterator[ContextWatch]:
        own = not connection_id
        connection = connection_id or f"watch-{uuid.uuid4().hex}"
        key = (tenant_id, agent_id, connection)
        watch = ContextWatch(self, tenant_id, agent_id, connection)
        self._watches[key] = self._watches.get(key, 0) + 1
        started = False
        try:
            await watch.start()
            started = True
            yield watch
        finally:
            pump = watch.close()
            self._watches[key] -= 1
            if not self._watches[key]:
                del self._watches[key]
                if started and (own or not watch.expired):
                    self._spawn(self._release(key, pump, correlation.current().correlation_id))

    async def complete(
        self, tenant_id: str, event_id: str, *, agent_id: str = "", connection_id: str = ""
    ) -> bool:
        request = context_pb.CompleteHandoffRequest(
            event_id=event_id, agent_id=agent_id, connection_id=connection_id
        )
        try:
            with _bound(tenant_id, f"handoff-{event_id}"):
                reply = await self._clients.context.CompleteHandoff(request)
        except grpc.aio.AioRpcError as error:
            if MeshError.from_rpc_error(error).reason == HELD_ELSEWHERE:
                raise HandoffHeldElsewhere(event_id) from None
            raise
        return reply.completed

    async def aclose(self, grace: float = 5.0) -> None:
        """Let the releases of ended watches finish (a server's cleanup, before the clients
        close)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=grace)

    async def claim(
        self, tenant_id: str, agent_id: str, connection_id: str, limit: int, skip: list[str]
    ) -> list[handoff_pb2.QueuedHandoff]:
        with _bound(tenant_id, f"handoff-claim-{connection_id}"):
            reply = await self._clients.context.ClaimHandoffs(
                context_pb.ClaimHandoffsRequest(
                    agent_id=agent_id,
                    connection_id=connection_id,
                    lease_seconds=self.lease_seconds,
                    max_events=limit,
                    skip_event_ids=skip,
                )
            )
        return list(reply.handoffs)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` apart from the call that ended: no deadline, its own correlation
        context, kept referenced until done."""
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(
        self, key: tuple[str, str, str], pump: asyncio.Task[None] | None, correlation_id: str
    ) -> None:
        tenant_id, agent_id, connection_id = key
        if pump is not None:
            await asyncio.wait([pump])  # its last claim must not land after the release
        if key in self._watches:
            return  # the connection watches again here: what it holds stays its own
        request = context_pb.ReleaseHandoffsRequest(agent_id=agent_id, connection_id=connection_id)
        call = correlation.CallContext(
            correlation_id=correlation_id or f"handoff-release-{connection_id}"[:MAX_ID_CHARS],
            tenant_id=tenant_id,
        )
        try:
            with correlation.bound(call):
                reply = await self._clients.context.ReleaseHandoffs(request)
        except grpc.aio.AioRpcError as error:
            log.warning(
                "hand-overs not given back; they return when their lease runs out",
                extra={"agentId": agent_id, "code": error.code().name},
            )
            return
        if reply.released:
            log.info(
                "hand-overs not acknowledged, queued again",
                extra={"agentId": agent_id, "released": reply.released},
            )


class ContextWatch:
    """One watch on the context service's queue (`ContextHandoffQueue.watch`): a pump task
    claims for the connection every poll; iterating yields what it got, in order."""

    def __init__(
        self, queue: ContextHandoffQueue, tenant_id: str, agent_id: str, connection_id: str
    ) -> None:
        self._queue = queue
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.connection_id = connection_id
        self.expired = False
        self._ready: asyncio.Queue[handoff_pb2.QueuedHandoff | BaseException] = asyncio.Queue()
        self._known: OrderedDict[str, None] = OrderedDict()
        """Ids this watch got (for the claims' skip list; the most recent MAX_SKIP)."""
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first claim (its failure fails the watch), then the pump."""
        await self._claim()
        self._pump = asyncio.create_task(self._run(), name="handoff-watch-pump")

    def close(self) -> asyncio.Task[None] | None:
        """Stop claiming; the pump task (cancelled), for whoever must wait for it."""
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
        return pump

    def __aiter__(self) -> ContextWatch:
        return self

    async def __anext__(self) -> HandoffEvent:
        while True:
            item = await self._ready.get()
            if isinstance(item, BaseException):
                raise item
            event = self._event(item)
            if await self._wanted(event):
                return event

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._queue.poll_seconds)
            try:
                await self._claim()
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self._ending():
                    return  # the watch's own deadline cut the claim short: it ends by itself
                self._ready.put_nowait(error)  # the watch ends with it
                return
            except Exception as error:
                self._ready.put_nowait(error)
                return

    def _ending(self) -> bool:
        """The watch's deadline is near: a claim it cut short is no failure."""
        remaining = correlation.current().time_remaining()
        return remaining is not None and remaining <= max(2 * self._queue.poll_seconds, 1.0)

    async def _claim(self) -> None:
        limit = self._queue.batch if self._ready.empty() else 0
        claimed = await self._queue.claim(
            self.tenant_id, self.agent_id, self.connection_id, limit, list(self._known)
        )
        for handoff in claimed:
            if handoff.event_id in self._known:
                continue
            self._known[handoff.event_id] = None
            while len(self._known) > MAX_SKIP:
                self._known.popitem(last=False)
            self._ready.put_nowait(handoff)

    def _event(self, handoff: handoff_pb2.QueuedHandoff) -> HandoffEvent:
        stored = HandoffEvent.from_dict(struct_to_dict(handoff.payload))
        return dataclasses.replace(
            stored,
            event_id=handoff.event_id,
            tenant_id=self.tenant_id,
            session_id=handoff.session_id,
            kind=handoff.kind or stored.kind,
        )

    async def _wanted(self, event: HandoffEvent) -> bool:
        """`still_wanted`'s answer; an unwanted event is completed (never delivered)."""
        still_wanted = self._queue.still_wanted
        if still_wanted is None or await still_wanted(event):
            return True
        log.info("hand-over dropped: no longer wanted", extra={"eventId": event.event_id})
        with suppress(HandoffHeldElsewhere, grpc.aio.AioRpcError):
            await self._queue.complete(
                self.tenant_id,
                event.event_id,
                agent_id=self.agent_id,
                connection_id=self.connection_id,
            )
        return False
