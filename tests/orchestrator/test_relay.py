"""The outbox relay against the real context service: turns commit while the bus is down, every
action is published once it recovers, a relay killed mid-batch loses and doubles nothing, and
messages that keep failing are dead-lettered."""

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from prometheus_client import REGISTRY

from services.mesh import correlation
from services.mesh.backoff import RetryPolicy
from services.mesh.clients import MeshClients
from services.mesh.settings import MeshSettings
from services.orchestrator.bus import (
    BusMessage,
    BusMessageRejected,
    BusMisconfigured,
    BusUnavailable,
)
from services.orchestrator.bus.local import LocalBus
from services.orchestrator.consumers import EmbeddedConsumers, subscribe_local
from services.orchestrator.consumers.payments import LocalPayments
from services.orchestrator.relay import OutboxRelay, RelayRunner
from tests.orchestrator.outbox_turns import (
    CHECKOUT,
    ESCALATION,
    TICKET_PARAMS,
    as_tenant,
    commit_turn,
    pending,
    statuses,
)
from tests.support.context_service import context_service

PENDING, SENT, FAILED = (
    conversation_pb2.ACTION_STATUS_PENDING,
    conversation_pb2.ACTION_STATUS_SENT,
    conversation_pb2.ACTION_STATUS_FAILED,
)
FAST = RetryPolicy(attempts=1_000, base_delay=0.01, max_delay=0.05)
SESSIONS = (("demo", "s-a"), ("demo", "s-b"), ("acme", "s-c"))


@pytest.fixture
async def clients(state_dir: Path, tmp_path: Path) -> AsyncIterator[MeshClients]:
    """The orchestrator's clients of a fresh context service (SQLite store) with the tenants
    `demo` and `acme`."""
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as settings:
        gateway = MeshClients(settings, "gateway")
        try:
            with correlation.bound(as_tenant("acme", "setup-acme")):
                await gateway.context.PutTenant(
                    context_pb.PutTenantRequest(tenant=tenant_pb2.TenantConfig(name="Acme"))
                )
        finally:
            await gateway.close()
        orchestrator = MeshClients(settings, "orchestrator")
        try:
            yield orchestrator
        finally:
            await orchestrator.close()


class Recorder:
    """A consumer that records every delivery (duplicates included)."""

    def __init__(self) -> None:
        self.deliveries: list[BusMessage] = []

    async def __call__(self, message: BusMessage) -> None:
        self.deliveries.append(message)

    def ids(self) -> list[str]:
        return [m.message_id for m in self.deliveries]


class CrashingBus:
    """Publishes the first `after` messages of a publish on the real bus, then hangs like a
    process about to be killed (before the relay can mark anything)."""

    def __init__(self, inner: LocalBus, after: int) -> None:
        self.inner = inner
        self.after = after
        self.crashed = asyncio.Event()

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        await self.inner.publish(messages[: self.after])
        self.crashed.set()
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


