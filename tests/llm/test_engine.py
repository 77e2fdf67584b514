"""The engine's decisions, with scripted deployments behind the provider port: failover order,
breakers, the repair request, degraded answers and their metric, budgets, the response cache.
(The OpenAI adapter itself is tested at the wire in test_openai_provider.py.)"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb
from prometheus_client import REGISTRY

from services.llm.breaker import BreakerBoard
from services.llm.engine import EnginePolicy, LlmEngine
from services.llm.limits import open_tenant_limits
from services.llm.offline import OfflineResponder
from services.llm.providers import (
    ChatCompletion,
    ChatDelta,
    ChatRequest,
    ChatUsage,
    ProviderError,
)
from services.llm.response_cache import MemoryResponseCache
from services.mesh import correlation
from services.mesh.errors import MeshError

ANSWER = {
    "reply": "La Kobe 6 cuesta 189,99 EUR y quedan 7.",
    "intent": "product_inquiry",
    "confidence": 0.9,
    "actions": [],
    "entities_json": '{"product": "Kobe 6"}',
}
Step = str | ProviderError


@dataclass
class ScriptedDeployment:
    """A deployment that plays a script: answer texts or errors, one per call."""

    name: str
    script: list[Step] = field(default_factory=list)
    model: str = "gpt-5"
    context_tokens: int = 8000
    requests: list[ChatRequest] = field(default_factory=list)

    def _next(self, request: ChatRequest) -> str:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else json.dumps(ANSWER)
        if isinstance(step, ProviderError):
            raise step
        return step

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        text = self._next(request)
        return ChatCompletion(text, ChatUsage(100, 20, 120), self.model, "stop")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatCompletion]:
        text = self._next(request)
        for start in range(0, len(text), 7):
            yield ChatDelta(text[start : start + 7])
            if "BREAK" in text and start > 20:
                raise ProviderError("unavailable", "connection reset")
        yield ChatCompletion(text, ChatUsage(100, 20, 120), self.model, "stop")

    async def aclose(self) -> None:
        pass


def _prompt(tenant: str = "acme", budget: int = 0, **extra: object) -> pb.Prompt:
    return pb.Prompt(
        system="Eres la tienda Acme.",
        user_text="¿Cuánto cuesta la Kobe 6?",
        tenant=tenant_pb2.TenantConfig(tenant_id=tenant, language="es", daily_token_budget=budget),
        **extra,  # type: ignore[arg-type]
    )


def _engine(*deployments: ScriptedDeployment, **policy: object) -> LlmEngine:
    return LlmEngine(
        list(deployments),
        BreakerBoard(failure_threshold=2, reset_timeout=60),
        open_tenant_limits(""),
        MemoryResponseCache(),
        OfflineResponder(0.34),
        EnginePolicy(**policy),  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _as_acme() -> object:
    with correlation.bound(correlation.CallContext(correlation_id="c-1", tenant_id="acme")):
        yield


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_no_deployment_means_the_offline_responder_not_degraded() -> None:
    generation = await _engine().generate(_prompt())
    assert (generation.model, generation.degraded) == ("offline", False)


async def test_the_first_healthy_deployment_answers_and_its_usage_is_charged() -> None:
    engine = _engine(ScriptedDeployment("primary"))
    generation = await engine.generate(_prompt())
    assert generation.reply_text == ANSWER["reply"]
    assert (generation.intent, generation.model, generation.degraded) == (
        "product_inquiry",
        "gpt-5",
        False,
    )
    assert dict(generation.entities) == {"product": "Kobe 6"}
    assert generation.usage.total_tokens == 120
    assert await engine.limits.usage("acme") == {"gpt-5": 120}


async def test_failover_follows_the_order_and_an_open_breaker_is_skipped() -> None:
    down = ProviderError("unavailable", "HTTP 503")
    primary = ScriptedDeployment("primary", [down, down, down], model="gpt-5")
    secondary = ScriptedDeployment("secondary", model="gpt-5-eu")
    engine = _engine(primary, secondary)
    skipped_before = _metric(
        "meta_agent_llm_requests_total", deployment="primary", outcome="skipped_open"
    )
    models = [(await engine.generate(_prompt())).model for _ in range(3)]
    assert models == ["gpt-5-eu"] * 3
    assert len(primary.requests) == 2, "the breaker opened after two failures"
    assert engine.breakers.get("primary").state == "open"
    skipped = _metric("meta_agent_llm_requests_total", deployment="primary", outcome="skipped_open")
    assert skipped == skipped_before + 1


async def test_every_deployment_down_gives_a_degraded_offline_answer_and_counts_it() -> None:
    before = _metric("meta_agent_llm_degraded_total", reason="rate_limited")
    engine = _engine(
        ScriptedDeployment("a", [ProviderError("unavailable", "x")]),
        ScriptedDeployment("b", [ProviderError("rate_limited", "429", retry_after=3)]),
    )
    generation = await engine.generate(_prompt())
    assert (generation.model, generation.degraded) == ("offline", True)
    assert _metric("meta_agent_llm_degraded_total", reason="rate_limited") == before + 1
    assert await engine.limits.usage("acme") == {}


async def test_a_malformed_answer_gets_one_repair_request() -> None:
    deployment = ScriptedDeployment("primary", ["{not json", json.dumps(ANSWER)])
    generation = await _engine(deployment).generate(_prompt())
    assert generation.reply_text == ANSWER["reply"] and not generation.degraded
    repair = deployment.requests[1].messages
    assert repair[-2].role == "assistant" and repair[-2].content == "{not json"
    assert "not valid" in repair[-1].content
    assert generation.usage.total_tokens == 240, "the repair's tokens are counted too"


async def test_output_still_malformed_after_the_repair_falls_back_without_an_error() -> None:
    before = _metric("meta_agent_llm_degraded_total", reason="malformed_output")
    deployment = ScriptedDeployment("primary", ["nope", '{"reply": ""}'])
    generation = await _engine(deployment).generate(_prompt())
    assert (generation.model, generation.degraded) == ("offline", True)
    assert _metric("meta_agent_llm_degraded_total", reason="malformed_output") == before + 1


async def test_a_request_the_model_refuses_does_not_trip_the_breaker_or_fail_over() -> None:
    primary = ScriptedDeployment("primary", [ProviderError("bad_request", "content filter")])
    secondary = ScriptedDeployment("secondary")
    engine = _engine(primary, secondary)
    generation = await engine.generate(_prompt())
    assert generation.degraded and secondary.requests == []
    assert engine.breakers.get("primary").state == "closed"


async def test_streaming_sends_the_reply_text_then_the_final_generation() -> None:
    events = [e async for e in _engine(ScriptedDeployment("p")).generate_stream(_prompt())]
    *deltas, final = events
    assert len(deltas) > 3 and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas) == ANSWER["reply"]
    assert isinstance(final, pb.Generation) and final.reply_text == ANSWER["reply"]


async def test_a_stream_failing_before_any_delta_fails_over_and_after_one_is_an_error() -> None:
    early = ScriptedDeployment("early", [ProviderError("timeout", "slow")])
    events = [e async for e in _engine(early, ScriptedDeployment("b")).generate_stream(_prompt())]
    assert events[-1].reply_text == ANSWER["reply"]  # type: ignore[union-attr]
    broken = json.dumps({**ANSWER, "reply": "Un momento, BREAK " + "x" * 40})
    engine = _engine(ScriptedDeployment("late", [broken]), ScriptedDeployment("never"))
    received: list[object] = []
    with pytest.raises(MeshError) as failed:
        async for event in engine.generate_stream(_prompt()):
            received.append(event)
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert received and all(isinstance(e, str) for e in received)


async def test_a_spent_budget_is_resource_exhausted_and_calls_no_model() -> None:
    deployment = ScriptedDeployment("primary")
    with pytest.raises(MeshError) as refused:
        await _engine(deployment).generate(_prompt(budget=10))
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.reason == "TOKEN_BUDGET_EXHAUSTED"
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert deployment.requests == []


async def test_a_cached_answer_serves_a_first_question_when_every_model_is_down() -> None:
    primary = ScriptedDeployment("primary")
    engine = _engine(primary)
    assert not (await engine.generate(_prompt())).degraded
    primary.script = [ProviderError("unavailable", "down")]
    again = await engine.generate(_prompt())
    assert again.reply_text == ANSWER["reply"]
    assert again.degraded, "a cached answer is a degraded answer"
    follow_up = _prompt(summary="ya hablamos")
    primary.script = [ProviderError("unavailable", "down")]
    assert (await engine.generate(follow_up)).model == "offline"


async def test_with_faq_caching_a_repeated_first_question_skips_the_model() -> None:
    primary = ScriptedDeployment("primary")
    engine = _engine(primary, cache_faq=True)
    await engine.generate(_prompt())
    second = await engine.generate(_prompt())
    assert second.reply_text == ANSWER["reply"] and not second.degraded
    assert len(primary.requests) == 1


@pytest.mark.parametrize(
    ("tenant", "field"),
    [("", "prompt.tenant"), ("globex", "prompt.tenant.tenant_id")],
)
async def test_a_prompt_without_the_callers_tenant_is_refused(tenant: str, field: str) -> None:
    with pytest.raises(MeshError) as refused:
        await _engine(ScriptedDeployment("p")).generate(_prompt(tenant=tenant))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.violations[0].field == field


async def test_long_history_is_trimmed_to_the_deployments_budget() -> None:
    deployment = ScriptedDeployment("small", context_tokens=1500)
    prompt = _prompt()
    for n in range(40):
        role = conversation_pb2.TURN_ROLE_USER if n % 2 == 0 else conversation_pb2.TURN_ROLE_AGENT
        prompt.recent_turns.add(role=role, text=f"turno {n} " + "bla " * 40)
    await _engine(deployment, max_output_tokens=200).generate(prompt)
    sent = deployment.requests[0].messages
    assert sent[0].content.startswith("Eres la tienda Acme.")
    assert sent[-1].content == prompt.user_text
    texts = " ".join(m.content for m in sent)
    assert "turno 39" in texts and "turno 0 " not in texts


async def test_two_replicas_share_one_budget_in_redis(redis_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"

    def replica() -> LlmEngine:
        return LlmEngine(
            [ScriptedDeployment("primary")],
            BreakerBoard(),
            open_tenant_limits(redis_url),
            MemoryResponseCache(),
            OfflineResponder(0.34),
            EnginePolicy(max_output_tokens=1000),
        )

    replicas = [replica(), replica()]
    with correlation.bound(correlation.CallContext(correlation_id="c-2", tenant_id=tenant)):
        outcomes = await asyncio.gather(
            *(r.generate(_prompt(tenant=tenant, budget=1500)) for r in replicas),
            return_exceptions=True,
        )
        refusals = [o for o in outcomes if isinstance(o, MeshError)]
        assert len(refusals) == 1 and refusals[0].reason == "TOKEN_BUDGET_EXHAUSTED"
        assert await replicas[0].limits.usage(tenant) == {"gpt-5": 120}
        assert await replicas[1].limits.usage(tenant) == {"gpt-5": 120}
    for engine in replicas:
        await engine.aclose()


async def test_a_streamed_reply_that_needed_repair_keeps_the_text_the_customer_saw() -> None:
    shown = {**ANSWER, "reply": "Primera respuesta", "actions": "oops"}
    fixed = {**ANSWER, "reply": "Segunda"}
    engine = _engine(ScriptedDeployment("p", [json.dumps(shown), json.dumps(fixed)]))
    *deltas, final = [e async for e in engine.generate_stream(_prompt())]
    assert "".join(deltas) == "Primera respuesta" == final.reply_text  # type: ignore[union-attr]
    assert final.intent == "product_inquiry"  # type: ignore[union-attr]

    broken = _engine(ScriptedDeployment("p", [json.dumps(shown), "still broken"]))
    *deltas, final = [e async for e in broken.generate_stream(_prompt())]
    assert "".join(deltas) == final.reply_text and final.degraded  # type: ignore[union-attr]
    assert list(final.actions) == []  # type: ignore[union-attr]


async def test_an_unpaired_surrogate_is_malformed_output_not_an_internal_error() -> None:
    lone = json.dumps(ANSWER).replace("Kobe", "Kobe \\ud83d")
    generation = await _engine(ScriptedDeployment("p", [lone, json.dumps(ANSWER)])).generate(
        _prompt()
    )
    assert generation.reply_text == ANSWER["reply"]
    events = [
        e async for e in _engine(ScriptedDeployment("p", [lone, lone])).generate_stream(_prompt())
    ]
    assert isinstance(events[-1], pb.Generation) and events[-1].degraded


class ExplodingDeployment(ScriptedDeployment):
    async def complete(self, request: ChatRequest) -> ChatCompletion:
        raise RuntimeError("a bug in an adapter")


async def test_unexpected_adapter_errors_and_missing_deployments_fail_over() -> None:
    secondary = ScriptedDeployment("secondary", model="gpt-5-eu")
    engine = _engine(ExplodingDeployment("broken"), secondary)
    assert (await engine.generate(_prompt())).model == "gpt-5-eu"
    missing = ProviderError("bad_request", "DeploymentNotFound", status=404)
    engine = _engine(ScriptedDeployment("gone", [missing]), ScriptedDeployment("ok"))
    assert not (await engine.generate(_prompt())).degraded


async def test_a_request_refused_in_half_open_closes_the_breaker() -> None:
    clock = [0.0]
    deployment = ScriptedDeployment("p", [ProviderError("unavailable", "x")] * 2)
    engine = _engine(deployment)
    engine.breakers = BreakerBoard(failure_threshold=2, reset_timeout=5, clock=lambda: clock[0])
    for _ in range(2):
        await engine.generate(_prompt())
    assert engine.breakers.get("p").state == "open"
    clock[0] = 10.0
    deployment.script = [ProviderError("bad_request", "content filter", status=400)]
    await engine.generate(_prompt())
    assert engine.breakers.get("p").state == "closed"


async def test_a_cancelled_stream_and_a_missing_usage_are_still_charged() -> None:
    engine = _engine(ScriptedDeployment("p"))
    stream = engine.generate_stream(_prompt())
    await anext(stream)
    await stream.aclose()
    charged = (await engine.limits.usage("acme"))["gpt-5"]
    assert charged > 1000, "the reservation (prompt and answer allowance) is kept"

    class NoUsage(ScriptedDeployment):
        async def complete(self, request: ChatRequest) -> ChatCompletion:
            return ChatCompletion(self._next(request), ChatUsage(), "local-model", "stop")

    quiet = _engine(NoUsage("local"))
    await quiet.generate(_prompt())
    assert (await quiet.limits.usage("acme"))["local-model"] > 0


def test_a_context_smaller_than_the_answer_allowance_is_refused_at_start() -> None:
    from services.llm.settings import LlmSettings

    with pytest.raises(ValueError, match="LLM_CONTEXT_TOKENS"):
        LlmSettings(context_tokens=1024, max_output_tokens=1000)  # type: ignore[call-arg]
