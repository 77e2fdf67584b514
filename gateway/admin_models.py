"""The JSON shapes of the tenant administration API, in camelCase like `gateway.models`.

Input models validate what the gateway can check without a round trip (ranges, patterns, the
action types the platform knows, cross references inside a tenant configuration), so a bad
request is a 400 naming its fields and the services only see well-formed data. Output models
mirror the protobuf messages and stay lenient. `TenantConfig` is both the body of a write and
the documented shape of a read; reads return the stored configuration as it is, unvalidated.
"""

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.models import ID_PATTERN, TENANT_PATTERN, CamelModel, FreeForm
from services.mesh.tenant_rules import KNOWN_ACTION_TYPES, SLOT_NAMES

LANGUAGE_PATTERN: Final = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$"
NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
USER_PATTERN: Final = r"^[^\x00-\x1f\x7f]{1,128}$"
"""A user id as the context service takes it: 1-128 characters, no control characters."""
PAGE_CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]{1,18}$"
"""A page token from a previous page (the context service's fit in 18 characters)."""

ACTION_TYPES: Final = tuple(sorted(KNOWN_ACTION_TYPES))
"""The action types the platform knows (services/mesh/tenant_rules.py, kept equal to the
orchestrator's action registry by a test: the gateway imports no service's code)."""
MAX_DOCUMENTS: Final = 100
"""Documents per JSON ingestion: one all-or-nothing UpsertDocuments batch."""

Language = Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)]
Template = Annotated[str, StringConstraints(max_length=4000)]
Slot = Literal["product", "quantity", "size", "address", "email", "phone", "order_id"]
PromptKey = Literal[
    "product", "quantity", "size", "address", "email", "phone", "order_id", "confirmation"
]
Example = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\S")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _known_action(value: str) -> str:
    if value not in KNOWN_ACTION_TYPES:
        raise PydanticCustomError(
            "unknown_action_type", "unknown action type; known: {known}", {"known": ACTION_TYPES}
        )
    return value


ActionType = Annotated[
    str, Field(json_schema_extra={"enum": list(ACTION_TYPES)}), AfterValidator(_known_action)
]
IntentName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class FieldError(CamelModel):
    model_config = ConfigDict(extra="allow")
    field: str
    detail: str


