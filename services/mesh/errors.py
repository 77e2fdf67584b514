"""Canonical errors of the mesh and their `google.rpc.Status` form.

Logic raises a `MeshError`; the server interceptor turns it into a gRPC status with
`ErrorInfo`, `BadRequest` and `RetryInfo` details; clients turn a failed call back into the
same `MeshError`, so the gateway can map it to problem+json without parsing strings.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "metaagent.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

SERVER_FAULTS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
"""The codes that say the server itself failed (logged at WARNING, errors on spans)."""

PROPAGATED_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (`input.text`, `x-tenant-id`) and what is wrong with it."""

    field: str
    description: str


@dataclass
class MeshError(Exception):
    """A failure with a canonical code, a machine-readable reason and optional details."""

    code: grpc.StatusCode
    message: str
    reason: str = "UNSPECIFIED"
    violations: Sequence[FieldViolation] = ()
    retry_after: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    domain: str = ERROR_DOMAIN
    """`metaagent.dev` for errors our code raised; empty for gRPC's own (transport) errors."""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` carrying this error's details."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        details.append(_pack(info))
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """Trailers that carry the serialized status to the caller."""
        return ((STATUS_DETAILS_KEY, self.to_status().SerializeToString()),)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "MeshError":
        """Rebuild the error a peer raised from its status code and trailers."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        result = cls(code=code, message=message or code.name, reason=code.name, domain="")
        for key, value in trailers or ():
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                result._absorb(status_pb2.Status.FromString(value))
        return result

    @classmethod
    def from_dependency(cls, error: grpc.RpcError) -> "MeshError":
        """What a failed downstream call becomes for this server's own caller.

        Our own errors (domain `metaagent.dev`) keep code, message and details, so field
        violations and retry advice travel upstream. gRPC's transport errors keep their code
        with a generic message (no addresses or internals). Refusals between services
        (permission, authentication), unimplemented RPCs and internal failures reveal a bug or a
        misconfiguration, not a caller's mistake: they become INTERNAL without the peer's text.
        """
        downstream = cls.from_rpc_error(error)
        ours = downstream.domain == ERROR_DOMAIN
        if downstream.code in PROPAGATED_CODES or (
            ours and downstream.code == grpc.StatusCode.UNIMPLEMENTED
        ):
            if not ours:
                downstream.message = f"a dependency failed: {downstream.code.name}"
            return downstream
        return cls(
            grpc.StatusCode.INTERNAL,
            "a dependency failed",
            "DEPENDENCY_FAILED",
            metadata={"dependencyCode": downstream.code.name},
        )

    def _absorb(self, status: status_pb2.Status) -> None:
        violations: list[FieldViolation] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason = info.reason
                self.metadata = dict(info.metadata)
                self.domain = info.domain
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        self.violations = tuple(violations)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def invalid_argument(*violations: FieldViolation, message: str = "") -> MeshError:
    """INVALID_ARGUMENT listing every bad field."""
    text = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
    return MeshError(grpc.StatusCode.INVALID_ARGUMENT, text, "INVALID_ARGUMENT", violations)


def not_found(message: str, reason: str = "NOT_FOUND") -> MeshError:
    return MeshError(grpc.StatusCode.NOT_FOUND, message, reason)


def permission_denied(message: str, reason: str = "PERMISSION_DENIED") -> MeshError:
    return MeshError(grpc.StatusCode.PERMISSION_DENIED, message, reason)


def failed_precondition(message: str, reason: str = "FAILED_PRECONDITION") -> MeshError:
    return MeshError(grpc.StatusCode.FAILED_PRECONDITION, message, reason)


def already_exists(message: str, reason: str = "ALREADY_EXISTS") -> MeshError:
    return MeshError(grpc.StatusCode.ALREADY_EXISTS, message, reason)


def unavailable(message: str, retry_after: float = 1.0, reason: str = "UNAVAILABLE") -> MeshError:
    return MeshError(grpc.StatusCode.UNAVAILABLE, message, reason, retry_after=retry_after)


def internal(message: str = "internal error", reason: str = "INTERNAL") -> MeshError:
    return MeshError(grpc.StatusCode.INTERNAL, message, reason)
