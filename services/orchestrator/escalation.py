"""Escalation to a human agent (DESIGN section 5, "Escalation"; seed case C).

A turn escalates, first rule that applies, when:

a. `model_handoff`: the model proposes handoff_human;
b. `customer_request`: the customer explicitly asks for a person ("quiero hablar con una
   persona", "I want to talk to a human") and the model did not propose the hand-over;
c. `low_confidence`: the generation's confidence is below the tenant's
   `escalation_threshold` (0 = the platform's 0.6) and its intent is unclear ("", "unknown",
   "other") for the second agent turn in a row: the session's last agent turn was unclear
   too. One unclear message gets an answer (asking again), never a hand-over.

An escalating turn carries create_ticket and handoff_human, each when the tenant allows it
(added when the model did not propose it; one of each). Every create_ticket / handoff_human
leaving here, escalating or not, carries what a human needs, under the names its schema
(actions/registry.py) accepts: `reason`, `summary` (the model's and the session's running
summary), `transcript` (the recent turns and this exchange as role/text pairs, capped),
`entities` (the session's slots as this turn leaves them, without the orchestrator's own
bookkeeping), `userId`, `sessionId`, and `orderId` / `language` when known. Params the model
proposed are kept when they are valid by themselves; the context fields are always the
orchestrator's. When the hand-over was not the model's idea, the reply tells the customer a
person takes over.

The session is then marked escalated (entity `escalated: true`, merged into the short context
with the turn's other entities). While it is, turns never escalate again: a handoff_human the
model proposes is removed (a person already has the conversation), and the mark is kept even
when a model's entities would clear it. The mark stays until someone clears the entity
(ContextService.UpdateShortContext).

The action params (which go to human agents) hold customer text; logs and metrics here never
do: they name the rule, the action types and the session.
"""

import enum
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from prometheus_client import Counter

from services.orchestrator.actions.registry import ActionSpec, schema_errors, spec_for
from services.orchestrator.actions.validation import AWAITING, normalise_params

__all__ = [
    "ESCALATED",
    "PLATFORM_THRESHOLD",
    "Trigger",
    "asks_for_human",
    "escalate",
    "is_escalated",
    "threshold_of",
    "trigger_for",
]

log = logging.getLogger(__name__)

PLATFORM_THRESHOLD: Final = 0.6
"""The escalation threshold of a tenant whose `escalation_threshold` is 0."""
UNCLEAR_INTENTS: Final = frozenset({"", "unknown", "other"})
ESCALATED: Final = "escalated"
"""Session entity: true once a turn escalated (a person has the conversation)."""
TICKET: Final = "create_ticket"
HANDOFF: Final = "handoff_human"
HANDOVER_TYPES: Final = (TICKET, HANDOFF)
CONTEXT_PARAMS: Final = frozenset({"transcript", "entities", "userId", "sessionId"})
"""Params the orchestrator always writes itself: the model never supplies the context."""
INTERNAL_ENTITIES: Final = frozenset({AWAITING, "confirming", ESCALATED})
"""Bookkeeping of the responder and of this module: not for the human."""
MAX_TRANSCRIPT_TURNS: Final = 20
MAX_TURN_CHARS: Final = 2000
MAX_SUMMARY_CHARS: Final = 4000
MAX_ENTITIES: Final = 30
MAX_ENTITY_JSON_CHARS: Final = 2000
ROLES: Final = {
    conversation_pb2.TURN_ROLE_USER: "user",
    conversation_pb2.TURN_ROLE_AGENT: "agent",
    conversation_pb2.TURN_ROLE_HUMAN: "human",
}
NOTICE: Final = {
    "es": (
        "Te paso con una persona del equipo, que ya tiene toda la conversación: no tendrás que "
        "repetir nada."
    ),
    "en": (
        "I'm passing you to a person on our team, who already has the whole conversation: you "
        "won't need to repeat anything."
    ),
}

ESCALATIONS = Counter(
    "meta_agent_escalations_total",
    "Turns escalated to a human agent, by the rule that escalated them.",
    ["reason"],
)


class Trigger(enum.StrEnum):
    """Why a turn escalates; also the hand-over's `reason` when the model gave none."""

    MODEL_HANDOFF = "model_handoff"
    CUSTOMER_REQUEST = "customer_request"
    LOW_CONFIDENCE = "low_confidence"