class ScriptedBus:
    """Raises the given error on publish."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        self.calls += 1
        raise self.error

    async def close(self) -> None:
        pass


async def _turns(clients: MeshClients, rounds: int = 2) -> dict[tuple[str, str], list[str]]:
    """`rounds` turns per session, alternating checkout and escalation; action ids in commit
    order per session."""
    committed: dict[tuple[str, str], list[str]] = {key: [] for key in SESSIONS}
    for n in range(rounds):
        for tenant, session in SESSIONS:
            actions = CHECKOUT if n % 2 == 0 else ESCALATION
            committed[(tenant, session)] += await commit_turn(
                clients, tenant, session, f"corr-{session}-{n}", actions
            )
    return committed


def _dead_lettered() -> float:
    value = REGISTRY.get_sample_value(
        "meta_agent_outbox_dead_lettered_total", {"reason": "max_attempts"}
    )
    return value or 0.0


async def _sweep_until_empty(relay: OutboxRelay, limit: int = 20) -> None:
    for _ in range(limit):
        report = await relay.run_once()
        assert not report.failed, report
        if report.listed == 0:
            return
    raise AssertionError("the outbox did not drain")


async def test_bus_down_then_crash_mid_batch_nothing_lost_nothing_doubled(
    clients: MeshClients,
) -> None:
    committed = await _turns(clients)
    every_id = [i for ids in committed.values() for i in ids]
    bus = LocalBus()
    recorder = Recorder()
    await bus.subscribe("action.", recorder, name="all-actions")

    # The bus is down: sweeps publish nothing, count attempts, and turns still commit.
    bus.failing = True
    down = OutboxRelay(clients, bus, max_attempts=10, batch_size=5, backoff=FAST)
    first, second = await down.run_once(), await down.run_once()
    assert (first.listed, first.published, first.retried, first.bus_error) == (
        5,
        0,
        5,
        "BusUnavailable",
    )
    assert second.retried == 5
    committed[("demo", "s-a")] += await commit_turn(clients, "demo", "s-a", "corr-late", CHECKOUT)
    every_id += committed[("demo", "s-a")][-2:]
    waiting = await pending(clients)
    assert set(waiting) == set(every_id), "every action is still pending, none lost"
    retried = [m for m in waiting.values() if m.attempts]
    assert len(retried) == 5
    assert all(m.attempts == 2 and "BusUnavailable" in m.last_error for m in retried)
    assert recorder.deliveries == []

    # The bus recovers; the relay dies after the bus took 3 messages, before marking them.
    bus.failing = False
    crashing = CrashingBus(bus, after=3)
    doomed = OutboxRelay(clients, crashing, batch_size=5, backoff=FAST, claimant="relay-0")
    stop = asyncio.Event()
    task = asyncio.create_task(doomed.run(stop))
    await asyncio.wait_for(crashing.crashed.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await pending(clients)) == len(every_id), "published but not marked: still pending"

    # Restarted in place (same claimant name), the relay takes its leases back at once and
    # republishes those 3 (dropped as duplicates) and the rest.
    restarted = OutboxRelay(clients, bus, batch_size=5, backoff=FAST, claimant="relay-0")
    await _sweep_until_empty(restarted)
    await asyncio.wait_for(bus.drain(), 5)

    delivered = Counter(recorder.ids())
    assert set(delivered) == set(every_id)
    assert max(delivered.values()) == 1, "no action delivered twice"
    assert bus.duplicates == 3
    assert restarted.totals.published == len(every_id)
    for (tenant, session), ids in committed.items():
        in_session = [m.message_id for m in recorder.deliveries if m.session_id == session]
        assert in_session == ids, "each session's actions arrive in commit order"
        assert await statuses(clients, tenant, session) == dict.fromkeys(ids, SENT)
    assert await pending(clients) == {}
    assert {m.tenant_id for m in recorder.deliveries} == {"demo", "acme"}


async def test_without_broker_dedup_idempotent_consumers_act_once_after_a_crash(
    clients: MeshClients,
) -> None:
    committed = await _turns(clients)
    bus = LocalBus(duplicate_window=0)  # no duplicate detection: the consumers must cope
    payments = LocalPayments()
    consumers = EmbeddedConsumers.create(payments)
    await subscribe_local(bus, consumers.all)

    crashing = CrashingBus(bus, after=4)
    doomed = OutboxRelay(clients, crashing, batch_size=6, claimant="relay-0")
    task = asyncio.create_task(doomed.run(asyncio.Event()))
    await asyncio.wait_for(crashing.crashed.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await _sweep_until_empty(OutboxRelay(clients, bus, batch_size=6, claimant="relay-0"))
    await asyncio.wait_for(bus.drain(), 5)

    assert bus.duplicates == 0 and len(bus.published) == 12 + 4, "4 delivered twice"
    assert len(consumers.orders.orders) == 3  # one checkout per session
    assert sorted(payments.created) == sorted(consumers.orders.orders), "one link per order"
    assert len(consumers.orders.links) == 3
    assert sum(consumers.hub.pending(t) for t in ("demo", "acme")) == 6  # ticket + handoff x 3
    assert not bus.dead_letters
    for (tenant, session), ids in committed.items():
        assert await statuses(clients, tenant, session) == dict.fromkeys(ids, SENT)


async def test_max_attempts_dead_letters_the_action_and_counts_it(
    clients: MeshClients, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await commit_turn(clients, "demo", "s-dead", "corr-dead", ESCALATION)
    bus = LocalBus()
    bus.failing = True
    relay = OutboxRelay(clients, bus, max_attempts=3)
    before = _dead_lettered()

    reports = [await relay.run_once() for _ in range(3)]

    assert [(r.retried, r.dead_lettered) for r in reports] == [(2, 0), (2, 0), (0, 2)]
    assert relay.totals.dead_lettered == 2
    assert _dead_lettered() == before + 2
    assert await pending(clients) == {}
    assert await statuses(clients, "demo", "s-dead") == dict.fromkeys(ids, FAILED)
    warnings = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert {r.messageId for r in warnings} == set(ids)  # type: ignore[attr-defined]
    assert all(r.levelno == logging.WARNING for r in warnings)
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert TICKET_PARAMS["customerText"] not in logged, "no customer text in logs"
    bus.failing = False
    assert (await relay.run_once()).listed == 0, "failed is final: never republished"


async def test_a_misconfigured_bus_spends_no_attempts(clients: MeshClients) -> None:
    await commit_turn(clients, "demo", "s-conf", "corr-conf", CHECKOUT)
    bus = ScriptedBus(BusMisconfigured("topic not found"))
    report = await OutboxRelay(clients, bus, max_attempts=1).run_once()
    assert report.bus_error == "BusMisconfigured" and report.dead_lettered == 0
    assert report.failed, "the relay backs off until an operator fixes it"
    assert [m.attempts for m in (await pending(clients)).values()] == [0, 0]


async def test_each_sweep_reports_the_backlog_and_the_age_of_its_oldest_message(
    clients: MeshClients,
) -> None:
    def gauge(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    down = OutboxRelay(clients, ScriptedBus(BusUnavailable("broker down")))
    await down.run_once()
    assert (
        gauge("meta_agent_outbox_backlog") == 0 and gauge("meta_agent_outbox_oldest_seconds") == 0
    )
    await commit_turn(clients, "demo", "s-lag-1", "corr-lag-1", CHECKOUT)
    await commit_turn(clients, "acme", "s-lag-2", "corr-lag-2", ESCALATION)
    await asyncio.sleep(0.3)
    await down.run_once()
    assert gauge("meta_agent_outbox_backlog") == 4, "every tenant's pending actions"
    assert 0.3 <= gauge("meta_agent_outbox_oldest_seconds") < 30
    bus = LocalBus()
    await _sweep_until_empty(OutboxRelay(clients, bus))
    assert (
        gauge("meta_agent_outbox_backlog") == 0 and gauge("meta_agent_outbox_oldest_seconds") == 0
    )


IDLE_SWEEPS = 5


async def test_idle_sweeps_log_nothing_at_info(
    clients: MeshClients, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay polls ListOutbox every second while the outbox is empty: steady polling is
    logged at DEBUG (the context server's access line included), never a line per second."""
    relay = OutboxRelay(clients, LocalBus())
    with caplog.at_level(logging.DEBUG):
        for _ in range(IDLE_SWEEPS):
            assert (await relay.run_once()).listed == 0
    loud = [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.INFO
    ]
    assert loud == []
    polls = [r for r in caplog.records if r.getMessage().endswith("/ListOutbox OK")]
    assert [r.levelno for r in polls] == [logging.DEBUG] * IDLE_SWEEPS


