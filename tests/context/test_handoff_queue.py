"""The hand-over queue, one contract over every store adapter (SQLite and PostgreSQL):
enqueued once per event id, claimed oldest first by one connection, in flight with it (and
handed to it again, to no one else) until its lease runs out, completed by its holder only,
given back when its connection leaves, tenant by tenant, and erased with its user."""

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2
from metaagent.context.v1 import handoff_pb2

from services.context.handoff_rows import HandoffClaim
from services.context.store import SessionStore
from services.mesh.errors import MeshError

pytestmark = pytest.mark.timeout(60)

PAYLOAD = {
    "reason": "customer_request",
    "customerText": "mi tarjeta termina en 4111",
    "transcript": [{"role": "user", "text": "quiero hablar con una persona"}],
    "entities": {"order_id": "12345", "quantity": 2, "total": "189.99"},
    "escalated": True,
}


def _handoff(
    event_id: str, session_id: str = "s1", user_id: str = "u1"
) -> handoff_pb2.QueuedHandoff:
    payload = struct_pb2.Struct()
    payload.update(PAYLOAD)
    return handoff_pb2.QueuedHandoff(
        event_id=event_id, session_id=session_id, user_id=user_id, kind="handoff", payload=payload
    )


async def _queued(store: SessionStore, tenant: str, *event_ids: str, session: str = "s1") -> None:
    """A session of user u1 with the hand-overs `event_ids` queued in this order."""
    await store.create_session(tenant, session, "u1", 1)
    for event_id in event_ids:
        assert await store.enqueue_handoff(tenant, _handoff(event_id, session))


def _claim(
    agent: str = "ana", connection: str = "sock-a", limit: int = 10, lease: int = 60, skip=()
) -> HandoffClaim:
    return HandoffClaim(agent, connection, lease, limit, frozenset(skip))


def _ids(claimed: list[handoff_pb2.QueuedHandoff]) -> list[tuple[str, bool]]:
    return [(h.event_id, h.redelivered) for h in claimed]


def _held_elsewhere(error: MeshError) -> bool:
    return (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HANDOFF_HELD_ELSEWHERE",
    )


async def test_an_event_is_queued_once_and_comes_back_whole(
    store: SessionStore, tenant: str
) -> None:
    await _queued(store, tenant, "e1")
    assert await store.enqueue_handoff(tenant, _handoff("e1")) is False, "redelivered action"
    [claimed] = await store.claim_handoffs(tenant, _claim())
    assert (claimed.event_id, claimed.session_id, claimed.user_id, claimed.kind) == (
        "e1",
        "s1",
        "u1",
        "handoff",
    )
    payload = dict(claimed.payload)
    assert payload["customerText"] == PAYLOAD["customerText"]
    assert payload["entities"]["total"] == "189.99" and payload["escalated"] is True
    assert claimed.attempts == 1 and not claimed.redelivered
    assert claimed.created_at.seconds > 0 and claimed.lease_expires_at.seconds > 0
    assert await store.claim_handoffs(tenant, _claim(connection="sock-b")) == []
    assert await store.complete_handoff(tenant, "e1", "ana", "sock-a")
    assert await store.enqueue_handoff(tenant, _handoff("e1")) is False, "done is remembered"
    assert await store.claim_handoffs(tenant, _claim(connection="sock-c")) == []


async def test_nothing_is_queued_for_a_session_that_does_not_exist(
    store: SessionStore, tenant: str
) -> None:
    with pytest.raises(MeshError) as refused:
        await store.enqueue_handoff(tenant, _handoff("e1", session_id="gone"))
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    await store.create_session(tenant, "s1", "u1", 1)
    assert await store.claim_handoffs(tenant, _claim()) == []


async def test_claims_take_the_oldest_and_each_connection_gets_its_own_back(
    store: SessionStore, tenant: str
) -> None:
    await _queued(store, tenant, "e1", "e2", "e3", "e4")
    assert _ids(await store.claim_handoffs(tenant, _claim(limit=2))) == [
        ("e1", False),
        ("e2", False),
    ]
    assert _ids(await store.claim_handoffs(tenant, _claim("bob", "sock-b", limit=1))) == [
        ("e3", False)
    ]
    again = await store.claim_handoffs(tenant, _claim(limit=1))
    assert _ids(again) == [("e1", True), ("e2", True), ("e4", False)], "held first, then new"
    assert [h.attempts for h in again] == [1, 1, 1], "a renewal is not another delivery"
    renewed = await store.claim_handoffs(tenant, _claim(limit=0, skip={"e1", "e4"}))
    assert _ids(renewed) == [("e2", True)], "what the caller has is renewed, not returned"
    assert await store.claim_handoffs(tenant, _claim("ana", "sock-other")) == [], (
        "another connection of the same agent gets none of sock-a's"
    )


