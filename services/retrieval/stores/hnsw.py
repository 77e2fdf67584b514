"""Approximate nearest-neighbour search for large partitions: a thin wrapper over usearch's HNSW.

The graph only proposes candidates: the local store re-scores them exactly against its float32
matrix, so a chunk's score is the same whichever path found it and the graph may store its vectors
at lower precision (half precision by default, which halves memory and speeds up the walk).

usearch keys are unsigned integers, so the store hands out a fresh key per stored chunk version
(replacing a chunk removes its old key and adds a new one) and keeps the key <-> chunk mapping
itself. Every method here is blocking and CPU- or I/O-heavy: call them off the event loop.
"""

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index


@dataclass(frozen=True)
class HnswParams:
    """Tuned on 100,000 clustered 384-dimensional vectors (`python -m bench.vector_index`):
    recall@5 about 0.99 against exact search; a search takes about 0.3 ms at p50 and under 1 ms
    at p99, against 4-5 ms and 6-15 ms for the exact scan.

    expansion_search 64 gave recall 0.95 there and 128 gave 0.99 for 0.1 ms more; raising
    expansion_add to 128 instead cost twice the build time for less. f32 storage was slower for
    the same recall, i8 plateaued near 0.98; f16 halves the graph's copy of the vectors.
    """

    connectivity: int = 16
    expansion_add: int = 64
    expansion_search: int = 128
    dtype: str = "f16"
    # Insertion threads. usearch's concurrent insertion left a few vectors unreachable in our
    # measurements (a stored vector not found even when searching for itself); one thread leaves
    # none, builds the same graph from the same input, and leaves the other cores to searches.
    threads: int = 1
    # Candidates asked of the graph per result wanted, re-scored exactly: spares make up for
    # ranking errors of the half-precision distances. They cost next to nothing (the walk visits
    # expansion_search nodes anyway), nor did they change recall measurably at 2 or 4.
    oversample: int = 2


class HnswIndex:
    """One partition's HNSW graph (cosine metric), keyed by the store's integer keys."""

    def __init__(self, dimension: int, params: HnswParams, index: Index | None = None) -> None:
        self.dimension = dimension
        self.params = params
        self._index = index if index is not None else self._empty()

    def _empty(self) -> Index:
        return Index(
            ndim=self.dimension,
            metric="cos",
            dtype=self.params.dtype,
            connectivity=self.params.connectivity,
            expansion_add=self.params.expansion_add,
            expansion_search=self.params.expansion_search,
        )

    @classmethod
    def build(
        cls, dimension: int, params: HnswParams, keys: np.ndarray, vectors: np.ndarray
    ) -> "HnswIndex":
        index = cls(dimension, params)
        index.add(keys, vectors)
        return index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._index.add(np.asarray(keys, dtype=np.uint64), vectors, threads=self.params.threads)

    def remove(self, keys: np.ndarray) -> None:
        if len(keys):
            self._index.remove(np.asarray(keys, dtype=np.uint64))

    def candidates(self, query: np.ndarray, count: int) -> np.ndarray:
        """Keys of (about) the `count` nearest vectors to `query`, nearest first."""
        if count <= 0 or not len(self._index):
            return np.zeros(0, dtype=np.uint64)
        matches = self._index.search(query, count, threads=1)
        return np.asarray(matches.keys, dtype=np.uint64)

    def save(self, path: Path) -> None:
        """Write the graph to `path` atomically (a temporary file, then os.replace)."""
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._index.save(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(
        cls, path: Path, dimension: int, params: HnswParams, keys: np.ndarray, vectors: np.ndarray
    ) -> "HnswIndex | None":
        """The graph saved at `path`, or None when it is missing, unreadable, built with other
        parameters, does not hold exactly `keys`, or a sample of its vectors is not those of the
        same keys in `vectors` (row n belongs to keys[n]); the caller then rebuilds it."""
        if not path.exists():
            return None
        try:
            index = Index.restore(str(path))
        except (ValueError, RuntimeError, OSError):
            return None
        if index is None:
            return None
        template = cls(dimension, params)._index
        if (
            index.ndim != dimension
            or index.metric_kind != template.metric_kind
            or index.dtype != template.dtype
            or index.connectivity != params.connectivity
            or len(index) != len(keys)
        ):
            return None
        keys = np.asarray(keys, dtype=np.uint64)
        if not np.array_equal(np.sort(np.asarray(index.keys, dtype=np.uint64)), np.sort(keys)):
            return None
        if not _same_vectors(index, keys, vectors):
            return None
        # usearch has setters for these, but its setters are unannotated so mypy sees read-only.
        index.expansion_add = params.expansion_add  # type: ignore[misc]
        index.expansion_search = params.expansion_search  # type: ignore[misc]
        return cls(dimension, params, index)


def _same_vectors(index: Index, keys: np.ndarray, vectors: np.ndarray, sample: int = 32) -> bool:
    """Whether the graph stores (up to quantisation) the given vectors under a sample of keys."""
    if not len(keys):
        return True
    picked = np.unique(np.linspace(0, len(keys) - 1, num=min(sample, len(keys))).astype(np.int64))
    found = index.get(keys[picked])
    if not isinstance(found, tuple):  # usearch answers a batch of keys with a tuple
        return False
    for row, stored in zip(picked, found, strict=True):
        if stored is None:
            return False
        ours, theirs = vectors[row].astype(np.float64), np.asarray(stored, dtype=np.float64)
        norms = float(np.linalg.norm(ours) * np.linalg.norm(theirs))
        if norms and float(ours @ theirs) / norms < 0.98:
            return False
    return True
