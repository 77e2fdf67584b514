"""The vector store port: one suite over every local adapter (in memory, on disk), each both
exact and with an HNSW graph for every partition (`exact_threshold=1`)."""

import asyncio
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import MeshError
from services.retrieval.stores import GLOBAL_PARTITION, IndexedChunk, VectorStore
from services.retrieval.stores.local import DEFAULT_EXACT_THRESHOLD, DiskIndex, MemoryIndex

DIMENSION = 4


def _unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _chunk(doc_id: str, n: int, vector: list[float], tenant: str = "a") -> IndexedChunk:
    document = pb.Document(
        doc_id=doc_id, chunk_id=f"{doc_id}#{n}", tenant_id=tenant, text=f"{doc_id} {n}"
    )
    return IndexedChunk(document, vector, f"hash-{doc_id}-{n}")


@pytest.fixture(params=["memory", "disk", "memory-hnsw", "disk-hnsw"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], VectorStore]:
    kind, _, mode = request.param.partition("-")
    threshold = 1 if mode == "hnsw" else DEFAULT_EXACT_THRESHOLD
    if kind == "memory":
        shared = MemoryIndex(DIMENSION, exact_threshold=threshold)
        return lambda: shared
    return lambda: DiskIndex(tmp_path / "vectors", DIMENSION, exact_threshold=threshold)


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
    stored = await index.get("a", "doc#1")
    assert stored is not None and stored.vector == pytest.approx(replacement.vector)
    assert sorted(await index.chunk_ids_of("a", "doc")) == ["doc#0", "doc#1", "doc#2"]
    assert await index.delete_chunks("a", ["doc#0", "doc#2", "missing#9"]) == 2
    assert await index.chunk_ids_of("a", "doc") == ["doc#1"]


async def test_vectors_of_another_dimension_are_refused_and_nothing_is_written(
    index: VectorStore,
) -> None:
    good, bad = _chunk("good", 0, _unit(1, 0, 0, 0)), _chunk("bad", 0, [0.1, 0.2, 0.3])
    with pytest.raises(MeshError, match="3 dimensions; this index holds 4"):
        await index.upsert_many("a", [good, bad])
    assert await index.get("a", "good#0") is None


async def test_the_index_survives_a_reopen(make_index: Callable[[], VectorStore]) -> None:
    first = make_index()
    await first.upsert_many("a", [_chunk("kept", n, _unit(1, n, 0, 0)) for n in range(2)])
    await first.delete_chunks("a", ["kept#1"])
    reopened = make_index()
    found = await reopened.search(["a"], _unit(1, 0, 0, 0), top_k=5, min_score=0.0)
    assert [c.document.chunk_id for c, _ in found] == ["kept#0"]
    kept = await reopened.get("a", "kept#0")
    assert kept is not None and kept.content_hash == "hash-kept-0"


async def test_a_search_over_several_partitions_merges_their_best(index: VectorStore) -> None:
    await index.upsert_many(
        "a", [_chunk("a-near", 0, _unit(1, 0.2, 0, 0)), _chunk("a-far", 0, _unit(0, 1, 0, 0))]
    )
    await index.upsert_many(
        GLOBAL_PARTITION,
        [_chunk("g-best", 0, _unit(1, 0.05, 0, 0)), _chunk("g-mid", 0, _unit(1, 0.5, 0, 0))],
    )
    found = await index.search(["a", GLOBAL_PARTITION], _unit(1, 0, 0, 0), top_k=3, min_score=0.1)
    assert [c.document.doc_id for c, _ in found] == ["g-best", "a-near", "g-mid"]
    assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    only_a = await index.search(["a"], _unit(1, 0, 0, 0), top_k=3, min_score=0.1)
    assert [c.document.doc_id for c, _ in only_a] == ["a-near"]


async def test_top_k_keeps_the_best_of_many_and_scores_are_cosines(index: VectorStore) -> None:
    chunks = [_chunk("many", n, _unit(1, n / 10, 0, 0)) for n in range(40)]
    await index.upsert_many("a", chunks)
    found = await index.search(["a"], [3.0, 0.0, 0.0, 0.0], top_k=3, min_score=0.0)
    assert [c.document.chunk_id for c, _ in found] == ["many#0", "many#1", "many#2"]
    assert [score for _, score in found] == pytest.approx(
        [1 / math.sqrt(1 + (n / 10) ** 2) for n in range(3)], abs=1e-5
    )
    assert await index.search(["a"], _unit(1, 0, 0, 0), top_k=0, min_score=0.0) == []


async def test_concurrent_upserts_deletes_and_searches_leave_a_consistent_partition(
    make_index: Callable[[], VectorStore],
) -> None:
    index = make_index()
    rng = random.Random(5)
    vectors = {n: _unit(*(rng.uniform(-1, 1) for _ in range(DIMENSION))) for n in range(60)}

    async def write(batch: int) -> None:
        await index.upsert_many(
            "a", [_chunk(f"d{batch}", n, vectors[batch * 10 + n]) for n in range(10)]
        )
        await index.delete_chunks("a", [f"d{batch}#9"])

    async def read() -> None:
        for _ in range(5):
            for chunk, score in await index.search(["a"], vectors[0], top_k=5, min_score=-1):
                assert score == pytest.approx(_cosine(chunk.vector, vectors[0]), abs=1e-5)
            await asyncio.sleep(0)

    await asyncio.gather(*(write(batch) for batch in range(6)), *(read() for _ in range(4)))
    for batch in range(6):
        assert await index.chunk_ids_of("a", f"d{batch}") == [f"d{batch}#{n}" for n in range(9)]
        for n in range(9):
            [(top, score)] = await index.search(
                ["a"], vectors[batch * 10 + n], top_k=1, min_score=0.0
            )
            assert top.document.chunk_id == f"d{batch}#{n}"
            assert score == pytest.approx(1.0, abs=1e-5)
    reopened = make_index()
    assert len(await reopened.search(["a"], vectors[0], top_k=100, min_score=-1)) == 54


async def test_query_text_lifts_lexical_matches_and_never_lowers_a_score(
    make_index: Callable[[], VectorStore],
) -> None:
    index = make_index()
    named = _chunk("sku-kb6", 0, _unit(0, 0, 1, 0))
    named.document.text = "Kobe 6 Protro Grinch zapatilla de baloncesto"
    close = _chunk("close", 0, _unit(1, 0.1, 0, 0))
    close.document.text = "Camiseta técnica de running"
    await index.upsert_many("a", [named, close])
    query = _unit(1, 0, 0, 0)
    plain = await index.search(["a"], query, top_k=5, min_score=0.3)
    hybrid = await index.search(["a"], query, top_k=5, min_score=0.3, query_text="kobe grinch")
    assert [c.document.doc_id for c, _ in plain] == ["close"]
    assert {c.document.doc_id for c, _ in hybrid} == {"close", "sku-kb6"}
    assert dict((c.document.doc_id, s) for c, s in hybrid)["close"] == pytest.approx(plain[0][1])
    reopened = make_index()
    again = await reopened.search(["a"], query, top_k=5, min_score=0.3, query_text="kobe grinch")
    assert [c.document.doc_id for c, _ in again] == [c.document.doc_id for c, _ in hybrid]
    await reopened.delete_chunks("a", ["sku-kb6#0"])
    gone = await reopened.search(["a"], query, top_k=5, min_score=0.0, query_text="kobe grinch")
    assert "sku-kb6" not in {c.document.doc_id for c, _ in gone}
