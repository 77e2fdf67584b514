"""The public JSON shapes: the seed's ProcessRequest and ProcessResponse, in camelCase."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from services.mesh.correlation import ID_PATTERN as _ID
from services.mesh.correlation import TENANT_PATTERN as _TENANT

ID_PATTERN = _ID.pattern
TENANT_PATTERN = _TENANT.pattern


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Channel(StrEnum):
    WEB = "web"
    WHATSAPP = "whatsapp"
    VOICE = "voice"
    INSTAGRAM = "instagram"


class InputType(StrEnum):
    TEXT = "text"
    SPEECH = "speech"
    EVENT = "event"


class ProcessInput(CamelModel):
    type: InputType
    text: str | None = None
    speech_url: str | None = Field(None, max_length=2048)
    metadata: dict[str, Any] | None = None


class ProcessRequest(CamelModel):
    tenant_id: str = Field(pattern=TENANT_PATTERN)
    session_id: str = Field(pattern=ID_PATTERN)
    correlation_id: str | None = Field(None, pattern=ID_PATTERN)
    user_id: str | None = Field(None, max_length=128)
    channel: Channel
    input: ProcessInput
    context_hints: dict[str, Any] | None = None


class ActionOut(CamelModel):
    action_id: str
    type: str
    params: dict[str, Any]
    status: str


class ProcessResponse(CamelModel):
    response_text: str
    actions: list[ActionOut]
    embeddings_used: int
    tokens_consumed: int
    degraded: bool
    intent: str
    confidence: float
    correlation_id: str
