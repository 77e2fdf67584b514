"""The offline responder's turn: language, slots, routing, reply and actions.

Routing, first rule that applies:
1. an explicit request for a person ("quiero hablar con una persona") -> the tenant's handoff
   intent (one proposing handoff_human and needing no slots), or a built-in one;
2. after a gate (checkout_flow), an explicit yes ("sí, la talla 43", "yes, size 10",
   "quiero comprarla") -> the follow-up (confirm_purchase), but only when the reply before
   asked to confirm (its "awaiting" is "confirmation") and the yes keeps the deal that reply
   showed (product, quantity, size). A yes that changes it ("sí, pero mejor 5 pares", "sí, en
   la 44" after the summary in 43), or that answers a reply which asked something else (a
   language model's turn, whose "awaiting" we cannot know), gets the order summary to confirm.
   A reply that is only a no ("no", "no gracias", "mejor no") -> "declined", nothing ordered;
3. the customer cannot give the slot the intent is waiting for ("no lo tengo a mano"): an
   order number -> the intent's ticket and hand-over without it (when those are all it does
   and the tenant allows them), so a person finds the order from the conversation; anything
   else -> the same intent, asking again;
4. the message gives a slot the conversation is waiting for -> the same intent again: the
   intent that asked for it, or, after checkout_flow, checkout_flow with the order summary to
   confirm. A follow-up never completes on a turn that changes the product, the quantity or
   the size it was confirmed for: the summary is asked again. Nor on the turn that gives the
   slot a yes lacked ("Sí, confirmo" -> "¿En qué talla?" -> "43"): that yes was given before
   the order was complete, and the reply before asked for a slot, not for a confirmation, so
   the complete summary (product, size, quantity, total) is shown to confirm and the next
   explicit yes orders. A yes that carries every missing slot ("Sí, confirmo, en talla 43")
   answers the confirmation itself and orders at once (rule 2);
5. similarity to the tenant's examples (follow-ups excluded) above the threshold;
6. a short answer while an intent still waits for a slot -> that intent, asking again;
7. the message gives a slot some intent needs (an order id, an address) -> that intent;
8. otherwise the best retrieved document, with low confidence; otherwise "not sure".

An intent whose required slots are missing or invalid asks for the first of them (tenant
slot prompts, else the platform's), keeps the intent and proposes no action. Every generation
carries the entity "awaiting": what its reply asked for ("confirmation", a slot name, or ""),
so the next turn knows what a bare "sí" or "43" answers; it is believed only when the last
agent turn was this responder's (the entities of a language model's turn are merged over ours
and would leave a stale one). A reply asking to confirm also records the deal it showed
("confirming": product id, quantity, size).

Products: the one named in the message, else the remembered one. A remembered product that is
not a catalogue entry (a language model's turn remembers a name, "Zapatilla Kobe 6 Protro") is
looked up by id or name among the retrieved catalogue entries; if it matches none, or more
than one, the customer is asked which product. The best retrieved entry is offered only by an
intent that shows it before anything is confirmed (checkout_flow on a first mention), never
taken by a follow-up.

Money-moving actions (create_order, payment_link) are proposed by a follow-up only on the
turn right after a reply that asked to confirm ("awaiting" is "confirmation"), which is when
the orchestrator keeps them (services/orchestrator/actions/validation.py, the confirmation
rule); on any other turn the follow-up shows the order summary to confirm instead.

Money: unit prices and totals are Decimals from the catalogue's price, to the cent, and a reply
writes them as its language does ("14,50 €", "€14.50": services/llm/offline/money.py); a product
without a usable price gets no create_order or payment_link: the customer is handed over.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
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
    does_not_have,
    is_confirmation,
    is_refusal,
    primary,
    wants_human,
)
from services.llm.offline.money import Money
from services.llm.offline.replies import (
    DECLINED,
    FALLBACK,
    HANDOFF,
    HANDOFF_WITHOUT_SLOT,
    NO_PRICE,
    NO_PRICE_NO_HANDOFF,
    PLACEHOLDER,
    TICKET_WITHOUT_SLOT,
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
    resolve_product,
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
CONFIRMING = "confirming"
"""Entity: the deal a reply asking to confirm showed ({"product": id, "quantity": n, "size":
"43" or "" when it showed none}); a yes completes the order only for that deal."""
MONEY_ACTIONS = frozenset({"create_order", "payment_link"})
HANDOVER_ACTIONS = frozenset({"create_ticket", "handoff_human"})
CENT = Decimal("0.01")
BUILT_IN_HANDOFF = tenant_pb2.Intent(name="human_handoff", action_types=["handoff_human"])


@dataclass
class Turn:
    """What the responder knows about the turn before choosing an intent."""

    prompt: pb.Prompt
    language: str
    detected: str
    previous: str
    remembered: dict[str, Any]
    """The session's entities, its product resolved to a catalogue entry (or dropped)."""
    catalogue: list[dict[str, Any]]
    stored_product: Any = None
    """The product as the session stores it (a catalogue entry, or a model's name for it)."""
    trusted: bool = True
    """Whether the last agent turn was this responder's, so its "awaiting" can be believed."""
    awaiting: str = ""
    extracted: dict[str, Any] = field(default_factory=dict)
    order_hint: str | None = None
    """An order id this message gives if it is about an order ("el número es 12345")."""

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
        stored = json_format.MessageToDict(prompt.entities)
        detected = detect_language(prompt.user_text)
        language = reply_language(tenant, detected or str(stored.get("language") or ""))
        catalogue = _catalogue(prompt)
        trusted = _answered_here(prompt)
        awaiting = stored.get(AWAITING)
        turn = Turn(
            prompt=prompt,
            language=language,
            detected=detected,
            previous=last_agent_intent(prompt),
            remembered=_remembered(stored, catalogue),
            catalogue=catalogue,
            stored_product=stored.get("product"),
            trusted=trusted,
            awaiting=awaiting if trusted and isinstance(awaiting, str) else "",
        )
        remembered = turn.remembered
        intents = {intent.name: intent for intent in tenant.intents}
        previous = intents.get(turn.previous)
        awaiting = turn.awaiting
        followers = [i for i in tenant.intents if turn.previous and turn.previous in follows(i)]
        # The slots a bare answer ("43", "12345") may fill: what the last reply asked for, and
        # what the previous intent (or its follow-ups) still lacks.
        expected = {awaiting} & set(SLOT_NAMES)
        if previous is not None:
            expected |= {i.slot for i in slot_issues(previous.required_slots, remembered)}
        for follower in followers:
            expected |= {i.slot for i in slot_issues(follower.required_slots, remembered)}
        pending = previous is not None and bool(expected & set(previous.required_slots))
        if any("size" in follower.required_slots for follower in followers):
            # after a gate, "sí, en la 42" gives the size even when one is remembered: a new
            # size must be seen (and confirmed), never ignored
            expected.add("size")
        products = list(turn.catalogue)
        remembered_product = turn.remembered_product()
        if remembered_product and all(
            p.get("id") != remembered_product.get("id") for p in products
        ):
            products.append(remembered_product)
        turn.extracted = extract_all(prompt.user_text, expected=expected, products=products)
        if "order_id" not in turn.extracted:
            turn.order_hint = extract_all(
                prompt.user_text, expected=expected, products=products, order_context=True
            ).get("order_id")
        given = set(turn.extracted)

        # 1. an explicit request for a person
        if wants_human(prompt.user_text) and "handoff_human" in tenant.allowed_actions:
            return self._answer(
                turn, _handoff_intent(tenant), HANDOFF_CONFIDENCE, "customer_request"
            )
        # 2. a yes or a no to what the agent just proposed
        if followers and is_confirmation(prompt.user_text):
            chosen = max(followers, key=lambda i: best_example_score(prompt.user_text, i))
            if awaiting == AWAITING_CONFIRMATION and not _changes_the_deal(turn):
                return self._answer(turn, chosen, CONFIRMED_CONFIDENCE)
            if previous is not None:
                # a yes to something else, or to a deal it changes: the summary to confirm
                return self._summary(turn, previous, chosen)
        if followers and not given and is_refusal(prompt.user_text):
            reply = platform_text(DECLINED, turn.language)
            return _generation(
                turn, reply, DECLINED_INTENT, CONFIRMED_CONFIDENCE, [], _updates(turn, None), ""
            )
        # 3. the customer cannot give what the intent waits for
        waiting = [s for s in previous.required_slots if s in expected] if previous else []
        if previous is not None and waiting and not given and does_not_have(prompt.user_text):
            return self._without_slot(turn, previous, waiting[0])
        # 4. a slot the conversation is waiting for
        if pending and previous is not None and given & set(previous.required_slots):
            gate = next((intents[g] for g in follows(previous) if g in intents), None)
            if gate is not None and (not turn.trusted or _changes_the_deal(turn)):
                return self._summary(turn, gate, previous)
            return self._answer(turn, previous, CONTINUED_CONFIDENCE)
        if previous is not None and followers:
            wanted = {slot for f in followers for slot in f.required_slots}
            if given & wanted:
                return self._summary(turn, previous, followers[0])
        # 5. similarity to the examples; follow-ups only while they collect their slots
        gated = frozenset(i.name for i in tenant.intents if follows(i))
        allowed = frozenset({turn.previous}) if pending else frozenset()
        match = match_intent(prompt, self._threshold, also_allowed=allowed, exclude=gated - allowed)
        if match is not None:
            return self._answer(turn, match.intent, round(match.score, 4))
        # 6. a short answer while an intent still waits for a slot
        if pending and previous is not None and _short_answer(prompt.user_text):
            return self._answer(turn, previous, KEPT_CONFIDENCE)
        # 7. a slot that some intent needs
        for intent in tenant.intents:
            needs = set(intent.required_slots) - {"product", "quantity", "size"}
            if not follows(intent) and needs & given:
                return self._answer(turn, intent, BY_SLOT_CONFIDENCE)
        # 8. the documents, or nothing
        return self._no_intent(turn)

    # --- answers ---------------------------------------------------------------------------

    def _answer(
        self,
        turn: Turn,
        intent: tenant_pb2.Intent,
        confidence: float,
        reason: str = "",
    ) -> pb.Generation:
        template, written_in = intent_template(intent, turn.language, turn.default_language)
        # only an intent that shows the product before anything is confirmed may offer the
        # best retrieved one; a follow-up takes the product the customer was shown
        known, product = self._known(
            turn, intent.required_slots, template, fallback=not follows(intent)
        )
        if "order_id" in intent.required_slots and not known.get("order_id") and turn.order_hint:
            known["order_id"] = turn.extracted["order_id"] = turn.order_hint
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
        values = _values(known, product, turn.prompt, turn.language)
        if issues:
            return self._ask(turn, intent.name, confidence, issues[0], values)
        if _moves_money(intent.action_types, turn) and _unit_price(product) is None:
            return self._unpriced(turn, intent, product)
        asked_to_confirm = turn.awaiting == AWAITING_CONFIRMATION
        if follows(intent) and _moves_money(intent.action_types, turn) and not asked_to_confirm:
            # the reply before asked for something else (the slot a yes lacked): a yes given
            # before it does not cover the order as it now stands; the summary to confirm
            return self._summary(turn, _gate_of(turn.tenant, intent), intent)
        reply = fill(template, _written_in(values, written_in)) if template else None
        if reply is None and (reason or intent is BUILT_IN_HANDOFF):
            reply = platform_text(HANDOFF, turn.language)
        if reply is None:
            return self._no_intent(turn)
        gate = any(intent.name in follows(other) for other in turn.tenant.intents)
        updates = _updates(turn, product)
        if gate:
            updates[CONFIRMING] = _shown(product, values, template)
        return _generation(
            turn,
            reply,
            intent.name,
            confidence,
            _actions(intent.action_types, turn, known, product, reason or intent.name),
            updates,
            AWAITING_CONFIRMATION if gate else "",
        )

    def _summary(
        self, turn: Turn, gate: tenant_pb2.Intent, follower: tenant_pb2.Intent
    ) -> pb.Generation:
        """After checkout_flow, a message with slots but no confirmation (or a yes that changes
        the deal): the order summary to confirm (or the slot still wrong), and the intent stays
        the gate's. The product is the one named or remembered, never a retrieved guess."""
        known, product = self._known(turn, follower.required_slots, "{product}", fallback=False)
        issues = slot_issues(follower.required_slots, known)
        values = _values(known, product, turn.prompt, turn.language)
        blocking = [i for i in issues if not (i.slot == "size" and i.kind == "missing")]
        if blocking:
            return self._ask(turn, gate.name, CONTINUED_CONFIDENCE, blocking[0], values)
        if _moves_money(follower.action_types, turn) and _unit_price(product) is None:
            return self._unpriced(turn, gate, product)
        text = slot_prompt(turn.tenant, "confirmation", "ask", turn.language)
        reply = fill(text, values)
        if reply is None:
            return self._ask(
                turn, gate.name, CONTINUED_CONFIDENCE, Issue("product", "missing"), values
            )
        updates = _updates(turn, product)
        updates[CONFIRMING] = _shown(product, values, text, summary=True)
        return _generation(
            turn,
            reply,
            gate.name,
            CONTINUED_CONFIDENCE,
            [],
            updates,
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

    def _without_slot(self, turn: Turn, intent: tenant_pb2.Intent, slot: str) -> pb.Generation:
        """The customer cannot give `slot` ("no lo tengo a mano"). Without an order number an
        intent that only opens a ticket and hands over (order_support) does so with what is
        known: a person finds the order from the conversation, the customer's e-mail or phone,
        sooner than the customer finds the number. Anything else asks again."""
        known, product = self._known(turn, intent.required_slots, "", fallback=False)
        allowed = set(turn.tenant.allowed_actions)
        kinds = [kind for kind in intent.action_types if kind in allowed]
        hands_over = set(intent.action_types) <= HANDOVER_ACTIONS
        if slot != "order_id" or not kinds or not hands_over:
            values = _values(known, product, turn.prompt, turn.language)
            return self._ask(turn, intent.name, KEPT_CONFIDENCE, Issue(slot, "missing"), values)
        texts = HANDOFF_WITHOUT_SLOT if "handoff_human" in kinds else TICKET_WITHOUT_SLOT
        return _generation(
            turn,
            platform_text(texts, turn.language),
            intent.name,
            CONTINUED_CONFIDENCE,
            _actions(kinds, turn, known, product, intent.name),
            _updates(turn, None),
            "",
        )

    def _unpriced(
        self, turn: Turn, intent: tenant_pb2.Intent, product: Mapping[str, Any] | None
    ) -> pb.Generation:
        """The order cannot be priced (the catalogue entry has no usable price): no money
        moves; a person takes over when the tenant allows it."""
        values = {"product": product.get("name") if product else None}
        updates = _updates(turn, product)
        if "handoff_human" in turn.tenant.allowed_actions:
            reply = fill(platform_text(NO_PRICE, turn.language), values) or ""
            known, _ = self._known(turn, (), "", fallback=False)
            actions = _actions(["handoff_human"], turn, known, product, "price_unavailable")
            handoff = _handoff_intent(turn.tenant)
            return _generation(turn, reply, handoff.name, HANDOFF_CONFIDENCE, actions, updates, "")
        reply = fill(platform_text(NO_PRICE_NO_HANDOFF, turn.language), values) or ""
        return _generation(turn, reply, intent.name, KEPT_CONFIDENCE, [], updates, "")

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
        turn: Turn, required: Sequence[str], template: str, *, fallback: bool
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The session's slots updated with this message's, and the product under discussion:
        the one named now, else the remembered one, else, with `fallback`, when the intent
        needs one and the session remembers none, the best retrieved catalogue entry."""
        known = {**turn.remembered, **turn.extracted}
        for key in ("language", AWAITING, CONFIRMING):
            known.pop(key, None)
        named = turn.extracted.get("product")
        product = named if isinstance(named, dict) else turn.remembered_product()
        uses_product = {"product", "size", "quantity"} & set(required) or {
            name for _, name in PLACEHOLDER.findall(template)
        } & PRODUCT_PLACEHOLDERS
        remembers_one = turn.stored_product not in (None, "", {})
        if product is None and fallback and uses_product and not remembers_one:
            product = turn.catalogue[0] if turn.catalogue else None
        if product is not None:
            known["product"] = product
        else:
            known.pop("product", None)
        return known, product


def _answered_here(prompt: pb.Prompt) -> bool:
    """Whether the last agent turn was answered by this responder (its model is "offline";
    unset in older turns and tests), so the entities it left ("awaiting") are its own."""
    for turn in reversed(prompt.recent_turns):
        if turn.role == conversation_pb2.TURN_ROLE_AGENT:
            return turn.metadata.model in ("", MODEL_NAME)
    return True


def _remembered(
    stored: Mapping[str, Any], catalogue: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The session's entities as this responder reads them: the product resolved to a
    catalogue entry (dropped when it cannot be), and a language model's "orderId" as
    "order_id"."""
    remembered = dict(stored)
    product = resolve_product(stored.get("product"), catalogue)
    if product is not None:
        remembered["product"] = dict(product)
    else:
        remembered.pop("product", None)
    order_id = stored.get("orderId")
    if not remembered.get("order_id") and isinstance(order_id, str | int) and str(order_id):
        remembered["order_id"] = str(order_id).strip().upper()
    return remembered


def _switches_product(turn: Turn) -> bool:
    """Whether this message names another product than the one under discussion."""
    named = turn.extracted.get("product")
    remembered = turn.remembered_product() or {}
    return isinstance(named, dict) and named.get("id") != remembered.get("id")


def _changes_the_deal(turn: Turn) -> bool:
    """Whether the order as it stands after this message differs from the deal the customer
    was shown to confirm (another product, quantity or size), so the order summary must be
    confirmed again before money moves. The deal shown is the "confirming" entity; sessions
    without it compare with the remembered slots."""
    if _switches_product(turn):
        return True
    shown = turn.remembered.get(CONFIRMING)
    shown = shown if isinstance(shown, dict) else None
    product = turn.remembered_product()
    if shown is not None and product is not None and shown.get("product") != product.get("id"):
        return True
    remembered_quantity = turn.remembered.get("quantity", 1)
    quantity = turn.extracted.get("quantity", remembered_quantity)
    shown_quantity = shown.get("quantity", 1) if shown is not None else remembered_quantity
    if _number(quantity) != _number(shown_quantity):
        return True
    shown_size = shown.get("size") if shown is not None else turn.remembered.get("size")
    size = turn.extracted.get("size")
    return bool(size is not None and shown_size and str(size) != str(shown_size))


def _shown(
    product: Mapping[str, Any] | None,
    values: Mapping[str, Any],
    template: str,
    *,
    summary: bool = False,
) -> dict[str, Any]:
    """The deal a reply asking to confirm shows: the product, the quantity (1 when the text
    shows only the unit price) and the size (or "" when it shows none)."""
    names = {name for _, name in PLACEHOLDER.findall(template)}
    shows_quantity = summary or bool(names & {"quantity", "total"})
    shows_size = summary or "size" in names
    return {
        "product": str(product.get("id", "")) if product else "",
        "quantity": values.get("quantity", 1) if shows_quantity else 1,
        "size": str(values.get("size") or "") if shows_size else "",
    }


def _short_answer(text: str) -> bool:
    """A few words that are not a question of their own ("sí", "no lo sé", "un momento")."""
    return len(text.split()) <= SHORT_MESSAGE_WORDS and not any(c in text for c in "?¿")


def _gate_of(tenant: tenant_pb2.TenantConfig, intent: tenant_pb2.Intent) -> tenant_pb2.Intent:
    """The intent `intent` follows (checkout_flow for confirm_purchase): the tenant's, or one
    by that name, so the next reply's intent is the gate a yes then follows."""
    gates = follows(intent)
    return next((i for i in tenant.intents if i.name in gates), tenant_pb2.Intent(name=gates[0]))


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


def _unit_price(product: Mapping[str, Any] | None) -> Decimal | None:
    """The catalogue's price as a Decimal to the cent (189.99 -> Decimal("189.99"), through
    the float's shortest repr), or None when there is no usable price (missing, not a number,
    not finite, zero or negative)."""
    value = product.get("price") if product else None
    if value is None or isinstance(value, bool):
        return None
    try:
        price = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not price.is_finite() or price <= 0:
        return None
    return price.quantize(CENT, rounding=ROUND_HALF_UP)


def _total(price: Decimal, quantity: int) -> Decimal:
    return (price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)


def _moves_money(action_types: Iterable[str], turn: Turn) -> bool:
    """Whether these actions include one that moves money and that the tenant allows."""
    return bool(set(action_types) & MONEY_ACTIONS & set(turn.tenant.allowed_actions))


def _values(
    known: Mapping[str, Any],
    product: Mapping[str, Any] | None,
    prompt: pb.Prompt,
    language: str,
) -> dict[str, Any]:
    """What templates fill in; the unit price and the total are Money shown in `language`."""
    values: dict[str, Any] = {
        slot: known.get(slot) for slot in ("size", "address", "email", "phone", "order_id")
    }
    values["answer"] = prompt.documents[0].text if prompt.documents else None
    if product:
        price = _unit_price(product)
        quantity = _quantity(known)
        sizes = product_sizes(product)
        currency = product.get("currency")
        code = currency if isinstance(currency, str) else ""
        values |= {
            "product": product.get("name"),
            "price": Money(price, code, language) if price is not None else None,
            "currency": currency,
            "stock": product.get("stock"),
            "options": format_sizes(sizes) if sizes else None,
            "quantity": quantity,
            "total": Money(_total(price, quantity), code, language) if price is not None else None,
        }
    return values


def _written_in(values: Mapping[str, Any], language: str) -> dict[str, Any]:
    """`values` for a text written in `language` (a tenant template in its default language
    answering a customer who writes in another): amounts follow the text's language."""
    return {
        name: replace(value, language=language) if isinstance(value, Money) else value
        for name, value in values.items()
    }


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
    kinds: Iterable[str],
    turn: Turn,
    known: Mapping[str, Any],
    product: Mapping[str, Any] | None,
    reason: str,
) -> list[conversation_pb2.Action]:
    """The actions of `kinds` the tenant allows, with their parameters. create_order and
    payment_link only with a catalogue price: amounts are never made up (nor 0)."""
    allowed = set(turn.tenant.allowed_actions)
    product = product or {}
    quantity = _quantity(known)
    price = _unit_price(product)
    optional = {
        "size": known.get("size"),
        "shippingAddress": known.get("address"),
        "email": known.get("email"),
        "phone": known.get("phone"),
    }
    params: dict[str, dict[str, Any]] = {
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
    if price is not None:
        params["create_order"] = {
            "productId": product.get("id", ""),
            "quantity": quantity,
            "unitPrice": float(price),
            "currency": product.get("currency", ""),
            **optional,
        }
        params["payment_link"] = {
            "amount": float(_total(price, quantity)),
            "currency": product.get("currency", ""),
            "email": known.get("email"),
            "phone": known.get("phone"),
        }
    return [
        conversation_pb2.Action(
            type=kind,
            params=_struct({k: v for k, v in params.get(kind, {}).items() if v is not None}),
        )
        for kind in kinds
        if kind in allowed and (kind not in MONEY_ACTIONS or kind in params)
    ]


def _updates(turn: Turn, product: Mapping[str, Any] | None) -> dict[str, Any]:
    """The slots this turn learnt: everything extracted, the product when it is not what the
    session stores (a new one, or the catalogue entry for a name a model remembered), and the
    customer's language when it was recognised and is new."""
    updates = dict(turn.extracted)
    stored = turn.stored_product
    if product and dict(product) != stored:
        updates["product"] = dict(product)
    elif "product" in updates and updates["product"] == stored:
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
