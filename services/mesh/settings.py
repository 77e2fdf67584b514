"""The settings base every service extends: environment first, then `.env`, then defaults.

Field names follow the seed's variable names (`JWT_SECRET`, `AZURE_OPENAI_GPT5_ENDPOINT`, ...),
which are the operators' contract. `METAAGENT_ENV=production` makes every service refuse a
missing or well-known default secret.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.mesh import identity

DEFAULT_PORTS = {
    identity.CONTEXT: 50051,
    identity.RETRIEVAL: 50052,
    identity.LLM: 50053,
    identity.SPEECH: 50054,
    identity.ORCHESTRATOR: 50055,
}
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_METRICS_PORTS = {
    identity.CONTEXT: 9461,
    identity.RETRIEVAL: 9462,
    identity.LLM: 9463,
    identity.SPEECH: 9464,
    identity.ORCHESTRATOR: 9465,
}

WELL_KNOWN_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "password", "dev", "development", "test", "***"}
)


class MeshSettings(BaseSettings):
    """Settings shared by every component of the mesh."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,  # a refused secret must not reach the error message
    )

    environment: Literal["development", "production"] = Field(
        "development", validation_alias="METAAGENT_ENV"
    )
    state_dir: Path = Field(Path(".run"), validation_alias="METAAGENT_STATE_DIR")
    certs_dir_override: Path | None = Field(None, validation_alias="METAAGENT_CERTS_DIR")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    context_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['context']}", validation_alias="CONTEXT_ADDR"
    )
    retrieval_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['retrieval']}", validation_alias="RETRIEVAL_ADDR"
    )
    llm_addr: str = Field(f"127.0.0.1:{DEFAULT_PORTS['llm']}", validation_alias="LLM_ADDR")
    speech_addr: str = Field(f"127.0.0.1:{DEFAULT_PORTS['speech']}", validation_alias="SPEECH_ADDR")
    orchestrator_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['orchestrator']}", validation_alias="ORCHESTRATOR_ADDR"
    )
    gateway_host: str = Field("127.0.0.1", validation_alias="GATEWAY_HOST")
    gateway_port: int = Field(DEFAULT_GATEWAY_PORT, validation_alias="GATEWAY_PORT")
    grpc_listen_addr: str | None = Field(None, validation_alias="GRPC_LISTEN_ADDR")
    """Where this process's gRPC server binds; defaults to its own `<SERVICE>_ADDR`."""

    grpc_shutdown_grace_seconds: float = Field(10.0, validation_alias="GRPC_SHUTDOWN_GRACE_SECONDS")
    grpc_default_timeout_seconds: float = Field(
        5.0, validation_alias="GRPC_DEFAULT_TIMEOUT_SECONDS"
    )
    grpc_retry_attempts: int = Field(4, ge=1, le=5, validation_alias="GRPC_RETRY_ATTEMPTS")

    metrics_port: int | None = Field(None, ge=0, le=65535, validation_alias="METRICS_PORT")
    """Where a service serves `/metrics`; defaults to its port in DEFAULT_METRICS_PORTS, 0 turns
    it off. The gateway serves `/metrics` on its own HTTP port."""
    metrics_host: str = Field("127.0.0.1", validation_alias="METRICS_HOST")
    metrics_tenant_labels: int = Field(50, ge=0, validation_alias="METRICS_TENANT_LABELS")
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    applicationinsights_connection_string: SecretStr | None = Field(
        None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    otel_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, validation_alias="OTEL_TRACES_SAMPLER_ARG"
    )

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def certs_dir(self) -> Path:
        return self.certs_dir_override or self.state_dir / "certs"

    @property
    def gateway_url(self) -> str:
        host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::") else self.gateway_host
        return f"http://{host}:{self.gateway_port}"

    def address_of(self, component: str) -> str:
        """The address clients dial for a gRPC component."""
        return str(getattr(self, f"{component}_addr"))

    def listen_address(self, component: str) -> str:
        return self.grpc_listen_addr or self.address_of(component)

    def metrics_port_of(self, component: str) -> int:
        """The port a service serves `/metrics` on (0: not served)."""
        if self.metrics_port is not None:
            return self.metrics_port
        return DEFAULT_METRICS_PORTS.get(component, 0)


def is_weak_secret(value: SecretStr | None) -> bool:
    """True for a missing, short or well-known placeholder secret."""
    if value is None:
        return True
    raw = value.get_secret_value()
    return raw.strip().lower() in WELL_KNOWN_SECRETS or len(raw) < 32
