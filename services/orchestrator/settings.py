"""Orchestrator settings."""

import socket

from pydantic import Field, SecretStr

from services.mesh.settings import MeshSettings


class OrchestratorSettings(MeshSettings):
    retrieval_top_k: int = Field(5, ge=1, le=50, validation_alias="RETRIEVAL_TOP_K")
    max_text_chars: int = Field(4000, ge=1, validation_alias="ORCHESTRATOR_MAX_TEXT_CHARS")
    handoff_resume_grace_seconds: float = Field(
        10.0, ge=0, validation_alias="ORCHESTRATOR_HANDOFF_RESUME_GRACE_SECONDS"
    )
    """How long a hand-over socket's unacknowledged events wait for its next watch."""
    turn_lease_seconds: float = Field(
        30.0, gt=0, validation_alias="ORCHESTRATOR_TURN_LEASE_SECONDS"
    )
    """How long a turn's idempotency claim and session lease hold if the process dies."""
    lock_wait_seconds: float = Field(10.0, ge=0, validation_alias="ORCHESTRATOR_LOCK_WAIT_SECONDS")
    """How long a turn waits for the session's previous turn before ABORTED."""
    azure_service_bus_connection_string: SecretStr | None = Field(
        None, validation_alias="AZURE_SERVICE_BUS_CONNECTION_STRING"
    )
    """The action bus; none = the in-process bus of the embedded profile."""
    service_bus_topic_actions: str = Field(
        "meta-agent-actions", validation_alias="SERVICE_BUS_TOPIC_ACTIONS"
    )
    outbox_max_attempts: int = Field(20, ge=1, validation_alias="OUTBOX_MAX_ATTEMPTS")
    """Publish attempts before an action is dead-lettered (status failed)."""
    outbox_batch_size: int = Field(100, ge=1, le=500, validation_alias="OUTBOX_BATCH_SIZE")
    outbox_poll_seconds: float = Field(1.0, ge=0, validation_alias="OUTBOX_POLL_SECONDS")
    outbox_lease_seconds: int = Field(60, ge=1, le=3600, validation_alias="OUTBOX_LEASE_SECONDS")
    """How long a sweep holds the messages it claimed (replicas never share a message)."""
    outbox_relay_id: str = Field(
        default_factory=socket.gethostname, max_length=128, validation_alias="OUTBOX_RELAY_ID"
    )
    """The relay's claimant name: unique per replica, kept across restarts (the pod name)."""
    run_relay: bool = Field(True, validation_alias="ORCHESTRATOR_RUN_RELAY")
    """Run the outbox relay in this process (one replica should; see README: Actions)."""
