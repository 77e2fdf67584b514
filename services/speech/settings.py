"""Speech service settings."""

from pydantic import Field

from services.mesh.settings import MeshSettings


class SpeechSettings(MeshSettings):
    espeak_binary: str = Field("espeak-ng", validation_alias="SPEECH_ESPEAK_BINARY")
    max_synthesis_chars: int = Field(2000, validation_alias="SPEECH_MAX_SYNTHESIS_CHARS")
