"""Slot extractors of the offline responder: one value each, awkward inputs, nothing -> None."""

from typing import Any

import pytest

from services.llm.offline.slots import (
    Issue,
    extract_address,
    extract_all,
    extract_email,
    extract_order_id,
    extract_phone,
    extract_quantity,
    extract_size,
    format_sizes,
    match_product,
    resolve_product,
    size_fits,
    slot_issues,
)

KOBE: dict[str, Any] = {
    "id": "product-kobe-6-protro",
    "name": "Zapatilla Kobe 6 Protro 'Grinch'",
    "price": 189.99,
    "currency": "EUR",
    "stock": 7.0,
    "sizes": [38.0, 39.0, 40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0],
}
PEGASUS: dict[str, Any] = {
    "id": "product-pegasus-41",
    "name": "Zapatilla de running Pegasus 41",
    "price": 139.99,
    "currency": "EUR",
    "stock": 12.0,
    "sizes": [39.0, 40.0, 41.0, 42.0, 43.0, 44.0, 45.0],
}
SHIRT: dict[str, Any] = {
    "id": "product-camiseta-tecnica",
    "name": "Camiseta técnica de entrenamiento",
    "price": 29.95,
    "currency": "EUR",
    "stock": 40.0,
    "sizes": ["S", "M", "L", "XL", "XXL"],
}
BACKPACK: dict[str, Any] = {
    "id": "product-mochila-urbana",
    "name": "Mochila urbana 20 L",
    "stock": 0.0,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quiero 2", 2),
        ("Quiero DOS", 2),
        ("dos pares", 2),
        ("ponme tres unidades", 3),
        ("x2", 2),
        ("talla 42 x2", 2),
        ("2x por favor", 2),
        ("un par", 2),
        ("un par de camisetas", 2),
        ("un par de zapatillas", 1),
        ("a couple", 2),
        ("a couple of shirts", 2),
        ("a pair of sneakers", 1),
        ("I want two", 2),
        ("three units please", 3),
        ("me llevo 2 en talla 43", 2),
        ("quiero solo una", 1),
        ("quiero dos zapatillas kobe", 2),
        ("una docena", 12),
    ],
)
def test_quantity_in_digits_and_words_in_both_languages(text: str, expected: int) -> None:
    assert extract_quantity(text, product_names=[KOBE["name"]]) == expected


@pytest.mark.parametrize(
    "text",
    [
        "189,99 €",
        "cuesta 189.99 EUR",
        "€ 30",
        "talla 42",
        "sí, la talla 43",
        "calzo un 44",
        "dos semanas",
        "hace un par de semanas",
        "ya han pasado 3 días",
        "quiero la Kobe 6",
        "quiero la Pegasus 41",
        "pedido 12345",
        "mi teléfono es 612 345 678",
        "Calle Mayor 5, 28013 Madrid",
        "quiero un descuento",
        "un 10 % de descuento",
        "hola",
        "",
    ],
)
def test_numbers_that_are_not_quantities(text: str) -> None:
    assert extract_quantity(text, product_names=[KOBE["name"], PEGASUS["name"]]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("quiero 150", 150), ("quiero 0", 0), ("quiero 100 pares", 100), ("cien pares", 100)],
)
def test_quantities_out_of_range_are_returned_for_validation_to_refuse(
    text: str, expected: int
) -> None:
    """Never dropped (an order would default to 1): returned, refused by slot_issues, asked."""
    assert extract_quantity(text) == expected
    known = {"product": KOBE, "size": "43", "quantity": expected}
    assert slot_issues(["product", "size", "quantity"], known) == [
        Issue("quantity", "invalid", expected)
    ]


def test_a_yes_with_an_out_of_range_quantity_and_a_bare_size() -> None:
    found = extract_all("sí, quiero 100 pares en la 43", expected={"size"}, products=[KOBE])
    assert found == {"quantity": 100, "size": "43"}
    found = extract_all("sí, en la 43, 0 pares", expected={"size"}, products=[KOBE])
    assert found == {"quantity": 0, "size": "43"}


