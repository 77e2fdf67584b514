"""The offline responder: not an LLM, and it says so (`model: offline`).

It routes by similarity to the tenant's intent examples, fills the tenant's reply template from
the best retrieved catalogue entry, answers questions from retrieved documents, and proposes the
intent's actions when the tenant allows them. Deterministic, so it doubles as the degraded-mode
engine and as a test oracle.
"""

import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.mesh.text import content_words, fold

MODEL_NAME = "offline"
FOLLOW_UPS = {"checkout_flow": "confirm_purchase"}
"""Intents that only make sense right after another one (a bare "sí" confirms a checkout)."""
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def similarity(a: str, b: str) -> float:
    """Dice overlap of content words, with character trigrams to forgive inflections."""
    words_a, words_b = content_words(a) or fold(a).split(), content_words(b) or fold(b).split()
    grams_a = {w[i : i + 3] for w in words_a for i in range(max(1, len(w) - 2))}
    grams_b = {w[i : i + 3] for w in words_b for i in range(max(1, len(w) - 2))}
    if not grams_a or not grams_b:
        return 0.0
    word_score = 2 * len(set(words_a) & set(words_b)) / (len(set(words_a)) + len(set(words_b)))
    gram_score = 2 * len(grams_a & grams_b) / (len(grams_a) + len(grams_b))
    return max(word_score, gram_score)


@dataclass(frozen=True)
class IntentMatch:
    intent: tenant_pb2.Intent
    score: float


def _last_agent_intent(prompt: pb.Prompt) -> str:
    for turn in reversed(prompt.recent_turns):
        if turn.role == conversation_pb2.TURN_ROLE_AGENT:
            return turn.metadata.intent
    return ""


def match_intent(prompt: pb.Prompt, threshold: float) -> IntentMatch | None:
    previous = _last_agent_intent(prompt)
    best: IntentMatch | None = None
    for intent in prompt.tenant.intents:
        gate = next((k for k, v in FOLLOW_UPS.items() if v == intent.name), None)
        if gate is not None and previous != gate:
            continue
        score = max((similarity(prompt.user_text, ex) for ex in intent.examples), default=0.0)
        if score >= threshold and (best is None or score > best.score):
            best = IntentMatch(intent, score)
    return best


def _product(prompt: pb.Prompt, *, remembered_first: bool) -> dict[str, object]:
    """The catalogue entry under discussion: the best retrieved product, or the one the session
    remembers (first, for follow-ups such as a confirmation)."""
    remembered = json_format.MessageToDict(prompt.entities).get("product")
    retrieved = next(
        (
            fields
            for fields in (json_format.MessageToDict(d.fields) for d in prompt.documents)
            if "price" in fields
        ),
        None,
    )
    ordered = [remembered, retrieved] if remembered_first else [retrieved, remembered]
    return next((p for p in ordered if isinstance(p, dict) and p), {})


def _display(value: object) -> object:
    """Numbers as people write them: 7, not 7.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _fill(template: str, slots: dict[str, object]) -> str | None:
    """The template with every placeholder filled, or None when a slot is missing."""
    missing = [name for name in PLACEHOLDER.findall(template) if slots.get(name) in (None, "")]
    if missing:
        return None
    return PLACEHOLDER.sub(lambda m: str(_display(slots[m.group(1)])), template)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def _actions(
    intent: tenant_pb2.Intent,
    tenant: tenant_pb2.TenantConfig,
    product: dict[str, object],
    prompt: pb.Prompt,
) -> list[conversation_pb2.Action]:
    allowed = set(tenant.allowed_actions)
    params: dict[str, dict[str, object]] = {
        "create_order": {
            "productId": product.get("id", ""),
            "quantity": 1,
            "unitPrice": product.get("price", 0),
            "currency": product.get("currency", ""),
        },
        "payment_link": {
            "amount": product.get("price", 0),
            "currency": product.get("currency", ""),
        },
        "create_ticket": {"reason": intent.name, "summary": prompt.summary},
        "handoff_human": {"reason": intent.name},
    }
    return [
        conversation_pb2.Action(type=kind, params=_struct(params.get(kind, {})))
        for kind in intent.action_types
        if kind in allowed
    ]


class OfflineResponder:
    def __init__(self, intent_threshold: float) -> None:
        self._threshold = intent_threshold

    def generate(self, prompt: pb.Prompt) -> pb.Generation:
        tenant = prompt.tenant
        match = match_intent(prompt, self._threshold)
        follow_up = match is not None and match.intent.name in FOLLOW_UPS.values()
        product = _product(prompt, remembered_first=follow_up)
        best_doc = prompt.documents[0] if prompt.documents else None
        slots: dict[str, object] = {
            "product": product.get("name"),
            "price": product.get("price"),
            "currency": product.get("currency"),
            "stock": product.get("stock"),
            "answer": best_doc.text if best_doc else None,
        }
        reply = _fill(match.intent.reply_template, slots) if match else None
        if match and reply:
            used_product = product and "{product}" in match.intent.reply_template
            return pb.Generation(
                reply_text=reply,
                intent=match.intent.name,
                confidence=round(match.score, 4),
                actions=_actions(match.intent, tenant, product, prompt),
                model=MODEL_NAME,
                usage=pb.Usage(),
                entities=_struct({"product": product} if used_product else {}),
            )
        if best_doc is not None:
            return pb.Generation(
                reply_text=best_doc.text,
                intent="knowledge_answer",
                confidence=round(min(best_doc.score * 2, 0.59), 4),
                model=MODEL_NAME,
                usage=pb.Usage(),
            )
        return pb.Generation(
            reply_text=_fallback(tenant.language),
            intent="unknown",
            confidence=0.0,
            model=MODEL_NAME,
            usage=pb.Usage(),
        )


def _fallback(language: str) -> str:
    if language.startswith("es"):
        return "No estoy seguro de haberte entendido. ¿Puedes contarme un poco más?"
    return "I am not sure I understood. Could you tell me a little more?"