async def test_a_refused_poll_is_still_logged_at_info(
    state_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as settings:
        gateway = MeshClients(settings, "gateway")  # not a caller ListOutbox admits
        try:
            with caplog.at_level(logging.DEBUG):
                report = await OutboxRelay(gateway, LocalBus()).run_once()
        finally:
            await gateway.close()
    assert report.context_error == "PERMISSION_DENIED"
    [refused] = [r for r in caplog.records if r.name == "metaagent.rpc"]
    assert refused.levelno == logging.INFO
    assert refused.getMessage().endswith("/ListOutbox PERMISSION_DENIED")


async def test_a_message_the_broker_refuses_fails_alone(clients: MeshClients) -> None:
    order, link = await commit_turn(clients, "demo", "s-big", "corr-big", CHECKOUT)
    ticket, handoff = await commit_turn(clients, "demo", "s-big", "corr-big-2", ESCALATION)
    bus = ScriptedBus(BusMessageRejected("too large", link, published=[order]))
    report = await OutboxRelay(clients, bus).run_once()
    assert (report.published, report.dead_lettered, report.retried) == (1, 1, 0)
    assert not report.failed, "one bad message is no outage: no backoff"
    assert await statuses(clients, "demo", "s-big") == {
        order: SENT,
        link: FAILED,
        ticket: PENDING,
        handoff: PENDING,
    }
    assert {i: m.attempts for i, m in (await pending(clients)).items()} == {ticket: 0, handoff: 0}


async def test_a_partial_publish_marks_exactly_what_went_out(clients: MeshClients) -> None:
    order, link = await commit_turn(clients, "demo", "s-part", "corr-part", CHECKOUT)
    bus = ScriptedBus(BusUnavailable("connection reset", published=[order]))
    report = await OutboxRelay(clients, bus).run_once()
    assert (report.published, report.retried) == (1, 1)
    assert await statuses(clients, "demo", "s-part") == {order: SENT, link: PENDING}


async def test_the_sweep_is_platform_wide_even_inside_a_tenants_call(
    clients: MeshClients,
) -> None:
    demo = await commit_turn(clients, "demo", "s-x", "corr-x", CHECKOUT)
    acme = await commit_turn(clients, "acme", "s-y", "corr-y", CHECKOUT)
    bus = LocalBus()
    recorder = Recorder()
    await bus.subscribe({"action.create_order", "action.payment_link"}, recorder)
    with correlation.bound(as_tenant("demo", "corr-inbound")):
        report = await OutboxRelay(clients, bus).run_once()
        assert correlation.current().tenant_id == "demo", "the caller's context is restored"
    await bus.drain()
    assert report.published == 4
    assert set(recorder.ids()) == {*demo, *acme}
    first = recorder.deliveries[0]
    assert first.correlation_id == "corr-x" and first.tenant_id == "demo"


async def test_run_backs_off_while_the_bus_is_down_and_drains_when_it_recovers(
    clients: MeshClients,
) -> None:
    ids = await commit_turn(clients, "demo", "s-run", "corr-run", CHECKOUT)
    bus = LocalBus()
    recorder = Recorder()
    await bus.subscribe("action.", recorder)
    bus.failing = True
    relay = OutboxRelay(clients, bus, max_attempts=1_000, poll_interval=0.02, backoff=FAST)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.3)
    attempts = max(m.attempts for m in (await pending(clients)).values())
    assert 2 <= attempts < 60, "retried with backoff, not in a hot loop"
    bus.failing = False
    async with asyncio.timeout(5):
        while len(recorder.deliveries) < 2:
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert recorder.ids() == ids
    assert await statuses(clients, "demo", "s-run") == dict.fromkeys(ids, SENT)


