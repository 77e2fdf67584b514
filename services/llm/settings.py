"""LLM service settings: the deployments in failover order, limits, the response cache, breakers.

Nothing set means the embedded profile: no deployment, the offline responder answers. The
seed's `AZURE_OPENAI_GPT5_*` variables name the primary deployment; `..._FAILOVER_*` a second
(another region); `OPENAI_BASE_URL` an OpenAI-compatible server. `LLM_PROVIDER_ORDER` says in
which order they are tried. GPT-5 deployments are reasoning models: they take
`max_completion_tokens` and `reasoning_effort` and refuse a custom temperature (the seed's
`temperature: 0.7, max_tokens: 1000` would fail there), so those are set per deployment kind.
"""

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.mesh.settings import MeshSettings

ProviderName = Literal["azure", "azure-failover", "openai"]
Effort = Literal["minimal", "low", "medium", "high"]


class LlmSettings(MeshSettings):
    intent_threshold: float = Field(
        0.34, ge=0.0, le=1.0, validation_alias="OFFLINE_INTENT_THRESHOLD"
    )
    """Similarity an utterance needs to an intent's examples for the offline responder."""
    max_user_text_chars: int = Field(8000, validation_alias="LLM_MAX_USER_TEXT_CHARS")

    azure_endpoint: str = Field("", validation_alias="AZURE_OPENAI_GPT5_ENDPOINT")
    azure_key: SecretStr = Field(SecretStr(""), validation_alias="AZURE_OPENAI_GPT5_KEY")
    """Empty with an endpoint = Entra ID (azure-identity, the `azure` extra)."""
    azure_deployment: str = Field("gpt-5", validation_alias="AZURE_OPENAI_GPT5_DEPLOYMENT")
    azure_api_version: str = Field(
        "2024-12-01-preview", validation_alias="AZURE_OPENAI_GPT5_API_VERSION"
    )
    failover_endpoint: str = Field("", validation_alias="AZURE_OPENAI_GPT5_FAILOVER_ENDPOINT")
    failover_key: SecretStr = Field(
        SecretStr(""), validation_alias="AZURE_OPENAI_GPT5_FAILOVER_KEY"
    )
    failover_deployment: str = Field("", validation_alias="AZURE_OPENAI_GPT5_FAILOVER_DEPLOYMENT")
    """Empty = the primary's deployment name."""
    azure_reasoning: bool = Field(True, validation_alias="AZURE_OPENAI_GPT5_REASONING")
    reasoning_effort: Effort | None = Field("low", validation_alias="LLM_REASONING_EFFORT")

    openai_base_url: str = Field("", validation_alias="OPENAI_BASE_URL")
    openai_key: SecretStr = Field(SecretStr(""), validation_alias="OPENAI_API_KEY")
    openai_model: str = Field("gpt-4o-mini", validation_alias="OPENAI_MODEL")
    openai_reasoning: bool = Field(False, validation_alias="OPENAI_REASONING")
    openai_structured: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema", validation_alias="OPENAI_STRUCTURED_OUTPUT"
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0, validation_alias="LLM_TEMPERATURE")
    """Non-reasoning deployments only."""

    provider_order: list[ProviderName] = Field(
        ["azure", "azure-failover", "openai"], validation_alias="LLM_PROVIDER_ORDER"
    )
    """Failover order among the configured deployments (JSON list or comma-separated)."""
    max_output_tokens: int = Field(1000, ge=16, validation_alias="LLM_MAX_OUTPUT_TOKENS")
    """The answer's cap on non-reasoning deployments."""
    reasoning_max_output_tokens: int = Field(
        8000, ge=16, validation_alias="LLM_REASONING_MAX_OUTPUT_TOKENS"
    )
    """The cap on reasoning deployments, whose hidden reasoning counts against it too."""
    context_tokens: int = Field(128_000, ge=1024, validation_alias="LLM_CONTEXT_TOKENS")
    """Prompt budget; context beyond it is trimmed oldest first (README: LLM)."""
    timeout_seconds: float = Field(30.0, gt=0, validation_alias="LLM_TIMEOUT_SECONDS")
    retry_attempts: int = Field(4, ge=1, validation_alias="LLM_RETRY_ATTEMPTS")
    """Attempts per deployment (the first included) on 429, 5xx and timeouts."""

    limits_url: str = Field("", validation_alias="LLM_LIMITS_URL")
    """`redis://…` shares rate limits and token budgets between replicas; empty = in-process."""
    requests_per_minute: int = Field(120, ge=0, validation_alias="LLM_REQUESTS_PER_MINUTE")
    """Per tenant, when the tenant's `turns_per_minute` is 0; 0 = unlimited."""
    response_cache_url: str = Field("", validation_alias="LLM_RESPONSE_CACHE_URL")
    response_cache_ttl_seconds: int = Field(
        3600, ge=1, validation_alias="LLM_RESPONSE_CACHE_TTL_SECONDS"
    )
    cache_faq: bool = Field(False, validation_alias="LLM_CACHE_FAQ")
    """Answer first questions (no history) from the response cache when it has them."""
    breaker_failures: int = Field(5, ge=1, validation_alias="LLM_BREAKER_FAILURES")
    breaker_reset_seconds: float = Field(30.0, gt=0, validation_alias="LLM_BREAKER_RESET_SECONDS")

    def reserved_output_tokens(self) -> int:
        """The answer allowance of the most generous configured deployment."""
        reasoning = (self.azure_endpoint and self.azure_reasoning) or (
            self.openai_base_url and self.openai_reasoning
        )
        return self.reasoning_max_output_tokens if reasoning else self.max_output_tokens

    @model_validator(mode="after")
    def _room_for_a_prompt(self) -> "LlmSettings":
        if self.context_tokens < self.reserved_output_tokens() + 1024:
            raise ValueError(
                "LLM_CONTEXT_TOKENS must exceed the output allowance "
                f"({self.reserved_output_tokens()}) by at least 1024 tokens"
            )
        return self
