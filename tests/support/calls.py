"""Small helpers to call mesh services the way a peer would."""

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from metaagent.common.v1 import tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb

from services.mesh.errors import MeshError

METADATA = (("x-correlation-id", "corr-test-1"), ("x-tenant-id", "demo"))


async def refusal(call: Awaitable[Any]) -> MeshError:
    """The error a call that must fail ends with, its status details decoded."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return MeshError.from_rpc_error(refused.value)


def demo_prompt(text: str = "hola") -> llm_pb.GenerateRequest:
    return llm_pb.GenerateRequest(
        prompt=llm_pb.Prompt(
            user_text=text, tenant=tenant_pb2.TenantConfig(tenant_id="demo", language="es")
        )
    )