async def test_an_unreachable_context_service_is_reported_not_raised(
    settings: MeshSettings,
) -> None:
    unreachable = settings.model_copy(
        update={
            "context_addr": "127.0.0.1:9",
            "grpc_retry_attempts": 1,
            "grpc_default_timeout_seconds": 2.0,
        }
    )
    clients = MeshClients(unreachable, "orchestrator")
    try:
        report = await OutboxRelay(clients, LocalBus()).run_once()
    finally:
        await clients.close()
    assert report.context_error == "UNAVAILABLE" and report.failed


async def test_the_runner_wires_the_embedded_consumers_and_stops_cleanly(
    clients: MeshClients,
) -> None:
    checkout = await commit_turn(clients, "demo", "s-app", "corr-app", CHECKOUT)
    escalation = await commit_turn(clients, "demo", "s-app", "corr-app-2", ESCALATION)
    bus = LocalBus()
    consumers = EmbeddedConsumers.create()
    runner = RelayRunner(
        OutboxRelay(clients, bus, poll_interval=0.02), bus, local_consumers=consumers.all
    )
    await runner.start()
    await runner.start()  # a retried readiness check: no second relay, no second subscription
    async with asyncio.timeout(5):
        while consumers.hub.pending("demo") < 2:
            await asyncio.sleep(0.02)
    await runner.stop()
    assert list(consumers.orders.orders) == [checkout[0]]
    assert list(consumers.orders.links) == [checkout[1]]
    assert await statuses(clients, "demo", "s-app") == dict.fromkeys(checkout + escalation, SENT)
    with pytest.raises(BusUnavailable, match="closed"):
        await bus.publish([])


