"""The retrieval service over gRPC: tenants the platform knows, catalogues, global documents,
and bad input refused with a clear status while nothing is half-indexed."""

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import tenant_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.settings import MeshSettings
from tests.support.calls import refusal
from tests.support.retrieval_service import retrieval_service

KOBE_QUERY = "zapatilla Kobe Grinch"


def _as(tenant: str) -> correlation.CallContext:
    return correlation.CallContext(correlation_id="corr-retrieval", tenant_id=tenant)


async def _doc_ids(gateway: MeshClients, tenant: str, query: str, **options: object) -> list[str]:
    with correlation.bound(_as(tenant)):
        found = await gateway.retrieval.Search(pb.SearchRequest(query=query, **options))
    return [hit.document.doc_id for hit in found.hits]


@pytest.fixture
async def reach(state_dir: Path, tmp_path: Path) -> AsyncIterator[MeshSettings]:
    async with retrieval_service(state_dir) as settings:
        gateway = MeshClients(settings, "gateway")
        with correlation.bound(_as("acme")):
            await gateway.context.PutTenant(
                context_pb.PutTenantRequest(tenant=tenant_pb2.TenantConfig(name="Acme"))
            )
        await gateway.close()
        yield settings


@pytest.fixture
async def gateway(reach: MeshSettings) -> AsyncIterator[MeshClients]:
    clients = MeshClients(reach, "gateway")
    yield clients
    await clients.close()


async def test_the_demo_catalogue_answers_with_its_fields(gateway: MeshClients) -> None:
    with correlation.bound(_as("demo")):
        found = await gateway.retrieval.Search(pb.SearchRequest(query=KOBE_QUERY))
    best = found.hits[0].document
    assert best.doc_id == "product-kobe-6-protro"
    assert best.metadata.source == "catalogue"
    assert best.metadata.fields["price"] == pytest.approx(189.99)
    assert (best.metadata.fields["currency"], best.metadata.fields["stock"]) == ("EUR", 7)


async def test_an_unknown_tenant_is_not_found_and_gets_nothing_indexed(
    gateway: MeshClients,
) -> None:
    document = pb.Document(doc_id="faq", text="Horario de 9 a 18")
    with correlation.bound(_as("ghost")):
        upsert = await refusal(
            gateway.retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(documents=[document]))
        )
        search = await refusal(gateway.retrieval.Search(pb.SearchRequest(query="horario")))
        delete = await refusal(
            gateway.retrieval.DeleteDocument(pb.DeleteDocumentRequest(doc_id="faq"))
        )
    for refused in (upsert, search, delete):
        assert refused.code == grpc.StatusCode.NOT_FOUND
        assert refused.reason == "TENANT_NOT_FOUND"
        assert "ghost" in refused.message
    with correlation.bound(_as("ghost")):
        bulk = await refusal(gateway.retrieval.BulkIngest(_stream([document])))
    assert bulk.code == grpc.StatusCode.NOT_FOUND


async def test_a_tenant_created_on_the_platform_can_index_and_search(
    gateway: MeshClients,
) -> None:
    with correlation.bound(_as("acme")):
        stored = await gateway.retrieval.UpsertDocuments(
            pb.UpsertDocumentsRequest(
                documents=[pb.Document(doc_id="hours", text="Abrimos de lunes a sábado de 9 a 18")],
                products=[
                    pb.Product(
                        id="sku-1", name="Balón de fútbol", price="19.90", currency="EUR", stock=3
                    )
                ],
            )
        )
    assert (stored.upserted, stored.unchanged) == (2, 0)
    assert await _doc_ids(gateway, "acme", "balón de fútbol") == ["sku-1"]
    assert "sku-1" not in await _doc_ids(gateway, "demo", "balón de fútbol")


async def test_oversized_and_empty_documents_are_refused_and_the_batch_is_not_stored(
    gateway: MeshClients,
) -> None:
    good = pb.Document(doc_id="good", text="Envíos a Canarias en 5 días")
    too_long = pb.Document(doc_id="long", text="palabra " * 200_000)
    empty = pb.Document(doc_id="empty", text="   ")
    ten_megabytes = pb.Document(doc_id="huge", text="x" * (10 * 1024 * 1024))
    with correlation.bound(_as("acme")):
        long_refusal = await refusal(
            gateway.retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(documents=[good, too_long]))
        )
        empty_refusal = await refusal(
            gateway.retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(documents=[good, empty]))
        )
        huge_refusal = await refusal(
            gateway.retrieval.UpsertDocuments(
                pb.UpsertDocumentsRequest(documents=[good, ten_megabytes])
            )
        )
    assert long_refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    [violation] = long_refusal.violations
    assert violation.field == "documents.text"
    assert "1600000 characters, more than 1000000: split it" in violation.description
    assert empty_refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in empty_refusal.violations] == ["documents.text"]
    assert huge_refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _doc_ids(gateway, "acme", "envíos Canarias") == []


