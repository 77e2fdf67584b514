"""The embedded vector stores, partitioned by tenant: exact for small tenants, HNSW for large ones.

A search reads only the caller's partition and, when asked, the global one: another tenant's
vectors are never scanned, let alone returned. `MemoryIndex` keeps partitions in this process;
`DiskIndex` also persists each partition in a directory of its own. Each partition has its own
matrix and its own graph; nothing is shared between partitions.

A partition keeps its vectors in one float32 matrix, a row per chunk (a delete moves the last row
into the hole; `get` and search hits carry the float32 values). Scores are cosines (for the unit
vectors our embedders produce, the dot product). A partition with fewer than `exact_threshold`
chunks is searched exactly: one matmul with numpy. On reaching the threshold it gets an HNSW
graph (usearch, see `hnsw.py`), built by the upsert that crosses it and then kept up to date
incrementally: each stored chunk version has an integer graph key, so replacing a chunk removes
its old key and adds a new one, and deleting removes its key. The graph only proposes candidates
(`oversample` x top_k); they are re-scored exactly against the matrix, filtered by `min_score` and
merged across partitions exactly like exact hits, so a chunk scores the same on either path. A
partition that shrinks below half the threshold drops its graph and is searched exactly again.

The default threshold, 20,000 chunks, comes from `python -m bench.vector_index` (384 dimensions,
two cores): at 20,000 chunks exact search costs about a millisecond at p99 and needs no graph
(its memory, its two-second single-thread build, its approximation); at 100,000 exact search
costs 5-15 ms at p99 while the graph answers in about a millisecond at p99 (half that at p50,
through the async store) with recall@5 about 0.99.

Concurrency: numpy and usearch work that can take more than a fraction of a millisecond (graph
builds and updates, searching a graph or a large matrix, converting a large batch, disk I/O) runs
in a worker thread. Each partition has a readers-writer lock: searches share it, upserts and
deletes (with their graph update and disk write) hold it alone, so a search never sees a
half-applied change. The bookkeeping (chunk id -> row, graph key -> row) changes only on the event
loop. A call cancelled once its work has begun finishes that work before it lets go of the lock.

On disk a partition is `chunks.jsonl` (document, content hash and graph key per row),
`vectors.npy` and, once it has a graph, `hnsw.usearch`; a change rewrites the three, each
atomically (temporary file, then os.replace), in a worker thread, reusing each chunk's serialised
record. On load a graph that is missing, unreadable, built with other parameters, or whose keys or
sampled vectors disagree with chunks.jsonl and vectors.npy is rebuilt from the vectors and saved.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from google.protobuf import json_format
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.retrieval.lexical import Bm25Index, fuse
from services.retrieval.stores import IndexedChunk, check_dimensions, dimension_mismatch
from services.retrieval.stores.hnsw import HnswIndex, HnswParams

log = logging.getLogger(__name__)

DEFAULT_EXACT_THRESHOLD = 20_000
HYBRID_POOL = 4
"""A hybrid search fuses the best HYBRID_POOL x top_k chunks by vector and by BM25."""
# Below this many matrix cells (rows x dimensions) numpy work stays on the event loop: it takes
# well under a millisecond, less than the hop to a worker thread and back would add.
_INLINE_CELLS = 1 << 20
GRAPH_FILE = "hnsw.usearch"

_T = TypeVar("_T")


async def _finish(work: Awaitable[_T]) -> _T:
    """Await `work`; if the caller is cancelled meanwhile, let `work` run to its end first.

    Callers hold a partition lock: a mutation must not be left half applied, nor a worker thread
    still reading or writing the partition, once the lock is released.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so it is not reported as never retrieved
        raise


async def _in_thread(function: Callable[..., _T], *args: object) -> _T:
    """Run `function(*args)` in a worker thread (finishing it even if the caller is cancelled)."""
    return await _finish(asyncio.to_thread(function, *args))


async def _maybe_in_thread(cells: int, function: Callable[..., _T], *args: object) -> _T:
    return await _in_thread(function, *args) if cells >= _INLINE_CELLS else function(*args)


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation).

    Acquiring may wait; releasing never does, so a cancelled task cannot leave the lock held.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        await self._until(lambda: not self._writing and not self._writers_waiting)
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if not self._readers:
                self._wake()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        self._writers_waiting += 1
        try:
            await self._until(lambda: not self._writing and not self._readers)
        finally:
            self._writers_waiting -= 1
            if not self._writers_waiting:
                self._wake()  # readers held back by this writer re-check (e.g. if it was cancelled)
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
            self._wake()


