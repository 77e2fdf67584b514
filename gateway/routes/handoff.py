"""`/v2/tenants/{tenantId}/handoff`: the human agents' WebSocket (DESIGN section 5, Escalation;
seed case C).

Authentication, in this order: the `Authorization: Bearer <jwt>` header of the handshake
(servers, CLIs); else, for browsers (which cannot set headers on a WebSocket), a subprotocol
entry `bearer.<jwt>` offered next to `metaagent.handoff.v1`:

    new WebSocket(url, ["metaagent.handoff.v1", "bearer." + token])

The gateway selects `metaagent.handoff.v1` (never echoing the token). There is no query
parameter: URLs end up in access logs and browser history. The token needs the role `agent` or
`tenant-admin` (platform-admin passes) and the path's tenant. A refusal accepts the handshake
and closes at once with 1008 (policy violation) and the reason.

Frames are JSON text, camelCase. The gateway sends:

    {"type": "ready", "tenantId", "agentId"}          the watch is registered
    {"type": "handoff", "handoff": HandoffOut}         a hand-over with the whole context
    {"type": "ack", "for": "reply", "correlationId", "turn": HumanTurnOut}
    {"type": "ack", "for": "ack", "correlationId", "eventId", "acknowledged"}
    {"type": "error", "correlationId", "problem": problem+json}    the socket stays open

and takes (models.AgentMessage):

    {"type": "reply", "sessionId", "text", "correlationId"?, "actions"?: [{"type", "params"}]}
    {"type": "ack", "eventId"}

A reply becomes OrchestratorService.SubmitHumanReply as the token's subject (its correlationId
is the idempotency key: a retry with the same one is stored once). A message over
`GATEWAY_MAX_WS_MESSAGE_BYTES`, a binary or malformed one gets an error frame.

Delivery is at least once. The hand-overs come from OrchestratorService.WatchHandoffs: each goes
to one connected agent of the tenant and stays in flight with that agent until it sends
`{"type": "ack", "eventId"}`. An agent who disconnects, even mid-delivery, ends the watch (the
gRPC stream is cancelled) and whatever it had not acknowledged goes back to the front of the
queue for the next agent, who may thus get a hand-over the first one saw: dedupe by eventId.
Nothing is lost while the orchestrator runs; its restart loses the queue (the sessions keep
their transcripts and escalated mark). If the orchestrator cannot be watched, the socket gets
an error frame and closes with 1013 (try again later) or 1011.
"""

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, Final

import grpc
from fastapi import APIRouter, Path, Request, WebSocket
from fastapi.responses import JSONResponse
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as pb
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway import convert
from gateway.auth import AuthError, Principal
from gateway.models import TENANT_PATTERN, AgentAck, AgentMessage, AgentReply
from gateway.problems import PROBLEM_RESPONSE, field_errors, problem
from gateway.security import authenticate_bearer
from gateway.settings import GatewaySettings
from gateway.streaming import problem_body
from services.mesh import correlation
from services.mesh.errors import MeshError

log = logging.getLogger("metaagent.gateway")
router = APIRouter(tags=["agents"])

PATH: Final = "/v2/tenants/{tenantId}/handoff"
SUBPROTOCOL: Final = "metaagent.handoff.v1"
TOKEN_PROTOCOL: Final = "bearer."  # noqa: S105 - the prefix of a subprotocol entry
POLICY_VIOLATION: Final = 1008
INTERNAL_ERROR: Final = 1011
TRY_AGAIN_LATER: Final = 1013
MAX_REASON_BYTES: Final = 123
WATCH_REGISTERED: Final = ("x-handoff-watch", "registered")
MESSAGES: TypeAdapter[AgentReply | AgentAck] = TypeAdapter(AgentMessage)


@router.get(
    PATH,
    summary="The human agents' hand-over WebSocket",
    description=__doc__,
    status_code=426,
    responses={
        101: {"description": "Switching Protocols: the WebSocket is open"},
        400: PROBLEM_RESPONSE,
        426: PROBLEM_RESPONSE,
    },
)
async def handoff_without_upgrade(
    request: Request, tenant_id: str = Path(alias="tenantId", pattern=TENANT_PATTERN)
) -> JSONResponse:
    """A plain HTTP request to the WebSocket's address: 426, it must upgrade."""
    return problem(
        426,
        "Upgrade Required",
        "this is a WebSocket endpoint: connect with a WebSocket client",
        correlation_id=request.state.correlation_id,
        headers={"Upgrade": "websocket"},
    )


