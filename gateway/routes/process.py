"""`POST /v2/agents/meta-agent/process`: one customer turn through the orchestrator."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway import convert
from gateway.models import ProcessRequest, ProcessResponse
from gateway.problems import PROBLEM_RESPONSE
from gateway.requests import PayloadTooLarge, json_body
from gateway.security import Caller
from gateway.settings import GatewaySettings
from services.mesh import correlation

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["agents"])


@router.post(
    "/v2/agents/meta-agent/process",
    response_model=ProcessResponse,
    response_model_by_alias=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ProcessRequest.model_json_schema()}},
        }
    },
    responses={
        status: PROBLEM_RESPONSE for status in (400, 401, 403, 404, 409, 413, 429, 503, 504)
    },
)
async def process(request: Request, principal: Caller) -> JSONResponse:
    settings: GatewaySettings = request.app.state.settings
    body = await json_body(request, ProcessRequest, settings.max_body_bytes)
    if body.input.text is not None and len(body.input.text) > settings.max_text_chars:
        raise PayloadTooLarge(f"input.text exceeds {settings.max_text_chars} characters")
    principal.require_tenant(body.tenant_id)
    grpc_request = convert.process_request(body, principal)
    if body.correlation_id:
        request.state.correlation_id = body.correlation_id
    cid = request.state.correlation_id
    request.state.tenant_id, request.state.session_id = body.tenant_id, body.session_id
    call = correlation.CallContext(
        correlation_id=cid, tenant_id=body.tenant_id, session_id=body.session_id
    )
    with correlation.bound(call):
        log.info(
            "process request",
            extra={"channel": body.channel.value, "inputType": body.input.type.value},
        )
        reply = await request.app.state.clients.orchestrator.Process(
            grpc_request, timeout=settings.process_timeout_seconds
        )
    return JSONResponse(convert.process_response(reply, cid).model_dump(by_alias=True))