# --- the rule ----------------------------------------------------------------------------------

PERSON_ES = (
    r"(?:una persona|un humano|una humana|un agente|una agente|un asesor|una asesora|"
    r"un operador|una operadora|alguien|un encargado|una encargada|el encargado|la encargada|"
    r"un responsable|el responsable|un representante|un empleado|una empleada|persona|humano|"
    r"agente|asesor|operador|gente de verdad)"
)
HUMAN_ES = re.compile(
    r"\b(?:habl(?:ar|e|en|emos|ame)|comunica(?:r|rme|me)|"
    r"pas(?:a|as|ais|e|en|es|ar|ame|eme|arme|adme)|pon(?:me|er|erme)|pongame)\s+(?:me\s+)?con\b"
    rf"[^.?!]{{0,30}}?\b{PERSON_ES}\b"
    r"|\b(?:quiero|necesito|prefiero)\s+(?:a\s+)?(?:una persona|un humano|una humana|un agente|"
    r"un asesor|una asesora|un operador|una operadora)\b"
    r"|\b(?:me\s+)?atiend(?:a|e|an|en)\s+(?:una persona|un humano|alguien|un agente)\b"
)
HUMAN_EN = re.compile(
    r"\b(?:talk|speak|chat|connect|transfer|put|get|reach)\b[^.?!]{0,30}?\b(?:a human|human|"
    r"a person|person|an agent|agent|representative|rep|operator|someone|somebody|"
    r"real people|staff|manager)\b"
    r"|\b(?:want|need)\s+(?:a\s+|an\s+)?(?:real\s+|live\s+)?(?:human|person|agent|"
    r"representative|operator)\b"
)
HUMAN_ANY = re.compile(r"\b(?:agente humano|operador humano|human agent|live agent)\b")
NOT_WANTED = re.compile(
    r"\b(?:no (?:quiero|necesito|hace falta|me pases|me pase)|don'?t (?:want|need)|"
    r"do not (?:want|need)|no need)\b"
)


def _folded(text: str) -> str:
    low = unicodedata.normalize("NFKD", text.lower().replace("\u2019", "'"))
    return " ".join("".join(c for c in low if not unicodedata.combining(c)).split())


def asks_for_human(text: str) -> bool:
    """True for an explicit request for a person, in Spanish or English: "quiero hablar con
    una persona", "pásame con un agente", "¿me atiende alguien?", "I want to talk to a human",
    "can I speak to someone?". False when it is refused ("no quiero hablar con nadie", "I
    don't need an agent")."""
    low = _folded(text)
    if NOT_WANTED.search(low):
        return False
    return bool(HUMAN_ES.search(low) or HUMAN_EN.search(low) or HUMAN_ANY.search(low))


def threshold_of(tenant: tenant_pb2.TenantConfig) -> float:
    return tenant.escalation_threshold or PLATFORM_THRESHOLD


def _unclear(intent: str, confidence: float, threshold: float) -> bool:
    return intent.strip().lower() in UNCLEAR_INTENTS and confidence < threshold


def is_escalated(entities: struct_pb2.Struct) -> bool:
    value = entities.fields.get(ESCALATED)
    if value is None:
        return False
    kind = value.WhichOneof("kind")
    return (kind == "bool_value" and value.bool_value) or (
        kind == "string_value" and value.string_value.strip().lower() == "true"
    )


def trigger_for(
    session: conversation_pb2.SessionContext,
    tenant: tenant_pb2.TenantConfig,
    user_text: str,
    generation: llm_pb.Generation,
) -> Trigger | None:
    """The rule this turn escalates by (module doc), or None. Ignores the escalated mark."""
    if any(action.type == HANDOFF for action in generation.actions):
        return Trigger.MODEL_HANDOFF
    if asks_for_human(user_text):
        return Trigger.CUSTOMER_REQUEST
    threshold = threshold_of(tenant)
    if _unclear(generation.intent, generation.confidence, threshold):
        previous = next(
            (
                t
                for t in reversed(session.recent_turns)
                if t.role != conversation_pb2.TURN_ROLE_USER
            ),
            None,
        )
        if (
            previous is not None
            and previous.role == conversation_pb2.TURN_ROLE_AGENT
            and _unclear(previous.metadata.intent, previous.metadata.confidence, threshold)
        ):
            return Trigger.LOW_CONFIDENCE
    return None


