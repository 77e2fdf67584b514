"""Tenant-scoped knowledge: isolation, unchanged content not re-embedded, dimension checks."""

from collections.abc import Sequence

import grpc
import pytest
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import MeshError
from services.retrieval.demo import demo_documents
from services.retrieval.embedders.hashing import HashingEmbedder
from services.retrieval.knowledge import KnowledgeBase
from services.retrieval.stores import GLOBAL_PARTITION, IndexedChunk
from services.retrieval.stores.local import MemoryIndex
from services.retrieval.tenants import StaticTenantDirectory


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return await super().embed(texts)


def _knowledge() -> tuple[KnowledgeBase, CountingEmbedder, MemoryIndex]:
    embedder = CountingEmbedder()
    index = MemoryIndex(embedder.dimension)
    tenants = StaticTenantDirectory({"demo", "acme"})
    return KnowledgeBase(embedder, index, tenants), embedder, index


async def test_a_search_never_returns_another_tenants_documents() -> None:
    knowledge, _, _ = _knowledge()
    await knowledge.upsert("demo", demo_documents())
    await knowledge.upsert("acme", [pb.Document(doc_id="acme-kobe", text="Zapatilla Kobe de Acme")])
    demo_hits = await knowledge.search("demo", "zapatilla Kobe", 10, 0.01, True)
    acme_hits = await knowledge.search("acme", "zapatilla Kobe", 10, 0.01, True)
    assert demo_hits
    assert {h.document.tenant_id for h in demo_hits} == {"demo"}
    assert [h.document.doc_id for h in acme_hits] == ["acme-kobe"]


async def test_global_documents_reach_a_tenant_only_when_asked() -> None:
    knowledge, embedder, index = _knowledge()
    [vector] = await embedder.embed(["politica global de privacidad"])
    shared = pb.Document(
        doc_id="privacy",
        chunk_id="privacy#0",
        text="politica global",
        visibility=pb.VISIBILITY_GLOBAL,
    )
    await index.upsert_many(GLOBAL_PARTITION, [IndexedChunk(shared, vector, "h")])
    with_global = await knowledge.search("demo", "politica global de privacidad", 5, 0.01, True)
    without = await knowledge.search("demo", "politica global de privacidad", 5, 0.01, False)
    assert [h.document.doc_id for h in with_global] == ["privacy"]
    assert without == []


async def test_a_tenant_cannot_ingest_global_documents() -> None:
    knowledge, _, _ = _knowledge()
    with pytest.raises(MeshError) as refused:
        await knowledge.upsert(
            "demo", [pb.Document(doc_id="x", text="y", visibility=pb.VISIBILITY_GLOBAL)]
        )
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unchanged_content_is_not_embedded_again() -> None:
    knowledge, embedder, _ = _knowledge()
    assert await knowledge.upsert("demo", demo_documents()) == (3, 0)
    assert await knowledge.upsert("demo", demo_documents()) == (0, 3)
    changed = demo_documents()
    changed[0].text += " Nuevo color."
    assert await knowledge.upsert("demo", changed) == (1, 2)
    assert len(embedder.embedded) == 4


async def test_the_threshold_filters_unrelated_text() -> None:
    knowledge, _, _ = _knowledge()
    await knowledge.upsert("demo", demo_documents())
    assert await knowledge.search("demo", "quantum chromodynamics lattice", 5, 0.0, False) == []


async def test_a_long_document_is_chunked_and_a_shorter_version_drops_stale_chunks() -> None:
    knowledge, embedder, index = _knowledge()
    long_text = "\n\n".join(f"Sección {n}: " + "texto largo " * 60 for n in range(6))
    assert await knowledge.upsert("demo", [pb.Document(doc_id="manual", text=long_text)]) == (1, 0)
    chunk_ids = await index.chunk_ids_of("demo", "manual")
    assert len(chunk_ids) > 2
    assert await knowledge.upsert("demo", [pb.Document(doc_id="manual", text=long_text)]) == (0, 1)
    embedded_before = len(embedder.embedded)
    assert await knowledge.upsert(
        "demo", [pb.Document(doc_id="manual", text="Versión corta.")]
    ) == (1, 0)
    assert await index.chunk_ids_of("demo", "manual") == ["manual#0"]
    assert len(embedder.embedded) == embedded_before + 1


async def test_html_documents_are_indexed_as_visible_text() -> None:
    knowledge, _, index = _knowledge()
    page = "<html><script>var secret = 1;</script><body><p>Envío gratis</p></body></html>"
    await knowledge.upsert("demo", [pb.Document(doc_id="web", text=page)])
    stored = await index.get("demo", "web#0")
    assert stored is not None
    assert stored.document.text == "Envío gratis"


async def test_delete_removes_every_chunk_of_a_document() -> None:
    knowledge, _, _ = _knowledge()
    await knowledge.upsert("demo", demo_documents())
    assert await knowledge.delete("demo", "faq-returns") == 1
    with pytest.raises(MeshError) as missing:
        await knowledge.delete("acme", "faq-shipping")  # another tenant's document
    assert missing.value.reason == "DOCUMENT_NOT_FOUND"
    hits = await knowledge.search("demo", "devolver zapatilla reembolso", 5, 0.01, False)
    assert "faq-returns" not in {h.document.doc_id for h in hits}
