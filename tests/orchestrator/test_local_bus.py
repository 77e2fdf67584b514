"""The local bus: per-session order, duplicate drop, redelivery then dead-letter, fan-out."""

import asyncio
import json
import random

import pytest

from services.mesh import correlation
from services.mesh.backoff import RetryPolicy
from services.orchestrator.bus import BusMessage, BusUnavailable, HandlerRejected
from services.orchestrator.bus.local import LocalBus

QUICK = RetryPolicy(attempts=3, base_delay=0.005, max_delay=0.01)


def message(n: int, session: str = "s1", kind: str = "create_order") -> BusMessage:
    return BusMessage(
        message_id=f"m-{session}-{n}",
        subject=f"action.{kind}",
        session_id=session,
        correlation_id=f"c-{n}",
        tenant_id="demo",
        body=json.dumps({"actionId": f"m-{session}-{n}", "params": {"n": n}}).encode(),
    )


async def test_each_session_is_delivered_in_order_and_sessions_interleave() -> None:
    bus = LocalBus(rng=random.Random(1))
    seen: list[str] = []
    active: dict[str, int] = {}

    async def slow(m: BusMessage) -> None:
        active[m.session_id] = active.get(m.session_id, 0) + 1
        assert active[m.session_id] == 1, "one message of a session at a time"
        await asyncio.sleep(0.002 * (hash(m.message_id) % 3))
        seen.append(m.message_id)
        active[m.session_id] -= 1

    await bus.subscribe("action.", slow)
    await bus.publish([message(n, session) for n in range(10) for session in ("a", "b", "c")])
    await asyncio.wait_for(bus.drain(), 5)
    for session in ("a", "b", "c"):
        assert [i for i in seen if i.startswith(f"m-{session}-")] == [
            f"m-{session}-{n}" for n in range(10)
        ]
    assert len(seen) == 30


async def test_a_message_id_seen_within_the_window_is_dropped() -> None:
    now = [1000.0]
    bus = LocalBus(duplicate_window=60, clock=lambda: now[0])
    got: list[str] = []

    async def record(m: BusMessage) -> None:
        got.append(m.message_id)

    await bus.subscribe("action.", record)
    await bus.publish([message(1), message(2)])
    await bus.publish([message(1)])
    now[0] += 61  # past the window: Service Bus would accept it again
    await bus.publish([message(2)])
    await bus.drain()
    assert got == ["m-s1-1", "m-s1-2", "m-s1-2"]
    assert bus.duplicates == 1


async def test_a_failing_handler_gets_redeliveries_then_the_message_is_dead_lettered() -> None:
    bus = LocalBus(redelivery=QUICK)
    deliveries: list[tuple[str, int]] = []

    async def flaky(m: BusMessage) -> None:
        deliveries.append((m.message_id, m.delivery_count))
        if m.message_id == "m-s1-1" or (m.message_id == "m-s1-2" and m.delivery_count < 2):
            raise RuntimeError("downstream said no")

    await bus.subscribe("action.", flaky, name="orders")
    await bus.publish([message(1), message(2)])
    await asyncio.wait_for(bus.drain(), 5)
    assert deliveries == [
        ("m-s1-1", 1),
        ("m-s1-1", 2),
        ("m-s1-1", 3),
        ("m-s1-2", 1),
        ("m-s1-2", 2),
    ], "redelivered in place: the session waits, order is kept"
    [dead] = bus.dead_letters
    assert (dead.subscription, dead.message.message_id) == ("orders", "m-s1-1")
    assert (dead.reason, dead.error) == ("MaxDeliveryCountExceeded", "RuntimeError")


async def test_a_rejecting_handler_dead_letters_at_once() -> None:
    bus = LocalBus(redelivery=QUICK)
    calls: list[int] = []

    async def reject(m: BusMessage) -> None:
        calls.append(m.delivery_count)
        raise HandlerRejected("invalid params")

    await bus.subscribe("action.", reject)
    await bus.publish([message(1)])
    await bus.drain()
    assert calls == [1]
    assert bus.dead_letters[0].reason == "HandlerRejected"


async def test_subscriptions_get_their_own_copy_by_subject() -> None:
    bus = LocalBus()
    orders: list[str] = []
    everything: list[str] = []

    async def to(sink: list[str], m: BusMessage) -> None:
        sink.append(m.subject)

    await bus.subscribe({"action.create_order"}, lambda m: to(orders, m), name="orders")
    await bus.subscribe("action.", lambda m: to(everything, m), name="audit")
    with pytest.raises(ValueError, match="already exists"):
        await bus.subscribe("action.", lambda m: to(everything, m), name="audit")
    await bus.publish([message(1), message(2, kind="create_ticket")])
    await bus.drain()
    assert orders == ["action.create_order"]
    assert everything == ["action.create_order", "action.create_ticket"]


async def test_handlers_run_under_the_messages_correlation_ids_not_the_publishers() -> None:
    bus = LocalBus()
    seen: list[correlation.CallContext] = []

    async def record(m: BusMessage) -> None:
        seen.append(correlation.current())

    await bus.subscribe("action.", record)
    with correlation.bound(correlation.CallContext(correlation_id="relay-1")):
        await bus.publish([message(7)])
    await bus.drain()
    assert (seen[0].correlation_id, seen[0].tenant_id, seen[0].session_id) == ("c-7", "demo", "s1")


async def test_a_failing_or_closed_bus_refuses_and_accepts_nothing() -> None:
    bus = LocalBus()
    got: list[str] = []

    async def record(m: BusMessage) -> None:
        got.append(m.message_id)

    await bus.subscribe("action.", record)
    bus.failing = True
    with pytest.raises(BusUnavailable, match="failing"):
        await bus.publish([message(1)])
    bus.failing = False
    await bus.publish([message(1)])  # not remembered as seen while failing
    await bus.close()
    with pytest.raises(BusUnavailable, match="closed"):
        await bus.publish([message(2)])
    assert got == ["m-s1-1"]


async def test_close_cancels_deliveries_that_outlive_the_grace() -> None:
    bus = LocalBus()
    started = asyncio.Event()

    async def stuck(m: BusMessage) -> None:
        started.set()
        await asyncio.Event().wait()

    await bus.subscribe("action.", stuck)
    await bus.publish([message(1)])
    await started.wait()
    await asyncio.wait_for(bus.close(grace=0.05), 2)
