"""Service-to-service callers: HMAC-SHA256 over the raw body, a timestamp and a replay window."""

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from gateway.signatures import hmac_clients, sign, signature, signature_v2
from tests.gateway.test_process_api import SEED_REQUEST
from tests.gateway.test_security import CRM_SECRET, PATH, SecureGateway, secure_gateway
from tests.support.ports import free_port

RAW = json.dumps(SEED_REQUEST).encode()
WHOAMI = "/test/whoami"


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[SecureGateway]:
    async with secure_gateway(state_dir, hmac_secret="h" * 40) as running_gateway:
        yield running_gateway


async def test_a_signed_request_is_answered_as_its_client(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.signed(RAW), RAW)
    assert reply.status_code == 200, reply.text
    request, call = gateway.orchestrator.seen[0]
    assert request.user_id == "user-7"  # an agent acts for the user the request names
    assert call.tenant_id == "demo"


async def test_the_route_sees_the_exact_signed_bytes(gateway: SecureGateway) -> None:
    odd = b'  {"sessionId":"sess-1", "tenantId" :"demo","channel":"web",\n'
    odd += b'"input":{"type":"text","text":"caf\\u00e9"}}  '
    reply = await gateway.process(gateway.signed(odd), odd)
    assert reply.status_code == 200, reply.text
    assert gateway.orchestrator.seen[0][0].input.text == "café"


async def test_a_signature_over_reserialized_json_does_not_match(gateway: SecureGateway) -> None:
    sent = json.dumps(SEED_REQUEST, indent=2).encode()
    reply = await gateway.process(gateway.signed(RAW), sent)
    problem = await gateway.refused(reply, 401)
    assert problem["detail"] == "the signature does not match the body"


async def test_a_tampered_body_is_401(gateway: SecureGateway) -> None:
    tampered = RAW.replace(b"user-7", b"user-8")
    reply = await gateway.process(gateway.signed(RAW), tampered)
    problem = await gateway.refused(reply, 401, "Unauthorized")
    assert problem["detail"] == "the signature does not match the body"
    assert reply.headers["WWW-Authenticate"].startswith("HMAC-SHA256")


async def test_a_tampered_timestamp_is_401(gateway: SecureGateway) -> None:
    now = int(time.time())
    digest = signature(CRM_SECRET, now, RAW)
    headers = {"X-Client-Id": "crm", "X-Signature": f"t={now - 1},v1={digest}"}
    await gateway.refused(await gateway.process(headers, RAW), 401)


async def test_a_wrong_secret_is_401(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.signed(RAW, secret=b"x" * 44), RAW)
    await gateway.refused(reply, 401)


@pytest.mark.parametrize("skew", [-301, 305, -86400])  # +305: `t` is a whole second
async def test_a_stale_or_future_timestamp_is_401(gateway: SecureGateway, skew: int) -> None:
    headers = gateway.signed(RAW, timestamp=int(time.time()) + skew)
    problem = await gateway.refused(await gateway.process(headers, RAW), 401)
    assert "300 s from now" in problem["detail"]


async def test_a_replayed_signature_is_401(gateway: SecureGateway) -> None:
    headers = gateway.signed(RAW)
    assert (await gateway.process(headers, RAW)).status_code == 200
    gateway.orchestrator.seen.clear()
    problem = await gateway.refused(await gateway.process(headers, RAW), 401)
    assert problem["detail"] == "the signature was already used"


