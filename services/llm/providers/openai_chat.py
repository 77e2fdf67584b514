"""Chat providers on the `openai` SDK: an Azure OpenAI deployment (GPT-5 and other reasoning
models, or GPT-4o-class models) or any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp server).

One `OpenAIChatProvider` serves one `DeploymentConfig`. The SDK's own retries are off; the
provider retries 408, 409, 429, 5xx, timeouts and connection failures itself under the
deployment's `RetryPolicy` (`services.mesh.backoff`: the server's `retry-after-ms` /
`Retry-After` when it sends one, capped by `max_wait`, else jittered exponential backoff), and
never waits or lets a request run past the inbound gRPC deadline. What it cannot serve it raises
as `ProviderError`: `rate_limited` / `unavailable` / `timeout` after the retries, `bad_request`
(400, 404, 413, 422, a model refusal: never retried; another deployment will not help) and
`refused` (401, 403: an operator must fix the credentials).

Parameters differ per model family. Reasoning deployments (GPT-5, o-series) take
`max_completion_tokens` (a budget that covers the hidden reasoning tokens too, so a small one can
end in an empty answer with `finish_reason: "length"`) and `reasoning_effort`, and reject
`max_tokens` and any `temperature` but the default: the seed's `temperature: 0.7, max_tokens:
1000` fails there with HTTP 400. Other models take `temperature` and `max_tokens`.

Structured output: a `ChatRequest.response_schema` goes out as a strict `json_schema` response
format where the endpoint supports it (`structured="json_schema"`; the schema must then follow
the strict-mode rules: every property required, `additionalProperties: false`). Servers that
only know JSON mode (`"json_object"`, common for vLLM and Ollama) get `json_object` plus a system
line that states the schema; `"none"` sends only that line.

Neither the API key nor any prompt text goes into a log line or an exception message; a
provider's error message is quoted only when it does not echo the prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion as ApiCompletion
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from services.llm.providers import (
    ChatCompletion,
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatUsage,
    FailureKind,
    ProviderError,
)
from services.mesh import correlation
from services.mesh.backoff import RetryPolicy, retry_after

log = logging.getLogger("metaagent.llm.openai")

Kind = Literal["azure", "openai"]
Structured = Literal["json_schema", "json_object", "none"]
ReasoningEffort = Literal["minimal", "low", "medium", "high"]
Sleep = Callable[[float], Awaitable[None]]
TokenProvider = Callable[[], str | Awaitable[str]]
"""An Entra ID token source, e.g. azure-identity's `get_bearer_token_provider(...)`."""

