"""Outbound calls: correlation metadata and the propagated deadline on every call a component
makes, added by a thin wrapper around the channel's multi-callables.

grpc.aio's client interceptors run each call through an extra task and intercepted-call object,
which costs about as much as the rest of a small call; wrapping the multi-callables does the
same job inline. A call whose inbound deadline has already passed is not started at all
(DEADLINE_EXCEEDED, raised where the call is made)."""

from __future__ import annotations

from typing import Any

import grpc

from services.mesh import correlation

TRANSIT_MARGIN_SECONDS = 0.005
"""Kept back from a propagated deadline: gRPC sends timeouts, not instants, so each hop's
transit time would otherwise be handed to the next hop on top of what was left."""


def outbound_call(
    timeout: float | None, metadata: Any, default_timeout: float
) -> tuple[float, grpc.aio.Metadata]:
    """The timeout and metadata of an outbound call made under the bound call context:
    the caller's metadata first, then the correlation keys it did not set itself."""
    call = correlation.current()
    merged = grpc.aio.Metadata()
    present: set[str] = set()
    for key, value in metadata or ():
        merged.add(key, value)
        present.add(key)
    for key, value in call.outbound_metadata():
        if key not in present:
            merged.add(key, value)
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


class _Outbound:
    """A multi-callable whose calls carry the bound correlation metadata and deadline."""

    __slots__ = ("_default_timeout", "_inner")

    def __init__(self, inner: Any, default_timeout: float) -> None:
        self._inner = inner
        self._default_timeout = default_timeout

    def __call__(
        self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, **kw: Any
    ) -> Any:
        timeout, merged = outbound_call(timeout, metadata, self._default_timeout)
        return self._inner(request, timeout=timeout, metadata=merged, **kw)


class OutboundChannel:
    """A grpc.aio channel whose multi-callables add correlation metadata and deadlines; every
    other attribute (close, channel_ready, get_state…) is the wrapped channel's."""

    def __init__(self, channel: grpc.aio.Channel, default_timeout: float) -> None:
        self._channel = channel
        self._default_timeout = default_timeout

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Outbound(self._channel.unary_unary(*args, **kwargs), self._default_timeout)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Outbound(self._channel.unary_stream(*args, **kwargs), self._default_timeout)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Outbound(self._channel.stream_unary(*args, **kwargs), self._default_timeout)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Outbound(self._channel.stream_stream(*args, **kwargs), self._default_timeout)

    async def __aenter__(self) -> OutboundChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)
