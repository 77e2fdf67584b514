"""Per-caller and per-tenant rate limits: 429 problem+json with Retry-After, shared through
Redis by replicas, and fail-open when Redis is down."""

import logging
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.ratelimit import UNCHECKED
from tests.gateway.test_process_api import SEED_REQUEST
from tests.gateway.test_security import PROBLEM_JSON, SecureGateway, secure_gateway
from tests.support.ports import free_port

WHOAMI = "/test/whoami"


def refusals(scope: str) -> float:
    return REGISTRY.get_sample_value("meta_agent_rate_limited_total", {"scope": scope}) or 0.0


async def assert_limited(gateway: SecureGateway, reply: httpx.Response, whom: str) -> None:
    assert reply.status_code == 429, reply.text
    assert reply.headers["content-type"] == PROBLEM_JSON
    assert 1 <= int(reply.headers["Retry-After"]) <= 60
    problem = reply.json()
    assert problem["title"] == "Too Many Requests"
    assert problem["correlationId"] == reply.headers["X-Correlation-Id"]
    assert whom in problem["detail"]
    assert (await gateway.client.get("/healthz")).status_code == 200


async def test_a_caller_past_its_limit_is_429_before_the_orchestrator(state_dir: Path) -> None:
    before = refusals("gateway_client")
    async with secure_gateway(state_dir, rate_limit_client_per_minute=2) as gateway:
        for _ in range(2):
            assert (await gateway.process(gateway.token())).status_code == 200
        await assert_limited(gateway, await gateway.process(gateway.token()), "this caller")
        assert refusals("gateway_client") - before == 1, "counted in the rejections metric"
        assert len(gateway.orchestrator.seen) == 2
        other = await gateway.process(
            gateway.token(subject="user-8"), body={**SEED_REQUEST, "userId": "user-8"}
        )
        assert other.status_code == 200, other.text  # another caller's window is its own
        assert len(gateway.orchestrator.seen) == 3


async def test_a_tenant_past_its_limit_is_429_for_every_caller(state_dir: Path) -> None:
    async with secure_gateway(state_dir, rate_limit_tenant_per_minute=3) as gateway:
        for n in range(3):
            headers = gateway.token(subject=f"user-{n}")
            assert (await gateway.client.get(WHOAMI, headers=headers)).status_code == 200
        fresh = gateway.token(subject="someone-new")
        await assert_limited(gateway, await gateway.client.get(WHOAMI, headers=fresh), "tenant")
        before = refusals("gateway_tenant")
        signed = await gateway.client.get(WHOAMI, headers=gateway.signed(b""))
        await assert_limited(gateway, signed, "this tenant")
        assert refusals("gateway_tenant") - before == 1
        elsewhere = gateway.token(tenant="acme")
        assert (await gateway.client.get(WHOAMI, headers=elsewhere)).status_code == 200


async def test_zero_disables_the_limits(state_dir: Path) -> None:
    limits = {"rate_limit_client_per_minute": 0, "rate_limit_tenant_per_minute": 0}
    async with secure_gateway(state_dir, **limits) as gateway:
        for _ in range(30):
            reply = await gateway.client.get(WHOAMI, headers=gateway.token())
            assert reply.status_code == 200


async def test_hmac_clients_and_token_subjects_are_counted_apart(state_dir: Path) -> None:
    async with secure_gateway(state_dir, rate_limit_client_per_minute=1) as gateway:
        first = int(time.time())
        signed = await gateway.client.get(WHOAMI, headers=gateway.signed(b"", timestamp=first))
        assert signed.status_code == 200
        same_name = gateway.token(subject="crm")
        assert (await gateway.client.get(WHOAMI, headers=same_name)).status_code == 200
        resigned = gateway.signed(b"", timestamp=first - 1)  # another signature: not a replay
        again = await gateway.client.get(WHOAMI, headers=resigned)
        await assert_limited(gateway, again, "this caller")


async def test_refused_credentials_do_not_use_up_the_limit(state_dir: Path) -> None:
    async with secure_gateway(state_dir, rate_limit_tenant_per_minute=1) as gateway:
        for _ in range(5):
            bad = await gateway.client.get(WHOAMI, headers=gateway.token(key="x" * 40))
            assert bad.status_code == 401
        assert (await gateway.client.get(WHOAMI, headers=gateway.token())).status_code == 200


async def test_replicas_share_the_limits_through_redis(state_dir: Path, redis_url: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:12]}"
    overrides = {"rate_limit_url": redis_url, "rate_limit_client_per_minute": 2}
    async with (
        secure_gateway(state_dir, **overrides) as first,
        secure_gateway(state_dir, **overrides) as second,
    ):
        headers = first.token(tenant=tenant)
        assert (await first.client.get(WHOAMI, headers=headers)).status_code == 200
        assert (await second.client.get(WHOAMI, headers=headers)).status_code == 200
        await assert_limited(first, await first.client.get(WHOAMI, headers=headers), "this caller")


async def test_a_redis_outage_fails_open_with_one_warning(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    overrides = {"rate_limit_url": dead, "rate_limit_client_per_minute": 1}
    before = UNCHECKED._value.get()
    caplog.set_level(logging.WARNING, logger="metaagent.gateway.ratelimit")
    async with secure_gateway(state_dir, **overrides) as gateway:
        for _ in range(3):
            reply = await gateway.client.get(WHOAMI, headers=gateway.token())
            assert reply.status_code == 200
        assert (await gateway.process(gateway.token())).status_code == 200
    assert UNCHECKED._value.get() - before == 4
    warnings = [r for r in caplog.records if r.name == "metaagent.gateway.ratelimit"]
    assert len(warnings) == 1
    assert "not limiting" in warnings[0].getMessage()
