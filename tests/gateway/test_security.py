"""The gateway's front door: every refused credential or body is a 4xx problem+json with the
correlation id, the orchestrator sees nothing, and the gateway stays healthy.

`secure_gateway` (also used by test_auth_*, test_hmac_*, test_jwks_*, test_rate_*) runs the real
app over a scripted orchestrator, with two test-only routes: `GET /test/whoami` (the principal)
and `POST /test/admin` (tenant-admin only)."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.auth import AuthError, Principal
from gateway.security import Caller, close_security
from gateway.settings import GatewaySettings
from gateway.signatures import sign
from services.mesh.settings import MeshSettings
from tests.gateway.test_process_api import SEED_REQUEST, ScriptedOrchestrator
from tests.support.servers import orchestrator_binding, running

JWT_SECRET = "k" * 40
CRM_SECRET = b"crm-" + b"s" * 40
PATH = "/v2/agents/meta-agent/process"
PROBLEM_JSON = "application/problem+json"


async def whoami(principal: Caller) -> dict[str, str]:
    return {
        "subject": principal.subject,
        "tenantId": principal.tenant_id,
        "role": principal.role,
        "credential": principal.credential,
    }


async def admin_only(principal: Caller) -> dict[str, str]:
    principal.require_role("tenant-admin")
    return {"status": "ok"}


@dataclass
class SecureGateway:
    client: httpx.AsyncClient
    app: FastAPI
    orchestrator: ScriptedOrchestrator
    settings: GatewaySettings

    def token(
        self,
        tenant: str = "demo",
        role: str = "user",
        subject: str = "user-7",
        key: Any = JWT_SECRET,
        algorithm: str = "HS256",
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> dict[str, str]:
        now = int(time.time())
        payload = {"sub": subject, "tenantId": tenant, "role": role, "iat": now, "exp": now + 300}
        token = jwt.encode(payload | claims, key, algorithm, headers=headers)
        return {"Authorization": f"Bearer {token}"}

    def signed(
        self,
        body: bytes,
        client: str = "crm",
        secret: bytes = CRM_SECRET,
        timestamp: int | None = None,
        *,
        method: str | None = None,
        target: str | None = None,
    ) -> dict[str, str]:
        """Headers signing `body`: v1, or v2 for `method` and `target` (path and query)."""
        return {
            "X-Client-Id": client,
            "X-Signature": sign(secret, body, timestamp, method=method, target=target),
            "Content-Type": "application/json",
        }

    async def process(self, headers: dict[str, str], body: Any = SEED_REQUEST) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **headers}
        return await self.client.post(PATH, content=raw, headers=headers)

    async def refused(self, reply: httpx.Response, status: int, title: str = "") -> dict[str, Any]:
        """Assert a refusal: `status`, problem+json with the correlation id, nothing reached the
        orchestrator, and /healthz still answers."""
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"] == PROBLEM_JSON
        problem: dict[str, Any] = reply.json()
        assert problem["status"] == status
        assert problem["correlationId"] == reply.headers["X-Correlation-Id"]
        if title:
            assert problem["title"] == title
        assert self.orchestrator.seen == []
        assert (await self.client.get("/healthz")).status_code == 200
        return problem


@asynccontextmanager
async def secure_gateway(state_dir: Path, **overrides: Any) -> AsyncIterator[SecureGateway]:
    orchestrator = ScriptedOrchestrator()
    mesh = MeshSettings(state_dir=state_dir)
    async with running("orchestrator", mesh, [orchestrator_binding(orchestrator)]) as (_, addr):
        settings = GatewaySettings(
            **{
                "state_dir": state_dir,
                "orchestrator_addr": addr,
                "jwt_secret": JWT_SECRET,
                "hmac_clients": {"crm": {"secret": CRM_SECRET.decode(), "tenantId": "demo"}},
                "max_body_bytes": 2048,
                "max_text_chars": 200,
                "grpc_retry_attempts": 1,
                **overrides,
            }
        )
        app = create_app(settings)
        app.add_api_route("/test/whoami", whoami, methods=["GET"])
        app.add_api_route("/test/admin", admin_only, methods=["POST"])
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                    yield SecureGateway(client, app, orchestrator, settings)
        finally:
            await close_security(app)


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[SecureGateway]:
    async with secure_gateway(state_dir) as running_gateway:
        yield running_gateway


async def test_a_valid_token_reaches_the_orchestrator(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.token())
    assert reply.status_code == 200, reply.text
    assert len(gateway.orchestrator.seen) == 1


async def test_a_missing_token_is_401_with_a_challenge(gateway: SecureGateway) -> None:
    reply = await gateway.process({})
    problem = await gateway.refused(reply, 401, "Unauthorized")
    assert problem["detail"] == "a Bearer token is required"
    assert reply.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"iat": int(time.time()) - 900, "exp": int(time.time()) - 300}, "expired"),
        ({"nbf": int(time.time()) + 600, "exp": int(time.time()) + 900}, "not yet valid"),
        ({"iat": int(time.time()) + 600, "exp": int(time.time()) + 900}, "not yet valid"),
        ({"exp": None}, "exp"),
        ({"tenantId": None}, "tenantId"),
        ({"role": "superuser"}, "unknown role"),
    ],
    ids=["expired", "nbf-in-future", "iat-in-future", "no-exp", "no-tenant", "unknown-role"],
)
async def test_tokens_out_of_their_time_or_shape_are_401(
    gateway: SecureGateway, claims: dict[str, Any], detail: str
) -> None:
    headers = gateway.token()
    payload = jwt.decode(headers["Authorization"][7:], options={"verify_signature": False})
    payload = {k: v for k, v in (payload | claims).items() if v is not None}
    token = jwt.encode(payload, JWT_SECRET, "HS256")
    problem = await gateway.refused(
        await gateway.process({"Authorization": f"Bearer {token}"}), 401
    )
    assert detail in problem["detail"]


async def test_the_leeway_forgives_a_little_clock_skew(gateway: SecureGateway) -> None:
    now = int(time.time())
    skewed = gateway.token(iat=now + 5, nbf=now + 5, exp=now + 300)
    assert (await gateway.process(skewed)).status_code == 200


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWS assembled by hand (what an attacker sends; PyJWT would refuse to make some)."""
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), signature)
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in parts)


