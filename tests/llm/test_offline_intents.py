"""Intent matching of the offline responder: the demo tenant's intents in Spanish and English."""

import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.context.demo import demo_tenant
from services.llm.offline import match_intent, similarity

THRESHOLD = 0.34


def _prompt(text: str, last_intent: str = "") -> pb.Prompt:
    turns = (
        [
            conversation_pb2.ConversationTurn(
                role=conversation_pb2.TURN_ROLE_AGENT,
                metadata=conversation_pb2.TurnMetadata(intent=last_intent),
            )
        ]
        if last_intent
        else []
    )
    return pb.Prompt(user_text=text, tenant=demo_tenant(), recent_turns=turns)


def test_similarity_ignores_greetings_and_fillers() -> None:
    assert similarity("hola, gracias", "mi pedido no ha llegado todavía") == 0.0
    assert similarity("no, todavía no", "mi pedido no ha llegado todavía") == 0.0
    assert similarity("Hola, quiero comprar la zapatilla", "quiero comprar la zapatilla") == 1.0


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Hola, dejé unas zapatillas Kobe en el carrito", "checkout_flow"),
        ("Quiero comprar la zapatilla Kobe, la dejé en el carrito.", "checkout_flow"),
        ("quiero terminar la compra", "checkout_flow"),
        ("Hi, I left the Kobe sneakers in my cart", "checkout_flow"),
        ("I want to buy the Kobe sneakers", "checkout_flow"),
        ("No me ha llegado el pedido 12345 y ya han pasado dos semanas", "order_support"),
        ("¿Dónde está mi pedido?", "order_support"),
        ("My order #12345 never arrived", "order_support"),
        ("where is my order?", "order_support"),
        ("¿Cuánto cuesta la Kobe?", "product_inquiry"),
        ("what sizes do you have?", "product_inquiry"),
        ("mi dirección es Calle Mayor 5", "shipping_details"),
        ("my email is ana@x.com", "shipping_details"),
        ("quiero hablar con una persona", "human_handoff"),
        ("I want to talk to a human", "human_handoff"),
    ],
)
def test_demo_intents_in_both_languages(text: str, intent: str) -> None:
    match = match_intent(_prompt(text), THRESHOLD)
    assert match is not None and match.intent.name == intent


def test_a_follow_up_is_considered_only_right_after_the_intent_it_follows() -> None:
    assert match_intent(_prompt("sí, confirmo"), THRESHOLD) is None
    match = match_intent(_prompt("sí, confirmo", last_intent="checkout_flow"), THRESHOLD)
    assert match is not None and match.intent.name == "confirm_purchase"
    after = _prompt("yes please", last_intent="product_inquiry")
    assert match_intent(after, THRESHOLD) is None


def test_excluded_intents_never_match() -> None:
    prompt = _prompt("sí, confirmo", last_intent="checkout_flow")
    assert match_intent(prompt, THRESHOLD, exclude=frozenset({"confirm_purchase"})) is None


@pytest.mark.parametrize("text", ["xyzzy", "hola", "gracias", "43"])
def test_nothing_to_go_on_matches_nothing(text: str) -> None:
    assert match_intent(_prompt(text), THRESHOLD) is None
