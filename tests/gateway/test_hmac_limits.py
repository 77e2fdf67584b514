"""What an unauthenticated signed request may cost the gateway: its body is read only up to the
limit of the route it is for, and a client id's failed signatures are limited (429), counted
per client and shared by replicas through Redis."""

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.requests import Request

from gateway.ratelimit import UNCHECKED, caller_address
from tests.gateway.test_process_api import SEED_REQUEST
from tests.gateway.test_security import CRM_SECRET, PATH, SecureGateway, secure_gateway
from tests.support.ports import free_port

RAW = json.dumps(SEED_REQUEST).encode()
CHUNK = 1024
WHOAMI = "/test/whoami"


class CountedBody:
    """A chunked request body that counts what the gateway pulled of it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.sent < self.size:
            self.sent += CHUNK
            yield b"x" * CHUNK


def bad_signature(client: str = "crm") -> dict[str, str]:
    """A well-formed header for a known client and a current time, with a made-up digest."""
    return {
        "X-Client-Id": client,
        "X-Signature": f"t={int(time.time())},v1=" + "0" * 64,
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", PATH, "max_body_bytes"),
        ("PUT", "/v2/tenants/demo", "max_tenant_config_bytes"),
        ("PUT", "/v2/tenants/demo/users/ana/consent", "max_body_bytes"),
    ],
)
async def test_an_unverified_body_is_read_only_up_to_its_routes_limit(
    state_dir: Path, method: str, path: str, limit: str
) -> None:
    """The review's case: 6 MiB pulled for /process, whose limit is 64 KiB, before the 401."""
    limits = {"max_body_bytes": 2048, "max_tenant_config_bytes": 4096}
    async with secure_gateway(state_dir, **limits) as gateway:
        body = CountedBody(6 * 1024 * 1024)
        reply = await gateway.client.request(
            method, path, content=body.chunks(), headers=bad_signature()
        )
        problem = await gateway.refused(reply, 413, "Payload Too Large")
        assert problem["detail"] == f"the body exceeds {limits[limit]} bytes"
        assert body.sent <= limits[limit] + CHUNK


async def test_a_route_with_a_larger_limit_reads_up_to_it(state_dir: Path) -> None:
    limits = {"max_body_bytes": 2048, "max_knowledge_bytes": 16 * 1024}
    async with secure_gateway(state_dir, **limits) as gateway:
        body = CountedBody(12 * 1024)
        reply = await gateway.client.post(
            "/v2/tenants/demo/knowledge", content=body.chunks(), headers=bad_signature()
        )
        problem = await gateway.refused(reply, 401)
        assert problem["detail"] == "the signature does not match the body"
        assert body.sent == 12 * 1024
        bigger = CountedBody(64 * 1024)
        reply = await gateway.client.post(
            "/v2/tenants/demo/knowledge", content=bigger.chunks(), headers=bad_signature()
        )
        await gateway.refused(reply, 413)
        assert bigger.sent <= 16 * 1024 + CHUNK


@pytest.fixture
async def gateway_2k(state_dir: Path) -> AsyncIterator[SecureGateway]:
    async with secure_gateway(state_dir, max_body_bytes=2048) as running_gateway:
        yield running_gateway


async def test_a_declared_length_past_the_routes_limit_is_413_unread(
    gateway_2k: SecureGateway,
) -> None:
    body = CountedBody(4096)
    headers = bad_signature() | {"Content-Length": "4096"}
    reply = await gateway_2k.client.post(PATH, content=body.chunks(), headers=headers)
    await gateway_2k.refused(reply, 413)
    assert body.sent == 0


# --- failed signatures ---------------------------------------------------------------------


def refusals() -> float:
    sample = REGISTRY.get_sample_value(
        "meta_agent_rate_limited_total", {"scope": "gateway_signature_failures"}
    )
    return sample or 0.0


CLIENTS = {
    "crm": {"secret": CRM_SECRET.decode(), "tenantId": "demo"},
    "erp": {"secret": "e" * 40, "tenantId": "demo"},
}


@pytest.fixture
async def limited(state_dir: Path) -> AsyncIterator[SecureGateway]:
    overrides = {"hmac_clients": CLIENTS, "rate_limit_signature_failures_per_minute": 3}
    async with secure_gateway(state_dir, **overrides) as running_gateway:
        yield running_gateway


async def test_a_client_past_its_failed_signatures_is_429_until_the_window_ends(
    limited: SecureGateway,
) -> None:
    before = refusals()
    for _ in range(3):
        reply = await limited.process(bad_signature(), RAW)
        await limited.refused(reply, 401)
    locked = await limited.process(bad_signature(), RAW)
    problem = await limited.refused(locked, 429, "Too Many Requests")
    assert "3 bad signatures from this client" in problem["detail"]
    assert 1 <= int(locked.headers["Retry-After"]) <= 60

    # now even a good signature is refused, before its body is read or its digest checked
    body = CountedBody(1024)
    good = limited.signed(b"x" * 1024, method="POST", target=PATH)
    reply = await limited.client.post(PATH, content=body.chunks(), headers=good)
    await limited.refused(reply, 429)
    assert body.sent == 0
    assert refusals() - before == 2

    # other callers are not held off
    erp = limited.signed(RAW, client="erp", secret=b"e" * 40, method="POST", target=PATH)
    assert (await limited.process(erp, RAW)).status_code == 200
    assert (await limited.process(limited.token())).status_code == 200


