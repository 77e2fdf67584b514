"""POST /v2/agents/meta-agent/process: auth, tenant guard, validation, limits, error mapping."""

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import GatewaySettings
from services.mesh import correlation
from services.mesh.errors import (
    FieldViolation,
    internal,
    invalid_argument,
    permission_denied,
    unavailable,
)
from services.mesh.settings import MeshSettings
from tests.support.servers import orchestrator_binding, running

SEED_REQUEST = {
    "tenantId": "demo",
    "sessionId": "sess-1",
    "correlationId": "corr-seed-1",
    "userId": "user-7",
    "channel": "web",
    "input": {"type": "text", "text": "Quiero comprar la zapatilla Kobe, la dejé en el carrito."},
}


@dataclass
class ScriptedOrchestrator(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
    outcome: Callable[[pb.ProcessRequest], Awaitable[pb.ProcessResponse]] | None = None
    seen: list[tuple[pb.ProcessRequest, correlation.CallContext]] = field(default_factory=list)

    async def Process(self, request: pb.ProcessRequest, context: Any) -> pb.ProcessResponse:
        self.seen.append((request, correlation.current()))
        if self.outcome is not None:
            return await self.outcome(request)
        return pb.ProcessResponse(
            response_text="hola",
            intent="greeting",
            confidence=0.9,
            embeddings_used=2,
            tokens_consumed=17,
            correlation_id=correlation.current().correlation_id,
            actions=[
                conversation_pb2.Action(
                    action_id="a1",
                    type="create_order",
                    status=conversation_pb2.ACTION_STATUS_PENDING,
                )
            ],
        )


@dataclass
class Gateway:
    client: httpx.AsyncClient
    orchestrator: ScriptedOrchestrator
    settings: GatewaySettings

    def token(self, tenant: str = "demo", role: str = "user", **claims: Any) -> dict[str, str]:
        token = issue_token(self.settings, tenant_id=tenant, role=role, subject="user-7", ttl=60)
        if claims:
            payload = jwt.decode(token, options={"verify_signature": False}) | claims
            token = jwt.encode(payload, self.settings.jwt_secret.get_secret_value(), "HS256")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[Gateway]:
    orchestrator = ScriptedOrchestrator()
    mesh = MeshSettings(state_dir=state_dir)
    async with running("orchestrator", mesh, [orchestrator_binding(orchestrator)]) as (_, addr):
        settings = GatewaySettings(
            state_dir=state_dir,
            orchestrator_addr=addr,
            jwt_secret="k" * 40,
            max_body_bytes=2048,
            max_text_chars=200,
            grpc_retry_attempts=1,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Gateway(client, orchestrator, settings)


PATH = "/v2/agents/meta-agent/process"


async def test_the_seed_request_is_answered_in_camel_case(gateway: Gateway) -> None:
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=gateway.token())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["responseText"] == "hola"
    assert body["embeddingsUsed"] == 2 and body["tokensConsumed"] == 17
    assert body["actions"] == [
        {"actionId": "a1", "type": "create_order", "params": {}, "status": "pending"}
    ]
    assert body["correlationId"] == "corr-seed-1"
    assert reply.headers["X-Correlation-Id"] == "corr-seed-1"
    request, call = gateway.orchestrator.seen[0]
    assert (call.correlation_id, call.tenant_id, call.session_id) == (
        "corr-seed-1",
        "demo",
        "sess-1",
    )
    assert call.caller == "gateway"
    assert request.input.text == SEED_REQUEST["input"]["text"]
    assert request.channel == conversation_pb2.CHANNEL_WEB


async def test_a_correlation_id_is_generated_when_the_client_sends_none(gateway: Gateway) -> None:
    body = {k: v for k, v in SEED_REQUEST.items() if k != "correlationId"}
    reply = await gateway.client.post(PATH, json=body, headers=gateway.token())
    generated = reply.headers["X-Correlation-Id"]
    assert len(generated) == 36
    assert gateway.orchestrator.seen[0][1].correlation_id == generated


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "a Bearer token is required"),
        ({"Authorization": "Basic abc"}, "a Bearer token is required"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid token"),
    ],
)
async def test_missing_or_garbled_tokens_are_401(
    gateway: Gateway, headers: dict[str, str], detail: str
) -> None:
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/problem+json"
    assert detail in reply.json()["detail"]
    assert gateway.orchestrator.seen == []


