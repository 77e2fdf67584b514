"""Which embedder, store and tenant registry the retrieval service opens, by configuration."""

from pathlib import Path

import grpc
import pytest

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.retrieval.embedders import open_embedder
from services.retrieval.embedders.cache import CachedEmbedder, RedisEmbeddingCache
from services.retrieval.embedders.hashing import HashingEmbedder
from services.retrieval.settings import RetrievalSettings
from services.retrieval.stores import open_vector_store
from services.retrieval.stores.local import DiskIndex, MemoryIndex
from services.retrieval.stores.mongo import MongoVectorStore, dialect_of
from services.retrieval.tenants import ContextTenantDirectory
from tests.support.context_service import context_service


def _settings(tmp_path: Path, **values: object) -> RetrievalSettings:
    return RetrievalSettings(state_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_nothing_configured_means_the_offline_embedder_cached_and_the_disk_index(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    embedder = open_embedder(settings)
    assert isinstance(embedder, CachedEmbedder) and isinstance(embedder.inner, HashingEmbedder)
    store = open_vector_store(settings, embedder.dimension)
    assert isinstance(store, DiskIndex)


@pytest.mark.parametrize(
    ("url", "kind"),
    [("memory://", MemoryIndex), ("file:///tmp/vectors", DiskIndex)],
)
def test_local_stores_by_url(tmp_path: Path, url: str, kind: type) -> None:
    assert isinstance(open_vector_store(_settings(tmp_path, vector_store_url=url), 8), kind)


@pytest.mark.filterwarnings("ignore:You appear to be connected to a CosmosDB")
def test_mongodb_urls_open_the_mongo_store_in_the_right_dialect(tmp_path: Path) -> None:
    cosmos = "mongodb+srv://u:p@shop.mongocluster.cosmos.azure.com/?tls=true"
    atlas = "mongodb+srv://u:p@cluster0.abcde.mongodb.net/"
    for url, dialect in ((cosmos, "cosmos"), (atlas, "atlas")):
        settings = _settings(tmp_path, vector_store_url=url, mongodb_index_name="idx")
        store = open_vector_store(settings, 1536)
        assert isinstance(store, MongoVectorStore)
        assert (store.dialect, store.index_name, store.dimension) == (dialect, "idx", 1536)
    forced = _settings(tmp_path, vector_store_url=atlas, mongodb_dialect="cosmos")
    assert open_vector_store(forced, 8).dialect == "cosmos"  # type: ignore[attr-defined]
    assert dialect_of("mongodb://a.mongocluster.cosmos.azure.com:10260,b.example.com") == "atlas"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"vector_store_url": "postgres://x"}, "RETRIEVAL_VECTOR_STORE_URL"),
        ({"embedding_cache_url": "memcached://x"}, "RETRIEVAL_EMBEDDING_CACHE_URL"),
        ({"embedder": "azure-openai"}, "AZURE_OPENAI_EMBEDDING_ENDPOINT"),
        ({"embedder": "openai"}, "OPENAI_EMBEDDING_BASE_URL"),
    ],
)
def test_misconfiguration_is_a_clear_error(
    tmp_path: Path, values: dict[str, str], message: str
) -> None:
    settings = _settings(tmp_path, **values)
    opener = open_vector_store if "vector_store_url" in values else open_embedder
    with pytest.raises(ValueError, match=message):
        opener(settings, 8) if opener is open_vector_store else opener(settings)  # type: ignore[call-arg]


def test_a_redis_cache_url_and_a_threshold_override_are_honoured(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, embedding_cache_url="redis://127.0.0.1:6379/15", embedding_threshold=0.4
    )
    embedder = open_embedder(settings)
    assert isinstance(embedder, CachedEmbedder)
    assert isinstance(embedder.cache, RedisEmbeddingCache)
    assert embedder.default_threshold == 0.4


async def test_an_unreachable_mongodb_is_unavailable_not_a_crash() -> None:
    store = MongoVectorStore.connect(
        "mongodb://127.0.0.1:1/", "db", "chunks", 3, "atlas", timeout_ms=150
    )
    for call in (store.search(["acme"], [1.0, 0.0, 0.0], 5, 0.1), store.get("acme", "x#0")):
        with pytest.raises(MeshError) as refused:
            await call
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE


async def test_the_tenant_directory_caches_answers_and_fails_closed(
    state_dir: Path,
) -> None:
    async with context_service(state_dir) as reach:
        clients = MeshClients(reach, "retrieval")
        directory = ContextTenantDirectory(clients, known_ttl=60, unknown_ttl=0)
        with correlation.bound(correlation.CallContext(correlation_id="corr-dir")):
            await directory.require("demo")
            with pytest.raises(MeshError) as unknown:
                await directory.require("ghost")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    await directory.require("demo")
    with pytest.raises(MeshError) as down:
        await directory.require("ghost")
    assert down.value.code == grpc.StatusCode.UNAVAILABLE
    await clients.close()
