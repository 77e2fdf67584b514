"""OpenAIChatProvider through the real openai SDK, against an OpenAI-compatible server on loopback.

The server validates parameters the way the real API does for reasoning models (GPT-5 rejects
`temperature` other than 1 and `max_tokens`), so these tests prove what goes on the wire. The
last test talks to a real Azure OpenAI GPT-5 deployment when AZURE_OPENAI_GPT5_ENDPOINT and
AZURE_OPENAI_GPT5_KEY are set.
"""

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.llm.providers import (
    ChatCompletion,
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatUsage,
    ProviderError,
)
from services.llm.providers.openai_chat import (
    GPT5_CONTEXT_TOKENS,
    DeploymentConfig,
    OpenAIChatProvider,
)
from services.mesh import correlation
from services.mesh.backoff import RetryPolicy
from tests.support.openai_server import (
    DEFAULT_REPLY,
    REDACTED,
    OpenAIServer,
    RecordingSleep,
    bad_request,
    break_stream,
    rate_limited,
    reply,
    server_error,
    slow,
    unauthorized,
)

DEPLOYMENT = "gpt5-prod"
GPT5_MODEL = "gpt-5-2025-08-07"
API_VERSION = "2024-12-01-preview"
COMPATIBLE_MODEL = "llama-3.1-8b-instruct"
SECRET_PROMPT = "Mi número de tarjeta es 4111 1111 1111 1111 y vivo en la calle Mayor 5"

TURN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reply": {"type": "string"},
        "intent": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "actions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "params": {"type": "string"}},
                "required": ["type", "params"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["reply", "intent", "confidence", "actions"],
    "additionalProperties": False,
}

SEED_MESSAGES = [
    ChatMessage("system", "Eres el asistente de la panadería Lola. Responde en español."),
    ChatMessage("user", "¿Abrís los domingos por la mañana?"),
]


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer(
        reasoning_models={GPT5_MODEL, "gpt-5"},
        deployment_models={DEPLOYMENT: GPT5_MODEL},
        deployments={DEPLOYMENT},
    ) as running:
        yield running


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make(server: OpenAIServer, sleep: RecordingSleep) -> AsyncIterator[Any]:
    """Build providers on the server (Azure GPT-5 by default); close them afterwards."""
    made: list[OpenAIChatProvider] = []

    def build(**options: Any) -> OpenAIChatProvider:
        azure = options.get("kind", "azure") == "azure"
        defaults: dict[str, Any] = {
            "name": "azure-test/gpt-5" if azure else f"local/{COMPATIBLE_MODEL}",
            "kind": "azure" if azure else "openai",
            "endpoint": server.base_url if azure else server.v1_url,
            "deployment_or_model": DEPLOYMENT if azure else COMPATIBLE_MODEL,
            "api_version": API_VERSION,
            "api_key": server.api_key,
            "reasoning": azure,
            "model": "gpt-5" if azure else None,
            "context_tokens": GPT5_CONTEXT_TOKENS if azure else 8192,
            "timeout": 5.0,
            "retry": RetryPolicy(attempts=3),
        }
        defaults.update(options)
        provider = OpenAIChatProvider(DeploymentConfig(**defaults), sleep=sleep)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


async def collect(
    provider: OpenAIChatProvider, request: ChatRequest
) -> tuple[list[str], list[ChatCompletion]]:
    deltas: list[str] = []
    finals: list[ChatCompletion] = []
    async for item in provider.stream(request):
        if isinstance(item, ChatDelta):
            assert not finals, "a delta came after the final completion"
            deltas.append(item.text)
        else:
            finals.append(item)
    return deltas, finals


def words(text: str) -> int:
    return len(text.split())


# -- parameters per deployment ----------------------------------------------------------------


