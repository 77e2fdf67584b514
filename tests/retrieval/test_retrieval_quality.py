"""The offline path against plain BM25 on the shipped labelled set (deterministic: no model)."""

from bench.retrieval_quality import evaluate, load_set
from services.retrieval.embedders.hashing import HashingEmbedder


def test_the_labelled_set_is_big_enough_and_consistent() -> None:
    labelled = load_set()
    ids = [document.doc_id for document in labelled.documents]
    assert len(ids) == len(set(ids)) >= 200
    assert len(labelled.queries) >= 50
    assert {query.lang for query in labelled.queries} == {"es", "en"}
    assert all(query.relevant <= set(ids) for query in labelled.queries)


async def test_the_offline_hybrid_default_beats_plain_bm25() -> None:
    bm25, vector_only, hybrid = await evaluate([HashingEmbedder()], load_set())
    assert (bm25.name, vector_only.name, hybrid.name) == (
        "bm25",
        "offline-hashing-v1",
        "offline-hashing-v1 + bm25",
    )
    assert hybrid.recall_at_5 > bm25.recall_at_5
    assert hybrid.mrr > bm25.mrr
    assert hybrid.recall_at_5 > vector_only.recall_at_5
    assert hybrid.recall_at_threshold >= 0.97 * hybrid.recall_at_5, "threshold too strict"
