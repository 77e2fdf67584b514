"""Typed async clients for the mesh's services over mTLS.

Each channel presents this component's certificate, checks that the server's certificate names
the service it meant to reach, adds correlation metadata and the propagated deadline to every
call, and retries UNAVAILABLE with exponential backoff (gRPC's own retry policy) on the RPCs
whose contract declares them idempotent.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from metaagent.context.v1 import context_service_pb2, context_service_pb2_grpc
from metaagent.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from metaagent.orchestrator.v1 import orchestrator_service_pb2, orchestrator_service_pb2_grpc
from metaagent.retrieval.v1 import retrieval_service_pb2, retrieval_service_pb2_grpc
from metaagent.speech.v1 import speech_service_pb2, speech_service_pb2_grpc

from services.mesh import identity
from services.mesh.outbound import OutboundChannel
from services.mesh.settings import MeshSettings
from services.mesh.tls import MeshTls

SERVICES: dict[str, ServiceDescriptor] = {
    identity.CONTEXT: context_service_pb2.DESCRIPTOR.services_by_name["ContextService"],
    identity.RETRIEVAL: retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
    identity.LLM: llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
    identity.SPEECH: speech_service_pb2.DESCRIPTOR.services_by_name["SpeechService"],
    identity.ORCHESTRATOR: orchestrator_service_pb2.DESCRIPTOR.services_by_name[
        "OrchestratorService"
    ],
}
"""The gRPC service each component serves."""

RETRYABLE_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


def retryable_methods(service: ServiceDescriptor | None) -> list[dict[str, str]]:
    """Service-config names of the RPCs safe to replay: those declaring an idempotency level."""
    names = [{"service": "grpc.health.v1.Health", "method": "Check"}]
    if service is not None:
        names += [
            {"service": service.full_name, "method": method.name}
            for method in service.methods
            if method.GetOptions().idempotency_level in RETRYABLE_LEVELS
        ]
    return names


def retry_service_config(attempts: int, service: ServiceDescriptor | None) -> str:
    """A gRPC service config retrying UNAVAILABLE, with jittered exponential backoff, on the
    idempotent RPCs of `service` only (`attempts` counts the first try; gRPC wants >= 2)."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": retryable_methods(service),
                    "retryPolicy": {
                        "maxAttempts": attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def open_channel(
    settings: MeshSettings, caller: str, target: str, *, address: str | None = None
) -> grpc.aio.Channel:
    """An mTLS channel from `caller` to the component `target`."""
    tls = MeshTls.load(settings.certs_dir, caller)
    options: list[tuple[str, str | int]] = [
        ("grpc.ssl_target_name_override", target),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if settings.grpc_retry_attempts > 1:
        options += [
            ("grpc.enable_retries", 1),
            (
                "grpc.service_config",
                retry_service_config(settings.grpc_retry_attempts, SERVICES.get(target)),
            ),
        ]
    else:
        options.append(("grpc.enable_retries", 0))
    channel = grpc.aio.secure_channel(
        address or settings.address_of(target), tls.channel_credentials(), options=options
    )
    return OutboundChannel(channel, settings.grpc_default_timeout_seconds)  # type: ignore[return-value]


class MeshClients:
    """Lazily opened channels from one component to the others, as typed stubs."""

    def __init__(self, settings: MeshSettings, caller: str) -> None:
        self._settings = settings
        self._caller = caller
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}

    def _stub(self, target: str, stub_class: Any) -> Any:
        """One stub per target, built on first use (building one per call is measurable)."""
        if target not in self._stubs:
            self._stubs[target] = stub_class(self.channel(target))
        return self._stubs[target]

    def channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            self._channels[target] = open_channel(self._settings, self._caller, target)
        return self._channels[target]

    @property
    def context(self) -> context_service_pb2_grpc.ContextServiceAsyncStub:
        stub: context_service_pb2_grpc.ContextServiceAsyncStub = self._stub(
            identity.CONTEXT, context_service_pb2_grpc.ContextServiceStub
        )
        return stub

    @property
    def retrieval(self) -> retrieval_service_pb2_grpc.RetrievalServiceAsyncStub:
        stub: retrieval_service_pb2_grpc.RetrievalServiceAsyncStub = self._stub(
            identity.RETRIEVAL, retrieval_service_pb2_grpc.RetrievalServiceStub
        )
        return stub

    @property
    def llm(self) -> llm_service_pb2_grpc.LlmServiceAsyncStub:
        stub: llm_service_pb2_grpc.LlmServiceAsyncStub = self._stub(
            identity.LLM, llm_service_pb2_grpc.LlmServiceStub
        )
        return stub

    @property
    def speech(self) -> speech_service_pb2_grpc.SpeechServiceAsyncStub:
        stub: speech_service_pb2_grpc.SpeechServiceAsyncStub = self._stub(
            identity.SPEECH, speech_service_pb2_grpc.SpeechServiceStub
        )
        return stub

    @property
    def orchestrator(self) -> orchestrator_service_pb2_grpc.OrchestratorServiceAsyncStub:
        stub: orchestrator_service_pb2_grpc.OrchestratorServiceAsyncStub = self._stub(
            identity.ORCHESTRATOR, orchestrator_service_pb2_grpc.OrchestratorServiceStub
        )
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()


async def serving_status(channel: grpc.aio.Channel, service: str = "") -> str:
    """The health status name (`SERVING`, `NOT_SERVING`, ...) of `service` on `channel`."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def check_serving(channel: grpc.aio.Channel, service: str = "") -> None:
    """Return when `service` on `channel` is SERVING; raise ConnectionError otherwise."""
    status = await serving_status(channel, service)
    if status != "SERVING":
        raise ConnectionError(f"{service or 'server'} is {status}")
