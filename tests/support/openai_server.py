"""A scriptable OpenAI-compatible HTTP server on loopback, for testing clients at the wire.

    async with OpenAIServer(dimension=64, reasoning_models={"gpt-5"}) as server:
        server.script(rate_limited(retry_after=1), server_error(503), reply('{"reply": "hola"}'))
        client = AsyncOpenAI(base_url=server.v1_url, api_key=server.api_key, max_retries=0)

Routes: `POST /v1/embeddings` and `POST /v1/chat/completions` (OpenAI: `Authorization: Bearer
<key>`), `POST /openai/deployments/{deployment}/embeddings` and `.../chat/completions` (Azure:
`api-version` query parameter and an `api-key` header or an Entra `Authorization: Bearer
<token>`). Wrong or missing credentials get 401 without consuming a scripted behaviour.

Each request takes the next behaviour from one FIFO queue (`script`); with the queue empty it is
answered normally. The generic faults (`Fail`: `rate_limited`, `server_error`, `bad_request`,
`unauthorized`; `Delay`: `slow`) apply to both endpoints; `WrongDimension` and `WrongCount` only
to embeddings, `Reply` and `BreakStream` only to chat completions (another endpoint answers
normally when it draws one).

Embeddings are deterministic (`vector_for`: a unit vector seeded by the text's SHA-256) of the
requested `dimensions` or the server's default, with `usage` (one token per word) and an `index`
per item, reversed when `shuffle` is set. `encoding_format` "float" and "base64" (little-endian
float32, what the openai SDK asks for unless told otherwise) are both honoured;
`honour_encoding_format=False` imitates servers that always answer floats.

Chat completions answer a scripted `reply(...)`, else `DEFAULT_REPLY`, or for a `json_schema`
response format a minimal instance of the schema (`example_for`), for `json_object` a fixed
`DEFAULT_JSON_REPLY`. Answers come as one JSON document or, with `stream: true`, as server-sent
events in the API's shape: a role chunk, one `choices[0].delta.content` chunk per word (a
`refusal` is streamed the same way), a chunk with the `finish_reason`, with
`stream_options.include_usage` a last chunk with empty `choices` and the `usage`, then
`data: [DONE]`. Azure's route first sends the chunk with empty `choices` and
`prompt_filter_results` that Azure sends. `chunk_delay` (server-wide or per reply) spaces the
chunks. `usage` counts words: of every message (prompt) and of the answer (completion). A
`max_completion_tokens` / `max_tokens` smaller than the answer cuts it to that many words with
`finish_reason: "length"`. `model` echoes the request's model, on Azure the deployment's model
(`deployment_models`, default the deployment name).

The chat route checks requests the way the real API does where it matters: `messages` present;
for a reasoning model (`reasoning_models`, matched against the model or Azure deployment name)
`temperature` other than 1 and `max_tokens` are rejected (400 `unsupported_value` /
`unsupported_parameter`, with `param`), for other models `reasoning_effort` is; `json_schema`
needs a name and a schema, `json_object` needs the word "json" in the messages, and
`stream_options` needs `stream`. On Azure, a deployment not in `deployments` (when given) is
404 `DeploymentNotFound`.

Every request is recorded (path, query, headers with credentials redacted, JSON body), and the
server tracks how many requests it is serving at once (`max_in_flight`).
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Send

REDACTED = "<redacted>"
TEST_API_KEY = "test-key"
TEST_ENTRA_TOKEN = "entra-token"
SECRET_HEADERS = frozenset({"api-key", "authorization"})
DEFAULT_REPLY = "Hola, soy el asistente de pruebas. ¿En qué puedo ayudarte hoy?"
DEFAULT_JSON_REPLY: dict[str, Any] = {
    "reply": DEFAULT_REPLY,
    "intent": "greeting",
    "confidence": 0.9,
    "actions": [],
}
"""The answer to a `json_object` request, and what `example_for` fills a schema with."""


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


@dataclass(frozen=True)
class Reply:
    """Answer a chat completion with `content` (or a `refusal` and no content)."""

    content: str | None = None
    finish_reason: str | None = None
    """None = "stop", or "length" when the request's token limit cuts the answer."""
    refusal: str | None = None
    chunk_delay: float | None = None
    """Seconds between streamed chunks; None = the server's `chunk_delay`."""


@dataclass(frozen=True)
class BreakStream:
    """Send the headers and `after` content chunks, then drop the connection (a non-streamed
    request gets the headers and no body)."""

    after: int = 2
    content: str | None = None


Behaviour = Fail | Delay | WrongDimension | WrongCount | Reply | BreakStream


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


