"""Liveness and readiness."""

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.mesh import identity
from services.mesh.clients import check_serving

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    try:
        await check_serving(request.app.state.clients.channel(identity.ORCHESTRATOR))
    except (ConnectionError, grpc.aio.AioRpcError):
        return JSONResponse({"status": "not ready"}, 503)
    return JSONResponse({"status": "ready"})
