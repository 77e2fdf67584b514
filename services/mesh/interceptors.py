"""The server interceptor: identity, policy, correlation metadata, deadlines, errors.

Outbound calls get their metadata and deadline from services/mesh/outbound.py.

On the way in every call is checked in this order, failing closed:
1. the peer proves a mesh identity with its certificate (else UNAUTHENTICATED);
2. the RPC's policy admits that identity (else PERMISSION_DENIED);
3. the server is ready, health and reflection excepted (else UNAVAILABLE with retry advice);
4. correlation metadata is present and well formed (else INVALID_ARGUMENT with a field
   violation per bad key);
then the ids and the inbound deadline are bound to contextvars for logs and outbound calls (and,
when tracing is on, a SERVER span is current: services/mesh/tracing.py), and any `MeshError`
the logic raises becomes a status with details; any other exception becomes INTERNAL with the
correlation id and no stack trace. Every call is counted and timed by method and status code
(services/mesh/metrics.py) and logged: at INFO, a server fault at WARNING, a successful call of
an RPC polled on a timer at DEBUG (`polled` in its `rpc_policy`), health and
reflection only when they fail.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

import grpc
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # no stubs: ExecuteBatchError
from opentelemetry.trace import Span

from services.mesh import correlation, metrics, tracing
from services.mesh.errors import (
    SERVER_FAULTS,
    FieldViolation,
    MeshError,
    invalid_argument,
    unavailable,
)
from services.mesh.identity import identity_among
from services.mesh.policy import MethodPolicy, lookup

log = logging.getLogger("metaagent.rpc")

SAN_PROPERTY = "x509_subject_alternative_name"
CALL_OVER: tuple[type[Exception], ...] = (cygrpc.ExecuteBatchError,)
"""What `context.write` raises once the call is over (deadline passed, client gone)."""


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The mesh identity proven by the peer's verified client certificate: its one SPIFFE URI
    among the subject alternative names gRPC reports for the peer (`peer_identities`, several
    times cheaper than the whole auth context with the PEM certificate)."""
    if context.peer_identity_key() != SAN_PROPERTY:
        return None
    names = tuple(context.peer_identities() or ())
    try:
        return _PEER_IDENTITIES[names]
    except KeyError:
        pass
    found = _identity_among(names)
    if len(_PEER_IDENTITIES) >= PEER_IDENTITIES_KEPT:
        _PEER_IDENTITIES.clear()
    _PEER_IDENTITIES[names] = found
    return found


def _identity_among(names: tuple[bytes, ...]) -> str | None:
    return identity_among(
        value.decode("ascii", "replace") for value in names if value.startswith(b"spiffe://")
    )


PEER_IDENTITIES_KEPT = 256
_PEER_IDENTITIES: dict[tuple[bytes, ...], str | None] = {}
"""`peer_identity`'s answers by the SANs gRPC reported: a few certificates call a server, and
every call presents the same names again. Bounded (emptied when full), since any certificate
the mesh CA signed may connect."""


def _text(metadata: Mapping[str, str | bytes], key: str) -> str:
    value = metadata.get(key, "")
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def read_call_context(
    metadata: Mapping[str, str | bytes],
    policy: MethodPolicy,
    caller: str,
    deadline: float | None = None,
) -> correlation.CallContext:
    """Validate inbound correlation metadata into a CallContext (with `deadline`, an absolute
    `time.monotonic()`); raise INVALID_ARGUMENT."""
    violations: list[FieldViolation] = []
    correlation_id = _text(metadata, correlation.CORRELATION_ID)
    tenant_id = _text(metadata, correlation.TENANT_ID)
    session_id = _text(metadata, correlation.SESSION_ID)
    traceparent = _text(metadata, correlation.TRACEPARENT)
    if not policy.infrastructure:
        if not correlation_id:
            violations.append(FieldViolation(correlation.CORRELATION_ID, "is required"))
        elif not correlation.ID_PATTERN.match(correlation_id):
            violations.append(
                FieldViolation(correlation.CORRELATION_ID, "must be 1-128 of [A-Za-z0-9._:-]")
            )
        if not tenant_id and not policy.tenant_optional:
            violations.append(FieldViolation(correlation.TENANT_ID, "is required"))
        elif tenant_id and not correlation.TENANT_PATTERN.match(tenant_id):
            violations.append(
                FieldViolation(correlation.TENANT_ID, "must be 1-64 of [A-Za-z0-9_-]")
            )
        if session_id and not correlation.ID_PATTERN.match(session_id):
            violations.append(
                FieldViolation(correlation.SESSION_ID, "must be 1-128 of [A-Za-z0-9._:-]")
            )
    if violations:
        raise invalid_argument(*violations, message="malformed correlation metadata")
    if traceparent and not correlation.TRACEPARENT_PATTERN.match(traceparent):
        traceparent = ""
    return correlation.CallContext(
        correlation_id=correlation_id,
        tenant_id=tenant_id,
        session_id=session_id,
        traceparent=traceparent,
        deadline=deadline,
        caller=caller,
    )