@router.websocket(PATH)
async def handoff_socket(websocket: WebSocket) -> None:
    tenant_id = websocket.path_params["tenantId"]
    offered: list[str] = websocket.scope.get("subprotocols", [])
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    try:
        principal = await _authenticate(websocket, tenant_id, offered)
    except AuthError as error:
        log.info("hand-over socket refused: %s", error.title, extra={"status": error.status})
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(POLICY_VIOLATION, _reason(f"{error.title}: {error.detail}"))
        return
    await websocket.accept(subprotocol=subprotocol)
    await AgentConnection(websocket, principal, tenant_id).run()


async def _authenticate(websocket: WebSocket, tenant_id: str, offered: list[str]) -> Principal:
    if correlation.TENANT_PATTERN.match(tenant_id) is None:
        raise AuthError(403, "Forbidden", "the tenant id is malformed")
    authorization = websocket.headers.get("Authorization")
    if authorization is None:
        token = next((p for p in offered if p.startswith(TOKEN_PROTOCOL)), None)
        if token is not None:
            authorization = f"Bearer {token[len(TOKEN_PROTOCOL) :]}"
    principal = await authenticate_bearer(websocket.app, authorization)
    principal.require_role("agent", "tenant-admin")
    principal.require_tenant(tenant_id)
    return principal


