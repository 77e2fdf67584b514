"""The seed's cases A and C, in Spanish and English, through the offline responder.

Each conversation is driven like the orchestrator drives it: the prompt is built with
`build_prompt` from the demo tenant, the session (recent turns whose agent turns carry
metadata.intent, and the remembered entities) and the retrieval hits (demo catalogue entries
made into documents by the retrieval service's own `product_document`); after each turn the
generation's entities are merged into the session's as the orchestrator merges them.
"""

from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import json_format
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb
from metaagent.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

from services.context.demo import demo_tenant
from services.llm.offline import OfflineResponder
from services.orchestrator.turn import build_prompt
from services.retrieval.catalogue import product_document
from services.retrieval.demo import demo_documents, demo_products

RESPONDER = OfflineResponder(intent_threshold=0.34)
DOCUMENTS = {d.doc_id: d for d in demo_documents()} | {
    d.doc_id: d for d in (product_document(p) for p in demo_products())
}
KOBE = "product-kobe-6-protro"
PEGASUS = "product-pegasus-41"
SHIRT = "product-camiseta-tecnica"
BACKPACK = "product-mochila-urbana"


@dataclass
class Conversation:
    tenant: tenant_pb2.TenantConfig = field(default_factory=demo_tenant)
    session: conversation_pb2.SessionContext = field(
        default_factory=lambda: conversation_pb2.SessionContext(session_id="s-1")
    )
    prompts: list[pb.Prompt] = field(default_factory=list)

    def say(self, text: str, *retrieved: str) -> pb.Generation:
        """One customer turn; `retrieved` are the ids retrieval returns, best first."""
        hits = [
            retrieval_pb.SearchHit(document=DOCUMENTS[doc_id], score=0.6 - 0.05 * rank)
            for rank, doc_id in enumerate(retrieved)
        ]
        prompt = build_prompt(self.tenant, self.session, hits, text)
        self.prompts.append(prompt)
        generation = RESPONDER.generate(prompt)
        assert generation.model == "offline"
        self.session.recent_turns.extend(
            [
                conversation_pb2.ConversationTurn(role=conversation_pb2.TURN_ROLE_USER, text=text),
                conversation_pb2.ConversationTurn(
                    role=conversation_pb2.TURN_ROLE_AGENT,
                    text=generation.reply_text,
                    actions=generation.actions,
                    metadata=conversation_pb2.TurnMetadata(
                        intent=generation.intent,
                        confidence=generation.confidence,
                        model=generation.model,
                    ),
                ),
            ]
        )
        self.session.short_context.last_intent = generation.intent
        self.session.short_context.entities.update(dict(generation.entities.items()))
        return generation

    def model_turn(
        self, text: str, reply: str, intent: str, entities: dict[str, Any], model: str = "gpt-5"
    ) -> None:
        """A turn a language model answered: its entities (the contract's entities_json, e.g.
        the product as a name) merged over the session's, as the orchestrator merges them."""
        self.session.recent_turns.extend(
            [
                conversation_pb2.ConversationTurn(role=conversation_pb2.TURN_ROLE_USER, text=text),
                conversation_pb2.ConversationTurn(
                    role=conversation_pb2.TURN_ROLE_AGENT,
                    text=reply,
                    metadata=conversation_pb2.TurnMetadata(
                        intent=intent, confidence=0.9, model=model
                    ),
                ),
            ]
        )
        self.session.short_context.last_intent = intent
        self.session.short_context.entities.update(entities)

    @property
    def entities(self) -> dict[str, Any]:
        return json_format.MessageToDict(self.session.short_context.entities)


def _params(generation: pb.Generation) -> dict[str, dict[str, Any]]:
    return {a.type: json_format.MessageToDict(a.params) for a in generation.actions}


# --- case A: cart recovery -> purchase -> create_order + payment link ---------------------


