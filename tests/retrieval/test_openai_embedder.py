"""OpenAIEmbedder through the real openai SDK, against an OpenAI-compatible server on loopback.

The last test talks to a real Azure OpenAI deployment when AZURE_OPENAI_EMBEDDING_ENDPOINT and
AZURE_OPENAI_EMBEDDING_KEY are set.
"""

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2

from services.mesh import correlation
from services.mesh.errors import MeshError
from services.retrieval.embedders.openai import CALIBRATED_THRESHOLD, OpenAIEmbedder, RetryPolicy
from tests.support.openai_server import (
    REDACTED,
    OpenAIServer,
    RecordingSleep,
    bad_request,
    rate_limited,
    server_error,
    slow,
    unauthorized,
    vector_for,
    wrong_count,
    wrong_dimension,
)

DIMENSION = 64
DEPLOYMENT = "emb-small-prod"
API_VERSION = "2024-10-21"


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer(dimension=DIMENSION) as running:
        yield running


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make(server: OpenAIServer, sleep: RecordingSleep) -> AsyncIterator[Any]:
    """Build embedders on the server (OpenAI-style by default); close them afterwards."""
    made: list[OpenAIEmbedder] = []

    def build(*, api_key: str | None = None, **options: Any) -> OpenAIEmbedder:
        options.setdefault("sleep", sleep)
        options.setdefault("retry", RetryPolicy(attempts=3))
        options.setdefault("timeout", 5.0)
        embedder = OpenAIEmbedder.compatible(
            server.v1_url,
            "text-embedding-3-small",
            api_key or server.api_key,
            DIMENSION,
            **options,
        )
        made.append(embedder)
        return embedder

    yield build
    for embedder in made:
        await embedder.aclose()


@pytest.fixture
async def azure(server: OpenAIServer, sleep: RecordingSleep) -> AsyncIterator[OpenAIEmbedder]:
    embedder = OpenAIEmbedder.azure(
        server.base_url,
        DEPLOYMENT,
        API_VERSION,
        api_key=server.api_key,
        dimension=DIMENSION,
        sleep=sleep,
    )
    yield embedder
    await embedder.aclose()


def expected(text: str) -> list[float]:
    vector = vector_for(text, DIMENSION).astype(np.float64)
    return list(vector / np.linalg.norm(vector))


def assert_unit(vectors: list[list[float]]) -> None:
    for vector in vectors:
        assert len(vector) == DIMENSION
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-9)


def retry_info(error: MeshError) -> float | None:
    for detail in error.to_status().details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds() / 1e9)
    return None


# -- the happy path -------------------------------------------------------------------------


async def test_vectors_are_normalised_in_input_order_even_when_the_server_shuffles(
    server: OpenAIServer, make: Any
) -> None:
    server.shuffle = True
    texts = ["horario de apertura", "opening hours", "menú del día", "gluten free options"]
    embedder = make()

    vectors = await embedder.embed(texts)

    assert_unit(vectors)
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(expected(text), abs=1e-6)
    assert embedder.name == "text-embedding-3-small"
    assert embedder.dimension == DIMENSION
    assert embedder.default_threshold == CALIBRATED_THRESHOLD == 0.30
    assert embedder.tokens_used == 11  # one per word


async def test_the_sdk_asks_for_base64_and_shortened_vectors_only_when_needed(
    server: OpenAIServer, make: Any
) -> None:
    await make().embed(["one"])
    body = server.requests[-1].body
    assert body["encoding_format"] == "base64"
    assert body["dimensions"] == DIMENSION  # 64 differs from the model's native 1536
    assert body["model"] == "text-embedding-3-small"

    server.dimension = 1536
    native = OpenAIEmbedder.compatible(
        server.v1_url, "text-embedding-3-small", server.api_key, 1536
    )
    try:
        assert len((await native.embed(["one"]))[0]) == 1536
    finally:
        await native.aclose()
    assert "dimensions" not in server.requests[-1].body


async def test_a_server_that_always_answers_floats_is_understood(
    server: OpenAIServer, make: Any
) -> None:
    server.honour_encoding_format = False
    vectors = await make().embed(["plain floats"])
    assert vectors[0] == pytest.approx(expected("plain floats"), abs=1e-6)


async def test_150_texts_go_in_batches_of_the_configured_size(
    server: OpenAIServer, make: Any
) -> None:
    texts = [f"document number {i}" for i in range(150)]

    vectors = await make(batch_size=64).embed(texts)

    assert len(vectors) == 150
    assert vectors[149] == pytest.approx(expected("document number 149"), abs=1e-6)
    sizes = sorted(len(request.body["input"]) for request in server.requests)
    assert sizes == [22, 64, 64]


async def test_batches_are_also_capped_by_characters(server: OpenAIServer, make: Any) -> None:
    texts = [f"{i:04d}" + "x" * 996 for i in range(12)] + ["y" * 9000]

    vectors = await make(batch_size=64, max_batch_chars=5000).embed(texts)

    assert len(vectors) == 13
    sizes = sorted(len(request.body["input"]) for request in server.requests)
    assert sizes == [1, 2, 5, 5]  # the 9000-character text travels alone


