"""Per-call correlation data, bound to contextvars by the server interceptor and forwarded by
the outbound channel (services/mesh/outbound.py), so every log line and every outbound call
carries it."""

import contextvars
import functools
import re
import time
from dataclasses import dataclass, field
from typing import Final

CORRELATION_ID: Final = "x-correlation-id"
TENANT_ID: Final = "x-tenant-id"
SESSION_ID: Final = "x-session-id"
TRACEPARENT: Final = "traceparent"

ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TENANT_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TRACEPARENT_PATTERN: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class CallContext:
    """What one call knows about the conversation it belongs to."""

    correlation_id: str = ""
    tenant_id: str = ""
    session_id: str = ""
    traceparent: str = ""
    deadline: float | None = field(default=None, compare=False)
    """Absolute `time.monotonic()` by which the inbound call must be answered."""
    caller: str = ""

    def time_remaining(self) -> float | None:
        """Seconds left before the inbound deadline, or None when there is none."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    @functools.cached_property
    def forwarded(self) -> tuple[tuple[str, str], ...]:
        """The metadata an outbound call forwards, computed once per context (a turn makes a
        dozen calls under one)."""
        pairs = (
            (CORRELATION_ID, self.correlation_id),
            (TENANT_ID, self.tenant_id),
            (SESSION_ID, self.session_id),
            (TRACEPARENT, self.traceparent),
        )
        return tuple((key, value) for key, value in pairs if value)


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "metaagent_call_context",
    default=CallContext(),  # noqa: B039 - frozen dataclass, immutable
)


def current() -> CallContext:
    """The call context of the running task."""
    return _current.get()


def bound(call: CallContext) -> "_Binding":
    """Bind `call` for the duration of the `with` block (which gets `call`). Left from another
    context than the one that entered it (an async generator closed by asyncio's finaliser in a
    task of its own), it leaves that context alone: the binding belonged to the entering
    context only."""
    return _Binding(call)


class _Binding:
    """`bound`'s context manager: a class, as cheap as a context manager gets (a generator-based
    one costs several times more, and a turn enters a few dozen)."""

    __slots__ = ("_call", "_token")

    def __init__(self, call: CallContext) -> None:
        self._call = call

    def __enter__(self) -> CallContext:
        self._token = _current.set(self._call)
        return self._call

    def __exit__(self, *exc_info: object) -> None:
        detach(self._token)


def attach(call: CallContext) -> contextvars.Token[CallContext]:
    """Bind `call` until `detach` is given the returned token: `bound` without the context
    manager, for the per-call paths of the interceptors."""
    return _current.set(call)


def detach(token: contextvars.Token[CallContext]) -> None:
    """Undo an `attach`; from another context than the attaching one, nothing (as `bound`)."""
    try:  # noqa: SIM105 - contextlib.suppress costs a context manager per call
        _current.reset(token)
    except ValueError:  # "created in a different Context": nothing of ours to undo here
        pass


def with_deadline_in(seconds: float | None) -> float | None:
    """Absolute monotonic deadline `seconds` from now (None stays None)."""
    return None if seconds is None else time.monotonic() + seconds