def _reason(text: str) -> str:
    """A close reason within the 123 bytes a close frame allows."""
    encoded = text.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return text
    return encoded[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


class AgentConnection:
    """One connected human agent: hand-overs out, replies and acknowledgements in."""

    def __init__(self, websocket: WebSocket, principal: Principal, tenant_id: str) -> None:
        self._socket = websocket
        self._principal = principal
        self._tenant_id = tenant_id
        self._settings: GatewaySettings = websocket.app.state.settings
        self._orchestrator = websocket.app.state.clients.orchestrator
        self._correlation_id: str = websocket.scope.get("state", {}).get(
            "correlation_id", str(uuid.uuid4())
        )
        self._sending = asyncio.Lock()

    def _call(self, correlation_id: str, session_id: str = "") -> correlation.CallContext:
        return correlation.CallContext(
            correlation_id=correlation_id, tenant_id=self._tenant_id, session_id=session_id
        )

    async def run(self) -> None:
        """Serve until the agent leaves or the orchestrator cannot be watched."""
        with correlation.bound(self._call(self._correlation_id)):
            log.info("agent connected", extra={"agentId": self._principal.subject})
        watching = asyncio.create_task(self._forward_handoffs(), name="handoff-watch")
        receiving = asyncio.create_task(self._receive(), name="handoff-receive")
        try:
            done, _ = await asyncio.wait((watching, receiving), return_when=asyncio.FIRST_COMPLETED)
            if watching in done and not watching.cancelled():
                failure = watching.exception()
                if failure is not None:
                    await self._fail(failure)
            if receiving in done and not receiving.cancelled():
                broken = receiving.exception()
                if broken is not None and not isinstance(broken, WebSocketDisconnect | OSError):
                    with correlation.bound(self._call(self._correlation_id)):
                        log.error("hand-over socket failed", exc_info=broken)
        finally:
            for task in (watching, receiving):
                task.cancel()
            for task in (watching, receiving):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with correlation.bound(self._call(self._correlation_id)):
                log.info("agent disconnected", extra={"agentId": self._principal.subject})

    async def _forward_handoffs(self) -> None:
        """WatchHandoffs to the socket; watched again when its deadline passes."""
        ready = False
        while True:
            with correlation.bound(self._call(self._correlation_id)):
                call = self._orchestrator.WatchHandoffs(
                    pb.WatchHandoffsRequest(agent_id=self._principal.subject),
                    timeout=self._settings.handoff_watch_seconds,
                )
            try:
                headers = await call.initial_metadata()
                if WATCH_REGISTERED not in tuple(headers or ()):
                    await call.read()  # failed before watching: raises its status
                if not ready:
                    ready = True
                    await self._send(
                        {
                            "type": "ready",
                            "tenantId": self._tenant_id,
                            "agentId": self._principal.subject,
                        }
                    )
                while (message := await call.read()) is not grpc.aio.EOF:
                    handoff = convert.handoff_out(message.handoff).model_dump(by_alias=True)
                    await self._send({"type": "handoff", "handoff": handoff})
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            finally:
                call.cancel()  # ends the watch: the unacknowledged hand-overs are queued again

    async def _receive(self) -> None:
        while True:
            message = await self._socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            await self._handle(text, data)

    async def _handle(self, text: str | None, data: bytes | None) -> None:
        limit = self._settings.max_ws_message_bytes
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > limit:
            await self._error(413, "Payload Too Large", f"the message exceeds {limit} bytes")
            return
        if text is None:
            await self._error(400, "Bad Request", "send JSON text frames, not binary ones")
            return
        try:
            raw = json.loads(text)
        except ValueError:
            await self._error(400, "Bad Request", "the message is not valid JSON")
            return
        try:
            parsed = MESSAGES.validate_python(raw)
        except ValidationError as error:
            cid = raw.get("correlationId") if isinstance(raw, dict) else None
            await self._error(
                400,
                "Bad Request",
                "the message is not valid",
                correlation_id=cid if isinstance(cid, str) else None,
                extra={"errors": field_errors(error)},
            )
            return
        cid = parsed.correlation_id or str(uuid.uuid4())
        try:
            if isinstance(parsed, AgentReply):
                await self._reply(parsed, cid)
            else:
                await self._acknowledge(parsed, cid)
        except grpc.aio.AioRpcError as error:
            await self._send_problem(problem_body(MeshError.from_dependency(error), cid))
        except (WebSocketDisconnect, OSError):
            raise
        except Exception:
            with correlation.bound(self._call(cid)):
                log.exception("hand-over message failed")
            await self._error(500, "Internal Server Error", "internal error", correlation_id=cid)

    async def _reply(self, message: AgentReply, cid: str) -> None:
        request = convert.human_reply_request(message, self._principal.subject)
        with correlation.bound(self._call(cid, message.session_id)):
            stored = await self._orchestrator.SubmitHumanReply(request)
        turn = convert.human_turn_out(stored.turn).model_dump(by_alias=True)
        await self._send({"type": "ack", "for": "reply", "correlationId": cid, "turn": turn})

    async def _acknowledge(self, message: AgentAck, cid: str) -> None:
        with correlation.bound(self._call(cid)):
            answer = await self._orchestrator.AckHandoff(
                pb.AckHandoffRequest(event_id=message.event_id)
            )
        await self._send(
            {
                "type": "ack",
                "for": "ack",
                "correlationId": cid,
                "eventId": message.event_id,
                "acknowledged": answer.acknowledged,
            }
        )

    async def _error(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        correlation_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        cid = correlation_id or self._correlation_id
        body = json.loads(bytes(problem(status, title, detail, correlation_id=cid).body))
        await self._send_problem({**body, **(extra or {})})

    async def _send_problem(self, body: dict[str, Any]) -> None:
        await self._send({"type": "error", "correlationId": body["correlationId"], "problem": body})

    async def _fail(self, failure: BaseException) -> None:
        """The watch failed: say why, then close (1013 when retrying later may help: the
        orchestrator is down, restarting or slow)."""
        if isinstance(failure, WebSocketDisconnect | OSError):
            return
        if isinstance(failure, grpc.aio.AioRpcError):
            body = problem_body(MeshError.from_dependency(failure), self._correlation_id)
        else:
            with correlation.bound(self._call(self._correlation_id)):
                log.error("hand-over watch failed", exc_info=failure)
            body = json.loads(
                bytes(
                    problem(
                        500,
                        "Internal Server Error",
                        "internal error",
                        correlation_id=self._correlation_id,
                    ).body
                )
            )
        code = TRY_AGAIN_LATER if body["status"] in (499, 503, 504) else INTERNAL_ERROR
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await self._send_problem(body)
            await self._socket.close(code, _reason(str(body.get("detail", ""))))

    async def _send(self, frame: dict[str, Any]) -> None:
        async with self._sending:
            if self._socket.application_state != WebSocketState.DISCONNECTED:
                await self._socket.send_text(json.dumps(frame, ensure_ascii=False))
