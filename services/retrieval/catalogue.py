"""Product catalogues: JSON Lines in, first-class documents out.

Parsing and validation are shared with the gateway (`services.mesh.catalogue`; what this
service uses of it is re-exported here); what a product becomes in the knowledge base is the
retrieval service's own: the document `doc_id = id` (source "catalogue") whose text reads like a
catalogue entry and whose `metadata.fields` keep the structured values, so search hits carry
price, currency and stock to the orchestrator.
"""

from google.protobuf import struct_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.catalogue import finite_struct, parse_catalogue, validate_product

__all__ = ["finite_struct", "parse_catalogue", "product_document", "validate_product"]


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