async def test_the_same_body_signed_again_is_a_new_request(gateway: SecureGateway) -> None:
    now = int(time.time())
    for timestamp in (now - 1, now):
        reply = await gateway.process(gateway.signed(RAW, timestamp=timestamp), RAW)
        assert reply.status_code == 200
    assert len(gateway.orchestrator.seen) == 2


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"X-Client-Id": "crm"}, "needs an X-Signature header"),
        ({"X-Signature": "t=1,v1=" + "0" * 64}, "well-formed X-Client-Id"),
        ({"X-Client-Id": "crm", "X-Signature": "v1=" + "0" * 64}, "malformed X-Signature"),
        ({"X-Client-Id": "crm", "X-Signature": "t=abc,v1=" + "0" * 64}, "malformed"),
        ({"X-Client-Id": "crm", "X-Signature": "t=1,v1=zz"}, "malformed X-Signature"),
        ({"X-Client-Id": "crm", "X-Signature": "t=1,t=2,v1=" + "0" * 64}, "malformed"),
        ({"X-Client-Id": "crm", "X-Signature": "garbage"}, "malformed X-Signature"),
        ({"X-Client-Id": "has space", "X-Signature": "t=1,v1=" + "0" * 64}, "X-Client-Id"),
    ],
)
async def test_malformed_signature_headers_are_401(
    gateway: SecureGateway, headers: dict[str, str], detail: str
) -> None:
    problem = await gateway.refused(await gateway.process(headers, RAW), 401)
    assert detail in problem["detail"]


async def test_an_unknown_client_is_401(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.signed(RAW, client="intruder"), RAW)
    assert (await gateway.refused(reply, 401))["detail"] == "unknown client"


async def test_hmac_secret_is_the_default_clients_secret(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.signed(RAW, client="default", secret=b"h" * 40), RAW)
    assert reply.status_code == 200, reply.text
    whoami = await gateway.client.get(
        "/test/whoami", headers=gateway.signed(b"", client="default", secret=b"h" * 40)
    )
    assert whoami.json()["subject"] == "default"
    assert whoami.json()["role"] == "agent"


def test_hmac_clients_prefer_an_explicit_default(state_dir: Path) -> None:
    settings = GatewaySettings(
        state_dir=state_dir,
        hmac_secret="h" * 40,
        hmac_clients={"default": {"secret": "d" * 40, "tenantId": "acme", "role": "tenant-admin"}},
    )
    client = hmac_clients(settings)["default"]
    assert (client.secret, client.tenant_id, client.role) == (b"d" * 40, "acme", "tenant-admin")
    assert "d" * 40 not in repr(client)
    assert set(hmac_clients(GatewaySettings(state_dir=state_dir))) == set()


async def test_a_signed_request_for_another_tenant_is_403(state_dir: Path) -> None:
    clients = {"crm": {"secret": CRM_SECRET.decode(), "tenantId": "acme"}}
    async with secure_gateway(state_dir, hmac_clients=clients) as gateway:
        reply = await gateway.process(gateway.signed(RAW), RAW)
        await gateway.refused(reply, 403, "Tenant mismatch")


async def test_a_signed_user_client_cannot_use_an_admin_route(state_dir: Path) -> None:
    clients = {"crm": {"secret": CRM_SECRET.decode(), "tenantId": "demo", "role": "user"}}
    async with secure_gateway(state_dir, hmac_clients=clients) as gateway:
        reply = await gateway.client.post("/test/admin", headers=gateway.signed(b""))
        await gateway.refused(reply, 403, "Forbidden")


async def test_a_signed_body_past_the_routes_limit_is_413(gateway: SecureGateway) -> None:
    huge = json.dumps({**SEED_REQUEST, "contextHints": {"blob": "x" * 4000}}).encode()
    reply = await gateway.process(gateway.signed(huge), huge)
    await gateway.refused(reply, 413, "Payload Too Large")


