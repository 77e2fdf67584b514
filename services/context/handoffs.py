"""The hand-over queue of human agents (ContextService.EnqueueHandoff, ClaimHandoffs,
CompleteHandoff, ReleaseHandoffs): the requests checked, then the store's queue.

The orchestrator queues each hand-over once (by its action id), and whichever orchestrator
replica an agent watches on claims from here for the agent's connection, under a lease it
renews while the watch is open; the agent completes what it handled; a connection that left
gives its hand-overs back. See `handoff_rows` for the states of a row.
"""

import logging
import re
from typing import Final

from metaagent.context.v1 import context_service_pb2 as pb
from metaagent.context.v1 import handoff_pb2

from services.context.handoff_rows import HandoffClaim
from services.context.store import SessionStore
from services.mesh import correlation
from services.mesh.errors import FieldViolation, invalid_argument

log = logging.getLogger("metaagent.context")

MAX_PAYLOAD_BYTES: Final = 1 << 20
MAX_LEASE_SECONDS: Final = 3600
MAX_EVENTS: Final = 100
MAX_SKIP: Final = 1000
MAX_PERSON_CHARS: Final = 128
KIND: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
SINGLE_LINE: Final = re.compile(r"^[^\x00-\x1f\x7f]*\Z")
ID_RULE: Final = "must be 1-128 of [A-Za-z0-9._:-]"


def id_violations(field: str, value: str, *, required: bool = True) -> list[FieldViolation]:
    """What is wrong with an id of the mesh (correlation.ID_PATTERN), if anything."""
    if not value:
        return [FieldViolation(field, "is required")] if required else []
    if not correlation.ID_PATTERN.match(value):
        return [FieldViolation(field, ID_RULE)]
    return []


def _person(field: str, value: str, *, required: bool = True) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "is required")] if required else []
    if len(value) > MAX_PERSON_CHARS:
        return [FieldViolation(field, f"exceeds {MAX_PERSON_CHARS} characters")]
    if not SINGLE_LINE.match(value):
        return [FieldViolation(field, "must not contain control characters")]
    return []


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise invalid_argument(*violations)


class HandoffDesk:
    """The hand-over RPCs' checks and the store calls behind them."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def enqueue(self, tenant_id: str, request: pb.EnqueueHandoffRequest) -> bool:
        violations = id_violations("event_id", request.event_id)
        violations += id_violations("session_id", request.session_id)
        if not KIND.match(request.kind):
            violations.append(FieldViolation("kind", "must be 1-32 of [a-z0-9_], a letter first"))
        violations += _person("user_id", request.user_id, required=False)
        if not request.HasField("payload"):
            violations.append(FieldViolation("payload", "is required"))
        elif request.payload.ByteSize() > MAX_PAYLOAD_BYTES:
            violations.append(FieldViolation("payload", f"exceeds {MAX_PAYLOAD_BYTES} bytes"))
        _raise(violations)
        enqueued = await self._store.enqueue_handoff(
            tenant_id,
            handoff_pb2.QueuedHandoff(
                event_id=request.event_id,
                session_id=request.session_id,
                user_id=request.user_id,
                kind=request.kind,
                payload=request.payload,
            ),
        )
        log.info(
            "hand-over queued" if enqueued else "hand-over queued before",
            extra={"eventId": request.event_id, "kind": request.kind},
        )
        return enqueued

    async def claim(
        self, tenant_id: str, request: pb.ClaimHandoffsRequest
    ) -> list[handoff_pb2.QueuedHandoff]:
        violations = _person("agent_id", request.agent_id)
        violations += id_violations("connection_id", request.connection_id)
        if not 1 <= request.lease_seconds <= MAX_LEASE_SECONDS:
            violations.append(FieldViolation("lease_seconds", f"must be 1..{MAX_LEASE_SECONDS}"))
        if not 0 <= request.max_events <= MAX_EVENTS:
            violations.append(FieldViolation("max_events", f"must be 0..{MAX_EVENTS}"))
        if len(request.skip_event_ids) > MAX_SKIP:
            violations.append(FieldViolation("skip_event_ids", f"at most {MAX_SKIP} ids"))
        _raise(violations)
        claimed = await self._store.claim_handoffs(
            tenant_id,
            HandoffClaim(
                agent_id=request.agent_id,
                connection_id=request.connection_id,
                lease_seconds=request.lease_seconds,
                limit=request.max_events,
                skip=frozenset(request.skip_event_ids),
            ),
        )
        taken = [h.event_id for h in claimed if not h.redelivered]
        if taken:
            log.info(
                "hand-overs claimed",
                extra={"eventIds": taken, "agentId": request.agent_id},
            )
        return claimed

    async def complete(self, tenant_id: str, request: pb.CompleteHandoffRequest) -> bool:
        violations = id_violations("event_id", request.event_id)
        violations += _person("agent_id", request.agent_id)
        violations += id_violations("connection_id", request.connection_id, required=False)
        _raise(violations)
        completed = await self._store.complete_handoff(
            tenant_id, request.event_id, request.agent_id, request.connection_id
        )
        if completed:
            log.info(
                "hand-over completed",
                extra={"eventId": request.event_id, "agentId": request.agent_id},
            )
        return completed

    async def release(self, tenant_id: str, request: pb.ReleaseHandoffsRequest) -> int:
        violations = _person("agent_id", request.agent_id)
        violations += id_violations("connection_id", request.connection_id)
        _raise(violations)
        released = await self._store.release_handoffs(
            tenant_id, request.agent_id, request.connection_id
        )
        if released:
            log.info(
                "hand-overs given back",
                extra={"released": released, "agentId": request.agent_id},
            )
        return released
