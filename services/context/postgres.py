"""The production store: PostgreSQL through asyncpg, with row-level security.

Every operation runs in a transaction that first binds the tenant with
`set_config('app.current_tenant_id', $1, true)` (a bound parameter, local to the
transaction); the policies of migration 0001 then hide every other tenant's rows, even from a
query that forgets its WHERE clause. The service's login role owns nothing and must be a member
of `metaagent_app`; migrations run separately as the owner (`metaagent migrate`).
"""

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf import json_format
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import audit_pb2, consent_pb2, handoff_pb2, outbox_pb2

from services.context import handoffs_postgres as handoffs
from services.context.audit import new_audit_entry
from services.context.handoff_rows import HandoffClaim
from services.context.migrations.runner import latest_version
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
    short_context_values,
    timestamp,
    turn_from,
    turn_values,
    with_outbox_status,
)
from services.context.store import (
    AuditFilters,
    ConsentChange,
    Erasure,
    StoredTenant,
    TenantAudit,
    TenantWrite,
    check_fence,
)
from services.mesh.errors import already_exists, failed_precondition, not_found, unavailable
from services.mesh.tenant_rules import revision_mismatch

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)
"""Failures that a retry may cure (a lost server, a lock or serialization conflict, a
failover that left us on a read-only replica): UNAVAILABLE with retry advice."""


