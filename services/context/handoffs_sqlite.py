"""The hand-over queue in SQLite (migration 5 of `sqlite.py`): the statements of
`SqliteStore`'s hand-over methods, run on its one connection while the caller holds it. Leases
are Unix seconds (REAL), like the outbox's; rows are ordered by rowid."""

import json
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite
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
from services.context.sqlite_transaction import transaction
from services.mesh.errors import not_found
from services.mesh.freeform import struct_to_dict

COLUMNS = ", ".join(HANDOFF_COLUMNS)

MIGRATION = """
    CREATE TABLE handoff_queue (
        tenant_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'done')),
        agent_id TEXT NOT NULL DEFAULT '',
        connection_id TEXT NOT NULL DEFAULT '',
        lease_until REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, event_id)
    );
    CREATE INDEX handoff_queue_waiting ON handoff_queue (tenant_id, status);
    CREATE INDEX handoff_queue_user ON handoff_queue (tenant_id, user_id);
    CREATE INDEX handoff_queue_session ON handoff_queue (tenant_id, session_id);
"""


async def enqueue(
    db: aiosqlite.Connection, tenant_id: str, handoff: handoff_pb2.QueuedHandoff
) -> bool:
    async with transaction(db):
        session = await db.execute_fetchall(
            "SELECT 1 FROM session_contexts WHERE tenant_id = ? AND session_id = ?",
            (tenant_id, handoff.session_id),
        )
        if not list(session):
            raise not_found(f"session '{handoff.session_id}' does not exist", "SESSION_NOT_FOUND")
        inserted = await db.execute(
            "INSERT INTO handoff_queue (tenant_id, event_id, session_id, user_id, kind, payload, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, event_id) DO NOTHING",
            (
                tenant_id,
                handoff.event_id,
                handoff.session_id,
                handoff.user_id,
                handoff.kind,
                json.dumps(struct_to_dict(handoff.payload)),
                datetime.now(UTC).isoformat(),
            ),
        )
    return inserted.rowcount == 1


async def claim(
    db: aiosqlite.Connection, tenant_id: str, request: HandoffClaim
) -> list[handoff_pb2.QueuedHandoff]:
    now = time.time()
    until = now + request.lease_seconds
    async with transaction(db):
        await db.execute(
            "UPDATE handoff_queue SET status = ? "
            "WHERE tenant_id = ? AND status = ? AND lease_until <= ?",
            (PENDING, tenant_id, DELIVERED, now),
        )
        held = await db.execute_fetchall(
            "UPDATE handoff_queue SET lease_until = ? "  # noqa: S608 - fixed column names
            "WHERE tenant_id = ? AND status = ? AND agent_id = ? AND connection_id = ? "
            f"RETURNING rowid, {COLUMNS}",
            (until, tenant_id, DELIVERED, request.agent_id, request.connection_id),
        )
        taken: Iterable[Sequence[Any]] = []
        if request.limit > 0:
            taken = await db.execute_fetchall(
                "UPDATE handoff_queue SET status = ?, agent_id = ?, connection_id = ?, "  # noqa: S608
                "lease_until = ?, attempts = attempts + 1 WHERE rowid IN ("
                "SELECT rowid FROM handoff_queue WHERE tenant_id = ? AND status = ? "
                f"ORDER BY rowid LIMIT ?) RETURNING rowid, {COLUMNS}",
                (
                    DELIVERED,
                    request.agent_id,
                    request.connection_id,
                    until,
                    tenant_id,
                    PENDING,
                    request.limit,
                ),
            )
    kept = [row for row in held if row[1] not in request.skip]
    return _ordered(kept, redelivered=True) + _ordered(taken, redelivered=False)


def _ordered(
    rows: Iterable[Sequence[Any]], *, redelivered: bool
) -> list[handoff_pb2.QueuedHandoff]:
    """Messages of rows of rowid then HANDOFF_COLUMNS, in rowid order (RETURNING has none)."""
    result = []
    for row in sorted(rows, key=lambda row: int(row[0])):
        values = dict(zip(HANDOFF_COLUMNS, row[1:], strict=True))
        values["payload"] = json.loads(values["payload"])
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        lease = datetime.fromtimestamp(values["lease_until"], UTC)
        result.append(handoff_from(values, lease, redelivered))
    return result


async def complete(
    db: aiosqlite.Connection, tenant_id: str, event_id: str, agent_id: str, connection_id: str
) -> bool:
    async with transaction(db):
        rows = list(
            await db.execute_fetchall(
                "SELECT status, agent_id, connection_id, lease_until FROM handoff_queue "
                "WHERE tenant_id = ? AND event_id = ?",
                (tenant_id, event_id),
            )
        )
        if not rows:
            return False
        status, holder, held_on, lease_until = rows[0]
        in_flight = status == DELIVERED and lease_until > time.time()
        if not completes(status, holder, held_on, in_flight, agent_id, connection_id):
            return False
        await db.execute(
            "UPDATE handoff_queue SET status = ?, payload = '{}', lease_until = 0 "
            "WHERE tenant_id = ? AND event_id = ?",
            (DONE, tenant_id, event_id),
        )
    return True


async def release(
    db: aiosqlite.Connection, tenant_id: str, agent_id: str, connection_id: str
) -> int:
    released = await db.execute(
        "UPDATE handoff_queue SET status = ?, lease_until = 0 "
        "WHERE tenant_id = ? AND status = ? AND agent_id = ? AND connection_id = ?",
        (PENDING, tenant_id, DELIVERED, agent_id, connection_id),
    )
    return released.rowcount


async def erase(db: aiosqlite.Connection, tenant_id: str, user_id: str) -> int:
    """Delete the hand-overs of `user_id` or of its sessions (inside the erasure's
    transaction, which the caller opened, before it deletes the sessions)."""
    deleted = await db.execute(
        "DELETE FROM handoff_queue WHERE tenant_id = ? AND ((user_id <> '' AND user_id = ?) "
        "OR session_id IN (SELECT session_id FROM session_contexts "
        "WHERE tenant_id = ? AND user_id = ?))",
        (tenant_id, user_id, tenant_id, user_id),
    )
    return deleted.rowcount
