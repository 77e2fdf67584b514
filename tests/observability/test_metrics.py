"""Prometheus metrics: the bounded tenant label, the per-process metrics server, the gRPC
server and client series the interceptor and the outbound channel count, and the gateway's
`/metrics` with its request histogram and optional scrape token."""

import logging

import grpc
import httpx
import pytest
from metaagent.context.v1 import context_service_pb2 as context_pb
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services.mesh import correlation, metrics
from services.mesh.clients import MeshClients
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.ports import free_port
from tests.support.public_api import PublicApi, public_api_over

pytestmark = pytest.mark.timeout(60)

CONTEXT = "metaagent.context.v1.ContextService"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_first_tenants_keep_their_names_and_the_rest_share_one_label() -> None:
    labels = metrics.TenantLabels(limit=2)
    assert [labels(t) for t in ("acme", "demo", "acme", "other", "")] == [
        "acme",
        "demo",
        "acme",
        metrics.OTHER_TENANTS,
        metrics.NO_TENANT,
    ]
    assert labels("demo") == "demo", "a named tenant stays named"
    assert metrics.TenantLabels(limit=0)("acme") == metrics.OTHER_TENANTS


def test_the_method_names_split_into_service_and_method() -> None:
    assert metrics.split_method(f"/{CONTEXT}/GetSession") == (CONTEXT, "GetSession")
    assert metrics.split_method("odd") == ("unknown", "odd")


def test_a_service_process_serves_its_registry_and_stops() -> None:
    port = free_port()
    stop = metrics.serve_metrics(port, "127.0.0.1")
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert reply.status_code == 200
        names = {family.name for family in text_string_to_metric_families(reply.text)}
        assert {"meta_agent_grpc_server_handled", "meta_agent_request_duration_seconds"} <= names
    finally:
        stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


async def test_rpcs_are_counted_by_code_on_both_sides(gateway: MeshClients) -> None:
    served = {"grpc_service": CONTEXT, "grpc_method": "GetSession"}
    before = {
        code: value("meta_agent_grpc_server_handled_total", **served, grpc_code=code)
        for code in ("NOT_FOUND", "INVALID_ARGUMENT")
    }
    made_before = value("meta_agent_grpc_client_handled_total", **served, grpc_code="NOT_FOUND")
    timed_before = value("meta_agent_grpc_server_handling_seconds_count", **served)
    with correlation.bound(correlation.CallContext(correlation_id="c-met-1", tenant_id="demo")):
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await gateway.context.GetSession(context_pb.GetSessionRequest(session_id="s-no"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with correlation.bound(correlation.CallContext(correlation_id="c-met-2")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.context.GetSession(context_pb.GetSessionRequest(session_id="s-no"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no tenant metadata

    def served_now(code: str) -> float:
        return value("meta_agent_grpc_server_handled_total", **served, grpc_code=code)

    assert served_now("NOT_FOUND") - before["NOT_FOUND"] == 2
    assert served_now("INVALID_ARGUMENT") - before["INVALID_ARGUMENT"] == 1
    made = value("meta_agent_grpc_client_handled_total", **served, grpc_code="NOT_FOUND")
    assert made - made_before == 2
    assert value("meta_agent_grpc_server_handling_seconds_count", **served) - timed_before == 3


async def test_a_call_refused_before_it_starts_is_counted_by_the_caller(
    gateway: MeshClients,
) -> None:
    labels = {"grpc_service": CONTEXT, "grpc_method": "GetTenant"}
    before = value("meta_agent_grpc_client_handled_total", **labels, grpc_code="DEADLINE_EXCEEDED")
    expired = correlation.CallContext(correlation_id="c-met-3", tenant_id="demo", deadline=0.0)
    with correlation.bound(expired), pytest.raises(grpc.aio.AioRpcError):
        await gateway.context.GetTenant(context_pb.GetTenantRequest())
    after = value("meta_agent_grpc_client_handled_total", **labels, grpc_code="DEADLINE_EXCEEDED")
    assert after - before == 1


async def test_the_gateway_times_and_logs_requests_by_route_template_and_tenant(
    public_api: PublicApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="metaagent.gateway")
    route = "/v2/tenants/{tenantId}/users/{userId}/consent"
    labels = {"method": "GET", "route": route, "tenant_id": "demo"}
    before = value("meta_agent_request_duration_seconds_count", **labels, status_code="200")
    headers = public_api.headers(role="tenant-admin")
    reply = await public_api.client.get(
        "/v2/tenants/demo/users/ana@example.com/consent", headers=headers
    )
    assert reply.status_code == 200, reply.text
    scraped = await public_api.client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "ana@example.com" not in scraped.text, "paths (and the ids in them) are no labels"
    after = value("meta_agent_request_duration_seconds_count", **labels, status_code="200")
    assert after - before == 1
    [logged] = [r for r in caplog.records if getattr(r, "route", None) == route]
    assert "ana@example.com" not in caplog.text and "users/{userId}" in logged.getMessage()
    unmatched = await public_api.client.get("/no/such/route/ana@example.com")
    assert unmatched.status_code == 404
    assert (
        value(
            "meta_agent_request_duration_seconds_count",
            method="GET",
            route="unmatched",
            status_code="404",
            tenant_id=metrics.NO_TENANT,
        )
        >= 1
    )


async def test_a_scrape_token_guards_the_gateway_metrics(mesh: InProcessMesh) -> None:
    async with public_api_over(mesh, metrics_token="scrape-" + "t" * 32) as api:
        refused = await api.client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        wrong = await api.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = {"Authorization": "Bearer scrape-" + "t" * 32}
        assert (await api.client.get("/metrics", headers=right)).status_code == 200
    assert "/metrics" not in api.app.openapi()["paths"]
