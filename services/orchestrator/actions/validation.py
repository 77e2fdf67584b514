"""Validation of the actions a model proposes (DESIGN section 5, step 8; section 6: "only
schema-valid, tenant-allowed actions leave the orchestrator; money-moving actions need an
explicit confirmation turn").

`validate_actions` checks each proposed action in this order, and the first check it fails
is the reason it is dropped:

1. `unknown_type`: the type is not in the registry (the model invented it);
2. `not_allowed`: the tenant's `allowed_actions` does not list it;
3. `invalid_params`: after normalisation (Struct floats -> ints where the schema wants an
   integer, money -> a two-decimal string, a numeric size or order id -> text, nulls ->
   absent), the params break the type's JSON schema, or a date-time that must be in the
   future is not;
4. `needs_confirmation`: the type needs a confirmation turn (create_order, payment_link,
   voice_call) and `ConfirmationState` does not grant it (rule below).

Then across the surviving actions of the turn (`inconsistent`):
- an action identical to an earlier one (same type and normalised params) is a duplicate;
- money is all-or-nothing: when a money-moving action is dropped for invalid params or a
  missing confirmation, the turn's other money-moving actions go too;
- all money-moving actions share one currency; at most one payment_link; and when the turn
  has create_order and payment_link, the link's amount equals the sum of unitPrice x quantity
  over the orders, in exact decimal arithmetic. Any violation drops every money-moving action
  of the turn (which of the numbers is wrong cannot be told).

The confirmation rule: an action that needs confirmation is kept only when
(a) the previous turn of the session is an agent turn that asked the customer to confirm and
    placed no money-moving action itself. "Asked" is read from the session entities: the
    entity `awaiting` (what that reply asked for; the offline responder always sets it, an LLM
    should) equals "confirmation"; when the entity is absent, from the turn's intent being a
    confirmation gate, i.e. an intent the tenant's money/confirmation intents follow
    (checkout_flow, which confirm_purchase follows); and
(b) the current customer message is an explicit yes (`is_explicit_yes`); and
(c) for create_order, when the session remembers the product the customer was asked about
    (entity `product` with an `id`, and its `price`/`currency`): the order is for that
    product, at that unit price and currency. The quantity is not bound: the confirming
    message may set it ("sí, dos pares").
Otherwise the action is dropped with `needs_confirmation`. A "yes" therefore confirms only
what the agent's previous reply put on the table, and only once.

Dropped actions carry what an audit record needs (index, type, reason, detail, path); details
name rules and numbers from the params, never customer text.
"""

import enum
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2

from services.orchestrator.actions.registry import (
    REGISTRY,
    ActionSpec,
    ParamError,
    parse_date_time,
    schema_errors,
    spec_for,
)

AWAITING = "awaiting"
AWAITING_CONFIRMATION = "confirmation"
LEGACY_FOLLOWS = {"confirm_purchase": ("checkout_flow",)}
"""Tenants stored before Intent.follows existed: confirm_purchase follows checkout_flow."""
CENT = Decimal("0.01")
MONEY_INPUT = re.compile(r"^[0-9]{1,15}(?:\.[0-9]{1,15})?\Z")
SAFE_TYPE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


# --- the explicit yes --------------------------------------------------------------------------

