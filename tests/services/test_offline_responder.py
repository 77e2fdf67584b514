"""The offline responder: tenant intents, templates, remembered products, slots, allowed
actions. (Extractors, languages and whole conversations: tests/llm/test_slots.py and
tests/llm/test_offline_*.py.)"""

from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.context.demo import demo_tenant
from services.llm.offline import OfflineResponder, similarity

KOBE: dict[str, Any] = {
    "id": "kobe-6",
    "name": "Kobe 6",
    "price": 189.99,
    "currency": "EUR",
    "stock": 7.0,
}
RESPONDER = OfflineResponder(intent_threshold=0.34)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def _prompt(
    text: str,
    *,
    product_doc: bool = True,
    last_intent: str = "",
    entities: dict[str, Any] | None = None,
    tenant: tenant_pb2.TenantConfig | None = None,
) -> pb.Prompt:
    turns = []
    if last_intent:
        turns.append(
            conversation_pb2.ConversationTurn(
                role=conversation_pb2.TURN_ROLE_AGENT,
                text="...",
                metadata=conversation_pb2.TurnMetadata(intent=last_intent),
            )
        )
    documents = (
        [pb.RetrievedDocument(doc_id="kobe-6", text="Kobe 6 ...", score=0.4, fields=_struct(KOBE))]
        if product_doc
        else []
    )
    return pb.Prompt(
        user_text=text,
        tenant=tenant or demo_tenant(),
        documents=documents,
        recent_turns=turns,
        entities=_struct(entities or {}),
    )


def test_similarity_forgives_accents_case_and_inflection() -> None:
    assert similarity("Quiero COMPRAR la zapatilla", "quiero comprar la zapatilla") == 1.0
    assert similarity("información", "informacion del producto") > 0.5
    assert similarity("hola", "mi pedido no llegó") == 0.0


def test_a_checkout_fills_the_template_and_remembers_the_product() -> None:
    generation = RESPONDER.generate(
        _prompt("Quiero comprar la zapatilla Kobe, la dejé en el carrito.")
    )
    assert generation.intent == "checkout_flow"
    assert "Kobe 6 cuesta 189,99 € y nos quedan 7 unidades" in generation.reply_text
    assert generation.actions == []
    assert generation.model == "offline"
    assert json_format.MessageToDict(generation.entities)["product"]["id"] == "kobe-6"


def test_a_confirmation_after_a_checkout_orders_the_remembered_product() -> None:
    prompt = _prompt(
        "Sí, confirmo",
        product_doc=False,
        last_intent="checkout_flow",
        entities={"product": KOBE, "awaiting": "confirmation"},
    )
    generation = RESPONDER.generate(prompt)
    assert generation.intent == "confirm_purchase"
    assert [a.type for a in generation.actions] == ["create_order", "payment_link"]
    order = generation.actions[0].params
    assert (order["productId"], order["quantity"], order["currency"]) == ("kobe-6", 1, "EUR")
    assert generation.actions[1].params["amount"] == 189.99


def test_a_bare_yes_without_a_checkout_confirms_nothing() -> None:
    generation = RESPONDER.generate(_prompt("Sí", product_doc=False))
    assert generation.intent != "confirm_purchase"
    assert generation.actions == []


def test_a_checkout_of_a_product_without_sizes_does_not_ask_for_one() -> None:
    generation = RESPONDER.generate(_prompt("Quiero comprar la zapatilla Kobe"))
    assert generation.reply_text.endswith("¿Confirmas el pedido para enviarte el enlace de pago?")


def test_a_confirmation_without_the_size_a_product_needs_asks_for_it() -> None:
    sized = {**KOBE, "sizes": [42.0, 43.0]}
    prompt = _prompt(
        "Sí",
        product_doc=False,
        last_intent="checkout_flow",
        entities={"product": sized, "awaiting": "confirmation"},
    )
    generation = RESPONDER.generate(prompt)
    assert generation.intent == "confirm_purchase"
    assert generation.actions == []
    assert generation.reply_text == "¿En qué talla la quieres? Tenemos 42, 43."
    assert generation.entities["awaiting"] == "size"


def test_only_actions_the_tenant_allows_are_proposed() -> None:
    tenant = demo_tenant()
    del tenant.allowed_actions[:]
    tenant.allowed_actions.append("create_ticket")
    generation = RESPONDER.generate(_prompt("Mi pedido 12345 no llegó", tenant=tenant))
    assert generation.intent == "order_support"
    assert [a.type for a in generation.actions] == ["create_ticket"]


def test_a_missing_order_without_its_number_asks_for_it_and_proposes_nothing() -> None:
    generation = RESPONDER.generate(_prompt("Mi pedido no llegó", product_doc=False))
    assert generation.intent == "order_support"
    assert generation.actions == []
    assert "número de pedido" in generation.reply_text
    assert generation.entities["awaiting"] == "order_id"