def test_case_a_in_spanish_orders_within_two_customer_turns() -> None:
    chat = Conversation()
    first = chat.say("Hola, dejé unas zapatillas Kobe en el carrito", KOBE, PEGASUS)
    assert first.intent == "checkout_flow"
    assert first.confidence >= 0.6
    assert "Zapatilla Kobe 6 Protro 'Grinch' cuesta 189,99 €" in first.reply_text
    assert "nos quedan 7 unidades" in first.reply_text
    assert "me dices tu talla" in first.reply_text
    assert first.actions == []  # never on the first mention of a product
    assert chat.entities["product"]["id"] == KOBE
    assert chat.entities["language"] == "es"

    # retrieval for "sí, la talla 43" ranks the Pegasus first: the remembered Kobe still wins
    second = chat.say("sí, la talla 43", PEGASUS, KOBE)
    assert second.intent == "confirm_purchase"
    assert [a.type for a in second.actions] == ["create_order", "payment_link"]
    params = _params(second)
    assert params["create_order"] == {
        "productId": KOBE,
        "quantity": 1,
        "size": "43",
        "unitPrice": 189.99,
        "currency": "EUR",
    }
    assert params["payment_link"] == {"amount": 189.99, "currency": "EUR"}
    assert "talla 43" in second.reply_text
    assert "¿A qué dirección" in second.reply_text


def test_case_a_in_english_orders_within_two_customer_turns() -> None:
    chat = Conversation()
    first = chat.say("Hi, I left the Kobe sneakers in my cart", KOBE)
    assert first.intent == "checkout_flow"
    assert first.reply_text.startswith("Great! Zapatilla Kobe 6 Protro 'Grinch' costs €189.99")
    assert "we have 7 left" in first.reply_text
    assert first.actions == []
    second = chat.say("yes, size 10", "faq-payment")
    assert second.intent == "confirm_purchase"
    assert second.reply_text.startswith("Done: order for 1 \u00d7 Zapatilla Kobe")
    params = _params(second)
    assert params["create_order"]["size"] == "10"  # a US-style size is kept as given
    assert params["payment_link"] == {"amount": 189.99, "currency": "EUR"}


def test_case_a_with_quiero_comprarla_and_two_pairs() -> None:
    """The checkout showed the price of one pair: a yes for two gets the total to confirm
    first (379.98 is charged only once the customer has seen it)."""
    chat = Conversation()
    chat.say("Quiero comprar la zapatilla Kobe, la dejé en el carrito.", KOBE)
    second = chat.say("quiero comprarla en talla 43, dos pares", KOBE)
    assert second.intent == "checkout_flow" and second.actions == []
    assert second.reply_text == (
        "Te preparo 2 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 43 por 379,98 €. "
        "¿Confirmas el pedido?"
    )
    third = chat.say("sí", KOBE)
    assert third.intent == "confirm_purchase"
    params = _params(third)
    assert (params["create_order"]["quantity"], params["create_order"]["size"]) == (2, "43")
    assert params["payment_link"]["amount"] == 379.98
    assert "2 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 43 por 379,98 €" in (
        third.reply_text
    )