class Problem(CamelModel):
    """An RFC 9457 problem document; `errors` names the bad fields, `reason` is the
    machine-readable cause a downstream service gave."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    correlation_id: str | None = None
    errors: list[FieldError] | None = None
    reason: str | None = None


def invalid(errors: Sequence[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """A ValidationError (a 400 problem) naming each bad field: `(location, message)`."""
    return ValidationError.from_exception_data(
        "Request",
        [
            InitErrorDetails(type=PydanticCustomError("invalid", message), loc=loc, input=None)
            for loc, message in errors
        ],
    )


# --- tenant configuration ------------------------------------------------------------------


class TenantSlotPrompt(CamelModel):
    """How the agent asks for one slot, per BCP-47 language."""

    ask: dict[Language, Template] = Field(default_factory=dict)
    invalid: dict[Language, Template] = Field(default_factory=dict)


class TenantIntent(CamelModel):
    name: IntentName
    examples: list[Example] = Field(default_factory=list, max_length=200)
    reply_template: Template = ""
    reply_templates: dict[Language, Template] = Field(default_factory=dict)
    action_types: list[ActionType] = Field(default_factory=list, max_length=16)
    required_slots: list[Slot] = Field(default_factory=list, max_length=len(SLOT_NAMES))
    follows: list[IntentName] = Field(default_factory=list, max_length=32)


PLATFORM_QUOTAS: Final = (
    ("daily_token_budget", "dailyTokenBudget"),
    ("turns_per_minute", "turnsPerMinute"),
)
"""The fields of a tenant configuration only a platform-admin sets: (name, JSON name)."""


class TenantConfig(CamelModel):
    """A business's configuration (tenant.proto TenantConfig). `tenantId` is the path's: on a
    write it may be left out. Zero limits mean the platform defaults (escalation 0.6, dedup
    window 60 s, no token budget, default rate). The quotas `dailyTokenBudget` and
    `turnsPerMinute` are the platform's: only a platform-admin changes them (a tenant-admin's
    write keeps them when it leaves them out, and is refused when it sets other values)."""

    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)
    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    language: Language
    adn: str = Field("", max_length=32_000)
    safety_policy: str = Field("", max_length=16_000)
    allowed_actions: list[ActionType] = Field(default_factory=list, max_length=64)
    intents: list[TenantIntent] = Field(default_factory=list, max_length=200)
    escalation_threshold: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    dedup_window_seconds: int = Field(0, ge=0, le=86_400)
    daily_token_budget: int = Field(0, ge=0, le=10**12)
    turns_per_minute: int = Field(0, ge=0, le=100_000)
    slot_prompts: dict[PromptKey, TenantSlotPrompt] = Field(default_factory=dict)


# --- knowledge -----------------------------------------------------------------------------


class KnowledgeDocument(CamelModel):
    """A knowledge document (FAQ, policy, page). `metadata` holds free-form fields returned with
    search hits (e.g. `mediaType`: text/plain, text/markdown or text/html); `title` is kept
    there too."""

    doc_id: str = Field(pattern=ID_PATTERN)
    title: str | None = Field(None, max_length=500)
    text: str = Field(min_length=1, pattern=r"\S")
    source: str = Field("kb", max_length=64)
    lang: Language | None = None
    category: str = Field("", max_length=64)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    metadata: FreeForm = Field(default_factory=dict)


class IngestRejection(CamelModel):
    line: int | None = None
    doc_id: str
    reason: str


class IngestResult(CamelModel):
    """What an ingestion stored: documents created or changed, unchanged ones (not
    re-embedded) and any the service refused."""

    upserted: int
    unchanged: int
    rejected: int = 0
    rejections: list[IngestRejection] = Field(default_factory=list)


class SearchHit(CamelModel):
    doc_id: str
    chunk_id: str
    text: str
    score: float
    source: str
    lang: str
    category: str
    tags: list[str]
    fields: dict[str, Any]
    visibility: Literal["tenant", "global"]


class SearchResult(CamelModel):
    hits: list[SearchHit]
    embedder: str


class DeletedDocument(CamelModel):
    doc_id: str
    deleted_chunks: int


# --- users ---------------------------------------------------------------------------------


class ConsentUpdate(CamelModel):
    """Consent kinds to set: true grants, false revokes, left out keeps it as it is."""

    voice_recording: bool | None = None
    data_learning: bool | None = None
    source: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]*$",
        description="How an administrator captured the consent (e.g. `ivr_prompt`, "
        "`web_form`; `admin_api` when left out). A user's own change is always recorded as "
        "`self_service`; a user may send no other source (403).",
    )


class Consent(CamelModel):
    user_id: str
    voice_recording: bool
    data_learning: bool
    consent_date: datetime | None = None
    revoked_date: datetime | None = None


class Erasure(CamelModel):
    """What an erasure removed in the context service (sessions with their turns and outbox
    rows, the consent record). Audit entries hold no personal data and are kept."""

    user_id: str
    sessions_erased: int
    turns_erased: int
    consent_erased: bool


# --- sessions ------------------------------------------------------------------------------


class TurnRole(StrEnum):
    USER = "user"
    AGENT = "agent"
    HUMAN = "human"
    UNSPECIFIED = "unspecified"


class TurnAction(CamelModel):
    action_id: str
    type: str
    params: dict[str, Any]
    status: str


class TurnMetadata(CamelModel):
    channel: str
    tokens_used: int
    embeddings_retrieved: int
    latency_ms: int
    intent: str
    confidence: float
    model: str
    degraded: bool
    human_agent_id: str


class Turn(CamelModel):
    turn_id: str
    role: TurnRole
    text: str
    actions: list[TurnAction]
    metadata: TurnMetadata
    timestamp: datetime | None
    correlation_id: str


class ShortContext(CamelModel):
    summary: str
    last_intent: str
    entities: dict[str, Any]


class SessionTranscript(CamelModel):
    """A session's context and one page of its transcript, oldest first."""

    session_id: str
    tenant_id: str
    user_id: str
    channel: str
    short_context: ShortContext
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    turns: list[Turn]
    next_page_token: str


# --- audit ---------------------------------------------------------------------------------


class AuditEntry(CamelModel):
    entry_id: str
    sequence: int
    action: str
    correlation_id: str
    session_id: str
    actor: str
    payload: dict[str, Any]
    timestamp: datetime | None
    prev_hash: str
    hash: str


class AuditPage(CamelModel):
    entries: list[AuditEntry]
    next_page_token: str


class AuditVerification(CamelModel):
    """The tenant's audit chain recomputed: a broken chain is a result, not an error."""

    valid: bool
    entries_checked: int
    first_invalid_sequence: int
    first_invalid_reason: str
    head_hash: str
