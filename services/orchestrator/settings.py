"""Orchestrator settings."""

from pydantic import Field

from services.mesh.settings import MeshSettings


class OrchestratorSettings(MeshSettings):
    retrieval_top_k: int = Field(5, ge=1, le=50, validation_alias="RETRIEVAL_TOP_K")
    max_text_chars: int = Field(4000, ge=1, validation_alias="ORCHESTRATOR_MAX_TEXT_CHARS")
