"""The production vector store: MongoDB Atlas or Azure Cosmos DB for MongoDB vCore.

One collection holds every tenant's chunks in the seed's VectorDocument shape (tenantId, docId,
text, embedding, metadata, visibility, createdAt) plus chunkId and contentHash. Every search is
pre-filtered by tenant in the database (`tenantId $in [tenant, "__global__"]`), never after the
fact. Atlas speaks `$vectorSearch` (its score is (1 + cosine) / 2, converted back here); Cosmos DB
vCore speaks `$search.cosmosSearch` (its COS score is the cosine). The driver is PyMongo's
`AsyncMongoClient` (Motor is deprecated), installed with the `mongodb` extra.
"""

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from google.protobuf import json_format
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb

from services.mesh.errors import failed_precondition, unavailable
from services.retrieval.stores import IndexedChunk, check_dimensions

log = logging.getLogger(__name__)
Dialect = Literal["atlas", "cosmos"]
INDEX_NAME = "tenant_embeddings_index"
COSMOS_HOST_SUFFIX = ".mongocluster.cosmos.azure.com"


def dialect_of(url: str) -> Dialect:
    """Cosmos DB for MongoDB vCore by its host name; anything else speaks Atlas."""
    hosts = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    names = [host.split(":", 1)[0].lower() for host in hosts.split(",")]
    return "cosmos" if all(name.endswith(COSMOS_HOST_SUFFIX) for name in names) else "atlas"


def atlas_index_definition(dimensions: int, name: str = INDEX_NAME) -> dict[str, Any]:
    """The seed's `tenant_embeddings_index`, with the fields searches pre-filter on."""
    return {
        "name": name,
        "type": "vectorSearch",
        "definition": {
            "fields": [
                {
                    "type": "vector",
                    "path": "embedding",
                    "numDimensions": dimensions,
                    "similarity": "cosine",
                },
                {"type": "filter", "path": "tenantId"},
                {"type": "filter", "path": "docId"},
            ]
        },
    }


def cosmos_index_command(
    collection: str, dimensions: int, name: str = INDEX_NAME
) -> dict[str, Any]:
    """The `createIndexes` command of an HNSW cosine index on Cosmos DB for MongoDB vCore."""
    return {
        "createIndexes": collection,
        "indexes": [
            {
                "name": name,
                "key": {"embedding": "cosmosSearch"},
                "cosmosSearchOptions": {
                    "kind": "vector-hnsw",
                    "m": 16,
                    "efConstruction": 64,
                    "similarity": "COS",
                    "dimensions": dimensions,
                },
            },
            {"name": "tenant_doc", "key": {"tenantId": 1, "docId": 1}},
        ],
    }


def search_pipeline(
    dialect: Dialect,
    partitions: Sequence[str],
    vector: Sequence[float],
    top_k: int,
    min_score: float,
    index_name: str = INDEX_NAME,
) -> list[dict[str, Any]]:
    """The aggregation that finds the nearest chunks of `partitions`, scored as cosine."""
    tenant_filter = {"tenantId": {"$in": list(partitions)}}
    if dialect == "atlas":
        return [
            {
                "$vectorSearch": {
                    "index": index_name,
                    "path": "embedding",
                    "queryVector": list(vector),
                    "numCandidates": max(top_k * 20, 100),
                    "limit": top_k,
                    "filter": tenant_filter,
                }
            },
            {
                "$set": {
                    "score": {
                        "$multiply": [{"$subtract": [{"$meta": "vectorSearchScore"}, 0.5]}, 2]
                    }
                }
            },
            {"$project": {"embedding": 0}},
            {"$match": {"score": {"$gte": min_score}}},
        ]
    return [
        {
            "$search": {
                "cosmosSearch": {
                    "vector": list(vector),
                    "path": "embedding",
                    "k": top_k,
                    "filter": tenant_filter,
                },
                "returnStoredSource": True,
            }
        },
        {"$set": {"score": {"$meta": "searchScore"}}},
        {"$project": {"embedding": 0}},
        {"$match": {"score": {"$gte": min_score}}},
    ]


def to_record(partition: str, chunk: IndexedChunk) -> dict[str, Any]:
    document = chunk.document
    return {
        "_id": f"{partition}/{document.chunk_id}",
        "tenantId": partition,
        "docId": document.doc_id,
        "chunkId": document.chunk_id,
        "text": document.text,
        "embedding": list(chunk.vector),
        "metadata": json_format.MessageToDict(document.metadata),
        "visibility": "global" if document.visibility == pb.VISIBILITY_GLOBAL else "tenant",
        "createdAt": document.created_at.ToDatetime() if document.HasField("created_at") else None,
        "contentHash": chunk.content_hash,
    }