@pytest.mark.parametrize(
    ("first", "yes", "ask", "size", "summary", "again", "done"),
    [
        (
            "Quiero comprar la zapatilla Kobe, la dejé en el carrito.",
            "Sí, confirmo",
            "¿En qué talla la quieres? Tenemos 38-46.",
            "43",
            "Te preparo 1 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 43 por 189,99 €. "
            "¿Confirmas el pedido?",
            "sí",
            "Hecho: pedido de 1 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 43",
        ),
        (
            "I want to buy the Kobe sneakers, I left them in my cart.",
            "Yes, I confirm",
            "Which size would you like? We have 38-46.",
            "10",
            "I'll prepare 1 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' in size 10 for €189.99. "
            "Shall I place the order?",
            "yes",
            "Done: order for 1 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' in size 10",
        ),
    ],
    ids=["es", "en"],
)
def test_a_yes_given_before_the_size_gets_the_summary_once_the_size_is_known(
    first: str, yes: str, ask: str, size: str, summary: str, again: str, done: str
) -> None:
    """The yes came before the size: the reply after it asked for the size, not for a
    confirmation, so the size alone orders nothing (the orchestrator would drop the order and
    the customer would read "done"). The complete summary is confirmed first."""
    chat = Conversation()
    chat.say(first, KOBE)
    asked = chat.say(yes, "faq-payment")
    assert asked.intent == "confirm_purchase"
    assert asked.actions == []
    assert asked.reply_text == ask
    assert chat.entities["awaiting"] == "size"
    shown = chat.say(size, PEGASUS)
    assert shown.intent == "checkout_flow"
    assert shown.actions == []
    assert shown.reply_text == summary
    assert chat.entities["awaiting"] == "confirmation"
    assert chat.entities["confirming"] == {"product": KOBE, "quantity": 1, "size": size}
    ordered = chat.say(again, "faq-payment")
    assert ordered.intent == "confirm_purchase"
    assert [a.type for a in ordered.actions] == ["create_order", "payment_link"]
    assert ordered.reply_text.startswith(done)
    params = _params(ordered)
    assert (params["create_order"]["productId"], params["create_order"]["size"]) == (KOBE, size)
    assert params["payment_link"] == {"amount": 189.99, "currency": "EUR"}


@pytest.mark.parametrize(
    ("first", "yes", "size"),
    [
        (
            "Quiero comprar la zapatilla Kobe, la dejé en el carrito.",
            "Sí, confirmo, en talla 43",
            "43",
        ),
        (
            "I want to buy the Kobe sneakers, I left them in my cart.",
            "Yes, I confirm, size 10",
            "10",
        ),
    ],
    ids=["es", "en"],
)
def test_a_yes_that_carries_the_missing_size_orders_at_once(
    first: str, yes: str, size: str
) -> None:
    chat = Conversation()
    chat.say(first, KOBE)
    ordered = chat.say(yes, "faq-payment")
    assert ordered.intent == "confirm_purchase"
    assert _params(ordered)["create_order"]["size"] == size


def test_a_size_without_a_yes_gets_the_summary_to_confirm() -> None:
    chat = Conversation()
    chat.say("Quiero comprar la zapatilla Kobe", KOBE)
    summary = chat.say("talla 44", KOBE)
    assert summary.intent == "checkout_flow"
    assert summary.actions == []
    assert summary.reply_text == (
        "Te preparo 1 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 44 por 189,99 €. "
        "¿Confirmas el pedido?"
    )
    done = chat.say("sí", "faq-payment")
    assert [a.type for a in done.actions] == ["create_order", "payment_link"]


def test_a_size_the_product_does_not_come_in_is_asked_again() -> None:
    chat = Conversation()
    first = chat.say("Quiero comprar las Kobe en talla 42,5", KOBE)
    assert first.intent == "checkout_flow"
    assert first.reply_text == (
        "No tenemos Zapatilla Kobe 6 Protro 'Grinch' en talla 42.5. Tallas disponibles: "
        "38-46. ¿Cuál prefieres?"
    )
    assert "size" not in chat.entities
    # "vale" answers the size question, it does not confirm an order never summarised
    again = chat.say("vale, pues la 44, dos pares", KOBE)
    assert again.intent == "checkout_flow" and again.actions == []
    assert "2 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 44 por 379,98 €" in (
        again.reply_text
    )
    done = chat.say("sí", "faq-payment")
    assert _params(done)["payment_link"]["amount"] == 379.98


def test_more_units_than_in_stock_are_asked_again_and_the_new_quantity_reconfirmed() -> None:
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    too_many = chat.say("sí, 9 pares en la 43", KOBE)
    assert too_many.intent == "checkout_flow" and too_many.actions == []
    assert "nos quedan 7" in too_many.reply_text
    reconfirm = chat.say("vale, 7", KOBE)
    assert reconfirm.intent == "checkout_flow" and reconfirm.actions == []
    assert "7 \u00d7" in reconfirm.reply_text and "1329,93 €" in reconfirm.reply_text
    done = chat.say("sí", KOBE)
    assert _params(done)["create_order"]["quantity"] == 7