# --- the turn ----------------------------------------------------------------------------------


def escalate(
    request: pb.ProcessRequest,
    session: conversation_pb2.SessionContext,
    tenant: tenant_pb2.TenantConfig,
    generation: llm_pb.Generation,
) -> llm_pb.Generation:
    """The generation to validate and commit: with the hand-over actions an escalating turn
    needs, every hand-over action carrying the context, and the escalated mark (module doc).
    `session` is the session as the turn loaded it; `generation` is left unchanged."""
    result = llm_pb.Generation()
    result.CopyFrom(generation)
    allowed = set(tenant.allowed_actions)
    already = is_escalated(session.short_context.entities)
    trigger = None if already else trigger_for(session, tenant, request.input.text, generation)
    actions = [_copy(a) for a in generation.actions]
    if already:
        kept = [a for a in actions if a.type != HANDOFF]
        if len(kept) != len(actions):
            log.info(
                "hand-over not repeated: the session is already escalated",
                extra={"sessionId": request.session_id},
            )
        actions = kept
    elif trigger is not None:
        actions = _with_handover(actions, allowed)
    handover = [a for a in actions if a.type in HANDOVER_TYPES]
    marked = already or (trigger is not None and any(a.type in allowed for a in handover))
    if trigger is not None and marked:
        proposed = any(a.type == HANDOFF for a in generation.actions)
        if HANDOFF in allowed and not proposed:
            result.reply_text = _with_notice(result.reply_text, _language(session, result, tenant))
        ESCALATIONS.labels(str(trigger)).inc()
        log.info(
            "turn escalated to a human",
            extra={
                "sessionId": request.session_id,
                "reason": str(trigger),
                "actions": [a.type for a in handover if a.type in allowed],
            },
        )
    if marked:
        result.entities[ESCALATED] = True
    if handover:
        context = _Context.of(request, session, tenant, result, trigger)
        actions = [_enriched(a, context) if a.type in HANDOVER_TYPES else a for a in actions]
    del result.actions[:]
    result.actions.extend(actions)
    return result


def _with_handover(
    actions: Sequence[conversation_pb2.Action], allowed: set[str]
) -> list[conversation_pb2.Action]:
    """`actions` with one create_ticket and one handoff_human (each when allowed): the first
    the model proposed of each type, else a new one."""
    result: list[conversation_pb2.Action] = []
    seen: set[str] = set()
    for action in actions:
        if action.type in HANDOVER_TYPES:
            if action.type in seen:
                continue  # one hand-over of each type; the copies would only be duplicates
            seen.add(action.type)
        result.append(action)
    for kind in HANDOVER_TYPES:
        if kind not in seen and kind in allowed:
            result.append(conversation_pb2.Action(type=kind))  # params: _enriched
    return result


@dataclass(frozen=True)
class _Context:
    """What a human needs, gathered once per turn."""

    reason: str
    summary: str
    transcript: list[dict[str, str]]
    entities: dict[str, Any]
    user_id: str
    session_id: str
    language: str

    @classmethod
    def of(
        cls,
        request: pb.ProcessRequest,
        session: conversation_pb2.SessionContext,
        tenant: tenant_pb2.TenantConfig,
        generation: llm_pb.Generation,
        trigger: Trigger | None,
    ) -> "_Context":
        entities = _plain(session.short_context.entities)
        entities.update(_plain(generation.entities))
        handoff = next((a for a in generation.actions if a.type == HANDOFF), None)
        model_reason = _plain(handoff.params).get("reason") if handoff is not None else None
        reason = str(trigger) if trigger is not None else "follow_up"
        if isinstance(model_reason, str) and _valid(HANDOFF, "reason", model_reason):
            reason = model_reason
        return cls(
            reason=reason,
            summary=session.short_context.summary.strip(),
            transcript=_transcript(session.recent_turns, request.input.text, generation),
            entities=_for_human(entities),
            user_id=request.user_id or session.user_id,
            session_id=request.session_id,
            language=_language(session, generation, tenant),
        )


