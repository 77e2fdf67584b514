"""Health of every component: gRPC health checks over mTLS, and the gateway's /readyz."""

import asyncio
from typing import Any

import grpc
import httpx

from services.mesh import identity
from services.mesh.clients import open_channel, serving_status
from services.mesh.settings import MeshSettings


async def _grpc_status(settings: MeshSettings, component: str) -> dict[str, Any]:
    address = settings.address_of(component)
    row: dict[str, Any] = {"name": component, "address": address, "kind": "grpc"}
    try:
        channel = open_channel(settings, identity.OPERATOR, component)
    except FileNotFoundError as missing:
        return {**row, "status": "NO_CERTIFICATES", "healthy": False, "error": str(missing)}
    async with channel:
        try:
            status = await serving_status(channel)
            row.update(status=status, healthy=status == "SERVING")
        except grpc.aio.AioRpcError as error:
            row.update(status="UNREACHABLE", healthy=False, error=error.code().name)
    return row


async def _gateway_status(settings: MeshSettings) -> dict[str, Any]:
    url = settings.gateway_url
    row: dict[str, Any] = {"name": identity.GATEWAY, "address": url, "kind": "http"}
    try:
        async with httpx.AsyncClient(timeout=3.0) as client:
            reply = await client.get(f"{url}/readyz")
        ready = reply.status_code == 200
        row.update(status="SERVING" if ready else "NOT_SERVING", healthy=ready)
    except httpx.HTTPError as error:
        row.update(status="UNREACHABLE", healthy=False, error=type(error).__name__)
    return row


async def collect(settings: MeshSettings) -> dict[str, Any]:
    """One row per component and whether the whole mesh is healthy."""
    rows = await asyncio.gather(
        *(_grpc_status(settings, c) for c in identity.GRPC_SERVICES), _gateway_status(settings)
    )
    return {"components": list(rows), "healthy": all(r["healthy"] for r in rows)}