def test_a_bare_number_is_a_quantity_only_when_asked_for() -> None:
    assert extract_quantity("3") is None
    assert extract_quantity("3", expected=True) == 3
    assert extract_quantity("vale, 7", expected=True) == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("talla 42", "42"),
        ("sí, la talla 43", "43"),
        ("Talla: 44", "44"),
        ("talla 42,5", "42.5"),
        ("talla 42.5", "42.5"),
        ("talla 42½", "42.5"),
        ("size 42.5", "42.5"),
        ("calzo un 44", "44"),
        ("uso el número 41", "41"),
        ("size 10 US", "10 US"),
        ("size 10.5 us", "10.5 US"),
        ("in a 10 US", "10 US"),
        ("UK 8", "8 UK"),
        ("44 EU", "44"),
        ("yes, size 10", "10"),
        ("talla M", "M"),
        ("size xl", "XL"),
        ("talla 2xl", "XXL"),
        ("talla 30", "30"),
    ],
)
def test_sizes_eu_with_halves_apparel_and_other_systems(text: str, expected: str) -> None:
    assert extract_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("calzo un 42 y medio", "42.5"),
        ("talla 42 1/2", "42.5"),
        ("talla 42 ½", "42.5"),
        ("talla 42 y media", "42.5"),
        ("size 9 and a half", "9.5"),
        ("size 9 and a half US", "9.5 US"),
        ("UK 8 1/2", "8.5 UK"),
    ],
)
def test_half_sizes_in_words_and_fractions_are_never_truncated(text: str, expected: str) -> None:
    assert extract_size(text) == expected
    assert extract_quantity(text) is None  # the "1/2" is no quantity either


def test_half_sizes_are_compared_with_the_product_list_like_any_size() -> None:
    assert extract_size("la 42 y medio", expected=True) == "42.5"
    assert not size_fits("42.5", KOBE["sizes"])  # the Kobe comes in whole sizes: asked again
    assert size_fits("42.5", [42.0, 42.5, 43.0])
    assert size_fits("9.5", KOBE["sizes"])  # like "10": a US size next to EU ones


def test_a_size_in_another_system_fits_only_when_a_listed_size_can_be_it() -> None:
    sizes = KOBE["sizes"]  # EU 38-46: US/UK 4 to 15
    assert size_fits("10", sizes) and size_fits("10 US", sizes) and size_fits("8 UK", sizes)
    assert size_fits("4", sizes) and size_fits("15 US", sizes)
    assert not size_fits("2", sizes)  # "sí, 2" is no Kobe size
    assert not size_fits("2 US", sizes) and not size_fits("18 UK", sizes)
    assert size_fits("27 cm", sizes)  # another system: as given


@pytest.mark.parametrize(
    "text",
    [
        "cuesta 189,99 €",
        "quiero 2",
        "43",
        "dos pares",
        "pedido 12345",
        "mi número es 612345678",
        "give us 2",
        "talla",
        "",
    ],
)
def test_no_size_without_a_size_word_unless_asked(text: str) -> None:
    assert extract_size(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("43", "43"), ("la 42,5", "42.5"), ("M", "M"), ("la m", "M"), ("10", "10")],
)
def test_a_bare_size_counts_when_the_agent_asked_for_it(text: str, expected: str) -> None:
    assert extract_size(text, expected=True) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Mi dirección es Calle Mayor 5, 3º B, 28013 Madrid y mi correo es ana@x.com",
            "Calle Mayor 5, 3º B, 28013 Madrid",
        ),
        ("envíalo a c/ Alcalá 120, 28009 Madrid", "c/ Alcalá 120, 28009 Madrid"),
        ("calle alamo 3, 41001 sevilla", "calle alamo 3, 41001 sevilla"),
        (
            "Avda. de la Constitución 12, 41001 Sevilla",
            "Avda. de la Constitución 12, 41001 Sevilla",
        ),
        ("Paseo de Gracia 21, 08007 Barcelona", "Paseo de Gracia 21, 08007 Barcelona"),
        ("Plaza Mayor 1. Mi email es a@b.com", "Plaza Mayor 1"),
        ("Gran Vía 28, Madrid", "Gran Vía 28, Madrid"),
        ("Carrera 7 # 45-10, Bogotá", "Carrera 7 # 45-10, Bogotá"),
        ("221B Baker Street, London NW1 6XE", "221B Baker Street, London NW1 6XE"),
        ("123 main st, Springfield 62704. Thanks", "123 main st, Springfield 62704"),
        (
            "ship it to 10 Downing Street, London SW1A 2AA please",
            "10 Downing Street, London SW1A 2AA",
        ),
    ],
)
def test_an_address_line_as_written_up_to_the_end_of_the_sentence(text: str, expected: str) -> None:
    assert extract_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["la calle está mojada", "I want 2 of the road shoes", "vivo en Madrid", "28013", ""],
)
def test_no_address_without_a_street_word_and_a_number(text: str) -> None:
    assert extract_address(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mi correo es Ana.Garcia+tienda@Gmail.com, gracias", "ana.garcia+tienda@gmail.com"),
        ("escríbeme a pepe_99@mail.example.co.uk.", "pepe_99@mail.example.co.uk"),
        ("<ana@x.com>", "ana@x.com"),
    ],
)
def test_email_with_plus_tags_subdomains_and_punctuation_around(text: str, expected: str) -> None:
    assert extract_email(text) == expected


