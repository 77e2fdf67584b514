"""The production embedder: Azure OpenAI `text-embedding-3-small`, or any OpenAI-compatible API.

`OpenAIEmbedder` sends batches to the embeddings endpoint through the `openai` SDK (with the
SDK's own retries off), retries 429, 5xx, timeouts and connection failures itself (exponential
backoff with full jitter, or the server's `retry-after-ms` / `Retry-After` when it sends one;
the policy is `services.mesh.backoff.RetryPolicy`, re-exported here), checks that every answer
holds one vector per input of the index's dimension, and L2-normalises.

Calibration: text-embedding-3 models score related passages lower than older models do. Cosine
scores for relevant query/passage pairs typically fall between 0.3 and 0.6, unrelated pairs
between 0.0 and 0.2, so a threshold of 0.75 (the seed's) rejects nearly every relevant passage.
The calibrated default for text-embedding-3-* is 0.30; other models need their own, passed as
`default_threshold`.

Errors: a request the provider rejects as malformed (e.g. an input over the model's token
limit) is the caller's INVALID_ARGUMENT; refused credentials, an unknown deployment, an
unreachable or exhausted provider and malformed answers are UNAVAILABLE, with RetryInfo.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypedDict, Unpack

import grpc
import numpy as np
import openai
from openai.types import CreateEmbeddingResponse

from services.mesh import correlation
from services.mesh.backoff import RetryPolicy, retry_after
from services.mesh.errors import FieldViolation, MeshError, invalid_argument, unavailable

log = logging.getLogger("metaagent.retrieval.embedder")

DEFAULT_MODEL = "text-embedding-3-small"
NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Each known model's full vector size."""
SHORTENABLE_PREFIX = "text-embedding-3"
"""Models that accept `dimensions` and return shortened (Matryoshka) vectors."""
CALIBRATED_THRESHOLD = 0.30
"""Cosine threshold for text-embedding-3-* (module docstring)."""
DEFAULT_TIMEOUT = 30.0
"""Seconds one embeddings request may take."""

Sleep = Callable[[float], Awaitable[None]]
TokenProvider = Callable[[], str | Awaitable[str]]
"""An Entra ID token source, e.g. azure-identity's `get_bearer_token_provider(...)`."""

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_CONFIGURATION_PARAMS = frozenset({"model", "dimensions", "encoding_format"})
_MAX_PROVIDER_MESSAGE = 300
_MAX_RETRY_INFO = 3600.0


class EmbedderOptions(TypedDict, total=False):
    """Tuning shared by the constructors; see `OpenAIEmbedder.__init__`."""

    default_threshold: float
    batch_size: int
    max_batch_chars: int
    max_concurrency: int
    retry: RetryPolicy
    timeout: float
    send_dimensions: bool
    sleep: Sleep


