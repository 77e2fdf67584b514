"""The embedded store: one SQLite file, versioned migrations, one connection."""

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from google.protobuf import json_format
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import audit_pb2, consent_pb2, handoff_pb2, outbox_pb2

from services.context import handoffs_sqlite as handoffs
from services.context.audit import new_audit_entry
from services.context.handoff_rows import HandoffClaim
from services.context.rows import (
    AUDIT_COLUMNS,
    CONSENT_COLUMNS,
    OUTBOX_COLUMNS,
    PENDING_COLUMNS,
    TRANSCRIPT_COLUMNS,
    TURN_COLUMNS,
    audit_from,
    audit_values,
    consent_from,
    outbox_message_from,
    outbox_values,
    prepare_turn,
    short_context_into,
    short_context_values,
    timestamp,
    turn_from,
    turn_values,
    with_outbox_status,
)
from services.context.sqlite_transaction import transaction
from services.context.store import (
    AuditFilters,
    ConsentChange,
    Erasure,
    StoredTenant,
    StoreUnavailable,
    TenantAudit,
    TenantWrite,
    check_fence,
)
from services.mesh.errors import already_exists, not_found, unavailable
from services.mesh.tenant_rules import revision_mismatch

MIGRATIONS = (
    """
    CREATE TABLE tenants (
        tenant_id TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE session_contexts (
        tenant_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL DEFAULT '',
        channel INTEGER NOT NULL DEFAULT 0,
        short_context TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at TEXT,
        fence INTEGER NOT NULL DEFAULT 0,
        folded_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, session_id)
    );
    CREATE TABLE conversation_turns (
        turn_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role INTEGER NOT NULL,
        text TEXT NOT NULL,
        actions TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        correlation_id TEXT NOT NULL DEFAULT '',
        timestamp TEXT NOT NULL,
        PRIMARY KEY (tenant_id, turn_id),
        UNIQUE (tenant_id, session_id, seq)
    );
    CREATE TABLE outbox (
        message_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        turn_id TEXT NOT NULL,
        correlation_id TEXT NOT NULL DEFAULT '',
        action_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, message_id)
    );
    CREATE INDEX outbox_pending ON outbox (status, created_at);
    """,
    """
    CREATE TABLE audit_logs (
        tenant_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        entry_id TEXT NOT NULL,
        correlation_id TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        session_id TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL DEFAULT '{}',
        timestamp TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (tenant_id, sequence),
        UNIQUE (tenant_id, entry_id)
    );
    CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
    BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only: UPDATE refused'); END;
    CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
    BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only: DELETE refused'); END;
    """,
    """
    CREATE TABLE user_consents (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        voice_recording_consent INTEGER NOT NULL DEFAULT 0,
        data_learning_consent INTEGER NOT NULL DEFAULT 0,
        consent_date TEXT,
        revoked_date TEXT,
        PRIMARY KEY (tenant_id, user_id)
    );
    CREATE INDEX session_contexts_user ON session_contexts (tenant_id, user_id);
    """,
    """
    ALTER TABLE outbox ADD COLUMN leased_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN leased_by TEXT NOT NULL DEFAULT '';
    """,
    handoffs.MIGRATION,
    """
    ALTER TABLE tenants ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    """,
)


def _first(rows: Iterable[Any]) -> Any:
    """The first row of a result, or None (`execute_fetchall` is one thread hop; a cursor's
    execute, fetch and close are three)."""
    return next(iter(rows), None)


def _now() -> datetime:
    return datetime.now(UTC)


def _encode(value: Any) -> Any:
    """A row value as SQLite keeps it: JSON text for structures, ISO text for instants."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _decode(columns: tuple[str, ...], row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(columns, row, strict=True))
    for key in ("actions", "metadata", "payload"):
        if key in values:
            values[key] = json.loads(values[key])
    for key in ("timestamp", "created_at", "consent_date", "revoked_date"):
        if values.get(key):
            values[key] = datetime.fromisoformat(values[key])
    return values


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _tenant_filter(tenant_id: str | None) -> tuple[str, tuple[str, ...]]:
    """An `AND tenant_id = ?` clause and its parameter, or nothing for the relay's sweep."""
    return ("", ()) if tenant_id is None else ("AND tenant_id = ? ", (tenant_id,))


def _numbered_turns(
    rows: Iterable[Sequence[Any]], tenant_id: str, session_id: str
) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
    """(seq, turn) from rows of `seq` followed by TRANSCRIPT_COLUMNS."""
    return [
        (row[0], turn_from(_decode(TRANSCRIPT_COLUMNS, row[1:]), tenant_id, session_id))
        for row in rows
    ]


