"""Session context logic: cache first, the store on a miss, refill with a TTL."""

import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime

from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import audit_pb2, outbox_pb2

from services.context.audit import NO_ACTOR, Actor, audit_entry
from services.context.cache import SessionCache
from services.context.folding import fold_lines
from services.context.locks import SessionLocks
from services.context.store import (
    SessionStore,
    StoredTenant,
    TenantWrite,
    check_fence,
    page_start,
)
from services.mesh.errors import (
    FieldViolation,
    MeshError,
    failed_precondition,
    invalid_argument,
    not_found,
)
from services.mesh.tenant_rules import tenant_config_violations

log = logging.getLogger("metaagent.context")


DEFAULT_DEDUP_WINDOW_SECONDS = 60
TENANT_CACHE_SECONDS = 5.0


DEFAULT_TURNS_PAGE, MAX_TURNS_PAGE = 50, 500
FOLD_BATCH = 10
MAX_TURN_TEXT_CHARS = 16_000
MAX_TURNS_PER_COMMIT = 20


def validate_turns(session_id: str, turns: Sequence[conversation_pb2.ConversationTurn]) -> None:
    """Every problem with the turns of one commit, as field violations."""
    if not turns:
        raise invalid_argument(FieldViolation("turns", "at least one turn is required"))
    violations = []
    if len(turns) > MAX_TURNS_PER_COMMIT:
        violations.append(FieldViolation("turns", f"at most {MAX_TURNS_PER_COMMIT} per commit"))
    for index, turn in enumerate(turns):
        where = f"turns[{index}]"
        if turn.role not in (
            conversation_pb2.TURN_ROLE_USER,
            conversation_pb2.TURN_ROLE_AGENT,
            conversation_pb2.TURN_ROLE_HUMAN,
        ):
            violations.append(FieldViolation(f"{where}.role", "must be user, agent or human"))
        if len(turn.text) > MAX_TURN_TEXT_CHARS:
            violations.append(
                FieldViolation(f"{where}.text", f"exceeds {MAX_TURN_TEXT_CHARS} characters")
            )
        if "\x00" in turn.text:
            violations.append(FieldViolation(f"{where}.text", "must not contain NUL"))
        if turn.session_id and turn.session_id != session_id:
            violations.append(FieldViolation(f"{where}.session_id", "names another session"))
        if turn.tenant_id:
            violations.append(
                FieldViolation(f"{where}.tenant_id", "comes from x-tenant-id; leave it empty")
            )
    if violations:
        raise invalid_argument(*violations)


def cache_key(tenant_id: str, session_id: str) -> str:
    return f"session:{tenant_id}:{session_id}"


def _check_owner(context: conversation_pb2.SessionContext, user_id: str) -> None:
    if user_id and context.user_id and context.user_id != user_id:
        raise failed_precondition(
            "the session belongs to another user", "SESSION_OWNED_BY_ANOTHER_USER"
        )