GPT5_CONTEXT_TOKENS = 272_000
"""GPT-5's input limit (400k context minus 128k output)."""
DEFAULT_API_VERSION = "2024-12-01-preview"
"""The first Azure OpenAI API version with `reasoning_effort` and `max_completion_tokens`."""
DEFAULT_TIMEOUT = 60.0

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_REFUSED_STATUS = frozenset({401, 403})
_MAX_DETAIL = 300
_MIN_ECHO = 8
"""Prompt messages shorter than this are too common to tell an echo from a coincidence."""
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class DeploymentConfig:
    """One deployment of one model behind one endpoint."""

    name: str
    """Unique name (breaker and metrics key), e.g. "azure-eastus2/gpt-5"."""
    kind: Kind
    """"azure" (Azure OpenAI) or "openai" (the OpenAI API or any compatible server)."""
    endpoint: str
    """Azure: the resource endpoint (`https://<resource>.openai.azure.com`); OpenAI: the base
    URL (`https://api.openai.com/v1`, `http://localhost:8000/v1`)."""
    deployment_or_model: str
    """Azure: the deployment name; OpenAI: the model sent in each request."""
    api_version: str = DEFAULT_API_VERSION
    """Azure only."""
    api_key: str | None = field(default=None, repr=False)
    """Azure: exactly one of this and `azure_ad_token_provider`. OpenAI: None for local servers
    without authentication."""
    azure_ad_token_provider: TokenProvider | None = field(default=None, repr=False)
    reasoning: bool = False
    """A reasoning model (GPT-5, o-series): `max_completion_tokens` and `reasoning_effort`,
    never `temperature` or `max_tokens`."""
    reasoning_effort: ReasoningEffort | None = None
    """Reasoning only; None = the model's default."""
    temperature: float | None = None
    """Non-reasoning only; None = the model's default."""
    max_output_tokens: int | None = None
    """Cap on the answer (with reasoning: reasoning and answer together); None = none sent."""
    context_tokens: int = 128_000
    """Prompt budget the engine trims the context to (GPT-5: `GPT5_CONTEXT_TOKENS`)."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one request may take (between streamed chunks, for streams); never more than the
    inbound deadline leaves."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    structured: Structured = "json_schema"
    """What the endpoint supports for `ChatRequest.response_schema` (module docstring)."""
    model: str | None = None
    """The model behind the deployment, e.g. "gpt-5" (the provider's `model`); None = the
    deployment or model name."""

    def __post_init__(self) -> None:
        if self.kind not in ("azure", "openai"):
            raise ValueError(f"kind must be 'azure' or 'openai', not {self.kind!r}")
        if not self.name or not self.endpoint or not self.deployment_or_model:
            raise ValueError("name, endpoint and deployment_or_model are required")
        if self.kind == "azure":
            if (self.api_key is None) == (self.azure_ad_token_provider is None):
                raise ValueError("pass exactly one of api_key and azure_ad_token_provider")
        elif self.azure_ad_token_provider is not None:
            raise ValueError("azure_ad_token_provider is for kind 'azure' only")
        if self.reasoning and self.temperature is not None:
            raise ValueError(
                f"{self.name}: reasoning models reject a custom temperature; leave it unset"
            )
        if not self.reasoning and self.reasoning_effort is not None:
            raise ValueError(f"{self.name}: reasoning_effort needs reasoning=True")
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            raise ValueError("max_output_tokens must be >= 1")
        if self.context_tokens < 1 or self.timeout <= 0:
            raise ValueError("context_tokens must be >= 1 and timeout > 0")
        if self.structured not in ("json_schema", "json_object", "none"):
            raise ValueError("structured must be json_schema, json_object or none")


@dataclass(frozen=True)
class _Failure:
    """A failed attempt that may be retried."""

    kind: FailureKind
    what: str
    """For messages: "HTTP 503", "a timeout", "a connection failure"."""
    advised: float | None = None
    status: int | None = None


class OpenAIChatProvider:
    """A `ChatProvider` for one Azure OpenAI deployment or OpenAI-compatible model."""

    def __init__(
        self,
        config: DeploymentConfig,
        client: openai.AsyncOpenAI | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`client` replaces the one built from `config` (the provider closes it in `aclose`);
        `sleep` waits between retries."""
        self.config = config
        self.name = config.name
        self.model = config.model or config.deployment_or_model
        self.context_tokens = config.context_tokens
        self._client = client or _client_for(config)
        self._sleep = sleep
        self._rng = random.Random()  # noqa: S311 - jitter, not security

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    # -- the port ----------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        params = self._params(request)
        attempt = 0
        while True:
            attempt += 1
            timeout = self._request_timeout()
            try:
                response: ApiCompletion = await self._client.chat.completions.create(
                    **params, timeout=timeout
                )
            except openai.APIError as error:
                failure = self._failure(error, request)
            except ValueError as error:  # a body the SDK could not parse
                failure = self._unreadable(error)
            else:
                return self._completion(response)
            if isinstance(failure, ProviderError):
                raise failure from None
            await self._before_retry(attempt, failure)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatCompletion]:
        params = self._params(request)
        attempt = 0
        while True:
            attempt += 1
            timeout = self._request_timeout()
            deltas = 0
            failure: _Failure | ProviderError
            try:
                chunks = await self._client.chat.completions.create(
                    **params,
                    stream=True,
                    stream_options={"include_usage": True},
                    timeout=timeout,
                )
                async with chunks:
                    state = _StreamState(self.model)
                    async for chunk in chunks:
                        text = state.add(chunk)
                        if text:
                            deltas += 1
                            yield ChatDelta(text)
                yield self._streamed(state)
                return
            except (openai.APIError, ValueError) as error:
                if deltas:
                    failure = self._broken(error, deltas)
                elif isinstance(error, ValueError):
                    failure = self._unreadable(error)
                else:
                    failure = self._failure(error, request)
            if isinstance(failure, ProviderError):
                raise failure from None
            await self._before_retry(attempt, failure)

    # -- requests ----------------------------------------------------------------------------

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        """The request body for this deployment, without `stream`."""
        config = self.config
        if not request.messages:
            raise ProviderError("bad_request", f"{self.name}: a chat request needs messages")
        messages = list(request.messages)
        params: dict[str, Any] = {"model": config.deployment_or_model}
        schema = request.response_schema
        if schema is not None:
            if config.structured == "json_schema":
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": _schema_name(request.schema_name),
                        "schema": schema,
                        "strict": True,
                    },
                }
            else:
                messages = _with_schema_line(messages, schema)
                if config.structured == "json_object":
                    params["response_format"] = {"type": "json_object"}
        params["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        limit = request.max_output_tokens or config.max_output_tokens
        if request.max_output_tokens and config.max_output_tokens:
            limit = min(request.max_output_tokens, config.max_output_tokens)
        if config.reasoning:
            if limit is not None:
                params["max_completion_tokens"] = limit
            if config.reasoning_effort is not None:
                params["reasoning_effort"] = config.reasoning_effort
        else:
            if config.temperature is not None:
                params["temperature"] = config.temperature
            if limit is not None:
                params["max_tokens"] = limit
        return params

    def _request_timeout(self) -> float:
        """The request timeout, shortened to the inbound deadline; a passed deadline ends here."""
        remaining = correlation.current().time_remaining()
        if remaining is None:
            return self.config.timeout
        if remaining <= 0:
            raise ProviderError(
                "timeout", f"{self.name}: the deadline passed before the model answered"
            )
        return min(self.config.timeout, remaining)

    # -- answers -----------------------------------------------------------------------------

    def _completion(self, response: ApiCompletion) -> ChatCompletion:
        if not response.choices:
            raise ProviderError("unavailable", f"{self.name} answered without choices")
        choice = response.choices[0]
        message = choice.message
        if message.content is None and message.refusal:
            raise self._refusal(len(message.refusal))
        return ChatCompletion(
            text=message.content or "",
            usage=_usage(response.usage),
            model=response.model or self.model,
            finish_reason=choice.finish_reason or "",
        )

    def _streamed(self, state: _StreamState) -> ChatCompletion:
        if not state.text and state.refusal:
            raise self._refusal(len(state.refusal))
        return ChatCompletion(
            text="".join(state.text),
            usage=state.usage,
            model=state.model,
            finish_reason=state.finish_reason,
        )

    def _refusal(self, length: int) -> ProviderError:
        log.warning("%s refused to answer (a refusal of %d characters)", self.name, length)
        return ProviderError("bad_request", f"{self.name}: the model refused to answer")

    # -- failures ----------------------------------------------------------------------------

    def _failure(self, error: openai.APIError, request: ChatRequest) -> _Failure | ProviderError:
        """What failed, when it is worth retrying; otherwise the ProviderError to raise."""
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            if status in _RETRYABLE_STATUS or status >= 500:
                advised = retry_after(error.response.headers)
                kind: FailureKind = (
                    "rate_limited"
                    if status == 429
                    else "timeout"
                    if status == 408
                    else "unavailable"
                )
                return _Failure(kind, f"HTTP {status}", advised, status)
            return self._rejection(error, request)
        if isinstance(error, openai.APITimeoutError):
            return _Failure("timeout", "a timeout")
        if isinstance(error, openai.APIConnectionError):
            return _Failure("unavailable", "a connection failure")
        if isinstance(error, openai.APIResponseValidationError):
            return self._unreadable(error)
        # An error event inside a stream, or another failure the SDK reports without a status.
        return _Failure("unavailable", "an error event")

    async def _before_retry(self, attempt: int, failure: _Failure) -> None:
        """Wait before the next attempt, or raise when the policy gives up."""
        policy = self.config.retry
        wait = policy.delay(attempt, failure.advised, self._rng)
        remaining = correlation.current().time_remaining()
        if policy.gives_up(attempt, failure.advised, wait, remaining):
            if failure.advised is not None and failure.advised > policy.max_wait:
                why = f"asked to wait {failure.advised:.1f}s (over {policy.max_wait:g}s)"
            elif attempt < policy.attempts:
                why = "the deadline leaves no time to retry"
            else:
                why = f"after {attempt} attempt(s)"
            log.warning("%s failed with %s, %s; giving up", self.name, failure.what, why)
            raise ProviderError(
                failure.kind,
                f"{self.name} failed with {failure.what}, {why}",
                retry_after=failure.advised,
                status=failure.status,
            )
        log.warning(
            "%s failed with %s; retry %d/%d in %.2fs",
            self.name,
            failure.what,
            attempt,
            policy.attempts - 1,
            wait,
        )
        await self._sleep(wait)

    def _rejection(self, error: openai.APIStatusError, request: ChatRequest) -> ProviderError:
        """A 4xx the provider will repeat: our request, our configuration or our credentials."""
        status = error.status_code
        body = error.body if isinstance(error.body, dict) else {}
        code, param = body.get("code"), body.get("param")
        detail = self._safe_detail(str(body.get("message") or ""), request)
        log.warning(
            "%s rejected the request: HTTP %d, code %s, param %s: %s",
            self.name,
            status,
            code,
            param,
            detail,
        )
        if status in _REFUSED_STATUS:
            return ProviderError(
                "refused", f"{self.name} refused the credentials (HTTP {status})", status=status
            )
        if status == 404:
            if self.config.kind == "azure":
                message = (
                    f"{self.name}: Azure OpenAI has no deployment "
                    f"{self.config.deployment_or_model!r} at this endpoint (HTTP 404); check the "
                    f"deployment name and the api-version {self.config.api_version!r}"
                )
            else:
                message = (
                    f"{self.name}: the endpoint does not know the model "
                    f"{self.config.deployment_or_model!r} or the path (HTTP 404); check the "
                    "model name and that the base URL ends in /v1"
                )
            return ProviderError("bad_request", message, status=status)
        where = ", ".join(f"{k} {v}" for k, v in (("code", code), ("param", param)) if v)
        message = f"{self.name} rejected the request (HTTP {status}{', ' if where else ''}{where})"
        return ProviderError(
            "bad_request", f"{message}: {detail}" if detail else message, status=status
        )

    def _safe_detail(self, detail: str, request: ChatRequest) -> str:
        """The provider's error message, unless it quotes the prompt; without the API key."""
        key = self.config.api_key
        if key:
            detail = detail.replace(key, "***")
        for message in request.messages:
            content = message.content.strip()
            if len(content) >= _MIN_ECHO and (
                content[: _MIN_ECHO * 4] in detail or content[-_MIN_ECHO * 4 :] in detail
            ):
                return "(the provider's message quotes the prompt; withheld)"
        return detail[:_MAX_DETAIL]

    def _broken(self, error: Exception, deltas: int) -> ProviderError:
        what = _describe(error)
        log.warning("%s: the stream broke after %d delta(s) with %s", self.name, deltas, what)
        return ProviderError(
            "unavailable", f"{self.name}: the stream broke after {deltas} delta(s) with {what}"
        )

    def _unreadable(self, error: Exception) -> ProviderError:
        log.warning("%s returned an unreadable answer (%s)", self.name, type(error).__name__)
        return ProviderError(
            "unavailable", f"{self.name} returned an unreadable answer ({type(error).__name__})"
        )


class _StreamState:
    """What the chunks of one stream added up to."""

    def __init__(self, model: str) -> None:
        self.text: list[str] = []
        self.refusal: str = ""
        self.usage = ChatUsage()
        self.model = model
        self.finish_reason = ""

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Take one chunk in; return its content delta ("" when it has none)."""
        if chunk.model:  # Azure's first chunk (prompt filter results) has none
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        if choice.delta.refusal:
            self.refusal += choice.delta.refusal
        text = choice.delta.content or ""
        if text:
            self.text.append(text)
        return text


def _client_for(config: DeploymentConfig) -> openai.AsyncOpenAI:
    if config.kind == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=config.endpoint,
            api_version=config.api_version,
            api_key=config.api_key,
            azure_ad_token_provider=config.azure_ad_token_provider,
            max_retries=0,
            timeout=config.timeout,
        )
    return openai.AsyncOpenAI(
        base_url=config.endpoint,
        # An explicit placeholder, so that OPENAI_API_KEY never leaks to a local server.
        api_key=config.api_key or "unused",
        max_retries=0,
        timeout=config.timeout,
    )


def _usage(usage: CompletionUsage | None) -> ChatUsage:
    if usage is None:
        return ChatUsage()
    return ChatUsage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        total_tokens=usage.total_tokens or 0,
    )


def _schema_name(name: str) -> str:
    """A `json_schema` name the API accepts: `^[a-zA-Z0-9_-]{1,64}$`."""
    return _SCHEMA_NAME.sub("_", name)[:64] or "generation"


def _with_schema_line(messages: list[ChatMessage], schema: dict[str, Any]) -> list[ChatMessage]:
    """`messages` with a system line asking for JSON that follows `schema`, after the leading
    system messages (JSON mode also needs the word "JSON" in the prompt)."""
    line = ChatMessage(
        "system",
        "Answer with one JSON object, and nothing else, that validates against this JSON "
        f"Schema: {json.dumps(schema, ensure_ascii=False, separators=(',', ':'))}",
    )
    at = 0
    while at < len(messages) and messages[at].role == "system":
        at += 1
    return [*messages[:at], line, *messages[at:]]


def _describe(error: Exception) -> str:
    if isinstance(error, openai.APITimeoutError):
        return "a timeout"
    if isinstance(error, openai.APIConnectionError):
        return "a connection failure"
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}"
    return f"an error ({type(error).__name__})"
