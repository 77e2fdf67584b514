"""Outbound calls: correlation metadata and the propagated deadline on every call a component
makes, added by a thin wrapper around the channel's multi-callables.

grpc.aio's client interceptors run each call through an extra task and intercepted-call object,
which costs about as much as the rest of a small call; wrapping the multi-callables does the
same job inline. A call whose inbound deadline has already passed is not started at all
(DEADLINE_EXCEEDED, raised where the call is made). Every call is counted and timed by method
and status code when it ends (a done callback, no extra task), and traced when tracing is on."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc

from services.mesh import correlation, metrics, tracing

TRANSIT_MARGIN_SECONDS = 0.005
"""Kept back from a propagated deadline: gRPC sends timeouts, not instants, so each hop's
transit time would otherwise be handed to the next hop on top of what was left."""


def outbound_call(
    timeout: float | None,
    metadata: Any,
    default_timeout: float,
    call: correlation.CallContext | None = None,
) -> tuple[float, grpc.aio.Metadata]:
    """The timeout and metadata of an outbound call made under `call` (by default the bound
    call context): the caller's metadata first, then the correlation keys it did not set."""
    call = call or correlation.current()
    if metadata:
        merged = grpc.aio.Metadata()
        present: set[str] = set()
        for key, value in metadata:
            merged.add(key, value)
            present.add(key)
        for key, value in call.forwarded:
            if key not in present:
                merged.add(key, value)
    else:  # the usual call: the correlation keys alone
        merged = grpc.aio.Metadata(*call.forwarded)
    chosen = timeout if timeout is not None else default_timeout
    remaining = call.time_remaining()
    if remaining is not None:
        if remaining <= 0:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="the inbound deadline has passed; the call was not started",
            )
        chosen = min(chosen, remaining - min(TRANSIT_MARGIN_SECONDS, remaining / 10))
    return chosen, merged


def _status_of(rpc: Any) -> grpc.StatusCode:
    """The status of a finished call, read without awaiting: `code()` is a coroutine that
    completes at once when the call is over."""
    pending = rpc.code()
    try:
        pending.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception:  # a call torn down without a status
        return grpc.StatusCode.UNKNOWN
    pending.close()
    return grpc.StatusCode.UNKNOWN


class _Outbound:
    """A multi-callable whose calls carry the bound correlation metadata and deadline, and are
    counted, timed and (when tracing is on) traced as CLIENT spans."""

    __slots__ = ("_attributes", "_default_timeout", "_inner", "_meter", "_span_name", "_traced")

    def __init__(self, inner: Any, default_timeout: float, method: str) -> None:
        self._inner = inner
        self._default_timeout = default_timeout
        self._meter = metrics.RpcMeter.client(method)
        self._span_name = method.lstrip("/")
        self._attributes = tracing.rpc_attributes(*self._meter.labels)
        self._traced = not method.startswith("/grpc.")

    def __call__(
        self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, **kw: Any
    ) -> Any:
        started = time.perf_counter()
        call = correlation.current()
        span = None
        if self._traced and tracing.enabled():
            current = tracing.current_span()
            if current.is_recording():
                span = tracing.client_span(self._span_name, call, self._attributes)
                call = dataclasses.replace(call, traceparent=tracing.traceparent_of(span))
            elif current.get_span_context().is_valid:  # unsampled: pass the decision on
                call = dataclasses.replace(call, traceparent=tracing.traceparent_of(current))
        try:
            timeout, merged = outbound_call(timeout, metadata, self._default_timeout, call)
        except grpc.aio.AioRpcError as refused:
            self._finished(started, span, refused.code())
            raise
        rpc = self._inner(request, timeout=timeout, metadata=merged, **kw)
        rpc.add_done_callback(lambda done: self._finished(started, span, _status_of(done)))
        return rpc

    def _finished(self, started: float, span: Any, code: grpc.StatusCode) -> None:
        self._meter.observe(code, time.perf_counter() - started)
        if span is not None:
            tracing.end_rpc_span(span, code)


def _method_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    method = args[0] if args else kwargs.get("method", "")
    return method.decode() if isinstance(method, bytes) else str(method)


class OutboundChannel:
    """A grpc.aio channel whose multi-callables add correlation metadata and deadlines; every
    other attribute (close, channel_ready, get_state…) is the wrapped channel's."""

    def __init__(self, channel: grpc.aio.Channel, default_timeout: float) -> None:
        self._channel = channel
        self._default_timeout = default_timeout

    def _wrap(self, inner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Outbound:
        return _Outbound(inner, self._default_timeout, _method_of(args, kwargs))

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._channel.unary_unary(*args, **kwargs), args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._channel.unary_stream(*args, **kwargs), args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._channel.stream_unary(*args, **kwargs), args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._channel.stream_stream(*args, **kwargs), args, kwargs)

    async def __aenter__(self) -> OutboundChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)
