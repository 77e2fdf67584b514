"""The turn over real services: answers, validation that persists nothing, streaming."""

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.context.v1 import context_service_pb2 as context_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from tests.support.inprocess_mesh import InProcessMesh

TEXT = "Quiero comprar la zapatilla Kobe, la dejé en el carrito."


def _request(session_id: str = "s-1", text: str = TEXT, **overrides) -> pb.ProcessRequest:
    fields = {
        "session_id": session_id,
        "user_id": "u-1",
        "channel": conversation_pb2.CHANNEL_WEB,
        "input": pb.Input(type=pb.INPUT_TYPE_TEXT, text=text),
        **overrides,
    }
    return pb.ProcessRequest(**fields)


def _as(tenant: str = "demo", correlation_id: str = "corr-o-1", session_id: str = ""):
    return correlation.bound(
        correlation.CallContext(
            correlation_id=correlation_id, tenant_id=tenant, session_id=session_id
        )
    )


async def _session(gateway: MeshClients, session_id: str) -> context_pb.GetSessionResponse:
    return await gateway.context.GetSession(
        context_pb.GetSessionRequest(session_id=session_id, include_transcript=True)
    )


async def test_a_turn_is_answered_and_both_turns_are_persisted(gateway: MeshClients) -> None:
    with _as():
        reply = await gateway.orchestrator.Process(_request())
        stored = await _session(gateway, "s-1")
    assert reply.intent == "checkout_flow"
    assert reply.correlation_id == "corr-o-1"
    assert reply.embeddings_used >= 1
    roles = [t.role for t in stored.transcript]
    assert roles == [conversation_pb2.TURN_ROLE_USER, conversation_pb2.TURN_ROLE_AGENT]
    assert stored.transcript[0].text == TEXT
    assert stored.transcript[1].metadata.intent == "checkout_flow"
    assert {t.correlation_id for t in stored.transcript} == {"corr-o-1"}
    assert stored.context.short_context.last_intent == "checkout_flow"


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (_request(session_id=""), {"session_id"}),
        (_request(session_id="bad id"), {"session_id"}),
        (_request(text="   "), {"input.text"}),
        (_request(text="x" * 4001), {"input.text"}),
        (_request(channel=conversation_pb2.CHANNEL_UNSPECIFIED), {"channel"}),
        (pb.ProcessRequest(session_id="s-2"), {"channel", "input"}),
        (_request(input=pb.Input(text="hola")), {"input.type"}),
    ],
)
async def test_bad_input_is_refused_with_every_field_and_nothing_is_persisted(
    gateway: MeshClients, request_: pb.ProcessRequest, fields: set[str]
) -> None:
    with _as():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.orchestrator.Process(request_)
        error = MeshError.from_rpc_error(refused.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in error.violations} == fields
        for session_id in {"s-1", "s-2", request_.session_id} - {"", "bad id"}:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await _session(gateway, session_id)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_session_id_that_contradicts_the_metadata_is_refused(gateway: MeshClients) -> None:
    with _as(session_id="s-other"), pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.orchestrator.Process(_request("s-1"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_event_input_is_unimplemented(gateway: MeshClients) -> None:
    with _as(), pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.orchestrator.Process(_request(input=pb.Input(type=pb.INPUT_TYPE_EVENT)))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_an_unconfigured_tenant_is_a_failed_precondition_and_gets_no_session(
    gateway: MeshClients,
) -> None:
    with _as(tenant="ghost"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.orchestrator.Process(_request())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert MeshError.from_rpc_error(refused.value).reason == "TENANT_NOT_CONFIGURED"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await _session(gateway, "s-1")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_stream_sends_deltas_then_the_final_response(gateway: MeshClients) -> None:
    with _as():
        events = [
            event
            async for event in gateway.orchestrator.ProcessStream(
                pb.ProcessStreamRequest(request=_request("s-stream"))
            )
        ]
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    final = events[-1]
    assert final.WhichOneof("event") == "final"
    assert len(deltas) > 3
    assert "".join(deltas) == final.final.response_text
    assert final.final.intent == "checkout_flow"


async def test_the_speech_service_may_ask_for_turns_but_the_llm_may_not(
    mesh: InProcessMesh,
) -> None:
    speech, llm = mesh.clients("speech"), mesh.clients("llm")
    with _as(correlation_id="corr-voice-1"):
        assert (await speech.orchestrator.Process(_request("s-voice"))).response_text
    with _as(correlation_id="corr-voice-2"), pytest.raises(grpc.aio.AioRpcError) as refused:
        await llm.orchestrator.Process(_request("s-voice"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await speech.close()
    await llm.close()


async def test_a_session_cannot_be_continued_as_another_user(gateway: MeshClients) -> None:
    with _as(correlation_id="corr-alice"):
        await gateway.orchestrator.Process(_request("s-owned", user_id="alice"))
    with _as(correlation_id="corr-mallory"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.orchestrator.Process(_request("s-owned", user_id="mallory"))
        stored = await _session(gateway, "s-owned")
    error = MeshError.from_rpc_error(refused.value)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_OWNED_BY_ANOTHER_USER",
    )
    assert len(stored.transcript) == 2