async def test_the_azure_path_carries_deployment_api_version_and_key(
    server: OpenAIServer, azure: OpenAIEmbedder
) -> None:
    vectors = await azure.embed(["¿Abrís los domingos?"])

    assert vectors[0] == pytest.approx(expected("¿Abrís los domingos?"), abs=1e-6)
    request = server.requests[-1]
    assert request.path == f"/openai/deployments/{DEPLOYMENT}/embeddings"
    assert request.query["api-version"] == API_VERSION
    assert request.headers["api-key"] == REDACTED
    assert "authorization" not in request.headers
    assert request.body["model"] == DEPLOYMENT
    assert azure.name == "text-embedding-3-small"


async def test_azure_with_an_entra_token_provider(server: OpenAIServer) -> None:
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return server.entra_token

    embedder = OpenAIEmbedder.azure(
        server.base_url,
        DEPLOYMENT,
        API_VERSION,
        azure_ad_token_provider=token,
        dimension=DIMENSION,
    )
    try:
        assert len(await embedder.embed(["hola"])) == 1
    finally:
        await embedder.aclose()
    assert calls == 1
    assert server.requests[-1].headers["authorization"] == f"Bearer {REDACTED}"
    assert "api-key" not in server.requests[-1].headers


def test_azure_needs_exactly_one_credential() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        OpenAIEmbedder.azure("https://example.invalid", DEPLOYMENT, API_VERSION)


async def test_empty_list_makes_no_request(server: OpenAIServer, make: Any) -> None:
    assert await make().embed([]) == []
    assert server.requests == []


async def test_blank_text_is_invalid_argument_without_a_request(
    server: OpenAIServer, make: Any
) -> None:
    with pytest.raises(MeshError) as caught:
        await make().embed(["fine", "  \n"])

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["texts[1]"]
    assert server.requests == []


# -- retries --------------------------------------------------------------------------------