def _placeholders(columns: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in columns)


class SqliteStore:
    """SessionStore on a SQLite file (WAL); the embedded default.

    One connection serves every call, so every use of it holds one lock: a transaction never
    interleaves with another call's statements. Store failures surface as UNAVAILABLE (with
    retry advice) and duplicate ids as ALREADY_EXISTS.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> "SqliteStore":
        if not url.startswith("sqlite:///"):
            raise ValueError(f"not a SQLite URL (sqlite:///path): {url.split(':', 1)[0]}://...")
        return cls(Path(url.removeprefix("sqlite:///")))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                yield self.db
            except sqlite3.IntegrityError as error:
                raise already_exists(f"duplicate id: {error}") from error
            except (sqlite3.OperationalError, StoreUnavailable) as error:
                raise unavailable("the context store is unavailable", retry_after=1.0) from error

    async def open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self._path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA busy_timeout=5000")
            row = _first(await db.execute_fetchall("PRAGMA user_version"))
            version = int(row[0]) if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await db.executescript(
                    f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )
        except (OSError, sqlite3.Error) as error:
            raise unavailable(
                f"the context store cannot be opened: {type(error).__name__}", retry_after=1.0
            ) from None
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("the store is not open")
        return self._db

    async def load_session(
        self, tenant_id: str, session_id: str, recent_turns: int
    ) -> conversation_pb2.SessionContext | None:
        async with self._connection() as db:
            return await self._load(db, tenant_id, session_id, recent_turns)

    async def _load(
        self, db: aiosqlite.Connection, tenant_id: str, session_id: str, recent_turns: int
    ) -> conversation_pb2.SessionContext | None:
        row = _first(
            await db.execute_fetchall(
                "SELECT user_id, channel, short_context, created_at, updated_at, expires_at "
                "FROM session_contexts WHERE tenant_id = ? AND session_id = ?",
                (tenant_id, session_id),
            )
        )
        if row is None:
            return None
        context = conversation_pb2.SessionContext(
            session_id=session_id,
            tenant_id=tenant_id,
            user_id=row[0],
            channel=row[1],
            created_at=timestamp(_instant(row[3])),
            updated_at=timestamp(_instant(row[4])),
            expires_at=timestamp(_instant(row[5])),
        )
        short_context_into(row[2], context.short_context)
        context.recent_turns.extend(await self._transcript(db, tenant_id, session_id, recent_turns))
        return context

    async def create_session(
        self, tenant_id: str, session_id: str, user_id: str, channel: int
    ) -> conversation_pb2.SessionContext:
        now = _now().isoformat()
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO session_contexts (tenant_id, session_id, user_id, channel, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (tenant_id, session_id, user_id, channel, now, now),
            )
            created = await self._load(db, tenant_id, session_id, 0)
        assert created is not None
        return created

    async def commit_turns(
        self,
        tenant_id: str,
        session_id: str,
        turns: Sequence[conversation_pb2.ConversationTurn],
        short_context: conversation_pb2.ShortContext | None,
        fencing_token: int = 0,
    ) -> list[conversation_pb2.ConversationTurn]:
        async with self._connection() as db:
            return await self._commit(
                db, tenant_id, session_id, turns, short_context, fencing_token
            )

    async def _commit(
        self,
        db: aiosqlite.Connection,
        tenant_id: str,
        session_id: str,
        turns: Sequence[conversation_pb2.ConversationTurn],
        short_context: conversation_pb2.ShortContext | None,
        fencing_token: int,
    ) -> list[conversation_pb2.ConversationTurn]:
        stored: list[conversation_pb2.ConversationTurn] = []
        now = _now()
        async with transaction(db):
            session = _first(
                await db.execute_fetchall(
                    "SELECT fence, short_context FROM session_contexts "
                    "WHERE tenant_id = ? AND session_id = ?",
                    (tenant_id, session_id),
                )
            )
            if session is None:
                raise not_found(f"session '{session_id}' does not exist", "SESSION_NOT_FOUND")
            stored_summary = str(json.loads(session[1]).get("summary", ""))
            if fencing_token:
                check_fence(int(session[0]), fencing_token)
                await db.execute(
                    "UPDATE session_contexts SET fence = ? WHERE tenant_id = ? AND session_id = ?",
                    (fencing_token, tenant_id, session_id),
                )
            row = _first(
                await db.execute_fetchall(
                    "SELECT COALESCE(MAX(seq), 0) FROM conversation_turns "
                    "WHERE tenant_id = ? AND session_id = ?",
                    (tenant_id, session_id),
                )
            )
            seq = int(row[0]) if row else 0
            for turn in turns:
                seq += 1
                record = prepare_turn(turn, tenant_id, session_id, now)
                await db.execute(
                    f"INSERT INTO conversation_turns ({', '.join(TURN_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({_placeholders(TURN_COLUMNS)})",
                    tuple(_encode(v) for v in turn_values(record, seq)),
                )
                outbox = [(*map(_encode, row), now.isoformat()) for row in outbox_values(record)]
                if outbox:
                    await db.executemany(
                        f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}, created_at) "  # noqa: S608
                        f"VALUES ({_placeholders(OUTBOX_COLUMNS)}, ?)",
                        outbox,
                    )
                stored.append(record)
            updates = ["updated_at = ?"]
            params: list[object] = [now.isoformat()]
            if short_context is not None:
                updates.append("short_context = ?")
                params.append(
                    json.dumps(
                        short_context_values(short_context, stored_summary, replace_summary=False)
                    )
                )
            await db.execute(
                f"UPDATE session_contexts SET {', '.join(updates)} "  # noqa: S608 - fixed names
                "WHERE tenant_id = ? AND session_id = ?",
                (*params, tenant_id, session_id),
            )
        return stored

    async def update_short_context(
        self, tenant_id: str, session_id: str, short_context: conversation_pb2.ShortContext
    ) -> bool:
        async with self._connection() as db:
            row = _first(
                await db.execute_fetchall(
                    "SELECT short_context FROM session_contexts "
                    "WHERE tenant_id = ? AND session_id = ?",
                    (tenant_id, session_id),
                )
            )
            if row is None:
                return False
            values = short_context_values(
                short_context, json.loads(row[0]).get("summary", ""), replace_summary=True
            )
            await db.execute(
                "UPDATE session_contexts SET short_context = ?, updated_at = ? "
                "WHERE tenant_id = ? AND session_id = ?",
                (json.dumps(values), _now().isoformat(), tenant_id, session_id),
            )
        return True

    async def transcript(
        self, tenant_id: str, session_id: str, limit: int
    ) -> list[conversation_pb2.ConversationTurn]:
        async with self._connection() as db:
            return await self._transcript(db, tenant_id, session_id, limit)

    async def _transcript(
        self, db: aiosqlite.Connection, tenant_id: str, session_id: str, limit: int
    ) -> list[conversation_pb2.ConversationTurn]:
        if limit <= 0:
            return []
        rows = await db.execute_fetchall(
            f"SELECT {', '.join(TRANSCRIPT_COLUMNS)} FROM conversation_turns "  # noqa: S608
            "WHERE tenant_id = ? AND session_id = ? ORDER BY seq DESC LIMIT ?",
            (tenant_id, session_id, limit),
        )
        turns = [
            turn_from(_decode(TRANSCRIPT_COLUMNS, row), tenant_id, session_id)
            for row in reversed(list(rows))
        ]
        ids = [action.action_id for turn in turns for action in turn.actions]
        if not ids:
            return turns
        async with db.execute(
            f"SELECT message_id, status FROM outbox WHERE tenant_id = ? "  # noqa: S608
            f"AND message_id IN ({', '.join('?' for _ in ids)})",
            (tenant_id, *ids),
        ) as cursor:
            statuses = {row[0]: row[1] for row in await cursor.fetchall()}
        return with_outbox_status(turns, statuses)

    async def fold_candidates(
        self, tenant_id: str, session_id: str, keep_last: int, min_count: int = 0
    ) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
        async with self._connection() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT t.seq, {', '.join('t.' + c for c in TRANSCRIPT_COLUMNS)} "  # noqa: S608
                    "FROM conversation_turns t JOIN session_contexts s "
                    "ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id "
                    "WHERE t.tenant_id = ? AND t.session_id = ? AND t.seq > s.folded_seq "
                    "AND t.seq <= (SELECT MAX(seq) FROM conversation_turns "
                    "WHERE tenant_id = ? AND session_id = ?) - ? ORDER BY t.seq",
                    (tenant_id, session_id, tenant_id, session_id, keep_last),
                )
            )
        if len(rows) < min_count:
            return []
        return _numbered_turns(rows, tenant_id, session_id)

    async def apply_fold(
        self, tenant_id: str, session_id: str, through_seq: int, summary: str
    ) -> bool:
        async with self._connection() as db:
            updated = await db.execute(
                "UPDATE session_contexts SET folded_seq = ?, short_context = json_set("
                "short_context, '$.summary', ?) "
                "WHERE tenant_id = ? AND session_id = ? AND folded_seq < ?",
                (through_seq, summary, tenant_id, session_id, through_seq),
            )
        return updated.rowcount == 1

    async def turns_after(
        self, tenant_id: str, session_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
        async with self._connection() as db:
            rows = await db.execute_fetchall(
                f"SELECT seq, {', '.join(TRANSCRIPT_COLUMNS)} FROM conversation_turns "  # noqa: S608
                "WHERE tenant_id = ? AND session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (tenant_id, session_id, after_seq, limit),
            )
        return _numbered_turns(rows, tenant_id, session_id)

    async def pending_outbox(
        self, tenant_id: str | None, limit: int, lease_seconds: int = 0, claimant: str = ""
    ) -> list[outbox_pb2.OutboxMessage]:
        tenant_filter, params = _tenant_filter(tenant_id)
        pending = conversation_pb2.ACTION_STATUS_PENDING
        if lease_seconds <= 0:
            query = (
                f"SELECT {', '.join(PENDING_COLUMNS)} FROM outbox "  # noqa: S608
                f"WHERE status = ? {tenant_filter}ORDER BY rowid LIMIT ?"
            )
            arguments: tuple[Any, ...] = (pending, *params, limit)
        else:
            now = time.time()
            query = (
                "UPDATE outbox SET leased_until = ?, leased_by = ? WHERE rowid IN ("  # noqa: S608
                f"SELECT rowid FROM outbox AS o WHERE status = ? {tenant_filter}"
                "AND (leased_until <= ? OR leased_by = ?) AND NOT EXISTS ("
                "SELECT 1 FROM outbox AS held WHERE held.tenant_id = o.tenant_id "
                "AND held.session_id = o.session_id AND held.status = ? "
                "AND held.leased_until > ? AND held.leased_by <> ?) ORDER BY rowid LIMIT ?) "
                f"RETURNING rowid, {', '.join(PENDING_COLUMNS)}"
            )
            arguments = (
                now + lease_seconds,
                claimant,
                pending,
                *params,
                now,
                claimant,
                pending,
                now,
                claimant,
                limit,
            )
        async with self._connection() as db:
            rows: list[Sequence[Any]] = list(await db.execute_fetchall(query, arguments))
        if lease_seconds > 0:  # RETURNING has no order: rowid first, then the columns
            rows = [row[1:] for row in sorted(rows, key=lambda row: int(row[0]))]
        return [outbox_message_from(_decode(PENDING_COLUMNS, row)) for row in rows]

    async def outbox_backlog(self, tenant_id: str | None) -> tuple[int, datetime | None]:
        tenant_filter, params = _tenant_filter(tenant_id)
        query = f"SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = ? {tenant_filter}"  # noqa: S608
        async with self._connection() as db:
            [(count, oldest)] = await db.execute_fetchall(
                query, (conversation_pb2.ACTION_STATUS_PENDING, *params)
            )
        return int(count), _instant(oldest)

    async def mark_outbox(
        self, tenant_id: str | None, message_ids: Sequence[str], status: int, error: str
    ) -> list[tuple[str, str]]:
        tenant_filter, params = _tenant_filter(tenant_id)
        marks = ", ".join("?" for _ in message_ids)
        async with self._connection() as db:
            rows = await db.execute_fetchall(
                "UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, "  # noqa: S608
                "leased_until = 0, leased_by = '' "
                f"WHERE message_id IN ({marks}) AND status = ? {tenant_filter}"
                "RETURNING tenant_id, session_id",
                (status, error, *message_ids, conversation_pb2.ACTION_STATUS_PENDING, *params),
            )
        return [(row[0], row[1]) for row in rows]

    async def enqueue_handoff(self, tenant_id: str, handoff: handoff_pb2.QueuedHandoff) -> bool:
        async with self._connection() as db:
            return await handoffs.enqueue(db, tenant_id, handoff)

    async def claim_handoffs(
        self, tenant_id: str, claim: HandoffClaim
    ) -> list[handoff_pb2.QueuedHandoff]:
        async with self._connection() as db:
            return await handoffs.claim(db, tenant_id, claim)

    async def complete_handoff(
        self, tenant_id: str, event_id: str, agent_id: str, connection_id: str
    ) -> bool:
        async with self._connection() as db:
            return await handoffs.complete(db, tenant_id, event_id, agent_id, connection_id)

    async def release_handoffs(self, tenant_id: str, agent_id: str, connection_id: str) -> int:
        async with self._connection() as db:
            return await handoffs.release(db, tenant_id, agent_id, connection_id)

    async def append_audit(
        self, tenant_id: str, entry: audit_pb2.AuditEntry
    ) -> audit_pb2.AuditEntry:
        async with self._connection() as db:
            return await self._append_audit(db, tenant_id, entry)

    @staticmethod
    async def _append_audit(
        db: aiosqlite.Connection, tenant_id: str, entry: audit_pb2.AuditEntry
    ) -> audit_pb2.AuditEntry:
        """Seal `entry` after the chain head and insert it (the caller holds the connection)."""
        row = _first(
            await db.execute_fetchall(
                "SELECT sequence, hash FROM audit_logs WHERE tenant_id = ? "
                "ORDER BY sequence DESC LIMIT 1",
                (tenant_id,),
            )
        )
        head = {"sequence": row[0], "hash": row[1]} if row else None
        sealed = new_audit_entry(tenant_id, entry, head)
        await db.execute(
            f"INSERT INTO audit_logs ({', '.join(AUDIT_COLUMNS)}) "  # noqa: S608
            f"VALUES ({_placeholders(AUDIT_COLUMNS)})",
            tuple(_encode(value) for value in audit_values(sealed)),
        )
        return sealed

    async def audit_entries(
        self, tenant_id: str, after_sequence: int, limit: int, filters: AuditFilters
    ) -> list[audit_pb2.AuditEntry]:
        conditions = ["tenant_id = ?", "sequence > ?"]
        params: list[object] = [tenant_id, after_sequence]
        for column, value in filters.conditions():
            conditions.append(f"{column} = ?")
            params.append(value)
        async with self._connection() as db:
            rows = await db.execute_fetchall(
                f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_logs "  # noqa: S608
                f"WHERE {' AND '.join(conditions)} ORDER BY sequence LIMIT ?",
                (*params, limit),
            )
        return [audit_from(_decode(AUDIT_COLUMNS, row)) for row in rows]

    async def get_consent(self, tenant_id: str, user_id: str) -> consent_pb2.UserConsent | None:
        async with self._connection() as db:
            row = _first(
                await db.execute_fetchall(
                    f"SELECT {', '.join(CONSENT_COLUMNS)} FROM user_consents "  # noqa: S608
                    "WHERE tenant_id = ? AND user_id = ?",
                    (tenant_id, user_id),
                )
            )
        return None if row is None else consent_from(_decode(CONSENT_COLUMNS, row), tenant_id)

    async def change_consent(
        self, tenant_id: str, user_id: str, change: ConsentChange
    ) -> consent_pb2.UserConsent:
        tenant, user, voice, learning, granted, revoked, touch_voice, touch_learning = (
            _encode(value) for value in change.values(tenant_id, user_id)
        )
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO user_consents (tenant_id, user_id, voice_recording_consent, "
                "data_learning_consent, consent_date, revoked_date) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, user_id) DO UPDATE SET "
                "voice_recording_consent = CASE WHEN ? THEN excluded.voice_recording_consent "
                "ELSE voice_recording_consent END, "
                "data_learning_consent = CASE WHEN ? THEN excluded.data_learning_consent "
                "ELSE data_learning_consent END, "
                "consent_date = COALESCE(excluded.consent_date, consent_date), "
                "revoked_date = COALESCE(excluded.revoked_date, revoked_date)",
                (
                    tenant,
                    user,
                    voice and touch_voice,
                    learning and touch_learning,
                    granted,
                    revoked,
                    touch_voice,
                    touch_learning,
                ),
            )
            row = _first(
                await db.execute_fetchall(
                    f"SELECT {', '.join(CONSENT_COLUMNS)} FROM user_consents "  # noqa: S608
                    "WHERE tenant_id = ? AND user_id = ?",
                    (tenant_id, user_id),
                )
            )
        assert row is not None
        return consent_from(_decode(CONSENT_COLUMNS, row), tenant_id)

    async def claim_owner(self, tenant_id: str, session_id: str, user_id: str) -> bool:
        async with self._connection() as db:
            updated = await db.execute(
                "UPDATE session_contexts SET user_id = ? "
                "WHERE tenant_id = ? AND session_id = ? AND user_id = ''",
                (user_id, tenant_id, session_id),
            )
        return updated.rowcount == 1

    async def sessions_of(self, tenant_id: str, user_id: str) -> list[str]:
        async with (
            self._connection() as db,
            db.execute(
                "SELECT session_id FROM session_contexts WHERE tenant_id = ? AND user_id = ?",
                (tenant_id, user_id),
            ) as cursor,
        ):
            return [row[0] for row in await cursor.fetchall()]

    async def correlation_ids_of(self, tenant_id: str, user_id: str) -> list[str]:
        async with self._connection() as db:
            return await self._correlation_ids(db, tenant_id, user_id)

    @staticmethod
    async def _correlation_ids(db: aiosqlite.Connection, tenant_id: str, user_id: str) -> list[str]:
        rows = await db.execute_fetchall(
            "SELECT DISTINCT t.correlation_id FROM conversation_turns t "
            "JOIN session_contexts s ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id "
            "WHERE s.tenant_id = ? AND s.user_id = ? AND t.correlation_id <> '' "
            "ORDER BY t.correlation_id",
            (tenant_id, user_id),
        )
        return [row[0] for row in rows]

    async def erase_user(self, tenant_id: str, user_id: str) -> Erasure:
        async with self._connection() as db, transaction(db):
            rows = await db.execute_fetchall(
                "SELECT session_id FROM session_contexts WHERE tenant_id = ? AND user_id = ?",
                (tenant_id, user_id),
            )
            sessions = [row[0] for row in rows]
            correlation_ids = await self._correlation_ids(db, tenant_id, user_id)
            queued = await handoffs.erase(db, tenant_id, user_id)
            turns = 0
            for session_id in sessions:
                scope = (tenant_id, session_id)
                await db.execute("DELETE FROM outbox WHERE tenant_id = ? AND session_id = ?", scope)
                deleted = await db.execute(
                    "DELETE FROM conversation_turns WHERE tenant_id = ? AND session_id = ?",
                    scope,
                )
                turns += deleted.rowcount
                await db.execute(
                    "DELETE FROM session_contexts WHERE tenant_id = ? AND session_id = ?",
                    scope,
                )
            consent = await db.execute(
                "DELETE FROM user_consents WHERE tenant_id = ? AND user_id = ?",
                (tenant_id, user_id),
            )
        return Erasure(sessions, turns, consent.rowcount > 0, correlation_ids, queued)

    async def get_tenant(self, tenant_id: str) -> tenant_pb2.TenantConfig | None:
        stored = await self.load_tenant(tenant_id)
        return None if stored is None else stored.config

    async def load_tenant(self, tenant_id: str) -> StoredTenant | None:
        async with self._connection() as db:
            row = _first(
                await db.execute_fetchall(
                    "SELECT config, revision FROM tenants WHERE tenant_id = ?", (tenant_id,)
                )
            )
        if row is None:
            return None
        return StoredTenant(json_format.Parse(row[0], tenant_pb2.TenantConfig()), int(row[1]))

    async def put_tenant(
        self,
        tenant: tenant_pb2.TenantConfig,
        audit: TenantAudit | None = None,
        *,
        expected_revision: int = 0,
    ) -> TenantWrite:
        config, now = json_format.MessageToJson(tenant), _now().isoformat()
        # The transaction takes the file's write lock (against other processes too), so the
        # revision read here is the one the conditional UPDATE below finds.
        async with self._connection() as db, transaction(db):
            row = _first(
                await db.execute_fetchall(
                    "SELECT revision FROM tenants WHERE tenant_id = ?", (tenant.tenant_id,)
                )
            )
            current = 0 if row is None else int(row[0])
            if expected_revision and expected_revision != current:
                raise revision_mismatch(tenant.tenant_id, current, expected_revision)
            if row is None:
                await db.execute(
                    "INSERT INTO tenants (tenant_id, config, updated_at, revision) "
                    "VALUES (?, ?, ?, 1)",
                    (tenant.tenant_id, config, now),
                )
            else:
                await db.execute(
                    "UPDATE tenants SET config = ?, updated_at = ?, revision = ? "
                    "WHERE tenant_id = ?",
                    (config, now, current + 1, tenant.tenant_id),
                )
            if audit is not None:
                await self._append_audit(db, tenant.tenant_id, audit(row is None))
        return TenantWrite(created=row is None, revision=current + 1)
