"""The offline responder's turn: language, slots, routing, reply and actions.

Routing, first rule that applies:
1. an explicit request for a person ("quiero hablar con una persona") -> the tenant's handoff
   intent (one proposing handoff_human and needing no slots), or a built-in one;
2. right after a reply that asked to confirm (checkout_flow, or the order summary), an
   explicit yes ("sí, la talla 43", "yes, size 10", "quiero comprarla") -> the follow-up
   (confirm_purchase); a plain no -> "declined", nothing ordered;
3. the message gives a slot the conversation is waiting for -> the same intent again: the
   intent that asked for it, or, after checkout_flow, checkout_flow with the order summary to
   confirm. A follow-up never completes on a turn that changes the product or the quantity it
   was confirmed for: the summary is asked again;
4. similarity to the tenant's examples (follow-ups excluded) above the threshold;
5. a short answer while an intent still waits for a slot -> that intent, asking again;
6. the message gives a slot some intent needs (an order id, an address) -> that intent;
7. otherwise the best retrieved document, with low confidence; otherwise "not sure".

An intent whose required slots are missing or invalid asks for the first of them (tenant
slot prompts, else the platform's), keeps the intent and proposes no action. Every generation
carries the entity "awaiting": what its reply asked for ("confirmation", a slot name, or ""),
so the next turn knows what a bare "sí" or "43" answers.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.llm.offline.intents import (
    best_example_score,
    follows,
    last_agent_intent,
    match_intent,
)
from services.llm.offline.language import (
    detect_language,
    is_confirmation,
    is_refusal,
    primary,
    wants_human,
)
from services.llm.offline.replies import (
    DECLINED,
    FALLBACK,
    HANDOFF,
    PLACEHOLDER,
    fill,
    intent_template,
    platform_text,
    reply_language,
    slot_prompt,
)
from services.llm.offline.slots import (
    SLOT_NAMES,
    Issue,
    extract_all,
    format_sizes,
    product_sizes,
    slot_issues,
)

MODEL_NAME = "offline"
HANDOFF_CONFIDENCE = 0.95
CONFIRMED_CONFIDENCE = 0.9
CONTINUED_CONFIDENCE = 0.85
BY_SLOT_CONFIDENCE = 0.65
KEPT_CONFIDENCE = 0.6
SHORT_MESSAGE_WORDS = 4
PRODUCT_PLACEHOLDERS = frozenset(
    {"product", "price", "currency", "stock", "options", "size", "quantity", "total"}
)
DECLINED_INTENT = "declined"
"""The customer said no to the proposal (nothing is ordered; the next yes confirms nothing)."""
AWAITING = "awaiting"
"""Entity naming what the agent's last reply asked for: "confirmation", a slot, or ""."""
AWAITING_CONFIRMATION = "confirmation"
BUILT_IN_HANDOFF = tenant_pb2.Intent(name="human_handoff", action_types=["handoff_human"])


@dataclass
class Turn:
    """What the responder knows about the turn before choosing an intent."""

    prompt: pb.Prompt
    language: str
    detected: str
    previous: str
    remembered: dict[str, Any]
    catalogue: list[dict[str, Any]]
    extracted: dict[str, Any] = field(default_factory=dict)

    @property
    def tenant(self) -> tenant_pb2.TenantConfig:
        return self.prompt.tenant

    @property
    def default_language(self) -> str:
        return primary(self.tenant.language or "es")

    def remembered_product(self) -> dict[str, Any] | None:
        product = self.remembered.get("product")
        return product if isinstance(product, dict) and product else None


