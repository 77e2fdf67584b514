"""The HNSW path of the local vector stores: recall, mutations, persistence, the exact threshold."""

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import MeshError
from services.retrieval.stores import IndexedChunk
from services.retrieval.stores.hnsw import HnswIndex, HnswParams
from services.retrieval.stores.local import GRAPH_FILE, DiskIndex, MemoryIndex

DIMENSION = 32


def _vectors(count: int, seed: int = 11, dimension: int = DIMENSION) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _chunks(vectors: np.ndarray, doc: str = "doc", start: int = 0) -> list[IndexedChunk]:
    return [
        IndexedChunk(
            pb.Document(doc_id=f"{doc}{(start + n) // 10}", chunk_id=f"{doc}-{start + n}"),
            vector.tolist(),
            f"hash-{start + n}",
        )
        for n, vector in enumerate(vectors)
    ]


def _files(directory: Path, pattern: str) -> list[Path]:
    return list(directory.rglob(pattern))


def _graph_size(index: MemoryIndex, partition: str) -> int | None:
    """How many vectors the partition's graph holds; None when it is searched exactly."""
    graph = index._partitions[partition].graph
    return None if graph is None else len(graph)


async def _ids(index: MemoryIndex, query: np.ndarray, top_k: int = 5) -> list[str]:
    found = await index.search(["t"], query.tolist(), top_k=top_k, min_score=-1.0)
    return [chunk.document.chunk_id for chunk, _ in found]


def _near(vectors: np.ndarray, seed: int = 21) -> np.ndarray:
    """Clear-cut probes: each a slightly perturbed copy of one stored vector."""
    return vectors + 0.05 * _vectors(len(vectors), seed=seed)


async def _top1(index: MemoryIndex, probes: np.ndarray) -> list[str]:
    return [(await _ids(index, probe, top_k=1))[0] for probe in probes]


