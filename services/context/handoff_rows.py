"""The hand-over queue's rows, shared by the store adapters (`handoffs_sqlite.py`,
`handoffs_postgres.py`).

A row is one hand-over of a tenant, keyed by its event id (the action id):

- `pending`: waiting for an agent, oldest first. `agent_id` / `connection_id` name the last
  holder when it was given back (released, or its lease ran out), empty when never handed out;
- `delivered`: in flight with `agent_id` on `connection_id` until `lease_until`;
- `done`: completed by its holder; the payload (customer text) is dropped and the row stays,
  so a redelivered action is not queued again.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from google.protobuf import struct_pb2
from metaagent.context.v1 import handoff_pb2

from services.context.rows import timestamp
from services.mesh.errors import failed_precondition

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DONE: Final = "done"

HANDOFF_COLUMNS: Final = (
    "event_id",
    "session_id",
    "user_id",
    "kind",
    "payload",
    "attempts",
    "created_at",
    "lease_until",
)
"""What a claim returns of each row, in this order."""


@dataclass(frozen=True)
class HandoffClaim:
    """One connection's claim (ContextService.ClaimHandoffs)."""

    agent_id: str
    connection_id: str
    lease_seconds: int
    limit: int
    """Waiting hand-overs to take at most (0: none, the held ones are renewed)."""
    skip: frozenset[str] = frozenset()
    """Held hand-overs the caller has already: renewed, not returned."""


def handoff_from(
    values: dict[str, Any], lease_until: datetime | None, redelivered: bool
) -> handoff_pb2.QueuedHandoff:
    """The message of a row (HANDOFF_COLUMNS decoded: the payload a dict, `created_at` a
    datetime; `lease_until` given apart, as each adapter keeps it differently)."""
    payload = struct_pb2.Struct()
    payload.update(values["payload"])
    return handoff_pb2.QueuedHandoff(
        event_id=values["event_id"],
        session_id=values["session_id"],
        user_id=values["user_id"],
        kind=values["kind"],
        payload=payload,
        attempts=values["attempts"],
        created_at=timestamp(values["created_at"]),
        lease_expires_at=timestamp(lease_until),
        redelivered=redelivered,
    )


def completes(
    status: str, holder: str, held_on: str, in_flight: bool, agent_id: str, connection_id: str
) -> bool:
    """Whether `agent_id` (on `connection_id`, when given) completes a hand-over whose row has
    `status`, `holder` (agent) and `held_on` (connection); `in_flight`: delivered and its lease
    still running. False when there is nothing to complete (done, or never handed out).
    FAILED_PRECONDITION (HANDOFF_HELD_ELSEWHERE) when another agent, or another connection
    of the agent while in flight, holds it."""
    if status == DONE or not holder:
        return False
    if holder != agent_id or (in_flight and connection_id and held_on != connection_id):
        raise failed_precondition(
            "another agent or connection holds this hand-over", "HANDOFF_HELD_ELSEWHERE"
        )
    return True
