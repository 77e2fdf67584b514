"""The vector store port: one suite over every local adapter (in memory, on disk)."""

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.retrieval.stores import IndexedChunk, VectorStore
from services.retrieval.stores.local import DiskIndex, MemoryIndex

DIMENSION = 4


def _unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def _chunk(doc_id: str, n: int, vector: list[float], tenant: str = "a") -> IndexedChunk:
    document = pb.Document(
        doc_id=doc_id, chunk_id=f"{doc_id}#{n}", tenant_id=tenant, text=f"{doc_id} {n}"
    )
    return IndexedChunk(document, vector, f"hash-{doc_id}-{n}")


@pytest.fixture(params=["memory", "disk"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], VectorStore]:
    if request.param == "memory":
        shared = MemoryIndex(DIMENSION)
        return lambda: shared
    return lambda: DiskIndex(tmp_path / "vectors", DIMENSION)


@pytest.fixture
def index(make_index: Callable[[], VectorStore]) -> VectorStore:
    return make_index()


async def test_search_ranks_by_cosine_above_the_threshold(index: VectorStore) -> None:
    await index.upsert_many(
        "a",
        [
            _chunk("near", 0, _unit(1, 0.1, 0, 0)),
            _chunk("mid", 0, _unit(1, 1, 0, 0)),
            _chunk("far", 0, _unit(0, 0, 1, 0)),
        ],
    )
    found = await index.search(["a"], _unit(1, 0, 0, 0), top_k=5, min_score=0.5)
    assert [c.document.doc_id for c, _ in found] == ["near", "mid"]
    assert found[0][1] > found[1][1] >= 0.5
    assert len(await index.search(["a"], _unit(1, 0, 0, 0), top_k=1, min_score=0.0)) == 1


async def test_partitions_never_leak_into_each_other(index: VectorStore) -> None:
    await index.upsert_many("a", [_chunk("mine", 0, _unit(1, 0, 0, 0))])
    await index.upsert_many("b", [_chunk("theirs", 0, _unit(1, 0, 0, 0), tenant="b")])
    found = await index.search(["a"], _unit(1, 0, 0, 0), top_k=10, min_score=0.0)
    assert [c.document.doc_id for c, _ in found] == ["mine"]
    assert await index.get("a", "theirs#0") is None
    assert await index.search(["nobody"], _unit(1, 0, 0, 0), top_k=10, min_score=0.0) == []


async def test_upsert_replaces_by_chunk_id_and_delete_removes_chunks(index: VectorStore) -> None:
    await index.upsert_many("a", [_chunk("doc", n, _unit(1, n, 0, 0)) for n in range(3)])
    replacement = _chunk("doc", 1, _unit(0, 0, 0, 1))
    await index.upsert_many("a", [replacement])
    assert (await index.get("a", "doc#1")).vector == pytest.approx(replacement.vector)
    assert sorted(await index.chunk_ids_of("a", "doc")) == ["doc#0", "doc#1", "doc#2"]
    assert await index.delete_chunks("a", ["doc#0", "doc#2", "missing#9"]) == 2
    assert await index.chunk_ids_of("a", "doc") == ["doc#1"]


async def test_vectors_of_another_dimension_are_refused_and_nothing_is_written(
    index: VectorStore,
) -> None:
    good, bad = _chunk("good", 0, _unit(1, 0, 0, 0)), _chunk("bad", 0, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 dimensions; this index holds 4"):
        await index.upsert_many("a", [good, bad])
    assert await index.get("a", "good#0") is None


async def test_the_index_survives_a_reopen(make_index: Callable[[], VectorStore]) -> None:
    first = make_index()
    await first.upsert_many("a", [_chunk("kept", n, _unit(1, n, 0, 0)) for n in range(2)])
    await first.delete_chunks("a", ["kept#1"])
    reopened = make_index()
    found = await reopened.search(["a"], _unit(1, 0, 0, 0), top_k=5, min_score=0.0)
    assert [c.document.chunk_id for c, _ in found] == ["kept#0"]
    assert (await reopened.get("a", "kept#0")).content_hash == "hash-kept-0"
