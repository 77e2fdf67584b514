"""Entra ID (managed identity, workload identity, az login) tokens for Azure OpenAI, used when
no API key is configured. azure-identity is the optional `azure` extra, imported lazily."""

from typing import Any

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def entra_token_provider(key_variable: str) -> Any:
    """A bearer-token provider for the openai client; `key_variable` names the API-key setting
    whose absence brought us here, for the error message."""
    try:
        from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
    except ImportError as missing:
        raise ImportError(
            f"Azure OpenAI without {key_variable} uses Entra ID and needs the 'azure' extra: "
            "pip install 'metaagent[azure]'"
        ) from missing
    return get_bearer_token_provider(DefaultAzureCredential(), COGNITIVE_SERVICES_SCOPE)