@pytest.mark.parametrize("text", ["ana@gmail", "ana@@x.com", "ana..b@x.com", "@x.com", "ana"])
def test_not_an_email(text: str) -> None:
    assert extract_email(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("612 34 56 78", "+34612345678"),
        ("mi móvil: 612-345-678", "+34612345678"),
        ("+34 612 345 678", "+34612345678"),
        ("(+34) 612.345.678", "+34612345678"),
        ("0034612345678", "+34612345678"),
        ("fijo 912345678", "+34912345678"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+57 300 123 4567", "+573001234567"),
        ("mi teléfono es 300 123 4567", "3001234567"),
        ("talla 43, teléfono 612 345 678", "+34612345678"),
        ("+34 612 345 678 28013 Madrid", "+34612345678"),
    ],
)
def test_phones_spanish_and_international_with_spaces_dashes_and_prefixes(
    text: str, expected: str
) -> None:
    assert extract_phone(text) == expected


@pytest.mark.parametrize(
    "text",
    ["189,99 €", "pedido 123456789", "12/05/2024", "3001234567", "+34 512 345 678", "28013", ""],
)
def test_not_a_phone(text: str) -> None:
    assert extract_phone(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No me ha llegado el pedido 12345 y ya han pasado dos semanas", "12345"),
        ("My order #A-1002 never arrived", "A-1002"),
        ("order #12345", "12345"),
        ("número de pedido: KB-2024-0042", "KB-2024-0042"),
        ("el pedido nº 12345", "12345"),
        ("pedido n.º 4567", "4567"),
        ("order number is 99812", "99812"),
        ("mi pedido es el a-1002", "A-1002"),
        ("ref. 55512", "55512"),
    ],
)
def test_order_ids_after_a_cue_or_a_hash(text: str, expected: str) -> None:
    assert extract_order_id(text) == expected


@pytest.mark.parametrize(
    "text",
    ["mi pedido no llegó", "pedido de 150 euros", "pedido de 3 pares", "12345", "talla 43", ""],
)
def test_no_order_id_without_a_cue(text: str) -> None:
    assert extract_order_id(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hola, hice un pedido hace dos semanas y no me ha llegado, el número es 12345", "12345"),
        ("where's my order? it's 12345", "12345"),
        ("my package hasn't arrived, the number is A-1002", "A-1002"),
        ("mi pedido anterior 12345 no llegó", "12345"),
        ("el pedido no llegó; número de seguimiento: AB12345678", "AB12345678"),
    ],
)
def test_an_order_id_in_a_message_about_an_order(text: str, expected: str) -> None:
    assert extract_all(text) == {"order_id": expected}


@pytest.mark.parametrize(
    "text",
    [
        "mi pedido no llegó, mi código postal es 28013",
        "my order never came, my zip code is 90210",
        "hice el pedido el 3 de marzo de 2024 y no llegó",
        "pedido del 12/03/2024 no llegó",
        "it's 12345",  # not about an order
        "quiero comprar 2 pares, es el modelo 12345",
    ],
)
def test_no_order_id_from_postcodes_dates_or_messages_not_about_an_order(text: str) -> None:
    assert "order_id" not in extract_all(text)


def test_an_intent_about_an_order_takes_a_cued_id() -> None:
    assert extract_all("it's 12345", order_context=True) == {"order_id": "12345"}


def test_a_bare_order_id_counts_when_the_agent_asked_for_it() -> None:
    assert extract_order_id("es el 12345", expected=True) == "12345"
    assert extract_order_id("It's A-1002", expected=True) == "A-1002"
    assert extract_order_id("189,99 €", expected=True) is None
    assert extract_order_id("43", expected=True) is None


@pytest.mark.parametrize(
    ("text", "product_id"),
    [
        ("dejé unas zapatillas Kobe en el carrito", KOBE["id"]),
        ("las KOBEE", KOBE["id"]),
        ("I left the Kobe sneakers in my cart", KOBE["id"]),
        ("mejor las pegasus", PEGASUS["id"]),
        ("las de running", PEGASUS["id"]),
        ("la camiseta", SHIRT["id"]),
    ],
)
def test_the_customer_names_a_product(text: str, product_id: str) -> None:
    named = match_product(text, [KOBE, PEGASUS, SHIRT])
    assert named is not None and named["id"] == product_id


def test_words_every_candidate_shares_name_nothing() -> None:
    assert match_product("quiero unas zapatillas", [KOBE, PEGASUS]) is None
    assert match_product("quiero una zapatilla", [KOBE]) is None
    assert match_product("hola", [KOBE, PEGASUS, SHIRT]) is None
    assert match_product("kobe", []) is None