def test_changing_the_product_while_giving_the_size_needs_a_new_confirmation() -> None:
    chat = Conversation()
    chat.say("Hola, dejé unas zapatillas Kobe en el carrito", KOBE)
    chat.say("Sí, confirmo", "faq-payment")
    switched = chat.say("mejor las Pegasus en la 42", PEGASUS, KOBE)
    assert switched.intent == "checkout_flow" and switched.actions == []
    assert "Pegasus 41 en talla 42 por 139,99 €" in switched.reply_text
    done = chat.say("sí", "faq-payment")
    assert _params(done)["create_order"]["productId"] == PEGASUS


def test_a_yes_that_switches_product_gets_the_summary_of_the_new_one_first() -> None:
    chat = Conversation()
    chat.say("Hola, dejé unas zapatillas Kobe en el carrito", KOBE)
    switched = chat.say("sí, pero mejor las Pegasus en la 42", PEGASUS, KOBE)
    assert switched.intent == "checkout_flow" and switched.actions == []
    assert "Pegasus 41 en talla 42 por 139,99 €" in switched.reply_text
    assert _params(chat.say("sí", PEGASUS))["create_order"]["productId"] == PEGASUS


def test_apparel_sizes_and_a_sold_out_product() -> None:
    chat = Conversation()
    sold_out = chat.say("quiero comprar la mochila urbana", BACKPACK)
    assert sold_out.reply_text.startswith("Lo siento, Mochila urbana 20 L está agotado")
    assert sold_out.actions == []
    chat.say("quiero comprar la camiseta técnica", SHIRT, KOBE)
    summary = chat.say("sí, talla L, 2 unidades", SHIRT)
    assert summary.actions == [] and "por 59,90 €" in summary.reply_text
    done = chat.say("sí", SHIRT)
    params = _params(done)
    assert (params["create_order"]["productId"], params["create_order"]["size"]) == (SHIRT, "L")
    assert params["payment_link"]["amount"] == 59.9


def test_a_no_orders_nothing_and_a_later_yes_confirms_nothing() -> None:
    chat = Conversation()
    chat.say("Quiero comprar la zapatilla Kobe", KOBE)
    declined = chat.say("no, todavía no", KOBE)
    assert declined.intent == "declined" and declined.actions == []
    assert declined.reply_text.startswith("De acuerdo, no hago ningún pedido")
    assert chat.say("sí", KOBE).actions == []


def test_a_conditional_si_is_not_a_confirmation() -> None:
    chat = Conversation()
    chat.say("Quiero comprar la zapatilla Kobe", KOBE)
    conditional = chat.say("si tienen la 43 me la llevo", KOBE)
    assert conditional.intent == "checkout_flow" and conditional.actions == []
    assert "en talla 43" in conditional.reply_text


def test_the_order_is_placed_once() -> None:
    chat = Conversation()
    chat.say("Quiero comprar la zapatilla Kobe", KOBE)
    assert chat.say("sí, talla 43", KOBE).actions
    assert chat.say("sí", KOBE).actions == []
    assert chat.say("sí, confirmo", "faq-payment").actions == []


