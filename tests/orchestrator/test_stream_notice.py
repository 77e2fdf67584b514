"""ProcessStream's deltas add up to the final reply, hand-over notice included."""

from metaagent.common.v1 import conversation_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.orchestrator.escalation import NOTICE
from services.orchestrator.turn import _unstreamed


def _request(text: str) -> pb.ProcessRequest:
    return pb.ProcessRequest(
        session_id="s-stream-unclear",
        user_id="u-1",
        channel=conversation_pb2.CHANNEL_WEB,
        input=pb.Input(type=pb.INPUT_TYPE_TEXT, text=text),
    )


async def test_streamed_deltas_end_with_the_hand_over_notice(gateway: MeshClients) -> None:
    """Two unclear messages escalate on the second; the model did not propose the hand-over,
    so the turn appends the notice, and the stream shows it before the final response."""
    with correlation.bound(correlation.CallContext(correlation_id="corr-s-1", tenant_id="demo")):
        first = await gateway.orchestrator.Process(_request("zxqv blorp fnord"))
    assert not first.actions
    deltas: list[str] = []
    final: pb.ProcessResponse | None = None
    with correlation.bound(correlation.CallContext(correlation_id="corr-s-2", tenant_id="demo")):
        async for event in gateway.orchestrator.ProcessStream(
            pb.ProcessStreamRequest(request=_request("qwerty plugh xyzzy"))
        ):
            if event.HasField("final"):
                final = event.final
            else:
                assert final is None, "no delta after the final response"
                deltas.append(event.delta)
    assert final is not None
    assert "handoff_human" in [a.type for a in final.actions]
    assert final.response_text.endswith(NOTICE["es"])
    assert "".join(deltas) == final.response_text
    assert not deltas[-1].strip().startswith(final.response_text.strip()), "sent once, in parts"


def test_only_a_continuation_of_what_was_streamed_is_added() -> None:
    assert _unstreamed("Hola.\n\nNotice", "Hola.") == "\n\nNotice"
    assert _unstreamed("Hola.", "Hola.") == ""
    assert _unstreamed("Otra cosa", "Hola.") == ""
