"""Reply templates of the offline responder: placeholders, optional sections, languages."""

from google.protobuf import json_format
from metaagent.common.v1 import tenant_pb2

from services.context.demo import demo_tenant
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
    assert intent_template(intent, "es", "es") == "Hola"
    assert intent_template(intent, "en", "es") == "Hello"
    assert intent_template(intent, "pt", "es") == "Hola"
    english_default = tenant_pb2.Intent(name="y", reply_templates={"en": "Hi"})
    assert intent_template(english_default, "en", "en") == "Hi"


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