class OfflineResponder:
    """Deterministic: the same prompt always gets the same generation."""

    def __init__(self, intent_threshold: float = 0.34) -> None:
        self._threshold = intent_threshold

    def generate(self, prompt: pb.Prompt) -> pb.Generation:
        tenant = prompt.tenant
        remembered = json_format.MessageToDict(prompt.entities)
        detected = detect_language(prompt.user_text)
        language = reply_language(tenant, detected or str(remembered.get("language") or ""))
        turn = Turn(
            prompt=prompt,
            language=language,
            detected=detected,
            previous=last_agent_intent(prompt),
            remembered=remembered,
            catalogue=_catalogue(prompt),
        )
        intents = {intent.name: intent for intent in tenant.intents}
        previous = intents.get(turn.previous)
        awaiting = str(remembered.get(AWAITING) or "")
        followers = [i for i in tenant.intents if turn.previous and turn.previous in follows(i)]
        # The slots a bare answer ("43", "12345") may fill: what the last reply asked for, and
        # what the previous intent (or its follow-ups) still lacks.
        expected = {awaiting} & set(SLOT_NAMES)
        if previous is not None:
            expected |= {i.slot for i in slot_issues(previous.required_slots, remembered)}
        for follower in followers:
            expected |= {i.slot for i in slot_issues(follower.required_slots, remembered)}
        pending = previous is not None and bool(expected & set(previous.required_slots))
        products = list(turn.catalogue)
        remembered_product = turn.remembered_product()
        if remembered_product and all(
            p.get("id") != remembered_product.get("id") for p in products
        ):
            products.append(remembered_product)
        turn.extracted = extract_all(prompt.user_text, expected=expected, products=products)
        given = set(turn.extracted)

        # 1. an explicit request for a person
        if wants_human(prompt.user_text) and "handoff_human" in tenant.allowed_actions:
            return self._answer(
                turn, _handoff_intent(tenant), HANDOFF_CONFIDENCE, "customer_request"
            )
        # 2. a confirmation of what the agent just proposed
        asked_to_confirm = remembered.get(AWAITING, AWAITING_CONFIRMATION) in (
            AWAITING_CONFIRMATION,
            None,
        )
        if followers and asked_to_confirm and is_confirmation(prompt.user_text):
            chosen = max(followers, key=lambda i: best_example_score(prompt.user_text, i))
            if previous is not None and _switches_product(turn):
                return self._summary(turn, previous, chosen)  # its price was never shown
            return self._answer(turn, chosen, CONFIRMED_CONFIDENCE)
        if followers and asked_to_confirm and not given and is_refusal(prompt.user_text):
            reply = platform_text(DECLINED, turn.language)
            return _generation(
                turn, reply, DECLINED_INTENT, CONFIRMED_CONFIDENCE, [], _updates(turn, None), ""
            )
        # 3. a slot the conversation is waiting for
        if pending and previous is not None and given & set(previous.required_slots):
            gate = next((intents[g] for g in follows(previous) if g in intents), None)
            if gate is not None and _changes_the_deal(turn):
                return self._summary(turn, gate, previous)
            return self._answer(turn, previous, CONTINUED_CONFIDENCE)
        if previous is not None and followers:
            wanted = {slot for f in followers for slot in f.required_slots}
            if given & wanted:
                return self._summary(turn, previous, followers[0])
        # 4. similarity to the examples; follow-ups only while they collect their slots
        gated = frozenset(i.name for i in tenant.intents if follows(i))
        allowed = frozenset({turn.previous}) if pending else frozenset()
        match = match_intent(prompt, self._threshold, also_allowed=allowed, exclude=gated - allowed)
        if match is not None:
            return self._answer(turn, match.intent, round(match.score, 4))
        # 5. a short answer while an intent still waits for a slot
        if pending and previous is not None and _short_answer(prompt.user_text):
            return self._answer(turn, previous, KEPT_CONFIDENCE)
        # 6. a slot that some intent needs
        for intent in tenant.intents:
            needs = set(intent.required_slots) - {"product", "quantity", "size"}
            if not follows(intent) and needs & given:
                return self._answer(turn, intent, BY_SLOT_CONFIDENCE)
        # 7. the documents, or nothing
        return self._no_intent(turn)

    # --- answers ---------------------------------------------------------------------------

    def _answer(
        self,
        turn: Turn,
        intent: tenant_pb2.Intent,
        confidence: float,
        reason: str = "",
    ) -> pb.Generation:
        template = intent_template(intent, turn.language, turn.default_language)
        known, product = self._known(turn, intent.required_slots, template)
        issues = slot_issues(intent.required_slots, known)
        if not issues:
            # a gate (checkout_flow) also refuses what its follow-ups could not accept, e.g.
            # a size the product does not come in, before asking for the confirmation
            issues = [
                issue
                for follower in turn.tenant.intents
                if intent.name in follows(follower)
                for issue in slot_issues(follower.required_slots, known)
                if issue.kind == "invalid"
            ]
        values = _values(known, product, turn.prompt)
        if issues:
            return self._ask(turn, intent.name, confidence, issues[0], values)
        reply = fill(template, values) if template else None
        if reply is None and (reason or intent is BUILT_IN_HANDOFF):
            reply = platform_text(HANDOFF, turn.language)
        if reply is None:
            return self._no_intent(turn)
        gate = any(intent.name in follows(other) for other in turn.tenant.intents)
        return _generation(
            turn,
            reply,
            intent.name,
            confidence,
            _actions(intent, turn, known, product, reason or intent.name),
            _updates(turn, product),
            AWAITING_CONFIRMATION if gate else "",
        )

    def _summary(
        self, turn: Turn, gate: tenant_pb2.Intent, follower: tenant_pb2.Intent
    ) -> pb.Generation:
        """After checkout_flow, a message with slots but no confirmation: the order summary to
        confirm (or the slot still wrong), and the intent stays the gate's."""
        known, product = self._known(turn, follower.required_slots, "{product}")
        issues = slot_issues(follower.required_slots, known)
        values = _values(known, product, turn.prompt)
        blocking = [i for i in issues if not (i.slot == "size" and i.kind == "missing")]
        if blocking:
            return self._ask(turn, gate.name, CONTINUED_CONFIDENCE, blocking[0], values)
        text = slot_prompt(turn.tenant, "confirmation", "ask", turn.language)
        reply = fill(text, values)
        if reply is None:
            return self._ask(
                turn, gate.name, CONTINUED_CONFIDENCE, Issue("product", "missing"), values
            )
        return _generation(
            turn,
            reply,
            gate.name,
            CONTINUED_CONFIDENCE,
            [],
            _updates(turn, product),
            AWAITING_CONFIRMATION,
        )

    def _ask(
        self,
        turn: Turn,
        intent_name: str,
        confidence: float,
        issue: Issue,
        values: dict[str, Any],
    ) -> pb.Generation:
        kind = "ask" if issue.kind == "missing" else "invalid"
        text = slot_prompt(turn.tenant, issue.slot, kind, turn.language)
        reply = fill(text, {**values, "value": issue.value})
        if reply is None:
            reply = fill(slot_prompt(turn.tenant, issue.slot, "ask", turn.language), {}) or ""
        product = turn.extracted.get("product") or turn.remembered_product()
        updates = _updates(turn, product if isinstance(product, dict) else None)
        if issue.kind == "invalid":
            updates.pop(issue.slot, None)
        return _generation(turn, reply, intent_name, confidence, [], updates, issue.slot)

    def _no_intent(self, turn: Turn) -> pb.Generation:
        documents = turn.prompt.documents
        updates = _updates(turn, None)
        if documents:
            best = documents[0]
            return _generation(
                turn,
                best.text,
                "knowledge_answer",
                round(min(best.score * 2, 0.59), 4),
                [],
                updates,
                "",
            )
        return _generation(
            turn, platform_text(FALLBACK, turn.language), "unknown", 0.0, [], updates, ""
        )

    @staticmethod
    def _known(
        turn: Turn, required: Sequence[str], template: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The session's slots updated with this message's, and the product under discussion:
        the one named now, else the remembered one, else (when the intent needs one) the best
        retrieved catalogue entry."""
        known = {**turn.remembered, **turn.extracted}
        known.pop("language", None)
        named = turn.extracted.get("product")
        product = named if isinstance(named, dict) else turn.remembered_product()
        uses_product = {"product", "size", "quantity"} & set(required) or {
            name for _, name in PLACEHOLDER.findall(template)
        } & PRODUCT_PLACEHOLDERS
        if product is None and uses_product and turn.catalogue:
            product = turn.catalogue[0]
        if product is not None:
            known["product"] = product
        else:
            known.pop("product", None)
        return known, product


def _switches_product(turn: Turn) -> bool:
    """Whether this message names another product than the one under discussion."""
    named = turn.extracted.get("product")
    remembered = turn.remembered_product() or {}
    return isinstance(named, dict) and named.get("id") != remembered.get("id")


def _changes_the_deal(turn: Turn) -> bool:
    """Whether this message changes what the customer confirmed (another product, another
    quantity), so the order summary must be confirmed again before money moves."""
    if _switches_product(turn):
        return True
    if "quantity" in turn.extracted:
        return bool(turn.extracted["quantity"] != turn.remembered.get("quantity", 1))
    return False


def _short_answer(text: str) -> bool:
    """A few words that are not a question of their own ("sí", "no lo sé", "un momento")."""
    return len(text.split()) <= SHORT_MESSAGE_WORDS and not any(c in text for c in "?¿")


def _handoff_intent(tenant: tenant_pb2.TenantConfig) -> tenant_pb2.Intent:
    """The tenant's intent for handing over to a person: it proposes handoff_human, follows
    nothing and needs no slot. None configured: the built-in one."""
    for intent in tenant.intents:
        takes_over = "handoff_human" in intent.action_types
        if takes_over and not follows(intent) and not intent.required_slots:
            return intent
    return BUILT_IN_HANDOFF


def _catalogue(prompt: pb.Prompt) -> list[dict[str, Any]]:
    """Retrieved catalogue entries (documents whose fields carry an id and a price or stock),
    best first."""
    entries = []
    for document in prompt.documents:
        fields = json_format.MessageToDict(document.fields)
        if fields.get("id") and ("price" in fields or "stock" in fields):
            entries.append(fields)
    return entries


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _quantity(known: Mapping[str, Any]) -> int:
    value = _number(known.get("quantity"))
    return int(value) if value is not None else 1


def _values(
    known: Mapping[str, Any], product: Mapping[str, Any] | None, prompt: pb.Prompt
) -> dict[str, Any]:
    values: dict[str, Any] = {
        slot: known.get(slot) for slot in ("size", "address", "email", "phone", "order_id")
    }
    values["answer"] = prompt.documents[0].text if prompt.documents else None
    if product:
        price = _number(product.get("price"))
        quantity = _quantity(known)
        sizes = product_sizes(product)
        values |= {
            "product": product.get("name"),
            "price": price,
            "currency": product.get("currency"),
            "stock": product.get("stock"),
            "options": format_sizes(sizes) if sizes else None,
            "quantity": quantity,
            "total": round(price * quantity, 2) if price is not None else None,
        }
    return values


def _summary_text(turn: Turn) -> str:
    if turn.prompt.summary.strip():
        return turn.prompt.summary.strip()
    return " / ".join(_customer_texts(turn, 5))[-500:]


def _customer_texts(turn: Turn, limit: int) -> list[str]:
    said = [
        t.text
        for t in turn.prompt.recent_turns
        if t.role == conversation_pb2.TURN_ROLE_USER and t.text
    ]
    return [*said[-(limit - 1) :], turn.prompt.user_text] if limit > 1 else [turn.prompt.user_text]


def _actions(
    intent: tenant_pb2.Intent,
    turn: Turn,
    known: Mapping[str, Any],
    product: Mapping[str, Any] | None,
    reason: str,
) -> list[conversation_pb2.Action]:
    allowed = set(turn.tenant.allowed_actions)
    product = product or {}
    quantity = _quantity(known)
    price = _number(product.get("price")) or 0.0
    optional = {
        "size": known.get("size"),
        "shippingAddress": known.get("address"),
        "email": known.get("email"),
        "phone": known.get("phone"),
    }
    params: dict[str, dict[str, Any]] = {
        "create_order": {
            "productId": product.get("id", ""),
            "quantity": quantity,
            "unitPrice": price,
            "currency": product.get("currency", ""),
            **optional,
        },
        "payment_link": {
            "amount": round(price * quantity, 2),
            "currency": product.get("currency", ""),
            "email": known.get("email"),
            "phone": known.get("phone"),
        },
        "create_ticket": {
            "reason": reason,
            "orderId": known.get("order_id"),
            "summary": _summary_text(turn),
            "customerText": "\n".join(_customer_texts(turn, 3)),
            "language": turn.language,
        },
        "handoff_human": {
            "reason": reason,
            "orderId": known.get("order_id"),
            "summary": _summary_text(turn),
        },
    }
    return [
        conversation_pb2.Action(
            type=kind,
            params=_struct({k: v for k, v in params.get(kind, {}).items() if v is not None}),
        )
        for kind in intent.action_types
        if kind in allowed
    ]


def _updates(turn: Turn, product: Mapping[str, Any] | None) -> dict[str, Any]:
    """The slots this turn learnt: everything extracted, the product when it changed, and the
    customer's language when it was recognised and is new."""
    updates = dict(turn.extracted)
    remembered = turn.remembered_product()
    if product and (remembered is None or dict(product) != remembered):
        updates["product"] = dict(product)
    elif "product" in updates and remembered == updates["product"]:
        del updates["product"]
    if turn.detected and turn.detected != turn.remembered.get("language"):
        updates["language"] = turn.detected
    return updates


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(dict(values))
    return result


def _generation(
    turn: Turn,
    reply: str,
    intent: str,
    confidence: float,
    actions: list[conversation_pb2.Action],
    entities: Mapping[str, Any],
    awaiting: str,
) -> pb.Generation:
    """The generation; `awaiting` (what the reply asks for: "confirmation", a slot name, or
    nothing) goes into the entities so the next turn knows what a bare answer answers."""
    return pb.Generation(
        reply_text=reply,
        intent=intent,
        confidence=confidence,
        actions=actions,
        model=MODEL_NAME,
        usage=pb.Usage(),
        entities=_struct({**entities, AWAITING: awaiting}),
    )