def test_address_and_email_are_collected_and_travel_with_the_next_order() -> None:
    chat = Conversation()
    chat.say("Hola, dejé unas zapatillas Kobe en el carrito", KOBE)
    chat.say("sí, la talla 43", KOBE)
    address = chat.say("Calle Mayor 5, 3º B, 28013 Madrid", "faq-shipping")
    assert address.intent == "shipping_details"
    assert address.reply_text == "¿Y a qué correo te enviamos la confirmación?"
    email = chat.say("ana.garcia+kobe@gmail.com", "faq-shipping")
    assert email.intent == "shipping_details"
    assert email.reply_text == (
        "Perfecto: enviaremos el pedido a Calle Mayor 5, 3º B, 28013 Madrid y te escribiremos "
        "a ana.garcia+kobe@gmail.com."
    )
    assert {"address", "email", "size", "product"} <= chat.entities.keys()
    offer = chat.say("quiero comprar las Pegasus", PEGASUS)
    assert "en talla 43" in offer.reply_text  # the size of the last order
    summary = chat.say("sí, en la 42", PEGASUS)  # another size: seen before it is ordered
    assert summary.actions == [] and "Pegasus 41 en talla 42 por 139,99 €" in (summary.reply_text)
    order = chat.say("sí", PEGASUS)
    assert _params(order)["create_order"]["size"] == "42"
    params = _params(order)
    assert params["create_order"]["shippingAddress"] == "Calle Mayor 5, 3º B, 28013 Madrid"
    assert params["payment_link"]["email"] == "ana.garcia+kobe@gmail.com"
    assert "¿A qué dirección" not in order.reply_text


# --- case C: a missing order -> ticket + handoff with the context -------------------------


def test_case_c_in_spanish_with_the_order_number() -> None:
    chat = Conversation()
    text = "No me ha llegado el pedido 12345 y ya han pasado dos semanas"
    generation = chat.say(text, "faq-shipping")
    assert generation.intent == "order_support"
    assert [a.type for a in generation.actions] == ["create_ticket", "handoff_human"]
    params = _params(generation)
    assert params["create_ticket"] == {
        "reason": "order_support",
        "orderId": "12345",
        "summary": text,
        "customerText": text,
        "language": "es",
    }
    assert params["handoff_human"] == {
        "reason": "order_support",
        "orderId": "12345",
        "summary": text,
    }
    assert "pedido 12345" in generation.reply_text
    assert "no tendrás que repetir nada" in generation.reply_text


def test_case_c_in_english_with_the_order_number() -> None:
    generation = Conversation().say("My order #12345 never arrived", "faq-shipping")
    assert generation.intent == "order_support"
    assert _params(generation)["create_ticket"]["orderId"] == "12345"
    assert _params(generation)["create_ticket"]["language"] == "en"
    assert generation.reply_text.startswith("I'm sorry about order 12345.")


def test_case_c_asks_for_the_order_number_first() -> None:
    chat = Conversation()
    asked = chat.say("Mi pedido no llegó", "faq-shipping")
    assert asked.intent == "order_support"
    assert asked.actions == []
    assert "número de pedido" in asked.reply_text
    escalated = chat.say("es el 12345", "faq-shipping")
    assert escalated.intent == "order_support"
    params = _params(escalated)
    assert params["create_ticket"]["orderId"] == "12345"
    assert params["create_ticket"]["customerText"] == "Mi pedido no llegó\nes el 12345"
    assert params["handoff_human"]["summary"] == "Mi pedido no llegó / es el 12345"


def test_case_c_in_english_asks_for_the_order_number_first() -> None:
    chat = Conversation()
    asked = chat.say("My order never arrived", "faq-shipping")
    assert asked.actions == []
    assert "order number" in asked.reply_text
    escalated = chat.say("It's A-1002", "faq-shipping")
    assert _params(escalated)["handoff_human"]["orderId"] == "A-1002"


def test_the_session_summary_is_the_ticket_summary_when_there_is_one() -> None:
    chat = Conversation()
    chat.session.short_context.summary = "Cliente con pedido 12345 retrasado; pidió seguimiento."
    generation = chat.say("mi pedido 12345 no ha llegado", "faq-shipping")
    assert _params(generation)["create_ticket"]["summary"] == chat.session.short_context.summary


def test_a_question_while_the_order_number_is_pending_is_answered() -> None:
    chat = Conversation()
    chat.say("Mi pedido no llegó", "faq-shipping")
    answer = chat.say("¿Hacen envíos a Canarias?", "faq-shipping")
    assert answer.intent == "knowledge_answer"
    assert answer.reply_text.startswith("Envíos:")


