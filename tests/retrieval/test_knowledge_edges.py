"""Edges of ingestion found in review: global scrubbing, concurrent versions of a document, a
new model, numbers JSON cannot hold, hybrid scores independent of top_k, Mongo refusals."""

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import MeshError
from services.retrieval.chunking import chunk
from services.retrieval.embedders.hashing import HashingEmbedder
from services.retrieval.knowledge import KnowledgeBase
from services.retrieval.stores import GLOBAL_PARTITION
from services.retrieval.stores.local import MemoryIndex
from services.retrieval.stores.mongo import _driver_errors
from services.retrieval.tenants import StaticTenantDirectory


class SlowStore(MemoryIndex):
    """Store calls that yield to other tasks, as a remote store's do."""

    async def chunk_ids_of(self, partition: str, doc_id: str) -> list[str]:
        await asyncio.sleep(0.01)
        return await super().chunk_ids_of(partition, doc_id)

    async def upsert_many(self, partition: str, chunks: Sequence) -> None:  # type: ignore[override]
        await asyncio.sleep(0.01)
        await super().upsert_many(partition, chunks)


def _knowledge(store: MemoryIndex | None = None, name: str = "") -> KnowledgeBase:
    embedder = HashingEmbedder()
    if name:
        embedder.name = name
    return KnowledgeBase(
        embedder, store or MemoryIndex(embedder.dimension), StaticTenantDirectory({"acme"})
    )


async def test_global_documents_lose_personal_data_hidden_in_html_tags_and_fields() -> None:
    knowledge = _knowledge()
    page = pb.Document(
        doc_id="dpo",
        text="<p>Escribe al DPO: dpo&#64;example.com o llama al <b>612</b> 345 678.</p>",
        metadata=pb.DocumentMetadata(tags=["owner:ana.perez@example.com"]),
    )
    page.metadata.fields.update(
        {"contact": "ana.perez@example.com", "nested": {"tel": "+34 612 345 678"}}
    )
    await knowledge.upsert_global([page])
    stored = await knowledge._store.get(GLOBAL_PARTITION, "dpo#0")
    assert stored is not None
    text = stored.document.text
    assert "example.com" not in text and "345" not in text and "[email]" in text
    assert list(stored.document.metadata.tags) == ["owner:[email]"]
    fields = stored.document.metadata.fields
    assert fields["contact"] == "[email]"
    assert fields["nested"]["tel"] == "[phone]"


async def test_concurrent_versions_of_one_document_never_interleave() -> None:
    store = SlowStore(HashingEmbedder().dimension)
    knowledge = _knowledge(store)
    versions = [
        "\n\n".join(f"Versión {v}, sección {n}: " + "texto " * 150 for n in range(sections))
        for v, sections in ((1, 3), (2, 1), (3, 6))
    ]
    await knowledge.upsert("acme", [pb.Document(doc_id="d", text=versions[0])])
    await asyncio.gather(
        *(knowledge.upsert("acme", [pb.Document(doc_id="d", text=t)]) for t in versions[1:])
    )
    expected = {f"d#{piece.index}": piece.text for piece in chunk(versions[2])}
    stored = {}
    for chunk_id in await store.chunk_ids_of("acme", "d"):
        found = await store.get("acme", chunk_id)
        assert found is not None
        stored[chunk_id] = found.document.text
    assert stored == expected
    assert len(expected) > 3


async def test_a_new_model_re_embeds_unchanged_content() -> None:
    store = MemoryIndex(HashingEmbedder().dimension)
    document = pb.Document(doc_id="faq", text="Envíos gratis desde 50 euros")
    assert await _knowledge(store, "model-a").upsert("acme", [document]) == (1, 0)
    assert await _knowledge(store, "model-a").upsert("acme", [document]) == (0, 1)
    assert await _knowledge(store, "model-b").upsert("acme", [document]) == (1, 0)


async def test_metadata_numbers_json_cannot_hold_are_refused_and_nothing_is_stored() -> None:
    knowledge = _knowledge()
    document = pb.Document(doc_id="x", text="Mochila")
    document.metadata.fields.update({"weight": float("nan")})
    with pytest.raises(MeshError) as refused:
        await knowledge.upsert("acme", [document])
    assert [v.field for v in refused.value.violations] == ["documents.metadata.fields"]
    assert await knowledge.search("acme", "mochila", 5, 0.01, False) == []


async def test_a_hybrid_score_does_not_depend_on_top_k() -> None:
    knowledge = _knowledge()
    docs = [
        pb.Document(doc_id=f"c{n}", text=f"Zapatilla modelo {n} " + "kobe " * (n % 3) + "verde")
        for n in range(12)
    ]
    await knowledge.upsert("acme", docs)
    wide = await knowledge.search("acme", "zapatilla kobe verde", 12, 0.01, False)
    for top_k in (1, 2, 5):
        narrow = await knowledge.search("acme", "zapatilla kobe verde", top_k, 0.01, False)
        assert [(h.document.chunk_id, round(h.score, 5)) for h in narrow] == [
            (h.document.chunk_id, round(h.score, 5)) for h in wide[:top_k]
        ]


def test_a_refusal_by_mongodb_is_not_worth_retrying() -> None:
    from pymongo.errors import AutoReconnect, OperationFailure

    with pytest.raises(MeshError) as refused, _driver_errors():
        raise OperationFailure("Cannot use expression other than $meta", code=31252)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(MeshError) as down, _driver_errors():
        raise AutoReconnect("connection reset")
    assert down.value.code == grpc.StatusCode.UNAVAILABLE


async def test_a_tenant_deleting_a_document_it_does_not_have_is_not_found() -> None:
    """A global document of the same id neither counts nor is touched."""
    knowledge = _knowledge()
    await knowledge.upsert_global([pb.Document(doc_id="faq", text="Envíos en 48 horas")])
    await knowledge.upsert("acme", [pb.Document(doc_id="faq", text="Abrimos a las 9")])
    assert await knowledge.delete("acme", "faq") == 1
    with pytest.raises(MeshError) as again:
        await knowledge.delete("acme", "faq")
    assert (again.value.code, again.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "DOCUMENT_NOT_FOUND",
    )
    assert await knowledge._store.get(GLOBAL_PARTITION, "faq#0") is not None
