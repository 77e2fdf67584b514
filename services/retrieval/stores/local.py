"""The embedded vector stores, partitioned by tenant.

A search reads only the caller's partition and, when asked, the global one: another tenant's
vectors are never scanned, let alone returned. `MemoryIndex` keeps partitions in this process;
`DiskIndex` also persists each partition in a directory of its own (exact cosine search with
numpy; an approximate index for large tenants is the next step).
"""

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.retrieval.stores import IndexedChunk


@dataclass
class _Partition:
    chunks: dict[str, IndexedChunk] = field(default_factory=dict)
    matrix: np.ndarray | None = None
    order: list[str] = field(default_factory=list)

    def refresh(self, dimension: int) -> None:
        self.order = list(self.chunks)
        vectors = [self.chunks[chunk_id].vector for chunk_id in self.order]
        self.matrix = (
            np.asarray(vectors, dtype=np.float32)
            if vectors
            else np.zeros((0, dimension), dtype=np.float32)
        )


class MemoryIndex:
    """Exact cosine search over per-tenant partitions held in memory."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._partitions: dict[str, _Partition] = {}

    def _partition(self, name: str) -> _Partition:
        return self._partitions.setdefault(name, _Partition())

    def _check(self, chunks: Sequence[IndexedChunk]) -> None:
        for chunk in chunks:
            if len(chunk.vector) != self.dimension:
                raise ValueError(
                    f"vector has {len(chunk.vector)} dimensions; this index holds {self.dimension}"
                )

    async def upsert_many(self, partition: str, chunks: Sequence[IndexedChunk]) -> None:
        self._check(chunks)
        target = self._partition(partition)
        for chunk in chunks:
            target.chunks[chunk.document.chunk_id] = chunk
        target.refresh(self.dimension)
        await self._saved(partition, target)

    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None:
        return self._partition(partition).chunks.get(chunk_id)

    async def chunk_ids_of(self, partition: str, doc_id: str) -> list[str]:
        chunks = self._partition(partition).chunks
        return [key for key, chunk in chunks.items() if chunk.document.doc_id == doc_id]

    async def delete_chunks(self, partition: str, chunk_ids: Iterable[str]) -> int:
        target = self._partition(partition)
        doomed = [key for key in chunk_ids if key in target.chunks]
        for key in doomed:
            del target.chunks[key]
        if doomed:
            target.refresh(self.dimension)
            await self._saved(partition, target)
        return len(doomed)

    async def search(
        self, partitions: list[str], vector: list[float], top_k: int, min_score: float
    ) -> list[tuple[IndexedChunk, float]]:
        query = np.asarray(vector, dtype=np.float32)
        found: list[tuple[IndexedChunk, float]] = []
        for name in partitions:
            part = self._partition(name)
            if part.matrix is None or not part.order:
                continue
            scores = part.matrix @ query
            for row in np.flatnonzero(scores >= min_score):
                found.append((part.chunks[part.order[row]], float(scores[row])))
        found.sort(key=lambda item: item[1], reverse=True)
        return found[:top_k]

    async def _saved(self, name: str, partition: _Partition) -> None:
        """Persistence hook; in memory there is nothing to do."""


class DiskIndex(MemoryIndex):
    """MemoryIndex whose partitions live in `<directory>/<hash of the partition name>/`."""

    def __init__(self, directory: Path, dimension: int) -> None:
        super().__init__(dimension)
        self._directory = directory

    def _folder(self, name: str) -> Path:
        return self._directory / hashlib.sha256(name.encode()).hexdigest()[:24]

    def _partition(self, name: str) -> _Partition:
        if name not in self._partitions:
            self._partitions[name] = self._load(name)
        return self._partitions[name]

    def _load(self, name: str) -> _Partition:
        folder = self._folder(name)
        partition = _Partition()
        meta, vectors = folder / "chunks.jsonl", folder / "vectors.npy"
        if meta.exists() and vectors.exists():
            matrix = np.load(vectors)
            if matrix.shape[1:] != (self.dimension,):
                raise ValueError(
                    f"{folder} holds {matrix.shape[1]}-dimensional vectors; "
                    f"this index holds {self.dimension}"
                )
            for line, vector in zip(meta.read_text().splitlines(), matrix, strict=True):
                record = json.loads(line)
                document = json_format.ParseDict(record["document"], pb.Document())
                partition.chunks[document.chunk_id] = IndexedChunk(
                    document, vector.tolist(), record["contentHash"]
                )
        partition.refresh(self.dimension)
        return partition

    async def _saved(self, name: str, partition: _Partition) -> None:
        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps(
                {
                    "partition": name,
                    "contentHash": partition.chunks[key].content_hash,
                    "document": json_format.MessageToDict(partition.chunks[key].document),
                },
                ensure_ascii=False,
            )
            for key in partition.order
        ]
        _replace(folder / "chunks.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())
        matrix = partition.matrix if partition.matrix is not None else np.zeros((0, self.dimension))
        with (folder / "vectors.npy.tmp").open("wb") as handle:
            np.save(handle, matrix.astype(np.float32))
        os.replace(folder / "vectors.npy.tmp", folder / "vectors.npy")


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