MAX_YES_CHARS = 200
"""A longer message carries more than a yes; the customer is asked again."""
ACCENTED_SI = re.compile(r"(?<!\w)sí(?!\w)")
HEDGE = re.compile(
    r"\b(?:no|nop|nope|nah|not|never|nunca|jamas|don'?t|do not|cancel\w*|anul\w*|"
    r"espera|espere|esperad|esperame|wait|hold on|todavia|aun|pero|but|antes|before|first|"
    r"primero|quiza|quizas|tal vez|maybe|perhaps|a lo mejor|igual|depende|depends|think|"
    r"pienso|pensar\w*|momento|moment|luego|later|if|unless|salvo|excepto|except|mejor|sino|"
    r"instead|rather|dime|digame|tell me|explain|explica\w*)\b"
)
"""A negation, a doubt, a condition, a change of mind or a request for information: the
message is not an unconditional yes, whatever else it says."""
CONDITIONAL_SI = re.compile(
    r"\bsi\s+(?!(?:confirmo|claro|dale|vale|quiero|por favor|porfa|gracias|perfecto|adelante|"
    r"de acuerdo|ok|okay|yes|correcto|exacto|venga|senor|senora|la talla|talla|en la|"
    r"en talla|[0-9]+)\b)"
)
"""Unaccented "si" followed by a clause is "if" ("si tienen la 43 me la llevo")."""
YES = re.compile(
    r"\b(?:yes|si|yeah|yep|yup|sure|ok|okay|okey|oki|vale|dale|venga|claro|perfecto|perfect|"
    r"de acuerdo|adelante|confirmo|confirmado|confirmada|i confirm|confirmed|"
    r"confirm (?:it|the order|the purchase|my order)|correcto|correct|exacto|exactly|"
    r"por supuesto|of course|absolutely|alright|all right|go ahead|go for it|sounds good|"
    r"deal|please do|do it|hazlo|let'?s do it|agreed)\b"
)
COMMITMENT = re.compile(
    r"\b(?:me (?:la|lo|las|los) (?:llevo|quedo)|(?:la|lo|las|los) (?:quiero|compro)|"
    r"quiero (?:comprarl[ao]s?|pedirl[ao]s?)|compral[ao]s?|pidel[ao]s?|"
    r"(?:i'?ll|i will) (?:take|buy|get|have) (?:it|them|one|a pair)|(?:buy|order) (?:it|them)|"
    r"place the order|i want (?:it|them))\b"
)


def _prepare(text: str) -> str:
    low = unicodedata.normalize("NFC", text).lower().replace("\u2019", "'")
    low = ACCENTED_SI.sub(" yes ", low)  # "sí" is always yes; a bare "si" may be "if"
    folded = "".join(c for c in unicodedata.normalize("NFKD", low) if not unicodedata.combining(c))
    return " ".join(folded.split())


def is_explicit_yes(text: str) -> bool:
    """True for an unconditional yes in Spanish or English: "sí", "si, confirmo", "vale",
    "dale", "de acuerdo", "yes", "ok go ahead", "sí, la talla 43", "yes, size 10",
    "quiero comprarla en talla 43, dos pares", "I'll take them".

    False for anything that hedges, even when it starts with a yes: a question mark ("¿sí?",
    "sí, pero antes dime el precio?"), a negation ("no", "todavía no", "not yet", "cancel"), a
    condition ("si tienen la 43 me la llevo", "yes if it ships today"), a "but"/"pero"/"mejor"
    (a change of mind), a doubt ("maybe", "lo pienso"), a request for information ("dime el
    total"), a message without any yes ("43", "gracias"), or one over 200 characters. Erring
    towards "no" costs one more question; erring towards "yes" moves money."""
    if not text.strip() or len(text) > MAX_YES_CHARS or "?" in text or "¿" in text:
        return False
    low = _prepare(text)
    if HEDGE.search(low) or CONDITIONAL_SI.search(low):
        return False
    return bool(YES.search(low) or COMMITMENT.search(low))


