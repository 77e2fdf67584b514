"""`polled` comes from the `rpc_policy` option of the contract, like the callers do."""

from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
from metaagent.common.v1 import policy_pb2
from metaagent.context.v1 import context_service_pb2

from services.mesh.policy import policies_for


def _probe_service(**polled: bool) -> object:
    """A service whose RPCs (named by the keywords) declare `polled` as given."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, empty_pb2, policy_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="probe/v1/probe.proto",
        package="probe.v1",
        syntax="proto3",
        dependency=[empty_pb2.DESCRIPTOR.name, policy_pb2.DESCRIPTOR.name],
    )
    service = file.service.add(name="Probe")
    for name, flag in polled.items():
        method = service.method.add(
            name=name,
            input_type=".google.protobuf.Empty",
            output_type=".google.protobuf.Empty",
        )
        option = method.options.Extensions[policy_pb2.rpc_policy]
        option.allowed_callers.append("orchestrator")
        option.polled = flag
    pool.Add(file)
    return pool.FindServiceByName("probe.v1.Probe")


def test_polled_is_read_from_the_option() -> None:
    table = policies_for([_probe_service(Sweep=True, Write=False)])  # type: ignore[list-item]
    assert table["/probe.v1.Probe/Sweep"].polled
    assert not table["/probe.v1.Probe/Write"].polled
    assert table["/probe.v1.Probe/Sweep"].admits("orchestrator")


def test_the_relay_polls_are_polled_and_writes_are_not() -> None:
    service = context_service_pb2.DESCRIPTOR.services_by_name["ContextService"]
    table = policies_for([service])
    prefix = "/metaagent.context.v1.ContextService/"
    assert table[prefix + "ListOutbox"].polled
    assert table[prefix + "ClaimHandoffs"].polled
    assert not table[prefix + "MarkOutbox"].polled
    assert not table[prefix + "CommitTurn"].polled
