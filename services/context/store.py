"""The relational store port: sessions, turns, tenants, the outbox and the hand-over queue.

Every method takes the tenant explicitly; adapters must never read or write another tenant's
rows. Adapters raise UNAVAILABLE (`MeshError`, with retry advice) when the store cannot be
reached and ALREADY_EXISTS for a duplicate id. The embedded adapter is SQLite (`sqlite.py`).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import audit_pb2, consent_pb2, handoff_pb2, outbox_pb2

from services.context.handoff_rows import HandoffClaim
from services.mesh.errors import FieldViolation, failed_precondition, invalid_argument

PAGE_CURSOR = re.compile(r"[0-9]{1,19}")
NOT_OUR_PAGE_CURSOR = "is not a token from this API"
MAX_POSITION = 2**63 - 1


def page_start(page_size: int, page_token: str) -> int:
    """The position a page request starts after (0 for the first page); INVALID_ARGUMENT
    naming `page_size` when it is negative and `page_token` when it is not a token this
    service could have issued.

    Tokens are the decimal position of the last item of the previous page, which every store
    keeps within a signed 64-bit integer: signs, spaces, non-ASCII digits or a value beyond
    int64 are refused here, so they never reach a store, whose driver would fail on them."""
    violations = []
    if page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    valid = not page_token or (
        PAGE_CURSOR.fullmatch(page_token) is not None and int(page_token) <= MAX_POSITION
    )
    if not valid:
        violations.append(FieldViolation("page_token", NOT_OUR_PAGE_CURSOR))
    if violations:
        raise invalid_argument(*violations)
    return int(page_token or 0)


class StoreUnavailable(Exception):
    """The store cannot be reached; nothing was written."""


class SessionStore(Protocol):
    async def open(self) -> None:
        """Connect and apply migrations."""

    async def close(self) -> None: ...

    async def load_session(
        self, tenant_id: str, session_id: str, recent_turns: int
    ) -> conversation_pb2.SessionContext | None:
        """The session with its last `recent_turns` turns, oldest first, or None."""

    async def create_session(
        self, tenant_id: str, session_id: str, user_id: str, channel: int
    ) -> conversation_pb2.SessionContext:
        """Create the session, or return the existing one if a racer created it first."""

    async def commit_turns(
        self,
        tenant_id: str,
        session_id: str,
        turns: Sequence[conversation_pb2.ConversationTurn],
        short_context: conversation_pb2.ShortContext | None,
        fencing_token: int = 0,
    ) -> list[conversation_pb2.ConversationTurn]:
        """Write turns, their actions' outbox rows and the short context in one transaction.

        A non-zero `fencing_token` older than one already committed for the session is
        refused (FAILED_PRECONDITION) and becomes the session's fence otherwise."""

    async def update_short_context(
        self, tenant_id: str, session_id: str, short_context: conversation_pb2.ShortContext
    ) -> bool:
        """Replace the short context (an empty summary keeps the stored one); False when the
        session does not exist."""

    async def transcript(
        self, tenant_id: str, session_id: str, limit: int
    ) -> list[conversation_pb2.ConversationTurn]: ...

    async def fold_candidates(
        self, tenant_id: str, session_id: str, keep_last: int, min_count: int = 0
    ) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
        """(seq, turn) pairs of the turns not yet folded into the summary, oldest first, leaving
        the last `keep_last` verbatim; none (and none decoded) when there are fewer than
        `min_count`."""

    async def apply_fold(
        self, tenant_id: str, session_id: str, through_seq: int, summary: str
    ) -> bool:
        """Set the summary and mark turns up to `through_seq` folded (False if a racer did)."""

    async def turns_after(
        self, tenant_id: str, session_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, conversation_pb2.ConversationTurn]]:
        """(seq, turn) pairs after `after_seq`, oldest first."""

    async def pending_outbox(
        self, tenant_id: str | None, limit: int, lease_seconds: int = 0, claimant: str = ""
    ) -> list[outbox_pb2.OutboxMessage]:
        """PENDING outbox messages, oldest first: one tenant's, or every tenant's (None, the
        relay's sweep, which needs the relay's own access).

        With `lease_seconds` > 0 the messages are claimed for `claimant`: until they are marked
        or the lease runs out, no other claimant gets them, nor any message of a session that
        has one; the same claimant (a relay restarted in place) takes them back at once."""

    async def outbox_backlog(self, tenant_id: str | None) -> tuple[int, datetime | None]:
        """How many messages are PENDING (one tenant's, or every tenant's with None) and when
        the oldest was written (None when there is none)."""

    async def mark_outbox(
        self, tenant_id: str | None, message_ids: Sequence[str], status: int, error: str
    ) -> list[tuple[str, str]]:
        """Record a publish outcome: SENT or FAILED are final, PENDING counts a failed attempt.
        Returns (tenant, session) of each message changed; unknown ids are skipped."""

    async def enqueue_handoff(self, tenant_id: str, handoff: handoff_pb2.QueuedHandoff) -> bool:
        """Queue a hand-over (its event id, session, user, kind and payload) for the tenant's
        agents; False, and nothing changed, when its event id was queued before (in any state).
        NOT_FOUND (SESSION_NOT_FOUND) when its session does not exist: nothing is queued for a
        user erased meanwhile."""

    async def claim_handoffs(
        self, tenant_id: str, claim: HandoffClaim
    ) -> list[handoff_pb2.QueuedHandoff]:
        """In one transaction: hand-overs whose lease ran out go back to the waiting ones; those
        in flight with the claim's connection get a new lease and are returned (but those in
        `claim.skip`), oldest first; then up to `claim.limit` of the oldest waiting ones are put
        in flight with the connection and returned, oldest first."""

    async def complete_handoff(
        self, tenant_id: str, event_id: str, agent_id: str, connection_id: str
    ) -> bool:
        """Mark a hand-over done by its holder (`handoff_rows.completes`), dropping its
        payload; False when there was nothing to complete. FAILED_PRECONDITION
        (HANDOFF_HELD_ELSEWHERE) when another agent or connection holds it."""

    async def release_handoffs(self, tenant_id: str, agent_id: str, connection_id: str) -> int:
        """Give the hand-overs in flight with a connection back to the waiting ones (their last
        holder is kept: it may still complete them); how many."""

    async def append_audit(
        self, tenant_id: str, entry: audit_pb2.AuditEntry
    ) -> audit_pb2.AuditEntry:
        """Seal `entry` after the tenant's chain head and store it, one appender at a time."""

    async def audit_entries(
        self, tenant_id: str, after_sequence: int, limit: int, filters: "AuditFilters"
    ) -> list[audit_pb2.AuditEntry]:
        """Entries after `after_sequence`, in chain order, matching `filters`."""

    async def get_consent(self, tenant_id: str, user_id: str) -> consent_pb2.UserConsent | None: ...

    async def change_consent(
        self, tenant_id: str, user_id: str, change: "ConsentChange"
    ) -> consent_pb2.UserConsent:
        """Apply `change` atomically (an upsert); untouched kinds keep their value."""

    async def claim_owner(self, tenant_id: str, session_id: str, user_id: str) -> bool:
        """Record `user_id` as the owner of a session that has none; False if it has one."""

    async def sessions_of(self, tenant_id: str, user_id: str) -> list[str]:
        """The ids of the user's sessions."""

    async def correlation_ids_of(self, tenant_id: str, user_id: str) -> list[str]:
        """The distinct, non-empty correlation ids of the turns of the user's sessions (the
        idempotency keys their replies were stored under)."""

    async def erase_user(self, tenant_id: str, user_id: str) -> "Erasure":
        """Delete the user's sessions (with their turns and outbox rows), queued hand-overs
        (the user's, or of the user's sessions) and consent, in one transaction; the result
        names the correlation ids of the deleted turns."""

    async def get_tenant(self, tenant_id: str) -> tenant_pb2.TenantConfig | None: ...

    async def load_tenant(self, tenant_id: str) -> "StoredTenant | None":
        """The tenant's configuration with its revision; None when it has none."""

    async def put_tenant(
        self,
        tenant: tenant_pb2.TenantConfig,
        audit: "TenantAudit | None" = None,
        *,
        expected_revision: int = 0,
    ) -> "TenantWrite":
        """Insert or replace, adding one to the revision (a new tenant's is 1). With
        `expected_revision` (> 0) the write happens only if the stored revision is that one,
        checked in the write's transaction (of two writers expecting the same revision exactly
        one wins); otherwise FAILED_PRECONDITION (`tenant_rules.revision_mismatch`), also
        when the tenant does not exist, and nothing is written. With `audit`, the entry it
        returns (given whether the tenant was created) is sealed onto the tenant's audit chain
        in the same transaction: both are written or neither is."""