async def test_a_signed_body_past_every_limit_is_413_before_checking(state_dir: Path) -> None:
    limits = {"max_knowledge_bytes": 1024, "max_tenant_config_bytes": 1024}
    async with secure_gateway(state_dir, **limits) as gateway:
        huge = b'{"padding": "' + b"x" * 5000 + b'"}'
        reply = await gateway.process(gateway.signed(huge), huge)
        assert "2048 bytes" in (await gateway.refused(reply, 413))["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x" * 1024

        headers = {**gateway.signed(b"x" * 102400), "Content-Type": "application/json"}
        chunked = await gateway.client.post(
            "/v2/agents/meta-agent/process", content=chunks(), headers=headers
        )
        await gateway.refused(chunked, 413)


async def test_a_signed_body_that_is_not_json_is_400(gateway: SecureGateway) -> None:
    raw = b"{not json"
    await gateway.refused(await gateway.process(gateway.signed(raw), raw), 400, "Bad Request")


async def test_an_unreachable_replay_cache_refuses_signed_requests_503(state_dir: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with secure_gateway(state_dir, replay_cache_url=dead) as gateway:
        reply = await gateway.process(gateway.signed(RAW), RAW)
        problem = await gateway.refused(reply, 503, "Service Unavailable")
        assert "replay" in problem["detail"]
        assert reply.headers["Retry-After"] == "1"
        assert (await gateway.process(gateway.token(), RAW)).status_code == 200


def test_sign_formats_the_header() -> None:
    assert sign(b"s", b"{}", 1700000000) == f"t=1700000000,v1={signature(b's', 1700000000, b'{}')}"
    v2 = signature_v2(b"s", 1700000000, "post", "/a?b=1", b"{}")
    assert sign(b"s", b"{}", 1700000000, method="POST", target="/a?b=1") == f"t=1700000000,v2={v2}"


def test_v2_signs_time_method_target_and_the_bodys_hash() -> None:
    body_hash = hashlib.sha256(b'{"a": 1}').hexdigest()
    message = f"1700000000.DELETE./v2/tenants/demo/users/u%2B1?x=1.{body_hash}".encode()
    expected = hmac.new(b"s", message, hashlib.sha256).hexdigest()
    assert (
        signature_v2(b"s", 1700000000, "delete", "/v2/tenants/demo/users/u%2B1?x=1", b'{"a": 1}')
        == expected
    )


# --- v2: the method, the path with its query and the body's hash -----------------------------


async def test_a_v2_signed_request_is_answered_as_its_client(gateway: SecureGateway) -> None:
    reply = await gateway.process(gateway.signed(RAW, method="POST", target=PATH), RAW)
    assert reply.status_code == 200, reply.text
    assert gateway.orchestrator.seen[0][1].tenant_id == "demo"
    query = f"{WHOAMI}?view=full&x=%20y"
    whoami = await gateway.client.get(
        query, headers=gateway.signed(b"", method="GET", target=query)
    )
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["subject"] == "crm"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", WHOAMI),  # another method
        ("POST", "/v2/agents/other-agent/process"),  # another path
        ("POST", f"{PATH}?dryRun=true"),  # another query
        ("POST", PATH.upper()),
    ],
)
async def test_a_v2_signature_is_good_for_its_own_method_and_target_only(
    gateway: SecureGateway, method: str, target: str
) -> None:
    headers = gateway.signed(RAW, method=method, target=target)
    problem = await gateway.refused(await gateway.process(headers, RAW), 401)
    assert problem["detail"] == "the signature does not match the request"


async def test_a_v2_signature_covers_the_body(gateway: SecureGateway) -> None:
    headers = gateway.signed(RAW, method="POST", target=PATH)
    tampered = RAW.replace(b"user-7", b"user-8")
    problem = await gateway.refused(await gateway.process(headers, tampered), 401)
    assert problem["detail"] == "the signature does not match the request"


async def test_empty_body_requests_in_the_same_second_are_not_replays_under_v2(
    gateway: SecureGateway,
) -> None:
    """Under v1 every empty body signed in one second has one signature: the second request
    would be refused as a replay of the first (and the first could be replayed on any route)."""
    now = int(time.time())
    for target in (WHOAMI, f"{WHOAMI}?page=2"):
        headers = gateway.signed(b"", timestamp=now, method="GET", target=target)
        assert (await gateway.client.get(target, headers=headers)).status_code == 200
    admin = gateway.signed(b"", timestamp=now, method="POST", target="/test/admin")
    reply = await gateway.client.post("/test/admin", headers=admin)
    assert reply.status_code == 403, "authenticated (the agent client is then not an admin)"


