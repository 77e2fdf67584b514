"""A scriptable OpenAI-compatible HTTP server on loopback, for testing clients at the wire.

    async with OpenAIServer(dimension=64) as server:
        server.script(rate_limited(retry_after=1), server_error(503))
        client = AsyncOpenAI(base_url=server.v1_url, api_key=server.api_key, max_retries=0)

Routes: `POST /v1/embeddings` (OpenAI: `Authorization: Bearer <key>`) and
`POST /openai/deployments/{deployment}/embeddings` (Azure: `api-version` query parameter and an
`api-key` header or an Entra `Authorization: Bearer <token>`). Wrong or missing credentials get
401 without consuming a scripted behaviour.

Each request takes the next behaviour from one FIFO queue (`script`); with the queue empty it is
answered normally. Embeddings are deterministic (`vector_for`: a unit vector seeded by the text's
SHA-256) of the requested `dimensions` or the server's default, with `usage` (one token per word)
and an `index` per item, reversed when `shuffle` is set. `encoding_format` "float" and "base64"
(little-endian float32, what the openai SDK asks for unless told otherwise) are both honoured;
`honour_encoding_format=False` imitates servers that always answer floats.

Every request is recorded (path, query, headers with credentials redacted, JSON body), and the
server tracks how many requests it is serving at once (`max_in_flight`). To serve chat
completions later, add a route whose handler takes `self._next()` and adds its own behaviours
(reply text, SSE chunks) beside the generic faults below.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REDACTED = "<redacted>"
TEST_API_KEY = "test-key"
TEST_ENTRA_TOKEN = "entra-token"
SECRET_HEADERS = frozenset({"api-key", "authorization"})


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names; `api-key` and `authorization` values are redacted (scheme kept)."""
    body: Any


