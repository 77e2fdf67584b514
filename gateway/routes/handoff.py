"""`/v2/tenants/{tenantId}/handoff`: the human agents' WebSocket (DESIGN section 5, Escalation;
seed case C).

Authentication, in this order: the `Authorization: Bearer <jwt>` header of the handshake
(servers, CLIs); else, for browsers (which cannot set headers on a WebSocket), a subprotocol
entry `bearer.<jwt>` offered next to `metaagent.handoff.v1`:

    new WebSocket(url, ["metaagent.handoff.v1", "bearer." + token])

The gateway selects `metaagent.handoff.v1` (never echoing the token). There is no query
parameter: URLs end up in access logs and browser history. The token needs the role `agent` or
`tenant-admin` (platform-admin passes) and the path's tenant; opening a socket counts against the
gateway's rate limits (gateway/ratelimit.py) like a request, and one agent keeps at most
`GATEWAY_MAX_HANDOFF_SOCKETS_PER_AGENT` (default 4) sockets open on a gateway replica. A refusal
accepts the handshake and closes at once with 1008 (policy violation) and the reason.

The token is checked again for as long as the socket lives: when its `exp` passes (with
`JWT_LEEWAY_SECONDS`, as for requests) the socket closes with 1008 ("Unauthorized: the token has
expired"); connect again with a fresh one.

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
is the idempotency key: a retry with the same one is stored once; another reply with a used
one gets a 409 error frame) and counts against the rate limits (a 429 error frame past them,
with `retryAfter` seconds). A message over `GATEWAY_MAX_WS_MESSAGE_BYTES`, a binary or
malformed one (nested too deep included) gets an error frame.

Delivery is at least once. The hand-overs come from OrchestratorService.WatchHandoffs: each goes
to one connected agent of the tenant and stays in flight with that agent's socket until it sends
`{"type": "ack", "eventId"}` (only that agent may acknowledge it). The socket watches again,
under the same connection id, each time a watch reaches `GATEWAY_HANDOFF_WATCH_SECONDS`: what it
had not acknowledged stays its own across the re-watch, and a socket never sends one hand-over
twice. An agent who disconnects, even mid-delivery, ends the watch (the gRPC stream is
cancelled) and whatever it had not acknowledged goes back to the front of the queue for the next
agent, who may thus get a hand-over the first one saw: dedupe by eventId.
Nothing is lost while the orchestrator runs; its restart loses the queue (the sessions keep
their transcripts and escalated mark). If the orchestrator cannot be watched, the socket gets
an error frame and closes with 1013 (try again later) or 1011.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter, OrderedDict
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
from gateway.problems import (
    PROBLEM_RESPONSE,
    field_errors,
    mesh_problem,
    problem,
    problem_document,
)
from gateway.security import authenticate_bearer, open_security
from gateway.settings import GatewaySettings
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
"""The initial metadata of a watch the orchestrator has registered (the wire value of
services/orchestrator/servicer.py's, which the gateway does not import)."""
FORWARDED_MEMORY: Final = 10_000
"""Hand-over ids a socket remembers having sent (it never sends one twice)."""
EXPIRED_REASON: Final = "Unauthorized: the token has expired"
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
        await open_security(websocket.app).limiter.check(principal)
        agent = _claim_socket(websocket, principal)
    except AuthError as error:
        log.info("hand-over socket refused: %s", error.title, extra={"status": error.status})
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(POLICY_VIOLATION, _reason(f"{error.title}: {error.detail}"))
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
        await AgentConnection(websocket, principal, tenant_id).run()
    finally:
        _release_socket(websocket, agent)


def _open_sockets(websocket: WebSocket) -> Counter[tuple[str, str, str]]:
    """The hand-over sockets open on this gateway replica, per agent."""
    state = websocket.app.state
    sockets: Counter[tuple[str, str, str]] | None = getattr(state, "handoff_sockets", None)
    if sockets is None:
        sockets = state.handoff_sockets = Counter()
    return sockets


def _claim_socket(websocket: WebSocket, principal: Principal) -> tuple[str, str, str]:
    """Count one more socket for the agent; AuthError(429) past the per-agent cap."""
    settings: GatewaySettings = websocket.app.state.settings
    limit = settings.max_handoff_sockets_per_agent
    agent = (principal.tenant_id, principal.credential, principal.subject)
    sockets = _open_sockets(websocket)
    if sockets[agent] >= limit:
        raise AuthError(
            429, "Too many sockets", f"an agent may keep {limit} hand-over sockets open"
        )
    sockets[agent] += 1
    return agent


def _release_socket(websocket: WebSocket, agent: tuple[str, str, str]) -> None:
    sockets = _open_sockets(websocket)
    sockets[agent] -= 1
    if sockets[agent] <= 0:
        del sockets[agent]


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
        self._connection_id = uuid.uuid4().hex
        """Names this socket to the orchestrator on every watch (its hand-overs in flight
        stay its own across re-watches) and acknowledgement."""
        self._forwarded: OrderedDict[str, None] = OrderedDict()
        """Ids of the hand-overs this socket has sent (the latest FORWARDED_MEMORY)."""

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
        expiring = asyncio.create_task(self._expire(), name="handoff-token-expiry")
        try:
            done, _ = await asyncio.wait(
                (watching, receiving, expiring), return_when=asyncio.FIRST_COMPLETED
            )
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
            for task in (watching, receiving, expiring):
                task.cancel()
            for task in (watching, receiving, expiring):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with correlation.bound(self._call(self._correlation_id)):
                log.info("agent disconnected", extra={"agentId": self._principal.subject})

    def _token_left(self) -> float | None:
        """Seconds before the token stops being accepted (its `exp` plus the leeway, as for
        requests); None when it has no expiry."""
        expires_at = self._principal.expires_at
        if expires_at is None:
            return None
        return expires_at + self._settings.jwt_leeway_seconds - time.time()

    def _token_expired(self) -> bool:
        left = self._token_left()
        return left is not None and left <= 0

    async def _expire(self) -> None:
        """Close the socket (1008) once the token expires; without an expiry, wait to be
        cancelled."""
        left = self._token_left()
        if left is None:
            await asyncio.Future()
            return
        await asyncio.sleep(max(left, 0.0) + 0.01)  # `exp` is in whole seconds: past it
        await self._close_expired()

    async def _close_expired(self) -> None:
        with correlation.bound(self._call(self._correlation_id)):
            log.info("hand-over socket closed: the token expired")
        await self._close(POLICY_VIOLATION, EXPIRED_REASON)

    async def _close(self, code: int, reason: str) -> None:
        async with self._sending:
            if self._socket.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                    await self._socket.close(code, _reason(reason))

    async def _forward_handoffs(self) -> None:
        """WatchHandoffs to the socket; watched again when its deadline passes (while the
        token holds), under the socket's connection id."""
        ready = False
        while True:
            if self._token_expired():
                await self._close_expired()
                return
            with correlation.bound(self._call(self._correlation_id)):
                call = self._orchestrator.WatchHandoffs(
                    pb.WatchHandoffsRequest(
                        agent_id=self._principal.subject, connection_id=self._connection_id
                    ),
                    timeout=self._settings.handoff_watch_seconds,
                )
            try:
                headers = await call.initial_metadata()
                first = None
                if WATCH_REGISTERED not in tuple(headers or ()):
                    # no registration header: a failed watch raises its status here; a healthy
                    # one (an orchestrator that does not send the header) gives its first
                    # hand-over, which is forwarded below, never dropped
                    first = await call.read()
                    if first is grpc.aio.EOF:
                        continue
                if not ready:
                    ready = True
                    await self._send(
                        {
                            "type": "ready",
                            "tenantId": self._tenant_id,
                            "agentId": self._principal.subject,
                        }
                    )
                if first is not None:
                    await self._forward(first)
                while (message := await call.read()) is not grpc.aio.EOF:
                    await self._forward(message)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            finally:
                # after the deadline a no-op (the socket's hand-overs stay reserved for its next
                # watch); otherwise it ends the watch and the orchestrator queues them again
                call.cancel()

    async def _forward(self, message: pb.WatchHandoffsResponse) -> None:
        """Send a hand-over to the socket, unless the socket sent it already (a re-watch
        delivers the socket's unacknowledged hand-overs again)."""
        event_id = message.handoff.event_id
        if event_id in self._forwarded:
            return
        self._forwarded[event_id] = None
        while len(self._forwarded) > FORWARDED_MEMORY:
            self._forwarded.popitem(last=False)
        handoff = convert.handoff_out(message.handoff).model_dump(by_alias=True)
        await self._send({"type": "handoff", "handoff": handoff})

    async def _receive(self) -> None:
        while True:
            message = await self._socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if self._token_expired():
                await self._close_expired()
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
        except RecursionError:
            await self._error(400, "Bad Request", "the message is nested too deeply")
            return
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
                try:
                    await open_security(self._socket.app).limiter.check(self._principal)
                except AuthError as refused:
                    retry_after = (refused.headers or {}).get("Retry-After")
                    await self._error(
                        refused.status,
                        refused.title,
                        refused.detail,
                        correlation_id=cid,
                        extra={"retryAfter": int(retry_after)} if retry_after else None,
                    )
                    return
                await self._reply(parsed, cid)
            else:
                await self._acknowledge(parsed, cid)
        except grpc.aio.AioRpcError as error:
            await self._send_problem(mesh_problem(MeshError.from_dependency(error), cid)[0])
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
                pb.AckHandoffRequest(
                    event_id=message.event_id,
                    agent_id=self._principal.subject,
                    connection_id=self._connection_id,
                )
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
        await self._send_problem(
            problem_document(status, title, detail, correlation_id=cid, extra=extra)
        )

    async def _send_problem(self, body: dict[str, Any]) -> None:
        await self._send({"type": "error", "correlationId": body["correlationId"], "problem": body})

    async def _fail(self, failure: BaseException) -> None:
        """The watch failed: say why, then close (1013 when retrying later may help: the
        orchestrator is down, restarting or slow)."""
        if isinstance(failure, WebSocketDisconnect | OSError):
            return
        if isinstance(failure, grpc.aio.AioRpcError):
            body, _ = mesh_problem(MeshError.from_dependency(failure), self._correlation_id)
        else:
            with correlation.bound(self._call(self._correlation_id)):
                log.error("hand-over watch failed", exc_info=failure)
            body = problem_document(
                500, "Internal Server Error", "internal error", correlation_id=self._correlation_id
            )
        code = TRY_AGAIN_LATER if body["status"] in (499, 503, 504) else INTERNAL_ERROR
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await self._send_problem(body)
            await self._socket.close(code, _reason(str(body.get("detail", ""))))

    async def _send(self, frame: dict[str, Any]) -> None:
        async with self._sending:
            if self._socket.application_state != WebSocketState.DISCONNECTED:
                await self._socket.send_text(json.dumps(frame, ensure_ascii=False))