async def test_an_unsigned_token_is_401(gateway: SecureGateway) -> None:
    now = int(time.time())
    claims = {"sub": "u", "tenantId": "demo", "role": "user", "iat": now, "exp": now + 300}
    for algorithm in ("none", "None", "NONE"):
        token = raw_token({"alg": algorithm, "typ": "JWT"}, claims)
        problem = await gateway.refused(
            await gateway.process({"Authorization": f"Bearer {token}"}), 401
        )
        assert "algorithm is not allowed" in problem["detail"]


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"alg": ["HS256"]}, {}),
        ({"alg": {"RS256": 1}, "kid": "k"}, {}),
        ({"typ": "JWT"}, {}),
        ({"alg": "RS256", "kid": 7}, {}),
        ({"alg": "HS256"}, {"role": ["platform-admin"]}),
        ({"alg": "HS256"}, {"tenantId": {"demo": 1}}),
    ],
    ids=["alg-list", "alg-object", "no-alg", "kid-number", "role-list", "tenant-object"],
)
async def test_odd_json_types_in_a_token_are_401(
    gateway: SecureGateway, header: dict[str, Any], claims: dict[str, Any]
) -> None:
    now = int(time.time())
    payload = {"sub": "u", "tenantId": "demo", "role": "user", "iat": now, "exp": now + 60}
    unsigned = raw_token(header, payload | claims).rsplit(".", 1)[0]
    mac = hmac.new(JWT_SECRET.encode(), unsigned.encode(), hashlib.sha256).digest()
    token = raw_token(header, payload | claims, mac)
    await gateway.refused(await gateway.process({"Authorization": f"Bearer {token}"}), 401)


