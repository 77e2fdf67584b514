"""Product catalogues: JSON Lines in, first-class documents out.

A line is `{"id", "name", "price", "currency", "stock", "description", ...}`; `lang`,
`category` and `tags` are optional and every other key is kept as an attribute. A product
becomes the document `doc_id = id` (source "catalogue") whose text reads like a catalogue entry
and whose `metadata.fields` keep the structured values, so search hits carry price, currency and
stock to the orchestrator.
"""

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import FieldViolation, invalid_argument

MAX_PRICE = Decimal("1000000000")
KNOWN_KEYS = frozenset(
    {"id", "name", "description", "price", "currency", "stock", "lang", "category", "tags"}
)
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class CatalogueLine:
    """One parsed line: a product, or why the line was refused (1-based line number)."""

    line: int
    product: pb.Product | None
    error: str = ""


def finite_struct(value: struct_pb2.Struct | struct_pb2.ListValue) -> bool:
    """No NaN or infinity anywhere inside (they cannot be stored as JSON)."""
    values = value.values if isinstance(value, struct_pb2.ListValue) else value.fields.values()
    for item in values:
        kind = item.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(item.number_value):
            return False
        if kind == "struct_value" and not finite_struct(item.struct_value):
            return False
        if kind == "list_value" and not finite_struct(item.list_value):
            return False
    return True


def validate_product(product: pb.Product, field: str = "products") -> None:
    violations = []
    if not product.id.strip():
        violations.append(FieldViolation(f"{field}.id", "is required"))
    if not product.name.strip():
        violations.append(FieldViolation(f"{field}.name", "is required"))
    if product.price:
        try:
            amount = Decimal(product.price)
        except InvalidOperation:
            amount = Decimal(-1)
        if not amount.is_finite() or amount < 0 or amount > MAX_PRICE:
            violations.append(
                FieldViolation(f"{field}.price", f"must be a decimal amount in [0, {MAX_PRICE}]")
            )
        if not CURRENCY.match(product.currency):
            violations.append(
                FieldViolation(f"{field}.currency", "must be an ISO 4217 code with a price")
            )
    if product.stock < 0:
        violations.append(FieldViolation(f"{field}.stock", "must be >= 0"))
    if not finite_struct(product.attributes):
        violations.append(FieldViolation(f"{field}.attributes", "numbers must be finite"))
    if violations:
        raise invalid_argument(*violations)


def product_from_json(record: dict[str, Any]) -> pb.Product:
    """A Product from one decoded catalogue line; raises ValueError on malformed values."""
    if not isinstance(record, dict):
        raise ValueError("a catalogue line must be a JSON object")
    price = record.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float | str | type(None)):
        raise ValueError("price must be a number or a decimal string")
    stock = record.get("stock", 0)
    if isinstance(stock, bool) or not isinstance(stock, int):
        raise ValueError("stock must be an integer")
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError("tags must be a list of strings")
    strings = {key: record.get(key, "") for key in ("id", "name", "description", "lang")}
    strings |= {key: record.get(key, "") for key in ("currency", "category")}
    for key, value in strings.items():
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
    product = pb.Product(
        **strings,
        price="" if price is None else str(Decimal(str(price))),
        stock=stock,
        tags=tags,
    )
    product.currency = product.currency.upper()
    product.attributes.update({k: v for k, v in record.items() if k not in KNOWN_KEYS})
    return product


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse_catalogue(lines: Iterable[str | bytes]) -> Iterator[CatalogueLine]:
    """Parse JSON Lines, one result per non-blank line; bad lines are reported, not raised."""
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            yield CatalogueLine(number, None, f"line exceeds {MAX_LINE_BYTES} bytes")
            continue
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            product = product_from_json(json.loads(text, parse_constant=_not_json))
        except (ValueError, InvalidOperation, OverflowError) as error:
            yield CatalogueLine(number, None, str(error) or "not valid JSON")
            continue
        yield CatalogueLine(number, product)


def product_document(product: pb.Product) -> pb.Document:
    """The searchable document of a product (validated first with `validate_product`)."""
    lines = [product.name]
    if product.description:
        lines.append(product.description)
    if product.price:
        lines.append(f"{product.price} {product.currency}")
    fields = struct_pb2.Struct()
    fields.MergeFrom(product.attributes)
    fields.update({"id": product.id, "name": product.name, "stock": product.stock})
    if product.price:
        fields.update({"price": float(product.price), "currency": product.currency})
    return pb.Document(
        doc_id=product.id,
        text="\n".join(lines),
        metadata=pb.DocumentMetadata(
            source="catalogue",
            lang=product.lang,
            category=product.category or "product",
            tags=product.tags,
            fields=fields,
        ),
    )
