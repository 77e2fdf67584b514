"""Reply texts: the tenant's templates in the reply language, the platform's wording where the
tenant has none, and the small template language they share (see tenant.proto, Intent):
"{slot}" placeholders, "[...]" optional sections and "{!slot}" (only while the slot is unknown).

Money: "{price}" and "{total}" are `Money` values. Next to "{currency}" ("{total} {currency}",
"{currency} {total}") the pair becomes the amount as the text's language writes it ("14,50 €",
"€14.50"; services/llm/offline/money.py); alone, the amount with two decimals ("14,50"), so a
template that writes its own currency ("{price} €") keeps it.
"""

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from metaagent.common.v1 import tenant_pb2

from services.llm.offline.language import primary
from services.llm.offline.money import Money

SECTION = re.compile(r"\[([^\[\]]*)\]")
PLACEHOLDER = re.compile(r"\{(!?)([a-z_]+)\}")
MONEY_PAIR = re.compile(r"\{(price|total)\}[ \t]*\{currency\}|\{currency\}[ \t]*\{(price|total)\}")
"""An amount placeholder beside the currency's: written together, as the language does."""

# The platform's wording for asking a slot, per language ("ask" when missing, "invalid" when
# the value cannot be used). Tenants override any of it with TenantConfig.slot_prompts.
BUILT_IN_PROMPTS: dict[str, dict[str, dict[str, str]]] = {
    "product": {
        "ask": {
            "es": "¿Qué producto te interesa? Dime el nombre o el modelo.",
            "en": "Which product are you interested in? Tell me its name or model.",
        },
        "invalid": {
            "es": "Lo siento, {product} está agotado ahora mismo. ¿Te ayudo con otro modelo?",
            "en": "Sorry, {product} is out of stock right now. Can I help you with another one?",
        },
    },
    "size": {
        "ask": {
            "es": "¿En qué talla lo quieres?[ Tenemos {options}.]",
            "en": "Which size would you like?[ We have {options}.]",
        },
        "invalid": {
            "es": "No tenemos {product} en talla {value}.[ Tallas disponibles: {options}.] "
            "¿Cuál prefieres?",
            "en": "We don't have {product} in size {value}.[ Available sizes: {options}.] "
            "Which one would you like?",
        },
    },
    "quantity": {
        "ask": {"es": "¿Cuántas unidades quieres?", "en": "How many would you like?"},
        "invalid": {
            "es": "No puedo preparar {value} unidades[ de {product}][: nos quedan {stock}]. "
            "¿Cuántas quieres?",
            "en": "I can't prepare {value} units[ of {product}][: we have {stock} left]. "
            "How many would you like?",
        },
    },
    "address": {
        "ask": {
            "es": "¿A qué dirección te lo enviamos? Dime calle, número, código postal y ciudad.",
            "en": "What's the delivery address? Street, number, postcode and city, please.",
        },
    },
    "email": {
        "ask": {
            "es": "¿A qué correo electrónico te enviamos la confirmación?",
            "en": "Which email address should we send the confirmation to?",
        },
    },
    "phone": {
        "ask": {
            "es": "¿En qué teléfono podemos contactarte?",
            "en": "Which phone number can we reach you on?",
        },
    },
    "order_id": {
        "ask": {
            "es": "¿Me das el número de pedido? Lo encontrarás en el correo de confirmación.",
            "en": "Could you give me your order number? It's in your confirmation email.",
        },
    },
    "confirmation": {
        "ask": {
            "es": "Te preparo {quantity} \u00d7 {product}[ en talla {size}] por {total} "
            "{currency}.[{!size} ¿En qué talla?[ Tenemos {options}.]] ¿Confirmas el pedido?",
            "en": "I'll prepare {quantity} \u00d7 {product}[ in size {size}] for {total} "
            "{currency}.[{!size} Which size?[ We have {options}.]] Shall I confirm the order?",
        },
    },
}
GENERIC_ASK = {
    "es": "¿Me puedes dar este dato: {slot}?",
    "en": "Could you give me this detail: {slot}?",
}
GENERIC_INVALID = {
    "es": "No puedo usar «{value}». ",
    "en": "I can't use \u201c{value}\u201d. ",
}
FALLBACK = {
    "es": "No estoy seguro de haberte entendido. ¿Puedes contarme un poco más?",
    "en": "I am not sure I understood. Could you tell me a little more?",
}
DECLINED = {
    "es": "De acuerdo, no hago ningún pedido por ahora. ¿Te ayudo con algo más?",
    "en": "All right, I won't place any order for now. Can I help you with anything else?",
}
HANDOFF_WITHOUT_SLOT = {
    "es": "Sin problema. He abierto una incidencia con lo que me has contado y te paso con una "
    "persona del equipo, que podrá localizar tu pedido y ya tiene toda la conversación: no "
    "tendrás que repetir nada.",
    "en": "No problem. I've opened a ticket with what you've told me and I'm passing you to a "
    "person on our team, who can look up your order and already has the whole conversation: "
    "you won't need to repeat anything.",
}
"""The customer cannot give the order number: the ticket and the hand-over go ahead without it."""
TICKET_WITHOUT_SLOT = {
    "es": "Sin problema. He abierto una incidencia con lo que me has contado; el equipo "
    "localizará tu pedido y te escribirá.",
    "en": "No problem. I've opened a ticket with what you've told me; our team will look up "
    "your order and get back to you.",
}
NO_PRICE = {
    "es": "Ahora mismo no tengo el precio[ de {product}], así que no puedo preparar el pedido. "
    "Te paso con una persona del equipo, que ya tiene toda la conversación.",
    "en": "I don't have the price[ of {product}] right now, so I can't prepare the order. I'm "
    "passing you to a person on our team, who already has the whole conversation.",
}
NO_PRICE_NO_HANDOFF = {
    "es": "Ahora mismo no tengo el precio[ de {product}], así que no puedo preparar el pedido. "
    "¿Lo intentamos de nuevo en un rato?",
    "en": "I don't have the price[ of {product}] right now, so I can't prepare the order. Shall "
    "we try again in a little while?",
}
HANDOFF = {
    "es": "Te paso con una persona del equipo, que ya tiene toda la conversación: no tendrás "
    "que repetir nada.",
    "en": "I'm passing you to a person on our team, who already has the whole conversation: "
    "you won't need to repeat anything.",
}