async def test_a_sweep_that_raises_unexpectedly_does_not_end_the_relay(
    clients: MeshClients,
) -> None:
    ids = await commit_turn(clients, "demo", "s-bug", "corr-bug", CHECKOUT)
    bus = LocalBus()
    relay = OutboxRelay(clients, bus, poll_interval=0.01, backoff=FAST)
    real, calls = relay.run_once, [0]

    async def flaky_once() -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("bug")
        return await real()

    relay.run_once = flaky_once  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    async with asyncio.timeout(5):
        while await pending(clients):
            await asyncio.sleep(0.02)
    stop.set()
    await task
    assert calls[0] >= 2
    assert await statuses(clients, "demo", "s-bug") == dict.fromkeys(ids, SENT)


async def test_a_crashed_relays_leases_hold_off_other_replicas_until_they_expire(
    clients: MeshClients,
) -> None:
    await _turns(clients, rounds=1)
    crashing = CrashingBus(LocalBus(), after=0)
    doomed = OutboxRelay(clients, crashing, batch_size=100, lease_seconds=1, claimant="pod-a")
    task = asyncio.create_task(doomed.run(asyncio.Event()))
    await asyncio.wait_for(crashing.crashed.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    bus = LocalBus()
    other = OutboxRelay(clients, bus, batch_size=100, claimant="pod-b")
    assert (await other.run_once()).listed == 0, "pod-a's messages are still leased"
    await asyncio.sleep(1.2)
    await _sweep_until_empty(other)
    assert other.totals.published == 6
    assert await pending(clients) == {}


async def test_replicas_sweeping_together_publish_each_action_once_in_session_order(
    clients: MeshClients,
) -> None:
    committed = await _turns(clients, rounds=4)
    bus = LocalBus(duplicate_window=0)  # no broker dedup: a double publish would show
    recorder = Recorder()
    await bus.subscribe("action.", recorder, name="all-actions")
    relays = [OutboxRelay(clients, bus, batch_size=2, claimant=f"pod-{n}") for n in range(4)]

    async def drain(relay: OutboxRelay) -> None:
        idle = 0
        while idle < 3:
            report = await relay.run_once()
            assert not report.failed, report
            idle = idle + 1 if report.listed == 0 else 0
            await asyncio.sleep(0)

    await asyncio.gather(*(drain(relay) for relay in relays))
    await asyncio.wait_for(bus.drain(), 5)
    delivered = Counter(recorder.ids())
    every_id = [i for ids in committed.values() for i in ids]
    assert set(delivered) == set(every_id) and max(delivered.values()) == 1
    assert sum(relay.totals.published for relay in relays) == len(every_id)
    assert sum(1 for relay in relays if relay.totals.published) > 1, "the work was shared"
    for (_, session), ids in committed.items():
        assert [m.message_id for m in recorder.deliveries if m.session_id == session] == ids
