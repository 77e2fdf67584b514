"""The action registry: one JSON Schema (draft 2020-12) per action type, and what each type
implies (it moves money; it needs an explicit confirmation turn from the customer).

The schemas are Python dicts rather than .json files so that shared fragments (money,
currency, phone, ...) are written once; every schema is plain JSON (`json.dumps` works) and
declares the 2020-12 dialect, so any conforming validator accepts it. The platform does not
depend on the `jsonschema` package: `schema_errors` below implements the subset of keywords the
registry uses, and `check_schema` refuses any schema that uses another keyword, so a schema can
never silently stop being enforced.

Schemas describe parameters *after* normalisation (`validation.normalise_params`): integers are
ints, and money is a decimal string with exactly two decimals ("189.99"). Why a string: action
params travel as a protobuf Struct, whose numbers are IEEE doubles, so no number can carry an
exact decimal amount from the model to the payment consumer; a string survives Struct -> outbox
-> bus -> consumer unchanged, and is what the catalogue already uses (Product.price "189.99").

Error messages name the rule broken and never echo the value, so they can go into audit records
without customer text.
"""

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import MappingProxyType
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# ISO 4217 codes a customer can pay in: active currencies, without the fund codes (BOV, CHE,
# CHW, CLF, COU, MXV, USN, UYI, UYW), precious metals, SDRs and the test codes (XAU, XDR, XTS...).
_ISO_4217_CODES = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())

