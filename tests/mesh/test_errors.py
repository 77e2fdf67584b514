"""Errors keep their canonical code and details across hops; bugs never leak a stack trace."""

import logging
from typing import Any

import grpc
import pytest
from metaagent.llm.v1 import llm_service_pb2 as llm_pb

from services.mesh.errors import (
    FieldViolation,
    MeshError,
    invalid_argument,
    permission_denied,
    unavailable,
)
from services.mesh.settings import MeshSettings
from tests.support.chain import chain


def _raising(error: Exception) -> Any:
    async def back(context: Any) -> llm_pb.GenerateResponse:
        raise error

    return back


async def _failure(settings: MeshSettings, error: Exception, **kwargs: Any) -> MeshError:
    async with chain(settings, _raising(error), **kwargs) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await mesh.process()
    return MeshError.from_rpc_error(failed.value)


async def test_unavailable_travels_upstream_with_its_retry_advice(settings: MeshSettings) -> None:
    error = await _failure(settings, unavailable("store down", retry_after=2.5), retry_attempts=1)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.retry_after == pytest.approx(2.5)
    assert error.message == "store down"


async def test_invalid_argument_keeps_its_field_violations(settings: MeshSettings) -> None:
    error = await _failure(settings, invalid_argument(FieldViolation("prompt.user_text", "empty")))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations == (FieldViolation("prompt.user_text", "empty"),)


async def test_a_permission_problem_between_services_becomes_internal(
    settings: MeshSettings,
) -> None:
    error = await _failure(settings, permission_denied("not you"))
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.reason == "DEPENDENCY_FAILED"
    assert error.metadata == {"dependencyCode": "PERMISSION_DENIED"}
    assert "not you" not in error.message


async def test_an_unexpected_exception_is_internal_with_the_correlation_id_and_no_trace(
    settings: MeshSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with chain(settings, _raising(KeyError("secret-internal-detail"))) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await mesh.process()
    back_error = MeshError.from_rpc_error(failed.value)
    assert back_error.code == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in failed.value.details()
    assert "Traceback" not in failed.value.details()
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(r.exc_info and "secret-internal-detail" in str(r.exc_info[1]) for r in logged)


async def test_an_unimplemented_rpc_says_so(settings: MeshSettings) -> None:
    from metaagent.llm.v1 import llm_service_pb2_grpc

    from services.mesh.clients import open_channel
    from tests.support.calls import METADATA, demo_prompt
    from tests.support.servers import llm_binding, running

    class Bare(llm_service_pb2_grpc.LlmServiceServicer):
        pass

    async with running("llm", settings, [llm_binding(Bare())]) as (_, address):
        client = MeshSettings(state_dir=settings.state_dir, llm_addr=address)
        async with open_channel(client, "orchestrator", "llm") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await llm_service_pb2_grpc.LlmServiceStub(channel).Generate(
                    demo_prompt(), metadata=METADATA
                )
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unavailable_is_retried_with_backoff_until_it_succeeds(
    settings: MeshSettings,
) -> None:
    async def flaky(context: Any) -> llm_pb.GenerateResponse:
        if mesh.back.calls < 3:
            raise unavailable("warming up", retry_after=0.01)
        return llm_pb.GenerateResponse(generation=llm_pb.Generation(reply_text="third time"))

    async with chain(settings, flaky, retry_attempts=4) as mesh:
        reply = await mesh.process()
    assert reply.response_text == "third time"
    assert mesh.back.calls == 3


async def test_other_failures_are_not_retried(settings: MeshSettings) -> None:
    async with chain(settings, _raising(invalid_argument(FieldViolation("x", "bad")))) as mesh:
        with pytest.raises(grpc.aio.AioRpcError):
            await mesh.process()
        assert mesh.back.calls == 1


def test_only_rpcs_declared_idempotent_are_retried() -> None:
    from services.mesh.clients import SERVICES, retryable_methods

    context = {name["method"] for name in retryable_methods(SERVICES["context"])[1:]}
    assert {"GetTenant", "GetSession", "GetOrCreateSession"} <= context
    assert not {"CommitTurn", "AppendAudit", "MarkOutbox", "EraseUser"} & context
    orchestrator = {name["method"] for name in retryable_methods(SERVICES["orchestrator"])}
    assert orchestrator == {"Check", "AckHandoff"}, "a turn is never replayed by gRPC itself"


async def test_a_write_that_fails_unavailable_is_not_replayed(settings: MeshSettings) -> None:
    from metaagent.orchestrator.v1 import orchestrator_service_pb2 as orch_pb
    from metaagent.orchestrator.v1 import orchestrator_service_pb2_grpc

    from services.mesh.clients import open_channel
    from tests.support.calls import METADATA
    from tests.support.servers import orchestrator_binding, running

    class Unavailable(orchestrator_service_pb2_grpc.OrchestratorServiceServicer):
        calls = 0

        async def Process(self, request: Any, context: Any) -> orch_pb.ProcessResponse:
            Unavailable.calls += 1
            raise unavailable("committed, then the connection dropped")

    async with running("orchestrator", settings, [orchestrator_binding(Unavailable())]) as (_, a):
        client = MeshSettings(
            state_dir=settings.state_dir, orchestrator_addr=a, grpc_retry_attempts=4
        )
        async with open_channel(client, "gateway", "orchestrator") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await orchestrator_service_pb2_grpc.OrchestratorServiceStub(channel).Process(
                    orch_pb.ProcessRequest(), metadata=METADATA
                )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert Unavailable.calls == 1


async def test_a_servicers_own_abort_keeps_its_code_in_the_reply_and_the_log(
    settings: MeshSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="metaagent.rpc")

    async def aborting(context: Any) -> llm_pb.GenerateResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort returns only by raising")

    async with chain(settings, aborting) as mesh:
        with pytest.raises(grpc.aio.AioRpcError):
            await mesh.process()
    lines = [r for r in caplog.records if "LlmService/Generate" in r.getMessage()]
    assert [(r.code, r.reason) for r in lines] == [("NOT_FOUND", "ABORTED_BY_SERVICER")]