async def _json_codecs(connection: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await connection.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class PostgresStore:
    """SessionStore on PostgreSQL; one pool, one transaction per operation."""

    def __init__(
        self, dsn: str, *, relay_dsn: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> None:
        self._dsn = dsn
        self._relay_dsn = relay_dsn
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._relay_pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, init=_json_codecs
            )
            version = await pool.fetchval("SELECT max(version) FROM schema_migrations")
        except asyncpg.exceptions.UndefinedTableError:
            version = None
            pool = None
        except UNAVAILABLE_ERRORS as error:
            raise unavailable(f"the context store is unreachable: {type(error).__name__}") from None
        if version is None or version < latest_version():
            if pool is not None:
                await pool.close()
            raise failed_precondition(
                f"the context store schema is at version {version or 0}, this service needs "
                f"{latest_version()}: run `metaagent migrate` as the owner role",
                "SCHEMA_BEHIND",
            )
        self._pool = pool
        if self._relay_dsn:
            try:
                self._relay_pool = await asyncpg.create_pool(
                    self._relay_dsn, min_size=0, max_size=2, init=_json_codecs
                )
            except UNAVAILABLE_ERRORS as error:
                raise unavailable(
                    f"the relay login cannot connect: {type(error).__name__}"
                ) from None

    async def close(self) -> None:
        for pool in (self._pool, self._relay_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._relay_pool = None

    @asynccontextmanager
    async def _tenant(self, tenant_id: str | None) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction that sees only `tenant_id`'s rows; with None, the
        relay's connection, which sees the outbox of every tenant and nothing else."""
        pool = self._pool if tenant_id is not None else self._relay_pool
        if self._pool is None:
            raise unavailable("the context store is not open")
        if pool is None:
            raise failed_precondition(
                "cross-tenant outbox access needs the relay login (CONTEXT_RELAY_STORE_URL)",
                "RELAY_ACCESS_NOT_CONFIGURED",
            )
        try:
            async with pool.acquire() as connection, connection.transaction():
                if tenant_id is not None:
                    await connection.execute(
                        "SELECT set_config('app.current_tenant_id', $1, true)", tenant_id
                    )
                yield connection
        except asyncpg.exceptions.UniqueViolationError as error:
            raise already_exists(f"duplicate id ({error.constraint_name})") from None
        except UNAVAILABLE_ERRORS as error:
            raise unavailable(
                f"the context store is unavailable: {type(error).__name__}", retry_after=1.0
            ) from None

    async def load_session(
        self, tenant_id: str, session_id: str, recent_turns: int
    ) -> conversation_pb2.SessionContext | None:
        async with self._tenant(tenant_id) as connection:
            return await self._load(connection, tenant_id, session_id, recent_turns)

    async def _load(
        self, connection: asyncpg.Connection, tenant_id: str, session_id: str, recent_turns: int
    ) -> conversation_pb2.SessionContext | None:
        row = await connection.fetchrow(
            "SELECT user_id, channel, short_context, created_at, updated_at, expires_at "
            "FROM session_contexts WHERE tenant_id = $1 AND session_id = $2",
            tenant_id,
            session_id,
        )
        if row is None:
            return None
        context = conversation_pb2.SessionContext(
            session_id=session_id,
            tenant_id=tenant_id,
            user_id=row["user_id"],
            channel=row["channel"],
            created_at=timestamp(row["created_at"]),
            updated_at=timestamp(row["updated_at"]),
            expires_at=timestamp(row["expires_at"]),
        )
        json_format.ParseDict(row["short_context"], context.short_context)
        context.recent_turns.extend(
            await self._transcript(connection, tenant_id, session_id, recent_turns)
        )
        return context

    async def create_session(
        self, tenant_id: str, session_id: str, user_id: str, channel: int
    ) -> conversation_pb2.SessionContext:
        async with self._tenant(tenant_id) as connection:
            await connection.execute(
                "INSERT INTO session_contexts (tenant_id, session_id, user_id, channel) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                tenant_id,
                session_id,
                user_id,
                channel,
            )
            created = await self._load(connection, tenant_id, session_id, 0)
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
        now = datetime.now(UTC)
        stored: list[conversation_pb2.ConversationTurn] = []
        async with self._tenant(tenant_id) as connection:
            session = await connection.fetchrow(
                "SELECT fence, short_context ->> 'summary' AS summary FROM session_contexts "
                "WHERE tenant_id = $1 AND session_id = $2 FOR UPDATE",
                tenant_id,
                session_id,
            )
            if session is None:
                raise not_found(f"session '{session_id}' does not exist", "SESSION_NOT_FOUND")
            if fencing_token:
                check_fence(session["fence"], fencing_token)
                await connection.execute(
                    "UPDATE session_contexts SET fence = $3 "
                    "WHERE tenant_id = $1 AND session_id = $2",
                    tenant_id,
                    session_id,
                    fencing_token,
                )
            seq = await connection.fetchval(
                "SELECT COALESCE(max(seq), 0) FROM conversation_turns "
                "WHERE tenant_id = $1 AND session_id = $2",
                tenant_id,
                session_id,
            )
            for turn in turns:
                seq += 1
                record = prepare_turn(turn, tenant_id, session_id, now)
                await connection.execute(
                    f"INSERT INTO conversation_turns ({_columns(TURN_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({_placeholders(TURN_COLUMNS)})",
                    *turn_values(record, seq),
                )
                await connection.executemany(
                    f"INSERT INTO outbox ({_columns(OUTBOX_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({_placeholders(OUTBOX_COLUMNS)})",
                    outbox_values(record),
                )
                stored.append(record)
            if short_context is not None:
                await connection.execute(
                    "UPDATE session_contexts SET short_context = $3, updated_at = now() "
                    "WHERE tenant_id = $1 AND session_id = $2",
                    tenant_id,
                    session_id,
                    short_context_values(
                        short_context, session["summary"] or "", replace_summary=False
                    ),
                )
            else:
                await connection.execute(
                    "UPDATE session_contexts SET updated_at = now() "
                    "WHERE tenant_id = $1 AND session_id = $2",
                    tenant_id,
                    session_id,
                )
        return stored

    async def update_short_context(
        self, tenant_id: str, session_id: str, short_context: conversation_pb2.ShortContext
    ) -> bool:
        async with self._tenant(tenant_id) as connection:
            stored = await connection.fetchrow(
                "SELECT short_context ->> 'summary' AS summary FROM session_contexts "
                "WHERE tenant_id = $1 AND session_id = $2 FOR UPDATE",
                tenant_id,
                session_id,
            )
            if stored is None:
                return False
            await connection.execute(
                "UPDATE session_contexts SET short_context = $3, updated_at = now() "
                "WHERE tenant_id = $1 AND session_id = $2",
                tenant_id,
                session_id,
                short_context_values(short_context, stored["summary"] or "", replace_summary=True),
            )
        return True

    async def transcript(
        self, tenant_id: str, session_id: str, limit: int
    ) -> list[conversation_pb2.ConversationTurn]:
        async with self._tenant(tenant_id) as connection:
            return await self._transcript(connection, tenant_id, session_id, limit)

    async def _transcript(
        self, connection: asyncpg.Connection, tenant_id: str, session_id: str, limit: int
    ) -> list[conversation_pb2.ConversationTurn]:
        if limit <= 0:
            return []
        rows = await connection.fetch(
            f"SELECT {_columns(TRANSCRIPT_COLUMNS)} FROM conversation_turns "  # noqa: S608
            "WHERE tenant_id = $1 AND session_id = $2 ORDER BY seq DESC LIMIT $3",
            tenant_id,
            session_id,
            limit,
        )
        turns = [turn_from(dict(row), tenant_id, session_id) for row in reversed(rows)]
        return with_outbox_status(turns, await self._statuses(connection, tenant_id, turns))

    @staticmethod
    async def _statuses(
        connection: asyncpg.Connection,
        tenant_id: str,
        turns: list[conversation_pb2.ConversationTurn],
    ) -> dict[str, int]:
        ids = [action.action_id for turn in turns for action in turn.actions]
        if not ids:
            return {}
        rows = await connection.fetch(
            "SELECT message_id, status FROM outbox WHERE tenant_id = $1 "
            "AND message_id = ANY($2::text[])",
            tenant_id,
            ids,
        )
        return {row["message_id"]: row["status"] for row in rows}

    async def fold_candidates(
        self, tenant_id: str, session_id: str, keep_last: int, min_count: int = 0
    ) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
        columns = ", ".join(f't."{column}"' for column in TRANSCRIPT_COLUMNS)
        async with self._tenant(tenant_id) as connection:
            rows = await connection.fetch(
                f"SELECT t.seq, {columns} FROM conversation_turns t "  # noqa: S608
                "JOIN session_contexts s USING (tenant_id, session_id) "
                "WHERE t.tenant_id = $1 AND t.session_id = $2 AND t.seq > s.folded_seq "
                "AND t.seq <= (SELECT max(seq) FROM conversation_turns "
                "WHERE tenant_id = $1 AND session_id = $2) - $3 ORDER BY t.seq",
                tenant_id,
                session_id,
                keep_last,
            )
        if len(rows) < min_count:
            return []
        return _numbered_turns(rows, tenant_id, session_id)

    async def apply_fold(
        self, tenant_id: str, session_id: str, through_seq: int, summary: str
    ) -> bool:
        async with self._tenant(tenant_id) as connection:
            status = await connection.execute(
                "UPDATE session_contexts SET folded_seq = $3, "
                "short_context = jsonb_set(short_context, '{summary}', to_jsonb($4::text)) "
                "WHERE tenant_id = $1 AND session_id = $2 AND folded_seq < $3",
                tenant_id,
                session_id,
                through_seq,
                summary,
            )
        return bool(status == "UPDATE 1")

    async def turns_after(
        self, tenant_id: str, session_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
        async with self._tenant(tenant_id) as connection:
            rows = await connection.fetch(
                f"SELECT seq, {_columns(TRANSCRIPT_COLUMNS)} FROM conversation_turns "  # noqa: S608
                "WHERE tenant_id = $1 AND session_id = $2 AND seq > $3::bigint "
                "ORDER BY seq LIMIT $4",
                tenant_id,
                session_id,
                after_seq,
                limit,
            )
        return _numbered_turns(rows, tenant_id, session_id)

    async def pending_outbox(
        self, tenant_id: str | None, limit: int, lease_seconds: int = 0, claimant: str = ""
    ) -> list[outbox_pb2.OutboxMessage]:
        tenant_filter = "" if tenant_id is None else "AND tenant_id = $3 "
        params: list[Any] = [conversation_pb2.ACTION_STATUS_PENDING, limit]
        params += [tenant_id] if tenant_id is not None else []
        async with self._tenant(tenant_id) as connection:
            if lease_seconds <= 0:
                rows = await connection.fetch(
                    f"SELECT {_columns(PENDING_COLUMNS)} FROM outbox "  # noqa: S608
                    f"WHERE status = $1 {tenant_filter}ORDER BY position LIMIT $2",
                    *params,
                )
                return [outbox_message_from(dict(row)) for row in rows]
            # Claims are serialised so that the "no other lease on this session" test holds.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext('outbox-claim'))")
            lease, owner = len(params) + 1, len(params) + 2
            rows = await connection.fetch(
                f"UPDATE outbox SET leased_until = now() + make_interval(secs => ${lease}), "  # noqa: S608
                f"leased_by = ${owner} WHERE position IN (SELECT position FROM outbox AS o "
                f"WHERE status = $1 {tenant_filter}"
                f"AND (leased_until <= now() OR leased_by = ${owner}) AND NOT EXISTS ("
                "SELECT 1 FROM outbox AS held WHERE held.tenant_id = o.tenant_id "
                "AND held.session_id = o.session_id AND held.status = $1 "
                f"AND held.leased_until > now() AND held.leased_by <> ${owner}) "
                f"ORDER BY position LIMIT $2) RETURNING position, {_columns(PENDING_COLUMNS)}",
                *params,
                float(lease_seconds),
                claimant,
            )
        ordered = sorted(rows, key=lambda row: int(row["position"]))
        return [
            outbox_message_from({k: v for k, v in dict(row).items() if k != "position"})
            for row in ordered
        ]

    async def outbox_backlog(self, tenant_id: str | None) -> tuple[int, datetime | None]:
        tenant_filter = "" if tenant_id is None else "AND tenant_id = $2 "
        params: list[Any] = [conversation_pb2.ACTION_STATUS_PENDING]
        params += [tenant_id] if tenant_id is not None else []
        async with self._tenant(tenant_id) as connection:
            row = await connection.fetchrow(
                "SELECT count(*) AS pending, min(created_at) AS oldest FROM outbox "  # noqa: S608
                f"WHERE status = $1 {tenant_filter}",
                *params,
            )
        assert row is not None
        return int(row["pending"]), row["oldest"]

    async def mark_outbox(
        self, tenant_id: str | None, message_ids: Sequence[str], status: int, error: str
    ) -> list[tuple[str, str]]:
        pending = conversation_pb2.ACTION_STATUS_PENDING
        tenant_filter = "" if tenant_id is None else "AND tenant_id = $5 "
        async with self._tenant(tenant_id) as connection:
            rows = await connection.fetch(
                "UPDATE outbox SET status = $2, attempts = attempts + 1, last_error = $3, "  # noqa: S608
                "leased_until = '-infinity', leased_by = '' "
                f"WHERE message_id = ANY($1::text[]) AND status = $4 {tenant_filter}"
                "RETURNING tenant_id, session_id",
                list(message_ids),
                status,
                error,
                pending,
                *([tenant_id] if tenant_id is not None else []),
            )
        return [(row["tenant_id"], row["session_id"]) for row in rows]

    async def enqueue_handoff(self, tenant_id: str, handoff: handoff_pb2.QueuedHandoff) -> bool:
        async with self._tenant(tenant_id) as connection:
            return await handoffs.enqueue(connection, tenant_id, handoff)

    async def claim_handoffs(
        self, tenant_id: str, claim: HandoffClaim
    ) -> list[handoff_pb2.QueuedHandoff]:
        async with self._tenant(tenant_id) as connection:
            return await handoffs.claim(connection, tenant_id, claim)

    async def complete_handoff(
        self, tenant_id: str, event_id: str, agent_id: str, connection_id: str
    ) -> bool:
        async with self._tenant(tenant_id) as connection:
            return await handoffs.complete(connection, tenant_id, event_id, agent_id, connection_id)

    async def release_handoffs(self, tenant_id: str, agent_id: str, connection_id: str) -> int:
        async with self._tenant(tenant_id) as connection:
            return await handoffs.release(connection, tenant_id, agent_id, connection_id)

    async def append_audit(
        self, tenant_id: str, entry: audit_pb2.AuditEntry
    ) -> audit_pb2.AuditEntry:
        async with self._tenant(tenant_id) as connection:
            await _lock_audit_chain(connection, tenant_id)
            return await _append_audit(connection, tenant_id, entry)

    async def audit_entries(
        self, tenant_id: str, after_sequence: int, limit: int, filters: AuditFilters
    ) -> list[audit_pb2.AuditEntry]:
        params: list[object] = [tenant_id, after_sequence]
        conditions = ["tenant_id = $1", "sequence > $2"]
        for column, value in filters.conditions():
            params.append(value)
            conditions.append(f"{column} = ${len(params)}")
        params.append(limit)
        async with self._tenant(tenant_id) as connection:
            rows = await connection.fetch(
                f"SELECT {_columns(AUDIT_COLUMNS)} FROM audit_logs "  # noqa: S608
                f"WHERE {' AND '.join(conditions)} ORDER BY sequence LIMIT ${len(params)}",
                *params,
            )
        return [audit_from(dict(row)) for row in rows]

    async def get_consent(self, tenant_id: str, user_id: str) -> consent_pb2.UserConsent | None:
        async with self._tenant(tenant_id) as connection:
            row = await connection.fetchrow(
                f"SELECT {_columns(CONSENT_COLUMNS)} FROM user_consents "  # noqa: S608
                "WHERE tenant_id = $1 AND user_id = $2",
                tenant_id,
                user_id,
            )
        return None if row is None else consent_from(dict(row), tenant_id)

    async def change_consent(
        self, tenant_id: str, user_id: str, change: ConsentChange
    ) -> consent_pb2.UserConsent:
        async with self._tenant(tenant_id) as connection:
            row = await connection.fetchrow(
                "INSERT INTO user_consents (tenant_id, user_id, voice_recording_consent, "  # noqa: S608
                "data_learning_consent, consent_date, revoked_date) "
                "VALUES ($1, $2, $3 AND $7, $4 AND $8, $5, $6) "
                "ON CONFLICT (tenant_id, user_id) DO UPDATE SET "
                "voice_recording_consent = CASE WHEN $7 THEN $3 "
                "ELSE user_consents.voice_recording_consent END, "
                "data_learning_consent = CASE WHEN $8 THEN $4 "
                "ELSE user_consents.data_learning_consent END, "
                "consent_date = COALESCE($5, user_consents.consent_date), "
                "revoked_date = COALESCE($6, user_consents.revoked_date) "
                f"RETURNING {_columns(CONSENT_COLUMNS)}",
                *change.values(tenant_id, user_id),
            )
        return consent_from(dict(row), tenant_id)

    async def claim_owner(self, tenant_id: str, session_id: str, user_id: str) -> bool:
        async with self._tenant(tenant_id) as connection:
            status = await connection.execute(
                "UPDATE session_contexts SET user_id = $3 "
                "WHERE tenant_id = $1 AND session_id = $2 AND user_id = ''",
                tenant_id,
                session_id,
                user_id,
            )
        return bool(status == "UPDATE 1")

    async def sessions_of(self, tenant_id: str, user_id: str) -> list[str]:
        async with self._tenant(tenant_id) as connection:
            rows = await connection.fetch(
                "SELECT session_id FROM session_contexts WHERE tenant_id = $1 AND user_id = $2",
                tenant_id,
                user_id,
            )
        return [row["session_id"] for row in rows]

    async def correlation_ids_of(self, tenant_id: str, user_id: str) -> list[str]:
        async with self._tenant(tenant_id) as connection:
            return await _correlation_ids(connection, tenant_id, user_id)

    async def erase_user(self, tenant_id: str, user_id: str) -> Erasure:
        async with self._tenant(tenant_id) as connection:
            correlation_ids = await _correlation_ids(connection, tenant_id, user_id)
            turns = await connection.fetchval(
                "SELECT count(*) FROM conversation_turns t JOIN session_contexts s "
                "USING (tenant_id, session_id) WHERE s.tenant_id = $1 AND s.user_id = $2",
                tenant_id,
                user_id,
            )
            sessions = await connection.fetch(
                "DELETE FROM session_contexts WHERE tenant_id = $1 AND user_id = $2 "
                "RETURNING session_id",
                tenant_id,
                user_id,
            )
            session_ids = [row["session_id"] for row in sessions]
            queued = await handoffs.erase(connection, tenant_id, user_id, session_ids)
            consent = await connection.fetchval(
                "DELETE FROM user_consents WHERE tenant_id = $1 AND user_id = $2 RETURNING 1",
                tenant_id,
                user_id,
            )
        return Erasure(session_ids, turns, consent is not None, correlation_ids, queued)

    async def get_tenant(self, tenant_id: str) -> tenant_pb2.TenantConfig | None:
        stored = await self.load_tenant(tenant_id)
        return None if stored is None else stored.config

    async def load_tenant(self, tenant_id: str) -> StoredTenant | None:
        async with self._tenant(tenant_id) as connection:
            row = await connection.fetchrow(
                "SELECT config, revision FROM tenants WHERE tenant_id = $1", tenant_id
            )
        if row is None:
            return None
        config = json_format.ParseDict(row["config"], tenant_pb2.TenantConfig())
        return StoredTenant(config, row["revision"])

    async def put_tenant(
        self,
        tenant: tenant_pb2.TenantConfig,
        audit: TenantAudit | None = None,
        *,
        expected_revision: int = 0,
    ) -> TenantWrite:
        tenant_id, config = tenant.tenant_id, json_format.MessageToDict(tenant)
        async with self._tenant(tenant_id) as connection:
            if audit is not None:
                await _lock_audit_chain(connection, tenant_id)
            if expected_revision:
                # One statement checks and writes: a concurrent writer's UPDATE waits for this
                # row's lock, then finds the new revision and matches nothing.
                revision = await connection.fetchval(
                    "UPDATE tenants SET config = $2, updated_at = now(), revision = revision + 1 "
                    "WHERE tenant_id = $1 AND revision = $3 RETURNING revision",
                    tenant_id,
                    config,
                    expected_revision,
                )
                if revision is None:
                    current = await connection.fetchval(
                        "SELECT revision FROM tenants WHERE tenant_id = $1", tenant_id
                    )
                    raise revision_mismatch(tenant_id, current or 0, expected_revision)
                written = TenantWrite(created=False, revision=revision)
            else:
                row = await connection.fetchrow(
                    "INSERT INTO tenants (tenant_id, config) VALUES ($1, $2) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config, "
                    "updated_at = now(), revision = tenants.revision + 1 "
                    "RETURNING (xmax = 0) AS inserted, revision",
                    tenant_id,
                    config,
                )
                written = TenantWrite(created=row["inserted"], revision=row["revision"])
            if audit is not None:
                await _append_audit(connection, tenant_id, audit(written.created))
        return written


async def _lock_audit_chain(connection: asyncpg.Connection, tenant_id: str) -> None:
    """One appender at a time per tenant chain, until the transaction ends."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"audit:{tenant_id}")


async def _append_audit(
    connection: asyncpg.Connection, tenant_id: str, entry: audit_pb2.AuditEntry
) -> audit_pb2.AuditEntry:
    """Seal `entry` after the chain head and insert it, in the caller's transaction (which
    holds the chain's lock)."""
    head = await connection.fetchrow(
        "SELECT sequence, hash FROM audit_logs WHERE tenant_id = $1 ORDER BY sequence DESC LIMIT 1",
        tenant_id,
    )
    sealed = new_audit_entry(tenant_id, entry, head)
    await connection.execute(
        f"INSERT INTO audit_logs ({_columns(AUDIT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({_placeholders(AUDIT_COLUMNS)})",
        *audit_values(sealed),
    )
    return sealed


async def _correlation_ids(
    connection: asyncpg.Connection, tenant_id: str, user_id: str
) -> list[str]:
    rows = await connection.fetch(
        "SELECT DISTINCT t.correlation_id FROM conversation_turns t JOIN session_contexts s "
        "USING (tenant_id, session_id) WHERE s.tenant_id = $1 AND s.user_id = $2 "
        "AND t.correlation_id <> '' ORDER BY t.correlation_id",
        tenant_id,
        user_id,
    )
    return [row["correlation_id"] for row in rows]


def _numbered_turns(
    rows: list[asyncpg.Record], tenant_id: str, session_id: str
) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
    """(seq, turn) from rows holding `seq` and the TRANSCRIPT_COLUMNS."""
    return [(row["seq"], turn_from(dict(row), tenant_id, session_id)) for row in rows]


def _columns(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def _placeholders(columns: tuple[str, ...]) -> str:
    return ", ".join(f"${n}" for n in range(1, len(columns) + 1))