def test_with_no_intent_it_answers_from_documents_with_low_confidence() -> None:
    prompt = _prompt("¿Hacen envíos a Canarias?")
    generation = RESPONDER.generate(prompt)
    assert generation.intent == "knowledge_answer"
    assert generation.reply_text == "Kobe 6 ..."
    assert generation.confidence < 0.6


def test_with_nothing_to_go_on_it_says_so_in_the_tenant_language() -> None:
    spanish = RESPONDER.generate(_prompt("xyzzy", product_doc=False))
    assert spanish.intent == "unknown"
    assert spanish.confidence == 0.0
    assert spanish.reply_text.startswith("No estoy seguro")
    english = tenant_pb2.TenantConfig(tenant_id="t", language="en")
    assert RESPONDER.generate(
        _prompt("xyzzy", product_doc=False, tenant=english)
    ).reply_text.startswith("I am not sure")


def _confirm(product: dict[str, Any], text: str = "Sí, confirmo", **kwargs: Any) -> pb.Generation:
    entities = {"product": product, "awaiting": "confirmation", **kwargs}
    prompt = _prompt(text, product_doc=False, last_intent="checkout_flow", entities=entities)
    return RESPONDER.generate(prompt)


def test_a_yes_after_a_checkout_that_did_not_ask_to_confirm_orders_nothing() -> None:
    # no "awaiting" (a language model's turn): the summary to confirm, never an order
    prompt = _prompt(
        "Sí", product_doc=False, last_intent="checkout_flow", entities={"product": KOBE}
    )
    generation = RESPONDER.generate(prompt)
    assert generation.actions == []
    assert generation.intent == "checkout_flow"
    assert generation.reply_text.startswith("Te preparo 1 \u00d7 Kobe 6 por 189,99 €.")
    assert generation.entities["awaiting"] == "confirmation"


def test_amounts_are_decimals_from_the_catalogue_price_to_the_cent() -> None:
    odd = {**KOBE, "price": 10.125, "stock": 50.0}
    generation = _confirm(odd, "sí", quantity=3, confirming={"product": "kobe-6", "quantity": 3})
    order, link = (json_format.MessageToDict(a.params) for a in generation.actions)
    assert order["unitPrice"] == 10.13  # Decimal("10.125") to the cent, half up
    assert link["amount"] == 30.39  # 10.13 x 3, not round(10.125 * 3, 2) == 30.38
    assert "por 30,39 €" in generation.reply_text  # the total shown is the amount charged
    big = {**KOBE, "price": 1999.99, "stock": 100.0}
    generation = _confirm(big, "sí", quantity=99, confirming={"product": "kobe-6", "quantity": 99})
    assert json_format.MessageToDict(generation.actions[1].params)["amount"] == 197999.01
    assert "por 197.999,01 €" in generation.reply_text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Quiero comprar la zapatilla Kobe", "Kobe 6 cuesta 14,50 € y nos quedan"),
        ("I want to buy the Kobe sneakers", "Kobe 6 costs €14.50 and we have"),
    ],
    ids=["es", "en"],
)
def test_prices_are_written_with_two_decimals_as_the_customers_language_does(
    text: str, shown: str
) -> None:
    """14.5 in the catalogue is "14,50 €" in Spanish and "€14.50" in English, never "14.5 EUR"."""
    cheap = {**KOBE, "price": 14.5}
    prompt = _prompt(text, product_doc=False)
    prompt.documents.append(
        pb.RetrievedDocument(doc_id="kobe-6", text="Kobe 6", score=0.4, fields=_struct(cheap))
    )
    generation = RESPONDER.generate(prompt)
    assert generation.intent == "checkout_flow"
    assert shown in generation.reply_text
    assert "14.5 " not in generation.reply_text and "EUR" not in generation.reply_text


@pytest.mark.parametrize(
    ("language", "summary"),
    [
        ("es", "Te preparo 3 \u00d7 Kobe 6 por 4331,13 €."),
        ("en", "I'll prepare 3 \u00d7 Kobe 6 for €4,331.13."),
    ],
    ids=["es", "en"],
)
def test_a_total_is_the_decimal_amount_charged_in_the_languages_convention(
    language: str, summary: str
) -> None:
    big = {**KOBE, "price": 1443.71, "stock": 10.0}  # 3 x 1443.71 = 4331.13 exactly
    prompt = _prompt(
        "3",
        product_doc=False,
        last_intent="checkout_flow",
        entities={"product": big, "language": language, "awaiting": "quantity"},
    )
    generation = RESPONDER.generate(prompt)
    assert generation.reply_text.startswith(summary)


