"""Orchestrator settings."""

from pydantic import Field

from services.mesh.settings import MeshSettings


class OrchestratorSettings(MeshSettings):
    retrieval_top_k: int = Field(5, ge=1, le=50, validation_alias="RETRIEVAL_TOP_K")
    max_text_chars: int = Field(4000, ge=1, validation_alias="ORCHESTRATOR_MAX_TEXT_CHARS")
    turn_lease_seconds: float = Field(
        30.0, gt=0, validation_alias="ORCHESTRATOR_TURN_LEASE_SECONDS"
    )
    """How long a turn's idempotency claim and session lease hold if the process dies."""
    lock_wait_seconds: float = Field(10.0, ge=0, validation_alias="ORCHESTRATOR_LOCK_WAIT_SECONDS")
    """How long a turn waits for the session's previous turn before ABORTED."""
