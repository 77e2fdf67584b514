"""The offline responder: tenant intents, templates, remembered products, slots, allowed
actions. (Extractors, languages and whole conversations: tests/llm/test_slots.py and
tests/llm/test_offline_*.py.)"""

from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.context.demo import demo_tenant
from services.llm.offline import OfflineResponder, similarity

KOBE = {"id": "kobe-6", "name": "Kobe 6", "price": 189.99, "currency": "EUR", "stock": 7.0}
RESPONDER = OfflineResponder(intent_threshold=0.34)


def _struct(values: dict) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def _prompt(
    text: str,
    *,
    product_doc: bool = True,
    last_intent: str = "",
    entities=None,
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
    assert "Kobe 6 cuesta 189.99 EUR y nos quedan 7 unidades" in generation.reply_text
    assert generation.actions == []
    assert generation.model == "offline"
    assert generation.entities["product"]["id"] == "kobe-6"


def test_a_confirmation_after_a_checkout_orders_the_remembered_product() -> None:
    prompt = _prompt(
        "Sí, confirmo", product_doc=False, last_intent="checkout_flow", entities={"product": KOBE}
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
        "Sí", product_doc=False, last_intent="checkout_flow", entities={"product": sized}
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