def test_an_explicit_request_for_a_person_hands_over_directly() -> None:
    spanish = Conversation().say("quiero hablar con una persona", "faq-shipping")
    assert spanish.intent == "human_handoff"
    assert [a.type for a in spanish.actions] == ["handoff_human"]
    assert _params(spanish)["handoff_human"]["reason"] == "customer_request"
    english = Conversation().say("I want to talk to a human")
    assert english.intent == "human_handoff"
    assert english.reply_text.startswith("Of course, I'm passing you to a person")


def test_asking_for_a_person_mid_flow_carries_what_is_known() -> None:
    chat = Conversation()
    chat.say("My order #A-1002 never arrived", "faq-shipping")
    handoff = chat.say("can I speak to a real person?")
    assert handoff.intent == "human_handoff"
    assert _params(handoff)["handoff_human"]["orderId"] == "A-1002"


def test_a_tenant_without_a_handoff_intent_still_hands_over_when_allowed() -> None:
    tenant = demo_tenant()
    del tenant.intents[-1]  # human_handoff
    generation = Conversation(tenant=tenant).say("pásame con un humano")
    assert generation.intent == "human_handoff"
    assert [a.type for a in generation.actions] == ["handoff_human"]
    assert generation.reply_text.startswith("Te paso con una persona")
    tenant.allowed_actions.remove("handoff_human")
    assert Conversation(tenant=tenant).say("pásame con un humano").actions == []


# --- languages -----------------------------------------------------------------------------


def test_the_language_follows_the_customer_and_bare_answers_keep_it() -> None:
    chat = Conversation()
    chat.say("My order never arrived", "faq-shipping")
    assert chat.entities["language"] == "en"
    escalated = chat.say("12345", "faq-shipping")
    assert escalated.reply_text.startswith("I'm sorry about order 12345.")


def test_a_tenant_without_english_templates_answers_in_its_default_language() -> None:
    tenant = demo_tenant()
    for intent in tenant.intents:
        intent.reply_templates.clear()
    tenant.slot_prompts.clear()
    generation = Conversation(tenant=tenant).say("Hi, I left the Kobe sneakers in my cart", KOBE)
    assert generation.intent == "checkout_flow"
    assert generation.reply_text.startswith("¡Genial!")
    asked = Conversation(tenant=tenant).say("My order never arrived", "faq-shipping")
    assert asked.reply_text.startswith("¿Me das el número de pedido?")


def test_the_same_prompt_always_gets_the_same_generation() -> None:
    chat = Conversation()
    chat.say("Hola, dejé unas zapatillas Kobe en el carrito", KOBE)
    chat.say("sí, la talla 43", KOBE)
    for prompt in chat.prompts:
        assert RESPONDER.generate(prompt) == RESPONDER.generate(prompt)


# --- degraded turns after a language model's turn ----------------------------------------------

KOBE_FIELDS = json_format.MessageToDict(DOCUMENTS[KOBE].metadata.fields)


def _after_a_model_checkout(product: object, reply: str = "") -> Conversation:
    chat = Conversation()
    chat.model_turn(
        "Hola, dejé unas Kobe en el carrito",
        reply or "¡Genial! La Kobe 6 cuesta 189,99 EUR. ¿Confirmas el pedido y me dices tu talla?",
        "checkout_flow",
        {"product": product, "language": "es"},
    )
    return chat


def test_a_degraded_yes_after_a_model_turn_orders_the_product_the_model_talked_about() -> None:
    """The model's contract remembers the product as a name; retrieval for "sí, la 43" ranks
    the Pegasus first. The Kobe (matched by name) is summarised, never the Pegasus ordered."""
    chat = _after_a_model_checkout("Zapatilla Kobe 6 Protro")
    summary = chat.say("sí, la 43", PEGASUS, KOBE)
    assert summary.intent == "checkout_flow" and summary.actions == []
    assert summary.reply_text == (
        "Te preparo 1 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 43 por 189,99 €. "
        "¿Confirmas el pedido?"
    )
    assert chat.entities["product"]["id"] == KOBE  # the name is now the catalogue entry
    done = chat.say("sí", PEGASUS)
    assert _params(done)["create_order"]["productId"] == KOBE
    assert _params(done)["payment_link"]["amount"] == 189.99


