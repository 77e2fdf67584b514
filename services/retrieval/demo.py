"""Knowledge of the `demo` tenant (the seed's case A shop): its catalogue and policies."""

from typing import Any

from google.protobuf import struct_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb


def _fields(**values: Any) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def demo_documents() -> list[pb.Document]:
    return [
        pb.Document(
            doc_id="product-kobe-6-protro",
            text=(
                "Zapatilla Kobe 6 Protro 'Grinch': zapatilla de baloncesto, verde, tallas 38 a 46. "
                "Precio 189.99 EUR. Quedan 7 unidades en stock."
            ),
            metadata=pb.DocumentMetadata(
                source="catalogue",
                lang="es",
                category="product",
                tags=["kobe", "zapatilla"],
                fields=_fields(
                    id="product-kobe-6-protro",
                    name="Kobe 6 Protro 'Grinch'",
                    price=189.99,
                    currency="EUR",
                    stock=7,
                ),
            ),
        ),
        pb.Document(
            doc_id="faq-shipping",
            text=(
                "Envíos: entregamos en 2 a 4 días laborables en la península. El envío es "
                "gratis a partir de 50 EUR. Puedes seguir tu pedido con el enlace del correo de "
                "confirmación."
            ),
            metadata=pb.DocumentMetadata(source="faq", lang="es", category="shipping"),
        ),
        pb.Document(
            doc_id="faq-returns",
            text=(
                "Devoluciones: tienes 30 días para devolver una zapatilla sin usar. La "
                "devolución es gratuita y el reembolso llega en 5 días tras recibirla."
            ),
            metadata=pb.DocumentMetadata(source="faq", lang="es", category="returns"),
        ),
    ]
