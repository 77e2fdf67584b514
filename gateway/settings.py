"""Gateway settings: the seed's `JWT_SECRET` / `HMAC_SECRET` plus HTTP limits."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from services.mesh.correlation import TENANT_PATTERN
from services.mesh.settings import MeshSettings, is_weak_secret


class HmacClientConfig(BaseModel):
    """One service-to-service caller in `HMAC_CLIENTS`: its secret, tenant and role."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    secret: SecretStr
    tenant_id: str = Field(alias="tenantId", pattern=TENANT_PATTERN.pattern)
    role: Literal["user", "agent", "tenant-admin", "platform-admin"] = "agent"


class GatewaySettings(MeshSettings):
    jwt_secret: SecretStr | None = Field(None, validation_alias="JWT_SECRET")
    hmac_secret: SecretStr | None = Field(None, validation_alias="HMAC_SECRET")
    jwt_audience: str | None = Field(None, validation_alias="JWT_AUDIENCE")
    jwt_issuer: str | None = Field(None, validation_alias="JWT_ISSUER")
    jwt_leeway_seconds: int = Field(30, validation_alias="JWT_LEEWAY_SECONDS")
    jwt_max_lifetime_seconds: int = Field(86400, ge=60, validation_alias="JWT_MAX_LIFETIME_SECONDS")
    jwt_jwks_url: str | None = Field(None, validation_alias="JWT_JWKS_URL")
    """Where RS256/ES256 verification keys are fetched (e.g. Entra ID's discovery `jwks_uri`)."""
    jwt_jwks_cache_seconds: float = Field(300.0, ge=1, validation_alias="JWT_JWKS_CACHE_SECONDS")
    jwt_jwks_min_refetch_seconds: float = Field(
        30.0, ge=0, validation_alias="JWT_JWKS_MIN_REFETCH_SECONDS"
    )
    """The least time between two JWKS fetches (unknown `kid`s or an unreachable endpoint)."""
    jwt_jwks_timeout_seconds: float = Field(3.0, gt=0, validation_alias="JWT_JWKS_TIMEOUT_SECONDS")
    hmac_clients: dict[str, HmacClientConfig] = Field(
        default_factory=dict, validation_alias="HMAC_CLIENTS"
    )
    """JSON: client id -> {"secret", "tenantId", "role"} (gateway/signatures.py)."""
    hmac_default_tenant: str = Field(
        "demo", pattern=TENANT_PATTERN.pattern, validation_alias="HMAC_DEFAULT_TENANT"
    )
    """The tenant of the `default` client whose secret is `HMAC_SECRET`."""
    hmac_tolerance_seconds: int = Field(
        300, ge=1, le=3600, validation_alias="HMAC_TOLERANCE_SECONDS"
    )
    hmac_require_v2: bool = Field(
        default_factory=lambda values: _is_production(values),
        validation_alias="HMAC_REQUIRE_V2",
    )
    """Refuse signatures without a `v2` element (method, path and body signed); by default
    true in production, false in development (gateway/signatures.py)."""
    replay_cache_url: str = Field("memory://", validation_alias="GATEWAY_REPLAY_CACHE_URL")
    """`memory://` (one process; refused in production) or `redis://…` (every replica)."""
    rate_limit_url: str = Field("memory://", validation_alias="GATEWAY_RATE_LIMIT_URL")
    """`memory://` (one process; refused in production) or `redis://…` (every replica)."""
    rate_limit_tenant_per_minute: int = Field(
        3000, ge=0, validation_alias="GATEWAY_RATE_LIMIT_TENANT_PER_MINUTE"
    )
    """Requests a tenant may make per minute through the gateway (0: no limit)."""
    rate_limit_client_per_minute: int = Field(
        600, ge=0, validation_alias="GATEWAY_RATE_LIMIT_CLIENT_PER_MINUTE"
    )
    """Requests one caller (token subject or HMAC client) may make per minute (0: no limit)."""
    rate_limit_signature_failures_per_minute: int = Field(
        30, ge=0, validation_alias="GATEWAY_RATE_LIMIT_SIGNATURE_FAILURES_PER_MINUTE"
    )
    """Failed signatures (a mismatch or a replay) one HMAC client id may send per minute from
    one network address; past it, that client's signed requests from that address are refused
    (429) before their body is read (0: no limit)."""
    max_body_bytes: int = Field(64 * 1024, validation_alias="GATEWAY_MAX_BODY_BYTES")
    max_text_chars: int = Field(4000, validation_alias="GATEWAY_MAX_TEXT_CHARS")
    process_timeout_seconds: float = Field(15.0, validation_alias="GATEWAY_PROCESS_TIMEOUT_SECONDS")
    max_knowledge_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, validation_alias="GATEWAY_MAX_KNOWLEDGE_BYTES"
    )
    """The largest knowledge ingestion body (documents or a JSON Lines catalogue)."""
    max_catalogue_items: int = Field(10_000, ge=1, validation_alias="GATEWAY_MAX_CATALOGUE_ITEMS")
    max_tenant_config_bytes: int = Field(
        1024 * 1024, ge=1024, validation_alias="GATEWAY_MAX_TENANT_CONFIG_BYTES"
    )
    knowledge_timeout_seconds: float = Field(
        120.0, gt=0, validation_alias="GATEWAY_KNOWLEDGE_TIMEOUT_SECONDS"
    )
    """The deadline of an ingestion (every document is embedded before the reply)."""
    max_ws_message_bytes: int = Field(
        64 * 1024, ge=1024, validation_alias="GATEWAY_MAX_WS_MESSAGE_BYTES"
    )
    """The largest message a human agent may send on the hand-over WebSocket."""
    max_handoff_sockets_per_agent: int = Field(
        4, ge=1, validation_alias="GATEWAY_MAX_HANDOFF_SOCKETS_PER_AGENT"
    )
    """Hand-over WebSockets one agent may keep open on one gateway replica."""
    metrics_token: SecretStr | None = Field(None, validation_alias="GATEWAY_METRICS_TOKEN")
    """When set, `/metrics` answers only `Authorization: Bearer <this token>` (the scraper's)."""
    handoff_watch_seconds: float = Field(
        3600.0, gt=0, validation_alias="GATEWAY_HANDOFF_WATCH_SECONDS"
    )
    """The deadline of one WatchHandoffs call; the agent's WebSocket then watches again."""

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> "GatewaySettings":
        if self.production:
            # JWT_SECRET may be absent behind a JWKS URL, HMAC_SECRET behind HMAC_CLIENTS
            weak = [
                name
                for name, value, optional in (
                    ("JWT_SECRET", self.jwt_secret, self.jwt_jwks_url is not None),
                    ("HMAC_SECRET", self.hmac_secret, bool(self.hmac_clients)),
                    *(
                        (f"HMAC_CLIENTS[{client}].secret", config.secret, False)
                        for client, config in self.hmac_clients.items()
                    ),
                )
                if is_weak_secret(value) and not (optional and value is None)
            ]
            if weak:
                raise ValueError(
                    f"production refuses a missing or default secret: set {', '.join(weak)} "
                    "(at least 32 characters, not a placeholder)"
                )
            unscoped = [
                name
                for name, value in (
                    ("JWT_AUDIENCE", self.jwt_audience),
                    ("JWT_ISSUER", self.jwt_issuer),
                )
                if not value
            ]
            if unscoped:
                missing = ", ".join(unscoped)
                raise ValueError(
                    f"production refuses tokens without audience/issuer: set {missing}"
                )
            if self.jwt_jwks_url and not self.jwt_jwks_url.startswith("https://"):
                raise ValueError("production refuses a JWT_JWKS_URL that is not https://")
            in_process = [
                name
                for name, url in (
                    ("GATEWAY_REPLAY_CACHE_URL", self.replay_cache_url),
                    ("GATEWAY_RATE_LIMIT_URL", self.rate_limit_url),
                )
                if url.split(":", 1)[0] not in SHARED_SCHEMES
            ]
            if in_process:
                # per replica, a signature replayed to another replica or a limit spread over
                # replicas would pass: production shares them through Redis
                raise ValueError(
                    f"production refuses an in-process (memory://) {', '.join(in_process)}: "
                    "set redis://… or rediss://…, shared by every replica"
                )
        return self


SHARED_SCHEMES = ("redis", "rediss")
"""The URL schemes of stores every gateway replica shares."""


def _is_production(values: dict[str, Any]) -> bool:
    """Whether the settings validated so far are production's (the default of settings that
    differ between the two)."""
    return bool(values.get("environment") == "production")