async def test_429_waits_as_long_as_retry_after_says(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(rate_limited(retry_after=1))

    vectors = await make().embed(["busy"])

    assert len(vectors) == 1
    assert sleep.calls == [1.0]
    assert len(server.requests) == 2


async def test_retry_after_ms_is_honoured_in_real_time(server: OpenAIServer, make: Any) -> None:
    server.script(rate_limited(retry_after=5, retry_after_ms=300))
    embedder = make(sleep=asyncio.sleep)

    started = time.monotonic()
    await embedder.embed(["busy"])

    assert 0.3 <= time.monotonic() - started < 4.0  # milliseconds win over seconds
    assert len(server.requests) == 2


async def test_retry_after_beyond_the_cap_gives_up_at_once(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(rate_limited(retry_after=60))

    with pytest.raises(MeshError) as caught:
        await make(retry=RetryPolicy(attempts=4, max_wait=20)).embed(["busy"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "EMBEDDING_PROVIDER_RATE_LIMITED"
    assert retry_info(caught.value) == 60
    assert sleep.calls == []
    assert len(server.requests) == 1


async def test_500_then_success_is_retried_with_jittered_backoff(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(server_error(500), server_error(503))

    vectors = await make(retry=RetryPolicy(attempts=3, base_delay=0.5)).embed(["flaky"])

    assert len(vectors) == 1
    assert len(server.requests) == 3
    assert len(sleep.calls) == 2
    assert 0 <= sleep.calls[0] <= 0.5 and 0 <= sleep.calls[1] <= 1.0


async def test_exhausted_retries_are_unavailable_with_retry_info(
    server: OpenAIServer, make: Any
) -> None:
    server.script(server_error(503), server_error(503), server_error(503))

    with pytest.raises(MeshError) as caught:
        await make(retry=RetryPolicy(attempts=3)).embed(["down"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 503 after 3 attempt(s)" in caught.value.message
    assert (retry_info(caught.value) or 0) > 0
    assert len(server.requests) == 3


async def test_400_is_invalid_argument_and_not_retried(server: OpenAIServer, make: Any) -> None:
    server.script(bad_request("This model's maximum context length is 8192 tokens."))

    with pytest.raises(MeshError) as caught:
        await make().embed(["far too long"])

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length is 8192 tokens" in caught.value.message
    assert len(server.requests) == 1


async def test_400_about_our_configuration_is_unavailable(server: OpenAIServer, make: Any) -> None:
    server.script(bad_request("dimensions is not supported", param="dimensions", code=None))

    with pytest.raises(MeshError) as caught:
        await make().embed(["text"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "EMBEDDING_PROVIDER_MISCONFIGURED"
    assert len(server.requests) == 1


async def test_refused_credentials_are_unavailable_and_not_retried(
    server: OpenAIServer, make: Any
) -> None:
    with pytest.raises(MeshError) as caught:
        await make(api_key="wrong-key").embed(["text"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "EMBEDDING_CREDENTIALS_REFUSED"
    assert "refused the credentials" in caught.value.message
    assert "wrong-key" not in caught.value.message
    assert len(server.requests) == 1
    assert server.requests[0].headers["authorization"] == f"Bearer {REDACTED}"


async def test_a_scripted_401_on_azure_is_not_retried(
    server: OpenAIServer, azure: OpenAIEmbedder
) -> None:
    server.script(unauthorized())

    with pytest.raises(MeshError) as caught:
        await azure.embed(["text"])

    assert caught.value.reason == "EMBEDDING_CREDENTIALS_REFUSED"
    assert len(server.requests) == 1


async def test_wrong_dimension_is_unavailable(server: OpenAIServer, make: Any) -> None:
    server.script(wrong_dimension(32))

    with pytest.raises(MeshError) as caught:
        await make().embed(["text"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "32-dimensional vectors, the index holds 64" in caught.value.message


@pytest.mark.parametrize("delta", [-1, 1, -2])
async def test_wrong_count_is_unavailable(server: OpenAIServer, make: Any, delta: int) -> None:
    server.script(wrong_count(delta))

    with pytest.raises(MeshError) as caught:
        await make().embed(["one", "two"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "EMBEDDING_PROVIDER_MALFORMED"
    assert len(server.requests) == 1


async def test_a_response_slower_than_the_timeout_is_retried(
    server: OpenAIServer, make: Any
) -> None:
    server.script(slow(8.0))

    vectors = await make(timeout=1.0).embed(["slow"])

    assert len(vectors) == 1
    assert len(server.requests) == 2


async def test_responses_always_slower_than_the_timeout_fail_unavailable(
    server: OpenAIServer, make: Any
) -> None:
    server.script(slow(2.0), slow(2.0))

    with pytest.raises(MeshError) as caught:
        await make(timeout=0.2, retry=RetryPolicy(attempts=2)).embed(["slow"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "a timeout after 2 attempt(s)" in caught.value.message


async def test_no_retry_waits_past_the_inbound_deadline(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(rate_limited(retry_after=2))
    call = correlation.CallContext(deadline=correlation.with_deadline_in(1.0))

    with correlation.bound(call), pytest.raises(MeshError) as caught:
        await make().embed(["text"])

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert sleep.calls == []
    assert len(server.requests) == 1


# -- concurrency ----------------------------------------------------------------------------


async def test_no_more_than_max_concurrency_requests_in_flight(
    server: OpenAIServer, make: Any
) -> None:
    server.latency = 0.1
    texts = [f"text {i}" for i in range(32)]

    vectors = await make(batch_size=4, max_concurrency=2).embed(texts)

    assert len(vectors) == 32
    assert len(server.requests) == 8
    assert server.max_in_flight == 2


async def test_one_failed_batch_fails_the_call(server: OpenAIServer, make: Any) -> None:
    server.script(bad_request())

    with pytest.raises(MeshError) as caught:
        await make(batch_size=2, max_concurrency=1).embed(["a", "b", "c", "d"])

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


# -- real Azure OpenAI ----------------------------------------------------------------------


async def test_real_azure_openai_scores_paraphrases_above_the_threshold() -> None:
    endpoint = os.environ.get("AZURE_OPENAI_EMBEDDING_ENDPOINT")
    key = os.environ.get("AZURE_OPENAI_EMBEDDING_KEY")
    if not endpoint or not key:
        pytest.skip(
            "set AZURE_OPENAI_EMBEDDING_ENDPOINT and AZURE_OPENAI_EMBEDDING_KEY (optionally "
            "AZURE_OPENAI_EMBEDDING_DEPLOYMENT, AZURE_OPENAI_EMBEDDING_API_VERSION) to run"
        )
    embedder = OpenAIEmbedder.azure(
        endpoint,
        os.environ.get("AZURE_OPENAI_EMBEDDING_DEPLOYMENT", "text-embedding-3-small"),
        os.environ.get("AZURE_OPENAI_EMBEDDING_API_VERSION", "2024-10-21"),
        api_key=key,
    )
    texts = [
        "¿A qué hora abre la tienda los domingos?",
        "¿Cuál es el horario de apertura del local el domingo?",
        "What time does the shop open on Sundays?",
        "When are you open on Sunday mornings?",
        "Photosynthesis converts light energy into chemical energy in chloroplasts.",
    ]
    try:
        es_a, es_b, en_a, en_b, unrelated = await embedder.embed(texts)
    finally:
        await embedder.aclose()

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    threshold = embedder.default_threshold
    assert len(es_a) == 1536
    assert cosine(es_a, es_b) > threshold
    assert cosine(en_a, en_b) > threshold
    assert cosine(es_a, en_a) > threshold  # the same question across languages
    for vector in (es_a, es_b, en_a, en_b):
        assert cosine(vector, unrelated) < threshold
    assert embedder.tokens_used > 0