def test_a_remembered_product_name_is_resolved_against_the_retrieved_catalogue() -> None:
    catalogue = [PEGASUS, KOBE]
    assert resolve_product(KOBE, []) is KOBE  # a catalogue entry is itself
    assert resolve_product("Zapatilla Kobe 6 Protro", catalogue) == KOBE
    assert resolve_product("zapatilla kobe 6 protro 'grinch'", catalogue) == KOBE
    assert resolve_product("product-pegasus-41", catalogue) == PEGASUS
    assert resolve_product({"name": "Pegasus 41"}, catalogue) == PEGASUS
    assert resolve_product("Zapatilla Kobe 6 Protro", [PEGASUS]) is None  # not retrieved
    assert resolve_product("Pegasus 40", catalogue) is None  # another model
    reverse = {**KOBE, "id": "kobe-6-reverse", "name": "Zapatilla Kobe 6 Protro Reverse"}
    assert resolve_product("Kobe 6", [KOBE, reverse]) is None  # ambiguous: ask
    assert resolve_product("Zapatilla Kobe 6 Protro Reverse", [KOBE, reverse]) == reverse
    assert resolve_product("zapatillas", catalogue) is None
    assert resolve_product("", catalogue) is None
    assert resolve_product(42, catalogue) is None


def test_every_slot_of_one_message_without_stealing_numbers() -> None:
    text = (
        "Quiero 2 pares de las Kobe 6 en talla 42,5 (189,99 € cada una). Envíalas a Calle "
        "Mayor 5, 28013 Madrid, mi correo es ana+kobe@gmail.com y mi móvil +34 612 345 678"
    )
    found = extract_all(text, products=[KOBE, PEGASUS])
    assert found == {
        "quantity": 2,
        "size": "42.5",
        "address": "Calle Mayor 5, 28013 Madrid",
        "email": "ana+kobe@gmail.com",
        "phone": "+34612345678",
        "product": KOBE,
    }


def test_expected_slots_take_bare_values_and_sizes_win_over_quantities() -> None:
    assert extract_all("43", expected={"size"}) == {"size": "43"}
    assert extract_all("quiero 43", expected={"size"}) == {"size": "43"}
    assert extract_all("43, dos pares", expected={"size"}) == {"size": "43", "quantity": 2}
    assert extract_all("12345", expected={"order_id"}) == {"order_id": "12345"}
    assert extract_all("Calle Mayor 5, 28013 Madrid", expected={"order_id"}) == {
        "address": "Calle Mayor 5, 28013 Madrid"
    }
    assert extract_all("612345678", expected={"order_id"}) == {"order_id": "612345678"}
    assert extract_all("mi móvil es 612345678", expected={"order_id"}) == {"phone": "+34612345678"}
    assert extract_all("hola") == {}


def test_sizes_fit_the_product_list_or_are_taken_as_given_in_another_system() -> None:
    sizes = KOBE["sizes"]
    assert size_fits("43", sizes)
    assert not size_fits("42.5", sizes)
    assert not size_fits("50", sizes)
    assert not size_fits("M", sizes)
    assert size_fits("10 US", sizes)
    assert size_fits("10", sizes)
    assert size_fits("xl", SHIRT["sizes"])
    assert not size_fits("42", SHIRT["sizes"])
    assert size_fits("anything", [])


def test_slot_issues_in_the_order_to_ask_them() -> None:
    required = ["product", "size", "quantity"]
    assert slot_issues(required, {}) == [Issue("product", "missing")]
    assert slot_issues(required, {"product": KOBE}) == [Issue("size", "missing")]
    assert slot_issues(required, {"product": KOBE, "size": "43"}) == []
    assert slot_issues(required, {"product": KOBE, "size": "50"}) == [
        Issue("size", "invalid", "50")
    ]
    assert slot_issues(required, {"product": KOBE, "size": "43", "quantity": 9}) == [
        Issue("quantity", "invalid", 9)
    ]
    assert slot_issues(required, {"product": BACKPACK}) == [
        Issue("product", "invalid", "Mochila urbana 20 L")
    ]
    no_sizes = {"id": "gift", "name": "Tarjeta regalo", "price": 20.0, "stock": 5}
    assert slot_issues(required, {"product": no_sizes}) == []
    assert slot_issues(["order_id"], {}) == [Issue("order_id", "missing")]
    assert slot_issues(["address", "email"], {"address": "Calle Mayor 5"}) == [
        Issue("email", "missing")
    ]


def test_sizes_are_listed_as_a_range_when_they_run_on() -> None:
    assert format_sizes(KOBE["sizes"]) == "38-46"
    assert format_sizes(SHIRT["sizes"]) == "S, M, L, XL, XXL"
    assert format_sizes([38.0, 40.0, 42.5]) == "38, 40, 42.5"