def test_a_degraded_turn_never_orders_a_retrieved_product_it_did_not_show() -> None:
    # the remembered name matches nothing retrieved: ask which product, order nothing
    chat = _after_a_model_checkout("Zapatilla Kobe 6 Protro")
    for text in ("sí, la 43", "43", "sí"):
        generation = chat.say(text, PEGASUS)
        assert generation.actions == [], text
        assert "Pegasus" not in generation.reply_text
    assert generation.reply_text == "¿Qué producto te interesa? Dime el nombre o el modelo."


def test_a_yes_to_a_model_turn_that_asked_something_else_orders_nothing() -> None:
    chat = Conversation()
    chat.session.short_context.entities.update({"product": KOBE_FIELDS, "size": "43"})
    chat.model_turn(
        "quiero comprar las Kobe",
        "Cuestan 189,99. ¿Quieres que te cuente la política de devoluciones?",
        "checkout_flow",
        {"product": KOBE_FIELDS},
    )
    answer = chat.say("sí", KOBE)
    assert answer.actions == []
    assert answer.intent == "checkout_flow" and "¿Confirmas el pedido?" in answer.reply_text
    assert _params(chat.say("sí", KOBE))["create_order"]["productId"] == KOBE


def test_an_awaiting_left_by_an_offline_turn_is_stale_after_a_model_turn() -> None:
    """The model's entities are merged over ours: our "awaiting": "confirmation" survives its
    turn, and must not turn a yes to the model's question into an order."""
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    chat.say("talla 43", KOBE)
    assert chat.entities["awaiting"] == "confirmation"
    chat.model_turn(
        "¿y tenéis envío gratis?",
        "Sí, a partir de 50 EUR. ¿Quieres que te avise de las ofertas?",
        "product_inquiry",
        {"language": "es"},
    )
    chat.model_turn(
        "vale, vuelvo a la compra",
        "Perfecto. ¿Te cuento cómo cuidar las zapatillas?",
        "checkout_flow",
        {},
    )
    assert chat.entities["awaiting"] == "confirmation"  # stale
    answer = chat.say("sí", KOBE)
    assert answer.actions == [] and answer.intent == "checkout_flow"


# --- a yes that changes the deal, and amounts or sizes that cannot be ordered -----------------


def test_a_yes_that_changes_the_quantity_shows_the_new_total_before_ordering() -> None:
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    summary = chat.say("talla 44, 2 pares", KOBE)
    assert "2 \u00d7" in summary.reply_text and "379,98 €" in summary.reply_text
    changed = chat.say("sí, pero mejor 5 pares", KOBE)
    assert changed.intent == "checkout_flow" and changed.actions == []
    assert changed.reply_text == (
        "Te preparo 5 \u00d7 Zapatilla Kobe 6 Protro 'Grinch' en talla 44 por 949,95 €. "
        "¿Confirmas el pedido?"
    )
    done = chat.say("sí", KOBE)
    assert _params(done)["create_order"]["quantity"] == 5
    assert _params(done)["payment_link"]["amount"] == 949.95


def test_a_yes_that_changes_the_size_shows_the_summary_again() -> None:
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    chat.say("talla 44", KOBE)
    changed = chat.say("sí, pero en la 45", KOBE)
    assert changed.intent == "checkout_flow" and changed.actions == []
    assert "en talla 45 por 189,99 €" in changed.reply_text
    assert _params(chat.say("sí", KOBE))["create_order"]["size"] == "45"


def test_a_quantity_given_on_the_first_message_is_confirmed_with_its_total() -> None:
    # the checkout reply shows the price of one pair; the yes gets the total of two first
    chat = Conversation()
    chat.say("quiero comprar 2 pares de las kobe", KOBE)
    summary = chat.say("sí, la 43", KOBE)
    assert summary.actions == [] and "2 \u00d7" in summary.reply_text
    assert "379,98 €" in summary.reply_text
    assert _params(chat.say("sí", KOBE))["payment_link"]["amount"] == 379.98