async def test_an_azure_reasoning_deployment_gets_reasoning_parameters(
    server: OpenAIServer, make: Any
) -> None:
    provider = make(reasoning_effort="low", max_output_tokens=4000)

    answer = await provider.complete(ChatRequest(SEED_MESSAGES))

    request = server.requests[-1]
    assert request.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert request.query["api-version"] == API_VERSION
    assert request.headers["api-key"] == REDACTED
    assert "authorization" not in request.headers
    body = request.body
    assert body["model"] == DEPLOYMENT
    assert body["max_completion_tokens"] == 4000
    assert body["reasoning_effort"] == "low"
    assert "temperature" not in body and "max_tokens" not in body
    assert "stream" not in body and "response_format" not in body
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in SEED_MESSAGES]
    assert answer.text == DEFAULT_REPLY
    assert answer.model == GPT5_MODEL  # as the API reports it, not the deployment name
    assert answer.finish_reason == "stop"
    prompt = sum(words(m.content) for m in SEED_MESSAGES)
    assert answer.usage == ChatUsage(prompt, words(DEFAULT_REPLY), prompt + words(DEFAULT_REPLY))
    assert (provider.name, provider.model, provider.context_tokens) == (
        "azure-test/gpt-5",
        "gpt-5",
        272_000,
    )


@pytest.mark.parametrize(("temperature", "param"), [(0.7, "temperature"), (None, "max_tokens")])
async def test_the_seeds_parameters_are_rejected_by_a_reasoning_model(
    server: OpenAIServer, make: Any, sleep: RecordingSleep, temperature: float | None, param: str
) -> None:
    # The seed's call (`temperature: 0.7, max_tokens: 1000`) as a non-reasoning configuration
    # would send it: GPT-5 answers 400, which is bad_request and never retried.
    provider = make(reasoning=False, temperature=temperature, max_output_tokens=1000)

    with pytest.raises(ProviderError) as caught:
        await provider.complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "bad_request" and caught.value.status == 400
    assert not caught.value.fails_over
    assert f"param {param}" in caught.value.message
    assert "Unsupported" in caught.value.message
    assert len(server.requests) == 1 and sleep.calls == []
    assert server.requests[0].body["max_tokens"] == 1000


def test_a_reasoning_configuration_cannot_carry_a_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DeploymentConfig(
            "x", "azure", "https://x.invalid", "gpt-5", api_key="k", reasoning=True, temperature=0.7
        )
    with pytest.raises(ValueError, match="reasoning_effort needs reasoning"):
        DeploymentConfig("x", "openai", "http://x.invalid/v1", "m", reasoning_effort="low")


def test_azure_needs_exactly_one_credential() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DeploymentConfig("x", "azure", "https://x.invalid", DEPLOYMENT)
    with pytest.raises(ValueError, match="exactly one"):
        DeploymentConfig(
            "x",
            "azure",
            "https://x.invalid",
            DEPLOYMENT,
            api_key="k",
            azure_ad_token_provider=lambda: "t",
        )


def test_the_api_key_is_not_in_the_configurations_repr() -> None:
    config = DeploymentConfig("x", "azure", "https://x.invalid", DEPLOYMENT, api_key="sk-secret")
    assert "sk-secret" not in repr(config)


async def test_an_openai_compatible_model_gets_temperature_and_max_tokens(
    server: OpenAIServer, make: Any
) -> None:
    provider = make(kind="openai", temperature=0.2, max_output_tokens=200)

    answer = await provider.complete(ChatRequest(SEED_MESSAGES, max_output_tokens=50))

    request = server.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {REDACTED}"
    body = request.body
    assert body["model"] == COMPATIBLE_MODEL
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 50  # the request's limit, under the deployment's
    assert "max_completion_tokens" not in body and "reasoning_effort" not in body
    assert answer.model == COMPATIBLE_MODEL
    assert provider.model == COMPATIBLE_MODEL