# --- what the customer has confirmed -----------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """The product the agent asked the customer to confirm (from the session entities)."""

    product_id: str
    unit_price: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class ConfirmationState:
    """What the orchestrator knows about confirmation at this turn (rule in the module doc).

    asked: the previous turn is an agent turn that asked the customer to confirm (and placed
    no money-moving action); confirmed: this message is an explicit yes; offer: what was put
    on the table, when the session remembers it."""

    asked: bool = False
    confirmed: bool = False
    offer: Offer | None = None

    @property
    def granted(self) -> bool:
        return self.asked and self.confirmed

    @classmethod
    def from_session(
        cls,
        session: conversation_pb2.SessionContext,
        tenant: tenant_pb2.TenantConfig,
        user_text: str,
    ) -> "ConfirmationState":
        """From the session as loaded at the start of the turn (entities and recent turns
        as the previous turn left them) and the customer's current message."""
        entities = _plain(session.short_context.entities)
        previous = session.recent_turns[-1] if session.recent_turns else None
        asked = False
        if previous is not None and previous.role == conversation_pb2.TURN_ROLE_AGENT:
            awaiting = entities.get(AWAITING)
            if isinstance(awaiting, str):
                asked = awaiting == AWAITING_CONFIRMATION
            else:
                asked = is_confirmation_gate(previous.metadata.intent, tenant)
            spent = any(_moves_money(action.type) for action in previous.actions)
            asked = asked and not spent
        return cls(asked=asked, confirmed=is_explicit_yes(user_text), offer=_offer(entities))


def is_confirmation_gate(intent: str, tenant: tenant_pb2.TenantConfig) -> bool:
    """Whether a reply with this intent asks the customer to confirm: some intent of the
    tenant that proposes an action needing confirmation follows it."""
    if not intent:
        return False
    for candidate in tenant.intents:
        gates = tuple(candidate.follows) or LEGACY_FOLLOWS.get(candidate.name, ())
        needs = any(
            (spec := spec_for(kind)) is not None and spec.needs_confirmation
            for kind in candidate.action_types
        )
        if intent in gates and needs:
            return True
    return False


def _moves_money(action_type: str) -> bool:
    spec = spec_for(action_type)
    return spec is not None and spec.moves_money


def _offer(entities: Mapping[str, Any]) -> Offer | None:
    product = entities.get("product")
    if not isinstance(product, dict) or not isinstance(product.get("id"), str):
        return None
    price = _money(product.get("price"))
    currency = product.get("currency")
    return Offer(
        product_id=product["id"],
        unit_price=Decimal(price) if isinstance(price, str) and _is_money(price) else None,
        currency=currency if isinstance(currency, str) and currency else None,
    )