@dataclass(frozen=True)
class Fail:
    """Answer with an HTTP error and an OpenAI-style error body."""

    status: int
    message: str = "scripted failure"
    type: str = "server_error"
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` (cut short when the server stops), then answer normally."""

    seconds: float


@dataclass(frozen=True)
class WrongDimension:
    """Answer normally but with vectors of `dimension` components."""

    dimension: int


@dataclass(frozen=True)
class WrongCount:
    """Answer normally but with `delta` embeddings more (or fewer) than inputs."""

    delta: int = -1


Behaviour = Fail | Delay | WrongDimension | WrongCount


def rate_limited(retry_after: float | None = None, retry_after_ms: int | None = None) -> Fail:
    """429, with `Retry-After` (seconds) and/or `retry-after-ms` as Azure sends them."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return Fail(
        429,
        "Requests to the Embeddings_Create Operation have exceeded the rate limit.",
        "rate_limit_exceeded",
        "429",
        headers=headers,
    )


def server_error(status: int = 500) -> Fail:
    return Fail(status, "The server had an error while processing your request.")


def bad_request(
    message: str = "This model's maximum context length is 8192 tokens.",
    *,
    param: str | None = "input",
    code: str | None = "context_length_exceeded",
) -> Fail:
    return Fail(400, message, "invalid_request_error", code, param)


def unauthorized() -> Fail:
    return Fail(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def slow(seconds: float) -> Delay:
    return Delay(seconds)


def wrong_dimension(dimension: int) -> WrongDimension:
    return WrongDimension(dimension)


def wrong_count(delta: int = -1) -> WrongCount:
    return WrongCount(delta)


def vector_for(text: str, dimension: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The server's embedding of `text`: a float32 unit vector seeded by the text's SHA-256."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimension)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def error_body(message: str, type_: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 and a free port, in the test's event loop."""

    def __init__(
        self,
        *,
        api_key: str = TEST_API_KEY,
        entra_token: str = TEST_ENTRA_TOKEN,
        dimension: int = 1536,
        shuffle: bool = False,
        latency: float = 0.0,
        honour_encoding_format: bool = True,
    ) -> None:
        self.api_key = api_key
        self.entra_token = entra_token
        self.dimension = dimension
        self.shuffle = shuffle
        self.latency = latency
        """Seconds every request waits before it is answered (concurrency tests)."""
        self.honour_encoding_format = honour_encoding_format
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Behaviour] = deque()
        self._stopping = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.app = FastAPI()
        self.app.add_api_route("/v1/embeddings", self._openai_embeddings, methods=["POST"])
        self.app.add_api_route(
            "/openai/deployments/{deployment}/embeddings",
            self._azure_embeddings,
            methods=["POST"],
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`: the Azure endpoint."""
        if self._socket is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    @property
    def v1_url(self) -> str:
        """The OpenAI-style base URL (`.../v1`)."""
        return f"{self.base_url}/v1"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("the OpenAI test server stopped while starting")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        if self._socket is not None:
            self._socket.close()

    async def __aenter__(self) -> "OpenAIServer":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- scripting and records ---------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each request consumes the next one."""
        self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """Scripted behaviours not consumed yet."""
        return len(self._script)

    def _next(self) -> Behaviour | None:
        return self._script.popleft() if self._script else None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {}
        for name, value in request.headers.items():
            if name in SECRET_HEADERS:
                scheme, _, rest = value.partition(" ")
                value = f"{scheme} {REDACTED}" if rest else REDACTED
            headers[name] = value
        self.requests.append(
            Recorded(request.method, request.url.path, dict(request.query_params), headers, body)
        )
        return body

    # -- routes ------------------------------------------------------------------------------

    async def _openai_embeddings(self, request: Request) -> JSONResponse:
        body = await self._record(request)
        authorised = request.headers.get("authorization") == f"Bearer {self.api_key}"
        return await self._serve_embeddings(body, authorised)

    async def _azure_embeddings(self, request: Request, deployment: str) -> JSONResponse:
        body = await self._record(request)
        if "api-version" not in request.query_params:
            return _error(404, "Resource not found", "invalid_request_error", "404", None)
        authorised = request.headers.get("api-key") == self.api_key or request.headers.get(
            "authorization"
        ) in (f"Bearer {self.entra_token}", f"Bearer {self.api_key}")
        return await self._serve_embeddings(body, authorised)

    async def _serve_embeddings(self, body: Any, authorised: bool) -> JSONResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await self._pause(self.latency)
            if not authorised:
                return _fail(unauthorized())
            behaviour = self._next()
            if isinstance(behaviour, Fail):
                return _fail(behaviour)
            if isinstance(behaviour, Delay):
                await self._pause(behaviour.seconds)
            return self._embeddings(body, behaviour)
        finally:
            self.in_flight -= 1

    def _embeddings(self, body: Any, behaviour: Behaviour | None) -> JSONResponse:
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(text, str) and text for text in inputs)
        ):
            return _error(
                400,
                "'$.input' is invalid. Please check the API reference.",
                "invalid_request_error",
                None,
                None,
            )
        dimension = int(body.get("dimensions") or self.dimension)
        if isinstance(behaviour, WrongDimension):
            dimension = behaviour.dimension
        texts: list[str] = list(inputs)
        if isinstance(behaviour, WrongCount):
            texts = texts[: len(texts) + behaviour.delta] if behaviour.delta < 0 else texts
            texts += [f"extra {i}" for i in range(max(behaviour.delta, 0))]
        encoding = body.get("encoding_format") or "float"
        if not self.honour_encoding_format:
            encoding = "float"
        data = []
        for index, text in enumerate(texts):
            vector = vector_for(text, dimension)
            embedding: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if encoding == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        if self.shuffle:
            data.reverse()
        tokens = sum(max(len(text.split()), 1) for text in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _fail(behaviour: Fail) -> JSONResponse:
    response = _error(
        behaviour.status, behaviour.message, behaviour.type, behaviour.code, behaviour.param
    )
    response.headers.update(behaviour.headers)
    return response


def _error(
    status: int, message: str, type_: str, code: str | None, param: str | None
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code, param), status_code=status)