def _enriched(action: conversation_pb2.Action, context: _Context) -> conversation_pb2.Action:
    spec = spec_for(action.type)
    if spec is None:
        return action
    proposed = normalise_params(spec, _plain(action.params))
    params: dict[str, Any] = {
        name: value
        for name, value in proposed.items()
        if name not in CONTEXT_PARAMS and _valid_for(spec, name, value)
    }
    params.setdefault("reason", context.reason)
    summaries = [params.get("summary", ""), context.summary]
    summary = "\n\n".join(dict.fromkeys(s for s in summaries if s))
    if not summary:
        said = [t["text"] for t in context.transcript if t["role"] == "user"]
        summary = " / ".join(said[-5:]) or context.reason
    params["summary"] = _capped(summary, MAX_SUMMARY_CHARS)
    order_id = context.entities.get("order_id")
    if "orderId" not in params and order_id is not None:
        candidate = normalise_params(spec, {"orderId": order_id}).get("orderId")
        if _valid_for(spec, "orderId", candidate):
            params["orderId"] = candidate
    if "language" not in params and _valid_for(spec, "language", context.language):
        params["language"] = context.language
    if context.transcript:
        params["transcript"] = context.transcript
    if context.entities:
        params["entities"] = context.entities
    if context.user_id and _valid_for(spec, "userId", context.user_id):
        params["userId"] = context.user_id
    if _valid_for(spec, "sessionId", context.session_id):
        params["sessionId"] = context.session_id
    errors = schema_errors(spec.schema, params)
    if errors:  # cannot happen with the registry's schemas; validation drops and audits it
        log.warning(
            "a hand-over action does not fit its schema",
            extra={"actionType": spec.type, "paths": [e.path for e in errors]},
        )
    enriched = conversation_pb2.Action()
    enriched.CopyFrom(action)
    enriched.ClearField("params")
    enriched.params.update(params)
    return enriched


def _valid_for(spec: ActionSpec, name: str, value: Any) -> bool:
    properties: Mapping[str, Mapping[str, Any]] = spec.schema["properties"]
    return name in properties and value is not None and not schema_errors(properties[name], value)


def _valid(action_type: str, name: str, value: Any) -> bool:
    spec = spec_for(action_type)
    return spec is not None and _valid_for(spec, name, value)


def _transcript(
    turns: Iterable[conversation_pb2.ConversationTurn],
    user_text: str,
    generation: llm_pb.Generation,
) -> list[dict[str, str]]:
    """The recent turns and this exchange, oldest first, as role/text pairs (the last
    MAX_TRANSCRIPT_TURNS, each text capped at MAX_TURN_CHARS)."""
    pairs = [(ROLES.get(t.role, ""), t.text) for t in turns]
    pairs += [("user", user_text), ("agent", generation.reply_text)]
    transcript = [
        {"role": role, "text": _capped(text, MAX_TURN_CHARS)}
        for role, text in pairs
        if role and text.strip()
    ]
    return transcript[-MAX_TRANSCRIPT_TURNS:]


def _for_human(entities: Mapping[str, Any]) -> dict[str, Any]:
    """The session's slots without the bookkeeping, each value small enough to travel."""
    result: dict[str, Any] = {}
    for name, value in entities.items():
        if name in INTERNAL_ENTITIES or value is None or value == "":
            continue
        if len(json.dumps(value, ensure_ascii=False, default=str)) > MAX_ENTITY_JSON_CHARS:
            continue
        result[name] = value
        if len(result) >= MAX_ENTITIES:
            break
    return result


def _language(
    session: conversation_pb2.SessionContext,
    generation: llm_pb.Generation,
    tenant: tenant_pb2.TenantConfig,
) -> str:
    for source in (generation.entities, session.short_context.entities):
        value = _plain(source).get("language")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return tenant.language or "es"


def _with_notice(reply: str, language: str) -> str:
    """`reply` as it is (the customer may have seen it streamed), a blank line, the notice."""
    notice = NOTICE["en" if language.lower().startswith("en") else "es"]
    if not reply.strip():
        return reply + notice
    newlines = len(reply) - len(reply.rstrip("\n"))
    return reply + "\n" * max(0, 2 - newlines) + notice


def _copy(action: conversation_pb2.Action) -> conversation_pb2.Action:
    copy = conversation_pb2.Action()
    copy.CopyFrom(action)
    return copy


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: Any) -> Any:
    if isinstance(value, struct_pb2.Struct):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(item) for item in value]
    return value
