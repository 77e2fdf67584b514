"""JSON Lines catalogues: every line parsed or reported by number, products kept exact."""

import grpc
import pytest
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import MeshError
from services.retrieval.catalogue import parse_catalogue, product_document, validate_product

GOOD = (
    '{"id": "sku-kobe", "name": "Kobe 6 Protro", "price": 189.99, "currency": "eur", '
    '"stock": 7, "description": "Zapatilla de baloncesto", "lang": "es", "sizes": [40, 41]}'
)


def test_a_good_line_becomes_a_product_with_exact_price_and_attributes() -> None:
    [line] = list(parse_catalogue([GOOD]))
    assert line.line == 1 and line.error == ""
    product = line.product
    assert product is not None
    assert (product.id, product.price, product.currency, product.stock) == (
        "sku-kobe",
        "189.99",
        "EUR",
        7,
    )
    assert list(product.attributes["sizes"]) == [40, 41]
    validate_product(product)


def test_bad_lines_are_reported_by_number_and_blank_lines_skipped() -> None:
    lines = [
        GOOD,
        "",
        "{not json",
        '{"id": "a", "name": "b", "stock": "many"}',
        '["a list"]',
        '{"id": "a", "name": "b", "tags": "one"}',
        '{"id": 5, "name": "b"}',
        b'{"id": "bytes", "name": "Bal\xc3\xb3n"}',
    ]
    parsed = {line.line: line for line in parse_catalogue(lines)}
    assert sorted(parsed) == [1, 3, 4, 5, 6, 7, 8]
    assert parsed[4].error == "stock must be an integer"
    assert parsed[5].error == "a catalogue line must be a JSON object"
    assert parsed[6].error == "tags must be a list of strings"
    assert parsed[7].error == "id must be a string"
    assert parsed[3].product is None and parsed[3].error
    assert parsed[8].product is not None and parsed[8].product.name == "Balón"


@pytest.mark.parametrize(
    ("product", "field"),
    [
        (pb.Product(name="no id"), "products.id"),
        (pb.Product(id="x"), "products.name"),
        (pb.Product(id="x", name="y", price="-1", currency="EUR"), "products.price"),
        (pb.Product(id="x", name="y", price="NaN", currency="EUR"), "products.price"),
        (pb.Product(id="x", name="y", price="10"), "products.currency"),
        (pb.Product(id="x", name="y", stock=-2), "products.stock"),
    ],
)
def test_invalid_products_name_the_field(product: pb.Product, field: str) -> None:
    with pytest.raises(MeshError) as refused:
        validate_product(product)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == [field]


def test_a_product_document_reads_like_the_catalogue_and_keeps_its_fields() -> None:
    [line] = list(parse_catalogue([GOOD]))
    assert line.product is not None
    document = product_document(line.product)
    assert document.doc_id == "sku-kobe"
    assert document.text == "Kobe 6 Protro\nZapatilla de baloncesto\n189.99 EUR"
    assert document.metadata.source == "catalogue"
    assert document.metadata.lang == "es"
    fields = dict(document.metadata.fields)
    assert fields["price"] == pytest.approx(189.99)
    assert (fields["currency"], fields["stock"], fields["id"]) == ("EUR", 7, "sku-kobe")
    assert list(fields["sizes"]) == [40, 41]


def test_attributes_never_override_the_validated_fields() -> None:
    product = pb.Product(id="sku-1", name="Gorra", price="10", currency="EUR", stock=2)
    product.attributes.update({"price": -5, "currency": "XXX", "id": "sku-other", "colour": "red"})
    validate_product(product)
    fields = dict(product_document(product).metadata.fields)
    assert (fields["price"], fields["currency"], fields["id"], fields["stock"]) == (
        10.0,
        "EUR",
        "sku-1",
        2,
    )
    assert fields["colour"] == "red"


def test_numbers_json_cannot_store_are_refused() -> None:
    lines = [
        '{"id": "a", "name": "b", "price": NaN, "currency": "EUR"}',
        '{"id": "a", "name": "b", "weight": ' + "9" * 400 + "}",
        '{"id": "a", "name": "b", "price": 1e400, "currency": "EUR"}',
    ]
    parsed = list(parse_catalogue(lines))
    assert parsed[0].error == "NaN is not a JSON number"
    assert parsed[1].product is None and parsed[1].error
    assert parsed[2].product is not None
    with pytest.raises(MeshError):
        validate_product(parsed[2].product)
    product = pb.Product(id="x", name="y")
    product.attributes.update({"weight": float("inf")})
    with pytest.raises(MeshError) as refused:
        validate_product(product)
    assert [v.field for v in refused.value.violations] == ["products.attributes"]
