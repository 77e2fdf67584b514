"""Retrieval quality on the labelled set in `bench/data/retrieval`: recall@5 and MRR@10 for every
retriever available here, plus the score calibration behind each embedder's threshold.

Plain BM25 is the baseline. Every embedder is measured alone and hybrid with BM25 ("+ bm25",
the service's default), through the service's own code path (KnowledgeBase over the in-memory
store); BM25 alone ranks the same chunks directly.
Recall and MRR are measured without a threshold (ranking quality); the calibration lines show
where relevant and off-topic scores fall, which is how the default thresholds were chosen.
"""

import json
import os
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.retrieval.catalogue import parse_catalogue, product_document
from services.retrieval.chunking import chunk
from services.retrieval.embedders import Embedder
from services.retrieval.embedders.hashing import HashingEmbedder
from services.retrieval.embedders.minilm import MiniLmEmbedder
from services.retrieval.knowledge import KnowledgeBase, media_type
from services.retrieval.lexical import Bm25Index
from services.retrieval.stores.local import MemoryIndex
from services.retrieval.tenants import StaticTenantDirectory

DATA = Path(__file__).parent / "data" / "retrieval"
TENANT = "bench"
DEPTH = 10
OFF_TOPIC = [
    "receta de paella valenciana con marisco",
    "quantum chromodynamics lattice simulation",
    "horario del ayuntamiento para empadronarse",
    "best python web framework for microservices",
    "precio del alquiler de un piso en Madrid",
    "how to change a car tyre on the motorway",
    "resultados de la liga de fútbol de ayer",
    "what is the capital of Australia",
]


@dataclass(frozen=True)
class Query:
    id: str
    lang: str
    text: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class LabelledSet:
    documents: list[pb.Document]
    queries: list[Query]


@dataclass(frozen=True)
class Quality:
    name: str
    recall_at_5: float
    mrr: float
    recall_at_threshold: float
    """recall@5 keeping only hits at or above the embedder's calibrated threshold"""
    by_lang: dict[str, float]
    relevant_scores: list[float]
    off_topic_scores: list[float]


Ranker = Callable[[str], Awaitable[list[tuple[str, float]]]]


def load_set(folder: Path = DATA) -> LabelledSet:
    catalogue = (folder / "catalogue.jsonl").read_text(encoding="utf-8").splitlines()
    documents = []
    for line in parse_catalogue(catalogue):
        if line.product is None:
            raise ValueError(f"catalogue.jsonl line {line.line}: {line.error}")
        documents.append(product_document(line.product))
    for raw in (folder / "documents.jsonl").read_text(encoding="utf-8").splitlines():
        if raw.strip():
            record = json.loads(raw)
            documents.append(
                pb.Document(
                    doc_id=record["docId"],
                    text=record["text"],
                    metadata=pb.DocumentMetadata(
                        source=record["source"], lang=record["lang"], category=record["category"]
                    ),
                )
            )
    queries = [
        Query(r["id"], r["lang"], r["query"], frozenset(r["relevant"]))
        for r in map(json.loads, (folder / "queries.jsonl").read_text("utf-8").splitlines())
    ]
    return LabelledSet(documents, queries)


