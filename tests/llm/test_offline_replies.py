"""Reply templates of the offline responder: placeholders, optional sections, languages."""

from decimal import Decimal

import pytest
from google.protobuf import json_format
from metaagent.common.v1 import tenant_pb2

from services.context.demo import demo_tenant
from services.llm.offline.money import Money, format_money
from services.llm.offline.replies import (
    display,
    fill,
    intent_template,
    reply_language,
    slot_prompt,
)


def test_placeholders_are_filled_and_numbers_written_as_people_write_them() -> None:
    values = {"product": "Kobe 6", "price": 189.99, "stock": 7.0, "total": 379.98000000000002}
    assert fill("{product}: {price}, {stock} left, {total}", values) == (
        "Kobe 6: 189.99, 7 left, 379.98"
    )
    assert display(7.0) == "7"
    assert display("43") == "43"


def test_totals_are_shown_in_full() -> None:
    """A total shown is the amount charged: never cut to six significant digits."""
    assert display(197999.01) == "197999.01"
    assert display(1234567.5) == "1234567.5"
    assert display(59.9) == "59.9"


@pytest.mark.parametrize(
    ("amount", "currency", "spanish", "english"),
    [
        ("14.5", "EUR", "14,50 €", "€14.50"),
        ("0.5", "EUR", "0,50 €", "€0.50"),
        ("1234.5", "EUR", "1234,50 €", "€1,234.50"),
        ("197999.01", "EUR", "197.999,01 €", "€197,999.01"),
        ("1000000", "USD", "1.000.000,00 US$", "$1,000,000.00"),
        ("10.125", "GBP", "10,13 GBP", "£10.13"),
        ("59.9", "chf", "59,90 CHF", "CHF 59.90"),
        ("59.9", "", "59,90", "59.90"),
    ],
)
def test_money_has_two_decimals_in_each_languages_convention(
    amount: str, currency: str, spanish: str, english: str
) -> None:
    assert format_money(Decimal(amount), currency, "es") == spanish
    assert format_money(Decimal(amount), currency, "es-CO") == spanish
    assert format_money(Decimal(amount), currency, "en") == english


def test_money_in_another_language_is_the_amount_and_the_code() -> None:
    assert format_money(Decimal("14.5"), "EUR", "pt") == "14.50 EUR"
    assert format_money(Decimal("-3.2"), "EUR", "en") == "-€3.20"


@pytest.mark.parametrize("amount", [14.5, Decimal("NaN"), Decimal("Infinity")])
def test_money_is_never_made_from_a_float_or_a_non_finite_amount(amount: object) -> None:
    with pytest.raises(ValueError, match="finite Decimal"):
        format_money(amount, "EUR", "es")  # type: ignore[arg-type]


def test_an_amount_beside_its_currency_is_written_as_one() -> None:
    values = {
        "price": Money(Decimal("14.50"), "EUR", "es"),
        "total": Money(Decimal("29.00"), "EUR", "en"),
        "currency": "EUR",
    }
    assert fill("cuesta {price} {currency}", values) == "cuesta 14,50 €"
    assert fill("costs {currency} {total}", values) == "costs €29.00"
    # alone, an amount is its number (the template writes the currency itself)
    assert fill("{price}\u00a0€ ({currency})", values) == "14,50\u00a0€ (EUR)"
    assert fill("[por {total} {currency}]", {**values, "currency": None}) == ""
    assert fill("{total} {currency}", {"total": 29.0, "currency": "EUR"}) == "29 EUR"


def test_an_intent_template_says_which_language_it_is_written_in() -> None:
    intent = tenant_pb2.Intent(name="x", reply_template="Hola", reply_templates={"en": "Hi"})
    assert intent_template(intent, "en", "es") == ("Hi", "en")
    assert intent_template(intent, "es", "es") == ("Hola", "es")
    spanish_only = tenant_pb2.Intent(name="x", reply_template="Hola")
    assert intent_template(spanish_only, "en", "es") == ("Hola", "es")


