"""Language detection, confirmations, refusals and requests for a person (offline responder)."""

import pytest

from services.llm.offline.language import (
    detect_language,
    does_not_have,
    is_confirmation,
    is_refusal,
    primary,
    wants_human,
)


@pytest.mark.parametrize(
    "text",
    [
        "Hola, dejé unas zapatillas Kobe en el carrito",
        "No me ha llegado el pedido 12345 y ya han pasado dos semanas",
        "sí, la talla 43",
        "¿Hacen envíos a Canarias?",
        "quiero comprarla en talla 43",
        "dejé unas zapatillas en el carrito",
        "mi pedido no llego",  # no accents at all
        "¡genial!",
    ],
)
def test_spanish(text: str) -> None:
    assert detect_language(text) == "es"


@pytest.mark.parametrize(
    "text",
    [
        "Hi, I left the Kobe sneakers in my cart",
        "My order #12345 never arrived",
        "yes, size 10",
        "I want to talk to a human",
        "where is my order?",
        "I haven\u2019t received my package",
    ],
)
def test_english(text: str) -> None:
    assert detect_language(text) == "en"


@pytest.mark.parametrize("text", ["43", "ok", "ana@x.com", "Kobe", "", "12345", "no"])
def test_no_clue_is_no_answer(text: str) -> None:
    assert detect_language(text) == ""


def test_primary_subtag() -> None:
    assert primary("es-CO") == "es"
    assert primary("EN_gb") == "en"
    assert primary("es") == "es"


@pytest.mark.parametrize(
    "text",
    [
        "sí",
        "Sí, confirmo",
        "si",
        "si, la 43",
        "si quiero",
        "sí, la talla 43",
        "vale",
        "dale, envíame el enlace",
        "de acuerdo",
        "quiero comprarla en talla 43",
        "me la llevo",
        "la quiero en la 44",
        "yes",
        "yes, size 10",
        "Yeah sure",
        "go ahead",
        "I'll take them",
        "ok",
    ],
)
def test_explicit_confirmations(text: str) -> None:
    assert is_confirmation(text)


@pytest.mark.parametrize(
    "text",
    [
        "no",
        "no, gracias",
        "todavía no",
        "sí, pero no ahora",
        "si tienen la 43 me la llevo",  # "si" = "if"
        "si hay stock",
        "¿qué tallas hay?",
        "not yet",
        "don't order it",
        "cancel",
        "espera",
        "hola",
        "talla 43",
        "",
    ],
)
def test_not_confirmations(text: str) -> None:
    assert not is_confirmation(text)


@pytest.mark.parametrize(
    "text",
    [
        "no",
        "no gracias",
        "No, gracias.",
        "mejor no",
        "no, déjalo",
        "no, todavía no",
        "not now",
        "not yet, thanks",
        "cancela",
        "cancela el pedido",
        "sí claro, pero no ahora",
        "no thanks",
        "I don\u2019t want it",
    ],
)
def test_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "sí",
        "talla 43",
        "mi pedido anterior 12345 no llegó",  # a "no" inside another matter
        "no me ha llegado el pedido",
        "no, mejor talla 44",
        "no, ¿cuánto cuesta?",
        "no lo tengo a mano",
        "",
    ],
)
def test_not_refusals(text: str) -> None:
    assert not is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "no lo tengo a mano",
        "no sé cuál es",
        "no me acuerdo",
        "no tengo el número",
        "ni idea",
        "I don't have it",
        "I can\u2019t find it",
    ],
)
def test_the_customer_does_not_have_what_was_asked(text: str) -> None:
    assert does_not_have(text)


@pytest.mark.parametrize("text", ["no me ha llegado", "sí", "12345", "no quiero", ""])
def test_not_a_missing_answer(text: str) -> None:
    assert not does_not_have(text)


@pytest.mark.parametrize(
    "text",
    [
        "quiero hablar con una persona",
        "Quiero hablar con un humano",
        "¿me pasas con un agente?",
        "pásame con alguien de verdad",
        "prefiero que me atienda una persona",
        "I want to talk to a human",
        "can I speak to someone?",
        "connect me with an agent please",
        "real person please",
    ],
)
def test_explicit_requests_for_a_person(text: str) -> None:
    assert wants_human(text)


@pytest.mark.parametrize(
    "text",
    [
        "no quiero hablar con nadie",
        "I don't want to talk to a human",
        "ya han pasado dos semanas y ninguna persona me responde",
        "mi pedido no llegó",
        "hola",
    ],
)
def test_not_requests_for_a_person(text: str) -> None:
    assert not wants_human(text)
