"""Knowledge of the `demo` tenant (the seed's case A shop): its catalogue and its FAQs."""

from typing import Any

from google.protobuf import struct_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

DEMO_TENANT_ID = "demo"


def _attributes(**values: Any) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def demo_products() -> list[pb.Product]:
    return [
        pb.Product(
            id="product-kobe-6-protro",
            name="Zapatilla Kobe 6 Protro 'Grinch'",
            description="Zapatilla de baloncesto, verde, tallas 38 a 46. Quedan 7 unidades.",
            price="189.99",
            currency="EUR",
            stock=7,
            lang="es",
            category="basketball",
            tags=["kobe", "zapatilla", "baloncesto"],
            attributes=_attributes(sizes=list(range(38, 47)), colour="verde"),
        ),
        pb.Product(
            id="product-pegasus-41",
            name="Zapatilla de running Pegasus 41",
            description="Running en asfalto, amortiguación reactiva, negra, tallas 39 a 45.",
            price="139.99",
            currency="EUR",
            stock=12,
            lang="es",
            category="running",
            tags=["running", "zapatilla"],
            attributes=_attributes(sizes=list(range(39, 46)), colour="negro"),
        ),
        pb.Product(
            id="product-camiseta-tecnica",
            name="Camiseta técnica de entrenamiento",
            description="Camiseta transpirable de poliéster reciclado, tallas S a XXL.",
            price="29.95",
            currency="EUR",
            stock=40,
            lang="es",
            category="apparel",
            tags=["camiseta", "entrenamiento"],
            attributes=_attributes(sizes=["S", "M", "L", "XL", "XXL"]),
        ),
        pb.Product(
            id="product-mochila-urbana",
            name="Mochila urbana 20 L",
            description="Mochila impermeable con compartimento para portátil de 15 pulgadas.",
            price="49.90",
            currency="EUR",
            stock=0,
            lang="es",
            category="accessories",
            tags=["mochila"],
        ),
    ]


def demo_documents() -> list[pb.Document]:
    faq = [
        (
            "faq-shipping",
            "shipping",
            "Envíos: entregamos en 2 a 4 días laborables en la península. El envío es gratis a "
            "partir de 50 EUR. Puedes seguir tu pedido con el enlace del correo de confirmación.",
        ),
        (
            "faq-returns",
            "returns",
            "Devoluciones: tienes 30 días para devolver una zapatilla sin usar. La devolución es "
            "gratuita y el reembolso llega en 5 días tras recibirla.",
        ),
        (
            "faq-payment",
            "payment",
            "Pagos: aceptamos tarjeta, Bizum y PayPal. Tras confirmar el pedido te enviamos un "
            "enlace de pago seguro; el pedido se prepara en cuanto se completa el pago.",
        ),
    ]
    return [
        pb.Document(
            doc_id=doc_id,
            text=text,
            metadata=pb.DocumentMetadata(source="faq", lang="es", category=category),
        )
        for doc_id, category, text in faq
    ]