async def _stream(items: Iterable[pb.Document | pb.Product]) -> AsyncIterator[pb.BulkIngestRequest]:
    for item in items:
        if isinstance(item, pb.Product):
            yield pb.BulkIngestRequest(product=item)
        else:
            yield pb.BulkIngestRequest(document=item)


async def test_bulk_ingest_takes_products_and_reports_bad_items_without_stopping(
    gateway: MeshClients,
) -> None:
    items: list[pb.Document | pb.Product] = [
        pb.Product(id=f"sku-{n}", name=f"Camiseta modelo {n}", price="9.99", currency="EUR")
        for n in range(40)
    ]
    items.insert(3, pb.Product(id="sku-bad-price", name="Gorra", price="gratis", currency="EUR"))
    items.insert(10, pb.Document(doc_id="", text="sin id"))
    items.append(pb.Document(doc_id="returns", text="Devoluciones gratuitas en 30 días"))
    with correlation.bound(_as("acme")):
        report = await gateway.retrieval.BulkIngest(_stream(items))
        again = await gateway.retrieval.BulkIngest(_stream(items))
    assert (report.upserted, report.unchanged, report.rejected) == (41, 0, 2)
    assert [(r.index, r.doc_id) for r in report.rejections] == [(3, "sku-bad-price"), (10, "")]
    assert "product.price must be a decimal amount" in report.rejections[0].reason
    assert (again.upserted, again.unchanged, again.rejected) == (0, 41, 2)
    assert await _doc_ids(gateway, "acme", "camiseta modelo 17", top_k=1) == ["sku-17"]


async def test_global_documents_are_scrubbed_and_reach_tenants_only_when_asked(
    reach: MeshSettings, gateway: MeshClients
) -> None:
    """The gateway (for platform administrators) writes global documents; nobody else may."""
    orchestrator = MeshClients(reach, "orchestrator")
    policy = pb.Document(
        doc_id="privacy-policy",
        text="Política de privacidad: escribe a dpo@example.com o llama al +34 612 345 678.",
    )
    try:
        with correlation.bound(correlation.CallContext(correlation_id="corr-global")):
            stored = await gateway.retrieval.UpsertGlobalDocuments(
                pb.UpsertGlobalDocumentsRequest(documents=[policy])
            )
            refused = await refusal(
                orchestrator.retrieval.UpsertGlobalDocuments(
                    pb.UpsertGlobalDocumentsRequest(documents=[policy])
                )
            )
        assert stored.upserted == 1
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
        for tenant in ("demo", "acme"):
            assert await _doc_ids(gateway, tenant, "política de privacidad") == []
            with correlation.bound(_as(tenant)):
                found = await gateway.retrieval.Search(
                    pb.SearchRequest(query="política de privacidad", include_global=True)
                )
            [hit] = found.hits
            assert hit.document.visibility == pb.VISIBILITY_GLOBAL
            assert "dpo@example.com" not in hit.document.text
            assert "[email]" in hit.document.text and "[phone]" in hit.document.text
        with correlation.bound(_as("acme")):
            tenant_attempt = await refusal(
                gateway.retrieval.UpsertDocuments(
                    pb.UpsertDocumentsRequest(
                        documents=[
                            pb.Document(doc_id="x", text="y", visibility=pb.VISIBILITY_GLOBAL)
                        ]
                    )
                )
            )
        assert tenant_attempt.code == grpc.StatusCode.INVALID_ARGUMENT
        with correlation.bound(correlation.CallContext(correlation_id="corr-global")):
            deleted = await gateway.retrieval.DeleteGlobalDocument(
                pb.DeleteGlobalDocumentRequest(doc_id="privacy-policy")
            )
        assert deleted.deleted_chunks == 1
        assert await _doc_ids(gateway, "demo", "política de privacidad", include_global=True) == []
    finally:
        await orchestrator.close()


async def test_deleting_a_document_the_tenant_does_not_have_is_not_found(
    gateway: MeshClients,
) -> None:
    """Not "0 chunks deleted": an unknown id, another tenant's document and a second delete
    are NOT_FOUND (DOCUMENT_NOT_FOUND), and the other tenant's document stays."""
    hours = pb.Document(doc_id="hours", text="Abrimos de lunes a sábado de 9 a 18")
    with correlation.bound(_as("acme")):
        await gateway.retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(documents=[hours]))
    with correlation.bound(_as("demo")):
        others = await refusal(
            gateway.retrieval.DeleteDocument(pb.DeleteDocumentRequest(doc_id="hours"))
        )
        unknown = await refusal(
            gateway.retrieval.DeleteDocument(pb.DeleteDocumentRequest(doc_id="no-such-doc"))
        )
    with correlation.bound(_as("acme")):
        deleted = await gateway.retrieval.DeleteDocument(pb.DeleteDocumentRequest(doc_id="hours"))
        twice = await refusal(
            gateway.retrieval.DeleteDocument(pb.DeleteDocumentRequest(doc_id="hours"))
        )
    assert deleted.deleted_chunks == 1
    for refused in (others, unknown, twice):
        assert (refused.code, refused.reason) == (grpc.StatusCode.NOT_FOUND, "DOCUMENT_NOT_FOUND")
    assert "'hours'" in twice.message
