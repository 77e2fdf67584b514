"""`POST /v2/agents/meta-agent/process`: one customer turn through the orchestrator; with
`Accept: text/event-stream`, the reply streamed as server-sent events (gateway/streaming.py)."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway import convert, streaming
from gateway.admin_convert import admin_call
from gateway.admin_models import invalid
from gateway.models import InputType, ProcessRequest, ProcessResponse
from gateway.problems import json_request_body, problem_responses
from gateway.requests import PayloadTooLarge, body_limit, json_body
from gateway.security import Caller
from gateway.settings import GatewaySettings

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["agents"])

EVENT_STREAM_RESPONSE = {
    "description": "The answer (application/json), or with `Accept: text/event-stream` the "
    'reply as server-sent events: `delta` events (`{"text": ...}`) whose texts add up to the '
    "responseText, then one `final` event (the ProcessResponse JSON); a failure midway ends "
    "the stream with an `error` event (a problem+json document) instead of the final.",
    "content": {streaming.EVENT_STREAM: {"schema": {"type": "string"}}},
}


@router.post(
    "/v2/agents/meta-agent/process",
    response_model=ProcessResponse,
    response_model_by_alias=True,
    openapi_extra={"requestBody": json_request_body(ProcessRequest)},
    responses={
        200: EVENT_STREAM_RESPONSE,
        **problem_responses(400, 401, 403, 404, 409, 413, 429, 503, 504),
    },
)
@body_limit(lambda settings: settings.max_body_bytes)
async def process(request: Request, principal: Caller) -> Response:
    settings: GatewaySettings = request.app.state.settings
    body = await json_body(request, ProcessRequest)
    if body.input.type is InputType.EVENT:
        # the orchestrator answers UNIMPLEMENTED (a 5xx) for events: refuse them as bad input
        raise invalid([(("input", "type"), "event input is not handled yet: send text or speech")])
    if body.input.text is not None and len(body.input.text) > settings.max_text_chars:
        raise PayloadTooLarge(f"input.text exceeds {settings.max_text_chars} characters")
    principal.require_tenant(body.tenant_id)
    grpc_request = convert.process_request(body, principal)
    if body.correlation_id:
        request.state.correlation_id = body.correlation_id
    cid = request.state.correlation_id
    stream = streaming.wants_event_stream(request.headers.get("Accept"))
    orchestrator = request.app.state.clients.orchestrator
    with admin_call(request, body.tenant_id, body.session_id):
        log.info(
            "process request",
            extra={
                "channel": body.channel.value,
                "inputType": body.input.type.value,
                "stream": stream,
            },
        )
        if stream:
            grpc_call, first = await streaming.open_process_stream(
                orchestrator, grpc_request, settings.process_timeout_seconds
            )
            return streaming.EventStreamResponse(
                streaming.process_events(grpc_call, first, cid), on_close=grpc_call.cancel
            )
        reply = await orchestrator.Process(grpc_request, timeout=settings.process_timeout_seconds)
    return JSONResponse(convert.process_response(reply, cid).model_dump(by_alias=True))