def from_record(record: dict[str, Any]) -> IndexedChunk:
    document = pb.Document(
        doc_id=record["docId"],
        chunk_id=record["chunkId"],
        text=record["text"],
        tenant_id=record["tenantId"],
        visibility=pb.VISIBILITY_GLOBAL
        if record.get("visibility") == "global"
        else pb.VISIBILITY_TENANT,
    )
    json_format.ParseDict(record.get("metadata", {}), document.metadata)
    if record.get("createdAt") is not None:
        document.created_at.FromDatetime(record["createdAt"])
    return IndexedChunk(document, list(record.get("embedding", [])), record.get("contentHash", ""))


CODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _code(error: Exception) -> str:
    """The server's numeric error code, or "none" (errors the driver raised itself)."""
    code = getattr(error, "code", None)
    return str(code) if isinstance(code, int) and not isinstance(code, bool) else "none"


def _code_name(error: Exception) -> str:
    """The server's symbolic code ("IndexNotFound"), when it gave one that is a name."""
    details = getattr(error, "details", None)
    name = details.get("codeName") if isinstance(details, Mapping) else None
    return name if isinstance(name, str) and CODE_NAME.fullmatch(name) else ""


@contextmanager
def _driver_errors() -> Iterator[None]:
    """Network, server selection and timeouts are UNAVAILABLE (worth retrying); anything else
    the server refuses (a missing index, a bad pipeline) is FAILED_PRECONDITION, not retried."""
    from pymongo.errors import (
        ConnectionFailure,
        ExecutionTimeout,
        NetworkTimeout,
        PyMongoError,
        WaitQueueTimeoutError,
    )

    try:
        yield
    except (ConnectionFailure, NetworkTimeout, ExecutionTimeout, WaitQueueTimeoutError) as error:
        raise unavailable(f"the vector store failed: {type(error).__name__}") from None
    except PyMongoError as error:
        # the class and the server's code only: the driver's message may carry a host name or
        # the connection string with its password
        log.error(
            "the vector store refused an operation: %s (code %s%s)",
            type(error).__name__,
            _code(error),
            f" {name}" if (name := _code_name(error)) else "",
        )
        raise failed_precondition(
            f"the vector store refused the operation: {type(error).__name__}",
            reason="VECTOR_STORE_REFUSED",
        ) from None


class MongoVectorStore:
    """VectorStore on one MongoDB collection (Atlas or Cosmos DB vCore)."""

    def __init__(
        self, collection: Any, dimension: int, dialect: Dialect, index_name: str = INDEX_NAME
    ) -> None:
        self._collection = collection
        self.dimension = dimension
        self.dialect: Dialect = dialect
        self.index_name = index_name

    @classmethod
    def connect(
        cls,
        uri: str,
        database: str,
        collection: str,
        dimension: int,
        dialect: Dialect,
        index_name: str = INDEX_NAME,
        timeout_ms: int = 3000,
    ) -> "MongoVectorStore":
        try:
            from pymongo import AsyncMongoClient
        except ImportError as missing:
            raise ImportError(
                "the MongoDB vector store needs the 'mongodb' extra: "
                "pip install 'metaagent[mongodb]'"
            ) from missing
        client: Any = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, timeoutMS=timeout_ms * 3
        )
        return cls(client[database][collection], dimension, dialect, index_name)

    async def upsert_many(self, partition: str, chunks: Sequence[IndexedChunk]) -> None:
        from pymongo import ReplaceOne

        check_dimensions(chunks, self.dimension)
        operations = [
            ReplaceOne(
                {"_id": f"{partition}/{c.document.chunk_id}"}, to_record(partition, c), upsert=True
            )
            for c in chunks
        ]
        if operations:
            with _driver_errors():
                await self._collection.bulk_write(operations, ordered=True)

    async def get(self, partition: str, chunk_id: str) -> IndexedChunk | None:
        with _driver_errors():
            record = await self._collection.find_one({"_id": f"{partition}/{chunk_id}"})
        return None if record is None else from_record(record)

    async def chunk_ids_of(self, partition: str, doc_id: str) -> list[str]:
        with _driver_errors():
            cursor = self._collection.find(
                {"tenantId": partition, "docId": doc_id}, {"chunkId": 1, "_id": 0}
            )
            return [record["chunkId"] async for record in cursor]

    async def delete_chunks(self, partition: str, chunk_ids: Iterable[str]) -> int:
        ids = [f"{partition}/{chunk_id}" for chunk_id in chunk_ids]
        if not ids:
            return 0
        with _driver_errors():
            result = await self._collection.delete_many(
                {"_id": {"$in": ids}, "tenantId": partition}
            )
        return int(result.deleted_count)

    async def search(
        self,
        partitions: list[str],
        vector: list[float],
        top_k: int,
        min_score: float,
        query_text: str = "",
    ) -> list[tuple[IndexedChunk, float]]:
        """Vector search only: `query_text` is ignored (hybrid ranking in MongoDB needs an Atlas
        Search text index and `$rankFusion`, not set up by this adapter)."""
        pipeline = search_pipeline(
            self.dialect, partitions, vector, top_k, min_score, self.index_name
        )
        with _driver_errors():
            cursor = await self._collection.aggregate(pipeline)
            return [(from_record(record), float(record["score"])) async for record in cursor]