async def test_nothing_optional_is_sent_when_nothing_is_configured(
    server: OpenAIServer, make: Any
) -> None:
    await make().complete(ChatRequest(SEED_MESSAGES))
    await make(kind="openai").complete(ChatRequest(SEED_MESSAGES))

    reasoning, plain = (request.body for request in server.requests)
    assert set(reasoning) == {"model", "messages"}
    assert set(plain) == {"model", "messages"}


async def test_azure_with_an_entra_token_provider(server: OpenAIServer, make: Any) -> None:
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return server.entra_token

    await make(api_key=None, azure_ad_token_provider=token).complete(ChatRequest(SEED_MESSAGES))

    assert calls == 1
    assert server.requests[-1].headers["authorization"] == f"Bearer {REDACTED}"
    assert "api-key" not in server.requests[-1].headers


# -- structured output -----------------------------------------------------------------------


async def test_a_response_schema_goes_out_as_strict_json_schema(
    server: OpenAIServer, make: Any
) -> None:
    request = ChatRequest(SEED_MESSAGES, response_schema=TURN_SCHEMA, schema_name="turn answer")

    answer = await make().complete(request)

    assert server.requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "turn_answer", "schema": TURN_SCHEMA, "strict": True},
    }
    assert server.requests[-1].body["messages"][0]["content"] == SEED_MESSAGES[0].content
    document = json.loads(answer.text)
    assert set(document) == {"reply", "intent", "confidence", "actions"}
    assert document["reply"] and 0 <= document["confidence"] <= 1


async def test_a_scripted_structured_reply_comes_back_verbatim(
    server: OpenAIServer, make: Any
) -> None:
    scripted = {
        "reply": "Sí, abrimos los domingos de 9 a 14.",
        "intent": "opening_hours",
        "confidence": 0.93,
        "actions": [],
    }
    server.reply(json.dumps(scripted, ensure_ascii=False))

    answer = await make().complete(ChatRequest(SEED_MESSAGES, response_schema=TURN_SCHEMA))

    assert json.loads(answer.text) == scripted


async def test_json_object_mode_states_the_schema_in_a_system_line(
    server: OpenAIServer, make: Any
) -> None:
    provider = make(kind="openai", structured="json_object")

    answer = await provider.complete(ChatRequest(SEED_MESSAGES, response_schema=TURN_SCHEMA))

    body = server.requests[-1].body
    assert body["response_format"] == {"type": "json_object"}
    roles = [message["role"] for message in body["messages"]]
    assert roles == ["system", "system", "user"]  # after the tenant's system prompt
    line = body["messages"][1]["content"]
    assert "JSON" in line  # JSON mode requires the word, or the API answers 400
    assert json.loads(line[line.index("{") :]) == TURN_SCHEMA
    assert set(json.loads(answer.text)) >= {"reply", "intent", "confidence", "actions"}


async def test_structured_none_sends_only_the_system_line(server: OpenAIServer, make: Any) -> None:
    await make(kind="openai", structured="none").complete(
        ChatRequest(SEED_MESSAGES, response_schema=TURN_SCHEMA)
    )

    body = server.requests[-1].body
    assert "response_format" not in body
    assert "JSON Schema" in body["messages"][1]["content"]


# -- answers ---------------------------------------------------------------------------------


async def test_finish_reason_length_is_passed_through(server: OpenAIServer, make: Any) -> None:
    answer = await make().complete(ChatRequest(SEED_MESSAGES, max_output_tokens=3))

    assert server.requests[-1].body["max_completion_tokens"] == 3
    assert answer.finish_reason == "length"
    assert answer.text == "Hola, soy el "
    assert answer.usage.completion_tokens == 3