@dataclass(slots=True)
class _Entry:
    document: pb.Document
    content_hash: str
    key: int  # this version's key in the HNSW graph; a replaced chunk gets a new one
    line: str | None = None  # its chunks.jsonl record, kept by DiskIndex to avoid re-serialising


def _inverse_norms(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    with np.errstate(divide="ignore"):
        return np.where(norms > 0, 1.0 / norms, 0.0).astype(np.float32)


def _best(
    rows: np.ndarray, scores: np.ndarray, top_k: int, min_score: float
) -> list[tuple[int, float]]:
    """The (row, score) pairs of the top_k scores at or above min_score, best first."""
    if len(scores) > top_k:
        picked = np.argpartition(-scores, top_k - 1)[:top_k]
        rows, scores = rows[picked], scores[picked]
    keep = scores >= min_score
    rows, scores = rows[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return [(int(rows[i]), float(scores[i])) for i in order]


class _Partition:
    """One tenant's chunks: a float32 matrix (first `size` rows live) plus its bookkeeping."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.entries: list[_Entry] = []  # by matrix row
        self.rows: dict[str, int] = {}  # chunk id -> row
        self.key_rows: dict[int, int] = {}  # graph key -> row
        self.by_doc: dict[str, dict[str, None]] = {}  # doc id -> its chunk ids, in order
        self.matrix = np.zeros((0, dimension), dtype=np.float32)
        self.inv_norms = np.zeros(0, dtype=np.float32)
        self.next_key = 0
        self.graph: HnswIndex | None = None
        self.lexical = Bm25Index()
        self.lock = _ReadWriteLock()

    @property
    def size(self) -> int:
        return len(self.entries)

    def chunk(self, row: int) -> IndexedChunk:
        entry = self.entries[row]
        return IndexedChunk(entry.document, self.matrix[row].tolist(), entry.content_hash)

    def chunk_ids_of(self, doc_id: str) -> list[str]:
        return list(self.by_doc.get(doc_id, ()))

    def _resize(self, capacity: int) -> None:
        matrix = np.zeros((capacity, self.dimension), dtype=np.float32)
        inv_norms = np.zeros(capacity, dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        inv_norms[: self.size] = self.inv_norms[: self.size]
        self.matrix, self.inv_norms = matrix, inv_norms

    def _remember(self, row: int, entry: _Entry) -> None:
        self.lexical.add(entry.document.chunk_id, entry.document.text)
        self.rows[entry.document.chunk_id] = row
        self.key_rows[entry.key] = row
        self.by_doc.setdefault(entry.document.doc_id, {})[entry.document.chunk_id] = None

    def _forget(self, entry: _Entry, keep_doc: bool = False) -> None:
        del self.key_rows[entry.key]
        chunk_ids = self.by_doc.get(entry.document.doc_id, {})
        if not keep_doc:
            chunk_ids.pop(entry.document.chunk_id, None)
            if not chunk_ids:
                self.by_doc.pop(entry.document.doc_id, None)

    def restore(self, entries: list[_Entry], vectors: np.ndarray) -> bool:
        """Fill an empty partition from disk. Keys that are missing (files from before the graph)
        or repeated are all reassigned, and then False is returned: a saved graph cannot match."""
        keys = [entry.key for entry in entries]
        kept = all(key >= 0 for key in keys) and len(set(keys)) == len(keys)
        if not kept:
            for n, entry in enumerate(entries):
                entry.key, entry.line = n, None
        self.entries = entries
        for row, entry in enumerate(entries):
            self._remember(row, entry)
        self.next_key = max((entry.key for entry in entries), default=-1) + 1
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        self.inv_norms = _inverse_norms(self.matrix)
        return kept

    def put(
        self, chunks: Sequence[IndexedChunk], vectors: np.ndarray
    ) -> tuple[list[int], list[int]]:
        """Insert or replace chunks by chunk id (the last of repeated ids wins); returns the graph
        keys removed and the rows written."""
        latest = {chunk.document.chunk_id: n for n, chunk in enumerate(chunks)}
        if self.size + len(latest) > len(self.matrix):
            self._resize(max(self.size + len(latest), len(self.matrix) * 3 // 2, 64))
        removed: list[int] = []
        rows: list[int] = []
        for chunk_id, n in latest.items():
            chunk = chunks[n]
            entry = _Entry(chunk.document, chunk.content_hash, self.next_key)
            self.next_key += 1
            row = self.rows.get(chunk_id)
            if row is None:
                row = self.size
                self.entries.append(entry)
            else:
                old = self.entries[row]
                removed.append(old.key)
                self._forget(old, keep_doc=old.document.doc_id == chunk.document.doc_id)
                self.entries[row] = entry
            self._remember(row, entry)
            rows.append(row)
        written = vectors[list(latest.values())]
        self.matrix[rows] = written
        self.inv_norms[rows] = _inverse_norms(written)
        return removed, rows

    def remove(self, chunk_ids: Iterable[str]) -> list[int]:
        """Delete chunks by id; returns the graph keys removed (one per chunk deleted)."""
        removed: list[int] = []
        for chunk_id in chunk_ids:
            row = self.rows.pop(chunk_id, None)
            if row is None:
                continue
            entry = self.entries[row]
            removed.append(entry.key)
            self._forget(entry)
            self.lexical.remove(chunk_id)
            last = self.size - 1
            moved = self.entries.pop()
            if row != last:
                self.entries[row] = moved
                self._remember(row, moved)
                self.matrix[row] = self.matrix[last]
                self.inv_norms[row] = self.inv_norms[last]
        if len(self.matrix) > 2 * self.size + 1024:
            self._resize(self.size)
        return removed

    def keys(self) -> np.ndarray:
        return np.fromiter((entry.key for entry in self.entries), dtype=np.uint64, count=self.size)

    def build_graph(self, params: HnswParams) -> HnswIndex:
        return HnswIndex.build(self.dimension, params, self.keys(), self.matrix[: self.size])

    def update_graph(self, graph: HnswIndex, removed: list[int], rows: list[int]) -> None:
        graph.remove(np.asarray(removed, dtype=np.uint64))
        keys = np.asarray([self.entries[row].key for row in rows], dtype=np.uint64)
        graph.add(keys, self.matrix[rows])

    def exact(self, query: np.ndarray, top_k: int, min_score: float) -> list[tuple[int, float]]:
        n = self.size
        if not n or top_k <= 0:
            return []
        scores = (self.matrix[:n] @ query) * self.inv_norms[:n]
        return _best(np.arange(n), scores, top_k, min_score)

    def approximate(
        self, graph: HnswIndex, query: np.ndarray, top_k: int, min_score: float
    ) -> list[tuple[int, float]]:
        if top_k <= 0:
            return []
        count = min(self.size, top_k * max(graph.params.oversample, 1))
        found = graph.candidates(query, count).tolist()
        rows = np.asarray([self.key_rows[key] for key in found if key in self.key_rows], np.int64)
        scores = (self.matrix[rows] @ query) * self.inv_norms[rows]
        return _best(rows, scores, top_k, min_score)

    def hybrid(
        self,
        graph: HnswIndex | None,
        query: np.ndarray,
        text: str,
        top_k: int,
        min_score: float,
    ) -> list[tuple[int, float]]:
        """Vector and BM25 candidates (HYBRID_POOL x top_k of each), scored by `fuse`."""
        pool = top_k * HYBRID_POOL
        vector_hits = (
            self.approximate(graph, query, pool, -1.0)
            if graph is not None
            else self.exact(query, pool, -1.0)
        )
        lexical = self.lexical.normalized_scores(text)
        best_lexical = sorted(lexical, key=lexical.__getitem__, reverse=True)[:pool]
        rows = dict(vector_hits)
        missing = np.asarray(
            [r for r in (self.rows[c] for c in best_lexical) if r not in rows], dtype=np.int64
        )
        if len(missing):
            cosines = (self.matrix[missing] @ query) * self.inv_norms[missing]
            rows.update(zip(missing.tolist(), cosines.tolist(), strict=True))
        ordered = np.fromiter(rows, dtype=np.int64, count=len(rows))
        scores = np.asarray(
            [
                fuse(cosine, lexical.get(self.entries[row].document.chunk_id, 0.0))
                for row, cosine in rows.items()
            ],
            dtype=np.float32,
        )
        return _best(ordered, scores, top_k, min_score)


class MemoryIndex:
    """Cosine search over per-tenant partitions held in memory: exact below `exact_threshold`
    chunks per partition, HNSW (re-scored exactly) at or above it."""

    def __init__(
        self,
        dimension: int,
        *,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        hnsw: HnswParams | None = None,
    ) -> None:
        if exact_threshold < 1:
            raise ValueError("exact_threshold must be at least 1")
        self.dimension = dimension
        self.exact_threshold = exact_threshold
        self.hnsw = hnsw or HnswParams()
        self._partitions: dict[str, _Partition] = {}

    @property
    def _drop_below(self) -> int:
        """A partition with a graph keeps it until it shrinks below this (hysteresis)."""
        return self.exact_threshold // 2

    async def _existing(self, name: str) -> _Partition | None:
        return self._partitions.get(name)

    async def _partition(self, name: str) -> _Partition:
        found = await self._existing(name)
        if found is None:
            found = self._partitions.setdefault(name, _Partition(self.dimension))
        return found

    def _query(self, vector: list[float]) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self.dimension,):
            raise dimension_mismatch(len(vector), self.dimension, "query")
        norm = float(np.linalg.norm(query))
        return query / np.float32(norm) if norm else query

    async def upsert_many(self, partition: str, chunks: Sequence[IndexedChunk]) -> None:
        check_dimensions(chunks, self.dimension)
        if not chunks:
            return
        vectors = await _maybe_in_thread(
            len(chunks) * self.dimension, np.asarray, [c.vector for c in chunks], np.float32
        )
        target = await self._partition(partition)
        async with target.lock.writing():
            removed, rows = target.put(chunks, vectors)
            await _finish(self._follow(partition, target, removed, rows))

    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None:
        found = await self._existing(partition)
        row = None if found is None else found.rows.get(chunk_id)
        return None if found is None or row is None else found.chunk(row)

    async def chunk_ids_of(self, partition: str, doc_id: str) -> list[str]:
        found = await self._existing(partition)
        return [] if found is None else found.chunk_ids_of(doc_id)

    async def delete_chunks(self, partition: str, chunk_ids: Iterable[str]) -> int:
        target = await self._existing(partition)
        if target is None:
            return 0
        async with target.lock.writing():
            removed = target.remove(chunk_ids)
            if removed:
                await _finish(self._follow(partition, target, removed, []))
        return len(removed)

    async def search(
        self,
        partitions: list[str],
        vector: list[float],
        top_k: int,
        min_score: float,
        query_text: str = "",
    ) -> list[tuple[IndexedChunk, float]]:
        query = self._query(vector)
        found: list[tuple[IndexedChunk, float]] = []
        for name in dict.fromkeys(partitions):
            part = await self._existing(name)
            if part is not None and part.size:
                found.extend(
                    await self._search_partition(part, query, top_k, min_score, query_text)
                )
        found.sort(key=lambda item: item[1], reverse=True)
        return found[:top_k]

    async def _search_partition(
        self, part: _Partition, query: np.ndarray, top_k: int, min_score: float, text: str
    ) -> list[tuple[IndexedChunk, float]]:
        """One partition's best top_k at or above min_score, under its read lock."""
        async with part.lock.reading():
            if text:
                hits = await _maybe_in_thread(
                    part.size * self.dimension,
                    part.hybrid,
                    part.graph,
                    query,
                    text,
                    top_k,
                    min_score,
                )
            elif part.graph is not None:
                hits = await _in_thread(part.approximate, part.graph, query, top_k, min_score)
            else:
                hits = await _maybe_in_thread(
                    part.size * self.dimension, part.exact, query, top_k, min_score
                )
            return [(part.chunk(row), score) for row, score in hits]

    async def _follow(
        self, name: str, part: _Partition, removed: list[int], rows: list[int]
    ) -> None:
        """After a change to the partition's rows (under its write lock): graph, then disk."""
        await self._reindex(part, removed, rows)
        await self._saved(name, part)

    async def _reindex(self, part: _Partition, removed: list[int], rows: list[int]) -> None:
        """Bring the partition's graph in line with a mutation: graph keys `removed` are gone and
        `rows` were written."""
        try:
            if part.graph is not None and part.size < max(self._drop_below, 1):
                part.graph = None
            elif part.graph is not None:
                await _in_thread(part.update_graph, part.graph, removed, rows)
            elif part.size >= self.exact_threshold:
                part.graph = await _in_thread(part.build_graph, self.hnsw)
        except Exception:
            # The exact path stays correct; the next mutation at or above the threshold rebuilds.
            log.exception("HNSW graph update failed; the partition is searched exactly meanwhile")
            part.graph = None

    async def _saved(self, name: str, partition: _Partition) -> None:
        """Persistence hook (held under the partition's write lock); in memory, nothing to do."""


class DiskIndex(MemoryIndex):
    """MemoryIndex whose partitions live in `<directory>/<hash of the partition name>/`."""

    def __init__(
        self,
        directory: Path,
        dimension: int,
        *,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        hnsw: HnswParams | None = None,
    ) -> None:
        super().__init__(dimension, exact_threshold=exact_threshold, hnsw=hnsw)
        self._directory = directory
        self._loading: dict[str, asyncio.Lock] = {}

    def _folder(self, name: str) -> Path:
        return self._directory / hashlib.sha256(name.encode()).hexdigest()[:24]

    def _on_disk(self, name: str) -> bool:
        folder = self._folder(name)
        return (folder / "chunks.jsonl").exists() and (folder / "vectors.npy").exists()

    async def _existing(self, name: str) -> _Partition | None:
        """The partition, loaded from disk (in a worker thread) on first use; None if it has
        never been written."""
        if name not in self._partitions:
            if not self._on_disk(name):  # two stat calls: not worth a thread
                return None
            async with self._loading.setdefault(name, asyncio.Lock()):
                if name not in self._partitions:
                    self._partitions[name] = await _in_thread(self._load, name)
            self._loading.pop(name, None)
        return self._partitions[name]

    def _load(self, name: str) -> _Partition:
        folder = self._folder(name)
        meta, vectors = folder / "chunks.jsonl", folder / "vectors.npy"
        matrix = np.load(vectors)
        if matrix.shape[1:] != (self.dimension,):
            raise dimension_mismatch(matrix.shape[1], self.dimension, f"{folder.name}'s vectors")
        lines = meta.read_text(encoding="utf-8").splitlines()
        if len(lines) != len(matrix):
            raise ValueError(f"{folder}: {len(lines)} chunks but {len(matrix)} vectors")
        entries = []
        for line in lines:
            record = json.loads(line)
            document = json_format.ParseDict(record["document"], pb.Document())
            entries.append(_Entry(document, record["contentHash"], record.get("key", -1), line))
        partition = _Partition(self.dimension)
        keys_kept = partition.restore(entries, matrix)
        if partition.size >= max(self._drop_below, 1):
            if keys_kept:
                partition.graph = HnswIndex.load(
                    folder / GRAPH_FILE, self.dimension, self.hnsw, partition.keys(), matrix
                )
            if partition.graph is None and partition.size >= self.exact_threshold:
                log.warning("rebuilding the HNSW graph of %s from its vectors", folder)
                partition.graph = partition.build_graph(self.hnsw)
                try:
                    self._write(name, partition)
                except OSError:
                    log.exception("could not save the rebuilt HNSW graph of %s", folder)
        return partition

    async def _saved(self, name: str, partition: _Partition) -> None:
        await _in_thread(self._write, name, partition)

    def _write(self, name: str, partition: _Partition) -> None:
        """Rewrite the partition's files (vectors, then chunks, then graph), each atomically."""
        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        size = partition.size
        _replace(folder / "vectors.npy", lambda out: np.save(out, partition.matrix[:size]))
        lines = []
        for entry in partition.entries:
            if entry.line is None:
                entry.line = json.dumps(
                    {
                        "partition": name,
                        "key": entry.key,
                        "contentHash": entry.content_hash,
                        "document": json_format.MessageToDict(entry.document),
                    },
                    ensure_ascii=False,
                )
            lines.append(entry.line)
        data = ("\n".join(lines) + "\n" if lines else "").encode()
        _replace(folder / "chunks.jsonl", lambda out: out.write(data))
        if partition.graph is not None:
            partition.graph.save(folder / GRAPH_FILE)
        else:
            (folder / GRAPH_FILE).unlink(missing_ok=True)


def _replace(path: Path, write: Callable[[BinaryIO], object]) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
