"""The hand-over queue in PostgreSQL (migration 0006): the statements of `PostgresStore`'s
hand-over methods, each run inside the store's tenant-bound transaction, so row-level security
shows them the tenant's rows only. Every value is a bound parameter."""

import asyncpg
from metaagent.context.v1 import handoff_pb2

from services.context.handoff_rows import (
    DELIVERED,
    DONE,
    HANDOFF_COLUMNS,
    PENDING,
    HandoffClaim,
    completes,
    handoff_from,
)
from services.mesh.errors import not_found
from services.mesh.freeform import struct_to_dict

COLUMNS = ", ".join(HANDOFF_COLUMNS)


async def enqueue(
    connection: asyncpg.Connection, tenant_id: str, handoff: handoff_pb2.QueuedHandoff
) -> bool:
    # FOR KEY SHARE: an erasure deleting the session waits for this transaction, then deletes
    # what it queued.
    session = await connection.fetchval(
        "SELECT 1 FROM session_contexts WHERE tenant_id = $1 AND session_id = $2 FOR KEY SHARE",
        tenant_id,
        handoff.session_id,
    )
    if session is None:
        raise not_found(f"session '{handoff.session_id}' does not exist", "SESSION_NOT_FOUND")
    status = await connection.execute(
        "INSERT INTO handoff_queue (tenant_id, event_id, session_id, user_id, kind, payload) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, event_id) DO NOTHING",
        tenant_id,
        handoff.event_id,
        handoff.session_id,
        handoff.user_id,
        handoff.kind,
        struct_to_dict(handoff.payload),
    )
    return _rows(status) == 1


async def claim(
    connection: asyncpg.Connection, tenant_id: str, request: HandoffClaim
) -> list[handoff_pb2.QueuedHandoff]:
    await connection.execute(
        "UPDATE handoff_queue SET status = $2 "
        "WHERE tenant_id = $1 AND status = $3 AND lease_until <= now()",
        tenant_id,
        PENDING,
        DELIVERED,
    )
    lease = float(request.lease_seconds)
    held = await connection.fetch(
        "WITH renewed AS (UPDATE handoff_queue "  # noqa: S608 - fixed column names
        "SET lease_until = now() + make_interval(secs => $4) "
        "WHERE tenant_id = $1 AND status = $5 AND agent_id = $2 AND connection_id = $3 "
        f"RETURNING position, {COLUMNS}) "
        f"SELECT {COLUMNS} FROM renewed WHERE NOT (event_id = ANY($6::text[])) ORDER BY position",
        tenant_id,
        request.agent_id,
        request.connection_id,
        lease,
        DELIVERED,
        sorted(request.skip),
    )
    taken: list[asyncpg.Record] = []
    if request.limit > 0:
        # The oldest waiting rows are picked once (a CTE), skipping those a concurrent claim
        # has locked, then put in flight with the connection.
        taken = await connection.fetch(
            "WITH picked AS (SELECT position FROM handoff_queue "  # noqa: S608
            "WHERE tenant_id = $1 AND status = $6 ORDER BY position LIMIT $7 "
            "FOR UPDATE SKIP LOCKED), taken AS (UPDATE handoff_queue AS h SET status = $5, "
            "agent_id = $2, connection_id = $3, lease_until = now() + make_interval(secs => $4), "
            "attempts = h.attempts + 1 FROM picked WHERE h.position = picked.position "
            f"RETURNING h.position, {COLUMNS}) SELECT {COLUMNS} FROM taken ORDER BY position",
            tenant_id,
            request.agent_id,
            request.connection_id,
            lease,
            DELIVERED,
            PENDING,
            request.limit,
        )
    return [_handoff(row, redelivered=True) for row in held] + [
        _handoff(row, redelivered=False) for row in taken
    ]


def _handoff(row: asyncpg.Record, *, redelivered: bool) -> handoff_pb2.QueuedHandoff:
    values = dict(row)
    return handoff_from(values, values["lease_until"], redelivered)


async def complete(
    connection: asyncpg.Connection,
    tenant_id: str,
    event_id: str,
    agent_id: str,
    connection_id: str,
) -> bool:
    row = await connection.fetchrow(
        "SELECT status, agent_id, connection_id, lease_until > now() AS live "
        "FROM handoff_queue WHERE tenant_id = $1 AND event_id = $2 FOR UPDATE",
        tenant_id,
        event_id,
    )
    if row is None:
        return False
    in_flight = row["status"] == DELIVERED and row["live"]
    if not completes(
        row["status"], row["agent_id"], row["connection_id"], in_flight, agent_id, connection_id
    ):
        return False
    await connection.execute(
        "UPDATE handoff_queue SET status = $3, payload = '{}', lease_until = '-infinity' "
        "WHERE tenant_id = $1 AND event_id = $2",
        tenant_id,
        event_id,
        DONE,
    )
    return True


async def release(
    connection: asyncpg.Connection, tenant_id: str, agent_id: str, connection_id: str
) -> int:
    status = await connection.execute(
        "UPDATE handoff_queue SET status = $4, lease_until = '-infinity' "
        "WHERE tenant_id = $1 AND status = $5 AND agent_id = $2 AND connection_id = $3",
        tenant_id,
        agent_id,
        connection_id,
        PENDING,
        DELIVERED,
    )
    return _rows(status)


async def erase(
    connection: asyncpg.Connection, tenant_id: str, user_id: str, session_ids: list[str]
) -> int:
    """Delete the hand-overs of `user_id` or of its sessions, in the erasure's transaction,
    after it deleted the sessions: an enqueue holding one of them (FOR KEY SHARE) has committed
    by then, and this statement sees what it queued."""
    status = await connection.execute(
        "DELETE FROM handoff_queue WHERE tenant_id = $1 "
        "AND ((user_id <> '' AND user_id = $2) OR session_id = ANY($3::text[]))",
        tenant_id,
        user_id,
        session_ids,
    )
    return _rows(status)


def _rows(status: str) -> int:
    """The row count of a command status ("INSERT 0 1", "UPDATE 2", "DELETE 0")."""
    return int(status.rsplit(" ", 1)[-1])