class OpenAIEmbedder:
    """Embeddings from Azure OpenAI or an OpenAI-compatible server (OpenAI, vLLM, Ollama...)."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        name: str | None = None,
        dimension: int = 1536,
        default_threshold: float | None = None,
        batch_size: int = 64,
        max_batch_chars: int = 200_000,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        send_dimensions: bool | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`model` goes into each request (for Azure, the deployment); `name` is the stable
        model name scores belong to (default `model`). `dimensions` is sent only when
        `dimension` differs from a text-embedding-3 model's native size, unless
        `send_dimensions` says otherwise. `timeout` bounds each request, and no request or
        retry outlives the inbound call's deadline."""
        if batch_size < 1 or max_batch_chars < 1 or max_concurrency < 1 or dimension < 1:
            raise ValueError("batch_size, max_batch_chars, max_concurrency, dimension must be >= 1")
        self.name = name or model
        self.model = model
        self.dimension = dimension
        native = NATIVE_DIMENSIONS.get(self.name)
        if send_dimensions is None:
            send_dimensions = native is not None and native != dimension
        if send_dimensions and native is not None and not self.name.startswith(SHORTENABLE_PREFIX):
            raise ValueError(f"{self.name} cannot shorten its {native}-dimensional vectors")
        self._send_dimensions = send_dimensions
        if default_threshold is None:
            if not self.name.startswith(SHORTENABLE_PREFIX):
                log.warning(
                    "no calibrated threshold for embedding model %s; using %.2f",
                    self.name,
                    CALIBRATED_THRESHOLD,
                )
            default_threshold = CALIBRATED_THRESHOLD
        self.default_threshold = default_threshold
        self.batch_size = batch_size
        self.max_batch_chars = max_batch_chars
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.tokens_used = 0
        """Tokens the provider billed (`usage.total_tokens`) since this embedder was made."""
        self._client = client
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._sleep = sleep
        self._rng = random.Random()  # noqa: S311 - jitter, not security

    @classmethod
    def azure(
        cls,
        endpoint: str,
        deployment: str,
        api_version: str = "2024-10-21",
        *,
        api_key: str | None = None,
        azure_ad_token_provider: TokenProvider | None = None,
        model: str = DEFAULT_MODEL,
        dimension: int = 1536,
        **options: Unpack[EmbedderOptions],
    ) -> OpenAIEmbedder:
        """An Azure OpenAI deployment of `model`, authenticated by exactly one of an API key or
        an Entra ID token provider."""
        if (api_key is None) == (azure_ad_token_provider is None):
            raise ValueError("pass exactly one of api_key and azure_ad_token_provider")
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            api_version=api_version,
            api_key=api_key,
            azure_ad_token_provider=azure_ad_token_provider,
            max_retries=0,
            timeout=options.get("timeout", DEFAULT_TIMEOUT),
        )
        return cls(client, deployment, name=model, dimension=dimension, **options)

    @classmethod
    def compatible(
        cls,
        base_url: str,
        model: str,
        api_key: str | None,
        dimension: int,
        **options: Unpack[EmbedderOptions],
    ) -> OpenAIEmbedder:
        """Any OpenAI-compatible endpoint (`https://api.openai.com/v1`, vLLM, Ollama, llama.cpp
        server). Local servers without authentication take `api_key=None`."""
        client = openai.AsyncOpenAI(
            base_url=base_url,
            # An explicit placeholder, so that OPENAI_API_KEY never leaks to a local server.
            api_key=api_key or "unused",
            max_retries=0,
            timeout=options.get("timeout", DEFAULT_TIMEOUT),
        )
        return cls(client, model, dimension=dimension, **options)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        if not texts:
            return []
        blank = [i for i, text in enumerate(texts) if not text.strip()]
        if blank:
            raise invalid_argument(
                *(FieldViolation(f"texts[{i}]", "must not be blank") for i in blank[:10]),
                message=f"{len(blank)} of {len(texts)} texts are blank, which cannot be embedded",
            )
        tasks = [asyncio.ensure_future(self._embed_batch(batch)) for batch in self._batches(texts)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [vector for batch in results for vector in batch]

    def _batches(self, texts: Sequence[str]) -> list[list[str]]:
        """At most `batch_size` texts and `max_batch_chars` characters per batch (a longer text
        travels alone and the provider judges it)."""
        batches: list[list[str]] = []
        current: list[str] = []
        chars = 0
        for text in texts:
            if current and (
                len(current) >= self.batch_size or chars + len(text) > self.max_batch_chars
            ):
                batches.append(current)
                current, chars = [], 0
            current.append(text)
            chars += len(text)
        batches.append(current)
        return batches

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        async with self._semaphore:
            response = await self._create(batch)
        usage = getattr(response, "usage", None)
        self.tokens_used += getattr(usage, "total_tokens", 0) or 0
        return self._vectors(response, len(batch))

    async def _create(self, batch: list[str]) -> CreateEmbeddingResponse:
        """One batch, retried under the policy."""
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            timeout = self._request_timeout()
            log.debug(
                "embedding %d texts with %s (attempt %d/%d)",
                len(batch),
                self.name,
                attempt,
                policy.attempts,
            )
            try:
                if self._send_dimensions:
                    return await self._client.embeddings.create(
                        input=batch, model=self.model, dimensions=self.dimension, timeout=timeout
                    )
                return await self._client.embeddings.create(
                    input=batch, model=self.model, timeout=timeout
                )
            except openai.APIStatusError as error:
                status = error.status_code
                if status not in _RETRYABLE_STATUS and status < 500:
                    raise self._refusal(error) from None
                advised = retry_after(error.response.headers)
                failure = f"HTTP {status}"
                reason = (
                    "EMBEDDING_PROVIDER_RATE_LIMITED"
                    if status == 429
                    else "EMBEDDING_PROVIDER_UNAVAILABLE"
                )
            except openai.APIConnectionError as error:
                advised = None
                timed_out = isinstance(error, openai.APITimeoutError)
                failure = "a timeout" if timed_out else "a connection failure"
                reason = "EMBEDDING_PROVIDER_UNAVAILABLE"
            except (openai.APIResponseValidationError, ValueError) as error:
                # The SDK could not parse the answer (e.g. no data at all).
                raise self._malformed(f"an unreadable answer ({type(error).__name__})") from None
            wait = policy.delay(attempt, advised, self._rng)
            if policy.gives_up(attempt, advised, wait, correlation.current().time_remaining()):
                log.warning(
                    "embedding provider failed with %s after %d attempt(s); giving up",
                    failure,
                    attempt,
                )
                raise MeshError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the embedding provider failed with {failure} after {attempt} attempt(s)",
                    reason,
                    retry_after=min(max(wait, 0.1), _MAX_RETRY_INFO),
                    metadata={"model": self.name, "failure": failure},
                )
            log.warning(
                "embedding provider failed with %s; retry %d/%d in %.2fs",
                failure,
                attempt,
                policy.attempts - 1,
                wait,
            )
            await self._sleep(wait)

    def _request_timeout(self) -> float:
        """The request timeout, shortened to the inbound deadline; a passed deadline ends here."""
        remaining = correlation.current().time_remaining()
        if remaining is None:
            return self.timeout
        if remaining <= 0:
            raise MeshError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the deadline passed before the embedding provider answered",
                "DEADLINE_EXCEEDED",
            )
        return min(self.timeout, remaining)

    def _refusal(self, error: openai.APIStatusError) -> MeshError:
        """A 4xx the provider will repeat: the caller's mistake or our configuration."""
        status = error.status_code
        body = error.body if isinstance(error.body, dict) else {}
        detail = str(body.get("message") or "")[:_MAX_PROVIDER_MESSAGE]
        param = body.get("param")
        log.warning(
            "embedding provider refused the request: HTTP %d, code %s, param %s: %s",
            status,
            body.get("code"),
            param,
            detail
            if status not in (400, 413, 422) or param in _CONFIGURATION_PARAMS
            else "(withheld: a refused input may be quoted)",
        )
        if status in (401, 403):
            return unavailable(
                f"the embedding provider refused the credentials (HTTP {status})",
                retry_after=60.0,
                reason="EMBEDDING_CREDENTIALS_REFUSED",
            )
        if status in (400, 413, 422) and param not in _CONFIGURATION_PARAMS:
            return invalid_argument(
                FieldViolation("texts", f"the embedding provider rejected the input: {detail}"),
            )
        return unavailable(
            f"the embedding provider rejected our configuration (HTTP {status})",
            retry_after=60.0,
            reason="EMBEDDING_PROVIDER_MISCONFIGURED",
        )

    def _malformed(self, what: str) -> MeshError:
        log.warning("embedding provider returned %s", what)
        return unavailable(
            f"the embedding provider returned {what}", reason="EMBEDDING_PROVIDER_MALFORMED"
        )

    def _vectors(self, response: CreateEmbeddingResponse, count: int) -> list[list[float]]:
        """One normalised vector per input, in input order, or UNAVAILABLE."""
        data = sorted(response.data, key=lambda item: item.index)
        if [item.index for item in data] != list(range(count)):
            raise self._malformed(f"{len(data)} embeddings for {count} inputs")
        for item in data:
            if len(item.embedding) != self.dimension:
                raise self._malformed(
                    f"{len(item.embedding)}-dimensional vectors, the index holds {self.dimension}"
                )
        matrix = np.asarray([item.embedding for item in data], dtype=np.float64)
        if not np.isfinite(matrix).all():
            raise self._malformed("vectors that are not finite")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        normalised = matrix / np.where(norms > 0, norms, 1.0)  # a zero vector stays zero
        vectors: list[list[float]] = normalised.tolist()
        return vectors