def display(value: object) -> str:
    """Values as people write them: 7, not 7.0; 379.98, not 379.97999999999996; 197999.01 in
    full (never cut to six significant digits: a total shown is the amount charged). Money
    is its amount with two decimals in its language's separators."""
    if isinstance(value, Money):
        return value.number()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(round(value, 2)) if abs(value) < 1e15 else str(value)
    return str(value)


def _money_pair(match: re.Match[str], values: Mapping[str, Any]) -> str:
    """ "{total} {currency}" as one amount ("14,50 €"); unchanged when the amount is not Money."""
    amount = values[match.group(1) or match.group(2)]
    return str(amount) if isinstance(amount, Money) else match.group(0)


def _known(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) not in (None, "", [], {})


def fill(template: str, values: Mapping[str, Any]) -> str | None:
    """`template` with its sections resolved and placeholders filled, or None when a
    placeholder outside any optional section is unknown."""

    def section(match: re.Match[str]) -> str:
        body = match.group(1)
        for negated, name in PLACEHOLDER.findall(body):
            if bool(negated) == _known(values, name):
                return ""
        return body

    text = template
    while True:
        resolved = SECTION.sub(section, text)
        if resolved == text:
            break
        text = resolved
    if any(not neg and not _known(values, name) for neg, name in PLACEHOLDER.findall(text)):
        return None
    text = MONEY_PAIR.sub(lambda m: _money_pair(m, values), text)
    text = PLACEHOLDER.sub(lambda m: "" if m.group(1) else display(values[m.group(2)]), text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r"\s+([.,;:!?])", r"\1", text).strip()


def in_language(texts: Mapping[str, str], language: str) -> str:
    """The text for `language` (compared by primary subtag), or ""."""
    for key, text in texts.items():
        if primary(key) == language and text:
            return text
    return ""


def tenant_languages(tenant: tenant_pb2.TenantConfig) -> set[str]:
    """The languages the tenant has texts in: its default plus any template's language."""
    languages = {primary(tenant.language or "es")}
    for intent in tenant.intents:
        languages |= {primary(key) for key, text in intent.reply_templates.items() if text}
    for prompt in tenant.slot_prompts.values():
        languages |= {primary(key) for key, text in prompt.ask.items() if text}
    return languages


def reply_language(tenant: tenant_pb2.TenantConfig, wanted: str) -> str:
    """`wanted` when the tenant has texts in it, otherwise the tenant's default language."""
    default = primary(tenant.language or "es")
    return wanted if wanted and wanted in tenant_languages(tenant) else default


def intent_template(
    intent: tenant_pb2.Intent, language: str, default_language: str
) -> tuple[str, str]:
    """The intent's reply template in `language`, else in the tenant's default language; and
    the language it is written in (what its amounts follow)."""
    if language == default_language and intent.reply_template:
        return intent.reply_template, language
    found = in_language(intent.reply_templates, language)
    if found:
        return found, language
    fallback = intent.reply_template or in_language(intent.reply_templates, default_language)
    return fallback, default_language


def slot_prompt(tenant: tenant_pb2.TenantConfig, slot: str, kind: str, language: str) -> str:
    """How to ask for `slot` ("ask") or say its value is unusable ("invalid") in `language`:
    the tenant's text, else the platform's (Spanish or English), else the tenant's text in its
    default language. An "invalid" without any text is the generic remark plus the "ask"."""
    default = primary(tenant.language or "es")
    configured = tenant.slot_prompts.get(slot)
    texts = getattr(configured, kind) if configured is not None else {}
    built_in = BUILT_IN_PROMPTS.get(slot, {}).get(kind, {})
    for candidate in (
        in_language(texts, language),
        built_in.get(language, ""),
        in_language(texts, default),
        built_in.get(default, ""),
    ):
        if candidate:
            return candidate
    if kind == "invalid":
        remark = GENERIC_INVALID.get(language, GENERIC_INVALID["en"])
        return remark + slot_prompt(tenant, slot, "ask", language)
    generic = GENERIC_ASK.get(language, GENERIC_ASK["en"])
    return generic.replace("{slot}", slot)


def platform_text(texts: Mapping[str, str], language: str) -> str:
    return texts.get(language) or texts["en"]