MAX_QUANTITY = 99
MONEY_PATTERN = r"^(?!0\.00$)(?:0|[1-9][0-9]{0,8})\.[0-9]{2}$"
"""A positive amount below one billion with exactly two decimals: "189.99", "0.50", "12.00"."""
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (no newlines): what short, single-line fields must match."""

# --- shared fragments --------------------------------------------------------------------------

MONEY: dict[str, Any] = {
    "type": "string",
    "title": 'a positive amount with two decimals, as a string ("189.99")',
    "pattern": MONEY_PATTERN,
}
CURRENCY: dict[str, Any] = {
    "type": "string",
    "title": 'an ISO 4217 currency code ("EUR")',
    "enum": sorted(ISO_4217),
}
QUANTITY: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}
PRODUCT_ID: dict[str, Any] = {
    "type": "string",
    "title": "a catalogue product id",
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
}
SIZE: dict[str, Any] = {
    "type": "string",
    "title": 'a size such as "43", "42.5", "10 US" or "XL"',
    "pattern": r"^[0-9A-Za-z][0-9A-Za-z ./-]{0,15}$",
}
ADDRESS: dict[str, Any] = {
    "type": "string",
    "title": "a single-line postal address",
    "minLength": 5,
    "maxLength": 300,
    "pattern": SINGLE_LINE,
}
EMAIL: dict[str, Any] = {"type": "string", "format": "email", "maxLength": 254}
CONTACT_PHONE: dict[str, Any] = {
    "type": "string",
    "title": 'a phone number: E.164 ("+34612345678") or 7 to 15 national digits',
    "pattern": r"^(?:\+[1-9][0-9]{6,14}|[0-9]{7,15})$",
}
E164_PHONE: dict[str, Any] = {
    "type": "string",
    "title": 'an E.164 phone number ("+34612345678")',
    "pattern": r"^\+[1-9][0-9]{6,14}$",
}
ORDER_ID: dict[str, Any] = {
    "type": "string",
    "title": 'an order id such as "12345" or "A-1002"',
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
}
REASON_CODE: dict[str, Any] = {
    "type": "string",
    "title": 'a reason code such as "order_support" (letters, digits, "_", "." or "-")',
    "pattern": r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
}
LANGUAGE: dict[str, Any] = {
    "type": "string",
    "title": 'a BCP-47 language tag ("es", "en-GB")',
    "pattern": r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$",
}
DATE_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
USER_ID: dict[str, Any] = {
    "type": "string",
    "title": "the end user's id (single line)",
    "minLength": 1,
    "maxLength": 256,
    "pattern": SINGLE_LINE,
}
SESSION_ID: dict[str, Any] = {
    "type": "string",
    "title": "a session id (1-128 of [A-Za-z0-9._:-])",
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
}
MAX_TRANSCRIPT_TURNS = 50
TRANSCRIPT: dict[str, Any] = {
    "type": "array",
    "title": "the conversation's latest turns, oldest first, as role/text pairs",
    "maxItems": MAX_TRANSCRIPT_TURNS,
    "items": {
        "type": "object",
        "properties": {
            "role": {
                "type": "string",
                "title": "one of user, agent, human",
                "enum": ["user", "agent", "human"],
            },
            "text": {"type": "string", "minLength": 1, "maxLength": 4000},
        },
        "required": ["role", "text"],
        "additionalProperties": False,
    },
}
ENTITIES: dict[str, Any] = {
    "type": "object",
    "title": "the session's slots (product, order id, email...): data for a human, as stored",
}
HTTPS_URL: dict[str, Any] = {
    "type": "string",
    "title": "an https URL",
    "maxLength": 2048,
    "pattern": r"^https://[^\s/?#]+[^\s]*$",
}


HANDOVER_CONTEXT: dict[str, dict[str, Any]] = {
    "transcript": TRANSCRIPT,
    "entities": ENTITIES,
    "userId": USER_ID,
    "sessionId": SESSION_ID,
}
"""What create_ticket and handoff_human carry for the human who takes over (the orchestrator
fills them in when a turn escalates: services/orchestrator/escalation.py)."""


def _text(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _object(
    action_type: str,
    description: str,
    properties: dict[str, dict[str, Any]],
    required: list[str],
) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"urn:metaagent:action:{action_type}",
        "title": action_type,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """One action type: its params schema and what it implies.

    `money_fields` are normalised to two-decimal strings and `text_fields` accept a number
    from the model (size 43 -> "43"); both before the schema is checked. `future_fields` are
    date-times that must lie after the validation's `now`.
    """

    type: str
    schema: Mapping[str, Any]
    moves_money: bool
    needs_confirmation: bool
    money_fields: tuple[str, ...] = ()
    text_fields: tuple[str, ...] = ()
    future_fields: tuple[str, ...] = ()

    @property
    def integer_fields(self) -> tuple[str, ...]:
        properties: Mapping[str, Mapping[str, Any]] = self.schema["properties"]
        return tuple(name for name, sub in properties.items() if sub.get("type") == "integer")

    @property
    def currency_field(self) -> str | None:
        return "currency" if "currency" in self.schema["properties"] else None


def _specs() -> dict[str, ActionSpec]:
    specs = [
        ActionSpec(
            type="create_order",
            schema=_object(
                "create_order",
                "Create an order for one catalogue product (moves money: needs the customer's "
                "explicit confirmation of that purchase).",
                {
                    "productId": PRODUCT_ID,
                    "quantity": QUANTITY,
                    "unitPrice": MONEY,
                    "currency": CURRENCY,
                    "size": SIZE,
                    "shippingAddress": ADDRESS,
                    "email": EMAIL,
                    "phone": CONTACT_PHONE,
                },
                ["productId", "quantity", "unitPrice", "currency"],
            ),
            moves_money=True,
            needs_confirmation=True,
            money_fields=("unitPrice",),
            text_fields=("size",),
        ),
        ActionSpec(
            type="payment_link",
            schema=_object(
                "payment_link",
                "Send the customer a payment link (moves money: needs the customer's explicit "
                "confirmation; equals the orders' total when proposed with create_order).",
                {
                    "amount": MONEY,
                    "currency": CURRENCY,
                    "email": EMAIL,
                    "phone": CONTACT_PHONE,
                },
                ["amount", "currency"],
            ),
            moves_money=True,
            needs_confirmation=True,
            money_fields=("amount",),
        ),
        ActionSpec(
            type="schedule_post",
            schema=_object(
                "schedule_post",
                "Schedule a post on one of the tenant's social channels.",
                {
                    "channel": {
                        "type": "string",
                        "title": "one of instagram, facebook, whatsapp, x, tiktok, linkedin",
                        "enum": ["instagram", "facebook", "whatsapp", "x", "tiktok", "linkedin"],
                    },
                    "text": _text(2200),
                    "publishAt": DATE_TIME,
                    "mediaUrls": {"type": "array", "items": HTTPS_URL, "maxItems": 10},
                },
                ["channel", "text", "publishAt"],
            ),
            moves_money=False,
            needs_confirmation=False,
            future_fields=("publishAt",),
        ),
        ActionSpec(
            type="generate_video",
            schema=_object(
                "generate_video",
                "Generate a short video from a script (video agent).",
                {
                    "script": _text(4000),
                    "aspectRatio": {
                        "type": "string",
                        "title": "one of 16:9, 9:16, 1:1, 4:5",
                        "enum": ["16:9", "9:16", "1:1", "4:5"],
                    },
                    "durationSeconds": {"type": "integer", "minimum": 5, "maximum": 180},
                    "language": LANGUAGE,
                    "productId": PRODUCT_ID,
                },
                ["script", "aspectRatio"],
            ),
            moves_money=False,
            needs_confirmation=False,
        ),
        ActionSpec(
            type="voice_call",
            schema=_object(
                "voice_call",
                "Place an outbound call to the customer (needs the customer's explicit yes; "
                "recording consent is the consent store's, never a parameter).",
                {
                    "phone": E164_PHONE,
                    "purpose": REASON_CODE,
                    "language": LANGUAGE,
                    "scheduledAt": DATE_TIME,
                },
                ["phone", "purpose"],
            ),
            moves_money=False,
            needs_confirmation=True,
            future_fields=("scheduledAt",),
        ),
        ActionSpec(
            type="create_ticket",
            schema=_object(
                "create_ticket",
                "Open a support ticket with the conversation's context (seed case C).",
                {
                    "reason": REASON_CODE,
                    "summary": _text(4000),
                    "orderId": ORDER_ID,
                    "customerText": _text(16000),
                    "language": LANGUAGE,
                    **HANDOVER_CONTEXT,
                },
                ["reason", "summary"],
            ),
            moves_money=False,
            needs_confirmation=False,
            text_fields=("orderId",),
        ),
        ActionSpec(
            type="handoff_human",
            schema=_object(
                "handoff_human",
                "Hand the session over to a human agent with the whole context.",
                {
                    "reason": REASON_CODE,
                    "summary": _text(4000),
                    "orderId": ORDER_ID,
                    "language": LANGUAGE,
                    **HANDOVER_CONTEXT,
                },
                ["reason", "summary"],
            ),
            moves_money=False,
            needs_confirmation=False,
            text_fields=("orderId",),
        ),
    ]
    return {spec.type: spec for spec in specs}


REGISTRY: Mapping[str, ActionSpec] = MappingProxyType(_specs())
"""Every action type the platform knows, by type."""


def spec_for(action_type: str) -> ActionSpec | None:
    return REGISTRY.get(action_type)


# --- the JSON Schema subset --------------------------------------------------------------------


@dataclass(frozen=True)
class ParamError:
    """One schema violation: a JSON pointer into the params ("/quantity", "" for the object)
    and what is wrong, never the offending value."""

    path: str
    message: str


ANNOTATIONS = frozenset({"$schema", "$id", "title", "description"})
ASSERTIONS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "format",
        "items",
        "maxItems",
    }
)
EMAIL_RE = re.compile(
    r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\Z"
)
DATE_TIME_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]{1,9}))?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


def parse_date_time(value: str) -> datetime | None:
    """An RFC 3339 date-time with seconds and a zone ("2026-05-01T10:00:00+02:00", "...Z"),
    as an aware datetime; None when it is not one (no zone, no seconds, 31 February...)."""
    match = DATE_TIME_RE.match(value)
    if not match:
        return None
    text = value
    if match.group(1) and len(match.group(1)) > 6:  # datetime keeps microseconds
        text = value.replace(match.group(1), match.group(1)[:6], 1)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


FORMATS: Mapping[str, tuple[Callable[[str], bool], str]] = MappingProxyType(
    {
        "email": (lambda value: bool(EMAIL_RE.match(value)), "a valid e-mail address"),
        "date-time": (
            lambda value: parse_date_time(value) is not None,
            'an RFC 3339 date-time with seconds and a time zone ("2026-05-01T10:00:00Z")',
        ),
    }
)


def check_schema(schema: Mapping[str, Any], path: str = "#") -> None:
    """Raise ValueError when `schema` uses a keyword or format `schema_errors` does not enforce
    (or additionalProperties other than false): what the validator cannot check must not be in
    a schema."""
    for keyword in schema:
        if keyword not in ANNOTATIONS | ASSERTIONS:
            raise ValueError(f"{path}: unsupported keyword {keyword!r}")
    if "format" in schema and schema["format"] not in FORMATS:
        raise ValueError(f"{path}: unsupported format {schema['format']!r}")
    if schema.get("additionalProperties", False) is not False:
        raise ValueError(f"{path}: additionalProperties must be false")
    if "pattern" in schema:
        _compiled(schema["pattern"])
    for name, sub in schema.get("properties", {}).items():
        check_schema(sub, f"{path}/properties/{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{path}/items")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # ECMA-262 "$" (no multiline) matches only at the very end; Python's also before a final
    # newline, so the closing anchor becomes \Z.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pointer(path: str, name: str | int) -> str:
    text = str(name)
    if not SAFE_NAME.match(text):
        text = "<name>"  # a name the model made up may be anything, even customer text
    return f"{path}/{text.replace('~', '~0').replace('/', '~1')}"


def _is_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if expected == "integer":
        return isinstance(value, int) or value.is_integer()
    return expected == "number"


ARTICLES = {"integer": "an integer", "object": "an object", "array": "an array"}


def schema_errors(schema: Mapping[str, Any], instance: Any, path: str = "") -> list[ParamError]:
    """Every violation of `schema` by `instance`, in schema order (the subset of draft 2020-12
    that `check_schema` admits)."""
    title = schema.get("title")
    expected = schema.get("type")
    if expected and not _is_type(instance, expected):
        what = title if title and expected == "string" else ARTICLES.get(expected, f"a {expected}")
        return [ParamError(path, f"must be {what}")]
    errors: list[ParamError] = []
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(ParamError(path, f"must be {title}" if title else "is not an allowed value"))
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(ParamError(path, f"must be at least {schema['minLength']} characters"))
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(ParamError(path, f"must be at most {schema['maxLength']} characters"))
        if "pattern" in schema and not _compiled(schema["pattern"]).search(instance):
            errors.append(
                ParamError(path, f"must be {title}" if title else "has not the expected form")
            )
        if "format" in schema:
            check, description = FORMATS[schema["format"]]
            if not check(instance):
                errors.append(ParamError(path, f"must be {description}"))
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(ParamError(path, f"must be at least {schema['minimum']}"))
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(ParamError(path, f"must be at most {schema['maximum']}"))
    if isinstance(instance, list):
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(ParamError(path, f"must have at most {schema['maxItems']} items"))
        if "items" in schema:
            for index, item in enumerate(instance):
                errors.extend(schema_errors(schema["items"], item, _pointer(path, index)))
    if isinstance(instance, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in instance:
                errors.append(ParamError(_pointer(path, name), "is required"))
        for name, sub in properties.items():
            if name in instance:
                errors.extend(schema_errors(sub, instance[name], _pointer(path, name)))
        if schema.get("additionalProperties") is False:
            for name in instance:
                if name not in properties:
                    errors.append(ParamError(_pointer(path, name), "is not an allowed property"))
    return errors


for _spec in REGISTRY.values():
    check_schema(_spec.schema)
