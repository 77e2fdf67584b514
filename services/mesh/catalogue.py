"""Product catalogues as JSON Lines: parsing and validation, shared by the retrieval service
(which stores products) and the gateway (which refuses a bad catalogue before sending any of it).

A line is `{"id", "name", "price", "currency", "stock", "description", ...}`; `lang`,
`category` and `tags` are optional and every other key is kept as an attribute. Nothing here
does I/O: `parse_catalogue` reports each bad line by number, `validate_product` raises the
INVALID_ARGUMENT the retrieval service answers with, and `check_catalogue` does both for a whole
catalogue (plus duplicate ids), so a caller can refuse it before anything is stored. Attributes
are free-form JSON checked by services/mesh/freeform.py (nesting, finite numbers, integers
within ±2^53), so a line a Struct cannot carry is a bad line, never a failure while sending it.
"""

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import FieldViolation, MeshError, invalid_argument
from services.mesh.freeform import freeform_problem

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


@dataclass
class CatalogueCheck:
    """A whole catalogue: its valid products with their line numbers, and every bad line."""

    products: list[tuple[int, pb.Product]] = field(default_factory=list)
    errors: list[CatalogueLine] = field(default_factory=list)


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
    """INVALID_ARGUMENT naming every bad field of a product."""
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
    attributes = {key: value for key, value in record.items() if key not in KNOWN_KEYS}
    problem = freeform_problem(attributes)
    if problem is not None:
        raise ValueError(f"attribute {problem}")
    product = pb.Product(
        **strings,
        price="" if price is None else str(Decimal(str(price))),
        stock=stock,
        tags=tags,
    )
    product.currency = product.currency.upper()
    product.attributes.update(attributes)
    return product


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse_catalogue(lines: Iterable[str | bytes]) -> Iterator[CatalogueLine]:
    """Parse JSON Lines, one result per non-blank line; bad lines are reported, not raised."""
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            yield CatalogueLine(number, None, f"line exceeds {MAX_LINE_BYTES} bytes")
            continue
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            yield CatalogueLine(number, None, "line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            product = product_from_json(json.loads(text, parse_constant=_not_json))
        except (ValueError, InvalidOperation, OverflowError, RecursionError) as error:
            yield CatalogueLine(number, None, str(error) or "not valid JSON")
            continue
        yield CatalogueLine(number, product)


def _reason(error: MeshError) -> str:
    return "; ".join(f"{v.field} {v.description}" for v in error.violations) or error.message


def check_catalogue(
    lines: Iterable[str | bytes], id_pattern: re.Pattern[str] | None = None
) -> CatalogueCheck:
    """Parse and validate every line; an id used twice, or not matching `id_pattern`, is a bad
    line too. The products are only worth storing when `errors` is empty."""
    checked = CatalogueCheck()
    seen: dict[str, int] = {}
    for parsed in parse_catalogue(lines):
        product = parsed.product
        if product is None:
            checked.errors.append(parsed)
            continue
        try:
            validate_product(product, field="product")
        except MeshError as error:
            checked.errors.append(CatalogueLine(parsed.line, None, _reason(error)))
            continue
        if id_pattern is not None and not id_pattern.match(product.id):
            reason = f"product.id must match {id_pattern.pattern}"
            checked.errors.append(CatalogueLine(parsed.line, None, reason))
        elif product.id in seen:
            reason = f"product.id '{product.id}' is already on line {seen[product.id]}"
            checked.errors.append(CatalogueLine(parsed.line, None, reason))
        else:
            seen[product.id] = parsed.line
            checked.products.append((parsed.line, product))
    return checked