async def test_an_expired_lease_sends_the_event_back_to_the_queue(
    store: SessionStore, tenant: str
) -> None:
    await _queued(store, tenant, "e1", "e2")
    assert len(await store.claim_handoffs(tenant, _claim(lease=1, limit=1))) == 1
    assert _ids(await store.claim_handoffs(tenant, _claim("bob", "sock-b"))) == [("e2", False)]
    await asyncio.sleep(1.3)
    taken = await store.claim_handoffs(tenant, _claim("carla", "sock-c"))
    assert _ids(taken) == [("e1", False)] and taken[0].attempts == 2
    assert await store.claim_handoffs(tenant, _claim(limit=0)) == [], "sock-a lost it"
    assert _ids(await store.claim_handoffs(tenant, _claim("bob", "sock-b", limit=0))) == [
        ("e2", True)
    ], "bob renewed within his lease"


async def test_only_the_holder_completes_an_event(store: SessionStore, tenant: str) -> None:
    await _queued(store, tenant, "e1", "e2")
    await store.claim_handoffs(tenant, _claim(limit=1))
    for agent, connection in (("bob", ""), ("bob", "sock-a"), ("ana", "sock-other")):
        with pytest.raises(MeshError) as refused:
            await store.complete_handoff(tenant, "e1", agent, connection)
        assert _held_elsewhere(refused.value)
    assert await store.complete_handoff(tenant, "e2", "ana", "") is False, "never handed out"
    assert await store.complete_handoff(tenant, "nope", "ana", "") is False, "unknown"
    assert await store.complete_handoff(tenant, "e1", "ana", "") is True, "any of ana's"
    assert await store.complete_handoff(tenant, "e1", "ana", "sock-a") is False, "once"
    assert _ids(await store.claim_handoffs(tenant, _claim())) == [("e2", False)]


async def test_a_connection_that_left_gives_its_events_back_in_their_place(
    store: SessionStore, tenant: str
) -> None:
    await _queued(store, tenant, "e1", "e2", "e3")
    await store.claim_handoffs(tenant, _claim(limit=2))
    assert await store.release_handoffs(tenant, "ana", "sock-other") == 0
    assert await store.release_handoffs(tenant, "ana", "sock-a") == 2
    assert await store.release_handoffs(tenant, "ana", "sock-a") == 0
    assert await store.complete_handoff(tenant, "e2", "ana", "sock-a") is True, (
        "the last holder's late acknowledgement still settles it"
    )
    with pytest.raises(MeshError) as refused:
        await store.complete_handoff(tenant, "e1", "bob", "")
    assert _held_elsewhere(refused.value), "given back, but bob never had it"
    taken = await store.claim_handoffs(tenant, _claim("bob", "sock-b"))
    assert _ids(taken) == [("e1", False), ("e3", False)], "oldest first: e1 kept its place"
    assert [h.attempts for h in taken] == [2, 1]
    with pytest.raises(MeshError) as refused:
        await store.complete_handoff(tenant, "e1", "ana", "")
    assert _held_elsewhere(refused.value), "bob's now"


async def test_tenants_never_see_each_others_hand_overs(store: SessionStore, tenant: str) -> None:
    other = f"{tenant}-other"
    await _queued(store, tenant, "e1")
    await _queued(store, other, "e1")
    [mine] = await store.claim_handoffs(tenant, _claim())
    assert await store.complete_handoff(other, "e1", "ana", "sock-a") is False, (
        "the same id in another tenant is another, undelivered, event"
    )
    assert await store.release_handoffs(other, "ana", "sock-a") == 0
    [theirs] = await store.claim_handoffs(other, _claim())
    assert (mine.event_id, mine.redelivered) == (theirs.event_id, theirs.redelivered)
    assert await store.complete_handoff(tenant, "e1", "ana", "sock-a") is True
    assert _ids(await store.claim_handoffs(other, _claim())) == [("e1", True)]


async def test_erasing_a_user_deletes_their_queued_hand_overs(
    store: SessionStore, tenant: str
) -> None:
    await _queued(store, tenant, "e-held", "e-waiting")
    assert await store.enqueue_handoff(tenant, _handoff("e-no-user", user_id=""))
    await store.create_session(tenant, "s-bob", "bob", 1)
    assert await store.enqueue_handoff(tenant, _handoff("e-bob", "s-bob", "bob"))
    assert await store.enqueue_handoff(tenant, _handoff("e-named", "s-bob", "u1")), (
        "in bob's session but naming u1"
    )
    await store.claim_handoffs(tenant, _claim(limit=1))
    erasure = await store.erase_user(tenant, "u1")
    assert erasure.handoffs == 4, "waiting, held, without a user in u1's session, naming u1"
    assert _ids(await store.claim_handoffs(tenant, _claim("bob", "sock-b"))) == [("e-bob", False)]
    with pytest.raises(MeshError) as late:
        await store.enqueue_handoff(tenant, _handoff("e-late"))
    assert late.value.reason == "SESSION_NOT_FOUND", "a late redelivery queues nothing"
    assert (await store.erase_user(tenant, "u1")).handoffs == 0
