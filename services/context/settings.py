"""Context service settings."""

from pydantic import Field

from services.mesh.settings import MeshSettings


class ContextSettings(MeshSettings):
    store_url: str | None = Field(None, validation_alias="CONTEXT_STORE_URL")
    """`sqlite:///path.db` (embedded default: `<state dir>/context.db`) or
    `postgresql://app-login@host/db` (a member of `metaagent_app`, owning nothing)."""
    relay_store_url: str | None = Field(None, validation_alias="CONTEXT_RELAY_STORE_URL")
    """PostgreSQL URL of the outbox relay's login (a member of `metaagent_relay`): needed for
    ListOutbox / MarkOutbox across tenants."""
    migrations_url: str | None = Field(None, validation_alias="CONTEXT_MIGRATIONS_URL")
    """PostgreSQL URL of the owner role; when set, migrations run at start-up."""
    cache_url: str = Field("memory://", validation_alias="CONTEXT_CACHE_URL")
    session_cache_ttl_seconds: int = Field(900, ge=1, validation_alias="SESSION_CACHE_TTL_SECONDS")
    recent_turns: int = Field(10, ge=1, le=100, validation_alias="CONTEXT_RECENT_TURNS")

    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.state_dir / 'context.db'}"
