"""Gateway settings: the seed's `JWT_SECRET` / `HMAC_SECRET` plus HTTP limits."""

from pydantic import Field, SecretStr, model_validator

from services.mesh.settings import MeshSettings, is_weak_secret


class GatewaySettings(MeshSettings):
    jwt_secret: SecretStr | None = Field(None, validation_alias="JWT_SECRET")
    hmac_secret: SecretStr | None = Field(None, validation_alias="HMAC_SECRET")
    jwt_audience: str | None = Field(None, validation_alias="JWT_AUDIENCE")
    jwt_issuer: str | None = Field(None, validation_alias="JWT_ISSUER")
    jwt_leeway_seconds: int = Field(30, validation_alias="JWT_LEEWAY_SECONDS")
    jwt_max_lifetime_seconds: int = Field(86400, ge=60, validation_alias="JWT_MAX_LIFETIME_SECONDS")
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
    handoff_watch_seconds: float = Field(
        3600.0, gt=0, validation_alias="GATEWAY_HANDOFF_WATCH_SECONDS"
    )
    """The deadline of one WatchHandoffs call; the agent's WebSocket then watches again."""

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> "GatewaySettings":
        if self.production:
            weak = [
                name
                for name, value in (
                    ("JWT_SECRET", self.jwt_secret),
                    ("HMAC_SECRET", self.hmac_secret),
                )
                if is_weak_secret(value)
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
        return self