def from_address(gateway: SecureGateway, host: str) -> httpx.AsyncClient:
    """A client of the same gateway whose requests come from `host`."""
    transport = httpx.ASGITransport(app=gateway.app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw")


async def test_bad_signatures_from_one_address_do_not_lock_the_client_out_of_another(
    limited: SecureGateway,
) -> None:
    """Knowing a client id is not enough to hold that client off: the failures count per
    address, so the attacker's address gets 429 and the real client's calls still pass."""
    before = refusals()
    async with (
        from_address(limited, "203.0.113.66") as attacker,
        from_address(limited, "198.51.100.7") as real,
    ):
        for _ in range(3):
            await limited.refused(
                await attacker.post(PATH, content=RAW, headers=bad_signature()), 401
            )
        locked = await attacker.post(PATH, content=RAW, headers=bad_signature())
        problem = await limited.refused(locked, 429, "Too Many Requests")
        assert "3 bad signatures from this client at this address" in problem["detail"]
        good = limited.signed(RAW, method="POST", target=PATH)
        await limited.refused(await attacker.post(PATH, content=RAW, headers=good), 429)
        assert refusals() - before == 2

        good = limited.signed(RAW, method="POST", target=PATH, timestamp=int(time.time()) - 1)
        reply = await real.post(PATH, content=RAW, headers=good)
        assert reply.status_code == 200, reply.text
        limited.orchestrator.seen.clear()
        # and the real client's own failures have a window of their own
        await limited.refused(await real.post(PATH, content=RAW, headers=bad_signature()), 401)


def test_a_request_without_a_peer_address_has_a_window_of_its_own() -> None:
    """A server that reports no peer (a Unix socket) keys the failures by the empty address."""
    assert caller_address(Request({"type": "http", "client": None, "headers": []})) == ""
    peer = Request({"type": "http", "client": ("203.0.113.66", 40000), "headers": []})
    assert caller_address(peer) == "203.0.113.66"


async def test_replayed_signatures_count_as_failures(limited: SecureGateway) -> None:
    headers = limited.signed(RAW, method="POST", target=PATH)
    assert (await limited.process(headers, RAW)).status_code == 200
    limited.orchestrator.seen.clear()
    for _ in range(3):
        problem = await limited.refused(await limited.process(headers, RAW), 401)
        assert problem["detail"] == "the signature was already used"
    await limited.refused(await limited.process(headers, RAW), 429)


async def test_good_signatures_do_not_use_up_the_failures(limited: SecureGateway) -> None:
    now = int(time.time())
    for offset in range(6):
        headers = limited.signed(RAW, method="POST", target=PATH, timestamp=now - offset)
        assert (await limited.process(headers, RAW)).status_code == 200


async def test_zero_leaves_failed_signatures_unlimited(state_dir: Path) -> None:
    overrides = {"rate_limit_signature_failures_per_minute": 0}
    async with secure_gateway(state_dir, **overrides) as gateway:
        for _ in range(10):
            await gateway.refused(await gateway.process(bad_signature(), RAW), 401)


async def test_replicas_share_the_failed_signatures_through_redis(
    state_dir: Path, redis_url: str
) -> None:
    client = f"crm-{uuid.uuid4().hex[:8]}"  # Redis outlives the test: a client of its own
    overrides = {
        "hmac_clients": {client: {"secret": "c" * 40, "tenantId": "demo"}},
        "rate_limit_url": redis_url,
        "rate_limit_signature_failures_per_minute": 2,
    }
    async with (
        secure_gateway(state_dir, **overrides) as first,
        secure_gateway(state_dir, **overrides) as second,
    ):
        for _ in range(2):
            await first.refused(await first.process(bad_signature(client), RAW), 401)
        good = second.signed(RAW, client=client, secret=b"c" * 40, method="POST", target=PATH)
        await second.refused(await second.process(good, RAW), 429)


async def test_counters_down_leave_failed_signatures_unlimited_not_unauthenticated(
    state_dir: Path,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    overrides = {"rate_limit_url": dead, "rate_limit_signature_failures_per_minute": 1}
    before = UNCHECKED._value.get()
    async with secure_gateway(state_dir, **overrides) as gateway:
        for _ in range(3):
            await gateway.refused(await gateway.process(bad_signature(), RAW), 401)
        good = gateway.signed(RAW, method="POST", target=PATH)
        assert (await gateway.process(good, RAW)).status_code == 200
    assert UNCHECKED._value.get() > before