def test_a_missing_placeholder_outside_sections_leaves_nothing_to_send() -> None:
    assert fill("{product} cuesta {price}", {"product": "Kobe 6"}) is None


def test_optional_sections_and_negated_placeholders() -> None:
    template = "¿Confirmas el pedido[ en talla {size}][{!size} y me dices tu talla]?"
    assert fill(template, {"size": "43"}) == "¿Confirmas el pedido en talla 43?"
    assert fill(template, {}) == "¿Confirmas el pedido y me dices tu talla?"
    nested = "Dime tu talla.[{!size} ¿Cuál?[ Tenemos {options}.]]"
    assert fill(nested, {"options": "38-46"}) == "Dime tu talla. ¿Cuál? Tenemos 38-46."
    assert fill(nested, {}) == "Dime tu talla. ¿Cuál?"
    assert fill(nested, {"size": "43", "options": "38-46"}) == "Dime tu talla."


def test_the_reply_language_is_the_customers_when_the_tenant_has_texts_in_it() -> None:
    tenant = demo_tenant()
    assert reply_language(tenant, "en") == "en"
    assert reply_language(tenant, "es") == "es"
    assert reply_language(tenant, "") == "es"
    assert reply_language(tenant, "fr") == "es"
    spanish_only = tenant_pb2.TenantConfig(
        language="es-CO", intents=[tenant_pb2.Intent(name="x", reply_template="hola")]
    )
    assert reply_language(spanish_only, "en") == "es"


def test_intent_templates_fall_back_to_the_default_language() -> None:
    intent = tenant_pb2.Intent(
        name="x", reply_template="Hola", reply_templates={"en-GB": "Hello", "pt": ""}
    )
    assert intent_template(intent, "es", "es")[0] == "Hola"
    assert intent_template(intent, "en", "es")[0] == "Hello"
    assert intent_template(intent, "pt", "es")[0] == "Hola"
    english_default = tenant_pb2.Intent(name="y", reply_templates={"en": "Hi"})
    assert intent_template(english_default, "en", "en")[0] == "Hi"


def test_slot_prompts_come_from_the_tenant_then_the_platform() -> None:
    tenant = demo_tenant()
    assert slot_prompt(tenant, "order_id", "ask", "es").startswith("Siento el problema.")
    assert slot_prompt(tenant, "order_id", "ask", "en").startswith("Sorry about that.")
    assert slot_prompt(tenant, "phone", "ask", "es") == "¿En qué teléfono podemos contactarte?"
    assert slot_prompt(tenant, "phone", "ask", "en") == "Which phone number can we reach you on?"
    assert "{value}" in slot_prompt(tenant, "quantity", "invalid", "es")
    custom = tenant_pb2.TenantConfig(language="en")
    assert slot_prompt(custom, "loyalty_card", "ask", "en") == (
        "Could you give me this detail: loyalty_card?"
    )
    assert slot_prompt(custom, "loyalty_card", "invalid", "en").startswith("I can't use")
    assert "loyalty_card" not in custom.slot_prompts  # looking up never adds an entry


def test_the_demo_configuration_round_trips_as_the_json_an_admin_would_put() -> None:
    tenant = demo_tenant()
    body = json_format.MessageToDict(tenant)
    checkout = next(i for i in body["intents"] if i["name"] == "checkout_flow")
    assert checkout["requiredSlots"] == ["product"]
    assert checkout["replyTemplates"]["en"].startswith("Great!")
    confirm = next(i for i in body["intents"] if i["name"] == "confirm_purchase")
    assert confirm["follows"] == ["checkout_flow"]
    assert body["slotPrompts"]["size"]["ask"]["en"].startswith("Which size")
    assert json_format.ParseDict(body, tenant_pb2.TenantConfig()) == tenant
