"""The turn's guarantees on the embedded mesh: one result per correlation id, one turn at a time
per session, no second set of actions after a crash between commit and reply, and answers
without documents when retrieval is down."""

import asyncio

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.orchestrator.guard import TurnGuard
from services.orchestrator.turn import TurnProcessor
from tests.support.inprocess_mesh import InProcessMesh

BUY = "Quiero comprar la zapatilla Kobe, la dejé en el carrito."
CONFIRM = "Sí, confirmo, en talla 43"


def _request(session_id: str, text: str) -> pb.ProcessRequest:
    return pb.ProcessRequest(
        session_id=session_id,
        user_id="u-1",
        channel=conversation_pb2.CHANNEL_WEB,
        input=pb.Input(type=pb.INPUT_TYPE_TEXT, text=text),
    )


async def _turn(gateway: MeshClients, session_id: str, text: str, corr: str) -> pb.ProcessResponse:
    with correlation.bound(correlation.CallContext(correlation_id=corr, tenant_id="demo")):
        return await gateway.orchestrator.Process(_request(session_id, text))


async def _transcript(
    gateway: MeshClients, session_id: str
) -> list[conversation_pb2.ConversationTurn]:
    with correlation.bound(correlation.CallContext(correlation_id="corr-read", tenant_id="demo")):
        found = await gateway.context.GetSession(
            context_pb.GetSessionRequest(session_id=session_id, include_transcript=True)
        )
    return list(found.transcript)


@pytest.mark.timeout(120)
async def test_200_concurrent_requests_with_one_correlation_id_give_one_result(
    gateway: MeshClients,
) -> None:
    await _turn(gateway, "s-dup", BUY, "corr-dup-1")
    replies = await asyncio.gather(
        *(_turn(gateway, "s-dup", CONFIRM, "corr-dup-2") for _ in range(200))
    )
    first = replies[0]
    assert [a.type for a in first.actions] == ["create_order", "payment_link"]
    for reply in replies:
        assert (reply.response_text, [a.action_id for a in reply.actions]) == (
            first.response_text,
            [a.action_id for a in first.actions],
        )
    assert sum(not reply.replayed for reply in replies) == 1
    transcript = await _transcript(gateway, "s-dup")
    assert len(transcript) == 4
    assert sum(len(turn.actions) for turn in transcript) == 2


async def test_turns_of_one_session_never_interleave(
    gateway: MeshClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = {"now": 0, "most": 0}
    prepare, finish = TurnProcessor._prepare, TurnProcessor._finish

    async def entering(self: TurnProcessor, *args: object) -> object:
        inside["now"] += 1
        inside["most"] = max(inside["most"], inside["now"])
        await asyncio.sleep(0.01)
        return await prepare(self, *args)  # type: ignore[arg-type]

    async def leaving(self: TurnProcessor, *args: object) -> object:
        try:
            return await finish(self, *args)  # type: ignore[arg-type]
        finally:
            inside["now"] -= 1

    monkeypatch.setattr(TurnProcessor, "_prepare", entering)
    monkeypatch.setattr(TurnProcessor, "_finish", leaving)
    texts = [f"¿Hacéis envíos a la isla {n}?" for n in range(8)]
    await asyncio.gather(
        *(_turn(gateway, "s-order", text, f"corr-order-{n}") for n, text in enumerate(texts))
    )
    assert inside["most"] == 1, "two turns of one session were in flight together"
    transcript = await _transcript(gateway, "s-order")
    assert len(transcript) == 16
    for user, agent in zip(transcript[::2], transcript[1::2], strict=True):
        assert user.role == conversation_pb2.TURN_ROLE_USER
        assert agent.role == conversation_pb2.TURN_ROLE_AGENT
        assert user.correlation_id == agent.correlation_id


async def test_a_retry_after_a_crash_between_commit_and_reply_reuses_the_committed_turn(
    gateway: MeshClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _turn(gateway, "s-crash", BUY, "corr-crash-1")
    original = TurnGuard.complete

    async def crash(self: TurnGuard, claim: object, response: pb.ProcessResponse) -> None:
        raise ConnectionResetError("the orchestrator died before storing the reply")

    monkeypatch.setattr(TurnGuard, "complete", crash)
    with pytest.raises(grpc.aio.AioRpcError):
        await _turn(gateway, "s-crash", CONFIRM, "corr-crash-2")
    monkeypatch.setattr(TurnGuard, "complete", original)
    retried = await _turn(gateway, "s-crash", CONFIRM, "corr-crash-2")
    transcript = await _transcript(gateway, "s-crash")
    assert len(transcript) == 4, "the retry committed nothing new"
    committed = transcript[-1]
    assert [a.action_id for a in retried.actions] == [a.action_id for a in committed.actions]
    assert retried.response_text == committed.text
    again = await _turn(gateway, "s-crash", CONFIRM, "corr-crash-2")
    assert again.replayed and again.response_text == retried.response_text


async def test_with_retrieval_down_the_turn_is_answered_without_documents(
    mesh: InProcessMesh, gateway: MeshClients
) -> None:
    await mesh.servers["retrieval"].stop(0)
    reply = await _turn(gateway, "s-noret", "¿Cuánto tarda el envío?", "corr-noret")
    assert reply.degraded and list(reply.degraded_dependencies) == ["retrieval"]
    assert reply.embeddings_used == 0 and reply.response_text


async def test_committed_actions_are_published_and_shown_as_sent(gateway: MeshClients) -> None:
    await _turn(gateway, "s-sent", BUY, "corr-sent-1")
    reply = await _turn(gateway, "s-sent", CONFIRM, "corr-sent-2")
    assert [a.status for a in reply.actions] == [conversation_pb2.ACTION_STATUS_PENDING] * 2
    for _ in range(100):
        agent = (await _transcript(gateway, "s-sent"))[-1]
        if all(a.status == conversation_pb2.ACTION_STATUS_SENT for a in agent.actions):
            break
        await asyncio.sleep(0.05)
    assert [a.type for a in agent.actions] == ["create_order", "payment_link"]
    assert all(a.status == conversation_pb2.ACTION_STATUS_SENT for a in agent.actions)
