"""Small helpers to call mesh services the way a peer would."""

from metaagent.common.v1 import tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb

METADATA = (("x-correlation-id", "corr-test-1"), ("x-tenant-id", "demo"))


def demo_prompt(text: str = "hola") -> llm_pb.GenerateRequest:
    return llm_pb.GenerateRequest(
        prompt=llm_pb.Prompt(
            user_text=text, tenant=tenant_pb2.TenantConfig(tenant_id="demo", language="es")
        )
    )
