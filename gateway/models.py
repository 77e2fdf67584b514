"""The public JSON shapes, in camelCase: the seed's ProcessRequest and ProcessResponse, and the
frames of the human agents' hand-over WebSocket.

Free-form objects sent in (`FreeForm`: a turn's `metadata` and `contextHints`, an action's
`params`) become protobuf Structs, so they are held to what a Struct carries
(services/mesh/freeform.py): at most 32 levels deep, finite numbers, integers within ±2^53;
anything else is a 400 naming the field.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from services.mesh.correlation import ID_PATTERN as _ID
from services.mesh.correlation import TENANT_PATTERN as _TENANT
from services.mesh.freeform import MAX_DEPTH, freeform_problem

ID_PATTERN = _ID.pattern
TENANT_PATTERN = _TENANT.pattern


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _carried_by_a_struct(value: dict[str, Any]) -> dict[str, Any]:
    problem = freeform_problem(value)
    if problem is not None:
        raise PydanticCustomError("free_form_json", str(problem))
    return value


FreeForm = Annotated[
    dict[str, Any],
    AfterValidator(_carried_by_a_struct),
    Field(
        description=f"Free-form JSON object: at most {MAX_DEPTH} levels deep, finite numbers, "
        "integers within ±2^53"
    ),
]
"""A free-form JSON object sent in, as a protobuf Struct can carry it."""


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
    type: InputType = Field(
        description="`text`, or `speech` with its transcript in `text`; `event` input is not "
        "handled yet and is refused (400)"
    )
    text: str | None = None
    speech_url: str | None = Field(None, max_length=2048)
    metadata: FreeForm | None = None


class ProcessRequest(CamelModel):
    tenant_id: str = Field(pattern=TENANT_PATTERN)
    session_id: str = Field(pattern=ID_PATTERN)
    correlation_id: str | None = Field(None, pattern=ID_PATTERN)
    user_id: str | None = Field(None, max_length=128)
    channel: Channel
    input: ProcessInput
    context_hints: FreeForm | None = None


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


# --- the human agents' hand-over WebSocket (gateway/routes/handoff.py) --------------------------

MAX_REPLY_ACTIONS = 10


class ActionIn(CamelModel):
    """An action a human agent triggers with a reply (validated by the orchestrator)."""

    type: str = Field(min_length=1, max_length=64)
    params: FreeForm = Field(default_factory=dict)


class AgentReply(CamelModel):
    """`{"type": "reply"}`: a human agent's message into a session."""

    type: Literal["reply"]
    session_id: str = Field(pattern=ID_PATTERN)
    text: str = Field(min_length=1)
    correlation_id: str | None = Field(None, pattern=ID_PATTERN)
    """The reply's idempotency key: a retry with the same one is stored once."""
    actions: list[ActionIn] = Field(default_factory=list, max_length=MAX_REPLY_ACTIONS)


class AgentAck(CamelModel):
    """`{"type": "ack"}`: the agent has a hand-over; it is not delivered again."""

    type: Literal["ack"]
    event_id: str = Field(pattern=ID_PATTERN)
    correlation_id: str | None = Field(None, pattern=ID_PATTERN)


AgentMessage = Annotated[AgentReply | AgentAck, Field(discriminator="type")]
"""What a human agent sends on the hand-over WebSocket."""


class TranscriptTurnOut(CamelModel):
    role: str
    """"user", "agent" or "human"."""
    text: str


class HandoffOut(CamelModel):
    """A conversation handed to a person, with the whole context (never log it: customer
    text)."""

    event_id: str
    kind: str
    """"handoff" (take the conversation over) or "ticket" (a follow-up)."""
    tenant_id: str
    session_id: str
    correlation_id: str
    reason: str
    summary: str
    transcript: list[TranscriptTurnOut]
    customer_text: str
    entities: dict[str, Any]
    user: dict[str, Any]
    order_id: str
    language: str
    created_at: str
    params: dict[str, Any]


class HumanTurnOut(CamelModel):
    """The human agent's reply as the session stores it."""

    turn_id: str
    session_id: str
    role: str
    text: str
    actions: list[ActionOut]
    correlation_id: str
