"""The MongoDB / Cosmos DB adapter: the pipelines and indexes it builds, and (when MONGODB_URI
is set) the vector-store contract against a real server."""

import logging
import math
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2 as pb
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    OperationFailure,
    PyMongoError,
)

from services.mesh.errors import MeshError
from services.retrieval.stores import GLOBAL_PARTITION, IndexedChunk
from services.retrieval.stores.mongo import (
    MongoVectorStore,
    atlas_index_definition,
    cosmos_index_command,
    from_record,
    search_pipeline,
    to_record,
)

VECTOR = [0.6, 0.8, 0.0]


@pytest.mark.parametrize("dialect", ["atlas", "cosmos"])
def test_every_search_is_pre_filtered_by_tenant(dialect: str) -> None:
    pipeline = search_pipeline(dialect, ["acme", GLOBAL_PARTITION], VECTOR, 5, 0.2)
    stage = (
        pipeline[0]["$vectorSearch"]
        if dialect == "atlas"
        else pipeline[0]["$search"]["cosmosSearch"]
    )
    assert stage["filter"] == {"tenantId": {"$in": ["acme", GLOBAL_PARTITION]}}
    assert stage["path"] == "embedding"
    assert pipeline[-1] == {"$match": {"score": {"$gte": 0.2}}}
    assert pipeline[2] == {"$project": {"embedding": 0}}, "an exclusion projection, nothing else"


def test_the_atlas_pipeline_limits_candidates_and_scores_as_cosine() -> None:
    [vector_search, scored, _, _] = search_pipeline("atlas", ["acme"], VECTOR, 5, 0.0)
    stage = vector_search["$vectorSearch"]
    assert (stage["index"], stage["limit"], stage["numCandidates"]) == (
        "tenant_embeddings_index",
        5,
        100,
    )
    assert stage["queryVector"] == VECTOR
    assert scored["$set"]["score"] == {
        "$multiply": [{"$subtract": [{"$meta": "vectorSearchScore"}, 0.5]}, 2]
    }, "Atlas reports (1 + cosine) / 2"


def test_the_cosmos_pipeline_asks_for_k_neighbours_and_the_stored_source() -> None:
    [search, scored, _, _] = search_pipeline("cosmos", ["acme"], VECTOR, 7, 0.0)
    assert search["$search"]["cosmosSearch"]["k"] == 7
    assert search["$search"]["returnStoredSource"] is True
    assert scored["$set"]["score"] == {"$meta": "searchScore"}


def test_index_definitions_match_the_seed() -> None:
    atlas = atlas_index_definition(1536)
    vector_field = atlas["definition"]["fields"][0]
    assert (atlas["name"], atlas["type"]) == ("tenant_embeddings_index", "vectorSearch")
    assert vector_field == {
        "type": "vector",
        "path": "embedding",
        "numDimensions": 1536,
        "similarity": "cosine",
    }
    assert {"type": "filter", "path": "tenantId"} in atlas["definition"]["fields"]
    cosmos = cosmos_index_command("vectors", 1536)["indexes"][0]
    assert cosmos["key"] == {"embedding": "cosmosSearch"}
    assert cosmos["cosmosSearchOptions"]["similarity"] == "COS"
    assert cosmos["cosmosSearchOptions"]["dimensions"] == 1536


def test_records_keep_the_seeds_vector_document_shape_and_round_trip() -> None:
    fields = struct_pb2.Struct()
    fields.update({"price": 189.99})
    document = pb.Document(
        doc_id="kobe",
        chunk_id="kobe#0",
        text="Kobe 6",
        tenant_id="acme",
        visibility=pb.VISIBILITY_TENANT,
        metadata=pb.DocumentMetadata(source="catalogue", lang="es", tags=["kobe"], fields=fields),
    )
    document.created_at.FromDatetime(datetime(2026, 11, 24, tzinfo=UTC))
    record = to_record("acme", IndexedChunk(document, VECTOR, "h1"))
    assert {"tenantId", "docId", "text", "embedding", "metadata", "visibility", "createdAt"} <= set(
        record
    )
    assert (record["_id"], record["visibility"]) == ("acme/kobe#0", "tenant")
    back = from_record(record)
    assert back.document == document
    assert (back.vector, back.content_hash) == (VECTOR, "h1")


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(ImportError, match=r"metaagent\[mongodb\]"):
        MongoVectorStore.connect("mongodb://x", "db", "vectors", 3, "atlas")


