"""The idempotency port: the first caller of a key claims it, later callers see it in flight
or get the stored response; and its in-process adapter."""

import enum
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.mesh.errors import already_exists


class ClaimState(enum.Enum):
    CLAIMED = "claimed"
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    claim_id: str = ""
    """Set when CLAIMED: proves ownership to complete or abandon."""
    response: bytes = b""
    """Set when COMPLETED: the first call's response."""
    expires_at: float = 0.0


class IdempotencyClaims(Protocol):
    async def begin(self, tenant_id: str, key: str, lease: float, fingerprint: str) -> Claim:
        """Claim `key`, or report it in flight / completed. ALREADY_EXISTS when the key was
        used with another fingerprint."""

    async def complete(
        self, tenant_id: str, key: str, claim_id: str, response: bytes, retention: float
    ) -> bool:
        """Store the response if `claim_id` still owns the key; False otherwise."""

    async def abandon(self, tenant_id: str, key: str, claim_id: str) -> bool:
        """Drop the claim (nothing was persisted) so a retry can proceed at once."""

    async def forget(self, tenant_id: str, keys: Sequence[str]) -> int:
        """Drop the records of `keys` whatever their state (an erasure: a stored response
        holds the customer's text); how many existed. Unknown keys are skipped."""

    async def close(self) -> None: ...


def fingerprint_conflict(key: str) -> Exception:
    return already_exists(
        f"idempotency key '{key}' was used for a different request", "IDEMPOTENCY_KEY_REUSED"
    )


@dataclass
class _Record:
    state: ClaimState
    claim_id: str
    fingerprint: str
    expires_at: float
    response: bytes = b""


class MemoryIdempotency:
    """In-process claims (embedded profile)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], _Record] = {}

    async def begin(self, tenant_id: str, key: str, lease: float, fingerprint: str) -> Claim:
        now = time.time()
        record = self._records.get((tenant_id, key))
        if record is None or record.expires_at <= now:
            claim_id = uuid.uuid4().hex
            self._records[(tenant_id, key)] = _Record(
                ClaimState.CLAIMED, claim_id, fingerprint, now + lease
            )
            return Claim(ClaimState.CLAIMED, claim_id, expires_at=now + lease)
        if fingerprint and record.fingerprint and fingerprint != record.fingerprint:
            raise fingerprint_conflict(key)
        if record.state is ClaimState.COMPLETED:
            return Claim(
                ClaimState.COMPLETED, response=record.response, expires_at=record.expires_at
            )
        return Claim(ClaimState.IN_FLIGHT, expires_at=record.expires_at)

    async def complete(
        self, tenant_id: str, key: str, claim_id: str, response: bytes, retention: float
    ) -> bool:
        record = self._records.get((tenant_id, key))
        if record is None or record.claim_id != claim_id or record.state is ClaimState.COMPLETED:
            return False
        record.state, record.response = ClaimState.COMPLETED, response
        record.expires_at = time.time() + retention
        return True

    async def abandon(self, tenant_id: str, key: str, claim_id: str) -> bool:
        record = self._records.get((tenant_id, key))
        if record is None or record.claim_id != claim_id or record.state is ClaimState.COMPLETED:
            return False
        del self._records[(tenant_id, key)]
        return True

    async def forget(self, tenant_id: str, keys: Sequence[str]) -> int:
        now = time.time()
        forgotten = 0
        for key in set(keys):
            record = self._records.pop((tenant_id, key), None)
            forgotten += record is not None and record.expires_at > now
        return forgotten

    async def close(self) -> None:
        self._records.clear()
