"""The relational store port: sessions, turns, tenants and the outbox.

Every method takes the tenant explicitly; adapters must never read or write another tenant's
rows. Adapters raise UNAVAILABLE (`MeshError`, with retry advice) when the store cannot be
reached and ALREADY_EXISTS for a duplicate id. The embedded adapter is SQLite (`sqlite.py`).
"""

from collections.abc import Sequence
from typing import Protocol

from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import outbox_pb2

from services.mesh.errors import failed_precondition


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

    async def transcript(
        self, tenant_id: str, session_id: str, limit: int
    ) -> list[conversation_pb2.ConversationTurn]: ...

    async def pending_outbox(self, tenant_id: str, limit: int) -> list[outbox_pb2.OutboxMessage]:
        """The tenant's PENDING outbox messages, oldest first."""

    async def get_tenant(self, tenant_id: str) -> tenant_pb2.TenantConfig | None: ...

    async def put_tenant(self, tenant: tenant_pb2.TenantConfig) -> bool:
        """Insert or replace; True when it was created."""


def check_fence(fence: int, fencing_token: int) -> None:
    """Refuse a commit whose lease is older than one already seen for the session."""
    if fencing_token < fence:
        raise failed_precondition(
            f"fencing token {fencing_token} is stale (the session has seen {fence})",
            "STALE_FENCING_TOKEN",
        )


def open_store(url: str) -> SessionStore:
    """The store adapter for `url`; refuses a scheme it does not know rather than guess.
    Drivers are imported only for the adapter chosen."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        from services.context.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    if scheme in ("postgres", "postgresql"):
        from services.context.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"unsupported CONTEXT_STORE_URL scheme '{scheme}' (supported: sqlite:///, postgresql://)"
    )