class MeshServerInterceptor(grpc.aio.ServerInterceptor):
    """Guards every RPC of a server; see the module docstring for the order of checks."""

    def __init__(
        self,
        policies: Mapping[str, MethodPolicy],
        ready: asyncio.Event | None = None,
        component: str = "",
    ) -> None:
        self._policies = policies
        self._ready = ready
        self._component = component
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        """Guarded handlers by method, built on first call: the servicers' handlers never
        change, and building one per call is measurable. Unknown methods are not kept."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = _wrap(handler, self._guard(method, lookup(self._policies, method)))
            self._wrapped[method] = wrapped
        return wrapped

    def _guard(self, method: str, policy: MethodPolicy | None) -> _Guard:
        return _Guard(method, policy, self._ready, self._component)


class _Guard:
    """The checks, bindings, count, time, span and log line of one method's calls, run around
    each call by the handlers `_wrap` builds (a plain coroutine, not a context manager: the
    generator-based one cost as much as the checks)."""

    __slots__ = (
        "_meter",
        "_method",
        "_ok_level",
        "_policy",
        "_quiet",
        "_ready",
        "_span_attributes",
        "_span_name",
    )

    def __init__(
        self,
        method: str,
        policy: MethodPolicy | None,
        ready: asyncio.Event | None,
        component: str,
    ) -> None:
        self._method = method
        self._policy = policy
        self._ready = ready
        self._quiet = policy is not None and policy.infrastructure
        # a successful poll (the relay's idle sweeps) is routine: DEBUG, not one INFO a second
        self._ok_level = logging.DEBUG if policy is not None and policy.polled else logging.INFO
        self._meter = metrics.RpcMeter.server(method)
        self._span_name = method.lstrip("/")
        self._span_attributes = {
            **tracing.rpc_attributes(*self._meter.labels),
            "metaagent.component": component,
        }

    async def run(
        self,
        behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        """`behaviour(request, context)` once the call is admitted, under its bindings."""
        method = self._method
        started = time.perf_counter()
        code, reason = grpc.StatusCode.OK, ""
        caller = peer_identity(context)
        call: correlation.CallContext | None = None
        span: Span | None = None
        try:
            if caller is None:
                raise MeshError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the peer presented no certificate naming a mesh identity",
                    "UNAUTHENTICATED_PEER",
                )
            policy = self._policy
            if policy is None or not policy.admits(caller):
                raise MeshError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"'{caller}' may not call {method}",
                    "CALLER_NOT_ALLOWED",
                    metadata={"caller": caller, "method": method},
                )
            if self._ready is not None and not (self._ready.is_set() or policy.infrastructure):
                raise unavailable(
                    "the service is starting; its dependencies are not ready yet",
                    retry_after=0.5,
                    reason="NOT_READY",
                )
            call = read_call_context(
                dict(context.invocation_metadata() or ()),
                policy,
                caller,
                deadline=correlation.with_deadline_in(context.time_remaining()),
            )
            if tracing.enabled() and not self._quiet and tracing.sampled(call.traceparent):
                span, call = tracing.start_server_span(self._span_name, call, self._span_attributes)
                with tracing.active(span), correlation.bound(call):
                    return await behaviour(request, context)
            token = correlation.attach(call)
            try:
                return await behaviour(request, context)
            finally:
                correlation.detach(token)
        except (MeshError, grpc.aio.AioRpcError) as failure:
            error = (
                failure if isinstance(failure, MeshError) else MeshError.from_dependency(failure)
            )
            code, reason = error.code, error.reason
            await context.abort(error.code, error.message, error.trailing_metadata())
        except NotImplementedError:
            code, reason = grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED"
            await context.abort(code, f"{method} is not implemented by this server")
        except grpc.aio.AbortError:
            aborted_with = context.code()
            code = aborted_with if isinstance(aborted_with, grpc.StatusCode) else code
            reason = "ABORTED_BY_SERVICER"
            raise
        except asyncio.CancelledError:
            code, reason = grpc.StatusCode.CANCELLED, "CANCELLED"
            raise
        except Exception:
            code, reason = grpc.StatusCode.INTERNAL, "UNHANDLED"
            call = call or correlation.CallContext(caller=caller or "")
            with correlation.bound(call):
                log.exception("unhandled error in %s", method)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error (correlation id {call.correlation_id or 'none'})",
            )
        finally:
            elapsed = time.perf_counter() - started
            self._meter.observe(code, elapsed)
            if span is not None:
                if reason:
                    span.set_attribute("metaagent.reason", reason)
                tracing.end_rpc_span(span, code)
            ok = code == grpc.StatusCode.OK
            level = self._ok_level if ok else _failure_level(code)
            # the record (and its bindings) only when a handler may take it
            if not (self._quiet and ok) and log.isEnabledFor(level):
                with correlation.bound(call or correlation.CallContext(caller=caller or "")):
                    log.log(
                        level,
                        "rpc %s %s",
                        method,
                        code.name,
                        extra={
                            "rpc": method,
                            "code": code.name,
                            "reason": reason,
                            "caller": caller or "",
                            "durationMs": round(elapsed * 1000, 2),
                        },
                    )


def _failure_level(code: grpc.StatusCode) -> int:
    """A server fault is a WARNING; a refusal (bad input, not found, denied...) is INFO."""
    return logging.WARNING if code in SERVER_FAULTS else logging.INFO


async def _write_all(
    responses: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """Write each response of a streaming servicer. A write the call can no longer take (its
    deadline passed or its client left: gRPC's core refuses the batch) ends the call as
    cancelled, as gRPC itself treats a stream it drives, not as an unhandled error."""
    async for response in responses:
        try:
            await context.write(response)
        except CALL_OVER as over:
            raise asyncio.CancelledError("the call ended while a response was written") from over


def _driver(
    generator: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
    """A coroutine function writing each response of the async generator function
    `generator`, and closing the generator however the call ends (see `_wrap`)."""

    async def drive(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with aclosing(generator(request, context)) as responses:
            await _write_all(responses, context)

    return drive


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], guard: _Guard
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, with every call run by `guard`. A streaming servicer written as
    an async generator is driven by a coroutine that writes each response with
    `context.write` and closes the generator (`aclosing`) when the call ends, however it ends:
    left to gRPC, a generator paused at `yield` when the deadline passes or the client leaves
    is abandoned, and asyncio's finaliser closes it later in a task of its own, where its
    `finally` blocks (the guard's, the servicer's) run late and outside the call's context."""
    behaviour: Any = handler
    run = guard.run
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if behaviour.unary_unary is not None:
        inner_uu = behaviour.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await run(inner_uu, request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if behaviour.unary_stream is not None:
        inner_us = behaviour.unary_stream
        if inspect.isasyncgenfunction(inner_us):
            inner_us = _driver(inner_us)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await run(inner_us, request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if behaviour.stream_unary is not None:
        inner_su = behaviour.stream_unary

        async def stream_unary(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            return await run(inner_su, requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    inner_ss = behaviour.stream_stream
    assert inner_ss is not None
    if inspect.isasyncgenfunction(inner_ss):
        inner_ss = _driver(inner_ss)

    async def stream_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await run(inner_ss, requests, context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)