PASSWORD = "S3cr3t-Passw0rd"
HOST = "cluster0.tenant-secrets.mongodb.net"
URI = f"mongodb+srv://metaagent:{PASSWORD}@{HOST}/?authSource=admin"


class FailingCollection:
    """A collection whose every call raises `error`, as the driver would."""

    def __init__(self, error: PyMongoError) -> None:
        self.error = error

    async def find_one(self, *args: Any, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (
            OperationFailure(
                f"Authentication failed connecting to {URI}",
                code=18,
                details={"codeName": "AuthenticationFailed", "errmsg": f"bad auth on {URI}"},
            ),
            "OperationFailure (code 18 AuthenticationFailed)",
        ),
        (
            OperationFailure(f"index missing on {HOST}", code=27, details={"codeName": URI}),
            "OperationFailure (code 27)",  # a code name that is not a name is left out
        ),
        (
            BulkWriteError({"writeErrors": [{"errmsg": f"E11000 on {URI}"}]}),
            "BulkWriteError (code 65)",
        ),
        (ConfigurationError(f"bad option in {URI}"), "ConfigurationError (code none)"),
    ],
    ids=["auth", "odd-code-name", "bulk-write", "no-code"],
)
async def test_a_refusal_logs_the_error_class_and_code_never_the_drivers_message(
    caplog: pytest.LogCaptureFixture, error: PyMongoError, logged: str
) -> None:
    assert PASSWORD in str(error) + repr(getattr(error, "details", "")) or HOST in str(error)
    store = MongoVectorStore(FailingCollection(error), 3, "atlas")
    with caplog.at_level(logging.DEBUG), pytest.raises(MeshError) as refused:
        await store.get("acme", "c1")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "VECTOR_STORE_REFUSED"
    [record] = [r for r in caplog.records if r.name == "services.retrieval.stores.mongo"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == f"the vector store refused an operation: {logged}"
    for leaked in (PASSWORD, HOST, "metaagent:"):
        assert leaked not in caplog.text
        assert leaked not in refused.value.message


async def test_an_unreachable_server_is_unavailable_and_names_no_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MongoVectorStore(
        FailingCollection(AutoReconnect(f"{HOST}:27017: timed out")), 3, "atlas"
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(MeshError) as refused:
        await store.get("acme", "c1")
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert HOST not in caplog.text and HOST not in refused.value.message


@pytest.mark.skipif(
    not os.environ.get("MONGODB_URI"), reason="set MONGODB_URI to run against MongoDB"
)
async def test_against_a_real_server() -> None:
    dialect = os.environ.get("MONGODB_DIALECT", "atlas")
    store = MongoVectorStore.connect(
        os.environ["MONGODB_URI"],
        os.environ.get("MONGODB_DATABASE", "metaagent_test"),
        os.environ.get("MONGODB_COLLECTION", "vectors"),
        3,
        dialect,  # type: ignore[arg-type]
    )
    tenant, other = f"t-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    mine = pb.Document(doc_id="d", chunk_id="d#0", text="mine", tenant_id=tenant)
    theirs = pb.Document(doc_id="d", chunk_id="d#0", text="theirs", tenant_id=other)
    unit = [v / math.sqrt(sum(x * x for x in VECTOR)) for v in VECTOR]
    await store.upsert_many(tenant, [IndexedChunk(mine, unit, "h")])
    await store.upsert_many(other, [IndexedChunk(theirs, unit, "h")])
    try:
        found = await store.search([tenant], unit, 5, 0.0)
        assert [c.document.text for c, _ in found] == ["mine"]
    finally:
        await store.delete_chunks(tenant, ["d#0"])
        await store.delete_chunks(other, ["d#0"])