def reply(
    content: str | None = None,
    *,
    finish_reason: str | None = None,
    refusal: str | None = None,
    chunk_delay: float | None = None,
) -> Reply:
    return Reply(content, finish_reason, refusal, chunk_delay)


def break_stream(after: int = 2, content: str | None = None) -> BreakStream:
    return BreakStream(after, content)


def vector_for(text: str, dimension: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The server's embedding of `text`: a float32 unit vector seeded by the text's SHA-256."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimension)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def example_for(schema: Any) -> Any:
    """A minimal instance of a JSON schema: required (else all) properties of objects, the first
    `enum` value, `DEFAULT_JSON_REPLY`'s value for a property it knows, zero values otherwise."""
    return _example(schema if isinstance(schema, dict) else {}, None)


def _example(schema: dict[str, Any], name: str | None) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {key: _example(properties.get(key) or {}, key) for key in required}
    if kind == "array":
        return []
    known = DEFAULT_JSON_REPLY.get(name or "")
    if kind == "string":
        return known if isinstance(known, str) else ""
    if kind in ("number", "integer"):
        value = known if isinstance(known, int | float) else 0
        low, high = schema.get("minimum"), schema.get("maximum")
        value = max(value, low) if low is not None else value
        value = min(value, high) if high is not None else value
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def error_body(message: str, type_: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class RecordingSleep:
    """A `sleep` that returns at once and remembers what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


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
        reasoning_models: Collection[str] = (),
        deployment_models: Mapping[str, str] | None = None,
        deployments: Collection[str] | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.entra_token = entra_token
        self.dimension = dimension
        self.shuffle = shuffle
        self.latency = latency
        """Seconds every request waits before it is answered (concurrency tests)."""
        self.honour_encoding_format = honour_encoding_format
        self.reasoning_models = set(reasoning_models)
        """Models (or Azure deployments) that take only reasoning parameters, like GPT-5."""
        self.deployment_models = dict(deployment_models or {})
        """Azure deployment -> the model name its answers report (default: the deployment)."""
        self.deployments = None if deployments is None else set(deployments)
        """Azure deployments that exist (None = any); others get 404 DeploymentNotFound."""
        self.chunk_delay = chunk_delay
        """Seconds between streamed chat chunks."""
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
        self.app.add_api_route("/v1/chat/completions", self._openai_chat, methods=["POST"])
        self.app.add_api_route(
            "/openai/deployments/{deployment}/chat/completions",
            self._azure_chat,
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

    def reply(self, *contents: str) -> None:
        """Queue chat replies, one per request."""
        self._script.extend(Reply(content) for content in contents)

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
        return await self._serve_embeddings(body, self._azure_authorised(request))

    def _azure_authorised(self, request: Request) -> bool:
        return request.headers.get("api-key") == self.api_key or request.headers.get(
            "authorization"
        ) in (f"Bearer {self.entra_token}", f"Bearer {self.api_key}")

    async def _openai_chat(self, request: Request) -> Response:
        body = await self._record(request)
        authorised = request.headers.get("authorization") == f"Bearer {self.api_key}"
        model = body.get("model") if isinstance(body, dict) else None
        return await self._serve_chat(body, authorised, str(model or ""), None)

    async def _azure_chat(self, request: Request, deployment: str) -> Response:
        body = await self._record(request)
        if "api-version" not in request.query_params:
            return _error(404, "Resource not found", "invalid_request_error", "404", None)
        if self.deployments is not None and deployment not in self.deployments:
            return _error(
                404,
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
                "invalid_request_error",
                "DeploymentNotFound",
                None,
            )
        model = self.deployment_models.get(deployment, deployment)
        return await self._serve_chat(body, self._azure_authorised(request), model, deployment)

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

    async def _serve_chat(
        self, body: Any, authorised: bool, model: str, deployment: str | None
    ) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await self._pause(self.latency)
            if not authorised:
                return _fail(unauthorized())
            invalid = self._invalid_chat(body, model, deployment)
            if invalid is not None:
                return invalid
            behaviour = self._next()
            if isinstance(behaviour, Fail):
                return _fail(behaviour)
            if isinstance(behaviour, Delay):
                await self._pause(behaviour.seconds)
        finally:
            self.in_flight -= 1
        return self._chat(body, model, deployment is not None, behaviour)

    def _invalid_chat(self, body: Any, model: str, deployment: str | None) -> Response | None:
        """The 400 the real API gives a request we must never send, or None."""

        def reject(message: str, param: str | None, code: str | None) -> Response:
            return _error(400, message, "invalid_request_error", code, param)

        if not isinstance(body, dict):
            return reject("We could not parse the JSON body of your request.", None, None)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return reject("'messages' must be a non-empty array.", "messages", None)
        reasoning = bool({model, deployment or "", str(body.get("model"))} & self.reasoning_models)
        temperature = body.get("temperature")
        if reasoning and temperature is not None and temperature != 1:
            return reject(
                f"Unsupported value: 'temperature' does not support {temperature} with this "
                "model. Only the default (1) value is supported.",
                "temperature",
                "unsupported_value",
            )
        if reasoning and "max_tokens" in body:
            return reject(
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        if not reasoning and "reasoning_effort" in body:
            return reject(
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "reasoning_effort",
                "unsupported_parameter",
            )
        response_format = body.get("response_format") or {}
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            if not spec.get("name") or not isinstance(spec.get("schema"), dict):
                return reject(
                    "Missing required parameter: 'response_format.json_schema'.",
                    "response_format.json_schema",
                    "missing_required_parameter",
                )
        elif kind == "json_object" and "json" not in _prompt_text(messages).lower():
            return reject(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                "messages",
                None,
            )
        if body.get("stream_options") is not None and not body.get("stream"):
            return reject(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                None,
            )
        return None

    def _chat(self, body: dict[str, Any], model: str, azure: bool, behaviour: Any) -> Response:
        scripted = behaviour if isinstance(behaviour, Reply | BreakStream) else None
        content: str | None = scripted.content if scripted is not None else None
        refusal = behaviour.refusal if isinstance(behaviour, Reply) else None
        if content is None and refusal is None:
            content = self._default_reply(body)
        words = _words(content or refusal or "")
        finish_reason = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and len(words) > limit:
            words, finish_reason = words[:limit], "length"
            content = "".join(words) if content is not None else None
            refusal = "".join(words) if refusal is not None else None
        if isinstance(behaviour, Reply) and behaviour.finish_reason is not None:
            finish_reason = behaviour.finish_reason
        prompt_tokens = _count_words(_prompt_text(body["messages"]))
        completion_tokens = len([w for w in words if w.strip()])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        ident = f"chatcmpl-{len(self.requests)}"
        created = int(time.time())
        if not body.get("stream"):
            if isinstance(behaviour, BreakStream):
                return _BrokenResponse([])
            message = {"role": "assistant", "content": content, "refusal": refusal}
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": None,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        field_name = "content" if content is not None else "refusal"

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            data = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": choices,
                **({"usage": None} if include_usage else {}),
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        def delta(value: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": value, "logprobs": None, "finish_reason": finish}

        events: list[bytes] = []
        prefix = 2 if azure else 1
        if azure:
            filters = {"prompt_index": 0, "content_filter_results": {}}
            first = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
            events.append(
                f"data: {json.dumps({**first, 'prompt_filter_results': [filters]})}\n\n".encode()
            )
        events.append(chunk([delta({"role": "assistant", "content": "", "refusal": None})]))
        events += [chunk([delta({field_name: word})]) for word in words]
        events.append(chunk([delta({}, finish_reason)]))
        if include_usage:
            events.append(chunk([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        if isinstance(behaviour, BreakStream):
            return _BrokenResponse(events[: prefix + min(behaviour.after, len(words))])
        pause = behaviour.chunk_delay if isinstance(behaviour, Reply) else None
        return StreamingResponse(
            self._paced(events, self.chunk_delay if pause is None else pause),
            media_type="text/event-stream",
        )

    async def _paced(self, events: list[bytes], delay: float) -> AsyncIterator[bytes]:
        for index, event in enumerate(events):
            if index and delay:
                await self._pause(delay)
            yield event

    def _default_reply(self, body: dict[str, Any]) -> str:
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            return json.dumps(example_for(schema), ensure_ascii=False)
        if response_format.get("type") == "json_object":
            return json.dumps(DEFAULT_JSON_REPLY, ensure_ascii=False)
        return DEFAULT_REPLY

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


class _BrokenResponse(Response):
    """A 200 that sends `events` and then drops the connection without ending the body."""

    def __init__(self, events: list[bytes]) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        # No content-length: the body is chunked, and the missing last chunk is the break.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.events = events

    async def __call__(self, scope: Any, receive: Any, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        # Returning without the final body message makes the server close the connection.


def _words(text: str) -> list[str]:
    """`text` in pieces of one word and the whitespace after it; they join back to `text`."""
    return re.findall(r"\S+\s*|\s+", text)


def _count_words(text: str) -> int:
    return len(text.split())


def _prompt_text(messages: Any) -> str:
    """The text of every message (string contents and `text` parts)."""
    texts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return "\n".join(texts)