def best_per_document(hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Chunk hits (chunk id `<doc>#<n>`) to document hits, best chunk first, in order."""
    seen: dict[str, float] = {}
    for chunk_id, score in hits:
        seen.setdefault(chunk_id.rsplit("#", 1)[0], score)
    return list(seen.items())


async def measure(
    name: str, rank: Ranker, labelled: LabelledSet, threshold: float = 0.0
) -> Quality:
    recalls: dict[str, list[float]] = {}
    kept: list[float] = []
    reciprocal: list[float] = []
    relevant_scores: list[float] = []
    for query in labelled.queries:
        ranked = best_per_document(await rank(query.text))[:DEPTH]
        ids = [doc_id for doc_id, _ in ranked]
        found = len(query.relevant & set(ids[:5])) / len(query.relevant)
        recalls.setdefault(query.lang, []).append(found)
        above = {doc_id for doc_id, score in ranked[:5] if score >= threshold}
        kept.append(len(query.relevant & above) / len(query.relevant))
        first = next((n for n, doc_id in enumerate(ids, 1) if doc_id in query.relevant), None)
        reciprocal.append(1 / first if first else 0.0)
        relevant_scores += [score for doc_id, score in ranked if doc_id in query.relevant][:1]
    off_topic = []
    for text in OFF_TOPIC:
        ranked = best_per_document(await rank(text))
        off_topic.append(ranked[0][1] if ranked else 0.0)
    every = [value for values in recalls.values() for value in values]
    return Quality(
        name,
        statistics.fmean(every),
        statistics.fmean(reciprocal),
        statistics.fmean(kept),
        {lang: statistics.fmean(values) for lang, values in sorted(recalls.items())},
        relevant_scores,
        off_topic,
    )


def bm25_ranker(labelled: LabelledSet) -> Ranker:
    index = Bm25Index()
    for document in labelled.documents:
        for piece in chunk(document.text, media_type(document)):
            index.add(f"{document.doc_id}#{piece.index}", piece.text)

    async def rank(query: str) -> list[tuple[str, float]]:
        return index.top(query, DEPTH * 3)

    return rank


async def knowledge_ranker(embedder: Embedder, labelled: LabelledSet, hybrid: bool) -> Ranker:
    knowledge = KnowledgeBase(
        embedder,
        MemoryIndex(embedder.dimension),
        StaticTenantDirectory({TENANT}),
        hybrid=hybrid,
    )
    for start in range(0, len(labelled.documents), 100):
        await knowledge.upsert(TENANT, labelled.documents[start : start + 100])

    async def rank(query: str) -> list[tuple[str, float]]:
        hits = await knowledge.search(TENANT, query, DEPTH * 3, 1e-6, False)
        return [(hit.document.chunk_id, hit.score) for hit in hits]

    return rank


def available_embedders() -> list[Embedder]:
    found: list[Embedder] = [HashingEmbedder()]
    if MiniLmEmbedder.available():
        found.append(MiniLmEmbedder())
    if os.environ.get("AZURE_OPENAI_EMBEDDING_ENDPOINT") and os.environ.get(
        "AZURE_OPENAI_EMBEDDING_KEY"
    ):
        from services.retrieval.embedders.openai import OpenAIEmbedder

        found.append(
            OpenAIEmbedder.azure(
                endpoint=os.environ["AZURE_OPENAI_EMBEDDING_ENDPOINT"],
                deployment=os.environ.get(
                    "AZURE_OPENAI_EMBEDDING_DEPLOYMENT", "text-embedding-3-small"
                ),
                api_version=os.environ.get("AZURE_OPENAI_EMBEDDING_API_VERSION", "2024-10-21"),
                api_key=os.environ["AZURE_OPENAI_EMBEDDING_KEY"],
            )
        )
    return found


async def evaluate(embedders: list[Embedder], labelled: LabelledSet) -> list[Quality]:
    results = [await measure("bm25", bm25_ranker(labelled), labelled)]
    for embedder in embedders:
        for hybrid in (False, True):
            rank = await knowledge_ranker(embedder, labelled, hybrid)
            name = f"{embedder.name} + bm25" if hybrid else embedder.name
            threshold = embedder.default_threshold
            results.append(await measure(name, rank, labelled, threshold))
    return results


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def run() -> None:
    labelled = load_set()
    langs = sorted({query.lang for query in labelled.queries})
    print(
        f"\nretrieval quality: {len(labelled.queries)} queries over {len(labelled.documents)} "
        f"documents ({', '.join(langs)}); recall@5 and MRR@10 rank without a threshold, "
        "r@5 thr keeps hits above the embedder's calibrated one"
    )
    header = f"  {'retriever':<28}{'recall@5':>9}{'MRR@10':>8}{'r@5 thr':>9}"
    print(header + "".join(f"{'r@5 ' + lang:>9}" for lang in langs))
    results = await evaluate(available_embedders(), labelled)
    for quality in results:
        by_lang = "".join(f"{quality.by_lang.get(lang, 0.0):>9.3f}" for lang in langs)
        print(
            f"  {quality.name:<28}{quality.recall_at_5:>9.3f}{quality.mrr:>8.3f}"
            f"{quality.recall_at_threshold:>9.3f}{by_lang}"
        )
    baseline = results[0]
    for quality in results[1:]:
        print(
            f"  {quality.name}: recall@5 {quality.recall_at_5 / baseline.recall_at_5:.2f}x and "
            f"MRR {quality.mrr / baseline.mrr:.2f}x BM25's"
        )
    print("  calibration (score of the best relevant hit vs the best hit of off-topic queries):")
    for quality in results[1:]:
        print(
            f"    {quality.name:<26} relevant p10 {_percentile(quality.relevant_scores, 0.1):.3f}"
            f"  median {statistics.median(quality.relevant_scores or [0.0]):.3f}"
            f"  | off-topic max {max(quality.off_topic_scores, default=0.0):.3f}"
        )
