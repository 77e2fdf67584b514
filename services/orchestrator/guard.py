"""Exactly one run per correlation id, one turn at a time per session (DESIGN section 5, steps
2 and 3), on the context service's idempotency claims and session leases.

A turn's correlation id is claimed first: the claimer runs the turn; a concurrent call with the
same id waits for the first one's stored response and returns it (marked `replayed`); a call
after completion gets the stored response at once. The session lease (with its fencing token)
serialises turns of one session, and CommitTurn refuses a commit whose lease was taken over.
"""

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError, failed_precondition

log = logging.getLogger(__name__)

IN_FLIGHT_POLL = (0.05, 0.5)
"""First and longest wait between polls of a key another call is processing."""


@dataclass(frozen=True)
class Claim:
    key: str
    claim_id: str


def fingerprint(request: pb.ProcessRequest) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(max(int(value * 1000), 1))
    return duration


def _aborted(message: str, reason: str) -> MeshError:
    return MeshError(grpc.StatusCode.ABORTED, message, reason, retry_after=1.0)


class TurnGuard:
    def __init__(self, clients: MeshClients, lease_seconds: float, lock_wait_seconds: float):
        self._clients = clients
        self._lease = lease_seconds
        self._lock_wait = lock_wait_seconds

    async def claim(self, request: pb.ProcessRequest) -> Claim | pb.ProcessResponse:
        """The claim on this call's correlation id, or the first call's stored response."""
        key = correlation.current().correlation_id
        ask = context_pb.BeginIdempotentRequest(
            key=key, lease=_seconds(self._lease), fingerprint=fingerprint(request)
        )
        wait = IN_FLIGHT_POLL[0]
        while True:
            begun = await self._clients.context.BeginIdempotent(ask)
            if begun.state == context_pb.IDEMPOTENCY_STATE_CLAIMED:
                return Claim(key, begun.claim_id)
            if begun.state == context_pb.IDEMPOTENCY_STATE_COMPLETED:
                stored = pb.ProcessResponse()
                stored.ParseFromString(begun.response)
                stored.replayed = True
                return stored
            remaining = correlation.current().time_remaining()
            if remaining is not None and remaining <= wait:
                raise _aborted("the same correlation id is still in flight", "IN_FLIGHT")
            await asyncio.sleep(wait)
            wait = min(wait * 2, IN_FLIGHT_POLL[1])

    async def complete(self, claim: Claim, response: pb.ProcessResponse) -> None:
        await self._clients.context.CompleteIdempotent(
            context_pb.CompleteIdempotentRequest(
                completion=context_pb.IdempotencyCompletion(
                    key=claim.key, claim_id=claim.claim_id, response=response.SerializeToString()
                )
            )
        )

    async def abandon(self, claim: Claim) -> None:
        """Give the key back after a failure, so the client's retry runs the turn again."""
        try:
            await asyncio.shield(
                self._clients.context.AbandonIdempotent(
                    context_pb.AbandonIdempotentRequest(key=claim.key, claim_id=claim.claim_id)
                )
            )
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            log.warning("could not abandon an idempotency claim; it expires with its lease")

    @asynccontextmanager
    async def session_lock(self, session_id: str) -> AsyncIterator[int]:
        """Hold the session's turn lease; yields its fencing token."""
        remaining = correlation.current().time_remaining()
        wait = self._lock_wait if remaining is None else max(min(self._lock_wait, remaining), 0)
        try:
            lease = await self._clients.context.AcquireSessionLock(
                context_pb.AcquireSessionLockRequest(
                    session_id=session_id,
                    ttl=_seconds(self._lease),
                    wait_timeout=_seconds(wait),
                )
            )
        except grpc.aio.AioRpcError as error:
            raise MeshError.from_dependency(error) from None
        try:
            yield lease.fencing_token
        finally:
            try:
                await asyncio.shield(
                    self._clients.context.ReleaseSessionLock(
                        context_pb.ReleaseSessionLockRequest(
                            session_id=session_id, fencing_token=lease.fencing_token
                        )
                    )
                )
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                log.warning("could not release a session lease; it expires on its own")


async def committed_turn(
    clients: MeshClients, session_id: str, turn_id: str
) -> conversation_pb2.ConversationTurn:
    """The turn an earlier attempt committed under `turn_id` (ids derive from the correlation
    id, so a retry that meets ALREADY_EXISTS answers from what was stored)."""
    token = ""
    while True:
        page = await clients.context.ListTurns(
            context_pb.ListTurnsRequest(session_id=session_id, page_size=500, page_token=token)
        )
        for stored in page.turns:
            if stored.turn_id == turn_id:
                return stored
        token = page.next_page_token
        if not token:
            raise failed_precondition(
                "this turn was committed but cannot be found", "TURN_NOT_FOUND"
            )
