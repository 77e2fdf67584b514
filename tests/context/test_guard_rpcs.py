"""Session locks, fencing and idempotency claims through the context service's RPCs."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.context_service import context_service


@dataclass
class ContextUnderTest:
    clients: MeshClients
    session_id: str

    @property
    def context(self) -> Any:
        return self.clients.context


@pytest.fixture(params=["memory", "redis"])
async def context(
    request: pytest.FixtureRequest, state_dir: Path, tmp_path: Path
) -> AsyncIterator[ContextUnderTest]:
    cache_url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, cache_url=cache_url, store_url=store_url) as reach:
        clients = MeshClients(reach, "orchestrator")
        session = f"s-{uuid.uuid4().hex[:12]}"
        call = correlation.CallContext(correlation_id="corr-guards", tenant_id="demo")
        with correlation.bound(call):
            await clients.context.GetOrCreateSession(
                pb.GetOrCreateSessionRequest(session_id=session, user_id="u1", channel=1)
            )
            yield ContextUnderTest(clients, session)
        await clients.close()


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _turn(text: str) -> conversation_pb2.ConversationTurn:
    return conversation_pb2.ConversationTurn(role=conversation_pb2.TURN_ROLE_USER, text=text)


async def _error(call) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return MeshError.from_rpc_error(failed.value)


async def test_a_held_lock_aborts_others_and_a_newer_lease_fences_off_the_old_one(
    context: ContextUnderTest,
) -> None:
    session = context.session_id
    stub = context.context
    first = await stub.AcquireSessionLock(
        pb.AcquireSessionLockRequest(session_id=session, ttl=_seconds(0.3))
    )
    busy = await _error(stub.AcquireSessionLock(pb.AcquireSessionLockRequest(session_id=session)))
    assert (busy.code, busy.reason) == (grpc.StatusCode.ABORTED, "SESSION_LOCKED")
    await asyncio.sleep(0.4)
    second = await stub.AcquireSessionLock(
        pb.AcquireSessionLockRequest(session_id=session, wait_timeout=_seconds(1))
    )
    assert second.fencing_token > first.fencing_token
    stale = await _error(
        stub.CommitTurn(
            pb.CommitTurnRequest(
                session_id=session,
                turns=[_turn("from the expired holder")],
                fencing_token=first.fencing_token,
            )
        )
    )
    assert stale.reason == "STALE_FENCING_TOKEN"
    await stub.CommitTurn(
        pb.CommitTurnRequest(
            session_id=session,
            turns=[_turn("from the holder")],
            fencing_token=second.fencing_token,
        )
    )
    released = await stub.ReleaseSessionLock(
        pb.ReleaseSessionLockRequest(session_id=session, fencing_token=first.fencing_token)
    )
    assert released.released is False
    transcript = await stub.GetSession(
        pb.GetSessionRequest(session_id=session, include_transcript=True)
    )
    assert [t.text for t in transcript.transcript] == ["from the holder"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AcquireSessionLockRequest(session_id="s", ttl=_seconds(301)), "ttl"),
        (pb.AcquireSessionLockRequest(session_id="s", wait_timeout=_seconds(-1)), "wait_timeout"),
        (pb.AcquireSessionLockRequest(session_id=""), "session_id"),
    ],
)
async def test_bad_lock_requests_name_the_field(
    context: ContextUnderTest, request_: pb.AcquireSessionLockRequest, field: str
) -> None:
    error = await _error(context.context.AcquireSessionLock(request_))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == [field]


async def test_one_hundred_concurrent_claims_over_grpc(context: ContextUnderTest) -> None:
    stub = context.context
    key = f"corr-{uuid.uuid4().hex[:12]}"
    begin = pb.BeginIdempotentRequest(key=key, fingerprint="fp")
    first = await asyncio.gather(*(stub.BeginIdempotent(begin) for _ in range(100)))
    states = [reply.state for reply in first]
    assert states.count(pb.IDEMPOTENCY_STATE_CLAIMED) == 1
    assert states.count(pb.IDEMPOTENCY_STATE_IN_FLIGHT) == 99
    claim = next(r for r in first if r.state == pb.IDEMPOTENCY_STATE_CLAIMED)
    await stub.CompleteIdempotent(
        pb.CompleteIdempotentRequest(
            completion=pb.IdempotencyCompletion(
                key=key, claim_id=claim.claim_id, response=b"the first answer"
            )
        )
    )
    replay = await asyncio.gather(*(stub.BeginIdempotent(begin) for _ in range(100)))
    assert {(r.state, r.response) for r in replay} == {
        (pb.IDEMPOTENCY_STATE_COMPLETED, b"the first answer")
    }
    lost = await _error(
        stub.CompleteIdempotent(
            pb.CompleteIdempotentRequest(
                completion=pb.IdempotencyCompletion(key=key, claim_id="someone-else", response=b"x")
            )
        )
    )
    assert lost.reason == "IDEMPOTENCY_CLAIM_LOST"
    reused = await _error(
        stub.BeginIdempotent(pb.BeginIdempotentRequest(key=key, fingerprint="other"))
    )
    assert reused.code == grpc.StatusCode.ALREADY_EXISTS