@dataclass(frozen=True)
class ConsentChange:
    """New values for the kinds a grant or revocation touches (None: left as they are)."""

    voice_recording: bool | None
    data_learning: bool | None
    granted_at: datetime | None
    revoked_at: datetime | None

    def values(self, tenant_id: str, user_id: str) -> tuple[object, ...]:
        """tenant, user, voice, learning, consent date, revoked date, touches voice, touches
        learning: the parameters of both dialects' upsert."""
        return (
            tenant_id,
            user_id,
            bool(self.voice_recording),
            bool(self.data_learning),
            self.granted_at,
            self.revoked_at,
            self.voice_recording is not None,
            self.data_learning is not None,
        )


TenantAudit = Callable[[bool], audit_pb2.AuditEntry]
"""The audit entry of a tenant write, given whether the write created the tenant."""


@dataclass(frozen=True)
class StoredTenant:
    """A tenant's configuration as stored, and its revision (1 when created, one more on
    every write)."""

    config: tenant_pb2.TenantConfig
    revision: int


@dataclass(frozen=True)
class TenantWrite:
    """What a tenant write did: whether it created the tenant, and the revision it stored."""

    created: bool
    revision: int


@dataclass(frozen=True)
class Erasure:
    session_ids: list[str]
    turns: int
    consent: bool
    correlation_ids: list[str] = field(default_factory=list)
    """Of the erased turns: the keys under which their replies may still be stored."""
    handoffs: int = 0
    """Hand-overs deleted from the hand-over queue."""


@dataclass(frozen=True)
class AuditFilters:
    correlation_id: str = ""
    action: str = ""
    session_id: str = ""

    def conditions(self) -> list[tuple[str, str]]:
        """(column, value) pairs to match; columns are fixed names, values are bound."""
        pairs = (
            ("correlation_id", self.correlation_id),
            ("action", self.action),
            ("session_id", self.session_id),
        )
        return [(column, value) for column, value in pairs if value]


def check_fence(fence: int, fencing_token: int) -> None:
    """Refuse a commit whose lease is older than one already seen for the session."""
    if fencing_token < fence:
        raise failed_precondition(
            f"fencing token {fencing_token} is stale (the session has seen {fence})",
            "STALE_FENCING_TOKEN",
        )


def open_store(url: str, relay_url: str | None = None) -> SessionStore:
    """The store adapter for `url`; refuses a scheme it does not know rather than guess.
    Drivers are imported only for the adapter chosen."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        from services.context.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    if scheme in ("postgres", "postgresql"):
        from services.context.postgres import PostgresStore

        return PostgresStore(url, relay_dsn=relay_url)
    raise ValueError(
        f"unsupported CONTEXT_STORE_URL scheme '{scheme}' (supported: sqlite:///, postgresql://)"
    )
