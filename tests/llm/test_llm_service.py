"""The LLM service over gRPC with two Azure OpenAI regions played by loopback servers, through
the real openai client: failover in the configured order, streaming, and degraded answers."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from metaagent.common.v1 import tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb
from prometheus_client import REGISTRY

from services.llm.app import build_server
from services.llm.settings import LlmSettings
from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from tests.support.openai_server import TEST_API_KEY, OpenAIServer, server_error
from tests.support.servers import started

ANSWER = {
    "reply": "Sí: la Kobe 6 cuesta 189,99 EUR.",
    "intent": "product_inquiry",
    "confidence": 0.88,
    "actions": [],
    "entities_json": "{}",
}


@pytest.fixture
async def regions() -> AsyncIterator[tuple[OpenAIServer, OpenAIServer]]:
    options = {"reasoning_models": {"gpt-5"}, "deployment_models": {"gpt-5": "gpt-5"}}
    async with OpenAIServer(**options) as east, OpenAIServer(**options) as west:  # type: ignore[arg-type]
        yield east, west


@pytest.fixture
async def llm(
    state_dir: Path, regions: tuple[OpenAIServer, OpenAIServer]
) -> AsyncIterator[MeshClients]:
    east, west = regions
    settings = LlmSettings(
        state_dir=state_dir,
        grpc_listen_addr="127.0.0.1:0",
        azure_endpoint=east.base_url,
        azure_key=TEST_API_KEY,
        azure_deployment="gpt-5",
        failover_endpoint=west.base_url,
        failover_key=TEST_API_KEY,
        breaker_failures=2,
        retry_attempts=2,
        timeout_seconds=2.0,
    )  # type: ignore[call-arg]
    server = build_server(settings)
    async with started(server) as address:
        await server.ready.wait()
        clients = MeshClients(MeshSettings(state_dir=state_dir, llm_addr=address), "orchestrator")
        with correlation.bound(correlation.CallContext(correlation_id="c-llm", tenant_id="acme")):
            yield clients
        await clients.close()


def _prompt() -> pb.Prompt:
    return pb.Prompt(
        system="Eres la tienda Acme.",
        user_text="¿Cuánto cuesta la Kobe 6?",
        tenant=tenant_pb2.TenantConfig(tenant_id="acme", language="es"),
    )


async def test_the_primary_region_answers_with_gpt5_parameters(
    llm: MeshClients, regions: tuple[OpenAIServer, OpenAIServer]
) -> None:
    east, west = regions
    east.reply(json.dumps(ANSWER))
    generation = (await llm.llm.Generate(pb.GenerateRequest(prompt=_prompt()))).generation
    assert (generation.reply_text, generation.model, generation.degraded) == (
        ANSWER["reply"],
        "gpt-5",
        False,
    )
    assert generation.usage.total_tokens > 0
    body = east.requests[-1].body
    assert "temperature" not in body and "max_tokens" not in body
    assert body["reasoning_effort"] == "low" and body["max_completion_tokens"] == 8000
    assert body["response_format"]["type"] == "json_schema"
    assert west.requests == []


async def test_a_failing_region_fails_over_and_then_stays_skipped(
    llm: MeshClients, regions: tuple[OpenAIServer, OpenAIServer]
) -> None:
    east, west = regions
    east.script(*[server_error(503)] * 12)
    west.reply(*[json.dumps(ANSWER)] * 3)
    for _ in range(3):
        generation = (await llm.llm.Generate(pb.GenerateRequest(prompt=_prompt()))).generation
        assert generation.reply_text == ANSWER["reply"] and not generation.degraded
    east_calls = len(east.requests)
    assert len(west.requests) == 3
    assert east_calls == 2 * 2, "two calls of two attempts each, then the breaker is open"


async def test_the_stream_carries_the_reply_then_the_final_generation(
    llm: MeshClients, regions: tuple[OpenAIServer, OpenAIServer]
) -> None:
    regions[0].reply(json.dumps(ANSWER))
    deltas, finals = [], []
    async for event in llm.llm.GenerateStream(pb.GenerateStreamRequest(prompt=_prompt())):
        (deltas if event.WhichOneof("event") == "delta" else finals).append(event)
    assert "".join(e.delta for e in deltas) == ANSWER["reply"]
    assert len(deltas) > 2
    [final] = finals
    assert final.final.intent == "product_inquiry"


async def test_both_regions_down_give_a_degraded_offline_answer(
    llm: MeshClients, regions: tuple[OpenAIServer, OpenAIServer]
) -> None:
    before = (
        REGISTRY.get_sample_value("meta_agent_llm_degraded_total", {"reason": "unavailable"}) or 0.0
    )
    for region in regions:
        region.script(*[server_error(500)] * 8)
    generation = (await llm.llm.Generate(pb.GenerateRequest(prompt=_prompt()))).generation
    assert (generation.model, generation.degraded) == ("offline", True)
    after = REGISTRY.get_sample_value("meta_agent_llm_degraded_total", {"reason": "unavailable"})
    assert after == before + 1


async def test_an_empty_prompt_and_a_foreign_tenant_are_refused(llm: MeshClients) -> None:
    for prompt, field in (
        (pb.Prompt(tenant=_prompt().tenant), "prompt.user_text"),
        (
            pb.Prompt(user_text="hola", tenant=tenant_pb2.TenantConfig(tenant_id="globex")),
            "prompt.tenant.tenant_id",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await llm.llm.Generate(pb.GenerateRequest(prompt=prompt))
        error = MeshError.from_rpc_error(refused.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == field