async def test_expired_wrongly_signed_and_unsigned_tokens_are_401(gateway: Gateway) -> None:
    now = int(time.time())
    claims = {"sub": "u", "tenantId": "demo", "role": "user", "iat": now - 600, "exp": now - 300}
    expired = jwt.encode(claims, "k" * 40, "HS256")
    forged = jwt.encode({**claims, "exp": now + 300}, "wrong-key" * 5, "HS256")
    unsigned = jwt.encode({**claims, "exp": now + 300}, None, "none")
    for token in (expired, forged, unsigned):
        reply = await gateway.client.post(
            PATH, json=SEED_REQUEST, headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status_code == 401, token
    assert gateway.orchestrator.seen == []


async def test_a_token_for_another_tenant_is_403(gateway: Gateway) -> None:
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=gateway.token("acme"))
    assert reply.status_code == 403
    assert reply.json()["title"] == "Tenant mismatch"
    assert gateway.orchestrator.seen == []


async def test_a_platform_admin_may_act_for_any_tenant(gateway: Gateway) -> None:
    headers = gateway.token("platform", role="platform-admin")
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=headers)
    assert reply.status_code == 200


@pytest.mark.parametrize(
    ("mutation", "field_name"),
    [
        ({"channel": "fax"}, "channel"),
        ({"sessionId": "has space"}, "sessionId"),
        ({"input": {"type": "telepathy"}}, "input.type"),
        ({"unknownField": 1}, "unknownField"),
        ({"tenantId": None}, "tenantId"),
    ],
)
async def test_an_invalid_body_is_400_naming_the_field(
    gateway: Gateway, mutation: dict[str, Any], field_name: str
) -> None:
    reply = await gateway.client.post(
        PATH, json={**SEED_REQUEST, **mutation}, headers=gateway.token()
    )
    assert reply.status_code == 400
    assert field_name in {error["field"] for error in reply.json()["errors"]}
    assert gateway.orchestrator.seen == []


async def test_a_body_that_is_not_json_is_400(gateway: Gateway) -> None:
    reply = await gateway.client.post(
        PATH, content=b"{not json", headers={**gateway.token(), "Content-Type": "application/json"}
    )
    assert reply.status_code == 400


async def test_oversized_bodies_and_texts_are_413(gateway: Gateway) -> None:
    huge = {**SEED_REQUEST, "contextHints": {"blob": "x" * 4000}}
    assert (await gateway.client.post(PATH, json=huge, headers=gateway.token())).status_code == 413
    long_text = {**SEED_REQUEST, "input": {"type": "text", "text": "y" * 201}}
    reply = await gateway.client.post(PATH, json=long_text, headers=gateway.token())
    assert reply.status_code == 413
    assert gateway.orchestrator.seen == []


async def _raise(error: Exception) -> pb.ProcessResponse:
    raise error


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (invalid_argument(FieldViolation("input.text", "is required")), 400, None),
        (unavailable("context store down", retry_after=3), 503, "3"),
        (internal("boom: secret detail"), 500, None),
    ],
)
async def test_grpc_failures_become_problem_json(
    gateway: Gateway, error: Exception, status: int, retry_after: str | None
) -> None:
    gateway.orchestrator.outcome = lambda _request: _raise(error)
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=gateway.token())
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert body["correlationId"] == "corr-seed-1"
    assert reply.headers.get("Retry-After") == retry_after
    if status == 400:
        assert body["errors"] == [{"field": "input.text", "detail": "is required"}]
    if status == 500:
        assert "secret detail" not in reply.text


async def test_health_and_readiness(gateway: Gateway) -> None:
    assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.client.get("/readyz")
    assert ready.status_code == 200