class ContextBook:
    """Reads and writes conversation state for one tenant at a time."""

    def __init__(
        self,
        store: SessionStore,
        cache: SessionCache,
        *,
        ttl_seconds: int,
        recent_turns: int,
        locks: SessionLocks | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._locks = locks
        self._tenants: dict[str, tuple[StoredTenant | None, float]] = {}
        self._ttl = ttl_seconds
        self._recent_turns = recent_turns

    async def get_or_create(
        self, tenant_id: str, session_id: str, user_id: str, channel: int
    ) -> tuple[conversation_pb2.SessionContext, bool, bool]:
        """(context, created, cache_hit) for the session, creating it on first sight.

        NOT_FOUND when the tenant is not configured (nothing is created); FAILED_PRECONDITION
        when `user_id` is set and the session belongs to another user."""
        key = cache_key(tenant_id, session_id)
        cached = await self._cache.get(key)
        if cached is not None:
            context = conversation_pb2.SessionContext.FromString(cached)
            if context.user_id or not user_id:
                _check_owner(context, user_id)
                return context, False, True
        created = False
        generation = await self._cache.generation(key)
        stored = await self._store.load_session(tenant_id, session_id, self._recent_turns)
        if stored is None:
            await self.tenant(tenant_id)
            stored = await self._store.create_session(tenant_id, session_id, user_id, channel)
            created = True
        context = stored
        if user_id and not context.user_id:
            if await self._store.claim_owner(tenant_id, session_id, user_id):
                context.user_id = user_id
            else:
                context = (
                    await self._store.load_session(tenant_id, session_id, self._recent_turns)
                    or context
                )
            await self._cache.delete(key)
            generation = await self._cache.generation(key)
        _check_owner(context, user_id)
        await self._cache.set_if_generation(key, context.SerializeToString(), self._ttl, generation)
        return context, created, False

    async def commit_turn(
        self,
        tenant_id: str,
        session_id: str,
        turns: Sequence[conversation_pb2.ConversationTurn],
        short_context: conversation_pb2.ShortContext | None,
        fencing_token: int = 0,
    ) -> list[conversation_pb2.ConversationTurn]:
        validate_turns(session_id, turns)
        if fencing_token and self._locks is not None:
            latest = await self._locks.latest_token(tenant_id, session_id)
            if fencing_token > latest:
                raise failed_precondition(
                    "this fencing token was never granted for the session", "UNKNOWN_FENCING_TOKEN"
                )
            check_fence(latest, fencing_token)
        stored = await self._store.commit_turns(
            tenant_id, session_id, turns, short_context, fencing_token
        )
        await self._cache.delete(cache_key(tenant_id, session_id))
        try:
            await self._fold(tenant_id, session_id)
        except MeshError as error:
            log.warning(
                "folding into the summary failed (the commit stands; the next one retries): %s",
                error.message,
            )
        else:
            await self._cache.delete(cache_key(tenant_id, session_id))
        return stored

    async def _fold(self, tenant_id: str, session_id: str) -> None:
        """Fold turns older than the recent window into the summary, a batch at a time.
        Best effort: the commit has already landed, and the next commit folds what is left."""
        candidates = await self._store.fold_candidates(
            tenant_id, session_id, self._recent_turns, min_count=FOLD_BATCH
        )
        if len(candidates) < FOLD_BATCH:
            return
        current = await self._store.load_session(tenant_id, session_id, 0)
        summary = current.short_context.summary if current is not None else ""
        folded = fold_lines(summary, [turn for _, turn in candidates])
        await self._store.apply_fold(tenant_id, session_id, candidates[-1][0], folded)

    async def update_short_context(
        self, tenant_id: str, session_id: str, short_context: conversation_pb2.ShortContext
    ) -> conversation_pb2.SessionContext:
        if not await self._store.update_short_context(tenant_id, session_id, short_context):
            raise not_found(f"session '{session_id}' does not exist", "SESSION_NOT_FOUND")
        await self._cache.delete(cache_key(tenant_id, session_id))
        updated = await self._store.load_session(tenant_id, session_id, self._recent_turns)
        assert updated is not None
        return updated

    async def session(
        self, tenant_id: str, session_id: str, transcript_limit: int
    ) -> tuple[conversation_pb2.SessionContext, list[conversation_pb2.ConversationTurn]]:
        context = await self._store.load_session(tenant_id, session_id, self._recent_turns)
        if context is None:
            raise not_found(f"session '{session_id}' does not exist", "SESSION_NOT_FOUND")
        transcript = await self._store.transcript(tenant_id, session_id, transcript_limit)
        return context, transcript

    async def turns_page(
        self, tenant_id: str, session_id: str, page_size: int, page_token: str
    ) -> tuple[list[conversation_pb2.ConversationTurn], str]:
        """One page of the full transcript, oldest first, and the next page's token."""
        after = page_start(page_size, page_token)
        if await self._store.load_session(tenant_id, session_id, 0) is None:
            raise not_found(f"session '{session_id}' does not exist", "SESSION_NOT_FOUND")
        size = min(page_size or DEFAULT_TURNS_PAGE, MAX_TURNS_PAGE)
        rows = await self._store.turns_after(tenant_id, session_id, after, size + 1)
        page = rows[:size]
        token = str(page[-1][0]) if len(rows) > size else ""
        return [turn for _, turn in page], token

    async def pending_outbox(
        self, tenant_id: str | None, limit: int, lease_seconds: int = 0, claimant: str = ""
    ) -> list[outbox_pb2.OutboxMessage]:
        return await self._store.pending_outbox(tenant_id, limit, lease_seconds, claimant)

    async def outbox_backlog(self, tenant_id: str | None) -> tuple[int, datetime | None]:
        return await self._store.outbox_backlog(tenant_id)

    async def mark_outbox(
        self, tenant_id: str | None, message_ids: list[str], status: int, error: str
    ) -> int:
        """Record publish outcomes; cached copies of the sessions concerned are dropped so their
        turns show the new statuses."""
        marked = await self._store.mark_outbox(tenant_id, message_ids, status, error)
        for owner, session_id in set(marked):
            await self._cache.delete(cache_key(owner, session_id))
        return len(marked)

    async def _stored_tenant(self, tenant_id: str) -> StoredTenant | None:
        """The stored configuration and its revision, kept parsed for TENANT_CACHE_SECONDS
        (every turn reads it twice); this process's own writes replace it at once, other
        replicas' within the TTL (a conditional write made from such a stale read fails, and
        drops the cached copy)."""
        now = time.monotonic()
        cached = self._tenants.get(tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = await self._store.load_tenant(tenant_id)
        if len(self._tenants) >= 10_000:
            self._tenants.clear()
        self._tenants[tenant_id] = (stored, now + TENANT_CACHE_SECONDS)
        return stored

    async def _tenant_config(self, tenant_id: str) -> tenant_pb2.TenantConfig | None:
        stored = await self._stored_tenant(tenant_id)
        return None if stored is None else stored.config

    async def tenant(self, tenant_id: str) -> tenant_pb2.TenantConfig:
        config, _ = await self.tenant_revision(tenant_id)
        return config

    async def tenant_revision(self, tenant_id: str) -> tuple[tenant_pb2.TenantConfig, int]:
        """A copy of the tenant's configuration, and its revision; NOT_FOUND (reason
        TENANT_NOT_FOUND) when it has none."""
        stored = await self._stored_tenant(tenant_id)
        if stored is None:
            raise not_found(f"tenant '{tenant_id}' is not configured", "TENANT_NOT_FOUND")
        config = tenant_pb2.TenantConfig()
        config.CopyFrom(stored.config)
        return config, stored.revision

    async def dedup_window(self, tenant_id: str) -> float:
        """How long the tenant's idempotency records are kept (the seed's 60 s by default)."""
        config = await self._tenant_config(tenant_id)
        window = config.dedup_window_seconds if config is not None else 0
        return float(window or DEFAULT_DEDUP_WINDOW_SECONDS)

    async def put_tenant(
        self,
        tenant_id: str,
        config: tenant_pb2.TenantConfig,
        *,
        expected_revision: int = 0,
        correlation_id: str = "",
        actor: Actor = NO_ACTOR,
    ) -> TenantWrite:
        """Validate and store the tenant's configuration with its "tenant_configured" audit
        entry, in one transaction; the write says whether it created the tenant and the
        revision it stored. INVALID_ARGUMENT names every bad field
        (services/mesh/tenant_rules.py) and nothing is written. With `expected_revision` (> 0),
        FAILED_PRECONDITION (TENANT_REVISION_MISMATCH) when the stored revision is another
        (see SessionStore.put_tenant)."""
        violations = tenant_config_violations(config, tenant_id, prefix="tenant.")
        if expected_revision < 0:
            violations.append(
                FieldViolation("expected_revision", "must be 0 (unconditional) or a revision")
            )
        if violations:
            raise invalid_argument(*violations)
        stored = tenant_pb2.TenantConfig()
        stored.CopyFrom(config)
        stored.tenant_id = tenant_id

        def audit(created: bool) -> audit_pb2.AuditEntry:
            return audit_entry(
                "tenant_configured",
                _configured_payload(tenant_id, stored, created, actor),
                correlation_id=correlation_id,
                actor=actor.service,
            )

        try:
            return await self._store.put_tenant(stored, audit, expected_revision=expected_revision)
        finally:
            # Written, or refused as stale (the cached copy may be what the caller read).
            self._tenants.pop(tenant_id, None)


def _configured_payload(
    tenant_id: str, config: tenant_pb2.TenantConfig, created: bool, actor: Actor
) -> struct_pb2.Struct:
    """What a tenant write's audit entry records: no prompt text, a digest of all of it."""
    payload = struct_pb2.Struct()
    payload.update(
        {
            "created": created,
            "configSha256": hashlib.sha256(
                config.SerializeToString(deterministic=True)
            ).hexdigest(),
            "allowedActions": list(config.allowed_actions),
            "intents": len(config.intents),
            "escalationThreshold": round(config.escalation_threshold, 6),
            "dedupWindowSeconds": config.dedup_window_seconds,
            "dailyTokenBudget": config.daily_token_budget,
            "turnsPerMinute": config.turns_per_minute,
            **actor.details(tenant_id),
        }
    )
    return payload