async def test_a_replayed_v2_signature_is_401(gateway: SecureGateway) -> None:
    headers = gateway.signed(RAW, method="POST", target=PATH)
    assert (await gateway.process(headers, RAW)).status_code == 200
    gateway.orchestrator.seen.clear()
    problem = await gateway.refused(await gateway.process(headers, RAW), 401)
    assert problem["detail"] == "the signature was already used"


def both(secret: bytes, body: bytes, method: str, target: str) -> str:
    """A header carrying v1 and v2 (a client moving from one to the other)."""
    now = int(time.time())
    v1, v2 = signature(secret, now, body), signature_v2(secret, now, method, target, body)
    return f"t={now},v1={v1},v2={v2}"


async def test_with_v1_and_v2_the_v2_is_checked(gateway: SecureGateway) -> None:
    header = {"X-Client-Id": "crm", "X-Signature": both(CRM_SECRET, b"", "GET", WHOAMI)}
    elsewhere = await gateway.client.post("/test/admin", headers=header)
    problem = await gateway.refused(elsewhere, 401)
    assert problem["detail"] == "the signature does not match the request"
    assert (await gateway.client.get(WHOAMI, headers=header)).status_code == 200


async def test_a_v1_and_v2_header_cut_down_to_v1_is_a_replay(gateway: SecureGateway) -> None:
    header = both(CRM_SECRET, b"", "GET", WHOAMI)
    signed = {"X-Client-Id": "crm", "X-Signature": header}
    assert (await gateway.client.get(WHOAMI, headers=signed)).status_code == 200
    v1_only = {"X-Client-Id": "crm", "X-Signature": header.rsplit(",v2=", 1)[0]}
    reply = await gateway.client.post("/test/admin", headers=v1_only)
    problem = await gateway.refused(reply, 401)
    assert problem["detail"] == "the signature was already used"


@pytest.mark.parametrize(
    "header",
    [
        "t=1,v2=zz",
        "t=1,v2=" + "0" * 63,
        "t=1,v1=" + "0" * 64 + ",v2=nothex",
        "t=1,v2=" + "0" * 64 + ",v2=" + "1" * 64,
        "t=1",
        "t=1,v3=" + "0" * 64,
    ],
)
async def test_malformed_v2_elements_are_401(gateway: SecureGateway, header: str) -> None:
    reply = await gateway.process({"X-Client-Id": "crm", "X-Signature": header}, RAW)
    problem = await gateway.refused(reply, 401)
    assert "malformed X-Signature" in problem["detail"]


@pytest.fixture
async def v2_only(state_dir: Path) -> AsyncIterator[SecureGateway]:
    async with secure_gateway(state_dir, hmac_require_v2=True) as running_gateway:
        yield running_gateway


async def test_when_v2_is_required_a_v1_signature_is_401(v2_only: SecureGateway) -> None:
    reply = await v2_only.process(v2_only.signed(RAW), RAW)
    problem = await v2_only.refused(reply, 401, "Unauthorized")
    assert "requires a v2 signature" in problem["detail"]
    assert reply.headers["WWW-Authenticate"].startswith("HMAC-SHA256")
    header = both(CRM_SECRET, RAW, "POST", PATH)
    reply = await v2_only.process({"X-Client-Id": "crm", "X-Signature": header}, RAW)
    assert reply.status_code == 200, reply.text
    v2_only.orchestrator.seen.clear()
    signed = v2_only.signed(RAW, method="POST", target=PATH, timestamp=int(time.time()) - 1)
    assert (await v2_only.process(signed, RAW)).status_code == 200