async def test_a_garbled_token_is_401(gateway: SecureGateway) -> None:
    for token in ("a.b.c", "....", "e30.e30.", "x" * 5000):
        reply = await gateway.process({"Authorization": f"Bearer {token}"})
        assert "invalid token" in (await gateway.refused(reply, 401))["detail"]


async def test_a_token_signed_with_another_key_is_401(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.token(key="another-key-" + "x" * 40))
    problem = await gateway.refused(reply, 401)
    assert "Signature verification failed" in problem["detail"]


async def test_other_hmac_algorithms_are_not_allowed(gateway: SecureGateway) -> None:
    for algorithm in ("HS384", "HS512"):
        reply = await gateway.process(gateway.token(key="k" * 64, algorithm=algorithm))
        assert "algorithm is not allowed" in (await gateway.refused(reply, 401))["detail"]


async def test_a_token_for_another_tenant_is_403(gateway: SecureGateway) -> None:
    await gateway.refused(await gateway.process(gateway.token("acme")), 403, "Tenant mismatch")


async def test_a_user_cannot_forge_an_admin_role(gateway: SecureGateway) -> None:
    forged = gateway.token(role="platform-admin", key="attacker-" + "x" * 40)
    await gateway.refused(await gateway.process(forged), 401, "Unauthorized")
    forged_admin = gateway.token(role="tenant-admin", key="attacker-" + "x" * 40)
    await gateway.refused(await gateway.client.post("/test/admin", headers=forged_admin), 401)


async def test_a_user_token_on_an_admin_route_is_403(gateway: SecureGateway) -> None:
    for role in ("user", "agent"):
        reply = await gateway.client.post("/test/admin", headers=gateway.token(role=role))
        problem = await gateway.refused(reply, 403, "Forbidden")
        assert "tenant-admin" in problem["detail"]
    for role in ("tenant-admin", "platform-admin"):
        reply = await gateway.client.post("/test/admin", headers=gateway.token(role=role))
        assert reply.status_code == 200


def test_the_role_and_tenant_guards() -> None:
    user = Principal("u", "demo", "user")
    with pytest.raises(AuthError) as refused:
        user.require_role("tenant-admin")
    assert refused.value.status == 403
    with pytest.raises(AuthError):
        user.require_tenant("acme")
    Principal("root", "platform", "platform-admin").require_role("tenant-admin")
    Principal("root", "platform", "platform-admin").require_tenant("acme")


async def test_an_oversized_body_is_413(gateway: SecureGateway) -> None:
    huge = {**SEED_REQUEST, "contextHints": {"blob": "x" * 4000}}
    await gateway.refused(await gateway.process(gateway.token(), huge), 413, "Payload Too Large")


async def test_malformed_json_is_400(gateway: SecureGateway) -> None:
    for raw in (b"{not json", b"", b'{"tenantId": "demo"', b"\xff\xfe"):
        reply = await gateway.process(gateway.token(), raw)
        await gateway.refused(reply, 400, "Bad Request")


async def test_a_bearer_token_with_a_signature_is_ambiguous_400(gateway: SecureGateway) -> None:
    raw = json.dumps(SEED_REQUEST).encode()
    for extra in (gateway.signed(raw), {"X-Client-Id": "crm"}):
        reply = await gateway.process({**gateway.token(), **extra}, raw)
        problem = await gateway.refused(reply, 400, "Ambiguous credentials")
        assert "not both" in problem["detail"]


async def test_the_principal_names_its_credential(gateway: SecureGateway) -> None:
    reply = await gateway.client.get("/test/whoami", headers=gateway.token(role="agent"))
    assert reply.json() == {
        "subject": "user-7",
        "tenantId": "demo",
        "role": "agent",
        "credential": "bearer",
    }
    signed = await gateway.client.get("/test/whoami", headers=gateway.signed(b""))
    assert signed.json() == {
        "subject": "crm",
        "tenantId": "demo",
        "role": "agent",
        "credential": "hmac",
    }