def test_a_template_in_the_default_language_shows_amounts_in_that_language() -> None:
    """A tenant whose checkout has only its Spanish template answers an English customer in
    Spanish: the amount follows the text ("14,50 €"), not the customer ("€14.50")."""
    tenant = demo_tenant()
    del tenant.intents[0].reply_templates["en"]
    cheap = {**KOBE, "price": 14.5}
    prompt = _prompt("I want to buy the Kobe sneakers", product_doc=False, tenant=tenant)
    prompt.documents.append(
        pb.RetrievedDocument(doc_id="kobe-6", text="Kobe 6", score=0.4, fields=_struct(cheap))
    )
    generation = RESPONDER.generate(prompt)
    assert generation.intent == "checkout_flow"
    assert "Kobe 6 cuesta 14,50 € y nos quedan" in generation.reply_text


def test_without_a_price_no_money_moves_and_a_person_takes_over() -> None:
    for price in (None, "", "gratis", 0, -5.0):
        unpriced = {k: v for k, v in KOBE.items() if k != "price"}
        if price is not None:
            unpriced["price"] = price
        tenant = demo_tenant()
        tenant.intents[1].reply_template = "Hecho: te envío el enlace de pago."  # no {total}
        prompt = _prompt(
            "Sí, confirmo",
            product_doc=False,
            last_intent="checkout_flow",
            entities={"product": unpriced, "awaiting": "confirmation"},
            tenant=tenant,
        )
        generation = RESPONDER.generate(prompt)
        assert [a.type for a in generation.actions] == ["handoff_human"], price
        assert generation.actions[0].params["reason"] == "price_unavailable"
        assert generation.reply_text.startswith("Ahora mismo no tengo el precio de Kobe 6")
        prompt.tenant.allowed_actions.remove("handoff_human")
        generation = RESPONDER.generate(prompt)
        assert generation.actions == [], price
        assert "no puedo preparar el pedido" in generation.reply_text


def test_a_confirmation_with_a_models_product_name_orders_only_a_retrieved_match() -> None:
    pegasus = {**KOBE, "id": "pegasus-41", "name": "Pegasus 41", "price": 139.99}
    documents = [
        pb.RetrievedDocument(doc_id=p["id"], text=p["name"], score=0.4, fields=_struct(p))
        for p in (pegasus, KOBE)
    ]
    prompt = _prompt(
        "Sí, confirmo",
        product_doc=False,
        last_intent="checkout_flow",
        entities={"product": "Kobe 6", "awaiting": "confirmation"},
    )
    prompt.documents.extend(documents)
    generation = RESPONDER.generate(prompt)
    assert generation.actions[0].params["productId"] == "kobe-6"  # matched by name
    del prompt.documents[1]  # only the Pegasus retrieved: never ordered in its place
    generation = RESPONDER.generate(prompt)
    assert generation.actions == []
    assert generation.reply_text.startswith("¿Qué producto te interesa?")


def test_a_models_order_id_entity_is_known() -> None:
    prompt = _prompt(
        "quiero hablar con una persona",
        product_doc=False,
        last_intent="order_support",
        entities={"orderId": "A-1002"},
    )
    generation = RESPONDER.generate(prompt)
    assert generation.actions[0].params["orderId"] == "A-1002"


@pytest.mark.parametrize(
    ("text", "language", "summary"),
    [
        (
            "43",
            "es",
            "Te preparo 1 \u00d7 Kobe 6 en talla 43 por 189,99 €. ¿Confirmas el pedido?",
        ),
        (
            "size 43",
            "en",
            "I'll prepare 1 \u00d7 Kobe 6 in size 43 for €189.99. Shall I place the order?",
        ),
    ],
    ids=["es", "en"],
)
def test_the_slot_a_yes_lacked_gets_the_summary_not_the_order(
    text: str, language: str, summary: str
) -> None:
    # the last reply was confirm_purchase asking for the size: no confirmation was asked, so
    # the now complete order is shown to confirm (the orchestrator would drop it otherwise)
    entities = {
        "product": KOBE,
        "awaiting": "size",
        "language": language,
        "confirming": {"product": "kobe-6", "quantity": 1, "size": ""},
    }
    prompt = _prompt(text, product_doc=False, last_intent="confirm_purchase", entities=entities)
    generation = RESPONDER.generate(prompt)
    assert generation.actions == []
    assert generation.intent == "checkout_flow"
    assert generation.reply_text == summary
    stored = json_format.MessageToDict(generation.entities)
    assert stored["awaiting"] == "confirmation"
    assert stored["confirming"] == {"product": "kobe-6", "quantity": 1, "size": "43"}