async def test_a_refusal_is_bad_request_without_the_refusal_text(
    server: OpenAIServer, make: Any
) -> None:
    server.script(reply(refusal="I'm sorry, I cannot help with that request."))

    with pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "bad_request"
    assert "refused to answer" in caught.value.message
    assert "sorry" not in caught.value.message
    assert len(server.requests) == 1


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["azure", "openai"])
async def test_a_stream_is_deltas_then_one_final_completion(
    server: OpenAIServer, make: Any, kind: str
) -> None:
    server.script(reply("Sí, abrimos los domingos de nueve a dos.", chunk_delay=0.01))

    deltas, finals = await collect(make(kind=kind), ChatRequest(SEED_MESSAGES))

    assert len(deltas) == 8
    assert len(finals) == 1
    final = finals[0]
    assert final.text == "".join(deltas) == "Sí, abrimos los domingos de nueve a dos."
    prompt = sum(words(m.content) for m in SEED_MESSAGES)
    assert final.usage == ChatUsage(prompt, 8, prompt + 8)
    assert final.model == (GPT5_MODEL if kind == "azure" else COMPATIBLE_MODEL)
    assert final.finish_reason == "stop"
    body = server.requests[-1].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_a_structured_stream_assembles_the_document(server: OpenAIServer, make: Any) -> None:
    deltas, finals = await collect(
        make(), ChatRequest(SEED_MESSAGES, response_schema=TURN_SCHEMA, max_output_tokens=500)
    )

    assert len(deltas) > 1
    assert set(json.loads(finals[0].text)) == {"reply", "intent", "confidence", "actions"}
    assert server.requests[-1].body["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    "failure", [server_error(503), break_stream(after=0)], ids=["http-503", "broken-at-once"]
)
async def test_a_stream_failing_before_its_first_delta_is_retried(
    server: OpenAIServer, make: Any, sleep: RecordingSleep, failure: Any
) -> None:
    server.script(failure)

    deltas, finals = await collect(make(), ChatRequest(SEED_MESSAGES))

    assert "".join(deltas) == finals[0].text == DEFAULT_REPLY
    assert len(server.requests) == 2
    assert len(sleep.calls) == 1