def test_quantities_out_of_range_are_asked_again_never_ordered_as_one() -> None:
    for text, value in (("sí, quiero 100 pares en la 43", 100), ("sí, en la 43, 0 pares", 0)):
        chat = Conversation()
        chat.say("quiero comprar las kobe", KOBE)
        asked = chat.say(text, KOBE)
        assert asked.actions == [], text
        assert asked.reply_text.startswith(f"No puedo preparar {value} unidades"), text
        assert chat.entities["awaiting"] == "quantity"
        assert "quantity" not in chat.entities


def test_half_sizes_are_read_as_halves_and_refused_when_not_in_the_list() -> None:
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    asked = chat.say("sí, talla 42 y medio", KOBE)
    assert asked.actions == []
    assert asked.reply_text == (
        "No tenemos Zapatilla Kobe 6 Protro 'Grinch' en talla 42.5. Tallas disponibles: "
        "38-46. ¿Cuál prefieres?"
    )
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    assert chat.say("calzo un 42 1/2", KOBE).actions == []


def test_a_bare_number_no_listed_size_can_be_is_asked_again() -> None:
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    asked = chat.say("sí, 2", KOBE)
    assert asked.actions == []
    assert asked.reply_text.startswith("No tenemos Zapatilla Kobe 6 Protro 'Grinch' en talla 2.")


# --- case C: order numbers in context, no number at hand, and a no that is not a refusal -------


def test_case_c_with_the_number_given_as_el_numero_es() -> None:
    text = "Hola, hice un pedido hace dos semanas y no me ha llegado, el número es 12345"
    generation = Conversation().say(text, "faq-shipping")
    assert generation.intent == "order_support"
    assert [a.type for a in generation.actions] == ["create_ticket", "handoff_human"]
    assert _params(generation)["create_ticket"]["orderId"] == "12345"


def test_case_c_in_english_with_its_12345() -> None:
    generation = Conversation().say("where's my order? it's 12345", "faq-shipping")
    assert generation.intent == "order_support"
    assert _params(generation)["handoff_human"]["orderId"] == "12345"


def test_case_c_without_the_order_number_at_hand_hands_over_with_what_is_known() -> None:
    chat = Conversation()
    asked = chat.say("mi paquete no ha llegado", "faq-shipping")
    assert chat.entities["awaiting"] == "order_id" and asked.actions == []
    handed = chat.say("no lo tengo a mano", "faq-shipping")
    assert handed.intent == "order_support"
    assert [a.type for a in handed.actions] == ["create_ticket", "handoff_human"]
    params = _params(handed)
    assert "orderId" not in params["create_ticket"]
    assert params["create_ticket"]["customerText"] == "mi paquete no ha llegado\nno lo tengo a mano"
    assert params["handoff_human"]["summary"] == "mi paquete no ha llegado / no lo tengo a mano"
    assert handed.reply_text.startswith("Sin problema. He abierto una incidencia")
    english = Conversation()
    english.say("My order never arrived", "faq-shipping")
    handed = english.say("I don't have it, sorry", "faq-shipping")
    assert handed.intent == "order_support"
    assert handed.reply_text.startswith("No problem. I've opened a ticket")


def test_a_missing_order_after_a_checkout_is_not_a_refusal() -> None:
    chat = Conversation()
    chat.say("quiero comprar las kobe", KOBE)
    generation = chat.say("mi pedido anterior 12345 no llegó", KOBE)
    assert generation.intent == "order_support"
    assert _params(generation)["create_ticket"]["orderId"] == "12345"
    for refusal in ("no gracias", "mejor no", "no, déjalo"):
        chat = Conversation()
        chat.say("quiero comprar las kobe", KOBE)
        assert chat.say(refusal, KOBE).intent == "declined", refusal
