"""LLM service settings."""

from pydantic import Field

from services.mesh.settings import MeshSettings


class LlmSettings(MeshSettings):
    intent_threshold: float = Field(
        0.34, ge=0.0, le=1.0, validation_alias="OFFLINE_INTENT_THRESHOLD"
    )
    """Similarity an utterance needs to an intent's examples for the offline responder."""
    max_user_text_chars: int = Field(8000, validation_alias="LLM_MAX_USER_TEXT_CHARS")
