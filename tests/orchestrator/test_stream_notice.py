"""ProcessStream's deltas add up to the final reply, hand-over notice included."""

import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.orchestrator.escalation import NOTICE, escalate
from services.orchestrator.turn import _unstreamed


def _request(text: str) -> pb.ProcessRequest:
    return pb.ProcessRequest(
        session_id="s-stream-unclear",
        user_id="u-1",
        channel=conversation_pb2.CHANNEL_WEB,
        input=pb.Input(type=pb.INPUT_TYPE_TEXT, text=text),
    )


async def _stream(
    gateway: MeshClients, correlation_id: str, text: str
) -> tuple[list[str], pb.ProcessResponse]:
    """One ProcessStream call: its deltas, and the final response that ends it."""
    deltas: list[str] = []
    final: pb.ProcessResponse | None = None
    call = correlation.CallContext(correlation_id=correlation_id, tenant_id="demo")
    with correlation.bound(call):
        async for event in gateway.orchestrator.ProcessStream(
            pb.ProcessStreamRequest(request=_request(text))
        ):
            if event.HasField("final"):
                final = event.final
            else:
                assert final is None, "no delta after the final response"
                deltas.append(event.delta)
    assert final is not None
    return deltas, final


async def test_streamed_deltas_end_with_the_hand_over_notice(gateway: MeshClients) -> None:
    """Two unclear messages escalate on the second; the model did not propose the hand-over,
    so the turn appends the notice, and the stream shows it before the final response."""
    with correlation.bound(correlation.CallContext(correlation_id="corr-s-1", tenant_id="demo")):
        first = await gateway.orchestrator.Process(_request("zxqv blorp fnord"))
    assert not first.actions
    deltas, final = await _stream(gateway, "corr-s-2", "qwerty plugh xyzzy")
    assert "handoff_human" in [a.type for a in final.actions]
    assert final.response_text.endswith(NOTICE["es"])
    assert "".join(deltas) == final.response_text
    assert not deltas[-1].strip().startswith(final.response_text.strip()), "sent once, in parts"


def test_only_a_continuation_of_what_was_streamed_is_added() -> None:
    assert _unstreamed("Hola.\n\nNotice", "Hola.") == "\n\nNotice"
    assert _unstreamed("Hola.", "Hola.") == ""
    assert _unstreamed("Otra cosa", "Hola.") == ""


async def test_a_replayed_stream_sends_the_stored_text_as_one_delta(gateway: MeshClients) -> None:
    """The same correlation id again: the first answer, whose deltas still add up to it."""
    first_deltas, first = await _stream(gateway, "corr-s-replay", "¿Qué tallas tiene la Kobe?")
    replay_deltas, replay = await _stream(gateway, "corr-s-replay", "¿Qué tallas tiene la Kobe?")
    assert replay.replayed and replay.response_text == first.response_text
    assert replay_deltas == [first.response_text]
    assert "".join(first_deltas) == first.response_text


@pytest.mark.parametrize("reply", ["Vale.", "Vale. ", "Vale.\n", "Vale.\n\n", "  "])
def test_the_notice_continues_the_reply_as_the_model_streamed_it(reply: str) -> None:
    tenant = tenant_pb2.TenantConfig(allowed_actions=["handoff_human"], language="es")
    result = escalate(
        pb.ProcessRequest(
            session_id="s", input=pb.Input(type=pb.INPUT_TYPE_TEXT, text="quiero un humano")
        ),
        conversation_pb2.SessionContext(session_id="s"),
        tenant,
        llm_pb.Generation(reply_text=reply, intent="unknown"),
    )
    assert result.reply_text.startswith(reply) and result.reply_text.endswith(NOTICE["es"])
    if reply.strip():
        assert "\n\n" + NOTICE["es"] in result.reply_text, "after a blank line"
