"""Who may call what: the `rpc_policy` option of every RPC, read from the descriptors."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor
from metaagent.common.v1 import policy_pb2

INFRASTRUCTURE_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
"""Served to any verified mesh identity, with no correlation metadata required."""


@dataclass(frozen=True)
class MethodPolicy:
    """The callers allowed on one RPC and what metadata it needs."""

    allowed_callers: frozenset[str]
    tenant_optional: bool = False
    infrastructure: bool = False
    polled: bool = False
    """Called on a timer (`RpcPolicy.polled`): a successful call is logged at DEBUG."""

    def admits(self, caller: str) -> bool:
        return self.infrastructure or caller in self.allowed_callers


INFRASTRUCTURE = MethodPolicy(frozenset(), tenant_optional=True, infrastructure=True)


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    """The `/package.Service/Method` path gRPC uses on the wire."""
    return f"/{service.full_name}/{method_name}"


def policies_for(services: Iterable[ServiceDescriptor]) -> dict[str, MethodPolicy]:
    """Policies of every RPC of `services`; an RPC without the option gets none (denied)."""
    table: dict[str, MethodPolicy] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(policy_pb2.rpc_policy):
                continue
            policy = options.Extensions[policy_pb2.rpc_policy]
            path = method_path(service, method.name)
            table[path] = MethodPolicy(
                allowed_callers=frozenset(policy.allowed_callers),
                tenant_optional=policy.tenant_optional,
                polled=policy.polled,
            )
    return table


def lookup(table: Mapping[str, MethodPolicy], method: str) -> MethodPolicy | None:
    """The policy for a wire path; infrastructure services have a fixed one."""
    service = method.lstrip("/").split("/", 1)[0]
    if service in INFRASTRUCTURE_SERVICES:
        return INFRASTRUCTURE
    return table.get(method)
