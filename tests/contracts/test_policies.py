"""Every RPC of every service carries a policy naming who may call it."""

import pytest
from google.protobuf.descriptor import ServiceDescriptor
from metaagent.context.v1 import context_service_pb2
from metaagent.llm.v1 import llm_service_pb2
from metaagent.orchestrator.v1 import orchestrator_service_pb2
from metaagent.retrieval.v1 import retrieval_service_pb2
from metaagent.speech.v1 import speech_service_pb2

from services.mesh.identity import ALL_IDENTITIES
from services.mesh.policy import INFRASTRUCTURE, lookup, method_path, policies_for

SERVICES: list[ServiceDescriptor] = [
    context_service_pb2.DESCRIPTOR.services_by_name["ContextService"],
    retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
    llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
    speech_service_pb2.DESCRIPTOR.services_by_name["SpeechService"],
    orchestrator_service_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
]
TABLE = policies_for(SERVICES)


@pytest.mark.parametrize("path", [method_path(s, m.name) for s in SERVICES for m in s.methods])
def test_every_rpc_names_known_callers(path: str) -> None:
    policy = TABLE[path]
    assert policy.allowed_callers, f"{path} admits nobody"
    assert policy.allowed_callers <= set(ALL_IDENTITIES)
    assert "operator" not in policy.allowed_callers


def test_the_gateway_cannot_call_the_llm_service() -> None:
    for method in SERVICES[2].methods:
        assert not TABLE[method_path(SERVICES[2], method.name)].admits("gateway")


@pytest.mark.parametrize(
    ("path", "caller", "admitted"),
    [
        ("/metaagent.orchestrator.v1.OrchestratorService/Process", "gateway", True),
        ("/metaagent.orchestrator.v1.OrchestratorService/Process", "speech", True),
        ("/metaagent.orchestrator.v1.OrchestratorService/Process", "llm", False),
        ("/metaagent.llm.v1.LlmService/Generate", "orchestrator", True),
        ("/metaagent.context.v1.ContextService/CommitTurn", "orchestrator", True),
        ("/metaagent.context.v1.ContextService/CommitTurn", "gateway", False),
        ("/metaagent.context.v1.ContextService/PutTenant", "gateway", True),
        ("/metaagent.context.v1.ContextService/PutTenant", "orchestrator", False),
        ("/metaagent.retrieval.v1.RetrievalService/UpsertDocuments", "orchestrator", False),
    ],
)
def test_allow_lists(path: str, caller: str, admitted: bool) -> None:
    assert TABLE[path].admits(caller) is admitted


def test_an_rpc_without_a_policy_is_denied_and_health_is_open_to_the_mesh() -> None:
    assert lookup(TABLE, "/metaagent.llm.v1.LlmService/NoSuchMethod") is None
    assert lookup(TABLE, "/grpc.health.v1.Health/Check") is INFRASTRUCTURE
