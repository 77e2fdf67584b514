"""The chat provider port: messages in, one completion (or a stream of deltas) out.

A provider is one deployment of one model behind one endpoint (Azure OpenAI GPT-5 in a region,
an OpenAI-compatible server). It does its own transport retries; what it cannot serve it raises
as `ProviderError`, whose `kind` tells the engine whether to count it against the deployment's
circuit breaker and fail over (`rate_limited`, `unavailable`, `timeout`) or not (`bad_request`,
`refused`: our request or our credentials are wrong, another deployment will not help with the
first and an operator must fix the second).
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]
FailureKind = Literal["rate_limited", "unavailable", "timeout", "bad_request", "refused"]
FAILOVER_KINDS: frozenset[str] = frozenset({"rate_limited", "unavailable", "timeout"})


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatRequest:
    messages: list[ChatMessage]
    response_schema: dict[str, Any] | None = None
    """JSON Schema of the answer; providers send it as a strict `json_schema` response format."""
    schema_name: str = "generation"
    max_output_tokens: int | None = None
    """None = the deployment's own limit."""


@dataclass(frozen=True)
class ChatUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class ChatCompletion:
    text: str
    usage: ChatUsage = field(default_factory=ChatUsage)
    model: str = ""
    """The model that answered, as the API reports it."""
    finish_reason: str = ""


@dataclass(frozen=True)
class ChatDelta:
    text: str


class ProviderError(Exception):
    """A deployment could not answer after its own retries."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.retry_after = retry_after
        self.status = status

    @property
    def fails_over(self) -> bool:
        return self.kind in FAILOVER_KINDS


class ChatProvider(Protocol):
    name: str
    """Unique name of the deployment (breaker and metrics key), e.g. "azure-eastus2/gpt-5"."""
    model: str
    context_tokens: int
    """Prompt budget in tokens: the engine trims context to fit (README: LLM)."""

    async def complete(self, request: ChatRequest) -> ChatCompletion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatCompletion]:
        """Deltas of the answer's text as they arrive, then exactly one ChatCompletion with the
        whole text and the usage. An error may come after some deltas."""
        ...

    async def aclose(self) -> None: ...
