"""Tenant limits: one suite over the in-process and Redis counters, plus replicas on one Redis."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime

import grpc
import pytest
from prometheus_client import REGISTRY
from redis import asyncio as redis_asyncio

from services.llm.limits import (
    Admission,
    MemoryUsage,
    TenantLimits,
    open_tenant_limits,
)
from services.mesh.counters import MemoryCounters
from services.mesh.errors import MeshError
from tests.support.ports import free_port


class FakeClock:
    def __init__(self, iso: str) -> None:
        self.now = datetime.fromisoformat(iso).timestamp()

    def __call__(self) -> float:
        return self.now


MakeLimits = Callable[[FakeClock], TenantLimits]


@pytest.fixture(params=["memory", "redis"])
async def make_limits(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimits]:
    """Opens "replicas": on Redis each with its own client; in process they share counters."""
    opened: list[TenantLimits] = []
    url = "" if request.param == "memory" else request.getfixturevalue("redis_url")
    counters, usage = MemoryCounters(), MemoryUsage()

    def make(clock: FakeClock) -> TenantLimits:
        if url:
            limits = open_tenant_limits(url, clock=clock)
        else:
            limits = TenantLimits(counters, clock, usage=usage)
        opened.append(limits)
        return limits

    yield make
    for limits in opened:
        await limits.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2030-03-01T23:00:00+00:00")


async def refused(admit: object) -> MeshError:
    assert asyncio.iscoroutine(admit)
    with pytest.raises(MeshError) as failed:
        await admit
    assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    return failed.value


async def test_the_budget_admits_until_spent_then_retries_after_utc_midnight(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    first = await limits.admit(tenant, 0, 100, 40)
    await limits.admit(tenant, 0, 100, 40)
    error = await refused(limits.admit(tenant, 0, 100, 40))
    assert error.reason == "TOKEN_BUDGET_EXHAUSTED"
    assert error.retry_after == pytest.approx(3600)
    assert (first.day, first.reserved, first.enforced) == ("2030-03-01", 40, True)


async def test_the_rate_limit_refuses_with_the_time_left_in_the_minute(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    await limits.admit(tenant, 2, 0, 10)
    await limits.admit(tenant, 2, 0, 10)
    before = REGISTRY.get_sample_value("meta_agent_rate_limited_total", {"scope": "llm_requests"})
    error = await refused(limits.admit(tenant, 2, 0, 10))
    assert error.reason == "RATE_LIMITED"
    after = REGISTRY.get_sample_value("meta_agent_rate_limited_total", {"scope": "llm_requests"})
    assert (after or 0) - (before or 0) == 1
    assert error.retry_after is not None and 0 < error.retry_after <= 60


async def test_zero_means_unlimited(make_limits: MakeLimits, tenant: str, clock: FakeClock) -> None:
    limits = make_limits(clock)
    for _ in range(30):
        await limits.admit(tenant, 0, 0, 10_000)


async def test_a_budget_refusal_consumes_nothing(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    await limits.admit(tenant, 0, 100, 60)
    await refused(limits.admit(tenant, 0, 100, 50))
    await limits.admit(tenant, 0, 100, 40)
    await refused(limits.admit(tenant, 0, 100, 1))


async def test_a_rate_refusal_gives_the_reservation_back(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    await limits.admit(tenant, 1, 100, 50)
    assert (await refused(limits.admit(tenant, 1, 100, 50))).reason == "RATE_LIMITED"
    await limits.admit(tenant, 0, 100, 50)
    assert (await refused(limits.admit(tenant, 0, 100, 1))).reason == "TOKEN_BUDGET_EXHAUSTED"


async def test_replicas_share_one_budget(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    replicas = [make_limits(clock), make_limits(clock)]
    results = await asyncio.gather(
        *(replicas[i % 2].admit(tenant, 0, 10 * 30, 30) for i in range(50)),
        return_exceptions=True,
    )
    admitted = [r for r in results if isinstance(r, Admission)]
    refusals = [r for r in results if isinstance(r, MeshError)]
    assert len(admitted) == 10
    assert len(refusals) == 40
    assert {r.reason for r in refusals} == {"TOKEN_BUDGET_EXHAUSTED"}


async def test_replicas_share_one_rate_limit(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    replicas = [make_limits(clock), make_limits(clock)]
    results = await asyncio.gather(
        *(replicas[i % 2].admit(tenant, 10, 0, 5) for i in range(50)), return_exceptions=True
    )
    assert sum(isinstance(r, Admission) for r in results) == 10
    assert {r.reason for r in results if isinstance(r, MeshError)} == {"RATE_LIMITED"}


async def test_two_concurrent_requests_cannot_both_pass_a_budget_for_one(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    one, two = make_limits(clock), make_limits(clock)
    results = await asyncio.gather(
        one.admit(tenant, 0, 100, 60), two.admit(tenant, 0, 100, 60), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Admission", "MeshError"]


async def test_settling_refunds_an_overestimate_and_charges_an_underestimate(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    admission = await limits.admit(tenant, 0, 100, 50)
    await limits.settle(admission, 20, model="gpt-5")
    await limits.admit(tenant, 0, 100, 80)
    await refused(limits.admit(tenant, 0, 100, 1))

    other = f"{tenant}-b"
    admission = await limits.admit(other, 0, 100, 10)
    await limits.settle(admission, 150, model="gpt-5")
    await refused(limits.admit(other, 0, 100, 1))


async def test_release_returns_the_whole_reservation(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    await limits.release(await limits.admit(tenant, 0, 100, 100))
    await limits.admit(tenant, 0, 100, 100)
    assert await limits.usage(tenant) == {}


async def test_an_admission_settles_once(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    admission = await limits.admit(tenant, 0, 100, 10)
    await limits.settle(admission, 10, model="gpt-5")
    with pytest.raises(RuntimeError):
        await limits.settle(admission, 10, model="gpt-5")
    with pytest.raises(RuntimeError):
        await limits.release(admission)


async def test_usage_is_kept_per_model_and_tenant(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    for model, tokens in [("gpt-5", 120), ("gpt-5-mini", 30), ("gpt-5", 5), ("offline", 0)]:
        await limits.settle(await limits.admit(tenant, 0, 0, 50), tokens, model=model)
    expected = {"gpt-5": 125, "gpt-5-mini": 30}
    assert await limits.usage(tenant) == expected
    assert await limits.usage(tenant, date(2030, 3, 1)) == expected
    assert await limits.usage(tenant, "2030-03-02") == {}
    assert await limits.usage(f"{tenant}-other", "2030-03-01") == {}


async def test_the_day_resets_at_utc_midnight_not_24_hours_after_first_use(
    make_limits: MakeLimits, tenant: str
) -> None:
    clock = FakeClock("2030-03-01T23:59:00+00:00")
    limits = make_limits(clock)
    await limits.admit(tenant, 0, 100, 100)
    assert (await refused(limits.admit(tenant, 0, 100, 1))).retry_after == pytest.approx(60)
    clock.now += 61
    late = await limits.admit(tenant, 0, 100, 100)
    assert late.day == "2030-03-02"
    clock.now += 86_400 - 2
    error = await refused(limits.admit(tenant, 0, 100, 1))
    assert error.retry_after == pytest.approx(1)


async def test_settling_after_midnight_records_usage_on_the_admission_day(
    make_limits: MakeLimits, tenant: str
) -> None:
    clock = FakeClock("2030-03-01T23:59:59+00:00")
    limits = make_limits(clock)
    admission = await limits.admit(tenant, 0, 100, 10)
    clock.now += 2
    await limits.settle(admission, 500, model="gpt-5")
    assert await limits.usage(tenant, "2030-03-01") == {"gpt-5": 500}
    await limits.admit(tenant, 0, 100, 100)


async def test_bad_arguments_are_refused(
    make_limits: MakeLimits, tenant: str, clock: FakeClock
) -> None:
    limits = make_limits(clock)
    with pytest.raises(ValueError, match="tenant"):
        await limits.admit("a:b", 0, 0, 1)
    with pytest.raises(ValueError, match="negative"):
        await limits.admit(tenant, -1, 0, 1)
    admission = await limits.admit(tenant, 0, 0, 1)
    with pytest.raises(ValueError, match="model"):
        await limits.settle(admission, 5, model="")


async def test_redis_keys_carry_tenant_and_utc_date(
    redis_url: str, tenant: str, clock: FakeClock
) -> None:
    limits = open_tenant_limits(redis_url, clock=clock)
    raw = redis_asyncio.from_url(redis_url)
    try:
        await limits.settle(await limits.admit(tenant, 5, 100, 40), 30, model="gpt-5")
        tokens = f"metaagent:rate:llm:tokens:{tenant}:2030-03-01"
        assert await raw.get(tokens) == b"30"
        assert 0 < await raw.pttl(tokens) <= 3_600_000
        assert await raw.get(f"metaagent:rate:llm:rate:{tenant}") == b"1"
        usage = f"metaagent:llm:usage:{tenant}:2030-03-01"
        assert await raw.hgetall(usage) == {b"gpt-5": b"30"}
        assert 6 * 86_400 < await raw.ttl(usage) <= 7 * 86_400
    finally:
        await raw.aclose()
        await limits.close()


async def test_redis_down_fails_open_with_one_warning(
    tenant: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    limits = open_tenant_limits(f"redis://127.0.0.1:{free_port()}/0", clock=clock)
    try:
        with caplog.at_level(logging.WARNING, "metaagent.llm.limits"):
            admissions = [await limits.admit(tenant, 1, 1, 50) for _ in range(3)]
            for admission in admissions:
                await limits.settle(admission, 80, model="gpt-5")
        assert all(not a.enforced and a.reserved == 0 for a in admissions)
        assert limits.unenforced > 0
        assert len(caplog.records) == 1
        with pytest.raises(MeshError) as failed:
            await limits.usage(tenant)
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await limits.close()


async def test_redis_down_fails_closed_when_asked_but_settling_never_raises(
    tenant: str, clock: FakeClock
) -> None:
    limits = open_tenant_limits(f"redis://127.0.0.1:{free_port()}/0", fail_open=False, clock=clock)
    try:
        with pytest.raises(MeshError) as failed:
            await limits.admit(tenant, 1, 1000, 50)
        admission = Admission(tenant, "2030-03-01", clock.now + 3600, 50, True)
        await limits.settle(admission, 80, model="gpt-5")
    finally:
        await limits.close()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE


def test_urls_choose_the_adapter() -> None:
    assert isinstance(open_tenant_limits(""), TenantLimits)
    assert isinstance(open_tenant_limits("memory://"), TenantLimits)
    with pytest.raises(ValueError, match="scheme"):
        open_tenant_limits("mongodb://somewhere")
