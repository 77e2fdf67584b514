"""The configured model deployments, in failover order (`LLM_PROVIDER_ORDER`)."""

from services.llm.providers import ChatProvider
from services.llm.settings import LlmSettings
from services.mesh.backoff import RetryPolicy
from services.mesh.entra import entra_token_provider


def configured_deployments(settings: LlmSettings) -> list[ChatProvider]:
    """One provider per configured deployment; none configured = the offline responder alone."""
    from services.llm.providers.openai_chat import DeploymentConfig, OpenAIChatProvider

    configs: dict[str, DeploymentConfig] = {}
    azure = [
        ("azure", settings.azure_endpoint, settings.azure_key, settings.azure_deployment),
        (
            "azure-failover",
            settings.failover_endpoint,
            settings.failover_key,
            settings.failover_deployment or settings.azure_deployment,
        ),
    ]
    for name, endpoint, key, deployment in azure:
        if not endpoint:
            continue
        secret = key.get_secret_value()
        configs[name] = DeploymentConfig(
            name=f"{name}/{deployment}",
            kind="azure",
            endpoint=endpoint,
            deployment_or_model=deployment,
            api_version=settings.azure_api_version,
            api_key=secret or None,
            azure_ad_token_provider=None
            if secret
            else entra_token_provider("AZURE_OPENAI_GPT5_KEY"),
            reasoning=settings.azure_reasoning,
            reasoning_effort=settings.reasoning_effort if settings.azure_reasoning else None,
            temperature=None if settings.azure_reasoning else settings.temperature,
            max_output_tokens=settings.reasoning_max_output_tokens
            if settings.azure_reasoning
            else settings.max_output_tokens,
            context_tokens=settings.context_tokens,
            timeout=settings.timeout_seconds,
            retry=RetryPolicy(attempts=settings.retry_attempts),
        )
    if settings.openai_base_url:
        configs["openai"] = DeploymentConfig(
            name=f"openai/{settings.openai_model}",
            kind="openai",
            endpoint=settings.openai_base_url,
            deployment_or_model=settings.openai_model,
            api_key=settings.openai_key.get_secret_value() or None,
            reasoning=settings.openai_reasoning,
            reasoning_effort=settings.reasoning_effort if settings.openai_reasoning else None,
            temperature=None if settings.openai_reasoning else settings.temperature,
            max_output_tokens=settings.reasoning_max_output_tokens
            if settings.openai_reasoning
            else settings.max_output_tokens,
            context_tokens=settings.context_tokens,
            timeout=settings.timeout_seconds,
            retry=RetryPolicy(attempts=settings.retry_attempts),
            structured=settings.openai_structured,
        )
    return [
        OpenAIChatProvider(configs[name]) for name in settings.provider_order if name in configs
    ]
