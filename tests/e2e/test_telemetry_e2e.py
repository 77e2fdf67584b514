"""Telemetry of the whole mesh as processes (`metaagent dev`), the model behind a local
OpenAI-compatible server and traces exported over OTLP/HTTP to a local receiver:

- one process call is one trace across the gateway and every service it reaches;
- after traffic every component's `/metrics` holds the named metrics with plausible values;
- a call whose text holds an email address, a phone number and a secret-looking token leaves
  none of them in any component's logs.
"""

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mesh_process import DevMesh, dev_mesh, mesh_environment
from tests.support.openai_server import TEST_API_KEY, OpenAIServer
from tests.support.ports import free_ports
from tools.telemetry_sink import Sink, telemetry_sink

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SERVICES = ("context", "retrieval", "llm", "speech", "orchestrator")
PROCESS = "/v2/agents/meta-agent/process"
EMAIL = "ana.garcia.e2e@example.com"
PHONE = "+34 612 345 678"
SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def turn(correlation_id: str, text: str) -> dict[str, object]:
    return {
        "tenantId": "demo",
        "sessionId": "sess-telemetry",
        "correlationId": correlation_id,
        "userId": "user-42",
        "channel": "web",
        "input": {"type": "text", "text": text},
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, url: str) -> Samples:
    reply = await client.get(url)
    assert reply.status_code == 200, url
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (n, found), value in samples.items() if n == name and wanted <= found)


def served(samples: Samples, service: str, method: str, code: str = "OK") -> float:
    return total(
        samples,
        "meta_agent_grpc_server_handled_total",
        grpc_service=service,
        grpc_method=method,
        grpc_code=code,
    )


async def wait_for_trace(sink: Sink, correlation_id: str, services: set[str]) -> set[str]:
    """The services that exported spans of the call's trace, once they include `services`."""
    found: set[str] = set()
    async with asyncio.timeout(20):
        while not services <= found:
            await asyncio.sleep(0.2)
            with sink.lock:
                spans = list(sink.spans)
            traces = {
                s.trace_id
                for s in spans
                if s.attributes.get("metaagent.correlation_id") == correlation_id
            }
            assert len(traces) <= 1, f"{correlation_id} spread over {len(traces)} traces"
            found = {s.service for s in spans if s.trace_id in traces}
    return found


async def exercise(mesh: DevMesh, sink: Sink, metrics_ports: dict[str, int]) -> None:
    token = mesh.run("token", "--tenant", "demo", "--sub", "user-42").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30) as client:
        kobe = turn("corr-tel-1", "Quiero comprar la zapatilla Kobe, la dejé en el carrito.")
        assert (await client.post(PROCESS, json=kobe, headers=headers)).status_code == 200
        private = f"Escribidme a {EMAIL} o al {PHONE}; mi clave de la tienda es {SECRET}"
        reply = await client.post(PROCESS, json=turn("corr-tel-2", private), headers=headers)
        assert reply.status_code == 200, reply.text

        services = {f"metaagent-{name}" for name in ("gateway", *SERVICES) if name != "speech"}
        assert await wait_for_trace(sink, "corr-tel-1", services) >= services

        gateway = await scrape(client, f"{mesh.gateway_url}/metrics")
        seen = {
            name: await scrape(client, f"http://127.0.0.1:{port}/metrics")
            for name, port in metrics_ports.items()
        }

    route = {"route": PROCESS, "method": "POST", "tenant_id": "demo"}
    requests = total(
        gateway, "meta_agent_request_duration_seconds_count", status_code="200", **route
    )
    assert requests == 2
    seconds = total(gateway, "meta_agent_request_duration_seconds_sum", **route)
    assert 0 < seconds / requests < 30
    orchestrator_service = "metaagent.orchestrator.v1.OrchestratorService"
    called = total(
        gateway,
        "meta_agent_grpc_client_handled_total",
        grpc_service=orchestrator_service,
        grpc_method="Process",
        grpc_code="OK",
    )
    assert called == 2

    orchestrator = seen["orchestrator"]
    assert served(orchestrator, orchestrator_service, "Process") == 2
    assert total(orchestrator, "meta_agent_turns_total", channel="web") == 2
    generated = total(
        orchestrator, "meta_agent_grpc_client_handled_total", grpc_method="Generate", grpc_code="OK"
    )
    timed = total(
        orchestrator, "meta_agent_grpc_client_handling_seconds_count", grpc_method="Generate"
    )
    assert generated == timed == 2

    assert served(seen["context"], "metaagent.context.v1.ContextService", "CommitTurn") == 2
    retrieval = seen["retrieval"]
    assert served(retrieval, "metaagent.retrieval.v1.RetrievalService", "Search") == 2
    assert total(retrieval, "meta_agent_vector_search_results_count", tenant_id="demo") == 2
    assert total(retrieval, "meta_agent_vector_search_results_sum", tenant_id="demo") >= 1

    llm = seen["llm"]
    assert served(llm, "metaagent.llm.v1.LlmService", "Generate") == 2
    assert total(llm, "meta_agent_llm_requests_total", outcome="ok") == 2
    prompt_tokens = total(llm, "meta_agent_llm_tokens_total", tenant_id="demo", kind="prompt")
    completion_tokens = total(
        llm, "meta_agent_llm_tokens_total", tenant_id="demo", kind="completion"
    )
    assert prompt_tokens > 50 and 0 < completion_tokens < prompt_tokens

    health = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    for name in SERVICES:
        assert total(seen[name], "meta_agent_grpc_server_handled_total", **health) >= 1, name


def log_text(state_dir: Path) -> str:
    parts = [path.read_text() for path in sorted((state_dir / "logs").glob("*.log"))]
    parts.append((state_dir / "dev-output.log").read_text())
    return "\n".join(parts)


async def test_traces_metrics_and_logs_of_the_running_mesh(tmp_path: Path) -> None:
    with telemetry_sink() as sink:
        async with OpenAIServer(api_key=TEST_API_KEY) as model:
            env = mesh_environment(tmp_path)
            metrics_ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
            env.update(
                OPENAI_BASE_URL=model.v1_url,
                OPENAI_API_KEY=TEST_API_KEY,
                OPENAI_MODEL="gpt-4o-mini",
                LLM_PROVIDER_ORDER='["openai"]',
                OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
                OTEL_BSP_SCHEDULE_DELAY="100",
                LOG_LEVEL="INFO",
                **{
                    f"{name.upper()}_METRICS_PORT": str(port)
                    for name, port in metrics_ports.items()
                },
            )
            async with dev_mesh(tmp_path, env) as mesh:
                await mesh.wait_healthy()
                await exercise(mesh, sink, metrics_ports)
            logs = log_text(tmp_path)
    assert "corr-tel-2" in logs, "the call was logged"
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("traceId") for line in lines), "log lines carry the trace id"
    for secret in (EMAIL, PHONE, SECRET, "612345678", "ana.garcia"):
        assert secret not in logs, f"{secret!r} reached the logs"
