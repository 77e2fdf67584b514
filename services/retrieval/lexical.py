"""Lexical ranking: Okapi BM25 over one partition's chunks, and its fusion with vector scores.

Terms are accent-folded content words (Spanish and English stop words removed) with a light
plural stemmer, so "zapatillas" finds "zapatilla" and "devoluciones" finds "devolución". The
index is updated chunk by chunk, so it follows the vector store's upserts and deletions.

`fuse` is the hybrid score: lexical evidence can only raise the cosine, never lower it:
`1 - (1 - cosine) * (1 - 0.5 * lexical)`. `lexical` is the chunk's BM25 score over the score
of a chunk of average length holding every query term once (capped at 1; a term the partition
has never seen counts at full IDF, so a query matching little gets little). Exact names and
SKUs (BM25's strength) and paraphrases (the embedder's) both count, scores stay on the cosine
scale, and the embedder's calibrated threshold keeps its meaning. On the labelled set this
beats plain BM25 and the embedder alone (README: Retrieval quality).
"""

import math
from collections import Counter

from services.mesh.text import content_words

K1 = 1.2
B = 0.75
LEXICAL_WEIGHT = 0.5


def stem(word: str) -> str:
    """Strip Spanish and English plural endings: 'devoluciones' -> 'devolucion'."""
    if len(word) > 4 and word.endswith("es") and word[-3] in "nrlsdz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    return [stem(word) for word in content_words(text)]


class Bm25Index:
    """Incremental BM25 over keyed texts."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, int]] = {}
        self._lengths: dict[str, int] = {}
        self._terms_of: dict[str, list[str]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, key: str, text: str) -> None:
        self.remove(key)
        counts = Counter(terms(text))
        for term, count in counts.items():
            self._postings.setdefault(term, {})[key] = count
        length = sum(counts.values())
        self._terms_of[key] = list(counts)
        self._lengths[key] = length
        self._total_length += length

    def remove(self, key: str) -> None:
        length = self._lengths.pop(key, None)
        if length is None:
            return
        self._total_length -= length
        for term in self._terms_of.pop(key):
            del self._postings[term][key]
            if not self._postings[term]:
                del self._postings[term]

    def scores(self, query: str) -> dict[str, float]:
        """BM25 score of every key holding at least one query term."""
        return self._scores(set(terms(query)))

    def _scores(self, query_terms: set[str]) -> dict[str, float]:
        count = len(self._lengths)
        if not count:
            return {}
        average = self._total_length / count or 1.0
        found: dict[str, float] = {}
        for term in query_terms:
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (count - len(posting) + 0.5) / (len(posting) + 0.5))
            for key, frequency in posting.items():
                norm = frequency + K1 * (1 - B + B * self._lengths[key] / average)
                found[key] = found.get(key, 0.0) + idf * frequency * (K1 + 1) / norm
        return found

    def top(self, query: str, limit: int) -> list[tuple[str, float]]:
        ranked = sorted(self.scores(query).items(), key=lambda item: item[1], reverse=True)
        return ranked[:limit]

    def normalized_scores(self, query: str) -> dict[str, float]:
        """BM25 scores over the query's ceiling (every term once in a chunk of average length),
        capped at 1."""
        count = len(self._lengths)
        query_terms = set(terms(query))  # once: folding and stemming cost more than the scoring
        ceiling = sum(
            math.log(1 + (count - df + 0.5) / (df + 0.5))
            for df in (len(self._postings.get(term, ())) for term in query_terms)
        )
        if not ceiling:
            return {}
        return {key: min(1.0, score / ceiling) for key, score in self._scores(query_terms).items()}


def fuse(cosine: float, lexical: float, weight: float = LEXICAL_WEIGHT) -> float:
    """The hybrid score of one chunk (see the module docstring)."""
    return 1 - (1 - max(cosine, 0.0)) * (1 - weight * lexical)