async def _answers(index: MemoryIndex, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    answers = []
    for query in queries:
        found = await index.search(["t"], query.tolist(), top_k=5, min_score=0.0)
        answers.append([(chunk.document.chunk_id, round(score, 5)) for chunk, score in found])
    return answers


async def test_recall_at_5_against_exact_search() -> None:
    # Uniform random vectors: a hard case for HNSW (real embeddings cluster), kept to 64 dimensions.
    data, queries = _vectors(5000, dimension=64), _vectors(100, seed=12, dimension=64)
    exact, approximate = MemoryIndex(64), MemoryIndex(64, exact_threshold=1)
    for index in (exact, approximate):
        await index.upsert_many("t", _chunks(data))
    assert _graph_size(exact, "t") is None
    assert _graph_size(approximate, "t") == 5000
    hits = 0
    for query in queries:
        truth = await exact.search(["t"], query.tolist(), top_k=5, min_score=-1.0)
        found = await approximate.search(["t"], query.tolist(), top_k=5, min_score=-1.0)
        hits += len(
            {c.document.chunk_id for c, _ in truth} & {c.document.chunk_id for c, _ in found}
        )
        # Candidates are re-scored exactly: a chunk found by both paths has the same score.
        scores = {c.document.chunk_id: score for c, score in truth}
        for chunk, score in found:
            if chunk.document.chunk_id in scores:
                assert score == pytest.approx(scores[chunk.document.chunk_id], abs=1e-6)
    assert hits / (5 * len(queries)) >= 0.95


async def test_replacements_and_deletions_reach_the_graph() -> None:
    data = _vectors(500)
    index = MemoryIndex(DIMENSION, exact_threshold=1)
    await index.upsert_many("t", _chunks(data))
    target = _vectors(1, seed=99)[0]
    assert "doc-7" not in await _ids(index, target)
    old = data[7]
    assert (await _ids(index, old))[0] == "doc-7"

    await index.upsert_many(
        "t", [IndexedChunk(pb.Document(doc_id="doc0", chunk_id="doc-7"), target.tolist(), "new")]
    )
    assert _graph_size(index, "t") == 500
    assert (await _ids(index, target))[0] == "doc-7"
    assert "doc-7" not in await _ids(index, old, top_k=20)
    replaced = await index.get("t", "doc-7")
    assert replaced is not None and replaced.content_hash == "new"

    assert await index.delete_chunks("t", ["doc-7", "doc-8", "nope"]) == 2
    assert _graph_size(index, "t") == 498
    assert "doc-7" not in await _ids(index, target, top_k=50)
    assert "doc-8" not in await _ids(index, data[8], top_k=50)
    # The chunk that filled a deleted row is still found, under its own id.
    assert (await _ids(index, data[499]))[0] == "doc-499"


async def test_crossing_the_threshold_switches_to_hnsw_with_the_same_answers() -> None:
    data, queries = _vectors(300), _vectors(40, seed=5)
    index = MemoryIndex(DIMENSION, exact_threshold=200)
    await index.upsert_many("t", _chunks(data[:150]))
    await index.upsert_many("t", _chunks(data[150:199], start=150))
    assert _graph_size(index, "t") is None
    # Clear-cut queries: a slightly perturbed copy of a stored vector.
    probes = data[::10] + 0.05 * queries[:30]
    before = [(await _ids(index, probe, top_k=1))[0] for probe in probes[:20]]

    await index.upsert_many("t", _chunks(data[199:], start=199))
    assert _graph_size(index, "t") == 300
    assert [(await _ids(index, probe, top_k=1))[0] for probe in probes[:20]] == before
    assert [(await _ids(index, probe, top_k=1))[0] for probe in probes] == [
        f"doc-{n}" for n in range(0, 300, 10)
    ]

    # Shrinking a little keeps the graph; below half the threshold the partition goes exact.
    await index.delete_chunks("t", [f"doc-{n}" for n in range(250, 300)])
    assert _graph_size(index, "t") == 250
    await index.delete_chunks("t", [f"doc-{n}" for n in range(99, 250)])
    assert _graph_size(index, "t") is None
    assert [(await _ids(index, probe, top_k=1))[0] for probe in probes[:10]] == [
        f"doc-{n}" for n in range(0, 100, 10)
    ]


async def test_a_disk_index_reopens_with_its_saved_graph(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, queries = _vectors(1000), _vectors(20, seed=3)
    first = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
    await first.upsert_many("t", _chunks(data[:600]))
    await first.upsert_many("t", _chunks(data[600:], start=600))
    await first.delete_chunks("t", ["doc-3"])
    expected = await _answers(first, queries)
    assert not _files(tmp_path, "*.tmp")

    with caplog.at_level(logging.WARNING):
        reopened = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
        assert await _answers(reopened, queries) == expected
    assert _graph_size(reopened, "t") == 999
    assert "rebuilding" not in caplog.text


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "stale", "other-params"])
async def test_a_missing_or_inconsistent_saved_graph_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    # A rebuilt graph is not the same graph (usearch inserts with several threads), so compare
    # clear-cut answers here; the full top 5 must match between two loads of the same saved graph.
    data, queries = _vectors(400), _vectors(20, seed=4)
    probes, wanted = _near(data[::20]), [f"doc-{n}" for n in range(0, 400, 20)]
    first = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
    await first.upsert_many("t", _chunks(data[:399]))
    [graph_file] = _files(tmp_path, GRAPH_FILE)
    stale = graph_file.read_bytes()
    await first.upsert_many("t", _chunks(data[399:], start=399))
    assert await _top1(first, probes) == wanted

    if damage == "missing":
        graph_file.unlink()
    elif damage == "garbage":
        graph_file.write_bytes(b"not a usearch index" * 10)
    elif damage == "truncated":
        graph_file.write_bytes(graph_file.read_bytes()[:200])
    elif damage == "stale":  # the graph saved one upsert ago: one key short
        graph_file.write_bytes(stale)
    else:  # the right keys and vectors, but stored at another precision than configured
        keys = np.arange(400, dtype=np.uint64)
        HnswIndex.build(DIMENSION, HnswParams(dtype="f32"), keys, data).save(graph_file)

    with caplog.at_level(logging.WARNING):
        reopened = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
        assert await _top1(reopened, probes) == wanted
    assert "rebuilding the HNSW graph" in caplog.text
    assert _graph_size(reopened, "t") == 400
    # The rebuilt graph was saved: the next start loads it as it is.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
        assert await _answers(again, queries) == await _answers(reopened, queries)
    assert "rebuilding" not in caplog.text