async def test_a_stream_breaking_midway_is_unavailable_and_not_retried(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(break_stream(after=3))
    deltas: list[str] = []

    with pytest.raises(ProviderError) as caught:
        async for item in make().stream(ChatRequest(SEED_MESSAGES)):
            assert isinstance(item, ChatDelta)
            deltas.append(item.text)

    assert deltas == ["Hola, ", "soy ", "el "]
    assert caught.value.kind == "unavailable"
    assert "after 3 delta(s)" in caught.value.message
    assert len(server.requests) == 1
    assert sleep.calls == []


async def test_a_streamed_refusal_is_bad_request(server: OpenAIServer, make: Any) -> None:
    server.script(reply(refusal="I cannot help with that."))

    with pytest.raises(ProviderError) as caught:
        await collect(make(), ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "bad_request"


# -- retries and failures --------------------------------------------------------------------


async def test_429_waits_as_long_as_retry_after_says(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(rate_limited(retry_after=2), rate_limited(retry_after=9, retry_after_ms=1500))

    answer = await make().complete(ChatRequest(SEED_MESSAGES))

    assert answer.text == DEFAULT_REPLY
    assert sleep.calls == [2.0, 1.5]  # milliseconds win over seconds
    assert len(server.requests) == 3


async def test_retry_after_beyond_the_cap_gives_up_at_once(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(rate_limited(retry_after=60))

    with pytest.raises(ProviderError) as caught:
        await make(retry=RetryPolicy(attempts=4, max_wait=20)).complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "rate_limited" and caught.value.fails_over
    assert caught.value.retry_after == 60
    assert caught.value.status == 429
    assert sleep.calls == []
    assert len(server.requests) == 1


async def test_500_then_success_is_retried_with_jittered_backoff(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(server_error(500))

    answer = await make(retry=RetryPolicy(attempts=3, base_delay=0.5)).complete(
        ChatRequest(SEED_MESSAGES)
    )

    assert answer.text == DEFAULT_REPLY
    assert len(server.requests) == 2
    assert len(sleep.calls) == 1 and 0 <= sleep.calls[0] <= 0.5


async def test_exhausted_retries_are_unavailable(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(server_error(503), server_error(503), server_error(503))

    with pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "unavailable"
    assert caught.value.status == 503 and caught.value.retry_after is None
    assert "HTTP 503, after 3 attempt(s)" in caught.value.message
    assert len(server.requests) == 3 and len(sleep.calls) == 2


async def test_exhausted_429s_are_rate_limited(server: OpenAIServer, make: Any) -> None:
    server.script(rate_limited(retry_after=1), rate_limited(retry_after=1), rate_limited(3))

    with pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "rate_limited"
    assert caught.value.retry_after == 3  # the server's last advice
    assert len(server.requests) == 3


async def test_400_is_bad_request_and_not_retried(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(
        bad_request(
            "This model's maximum context length is 272000 tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    )

    with pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "bad_request" and caught.value.status == 400
    assert "code context_length_exceeded, param messages" in caught.value.message
    assert "maximum context length is 272000 tokens" in caught.value.message
    assert len(server.requests) == 1 and sleep.calls == []


async def test_a_provider_message_quoting_the_prompt_is_withheld(
    server: OpenAIServer, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(bad_request(f"Invalid content: '{SECRET_PROMPT}'", param="messages"))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest([ChatMessage("user", SECRET_PROMPT)]))

    assert "withheld" in caught.value.message
    assert "4111" not in caught.value.message
    assert "4111" not in caplog.text


async def test_neither_key_nor_prompt_reaches_logs_or_errors(
    server: OpenAIServer, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metaagent")
    server.script(server_error(503), server_error(503), server_error(503))
    provider = make()

    with pytest.raises(ProviderError) as caught:
        await provider.complete(ChatRequest([ChatMessage("user", SECRET_PROMPT)]))

    records = [r for r in caplog.records if r.name.startswith("metaagent.llm")]
    assert len(records) == 3  # two retries and the giving up
    for text in (caplog.text, caught.value.message, repr(caught.value)):
        assert server.api_key not in text
        assert "4111" not in text


@pytest.mark.parametrize("kind", ["azure", "openai"])
async def test_refused_credentials_are_refused_and_not_retried(
    server: OpenAIServer, make: Any, kind: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        await make(kind=kind, api_key="wrong-key").complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "refused" and caught.value.status == 401
    assert not caught.value.fails_over
    assert "refused the credentials" in caught.value.message
    assert "wrong-key" not in caught.value.message
    assert len(server.requests) == 1


async def test_a_scripted_401_is_refused(server: OpenAIServer, make: Any) -> None:
    server.script(unauthorized())

    with pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "refused"
    assert len(server.requests) == 1


async def test_an_unknown_azure_deployment_is_bad_request_that_names_it(
    server: OpenAIServer, make: Any
) -> None:
    with pytest.raises(ProviderError) as caught:
        await make(deployment_or_model="gpt5-typo").complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "bad_request" and caught.value.status == 404
    assert "no deployment 'gpt5-typo'" in caught.value.message
    assert len(server.requests) == 1


async def test_responses_slower_than_the_timeout_end_as_timeout(
    server: OpenAIServer, make: Any
) -> None:
    server.script(slow(8.0), slow(8.0))

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await make(timeout=1.0, retry=RetryPolicy(attempts=2)).complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "timeout" and caught.value.fails_over
    assert "a timeout, after 2 attempt(s)" in caught.value.message
    assert len(server.requests) == 2
    assert time.monotonic() - started < 8.0


async def test_a_slow_response_then_a_fast_one_succeeds(server: OpenAIServer, make: Any) -> None:
    server.script(slow(8.0))

    answer = await make(timeout=1.0).complete(ChatRequest(SEED_MESSAGES))

    assert answer.text == DEFAULT_REPLY
    assert len(server.requests) == 2


# -- the inbound deadline --------------------------------------------------------------------


async def test_no_retry_waits_past_the_inbound_deadline(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(rate_limited(retry_after=2))
    call = correlation.CallContext(deadline=correlation.with_deadline_in(1.0))

    with correlation.bound(call), pytest.raises(ProviderError) as caught:
        await make().complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "rate_limited"
    assert caught.value.retry_after == 2
    assert "deadline" in caught.value.message
    assert sleep.calls == []
    assert len(server.requests) == 1


async def test_the_request_timeout_is_cut_to_the_deadline(
    server: OpenAIServer, make: Any, sleep: RecordingSleep
) -> None:
    server.script(slow(12.0))
    call = correlation.CallContext(deadline=correlation.with_deadline_in(1.0))

    started = time.monotonic()
    with correlation.bound(call), pytest.raises(ProviderError) as caught:
        await make(timeout=10.0).complete(ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 6.0
    assert len(server.requests) == 1 and sleep.calls == []


async def test_a_passed_deadline_sends_nothing(server: OpenAIServer, make: Any) -> None:
    call = correlation.CallContext(deadline=correlation.with_deadline_in(-0.1))

    with correlation.bound(call), pytest.raises(ProviderError) as caught:
        await collect(make(), ChatRequest(SEED_MESSAGES))

    assert caught.value.kind == "timeout"
    assert server.requests == []


async def test_aclose_closes_the_client(make: Any) -> None:
    provider = make()
    await provider.complete(ChatRequest(SEED_MESSAGES))

    await provider.aclose()

    assert provider._client.is_closed()


# -- real Azure OpenAI -----------------------------------------------------------------------


async def test_real_azure_openai_gpt5_structured_completion_and_stream() -> None:
    endpoint = os.environ.get("AZURE_OPENAI_GPT5_ENDPOINT")
    key = os.environ.get("AZURE_OPENAI_GPT5_KEY")
    if not endpoint or not key:
        pytest.skip(
            "set AZURE_OPENAI_GPT5_ENDPOINT and AZURE_OPENAI_GPT5_KEY (optionally "
            "AZURE_OPENAI_GPT5_DEPLOYMENT, AZURE_OPENAI_GPT5_API_VERSION) to run"
        )
    provider = OpenAIChatProvider(
        DeploymentConfig(
            name="azure-real/gpt-5",
            kind="azure",
            endpoint=endpoint,
            deployment_or_model=os.environ.get("AZURE_OPENAI_GPT5_DEPLOYMENT", "gpt-5"),
            api_version=os.environ.get("AZURE_OPENAI_GPT5_API_VERSION", API_VERSION),
            api_key=key,
            reasoning=True,
            reasoning_effort="minimal",
            max_output_tokens=2000,
            context_tokens=GPT5_CONTEXT_TOKENS,
            timeout=60.0,
        )
    )
    schema = {
        "type": "object",
        "properties": {
            "reply": {"type": "string"},
            "intent": {"type": "string", "enum": ["opening_hours", "order", "other"]},
            "confidence": {"type": "number"},
            "actions": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["reply", "intent", "confidence", "actions"],
        "additionalProperties": False,
    }
    try:
        answer = await asyncio.wait_for(
            provider.complete(ChatRequest(SEED_MESSAGES, response_schema=schema)), 90
        )
        document = json.loads(answer.text)
        assert document["intent"] in {"opening_hours", "order", "other"}
        assert document["reply"]
        assert answer.usage.total_tokens > 0
        assert answer.model.startswith("gpt-5")

        deltas, finals = await asyncio.wait_for(
            collect(provider, ChatRequest(SEED_MESSAGES, max_output_tokens=2000)), 90
        )
        assert deltas and len(finals) == 1
        assert finals[0].text == "".join(deltas)
        assert finals[0].usage.total_tokens > 0
    finally:
        await provider.aclose()