async def test_a_mesh_refusal_behind_the_gateway_is_a_plain_500(gateway: Gateway) -> None:
    gateway.orchestrator.outcome = lambda _request: _raise(
        permission_denied("'gateway' may not call /x.Y/Z", "CALLER_NOT_ALLOWED")
    )
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=gateway.token())
    assert reply.status_code == 500
    assert reply.json()["detail"] == "internal error"
    assert "x.Y" not in reply.text
    assert "gateway" not in reply.text


async def test_an_unreachable_orchestrator_means_not_ready_and_503_without_addresses(
    state_dir: Path,
) -> None:
    from tests.support.ports import free_port

    port = free_port()
    settings = GatewaySettings(
        state_dir=state_dir,
        orchestrator_addr=f"127.0.0.1:{port}",
        jwt_secret="k" * 40,
        grpc_retry_attempts=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            token = issue_token(settings, tenant_id="demo", role="user", subject="user-7", ttl=60)
            reply = await client.post(
                PATH, json=SEED_REQUEST, headers={"Authorization": f"Bearer {token}"}
            )
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
    assert reply.status_code == 503
    assert str(port) not in reply.text
    assert "127.0.0.1" not in reply.text
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready"}
    assert alive.status_code == 200


async def test_a_user_token_acts_only_for_its_own_user(gateway: Gateway) -> None:
    other = {**SEED_REQUEST, "userId": "someone-else"}
    refused = await gateway.client.post(PATH, json=other, headers=gateway.token())
    assert refused.status_code == 403
    assert refused.json()["title"] == "User mismatch"
    implied = {k: v for k, v in SEED_REQUEST.items() if k != "userId"}
    assert (
        await gateway.client.post(PATH, json=implied, headers=gateway.token())
    ).status_code == 200
    assert gateway.orchestrator.seen[-1][0].user_id == "user-7"
    agent = await gateway.client.post(PATH, json=other, headers=gateway.token(role="agent"))
    assert agent.status_code == 200
    assert gateway.orchestrator.seen[-1][0].user_id == "someone-else"


async def test_a_chunked_body_is_cut_off_at_the_limit(gateway: Gateway) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"tenantId": "demo", "padding": "'
        for _ in range(10_000):
            sent += 1024
            yield b"x" * 1024

    reply = await gateway.client.post(
        PATH, content=endless(), headers={**gateway.token(), "Content-Type": "application/json"}
    )
    assert reply.status_code == 413
    assert gateway.orchestrator.seen == []


async def test_tokens_living_longer_than_allowed_are_refused(gateway: Gateway) -> None:
    now = int(time.time())
    long_lived = gateway.token(iat=now, exp=now + 3 * 365 * 86400)
    reply = await gateway.client.post(PATH, json=SEED_REQUEST, headers=long_lived)
    assert reply.status_code == 401
    assert "lives longer" in reply.json()["detail"]


async def test_audience_and_issuer_are_enforced_when_configured(gateway: Gateway) -> None:
    gateway.settings.jwt_audience = "metaagent-gateway"
    gateway.settings.jwt_issuer = "https://login.example/tenant"
    good = gateway.token(aud="metaagent-gateway", iss="https://login.example/tenant")
    assert (await gateway.client.post(PATH, json=SEED_REQUEST, headers=good)).status_code == 200
    for claims in (
        {"aud": "other-api", "iss": "https://login.example/tenant"},
        {"aud": "metaagent-gateway", "iss": "someone"},
        {},
    ):
        token = issue_token(
            GatewaySettings(state_dir=gateway.settings.state_dir, jwt_secret="k" * 40),
            tenant_id="demo",
            role="user",
            subject="user-7",
            ttl=60,
        )
        if claims:
            payload = jwt.decode(token, options={"verify_signature": False}) | claims
            token = jwt.encode(payload, "k" * 40, "HS256")
        reply = await gateway.client.post(
            PATH, json=SEED_REQUEST, headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status_code == 401, claims
