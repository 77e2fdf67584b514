"""Correlation metadata: validated on the way in, bound to logs, forwarded on the way out."""

import io
import json
import logging
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.llm.v1 import llm_service_pb2_grpc
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as orch_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

from services.mesh import correlation
from services.mesh.clients import MeshClients, open_channel
from services.mesh.errors import STATUS_DETAILS_KEY
from services.mesh.logs import JsonFormatter
from services.mesh.settings import MeshSettings
from tests.support.calls import demo_prompt
from tests.support.servers import llm_binding, orchestrator_binding, running


class RecordingLlm(llm_service_pb2_grpc.LlmServiceServicer):
    """Remembers the call context and raw metadata each call arrived with."""

    def __init__(self) -> None:
        self.calls: list[tuple[correlation.CallContext, dict[str, Any]]] = []

    async def Generate(
        self, request: llm_pb.GenerateRequest, context: Any
    ) -> llm_pb.GenerateResponse:
        self.calls.append((correlation.current(), dict(context.invocation_metadata())))
        logging.getLogger("test.llm").info("generating")
        return llm_pb.GenerateResponse(generation=llm_pb.Generation(reply_text="ok"))


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = status_pb2.Status.FromString(dict(error.trailing_metadata())[STATUS_DETAILS_KEY])
    found = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), {"x-correlation-id": "is required", "x-tenant-id": "is required"}),
        ((("x-tenant-id", "demo"),), {"x-correlation-id": "is required"}),
        ((("x-correlation-id", "c-1"),), {"x-tenant-id": "is required"}),
        (
            (("x-correlation-id", "has spaces"), ("x-tenant-id", "demo")),
            {"x-correlation-id": "must be 1-128 of [A-Za-z0-9._:-]"},
        ),
        (
            (("x-correlation-id", "c-1"), ("x-tenant-id", "../etc")),
            {"x-tenant-id": "must be 1-64 of [A-Za-z0-9_-]"},
        ),
        (
            (("x-correlation-id", "c" * 129), ("x-tenant-id", "demo")),
            {"x-correlation-id": "must be 1-128 of [A-Za-z0-9._:-]"},
        ),
        (
            (("x-correlation-id", "c-1"), ("x-tenant-id", "demo"), ("x-session-id", "a b")),
            {"x-session-id": "must be 1-128 of [A-Za-z0-9._:-]"},
        ),
    ],
)
async def test_missing_or_malformed_metadata_is_invalid_argument_with_field_violations(
    settings: MeshSettings, metadata: tuple[tuple[str, str], ...], expected: dict[str, str]
) -> None:
    llm = RecordingLlm()
    async with running("llm", settings, [llm_binding(llm)]) as (_, address):
        client = MeshSettings(state_dir=settings.state_dir, llm_addr=address)
        async with open_channel(client, "orchestrator", "llm") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await llm_service_pb2_grpc.LlmServiceStub(channel).Generate(
                    demo_prompt(), metadata=metadata
                )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(refused.value) == expected
    assert "Traceback" not in (refused.value.details() or "")
    assert llm.calls == [], "the servicer must not run for a refused call"


async def test_ids_reach_the_servicer_and_every_log_line(settings: MeshSettings) -> None:
    llm = RecordingLlm()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("llm"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        async with running("llm", settings, [llm_binding(llm)]) as (_, address):
            client = MeshSettings(state_dir=settings.state_dir, llm_addr=address)
            call = correlation.CallContext(
                correlation_id="corr-42", tenant_id="demo", session_id="s-9"
            )
            with correlation.bound(call):
                clients = MeshClients(client, "orchestrator")
                await clients.llm.Generate(demo_prompt())
                await clients.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    seen, raw = llm.calls[0]
    assert (seen.correlation_id, seen.tenant_id, seen.session_id) == ("corr-42", "demo", "s-9")
    assert seen.caller == "orchestrator"
    assert raw["x-correlation-id"] == "corr-42"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    call_lines = [line for line in lines if line["logger"] in ("test.llm", "metaagent.rpc")]
    assert {line["logger"] for line in call_lines} == {"test.llm", "metaagent.rpc"}
    for line in call_lines:
        assert (line["correlationId"], line["tenantId"], line["sessionId"]) == (
            "corr-42",
            "demo",
            "s-9",
        )


class ForwardingOrchestrator(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
    """Calls the LLM service from inside a Process call, without touching metadata."""

    def __init__(self, clients: MeshClients) -> None:
        self.clients = clients

    async def Process(
        self, request: orch_pb.ProcessRequest, context: Any
    ) -> orch_pb.ProcessResponse:
        reply = await self.clients.llm.Generate(demo_prompt())
        return orch_pb.ProcessResponse(response_text=reply.generation.reply_text)


async def test_inbound_ids_are_forwarded_to_downstream_calls(settings: MeshSettings) -> None:
    llm = RecordingLlm()
    async with running("llm", settings, [llm_binding(llm)]) as (_, llm_address):
        inner = MeshSettings(state_dir=settings.state_dir, llm_addr=llm_address)
        clients = MeshClients(inner, "orchestrator")
        front = ForwardingOrchestrator(clients)
        async with running("orchestrator", settings, [orchestrator_binding(front)]) as (_, address):
            outer = MeshSettings(state_dir=settings.state_dir, orchestrator_addr=address)
            async with open_channel(outer, "gateway", "orchestrator") as channel:
                await orchestrator_service_pb2_grpc.OrchestratorServiceStub(channel).Process(
                    orch_pb.ProcessRequest(),
                    metadata=(
                        ("x-correlation-id", "corr-fwd"),
                        ("x-tenant-id", "acme"),
                        ("x-session-id", "sess-7"),
                        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                    ),
                )
        await clients.close()
    _, raw = llm.calls[0]
    assert raw["x-correlation-id"] == "corr-fwd"
    assert raw["x-tenant-id"] == "acme"
    assert raw["x-session-id"] == "sess-7"
    assert raw["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
