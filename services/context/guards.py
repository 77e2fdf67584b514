"""Session leases and idempotency claims, as the context service offers them over gRPC:
durations validated and bounded, outcomes mapped to the contract's codes."""

from collections.abc import Sequence

import grpc

from services.context.idempotency import Claim, IdempotencyClaims
from services.context.locks import Lease, SessionLocks
from services.mesh.errors import FieldViolation, MeshError, failed_precondition, invalid_argument

DEFAULT_LEASE_SECONDS = 30.0
MAX_LEASE_SECONDS = 300.0
MAX_WAIT_SECONDS = 30.0
MINIMUM_SECONDS = 0.001
"""Shorter durations round up to a millisecond, the finest grain Redis keeps."""


def bounded(field: str, seconds: float, default: float, maximum: float) -> float:
    """A duration from a request: 0 means `default`; negative or above `maximum` is refused."""
    if seconds < 0 or seconds > maximum:
        raise invalid_argument(FieldViolation(field, f"must be between 0 and {maximum:g}s"))
    return max(seconds, MINIMUM_SECONDS) if seconds else default


class TurnGuards:
    def __init__(self, locks: SessionLocks, claims: IdempotencyClaims) -> None:
        self._locks = locks
        self._claims = claims

    async def acquire(
        self, tenant_id: str, session_id: str, ttl: float, wait: float, time_left: float | None
    ) -> Lease:
        ttl = bounded("ttl", ttl, DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS)
        wait = min(bounded("wait_timeout", wait, 0.0, MAX_WAIT_SECONDS), time_left or wait)
        lease = await self._locks.acquire(tenant_id, session_id, ttl, wait)
        if lease is None:
            raise MeshError(
                grpc.StatusCode.ABORTED,
                "another turn of this session holds the lock",
                "SESSION_LOCKED",
                retry_after=0.2,
            )
        return lease

    async def release(self, tenant_id: str, session_id: str, fencing_token: int) -> bool:
        if fencing_token <= 0:
            raise invalid_argument(FieldViolation("fencing_token", "is required"))
        return await self._locks.release(tenant_id, session_id, fencing_token)

    async def begin(self, tenant_id: str, key: str, lease: float, fingerprint: str) -> Claim:
        _require_key(key)
        lease = bounded("lease", lease, DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS)
        return await self._claims.begin(tenant_id, key, lease, fingerprint)

    async def complete(
        self, tenant_id: str, key: str, claim_id: str, response: bytes, retention: float
    ) -> None:
        _require_key(key)
        violations = []
        if not claim_id:
            violations.append(FieldViolation("completion.claim_id", "is required"))
        if not response:
            violations.append(FieldViolation("completion.response", "is required"))
        if violations:
            raise invalid_argument(*violations)
        if not await self._claims.complete(tenant_id, key, claim_id, response, retention):
            raise failed_precondition(
                "the claim is unknown, expired or taken over", "IDEMPOTENCY_CLAIM_LOST"
            )

    async def abandon(self, tenant_id: str, key: str, claim_id: str) -> bool:
        _require_key(key)
        if not claim_id:
            raise invalid_argument(FieldViolation("claim_id", "is required"))
        return await self._claims.abandon(tenant_id, key, claim_id)

    async def forget(self, tenant_id: str, keys: Sequence[str]) -> int:
        """Drop the claims and stored responses of `keys` (a user's erasure)."""
        return await self._claims.forget(tenant_id, [key for key in keys if key])


def _require_key(key: str) -> None:
    if not key:
        raise invalid_argument(FieldViolation("key", "is required"))