async def test_a_graph_whose_keys_match_but_vectors_do_not_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _vectors(200)
    first = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
    await first.upsert_many("t", _chunks(data))
    [graph_file] = _files(tmp_path, GRAPH_FILE)
    shuffled = np.random.default_rng(1).permutation(200).astype(np.uint64)
    HnswIndex.build(DIMENSION, HnswParams(), shuffled, data).save(graph_file)
    with caplog.at_level(logging.WARNING):
        reopened = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
        assert await _top1(reopened, _near(data[::10])) == [f"doc-{n}" for n in range(0, 200, 10)]
    assert "rebuilding the HNSW graph" in caplog.text


async def test_files_written_before_graph_keys_existed_still_load(tmp_path: Path) -> None:
    data = _vectors(300)
    probes, wanted = _near(data[::15]), [f"doc-{n}" for n in range(0, 300, 15)]
    first = DiskIndex(tmp_path, DIMENSION, exact_threshold=100)
    await first.upsert_many("t", _chunks(data))
    [meta] = _files(tmp_path, "chunks.jsonl")
    records = [json.loads(line) for line in meta.read_text().splitlines()]
    meta.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "key"}) + "\n" for r in records)
    )

    reopened = DiskIndex(tmp_path, DIMENSION, exact_threshold=100)
    assert await _top1(reopened, probes) == wanted
    assert _graph_size(reopened, "t") == 300
    assert all("key" in json.loads(line) for line in meta.read_text().splitlines())


async def test_wrong_dimensions_are_refused_before_the_graph_is_touched() -> None:
    index = MemoryIndex(DIMENSION, exact_threshold=1)
    await index.upsert_many("t", _chunks(_vectors(10)))
    bad = _chunks(_vectors(1, dimension=DIMENSION + 1), start=10)
    with pytest.raises(MeshError, match="33 dimensions; this index holds 32"):
        await index.upsert_many("t", _chunks(_vectors(1, seed=2), start=11) + bad)
    assert _graph_size(index, "t") == 10
    assert await index.get("t", "doc-11") is None
    with pytest.raises(MeshError, match="query has 33 dimensions"):
        await index.search(["t"], [0.1] * 33, top_k=1, min_score=0.0)


async def test_a_search_waits_for_an_upsert_already_under_way() -> None:
    index = MemoryIndex(DIMENSION, exact_threshold=1)
    await index.upsert_many("t", _chunks(_vectors(300)))
    target = _vectors(1, seed=77)[0]
    upsert = asyncio.create_task(index.upsert_many("t", _chunks(target[None, :], start=300)))
    await asyncio.sleep(0)  # the upsert now holds the partition, updating the graph in a thread
    assert (await _ids(index, target))[0] == "doc-300"
    await upsert


async def test_cancelled_calls_finish_their_work_and_release_the_partition(tmp_path: Path) -> None:
    index = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
    data = _vectors(300)
    await index.upsert_many("t", _chunks(data[:250]))
    upsert = asyncio.create_task(index.upsert_many("t", _chunks(data[250:], start=250)))
    await asyncio.sleep(0)  # the upsert holds the partition, in a worker thread
    search = asyncio.create_task(index.search(["t"], data[0].tolist(), top_k=5, min_score=0.0))
    await asyncio.sleep(0)  # the search waits for it
    upsert.cancel()
    search.cancel()
    for task in (upsert, search):
        with pytest.raises(asyncio.CancelledError):
            await task
    # The upsert had begun: it completed (graph and files), then reported its cancellation.
    assert _graph_size(index, "t") == 300
    reopened = DiskIndex(tmp_path, DIMENSION, exact_threshold=1)
    assert await _top1(reopened, _near(data[::30])) == [f"doc-{n}" for n in range(0, 300, 30)]

    # A delete cancelled while it waits behind a search never happens, and holds nothing back.
    search = asyncio.create_task(index.search(["t"], data[0].tolist(), top_k=1, min_score=0.0))
    await asyncio.sleep(0)
    delete = asyncio.create_task(index.delete_chunks("t", ["doc-1"]))
    await asyncio.sleep(0)
    delete.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delete
    [(found, _)] = await asyncio.wait_for(search, timeout=5)
    assert found.document.chunk_id == "doc-0"
    assert await asyncio.wait_for(index.delete_chunks("t", ["doc-0"]), timeout=5) == 1
    assert await index.get("t", "doc-1") is not None