# --- normalisation -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A Struct (or one of its values) as plain Python: dicts, lists, floats, strings, bools,
    None. Unlike json_format, NaN and infinities pass through (and fail validation)."""
    if isinstance(value, struct_pb2.Struct):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(item) for item in value]
    return value


def _is_money(text: str) -> bool:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return False
    return amount.is_finite() and amount > 0 and amount == amount.quantize(CENT)


def _money(value: Any) -> Any:
    """A number or a decimal string -> the two-decimal string ("189.9" -> "189.90"). Floats go
    through their shortest repr (189.99 -> "189.99", never 189.990000000000009...). Amounts
    with more than two significant decimals are not rounded: they come back in full and fail
    the schema; anything else is returned unchanged (and fails the schema's type)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return value
        amount = Decimal(repr(value))
    elif isinstance(value, str) and MONEY_INPUT.match(value.strip()):
        amount = Decimal(value.strip())
    else:
        return value
    if amount.adjusted() > 12 or amount != amount.quantize(CENT):
        return format(amount, "f")
    return format(amount.quantize(CENT), "f")


def _integer(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _text_from_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def normalise_params(spec: ActionSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params as the schema expects them: nulls dropped (null = not given), integral
    floats -> int for integer fields (1.0 -> 1; 1.5 stays and fails), money -> two-decimal
    strings, numeric text fields -> text (size 43 -> "43")."""
    result = {name: value for name, value in params.items() if value is not None}
    for name in spec.integer_fields:
        if name in result:
            result[name] = _integer(result[name])
    for name in spec.money_fields:
        if name in result:
            result[name] = _money(result[name])
    for name in spec.text_fields:
        if name in result:
            result[name] = _text_from_number(result[name])
    return result


# --- results -----------------------------------------------------------------------------------


class DropReason(enum.StrEnum):
    UNKNOWN_TYPE = "unknown_type"
    NOT_ALLOWED = "not_allowed"
    INVALID_PARAMS = "invalid_params"
    NEEDS_CONFIRMATION = "needs_confirmation"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True)
class DroppedAction:
    """A proposed action that is not published. `type` is the proposed type when it looks like
    one (else "<malformed>"); `path` is the JSON pointer of the first bad param
    (invalid_params), `errors` all of them."""

    index: int
    type: str
    reason: DropReason
    detail: str
    path: str = ""
    errors: tuple[ParamError, ...] = ()

    def audit(self) -> dict[str, Any]:
        """The audit record's payload: no params, no customer text."""
        record: dict[str, Any] = {
            "index": self.index,
            "type": self.type,
            "reason": str(self.reason),
            "detail": self.detail,
        }
        if self.path:
            record["path"] = self.path
        return record


@dataclass(frozen=True)
class KeptAction:
    """A valid action: `action` is the proposed one with normalised params (money as
    two-decimal strings; Struct numbers are doubles, so quantity reads 1.0 there), `params`
    the same as plain Python (quantity is an int)."""

    index: int
    action: conversation_pb2.Action
    params: Mapping[str, Any]
    spec: ActionSpec


@dataclass(frozen=True)
class ValidationResult:
    kept: tuple[KeptAction, ...] = ()
    dropped: tuple[DroppedAction, ...] = ()

    @property
    def actions(self) -> list[conversation_pb2.Action]:
        """The actions to persist and publish, in the order proposed."""
        return [kept.action for kept in self.kept]


@dataclass
class _Candidate:
    index: int
    action: conversation_pb2.Action
    spec: ActionSpec
    params: dict[str, Any]
    dropped: DroppedAction | None = None


@dataclass
class _Turn:
    candidates: list[_Candidate] = field(default_factory=list)
    dropped: list[DroppedAction] = field(default_factory=list)


# --- validation --------------------------------------------------------------------------------


def validate_actions(
    proposed: Sequence[conversation_pb2.Action],
    tenant: tenant_pb2.TenantConfig,
    confirmation: ConfirmationState,
    *,
    now: datetime | None = None,
) -> ValidationResult:
    """The proposed actions split into those to publish and those to drop (module doc).
    `now` (default: the current UTC time) is what scheduled date-times must come after."""
    now = now or datetime.now(UTC)
    allowed = set(tenant.allowed_actions)
    turn = _Turn()
    for index, action in enumerate(proposed):
        shown_type = action.type if SAFE_TYPE.match(action.type) else "<malformed>"
        spec = spec_for(action.type)
        if spec is None:
            turn.dropped.append(
                DroppedAction(index, shown_type, DropReason.UNKNOWN_TYPE, "not a known type")
            )
            continue
        if action.type not in allowed:
            turn.dropped.append(
                DroppedAction(
                    index, spec.type, DropReason.NOT_ALLOWED, "not in the tenant's actions"
                )
            )
            continue
        params = normalise_params(spec, _plain(action.params))
        errors = schema_errors(spec.schema, params) or _future_errors(spec, params, now)
        if errors:
            first = errors[0]
            detail = f"{first.path or '/'} {first.message}"
            if len(errors) > 1:
                detail += f" (and {len(errors) - 1} more)"
            turn.dropped.append(
                DroppedAction(
                    index,
                    spec.type,
                    DropReason.INVALID_PARAMS,
                    detail,
                    first.path,
                    tuple(errors),
                )
            )
            continue
        refusal = _confirmation_refusal(spec, params, confirmation)
        if refusal:
            turn.dropped.append(
                DroppedAction(index, spec.type, DropReason.NEEDS_CONFIRMATION, refusal)
            )
            continue
        turn.candidates.append(_Candidate(index, action, spec, params))
    _drop_duplicates(turn)
    _check_money(turn)
    kept = tuple(
        KeptAction(c.index, _with_params(c.action, c.params), c.params, c.spec)
        for c in turn.candidates
        if c.dropped is None
    )
    dropped = turn.dropped + [c.dropped for c in turn.candidates if c.dropped is not None]
    return ValidationResult(kept, tuple(sorted(dropped, key=lambda d: d.index)))


def _future_errors(spec: ActionSpec, params: Mapping[str, Any], now: datetime) -> list[ParamError]:
    errors = []
    for name in spec.future_fields:
        when = parse_date_time(params[name]) if name in params else None
        if when is not None and when <= now:
            errors.append(ParamError(f"/{name}", "must be in the future"))
    return errors


def _confirmation_refusal(
    spec: ActionSpec, params: Mapping[str, Any], confirmation: ConfirmationState
) -> str:
    """Why `confirmation` does not cover this action ("" when it does)."""
    if not spec.needs_confirmation:
        return ""
    needs = "moves money and needs" if spec.moves_money else "needs"
    if not confirmation.asked:
        return f"{needs} a confirmation turn: the previous agent turn did not ask to confirm"
    if not confirmation.confirmed:
        return f"{needs} a confirmation turn: the customer's message is not an explicit yes"
    offer = confirmation.offer
    if spec.type == "create_order" and offer is not None:
        if params["productId"] != offer.product_id:
            return "the order is for another product than the one the customer confirmed"
        if offer.unit_price is not None and Decimal(params["unitPrice"]) != offer.unit_price:
            return (
                f"unitPrice {params['unitPrice']} differs from the price the customer "
                f"confirmed ({offer.unit_price})"
            )
        if offer.currency is not None and params["currency"] != offer.currency:
            return "the currency differs from the one the customer confirmed"
    return ""


def _drop(candidate: _Candidate, detail: str) -> None:
    if candidate.dropped is None:
        candidate.dropped = DroppedAction(
            candidate.index, candidate.spec.type, DropReason.INCONSISTENT, detail
        )


def _drop_duplicates(turn: _Turn) -> None:
    seen: dict[str, int] = {}
    for candidate in turn.candidates:
        key = json.dumps([candidate.spec.type, candidate.params], sort_keys=True)
        if key in seen:
            _drop(candidate, f"duplicate of action #{seen[key]}")
        else:
            seen[key] = candidate.index


def _check_money(turn: _Turn) -> None:
    money = [c for c in turn.candidates if c.spec.moves_money and c.dropped is None]
    if not money:
        return
    failed = [
        d
        for d in turn.dropped
        if d.reason in (DropReason.INVALID_PARAMS, DropReason.NEEDS_CONFIRMATION)
        and (spec := REGISTRY.get(d.type)) is not None
        and spec.moves_money
    ]
    if failed:
        first = failed[0]
        for candidate in money:
            _drop(candidate, f"money moves all or nothing: action #{first.index} was dropped")
        return
    problem = ""
    currencies = sorted({c.params["currency"] for c in money})
    links = [c for c in money if c.spec.type == "payment_link"]
    orders = [c for c in money if c.spec.type == "create_order"]
    if len(currencies) > 1:
        problem = f"the money-moving actions mix currencies ({', '.join(currencies)})"
    elif len(links) > 1:
        problem = "more than one payment_link in one turn"
    elif links and orders:
        total = sum(
            (Decimal(o.params["unitPrice"]) * o.params["quantity"] for o in orders),
            Decimal(0),
        )
        amount = Decimal(links[0].params["amount"])
        if amount != total:
            problem = (
                f"payment_link amount {amount} differs from the orders' total "
                f"{total.quantize(CENT)} (unitPrice x quantity)"
            )
    if problem:
        for candidate in money:
            _drop(candidate, problem)


def _with_params(
    action: conversation_pb2.Action, params: Mapping[str, Any]
) -> conversation_pb2.Action:
    kept = conversation_pb2.Action()
    kept.CopyFrom(action)
    kept.ClearField("params")
    kept.params.update(dict(params))
    return kept


__all__ = [
    "ConfirmationState",
    "DropReason",
    "DroppedAction",
    "KeptAction",
    "Offer",
    "ValidationResult",
    "is_confirmation_gate",
    "is_explicit_yes",
    "normalise_params",
    "validate_actions",
]
